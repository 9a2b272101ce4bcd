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
 * 10 µs below 10 ms, 100 µs below 100 ms, then one overflow bucket), on
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

#define NBUCKETS (1000 + 900 + 900 + 1)

static uint64_t ns_of(struct timespec ts)
{
	return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static uint64_t now(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return ns_of(ts);
}

static struct timespec ts_of(uint64_t ns)
{
	struct timespec ts = {.tv_sec = ns / 1000000000u, .tv_nsec = ns % 1000000000u};
	return ts;
}

/* bucket maps a latency to its bucket; lower gives a bucket's lower bound. */
static int bucket(uint64_t ns)
{
	uint64_t us = ns / 1000;
	if (us < 1000)
		return (int)us;
	if (us < 10000)
		return 1000 + (int)((us - 1000) / 10);
	if (us < 100000)
		return 1900 + (int)((us - 10000) / 100);
	return NBUCKETS - 1;
}

static uint64_t lower(int b)
{
	if (b < 1000)
		return (uint64_t)b * 1000;
	if (b < 1900)
		return (1000 + (uint64_t)(b - 1000) * 10) * 1000;
	if (b < 2800)
		return (10000 + (uint64_t)(b - 1900) * 100) * 1000;
	return 100000000;
}

static uint64_t hist[NBUCKETS];

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
	if (ready && go) {
		FILE *r = fopen(ready, "w");
		if (!r || fclose(r) != 0) {
			fprintf(stderr, "notifyloop: %s: %s\n", ready, strerror(errno));
			return 1;
		}
		struct timespec tick = {.tv_sec = 0, .tv_nsec = 10000000};
		for (;;) {
			FILE *g = fopen(go, "r");
			if (g) {
				unsigned long long ns = 0;
				int ok = fscanf(g, "%llu", &ns) == 1;
				fclose(g);
				if (ok && ns) {
					start_at = ns;
					break;
				}
			}
			nanosleep(&tick, NULL);
		}
	}
	struct sysinfo si;
	/* Wait for the common start on the wall clock, then run on the monotonic one. */
	uint64_t real = now(CLOCK_REALTIME);
	int64_t late_ns = 0;
	if (start_at > real) {
		struct timespec ts = ts_of(start_at);
		while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, NULL) == EINTR)
			;
	} else if (start_at) {
		late_ns = (int64_t)(real - start_at);
	}
	uint64_t t_start = now(CLOCK_MONOTONIC), end = t_start + duration_ms * 1000000u - (uint64_t)late_ns;
	for (uint64_t i = 0; i < warmup; i++)
		if (sysinfo(&si) != 0) {
			fprintf(stderr, "notifyloop: sysinfo: %s\n", strerror(errno));
			return 1;
		}
	uint64_t calls = 0, sum = 0, max = 0, next = now(CLOCK_MONOTONIC);
	for (;;) {
		if (period_us) {
			next += period_us * 1000;
			struct timespec ts = ts_of(next);
			while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
				;
		}
		uint64_t t0 = now(CLOCK_MONOTONIC);
		if (t0 >= end)
			break;
		if (sysinfo(&si) != 0) {
			fprintf(stderr, "notifyloop: sysinfo: %s\n", strerror(errno));
			return 1;
		}
		uint64_t d = now(CLOCK_MONOTONIC) - t0;
		hist[bucket(d)]++;
		calls++;
		sum += d;
		if (d > max)
			max = d;
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
	fprintf(f, "{\"calls\":%llu,\"late_ns\":%lld,\"period_us\":%llu,\"mean_ns\":%.0f,\"max_ns\":%llu,\"totalram\":%llu,\"hist\":\"",
	       (unsigned long long)calls, (long long)late_ns, (unsigned long long)period_us,
	       calls ? (double)sum / (double)calls : 0.0, (unsigned long long)max,
	       (unsigned long long)si.totalram * si.mem_unit);
	const char *sep = "";
	for (int b = 0; b < NBUCKETS; b++)
		if (hist[b]) {
			fprintf(f, "%s%llu:%llu", sep, (unsigned long long)lower(b), (unsigned long long)hist[b]);
			sep = " ";
		}
	fprintf(f, "\"}\n");
	if (out && (fclose(f) != 0 || rename(tmp, out) != 0)) {
		fprintf(stderr, "notifyloop: %s: %s\n", out, strerror(errno));
		return 1;
	}
	return 0;
}
