/*
 * mountrace: a thread calls mount(2)/umount2(2) in a loop while another
 * rewrites what the call names, for the e2e tests of sysvisord's mount
 * emulation (which copies and resolves the arguments once).
 *
 *   mountrace MODE OK PROTECTED SECONDS
 *     A buffer flips between the paths OK (a mount the test made) and
 *     PROTECTED while thread A calls, on the buffer:
 *       remount-bind   mount(NULL, buf, NULL, MS_REMOUNT|MS_BIND, NULL)
 *       remount        mount(NULL, buf, NULL, MS_REMOUNT, NULL)
 *       umount         umount2(buf, 0), then mounts a tmpfs on OK again
 *       umount-detach  umount2(buf, MNT_DETACH), the same
 *
 *   mountrace symlink-umount LINK OKDIR PROTDIR NAME SECONDS
 *     LINK is swapped between symlinks to OKDIR and PROTDIR while thread A
 *     calls umount2("LINK/NAME", 0) and mounts a tmpfs on OKDIR/NAME again
 *     after each success. (symlink-umount-detach: with MNT_DETACH.)
 *
 * Runs SECONDS and at least MINCALLS calls (up to 10 x SECONDS).
 * Prints "calls=N" and one "ERRNAME=count" line per outcome ("ok=" for
 * successes).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <time.h>
#include <unistd.h>

#define MINCALLS 200

static char buf[4096];
static const char *okpath, *protpath, *link_, *okdir, *protdir;
static atomic_int stop;

static void *flipper(void *unused)
{
	(void)unused;
	size_t lo = strlen(okpath), lp = strlen(protpath);
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		memcpy(buf, okpath, lo + 1);
		for (volatile int i = 0; i < 200; i++)
			;
		memcpy(buf, protpath, lp + 1);
		for (volatile int i = 0; i < 200; i++)
			;
	}
	return NULL;
}

static void *swapper(void *unused)
{
	(void)unused;
	char tmp[4200];
	snprintf(tmp, sizeof tmp, "%s.tmp", link_);
	while (!atomic_load_explicit(&stop, memory_order_relaxed)) {
		unlink(tmp);
		if (symlink(okdir, tmp) == 0)
			rename(tmp, link_);
		unlink(tmp);
		if (symlink(protdir, tmp) == 0)
			rename(tmp, link_);
	}
	return NULL;
}

static long counts[256];

static void count(long rc)
{
	int e = rc < 0 ? errno : 0;
	counts[e < 256 ? e : 255]++;
}

static const char *name(int e)
{
	switch (e) {
	case 0: return "ok";
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case EINVAL: return "EINVAL";
	case EBUSY: return "EBUSY";
	case ENOTDIR: return "ENOTDIR";
	case EACCES: return "EACCES";
	case EFAULT: return "EFAULT";
	case EINTR: return "EINTR";
	case ENOSYS: return "ENOSYS";
	}
	static char s[16];
	snprintf(s, sizeof s, "E%d", e);
	return s;
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc < 5) {
		fprintf(stderr, "usage: see mountrace.c\n");
		return 2;
	}
	const char *mode = argv[1];
	int symlinks = strncmp(mode, "symlink-", 8) == 0;
	double secs;
	char target[8192];
	pthread_t th;
	if (symlinks) {
		if (argc < 7)
			return 2;
		link_ = argv[2], okdir = argv[3], protdir = argv[4];
		snprintf(target, sizeof target, "%s/%s", link_, argv[5]);
		snprintf(buf, sizeof buf, "%s/%s", okdir, argv[5]); /* to remount */
		secs = atof(argv[6]);
		pthread_create(&th, NULL, swapper, NULL);
	} else {
		okpath = argv[2], protpath = argv[3];
		secs = atof(argv[4]);
		strcpy(buf, okpath);
		pthread_create(&th, NULL, flipper, NULL);
	}
	struct timespec t0, t;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	long calls = 0;
	for (;;) {
		clock_gettime(CLOCK_MONOTONIC, &t);
		double el = (t.tv_sec - t0.tv_sec) + (t.tv_nsec - t0.tv_nsec) / 1e9;
		/* On a loaded machine a few calls can take the whole time, and
		 * two calls prove nothing about a race: go on to MINCALLS,
		 * within ten times the time asked. */
		if (el > secs && (calls >= MINCALLS || el > 10 * secs))
			break;
		long rc;
		calls++;
		if (strcmp(mode, "remount-bind") == 0) {
			rc = mount(NULL, buf, NULL, MS_REMOUNT | MS_BIND, NULL);
			count(rc);
		} else if (strcmp(mode, "remount") == 0) {
			rc = mount(NULL, buf, NULL, MS_REMOUNT, NULL);
			count(rc);
		} else if (strcmp(mode, "umount") == 0 || strcmp(mode, "umount-detach") == 0) {
			rc = umount2(buf, strcmp(mode, "umount") == 0 ? 0 : MNT_DETACH);
			count(rc);
			if (rc == 0)
				mount("none", okpath, "tmpfs", 0, NULL);
		} else if (strcmp(mode, "symlink-umount") == 0 || strcmp(mode, "symlink-umount-detach") == 0) {
			rc = umount2(target, strcmp(mode, "symlink-umount") == 0 ? 0 : MNT_DETACH);
			count(rc);
			if (rc == 0)
				mount("none", buf, "tmpfs", 0, NULL);
		} else {
			fprintf(stderr, "unknown mode %s\n", mode);
			return 2;
		}
	}
	atomic_store(&stop, 1);
	pthread_join(th, NULL);
	printf("calls=%ld\n", calls);
	for (int e = 0; e < 256; e++)
		if (counts[e])
			printf("%s=%ld\n", name(e), counts[e]);
	return 0;
}
