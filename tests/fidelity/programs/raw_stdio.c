/* Unbuffered POSIX I/O (open/read/write/close, no stdio buffering) on in.txt -> out_raw.txt,
 * and stdio (fopen/fread/fwrite) on in2.txt -> out_stdio.txt. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>
int main(void) {
    char buf[256];
    int fd = open("in.txt", O_RDONLY);
    ssize_t n = read(fd, buf, sizeof buf);
    close(fd);
    fd = openat(AT_FDCWD, "out_raw.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (write(fd, buf, n > 0 ? (size_t)n : 0) < 0) return 1;
    close(fd);
    FILE *in = fopen("in2.txt", "r");
    FILE *out = fopen("out_stdio.txt", "w");
    size_t k = fread(buf, 1, sizeof buf, in);
    fwrite(buf, 1, k, out);
    fclose(in);
    fclose(out);
    puts("raw_stdio done");
    return 0;
}
