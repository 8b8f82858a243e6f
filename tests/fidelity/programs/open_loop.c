/* Not a corpus case: a long-running program for the tracer-death tests. Writes its pid to
 * `ready`, then opens and execs in a loop until killed; the first failing open or exec (the
 * ENOSYS a tracee gets once its tracer is gone) is reported on stderr as "BROKEN" and ends it
 * with exit status 3, so a test can tell "killed as a whole" from "ran on broken". */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
static void broken(const char *what) {
    fprintf(stderr, "BROKEN %s: %s\n", what, strerror(errno));
    exit(3);
}
int main(void) {
    FILE *r = fopen("ready.tmp", "w");
    if (!r) broken("fopen");
    fprintf(r, "%d\n", getpid());
    fclose(r);
    if (rename("ready.tmp", "ready") != 0) broken("rename");
    for (long i = 0;; i++) {
        int fd = open("in.txt", O_RDONLY);
        if (fd < 0) broken("open");
        close(fd);
        if (i % 64 == 0) {
            pid_t c = fork();
            if (c == 0) {
                execl("/bin/true", "true", (char *)0);
                _exit(99);
            }
            int st;
            if (c < 0 || waitpid(c, &st, 0) != c) broken("fork");
            if (WIFEXITED(st) && WEXITSTATUS(st) != 0) { errno = ENOSYS; broken("exec"); }
        }
        usleep(200);
    }
}
