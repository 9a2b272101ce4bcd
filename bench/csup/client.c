/*
 * client: the trapped side of the notify round-trip benchmark, identical for
 * every supervisor it is measured against.
 *
 * It joins the given cgroups (so the supervisor's sysinfo handler has a
 * container-like memory and pids cgroup to read), installs a seccomp filter
 * that sends sysinfo(2) to a user-space listener and allows everything else,
 * hands the listener fd to a supervisor over the OCI seccomp-listener
 * protocol (one ContainerProcessState JSON document with the fd as
 * SCM_RIGHTS, exactly what runc does with linux.seccomp.listenerPath), then
 * calls sysinfo(2) in a tight loop and times each call on CLOCK_MONOTONIC
 * (vDSO, not trapped).
 *
 *   client --socket PATH --id ID [--cgroup DIR]... [--warmup N] [--iters N] [--period-us N]
 *          [--expect-totalram BYTES]
 *   client --socket PATH --id ID --duration-ms N (--start-at NS | --ready FILE --go FILE)
 *          [--period-us N] [--warmup N] [--expect-totalram BYTES]
 *   client --no-filter [--warmup N] [--iters N]    native sysinfo(2) cost
 *   client --probe                                 can this kernel notify?
 *
 * Prints one JSON line of per-call latency statistics on stdout.
 *
 * With --duration-ms it is notifyloop on the host, for figure 7's C floor:
 * after the handoff it waits for the common start of paced.h, makes WARMUP
 * untimed calls, then one call every PERIOD µs until DURATION has passed
 * since the start, and prints notifyloop's JSON line (calls, lateness,
 * histogram), so that many copies, each against its own csup, are pooled
 * exactly as the containers' loops are.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stddef.h>
#include <stdint.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/un.h>

#include "common.h"
#include "paced.h"

#if defined(__x86_64__)
#define NATIVE_ARCH AUDIT_ARCH_X86_64
#elif defined(__aarch64__)
#define NATIVE_ARCH AUDIT_ARCH_AARCH64
#else
#error "add this architecture's AUDIT_ARCH"
#endif

static const char *prog = "client";

static int install_filter(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, NATIVE_ARCH, 1, 0),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_sysinfo, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_USER_NOTIF),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog p = {.len = sizeof(f) / sizeof(f[0]), .filter = f};
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		die(prog, "PR_SET_NO_NEW_PRIVS");
	int fd = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_NEW_LISTENER, &p);
	if (fd < 0)
		die(prog, "seccomp(SECCOMP_FILTER_FLAG_NEW_LISTENER)");
	return fd;
}

static void join_cgroup(const char *dir)
{
	char path[4096], pid[32];
	snprintf(path, sizeof(path), "%s/cgroup.procs", dir);
	int fd = open(path, O_WRONLY | O_CLOEXEC);
	if (fd < 0)
		die(prog, "open %s", path);
	int n = snprintf(pid, sizeof(pid), "%d\n", getpid());
	if (write(fd, pid, n) != n)
		die(prog, "join %s", path);
	close(fd);
}

/* handoff sends the listener like runc's seccomp-listener code does: the
 * state document in one message with the fd attached, then EOF. */
static void handoff(const char *sock, const char *id, int listener)
{
	int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (s < 0)
		die(prog, "socket");
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if (strlen(sock) >= sizeof(a.sun_path)) {
		errno = 0;
		die(prog, "socket path too long: %s", sock);
	}
	strcpy(a.sun_path, sock);
	if (connect(s, (struct sockaddr *)&a, sizeof(a)) < 0)
		die(prog, "connect %s", sock);
	char state[2048];
	int pid = getpid();
	int n = snprintf(state, sizeof(state),
			 "{\"ociVersion\":\"1.0.2\",\"fds\":[\"seccompFd\"],\"pid\":%d,"
			 "\"metadata\":\"{\\\"id\\\":\\\"%s\\\",\\\"policy\\\":\\\"bench\\\"}\","
			 "\"state\":{\"ociVersion\":\"1.0.2\",\"id\":\"%s\",\"status\":\"creating\","
			 "\"pid\":%d,\"bundle\":\"/nonexistent\"}}",
			 pid, id, id, pid);
	char cbuf[CMSG_SPACE(sizeof(int))] = {0};
	struct iovec iov = {.iov_base = state, .iov_len = n};
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &listener, sizeof(int));
	if (sendmsg(s, &m, 0) != n)
		die(prog, "sendmsg to %s", sock);
	close(s);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static inline uint64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + ts.tv_nsec;
}

static uint64_t pct(const uint64_t *s, long n, double p)
{
	long i = (long)(p * (double)(n - 1) + 0.5);
	return s[i];
}

static void check_totalram(const struct sysinfo *si, unsigned long long expect)
{
	unsigned long long total = (unsigned long long)si->totalram * (si->mem_unit ? si->mem_unit : 1);
	if (expect && total != expect) {
		errno = 0;
		die(prog, "sysinfo totalram %llu, want %llu: the supervisor did not answer from the cgroup", total, expect);
	}
}

static uint64_t hist[PACED_NBUCKETS];

/* paced is the --duration-ms mode: notifyloop's loop, on the host. */
static int paced(const char *ready, const char *go, unsigned long long start_at, long duration_ms, long period_us,
		 long warmup, unsigned long long expect)
{
	int64_t late_ns = paced_start(ready, go, start_at);
	if (late_ns < 0)
		die(prog, "%s", ready);
	/* The wait for the go file has no bound of its own: the first alarm
	 * bounds it; this one bounds the run. */
	alarm((unsigned)(duration_ms / 1000) + 120);
	struct sysinfo si;
	memset(&si, 0, sizeof(si));
	uint64_t end = paced_now(CLOCK_MONOTONIC) + (uint64_t)duration_ms * 1000000u - (uint64_t)late_ns;
	for (long i = 0; i < warmup; i++)
		if (sysinfo(&si) != 0)
			die(prog, "sysinfo (warm-up call %ld)", i);
	uint64_t sum, max;
	int failed;
	uint64_t calls = paced_loop(&si, end, (uint64_t)period_us, hist, &sum, &max, &failed);
	if (failed)
		die(prog, "sysinfo (call %llu)", (unsigned long long)calls);
	check_totalram(&si, expect);
	paced_print(stdout, hist, calls, late_ns, (uint64_t)period_us, sum, max,
		    (unsigned long long)si.totalram * (si.mem_unit ? si.mem_unit : 1));
	return 0;
}

int main(int argc, char **argv)
{
	const char *sock = NULL, *id = NULL, *cgroups[8];
	int ncg = 0, nofilter = 0, probe = 0;
	const char *ready = NULL, *go = NULL;
	long warmup = 2000, iters = 20000, period_us = 0, duration_ms = 0;
	unsigned long long expect = 0, start_at = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--no-filter"))
			nofilter = 1;
		else if (!strcmp(a, "--probe"))
			probe = 1;
		else if (v && !strcmp(a, "--socket"))
			sock = v, i++;
		else if (v && !strcmp(a, "--id"))
			id = v, i++;
		else if (v && !strcmp(a, "--cgroup") && ncg < 8)
			cgroups[ncg++] = v, i++;
		else if (v && !strcmp(a, "--warmup"))
			warmup = atol(v), i++;
		else if (v && !strcmp(a, "--iters"))
			iters = atol(v), i++;
		else if (v && !strcmp(a, "--period-us"))
			period_us = atol(v), i++;
		else if (v && !strcmp(a, "--expect-totalram"))
			expect = strtoull(v, NULL, 10), i++;
		else if (v && !strcmp(a, "--duration-ms"))
			duration_ms = atol(v), i++;
		else if (v && !strcmp(a, "--start-at"))
			start_at = strtoull(v, NULL, 10), i++;
		else if (v && !strcmp(a, "--ready"))
			ready = v, i++;
		else if (v && !strcmp(a, "--go"))
			go = v, i++;
		else {
			fprintf(stderr, "%s: bad argument %s\n", prog, a);
			return 2;
		}
	}
	if (probe) {
		/* Never calls sysinfo, so the filter it installs is harmless. */
		int fd = install_filter();
		__u64 flags = SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP;
		if (ioctl(fd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, flags) < 0) {
			printf("notify=ok sync_wakeup=unsupported (%s)\n", strerror(errno));
			return 0;
		}
		printf("notify=ok sync_wakeup=ok\n");
		return 0;
	}
	if (iters < 1 || warmup < 0 || period_us < 0 || duration_ms < 0 || (!nofilter && (!sock || !id)) ||
	    (duration_ms && (nofilter || (!start_at && !(ready && go))))) {
		fprintf(stderr, "usage: %s --socket PATH --id ID [--cgroup DIR]... [--warmup N] [--iters N] [--period-us N] [--expect-totalram BYTES]\n"
				"       %s --socket PATH --id ID --duration-ms N (--start-at NS | --ready FILE --go FILE) [--period-us N] [--warmup N] [--expect-totalram BYTES]\n"
				"       %s --no-filter [--warmup N] [--iters N] | --probe\n", prog, prog, prog);
		return 2;
	}
	/* A supervisor that never answers must not hang the benchmark: SIGALRM
	 * interrupts the trapped call and, unhandled, kills us. With
	 * --duration-ms it also bounds the wait for the go file, which comes
	 * only once every copy is ready: hundreds of them take a while. */
	alarm(duration_ms ? 900 : 120);
	for (int i = 0; i < ncg; i++)
		join_cgroup(cgroups[i]);
	if (!nofilter) {
		int fd = install_filter();
		handoff(sock, id, fd);
		close(fd);
	}
	if (duration_ms)
		return paced(ready, go, start_at, duration_ms, period_us, warmup, expect);
	uint64_t *lat = calloc(iters, sizeof(*lat));
	if (!lat)
		die(prog, "calloc");
	struct sysinfo si;
	for (long i = 0; i < warmup; i++)
		if (sysinfo(&si) != 0)
			die(prog, "sysinfo (warm-up call %ld)", i);
	memset(&si, 0, sizeof(si));
	uint64_t start = now_ns(), next = start;
	for (long i = 0; i < iters; i++) {
		if (period_us > 0) {
			/* Paced: one call per period, as a program that polls does. */
			next += (uint64_t)period_us * 1000;
			struct timespec ts = {.tv_sec = next / 1000000000u, .tv_nsec = next % 1000000000u};
			while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL) == EINTR)
				;
		}
		uint64_t t0 = now_ns();
		int rc = sysinfo(&si);
		uint64_t t1 = now_ns();
		if (rc != 0)
			die(prog, "sysinfo (call %ld)", i);
		lat[i] = t1 - t0;
	}
	uint64_t wall = now_ns() - start;
	unsigned long long total = (unsigned long long)si.totalram * (si.mem_unit ? si.mem_unit : 1);
	check_totalram(&si, expect);
	double sum = 0;
	for (long i = 0; i < iters; i++)
		sum += (double)lat[i];
	qsort(lat, iters, sizeof(*lat), cmp_u64);
	printf("{\"iters\":%ld,\"warmup\":%ld,\"min_ns\":%llu,\"p50_ns\":%llu,\"p90_ns\":%llu,"
	       "\"p99_ns\":%llu,\"max_ns\":%llu,\"mean_ns\":%.0f,\"wall_ns\":%llu,\"totalram\":%llu}\n",
	       iters, warmup, (unsigned long long)lat[0], (unsigned long long)pct(lat, iters, 0.50),
	       (unsigned long long)pct(lat, iters, 0.90), (unsigned long long)pct(lat, iters, 0.99),
	       (unsigned long long)lat[iters - 1], sum / (double)iters, (unsigned long long)wall, total);
	return 0;
}
