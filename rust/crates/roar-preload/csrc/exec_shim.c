/*
 * exec_shim.c - the C-variadic members of the exec family (and syscall) for roar-preload.
 *
 * Why C: execl, execlp and execle take a NULL-terminated *variadic* argument
 * list, and stable Rust cannot define C-variadic functions. Declaring them in
 * Rust with many fixed pointer parameters would read argument slots the
 * caller never passed (undefined behaviour, and on the stack it reads the
 * caller's frame). So this file walks the list with va_arg, exactly like
 * glibc's own execl (count first, then a VLA), and hands a normal argv to the
 * Rust hook bodies. glibc implements execl* by calling __execve/__execvpe
 * internally (no PLT), which is why hooking execve alone would miss them.
 *
 * The functions here are hidden; lib.rs exports `execl`, `execlp`, `execle`
 * as naked one-instruction trampolines that jump here with every register
 * and the stack untouched, because a Rust cdylib does not export symbols
 * defined in linked C objects.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>

#define HIDDEN __attribute__((visibility("hidden")))

extern char **environ;

/* Rust hook bodies (exec.rs, syscall.rs). */
long roar_internal_syscall(long n, long a1, long a2, long a3, long a4, long a5, long a6);
int roar_internal_execve(const char *path, char *const argv[], char *const envp[]);
int roar_internal_execvpe(const char *file, char *const argv[], char *const envp[]);

/* Count arguments after arg0 up to and including the terminating NULL. */
static ptrdiff_t count_args(const char *arg0, va_list ap) {
    ptrdiff_t argc = 1; /* arg0 */
    if (arg0 == NULL)
        return 0;
    while (va_arg(ap, const char *) != NULL) {
        if (++argc >= INT_MAX / (ptrdiff_t)sizeof(char *))
            return -1;
    }
    return argc;
}

typedef int (*exec_fn)(const char *, char *const[], char *const[]);

/*
 * The one place the argument list of execl, execlp and execle is gathered:
 * count it, copy it into an argv on this frame (a VLA, like glibc: no malloc
 * before exec), and hand it to `run`. With `envp_follows` (execle) the word
 * after the terminating NULL is the environment; otherwise it is `environ`.
 * `ap` is left indeterminate: the caller only va_ends it.
 */
static int exec_list(exec_fn run, const char *path, const char *arg0, va_list ap,
                     int envp_follows) {
    va_list ap2;
    va_copy(ap2, ap);
    ptrdiff_t argc = count_args(arg0, ap2);
    va_end(ap2);
    if (argc < 0) {
        errno = E2BIG;
        return -1;
    }
    const char *argv[argc + 1];
    argv[0] = arg0;
    for (ptrdiff_t i = 1; i <= argc; i++)
        argv[i] = i < argc ? va_arg(ap, const char *) : NULL;
    char *const *envp = environ;
    if (envp_follows) {
        /* The envp comes right after the NULL that ends the argument list. */
        if (arg0 != NULL)
            (void)va_arg(ap, const char *); /* the terminating NULL itself */
        envp = va_arg(ap, char *const *);
    }
    return run(path, (char *const *)argv, envp);
}

HIDDEN int roar_shim_execl(const char *path, const char *arg0, ...) {
    va_list ap;
    va_start(ap, arg0);
    int r = exec_list(roar_internal_execve, path, arg0, ap, 0);
    va_end(ap);
    return r;
}

HIDDEN int roar_shim_execlp(const char *file, const char *arg0, ...) {
    va_list ap;
    va_start(ap, arg0);
    int r = exec_list(roar_internal_execvpe, file, arg0, ap, 0);
    va_end(ap);
    return r;
}

HIDDEN int roar_shim_execle(const char *path, const char *arg0, ...) {
    va_list ap;
    va_start(ap, arg0);
    int r = exec_list(roar_internal_execve, path, arg0, ap, 1);
    va_end(ap);
    return r;
}

/*
 * syscall(2): like glibc's own wrapper, take the number and six argument
 * words whatever the call needs (a word the caller did not pass is read from
 * a register or the caller's outgoing stack area and ignored by the kernel),
 * and hand them to the Rust hook body (syscall.rs).
 */
HIDDEN long roar_shim_syscall(long n, ...) {
    va_list ap;
    va_start(ap, n);
    long a1 = va_arg(ap, long), a2 = va_arg(ap, long), a3 = va_arg(ap, long);
    long a4 = va_arg(ap, long), a5 = va_arg(ap, long), a6 = va_arg(ap, long);
    va_end(ap);
    return roar_internal_syscall(n, a1, a2, a3, a4, a5, a6);
}
