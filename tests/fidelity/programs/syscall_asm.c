/* File I/O with inline `syscall` instructions, never entering libc (as Go-style runtimes do):
 * invisible to any LD_PRELOAD library by construction, kept in the corpus to show that gap
 * (ptrace sees it). Reads in.txt, writes out_asm.txt. x86_64 and aarch64. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/syscall.h>
static long sc4(long n, long a, long b, long c, long d) {
    long r;
#if defined(__x86_64__)
    register long r10 __asm__("r10") = d;
    __asm__ volatile("syscall" : "=a"(r) : "a"(n), "D"(a), "S"(b), "d"(c), "r"(r10) : "rcx", "r11", "memory");
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = n, x0 __asm__("x0") = a, x1 __asm__("x1") = b;
    register long x2 __asm__("x2") = c, x3 __asm__("x3") = d;
    __asm__ volatile("svc 0" : "+r"(x0) : "r"(x8), "r"(x1), "r"(x2), "r"(x3) : "memory");
    r = x0;
#endif
    return r;
}
int main(void) {
    char buf[256];
    long fd = sc4(SYS_openat, AT_FDCWD, (long)"in.txt", O_RDONLY, 0);
    long n = sc4(SYS_read, fd, (long)buf, sizeof buf, 0);
    sc4(SYS_close, fd, 0, 0, 0);
    fd = sc4(SYS_openat, AT_FDCWD, (long)"out_asm.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    sc4(SYS_write, fd, (long)buf, n > 0 ? n : 0, 0);
    sc4(SYS_close, fd, 0, 0, 0);
    return 0;
}
