/*
 * mountloop: figure 3 of bench/run. Times pairs of mount(2) + umount2(2) from
 * inside whatever it runs in (a sysvisor container, a runc container with
 * CAP_SYS_ADMIN, or a private mount namespace on the host), each call on
 * CLOCK_MONOTONIC (vDSO, never trapped) just before and after it.
 *
 *   tmpfs  mount("t", DIR/m, "tmpfs", 0, NULL)      + umount2(DIR/m, 0)
 *   proc   mount("proc", DIR/m, "proc", 0, NULL)    + umount2(DIR/m, MNT_DETACH)
 *   bind   mount(DIR/src, DIR/m, NULL, MS_BIND, NULL) + umount2(DIR/m, 0)
 *
 *   mountloop [--dir DIR] [--warmup N] [--iters N] [--modes tmpfs,proc,bind]
 *
 * DIR (default /tmp) gets the directories m and src. Prints one JSON line
 * per mode with the mount, umount and pair latencies; any failing call ends
 * the program with the errno, so a run that measured nothing cannot pass.
 * Built static: it runs in a busybox image, bind-mounted in read-only.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <time.h>
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

struct stats {
	uint64_t p50, p90, p99, min, max;
	double mean;
};

static struct stats summarise(uint64_t *v, long n)
{
	struct stats s;
	double sum = 0;
	for (long i = 0; i < n; i++)
		sum += (double)v[i];
	qsort(v, n, sizeof(*v), cmp_u64);
	s.p50 = pct(v, n, 0.50);
	s.p90 = pct(v, n, 0.90);
	s.p99 = pct(v, n, 0.99);
	s.min = v[0];
	s.max = v[n - 1];
	s.mean = sum / (double)n;
	return s;
}

static void print_stats(const char *name, struct stats s, int last)
{
	printf("\"%s\":{\"p50_ns\":%llu,\"p90_ns\":%llu,\"p99_ns\":%llu,\"min_ns\":%llu,\"max_ns\":%llu,\"mean_ns\":%.0f}%s",
	       name, (unsigned long long)s.p50, (unsigned long long)s.p90, (unsigned long long)s.p99,
	       (unsigned long long)s.min, (unsigned long long)s.max, s.mean, last ? "" : ",");
}

static void fail(const char *mode, long i, const char *what)
{
	fprintf(stderr, "mountloop: %s, pair %ld: %s: %s\n", mode, i, what, strerror(errno));
	exit(1);
}

static void run(const char *mode, const char *dir, long warmup, long iters)
{
	char m[4096], src[4096];
	snprintf(m, sizeof(m), "%s/m", dir);
	snprintf(src, sizeof(src), "%s/src", dir);
	const char *source, *fstype;
	unsigned long flags = 0;
	int uflags = 0;
	if (!strcmp(mode, "tmpfs")) {
		source = "t", fstype = "tmpfs";
	} else if (!strcmp(mode, "proc")) {
		source = "proc", fstype = "proc", uflags = MNT_DETACH;
	} else if (!strcmp(mode, "bind")) {
		source = src, fstype = NULL, flags = MS_BIND;
	} else {
		fprintf(stderr, "mountloop: unknown mode %s\n", mode);
		exit(2);
	}
	uint64_t *mt = calloc(iters, sizeof(*mt)), *ut = calloc(iters, sizeof(*ut)), *pt = calloc(iters, sizeof(*pt));
	if (!mt || !ut || !pt) {
		perror("mountloop: calloc");
		exit(1);
	}
	uint64_t start = 0;
	for (long i = -warmup; i < iters; i++) {
		if (i == 0)
			start = now_ns();
		uint64_t t0 = now_ns();
		if (mount(source, m, fstype, flags, NULL) != 0)
			fail(mode, i, "mount");
		uint64_t t1 = now_ns();
		if (umount2(m, uflags) != 0)
			fail(mode, i, "umount2");
		uint64_t t2 = now_ns();
		if (i >= 0) {
			mt[i] = t1 - t0;
			ut[i] = t2 - t1;
			pt[i] = t2 - t0;
		}
	}
	uint64_t wall = now_ns() - start;
	printf("{\"mode\":\"%s\",\"iters\":%ld,\"warmup\":%ld,\"wall_ns\":%llu,", mode, iters, warmup, (unsigned long long)wall);
	print_stats("mount", summarise(mt, iters), 0);
	print_stats("umount", summarise(ut, iters), 0);
	print_stats("pair", summarise(pt, iters), 1);
	printf("}\n");
	fflush(stdout);
	free(mt);
	free(ut);
	free(pt);
}

int main(int argc, char **argv)
{
	const char *dir = "/tmp", *modes = "tmpfs,proc,bind";
	long warmup = 50, iters = 500;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (v && !strcmp(a, "--dir"))
			dir = v, i++;
		else if (v && !strcmp(a, "--warmup"))
			warmup = atol(v), i++;
		else if (v && !strcmp(a, "--iters"))
			iters = atol(v), i++;
		else if (v && !strcmp(a, "--modes"))
			modes = v, i++;
		else {
			fprintf(stderr, "usage: mountloop [--dir DIR] [--warmup N] [--iters N] [--modes tmpfs,proc,bind]\n");
			return 2;
		}
	}
	if (iters < 1 || warmup < 0) {
		fprintf(stderr, "mountloop: --iters must be at least 1\n");
		return 2;
	}
	char path[4096];
	static const char *const dirs[] = {"m", "src"};
	for (int i = 0; i < 2; i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, dirs[i]);
		if (mkdir(path, 0755) != 0 && errno != EEXIST) {
			fprintf(stderr, "mountloop: mkdir %s: %s\n", path, strerror(errno));
			return 1;
		}
	}
	char *list = strdup(modes);
	for (char *save = NULL, *m = strtok_r(list, ",", &save); m; m = strtok_r(NULL, ",", &save))
		run(m, dir, warmup, iters);
	free(list);
	return 0;
}
