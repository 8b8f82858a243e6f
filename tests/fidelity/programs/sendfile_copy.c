/* sendfile from in.txt into sf_out.txt (new), and copy_file_range from in.txt into an
 * existing cfr_dst.txt opened O_RDWR (so only the copy tells that it was written). */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sys/sendfile.h>
#include <unistd.h>
int main(int argc, char **argv) {
    int in = open("in.txt", O_RDONLY);
    if (argc > 1 && argv[1][0] == 's') {
        int out = open("sf_out.txt", O_WRONLY | O_CREAT | O_TRUNC, 0644);
        return sendfile(out, in, NULL, 1 << 20) < 0;
    }
    int out = open("cfr_dst.txt", O_RDWR);
    lseek(out, 0, SEEK_END);
    return copy_file_range(in, NULL, out, NULL, 1 << 20, 0) < 0;
}
