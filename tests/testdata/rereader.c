/* rereader FILE MS: open FILE once and, every MS milliseconds, read it again
 * from offset 0 through the same fd, as top and free do with /proc/stat and
 * /proc/meminfo. Prints "rereader FAIL <n> <error>" for a failed or empty
 * read and "rereader ok <n>" every 10th good one. */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc != 3) {
		fprintf(stderr, "usage: rereader FILE MS\n");
		return 2;
	}
	int fd = open(argv[1], O_RDONLY);
	if (fd < 0) {
		printf("rereader FAIL 0 open: %s\n", strerror(errno));
		return 1;
	}
	long ms = atol(argv[2]);
	static char buf[65536];
	for (long n = 1;; n++) {
		ssize_t r = pread(fd, buf, sizeof buf, 0);
		if (r <= 0)
			printf("rereader FAIL %ld %s\n", n, r < 0 ? strerror(errno) : "empty");
		else if (n % 10 == 0)
			printf("rereader ok %ld\n", n);
		fflush(stdout);
		usleep(ms * 1000);
	}
}
