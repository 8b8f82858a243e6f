/* 32 threads, each writing its own file t00.txt..t31.txt (threads share the fd table). */
#include <pthread.h>
#include <stdio.h>
static void *work(void *arg) {
    char name[16];
    snprintf(name, sizeof name, "t%02ld.txt", (long)arg);
    FILE *f = fopen(name, "w");
    fprintf(f, "%ld\n", (long)arg);
    fclose(f);
    return NULL;
}
int main(void) {
    pthread_t t[32];
    for (long i = 0; i < 32; i++) pthread_create(&t[i], NULL, work, (void *)i);
    for (int i = 0; i < 32; i++) pthread_join(t[i], NULL);
    return 0;
}
