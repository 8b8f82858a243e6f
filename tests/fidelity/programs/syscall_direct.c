/* Direct syscall(2) I/O, bypassing libc's named wrappers but through libc's generic syscall()
 * (an interposable symbol: the preload library hooks it). Reads in.txt with
 * syscall(SYS_openat) and in2.txt with stdio; writes out_raw.txt and out_stdio.txt. Inline
 * syscall instructions, which no LD_PRELOAD library can see, are syscall_asm.c. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <sys/syscall.h>
#include <unistd.h>
int main(void) {
    char buf[256];
    long fd = syscall(SYS_openat, AT_FDCWD, "in.txt", O_RDONLY);
    long n = syscall(SYS_read, fd, buf, sizeof buf);
    syscall(SYS_close, fd);
    fd = syscall(SYS_openat, AT_FDCWD, "out_raw.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    syscall(SYS_write, fd, buf, n > 0 ? n : 0);
    syscall(SYS_close, fd);
    FILE *in = fopen("in2.txt", "r");
    FILE *out = fopen("out_stdio.txt", "w");
    size_t k = fread(buf, 1, sizeof buf, in);
    fwrite(buf, 1, k, out);
    fclose(in);
    fclose(out);
    puts("raw_stdio done");
    return 0;
}
