/*
 * Shared by notifyloop.c (in the containers) and client.c (on the host,
 * figure 7's C floor): the common start and the latency histogram. Both
 * sides of figure 7 must start on the same signal and bucket latencies the
 * same way, or benchtool would pool and compare unlike things.
 */
#ifndef SVBENCH_PACED_H
#define SVBENCH_PACED_H

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/sysinfo.h>
#include <time.h>

/* 1 µs buckets below 1 ms, 10 µs below 10 ms, 100 µs below 100 ms, then
 * one overflow bucket. */
#define PACED_NBUCKETS (1000 + 900 + 900 + 1)

static inline uint64_t paced_ns_of(struct timespec ts)
{
	return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static inline uint64_t paced_now(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return paced_ns_of(ts);
}

static inline struct timespec paced_ts_of(uint64_t ns)
{
	struct timespec ts = {.tv_sec = ns / 1000000000u, .tv_nsec = ns % 1000000000u};
	return ts;
}

/* paced_bucket maps a latency to its bucket; paced_lower gives a bucket's
 * lower bound. */
static inline int paced_bucket(uint64_t ns)
{
	uint64_t us = ns / 1000;
	if (us < 1000)
		return (int)us;
	if (us < 10000)
		return 1000 + (int)((us - 1000) / 10);
	if (us < 100000)
		return 1900 + (int)((us - 10000) / 100);
	return PACED_NBUCKETS - 1;
}

static inline uint64_t paced_lower(int b)
{
	if (b < 1000)
		return (uint64_t)b * 1000;
	if (b < 1900)
		return (1000 + (uint64_t)(b - 1000) * 10) * 1000;
	if (b < 2800)
		return (10000 + (uint64_t)(b - 1900) * 100) * 1000;
	return 100000000;
}

/* paced_start waits for the common start: with ready and go, it creates
 * the ready file, then polls every 10 ms for the go file, which holds the
 * start in ns since the epoch (whoever launches many copies writes it once
 * all are ready, however long launching took); then it sleeps until that
 * time on CLOCK_REALTIME. Returns how late it was (0 when on time), or -1
 * with errno set when the ready file cannot be made. */
static inline int64_t paced_start(const char *ready, const char *go, uint64_t start_at)
{
	if (ready && go) {
		FILE *r = fopen(ready, "w");
		if (!r || fclose(r) != 0)
			return -1;
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
	uint64_t real = paced_now(CLOCK_REALTIME);
	if (start_at > real) {
		struct timespec ts = paced_ts_of(start_at);
		while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &ts, NULL) == EINTR)
			;
		return 0;
	}
	return start_at ? (int64_t)(real - start_at) : 0;
}

/* paced_loop makes one timed sysinfo(2) call into si every period_us (0:
 * back to back) until CLOCK_MONOTONIC reaches end, counting each latency
 * in hist. It returns the number of calls made; a failing call ends it
 * with *failed set (errno tells why). */
static inline uint64_t paced_loop(struct sysinfo *si, uint64_t end, uint64_t period_us, uint64_t *hist,
				  uint64_t *sum, uint64_t *max, int *failed)
{
	uint64_t calls = 0, next = paced_now(CLOCK_MONOTONIC);
	*sum = *max = 0;
	*failed = 0;
	for (;;) {
		if (period_us) {
			next += period_us * 1000;
			struct timespec ts = paced_ts_of(next);
			while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
				;
		}
		uint64_t t0 = paced_now(CLOCK_MONOTONIC);
		if (t0 >= end)
			return calls;
		if (sysinfo(si) != 0) {
			*failed = 1;
			return calls;
		}
		uint64_t d = paced_now(CLOCK_MONOTONIC) - t0;
		hist[paced_bucket(d)]++;
		calls++;
		*sum += d;
		if (d > *max)
			*max = d;
	}
}

/* paced_print writes the JSON line benchtool pools: the number of calls,
 * how late the start was, and the histogram as "lower bound in ns:count"
 * pairs. */
static inline void paced_print(FILE *f, const uint64_t *hist, uint64_t calls, int64_t late_ns, uint64_t period_us,
			       uint64_t sum, uint64_t max, unsigned long long totalram)
{
	fprintf(f, "{\"calls\":%llu,\"late_ns\":%lld,\"period_us\":%llu,\"mean_ns\":%.0f,\"max_ns\":%llu,\"totalram\":%llu,\"hist\":\"",
		(unsigned long long)calls, (long long)late_ns, (unsigned long long)period_us,
		calls ? (double)sum / (double)calls : 0.0, (unsigned long long)max, totalram);
	const char *sep = "";
	for (int b = 0; b < PACED_NBUCKETS; b++)
		if (hist[b]) {
			fprintf(f, "%s%llu:%llu", sep, (unsigned long long)paced_lower(b), (unsigned long long)hist[b]);
			sep = " ";
		}
	fprintf(f, "\"}\n");
}

#endif
