/*
 * procread: figure 5 of bench/run. Times open + read to EOF + close of /proc
 * files, each cycle on CLOCK_MONOTONIC (vDSO, never trapped) just before the
 * open and after the close, the way a program that polls /proc reads them.
 *
 *   procread [--warmup N] [--iters N] FILE...
 *
 * Prints one JSON line per file with the bytes of the last read and the
 * p50, p90, p99, min, max and mean of a cycle; a file that does not exist
 * gets {"file":...,"missing":true}. Any other failure ends the program with
 * the errno. Built static: it runs in a busybox image, bind-mounted in.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/wait.h>
#include <unistd.h>

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static uint64_t pct(const uint64_t *s, long n, double p)
{
	return s[(long)(p * (double)(n - 1) + 0.5)];
}

static char buf[1 << 16];

/* cycle opens, reads to EOF and closes path; returns the bytes read. */
static long cycle(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	long total = 0;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof(buf));
		if (n < 0) {
			int e = errno;
			close(fd);
			errno = e;
			return -1;
		}
		if (n == 0)
			break;
		total += n;
	}
	if (close(fd) != 0)
		return -1;
	return total;
}

/* parallel runs n reader processes, each cycling path for ms milliseconds
 * after a common start, and prints the total cycles per second. */
static int parallel(const char *path, int n, long ms)
{
	int p[2];
	if (pipe(p) != 0) {
		perror("procread: pipe");
		return 1;
	}
	uint64_t start = now_ns() + 50000000u; /* every reader forked by then */
	for (int r = 0; r < n; r++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("procread: fork");
			return 1;
		}
		if (pid == 0) {
			close(p[0]);
			while (now_ns() < start)
				;
			uint64_t end = start + (uint64_t)ms * 1000000u;
			long done = 0;
			while (now_ns() < end) {
				if (cycle(path) < 0)
					_exit(1);
				done++;
			}
			if (write(p[1], &done, sizeof(done)) != sizeof(done))
				_exit(1);
			_exit(0);
		}
	}
	close(p[1]);
	long total = 0, one;
	int got = 0, failed = 0;
	while (read(p[0], &one, sizeof(one)) == sizeof(one))
		total += one, got++;
	for (int r = 0; r < n; r++) {
		int st;
		if (wait(&st) < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
			failed = 1;
	}
	if (failed || got != n) {
		fprintf(stderr, "procread: a reader of %s failed\n", path);
		return 1;
	}
	printf("{\"file\":\"%s\",\"readers\":%d,\"ms\":%ld,\"ops\":%ld,\"ops_per_s\":%.0f}\n", path, n, ms, total,
	       (double)total * 1000.0 / (double)ms);
	fflush(stdout);
	return 0;
}

int main(int argc, char **argv)
{
	long warmup = 200, iters = 2000, ms = 2000;
	int i, readers = 0;
	for (i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (v && !strcmp(a, "--warmup"))
			warmup = atol(v), i++;
		else if (v && !strcmp(a, "--iters"))
			iters = atol(v), i++;
		else if (v && !strcmp(a, "--parallel"))
			readers = atoi(v), i++;
		else if (v && !strcmp(a, "--ms"))
			ms = atol(v), i++;
		else if (a[0] == '-') {
			fprintf(stderr, "usage: procread [--warmup N] [--iters N] | [--parallel READERS [--ms MS]] FILE...\n");
			return 2;
		} else
			break;
	}
	if (iters < 1 || warmup < 0 || i >= argc) {
		fprintf(stderr, "usage: procread [--warmup N] [--iters N] | [--parallel READERS [--ms MS]] FILE...\n");
		return 2;
	}
	if (readers > 0) {
		for (; i < argc; i++)
			if (parallel(argv[i], readers, ms) != 0)
				return 1;
		return 0;
	}
	uint64_t *t = calloc(iters, sizeof(*t));
	if (!t) {
		perror("procread: calloc");
		return 1;
	}
	for (; i < argc; i++) {
		const char *path = argv[i];
		if (access(path, R_OK) != 0 && errno == ENOENT) {
			printf("{\"file\":\"%s\",\"missing\":true}\n", path);
			continue;
		}
		long bytes = 0;
		for (long k = -warmup; k < iters; k++) {
			uint64_t t0 = now_ns();
			bytes = cycle(path);
			uint64_t t1 = now_ns();
			if (bytes < 0) {
				fprintf(stderr, "procread: %s: %s\n", path, strerror(errno));
				return 1;
			}
			if (k >= 0)
				t[k] = t1 - t0;
		}
		double sum = 0;
		for (long k = 0; k < iters; k++)
			sum += (double)t[k];
		qsort(t, iters, sizeof(*t), cmp_u64);
		printf("{\"file\":\"%s\",\"bytes\":%ld,\"warmup\":%ld,\"iters\":%ld,\"p50_ns\":%llu,\"p90_ns\":%llu,"
		       "\"p99_ns\":%llu,\"min_ns\":%llu,\"max_ns\":%llu,\"mean_ns\":%.0f}\n",
		       path, bytes, warmup, iters, (unsigned long long)pct(t, iters, 0.5), (unsigned long long)pct(t, iters, 0.9),
		       (unsigned long long)pct(t, iters, 0.99), (unsigned long long)t[0], (unsigned long long)t[iters - 1],
		       sum / (double)iters);
		fflush(stdout);
	}
	free(t);
	return 0;
}
