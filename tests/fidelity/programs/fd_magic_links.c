/* Reopening descriptors through their magic links: an O_PATH descriptor (no I/O of its own)
 * reopened for reading through /proc/self/fd/N, /dev/fd/N and /proc/<pid>/fd/N, and for
 * writing through /proc/thread-self/fd/N; a file opened under an O_PATH directory descriptor
 * as /proc/self/fd/N/name. Reads in.txt, in2.txt, in3.txt, sub/in4.txt; writes out.txt
 * (which exists before, as an O_PATH open needs). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
/* Open `name` O_PATH, then reopen it through the link `fmt` names (its fd, after the pid if
 * `with_pid`) with `flags`. */
static int reopen(const char *name, const char *fmt, int with_pid, int flags) {
    char p[64];
    int h = open(name, O_PATH);
    if (h < 0) { perror(name); exit(1); }
    if (with_pid) snprintf(p, sizeof p, fmt, (int)getpid(), h);
    else snprintf(p, sizeof p, fmt, h);
    int fd = open(p, flags);
    if (fd < 0) { perror(p); exit(1); }
    close(h);
    return fd;
}
int main(void) {
    char buf[256];
    ssize_t n = 0, k;
    int fd = reopen("in.txt", "/proc/self/fd/%d", 0, O_RDONLY);
    n += read(fd, buf, 64);
    close(fd);
    fd = reopen("in2.txt", "/dev/fd/%d", 0, O_RDONLY);
    n += read(fd, buf + n, 64);
    close(fd);
    fd = reopen("in3.txt", "/proc/%d/fd/%d", 1, O_RDONLY);
    n += read(fd, buf + n, 64);
    close(fd);
    fd = reopen("sub", "/proc/self/fd/%d/in4.txt", 0, O_RDONLY);
    n += read(fd, buf + n, 64);
    close(fd);
    fd = reopen("out.txt", "/proc/thread-self/fd/%d", 0, O_WRONLY | O_TRUNC);
    k = write(fd, buf, n > 0 ? n : 0);
    close(fd);
    return k == n ? 0 : 1;
}
