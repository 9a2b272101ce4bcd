/*
 * hostile: the misbehaving workloads of tests/e2e/hostile_test.go, and the
 * well-behaved container's latency probe.
 *
 *   hostile lat SECONDS PERIOD_US [STOPFILE]
 *     sysinfo(2) every PERIOD_US for SECONDS (or until STOPFILE exists),
 *     each call timed with
 *     CLOCK_MONOTONIC. Prints "calls=N fails=F p50_us=.. p99_us=..
 *     max_us=.." (and "fail errno=E" for the first failure).
 *
 *   hostile mounts THREADS SECONDS DIR
 *     THREADS threads, started together behind a barrier, each mounting
 *     a tmpfs on DIR/<i> and unmounting it in a loop for SECONDS.
 *     Prints "threads=N calls=C maxinflight=M" and "ERRNAME=count" per
 *     outcome ("ok=" for successes).
 *
 *   hostile bomb SECONDS
 *     A fork bomb: every process forks as fast as it can and makes a
 *     sysinfo(2) call between forks, for SECONDS; then each waits for its
 *     children. Prints "forks=N eagain=E otherfail=O sysinfo_ok=S
 *     sysinfo_fail=F" (counters shared by all the processes).
 *
 *   hostile stuck THREADS SECONDS DIR
 *     THREADS threads in trapped calls for SECONDS: even ones sysinfo(2),
 *     odd ones a tmpfs mount on DIR/<i> and its umount. Prints
 *     "ready pid=P" once they run, then at the end "calls=C" and outcome
 *     counts as mounts does. Made to be stopped (SIGSTOP, ptrace) from
 *     outside while its threads wait in sysvisord.
 *
 *   hostile storm THREADS SECONDS
 *     As stuck, every thread calling sysinfo(2) only: a notification
 *     storm.
 *
 *   hostile ptrace THREADS SECONDS DIR HOLD_SECONDS detach|kill
 *     Forks "stuck THREADS SECONDS DIR", then after a second seizes every
 *     thread of it (PTRACE_SEIZE + PTRACE_INTERRUPT), holds them stopped
 *     HOLD_SECONDS, then detaches (the stuck process goes on) or kills it.
 *     Prints "stopped=N" and the child's own output.
 *
 *   hostile garbage DIR
 *     Calls every syscall the built-in policies trap through syscall(2)
 *     with a garbage value in each argument position in turn (the other
 *     arguments valid), each in a child of its own in a mount namespace
 *     of its own, under alarm(10). One line per call:
 *       "call SYSCALL POS VALUE ptr|val -> ok|ERRNAME|HANG|SIGNAL"
 *     then "calls=N".
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/ptrace.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifndef SYS_fsopen
#define SYS_fsopen 430
#define SYS_open_tree 428
#define SYS_move_mount 429
#define SYS_fspick 433
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif

static double now(void)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return t.tv_sec + t.tv_nsec / 1e9;
}

static const char *ename(int e)
{
	switch (e) {
	case 0: return "ok";
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case EINTR: return "EINTR";
	case EIO: return "EIO";
	case EBADF: return "EBADF";
	case EAGAIN: return "EAGAIN";
	case ENOMEM: return "ENOMEM";
	case EACCES: return "EACCES";
	case EFAULT: return "EFAULT";
	case EBUSY: return "EBUSY";
	case EEXIST: return "EEXIST";
	case ENODEV: return "ENODEV";
	case ENOTDIR: return "ENOTDIR";
	case EINVAL: return "EINVAL";
	case ENAMETOOLONG: return "ENAMETOOLONG";
	case ENOSYS: return "ENOSYS";
	case ELOOP: return "ELOOP";
	case E2BIG: return "E2BIG";
	case ERANGE: return "ERANGE";
	case EOPNOTSUPP: return "EOPNOTSUPP";
	case ESRCH: return "ESRCH";
	}
	static __thread char s[16];
	snprintf(s, sizeof s, "E%d", e);
	return s;
}

/* Outcome counters shared by threads (and, for the bomb, processes). */
static atomic_long *counts; /* [256] */
static atomic_long *calls;

static void count(int e)
{
	atomic_fetch_add(&counts[e > 0 && e < 255 ? e : (e == 0 ? 0 : 255)], 1);
	atomic_fetch_add(calls, 1);
}

static void print_counts(void)
{
	for (int e = 0; e < 256; e++)
		if (counts[e])
			printf("%s=%ld\n", ename(e), (long)counts[e]);
}

static void shared_counters(void)
{
	void *p = mmap(NULL, 257 * sizeof(atomic_long), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED) {
		perror("mmap");
		exit(2);
	}
	counts = p;
	calls = counts + 256;
}

static int cmpd(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int lat(double secs, long period_us, const char *stop)
{
	size_t cap = (size_t)(secs * 1e6 / (period_us > 0 ? period_us : 1)) + 16, n = 0;
	double *d = malloc(cap * sizeof *d);
	long fails = 0;
	int first = 0;
	double t0 = now(), next = t0;
	while (now() - t0 < secs && n < cap && !(stop && n % 16 == 0 && access(stop, F_OK) == 0)) {
		struct sysinfo si;
		double a = now();
		int rc = sysinfo(&si);
		double b = now();
		if (rc != 0) {
			if (!fails++)
				first = errno;
		} else if (si.totalram == 0) {
			if (!fails++)
				first = -1;
		}
		d[n++] = (b - a) * 1e6;
		next += period_us / 1e6;
		double w = next - now();
		if (w > 0) {
			struct timespec ts = {(time_t)w, (long)((w - (time_t)w) * 1e9)};
			nanosleep(&ts, NULL);
		}
	}
	qsort(d, n, sizeof *d, cmpd);
	if (n == 0) {
		printf("calls=0 fails=%ld\n", fails);
		return 1;
	}
	printf("calls=%zu fails=%ld p50_us=%.0f p99_us=%.0f max_us=%.0f\n", n, fails, d[n / 2],
	       d[(size_t)(n * 0.99) < n ? (size_t)(n * 0.99) : n - 1], d[n - 1]);
	if (fails)
		printf("fail errno=%s\n", first < 0 ? "zero-totalram" : ename(first));
	return 0;
}

/* mounts and stuck */

static const char *dir;
static double deadline;
static pthread_barrier_t barrier;
static atomic_int inflight, maxinflight;

static void mount_once(int i)
{
	char p[4200];
	snprintf(p, sizeof p, "%s/%d", dir, i);
	int n = atomic_fetch_add(&inflight, 1) + 1;
	int m = atomic_load(&maxinflight);
	while (n > m && !atomic_compare_exchange_weak(&maxinflight, &m, n))
		;
	int rc = mount("hostile", p, "tmpfs", 0, "size=64k");
	atomic_fetch_sub(&inflight, 1);
	count(rc ? errno : 0);
	if (rc == 0) {
		rc = umount2(p, 0);
		count(rc ? errno : 0);
	}
}

static void *mounter(void *arg)
{
	int i = (int)(intptr_t)arg;
	pthread_barrier_wait(&barrier);
	while (now() < deadline)
		mount_once(i);
	return NULL;
}

static void *stuckthread(void *arg)
{
	int i = (int)(intptr_t)arg;
	pthread_barrier_wait(&barrier);
	while (now() < deadline) {
		if (dir && i % 2) {
			mount_once(i);
		} else {
			struct sysinfo si;
			int rc = sysinfo(&si);
			count(rc ? errno : (si.totalram ? 0 : 255));
		}
	}
	return NULL;
}

/* cleanup unmounts whatever is left on DIR/<i> (a mount made twice when a
 * stop restarted the call after sysvisord had acted) and removes them. */
static int cleanup(int threads)
{
	int left = 0;
	char p[4200];
	if (!dir)
		return 0;
	for (int i = 0; i < threads; i++) {
		snprintf(p, sizeof p, "%s/%d", dir, i);
		while (umount2(p, MNT_DETACH) == 0)
			left++;
		rmdir(p);
	}
	return left;
}

static int run_threads(int threads, double secs, void *(*fn)(void *), int ready)
{
	char p[4200];
	if (dir)
		mkdir(dir, 0755);
	for (int i = 0; dir && i < threads; i++) {
		snprintf(p, sizeof p, "%s/%d", dir, i);
		mkdir(p, 0755);
	}
	shared_counters();
	pthread_attr_t attr;
	pthread_attr_init(&attr);
	pthread_attr_setstacksize(&attr, 64 * 1024);
	pthread_barrier_init(&barrier, NULL, threads + 1);
	pthread_t *th = calloc(threads, sizeof *th);
	int started = 0;
	deadline = now() + secs + 3600; /* set for real at the barrier */
	for (int i = 0; i < threads; i++) {
		if (pthread_create(&th[i], &attr, fn, (void *)(intptr_t)i) != 0) {
			fprintf(stderr, "pthread_create %d: %s\n", i, strerror(errno));
			exit(2);
		}
		started++;
	}
	deadline = now() + secs;
	pthread_barrier_wait(&barrier);
	if (ready)
		printf("ready pid=%d\n", getpid());
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	printf("threads=%d calls=%ld maxinflight=%d leftover=%d\n", started, (long)*calls, (int)maxinflight,
	       cleanup(threads));
	print_counts();
	return 0;
}

/* bomb */

static int bomb(double secs)
{
	shared_counters();
	atomic_long *forks = calls; /* calls counts forks here */
	double end = now() + secs;
	while (now() < end) {
		pid_t p = fork();
		if (p == 0)
			continue; /* the child bombs on */
		if (p > 0)
			atomic_fetch_add(forks, 1);
		else
			atomic_fetch_add(&counts[errno == EAGAIN ? EAGAIN : 255], 1);
		struct sysinfo si;
		atomic_fetch_add(&counts[sysinfo(&si) == 0 ? 1 : 2], 1);
	}
	while (wait(NULL) > 0 || errno == EINTR)
		;
	/* Only the first process reports: the others exit quietly. */
	return 0;
}

/* ptrace */

static int ptrace_run(int argc, char **argv)
{
	int threads = atoi(argv[2]);
	double hold = atof(argv[5]);
	int kill_it = strcmp(argv[6], "kill") == 0;
	fflush(stdout);
	pid_t child = fork();
	if (child == 0) {
		char *args[] = {argv[0], "stuck", argv[2], argv[3], argv[4], NULL};
		execv("/proc/self/exe", args);
		_exit(127);
	}
	(void)argc;
	(void)threads;
	usleep(1500 * 1000);
	char p[64];
	snprintf(p, sizeof p, "/proc/%d/task", child);
	DIR *d = opendir(p);
	if (!d) {
		perror(p);
		return 2;
	}
	pid_t tids[8192];
	int n = 0;
	struct dirent *e;
	while ((e = readdir(d)) && n < 8192) {
		pid_t t = atoi(e->d_name);
		if (t <= 0)
			continue;
		if (ptrace(PTRACE_SEIZE, t, 0, 0) != 0) {
			fprintf(stderr, "PTRACE_SEIZE %d: %s\n", t, strerror(errno));
			continue;
		}
		tids[n++] = t;
	}
	closedir(d);
	int stopped = 0;
	for (int i = 0; i < n; i++)
		if (ptrace(PTRACE_INTERRUPT, tids[i], 0, 0) != 0)
			fprintf(stderr, "PTRACE_INTERRUPT %d: %s\n", tids[i], strerror(errno));
	for (int i = 0; i < n; i++) {
		int st;
		if (waitpid(tids[i], &st, __WALL) == tids[i] && WIFSTOPPED(st))
			stopped++;
	}
	printf("stopped=%d of %d\n", stopped, n);
	fflush(stdout);
	usleep((useconds_t)(hold * 1e6));
	if (kill_it) {
		kill(child, SIGKILL);
	} else {
		for (int i = 0; i < n; i++)
			if (ptrace(PTRACE_DETACH, tids[i], 0, 0) != 0)
				fprintf(stderr, "PTRACE_DETACH %d: %s\n", tids[i], strerror(errno));
	}
	/* Reap the child and, traced by us, its killed threads. */
	int st = 0, cst = -1;
	for (;;) {
		pid_t w = waitpid(-1, &st, __WALL);
		if (w == child)
			cst = st;
		if (w < 0 && errno != EINTR)
			break;
	}
	if (cst < 0)
		return 2;
	st = cst;
	if (kill_it) {
		printf("killed=%d\n", WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
		/* A killed stuck leaves its tmpfs mounts and dirs behind. */
		dir = argv[4];
		printf("leftover=%d\n", cleanup(atoi(argv[2])));
		return 0;
	}
	return WIFEXITED(st) ? WEXITSTATUS(st) : 3;
}

/* garbage */

struct sc {
	const char *name;
	long nr;
	int nargs;
	unsigned ptrs; /* bit i: argument i is a pointer */
};

static long base_args(const struct sc *s, long *a, const char *target, const char *node, void *prog)
{
	memset(a, 0, 6 * sizeof *a);
	switch (s->nr) {
	case SYS_sysinfo: {
		static struct sysinfo si;
		a[0] = (long)&si;
		break;
	}
	case SYS_mount:
		a[0] = (long)"hostile", a[1] = (long)target, a[2] = (long)"tmpfs", a[3] = 0, a[4] = (long)"size=64k";
		break;
	case SYS_umount2:
		a[0] = (long)target, a[1] = 0;
		break;
	case SYS_fsopen:
		a[0] = (long)"tmpfs", a[1] = 0;
		break;
	case SYS_fspick:
	case SYS_open_tree:
		a[0] = AT_FDCWD, a[1] = (long)target, a[2] = 0;
		break;
	case SYS_move_mount:
		a[0] = AT_FDCWD, a[1] = (long)target, a[2] = AT_FDCWD, a[3] = (long)target, a[4] = 0;
		break;
	case SYS_mount_setattr: {
		static uint64_t attr[4]; /* struct mount_attr, all zero: no change */
		a[0] = AT_FDCWD, a[1] = (long)target, a[2] = 0, a[3] = (long)attr, a[4] = sizeof attr;
		break;
	}
	case SYS_mknod:
		a[0] = (long)node, a[1] = S_IFCHR | 0600, a[2] = makedev(1, 3);
		break;
	case SYS_mknodat:
		a[0] = AT_FDCWD, a[1] = (long)node, a[2] = S_IFCHR | 0600, a[3] = makedev(1, 3);
		break;
	case SYS_seccomp:
		a[0] = SECCOMP_SET_MODE_FILTER, a[1] = SECCOMP_FILTER_FLAG_NEW_LISTENER, a[2] = (long)prog;
		break;
	}
	return 0;
}

static int garbage(const char *d)
{
	static const struct sc scs[] = {
		{"sysinfo", SYS_sysinfo, 1, 1},
		{"mount", SYS_mount, 5, 1 | 2 | 4 | 16},
		{"umount2", SYS_umount2, 2, 1},
		{"fsopen", SYS_fsopen, 2, 1},
		{"fspick", SYS_fspick, 3, 2},
		{"open_tree", SYS_open_tree, 3, 2},
		{"move_mount", SYS_move_mount, 5, 2 | 8},
		{"mount_setattr", SYS_mount_setattr, 5, 2 | 8},
		{"mknod", SYS_mknod, 3, 1},
		{"mknodat", SYS_mknodat, 4, 2},
		{"seccomp", SYS_seccomp, 3, 4},
	};
	long pg = sysconf(_SC_PAGESIZE);
	/* unmapped: a page mapped and given back. */
	char *unmapped = mmap(NULL, pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	munmap(unmapped, pg);
	/* unterminated: a page of 'A' with no NUL, then a page that faults. */
	char *two = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	memset(two, 'A', pg);
	mprotect(two + pg, pg, PROT_NONE);
	/* readonly: a page of zeros that may not be written. */
	char *ro = mmap(NULL, pg, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	struct {
		const char *name;
		long v;
	} vals[] = {
		{"zero", 0},
		{"minus1", -1},
		{"unmapped", (long)unmapped},
		{"kernel", (long)0xffff888000000000UL},
		{"huge", 1L << 40},
		{"unterminated", (long)two},
		{"readonly", (long)ro},
	};
	static struct sock_filter allow[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
	static struct sock_fprog prog = {1, allow};
	char target[4200], node[4200];
	snprintf(target, sizeof target, "%s/g", d);
	snprintf(node, sizeof node, "%s/node", d);
	mkdir(d, 0755);
	mkdir(target, 0755);
	int total = 0;
	for (size_t s = 0; s < sizeof scs / sizeof *scs; s++) {
		for (int pos = 0; pos < 6; pos++) {
			for (size_t v = 0; v < sizeof vals / sizeof *vals; v++) {
				long a[6];
				base_args(&scs[s], a, target, node, &prog);
				a[pos] = vals[v].v;
				fflush(stdout);
				pid_t c = fork();
				if (c == 0) {
					alarm(10);
					/* Everything the call could change stays in
					 * this child's own mount namespace. */
					if (unshare(CLONE_NEWNS) != 0 ||
					    mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0) {
						printf("setup %s\n", ename(errno));
						_exit(1);
					}
					/* umount2 and friends need something on the target. */
					if (mount("hostile", target, "tmpfs", 0, NULL) != 0) {
						printf("setup mount %s\n", ename(errno));
						_exit(1);
					}
					unlink(node);
					long rc = syscall(scs[s].nr, a[0], a[1], a[2], a[3], a[4], a[5]);
					int e = rc < 0 ? errno : 0;
					printf("call %s %d %s %s -> %s\n", scs[s].name, pos, vals[v].name,
					       (scs[s].ptrs >> pos) & 1 ? "ptr" : (pos < scs[s].nargs ? "val" : "unused"),
					       ename(e));
					_exit(0);
				}
				int st;
				waitpid(c, &st, 0);
				total++;
				if (WIFSIGNALED(st))
					printf("call %s %d %s %s -> %s\n", scs[s].name, pos, vals[v].name,
					       (scs[s].ptrs >> pos) & 1 ? "ptr" : (pos < scs[s].nargs ? "val" : "unused"),
					       WTERMSIG(st) == SIGALRM ? "HANG" : "SIGNAL");
				/* A node made in the shared directory. */
				umount2(node, MNT_DETACH);
				unlink(node);
			}
		}
	}
	printf("calls=%d\n", total);
	return 0;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 4 && strcmp(argv[1], "lat") == 0)
		return lat(atof(argv[2]), atol(argv[3]), argc > 4 ? argv[4] : NULL);
	if (argc >= 5 && strcmp(argv[1], "mounts") == 0) {
		dir = argv[4];
		return run_threads(atoi(argv[2]), atof(argv[3]), mounter, 0);
	}
	if (argc >= 5 && strcmp(argv[1], "stuck") == 0) {
		dir = argv[4];
		return run_threads(atoi(argv[2]), atof(argv[3]), stuckthread, 1);
	}
	if (argc >= 4 && strcmp(argv[1], "storm") == 0)
		return run_threads(atoi(argv[2]), atof(argv[3]), stuckthread, 1);
	if (argc >= 3 && strcmp(argv[1], "bomb") == 0) {
		pid_t top = getpid();
		int rc = bomb(atof(argv[2]));
		if (getpid() == top)
			printf("forks=%ld eagain=%ld otherfail=%ld sysinfo_ok=%ld sysinfo_fail=%ld\n", (long)*calls,
			       (long)counts[EAGAIN], (long)counts[255], (long)counts[1], (long)counts[2]);
		return rc;
	}
	if (argc >= 7 && strcmp(argv[1], "ptrace") == 0)
		return ptrace_run(argc, argv);
	if (argc >= 3 && strcmp(argv[1], "garbage") == 0) {
		return garbage(argv[2]);
	}
	fprintf(stderr, "usage: see hostile.c\n");
	return 2;
}
