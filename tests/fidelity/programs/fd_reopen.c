/* Files reached through descriptor links: an O_PATH descriptor reopened for
 * reading or writing through /proc/self/fd/N, /dev/fd/N and /proc/<pid>/fd/N,
 * fopen of such a link, and truncate of one. The only name of each file in the
 * call that reads or writes it is the link; a tracer must resolve it to the file.
 * Reads in.txt, in2.txt, in3.txt; writes out.txt, out2.txt, trunc.txt (all three
 * exist before the run, so nothing else names them for writing). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int opath(const char *name) {
    int fd = open(name, O_PATH);
    if (fd < 0) { perror(name); exit(1); }
    return fd;
}

static void drain(int fd) {
    char buf[64];
    while (read(fd, buf, sizeof buf) > 0) {}
    close(fd);
}

int main(void) {
    char link[64];
    int a = opath("in.txt"), b = opath("in2.txt"), c = opath("in3.txt");
    int o = opath("out.txt"), o2 = opath("out2.txt"), t = opath("trunc.txt");

    snprintf(link, sizeof link, "/proc/self/fd/%d", a);
    drain(open(link, O_RDONLY));
    snprintf(link, sizeof link, "/dev/fd/%d", b);
    drain(openat(AT_FDCWD, link, O_RDONLY));
    snprintf(link, sizeof link, "/proc/self/fd/%d", c);
    FILE *f = fopen(link, "r");
    if (!f) { perror("fopen"); return 1; }
    while (fgetc(f) != EOF) {}
    fclose(f);

    snprintf(link, sizeof link, "/proc/self/fd/%d", o);
    int w = open(link, O_WRONLY | O_TRUNC);
    if (w < 0 || write(w, "out\n", 4) != 4) { perror("out"); return 1; }
    close(w);
    snprintf(link, sizeof link, "/proc/%d/fd/%d", (int)getpid(), o2);
    w = open(link, O_WRONLY | O_APPEND);
    if (w < 0 || write(w, "more\n", 5) != 5) { perror("out2"); return 1; }
    close(w);
    snprintf(link, sizeof link, "/dev/fd/%d", t);
    if (truncate(link, 1) != 0) { perror("truncate"); return 1; }
    return 0;
}
