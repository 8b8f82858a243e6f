/* Opens that fail or name no content, around one real read, one real write and a
 * read-write open that only reads. A tracer that decides at syscall entry (roar-ptrace
 * does, for speed) must still report none of the failures.
 * `edge_opens perm` also opens files the caller may not open (run it unprivileged). */
#include <fcntl.h>
#include <string.h>
#include <unistd.h>

static int fails(int fd) {
    if (fd >= 0) {
        close(fd);
        return 0;
    }
    return 1;
}

int main(int argc, char **argv) {
    char buf[64];
    int fd;
    if (!fails(open("missing.txt", O_RDONLY))) return 10;
    if (!fails(open("nodir/out.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644))) return 11;
    if (!fails(open("exists.txt", O_WRONLY | O_CREAT | O_EXCL, 0644))) return 12;
    if (!fails(open("absent.txt", O_WRONLY | O_TRUNC))) return 13;
    if (!fails(open("in.txt/sub", O_RDONLY))) return 14; /* ENOTDIR */
    if (symlink("in.txt", "link.txt") != 0) return 15;
    if (!fails(open("link.txt", O_RDONLY | O_NOFOLLOW))) return 16; /* ELOOP */
    fd = open(".", O_RDONLY); /* a directory, without O_DIRECTORY */
    if (fd < 0) return 17;
    close(fd);
    if (argc > 1 && !strcmp(argv[1], "perm")) {
        if (!fails(open("secret.txt", O_RDONLY))) return 20;  /* mode 000 */
        if (!fails(open("locked.txt", O_WRONLY | O_TRUNC))) return 21; /* mode 444 */
        if (!fails(open("locked.txt", O_RDWR))) return 22;
        if (!fails(open("ro_dir/new.txt", O_WRONLY | O_CREAT, 0644))) return 23; /* dir 555 */
    }
    fd = open("in.txt", O_RDONLY);
    if (fd < 0 || read(fd, buf, sizeof buf) < 0) return 30;
    close(fd);
    fd = open("out.txt", O_WRONLY | O_CREAT | O_EXCL, 0644);
    if (fd < 0 || write(fd, "ok\n", 3) != 3) return 31;
    close(fd);
    fd = open("rw.txt", O_RDWR); /* read-write open that only reads: an input */
    if (fd < 0 || read(fd, buf, sizeof buf) < 0) return 32;
    close(fd);
    return 0;
}
