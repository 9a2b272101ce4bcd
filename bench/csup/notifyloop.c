/*
 * notifyloop: figure 7 of bench/run. Makes trapped sysinfo(2) calls at a
 * steady pace from inside a sysvisor container and times each one on
 * CLOCK_MONOTONIC (vDSO, never trapped), so that many containers run it at
 * once and the latencies can be pooled.
 *
 *   notifyloop (--start-at NS | --ready FILE --go FILE) --duration-ms N
 *              [--period-us N] [--warmup N] [--out FILE]
 *
 * It waits until CLOCK_REALTIME reaches NS (ns since the epoch: every copy
 * starts together). With --ready and --go it first creates the ready file,
 * then polls every 10 ms for the go file, which holds NS: whoever launches
 * many copies writes it once all are ready, however long launching took.
 * It then makes WARMUP untimed calls, then one call every PERIOD
 * µs (0: back to back) until DURATION has passed since NS. It prints one JSON
 * line: the number of calls, how late it started, and a histogram of the
 * latencies as "lower bound in ns:count" pairs (1 µs buckets below 1 ms,
 * 10 µs below 10 ms, 100 µs below 100 ms, then one overflow bucket; paced.h,
 * shared with client.c, which is figure 7's C floor), on
 * stdout or, with --out, into FILE (written as FILE.tmp, then renamed, so a
 * reader polling for FILE never sees half of it: `docker exec -d` leaves no
 * stdout to read). A failing call ends it with the errno. Built static: it is
 * bind-mounted in.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <time.h>

#include "paced.h"

static uint64_t hist[PACED_NBUCKETS];

int main(int argc, char **argv)
{
	uint64_t start_at = 0, duration_ms = 0, period_us = 10000, warmup = 10;
	const char *out = NULL, *ready = NULL, *go = NULL;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (v && !strcmp(a, "--start-at"))
			start_at = strtoull(v, NULL, 10), i++;
		else if (v && !strcmp(a, "--duration-ms"))
			duration_ms = strtoull(v, NULL, 10), i++;
		else if (v && !strcmp(a, "--period-us"))
			period_us = strtoull(v, NULL, 10), i++;
		else if (v && !strcmp(a, "--warmup"))
			warmup = strtoull(v, NULL, 10), i++;
		else if (v && !strcmp(a, "--out"))
			out = v, i++;
		else if (v && !strcmp(a, "--ready"))
			ready = v, i++;
		else if (v && !strcmp(a, "--go"))
			go = v, i++;
		else {
			fprintf(stderr, "usage: notifyloop (--start-at NS | --ready FILE --go FILE) --duration-ms N [--period-us N] [--warmup N] [--out FILE]\n");
			return 2;
		}
	}
	if (duration_ms == 0) {
		fprintf(stderr, "notifyloop: --duration-ms is required\n");
		return 2;
	}
	struct sysinfo si;
	int64_t late_ns = paced_start(ready, go, start_at);
	if (late_ns < 0) {
		fprintf(stderr, "notifyloop: %s: %s\n", ready, strerror(errno));
		return 1;
	}
	/* Started on the wall clock; runs on the monotonic one. */
	uint64_t t_start = paced_now(CLOCK_MONOTONIC), end = t_start + duration_ms * 1000000u - (uint64_t)late_ns;
	for (uint64_t i = 0; i < warmup; i++)
		if (sysinfo(&si) != 0) {
			fprintf(stderr, "notifyloop: sysinfo: %s\n", strerror(errno));
			return 1;
		}
	uint64_t sum, max;
	int failed;
	uint64_t calls = paced_loop(&si, end, period_us, hist, &sum, &max, &failed);
	if (failed) {
		fprintf(stderr, "notifyloop: sysinfo: %s\n", strerror(errno));
		return 1;
	}
	char tmp[4096];
	FILE *f = stdout;
	if (out) {
		snprintf(tmp, sizeof(tmp), "%s.tmp", out);
		if (!(f = fopen(tmp, "w"))) {
			fprintf(stderr, "notifyloop: %s: %s\n", tmp, strerror(errno));
			return 1;
		}
	}
	paced_print(f, hist, calls, late_ns, period_us, sum, max, (unsigned long long)si.totalram * si.mem_unit);
	if (out && (fclose(f) != 0 || rename(tmp, out) != 0)) {
		fprintf(stderr, "notifyloop: %s: %s\n", out, strerror(errno));
		return 1;
	}
	return 0;
}
