/* Calls made through syscall(2) that change what later paths mean or open files in a way
 * the flags cannot show: openat2 (flags in a struct) for a read and a write, then
 * syscall(SYS_chdir) into sub/ and relative stdio opens there, then syscall(SYS_fchdir)
 * back and one more relative write. Reads in.txt, sub/in_sub.txt; writes out2.txt,
 * sub/out_sub.txt, after_fchdir.txt. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <linux/openat2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>
static void copy_to(FILE *in, const char *out) {
    char buf[256];
    size_t n = fread(buf, 1, sizeof buf, in);
    FILE *o = fopen(out, "w");
    if (!o) { perror(out); exit(1); }
    fwrite(buf, 1, n, o);
    fclose(o);
}
int main(void) {
    char buf[256];
    struct open_how how;
    memset(&how, 0, sizeof how);
    how.flags = O_RDONLY;
    long fd = syscall(SYS_openat2, AT_FDCWD, "in.txt", &how, sizeof how);
    if (fd < 0) { perror("openat2 in.txt"); return 1; }
    long n = read((int)fd, buf, sizeof buf);
    close((int)fd);
    how.flags = O_WRONLY | O_CREAT | O_TRUNC;
    how.mode = 0644;
    fd = syscall(SYS_openat2, AT_FDCWD, "out2.txt", &how, sizeof how);
    if (fd < 0) { perror("openat2 out2.txt"); return 1; }
    if (write((int)fd, buf, n > 0 ? n : 0) < 0) return 1;
    close((int)fd);
    int top = open(".", O_DIRECTORY | O_RDONLY);
    if (syscall(SYS_chdir, "sub") != 0) { perror("chdir"); return 1; }
    FILE *in = fopen("in_sub.txt", "r");
    if (!in) { perror("in_sub.txt"); return 1; }
    copy_to(in, "out_sub.txt");
    if (syscall(SYS_fchdir, top) != 0) { perror("fchdir"); return 1; }
    rewind(in);
    copy_to(in, "after_fchdir.txt");
    fclose(in);
    return 0;
}
