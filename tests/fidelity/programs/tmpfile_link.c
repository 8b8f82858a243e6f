/* O_TMPFILE + linkat through /proc/self/fd: an unnamed file gets the name tmpfile.txt. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
int main(void) {
    int fd = open(".", O_TMPFILE | O_WRONLY, 0644);
    if (fd < 0) { perror("O_TMPFILE"); return 1; }
    write(fd, "tmp\n", 4);
    char p[64];
    snprintf(p, sizeof p, "/proc/self/fd/%d", fd);
    if (linkat(AT_FDCWD, p, AT_FDCWD, "tmpfile.txt", AT_SYMLINK_FOLLOW) != 0) { perror("linkat"); return 1; }
    close(fd);
    return 0;
}
