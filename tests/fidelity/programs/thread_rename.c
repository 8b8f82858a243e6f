/* One thread writes part.tmp and then spins without a syscall while another thread
 * renames it to final.bin: the write must still be seen, and seen before the rename
 * (roar-ptrace settles an open for writing at the thread's next stop, which here
 * comes only after the rename). */
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <unistd.h>

static atomic_int stage;

static void *writer(void *arg) {
    (void)arg;
    int fd = open("part.tmp", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, "weights\n", 8) != 8) _exit(2);
    close(fd);
    atomic_store(&stage, 1);
    while (atomic_load(&stage) != 2) {
    } /* no syscall until the rename is done */
    return NULL;
}

int main(void) {
    pthread_t t;
    if (pthread_create(&t, NULL, writer, NULL) != 0) return 1;
    while (atomic_load(&stage) != 1) {
    }
    if (rename("part.tmp", "final.bin") != 0) return 3;
    atomic_store(&stage, 2);
    pthread_join(t, NULL);
    return 0;
}
