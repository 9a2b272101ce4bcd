/*
 * sysloop: figure 4 of bench/run. Times system calls that no sysvisor policy
 * traps, to show what the container's seccomp filter, user namespace and
 * idmapped rootfs add to a program that never meets sysvisord:
 *
 *   getpid  syscall(SYS_getpid)                      (no libc cache)
 *   read    pread(fd, buf, 4096, 0) of FILE, opened once
 *   stat    stat(FILE): a path walk on the container's rootfs
 *
 *   sysloop [--file FILE] [--warmup N] [--iters N] [--batches N] [--modes getpid,read,stat]
 *
 * Each mode makes N warm-up calls, then BATCHES batches of ITERS calls, each
 * batch timed on CLOCK_MONOTONIC (vDSO, never trapped); a batch's ns per call
 * is its time over ITERS. Prints one JSON line per mode with the median, min,
 * max and mean over batches. A failing call ends the program with the errno.
 * Built static: it runs in a busybox image, bind-mounted in read-only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static int cmp_dbl(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static const char *file = "/etc/passwd";
static int fd = -1;
static char buf[4096];

static void fail(const char *mode, const char *what)
{
	fprintf(stderr, "sysloop: %s: %s: %s\n", mode, what, strerror(errno));
	exit(1);
}

/* one_call makes one call of the mode; 0 on success. */
static inline int one_call(int mode)
{
	struct stat st;
	switch (mode) {
	case 0:
		return syscall(SYS_getpid) > 0 ? 0 : -1;
	case 1:
		return pread(fd, buf, sizeof(buf), 0) > 0 ? 0 : -1;
	default:
		return stat(file, &st);
	}
}

static void run(const char *name, long warmup, long iters, long batches)
{
	int mode;
	if (!strcmp(name, "getpid"))
		mode = 0;
	else if (!strcmp(name, "read"))
		mode = 1;
	else if (!strcmp(name, "stat"))
		mode = 2;
	else {
		fprintf(stderr, "sysloop: unknown mode %s\n", name);
		exit(2);
	}
	for (long i = 0; i < warmup; i++)
		if (one_call(mode) != 0)
			fail(name, "warm-up call");
	double *ns = calloc(batches, sizeof(*ns)), sum = 0;
	if (!ns)
		fail(name, "calloc");
	for (long b = 0; b < batches; b++) {
		uint64_t t0 = now_ns();
		for (long i = 0; i < iters; i++)
			if (one_call(mode) != 0)
				fail(name, "call");
		ns[b] = (double)(now_ns() - t0) / (double)iters;
		sum += ns[b];
	}
	qsort(ns, batches, sizeof(*ns), cmp_dbl);
	double med = batches % 2 ? ns[batches / 2] : (ns[batches / 2 - 1] + ns[batches / 2]) / 2;
	printf("{\"mode\":\"%s\",\"warmup\":%ld,\"iters\":%ld,\"batches\":%ld,\"file\":\"%s\","
	       "\"ns_per_op\":{\"median\":%.2f,\"min\":%.2f,\"max\":%.2f,\"mean\":%.2f}}\n",
	       name, warmup, iters, batches, mode == 0 ? "" : file, med, ns[0], ns[batches - 1], sum / (double)batches);
	fflush(stdout);
	free(ns);
}

int main(int argc, char **argv)
{
	const char *modes = "getpid,read,stat";
	long warmup = 10000, iters = 20000, batches = 20;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (v && !strcmp(a, "--file"))
			file = v, i++;
		else if (v && !strcmp(a, "--warmup"))
			warmup = atol(v), i++;
		else if (v && !strcmp(a, "--iters"))
			iters = atol(v), i++;
		else if (v && !strcmp(a, "--batches"))
			batches = atol(v), i++;
		else if (v && !strcmp(a, "--modes"))
			modes = v, i++;
		else {
			fprintf(stderr, "usage: sysloop [--file FILE] [--warmup N] [--iters N] [--batches N] [--modes getpid,read,stat]\n");
			return 2;
		}
	}
	if (iters < 1 || batches < 1 || warmup < 0) {
		fprintf(stderr, "sysloop: --iters and --batches must be positive\n");
		return 2;
	}
	fd = open(file, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		fail("open", file);
	char *list = strdup(modes), *save = NULL;
	for (char *m = strtok_r(list, ",", &save); m; m = strtok_r(NULL, ",", &save))
		run(m, warmup, iters, batches);
	free(list);
	return 0;
}
