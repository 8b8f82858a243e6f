/* Writes through shared writable mappings: a new file (mmap_new.bin) and an existing one
 * opened O_RDWR without create/truncate (mmap_old.bin, same size before and after). */
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
static int scribble(const char *path, int flags) {
    int fd = open(path, flags, 0644);
    if (fd < 0) return 1;
    if (flags & O_CREAT) ftruncate(fd, 4096);
    char *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) return 1;
    close(fd);
    memcpy(m, "mapped write", 12);
    msync(m, 4096, MS_SYNC);
    munmap(m, 4096);
    return 0;
}
int main(void) {
    return scribble("mmap_new.bin", O_RDWR | O_CREAT) | scribble("mmap_old.bin", O_RDWR);
}
