/* Opens of regular files under a storm of signals caught without SA_RESTART. Such an
 * open never fails with EINTR untraced; it must not under a tracer either (a thread
 * waiting for roar-ptrace's answer to a seccomp notification is interruptible).
 * Prints "opens N eintr E signals S" and exits 1 if any open failed. */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <unistd.h>

static volatile sig_atomic_t caught;
static void on_alarm(int sig) {
    (void)sig;
    caught++;
}

int main(int argc, char **argv) {
    long n = argc > 1 ? atol(argv[1]) : 20000;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_alarm; /* no SA_RESTART */
    sigaction(SIGALRM, &sa, NULL);
    struct itimerval it = {{0, 500}, {0, 500}}; /* every 500 us */
    setitimer(ITIMER_REAL, &it, NULL);
    long eintr = 0, other = 0;
    char name[32];
    for (long i = 0; i < n; i++) {
        snprintf(name, sizeof name, "e%ld.txt", i % 50);
        int fd = open(name, i < 50 ? O_WRONLY | O_CREAT | O_TRUNC : O_RDONLY, 0644);
        if (fd >= 0) {
            close(fd);
        } else if (errno == EINTR) {
            eintr++;
        } else {
            other++;
        }
    }
    struct itimerval off = {{0, 0}, {0, 0}};
    setitimer(ITIMER_REAL, &off, NULL);
    printf("opens %ld eintr %ld other %ld signals %d\n", n, eintr, other, (int)caught);
    return eintr || other ? 1 : 0;
}
