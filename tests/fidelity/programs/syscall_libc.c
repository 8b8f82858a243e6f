/* File calls made through libc's generic syscall(2) wrapper (an interposable symbol, so the
 * preload library hooks it): openat2 reads in.txt, fopen reads in2.txt (so a tracer has the
 * cwd cached); syscall(SYS_chdir) into sub/, then a plain
 * relative fopen writes rel.txt there (a tracer that missed the chdir would record a wrong
 * path); a raw openat creates raw.txt, renameat2 moves it to moved.txt; unlinkat removes gone.txt
 * after creating it. Expected: reads {in.txt, in2.txt}, writes {sub/rel.txt, sub/moved.txt}. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    char buf[256];
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = O_RDONLY;
    long fd = syscall(SYS_openat2, AT_FDCWD, "in.txt", &how, sizeof how);
    if (fd < 0) { perror("openat2"); return 1; }
    long n = read((int)fd, buf, sizeof buf);
    close((int)fd);
    FILE *f2 = fopen("in2.txt", "r");
    if (!f2) { perror("in2.txt"); return 1; }
    fclose(f2);
    if (syscall(SYS_chdir, "sub") != 0) { perror("chdir"); return 1; }
    FILE *f = fopen("rel.txt", "w");
    fwrite(buf, 1, n > 0 ? (size_t)n : 0, f);
    fclose(f);
    fd = syscall(SYS_openat, AT_FDCWD, "raw.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    write((int)fd, buf, n > 0 ? (size_t)n : 0);
    close((int)fd);
    if (syscall(SYS_renameat2, AT_FDCWD, "raw.txt", AT_FDCWD, "moved.txt", 0) != 0) { perror("renameat2"); return 1; }
    fd = syscall(SYS_openat, AT_FDCWD, "gone.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    close((int)fd);
    if (syscall(SYS_unlinkat, AT_FDCWD, "gone.txt", 0) != 0) { perror("unlinkat"); return 1; }
    puts("syscall_libc done");
    return 0;
}
