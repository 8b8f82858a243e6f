/* Not a corpus case: for the setuid tests (tests/resilience/test_ptrace_faults.py), installed
 * as a setuid (or setgid, with argument "gid") copy owned by another user. Exits 0 and prints
 * "privileged" when it runs with its owner's (group's) id, else prints "Permission denied" on
 * stderr and exits 3, like a setuid tool that finds itself without its privileges. */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
int main(int argc, char **argv) {
    struct stat st;
    if (stat("/proc/self/exe", &st) != 0) return 2;
    int gid = argc > 1 && strcmp(argv[1], "gid") == 0;
    if (gid ? getegid() == st.st_gid : geteuid() == st.st_uid) {
        puts("privileged");
        return 0;
    }
    fprintf(stderr, "Permission denied (euid %d egid %d)\n", (int)geteuid(), (int)getegid());
    return 3;
}
