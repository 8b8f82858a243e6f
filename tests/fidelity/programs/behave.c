/* Behaviour identity: exit codes, signals, stdout/stderr bytes. behave MODE */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
int main(int argc, char **argv) {
    const char *m = argc > 1 ? argv[1] : "";
    printf("out \xff bytes\n");
    fprintf(stderr, "err line\n");
    fflush(NULL);
    if (!strcmp(m, "exit")) return 42;
    if (!strcmp(m, "segv")) { volatile int *p = NULL; *p = 1; }
    if (!strcmp(m, "kill")) raise(SIGKILL);
    if (!strcmp(m, "term")) raise(SIGTERM);
    return 0;
}
