/*
 * mountcall: mount(2), umount2(2) and the new mount API called directly, for
 * the e2e tests. Every call prints one result: "ok" or the errno's name.
 *
 *   mountcall mount SRC TGT FSTYPE FLAGS DATA   "-" is NULL; FLAGS are
 *                                               names joined by ',' or a number
 *   mountcall umount TGT FLAGS
 *   mountcall newapi                            fsopen fspick open_tree
 *                                               move_mount mount_setattr
 *   mountcall badptr                            bad pointers in every slot,
 *                                               one "op slot kind result" line each
 *
 *   mountcall --chroot DIR ...                  chroot(DIR) and chdir("/") first
 *
 * Exit status 0 when the (last) call succeeded, 1 otherwise.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_open_tree
#define SYS_open_tree 428
#define SYS_move_mount 429
#define SYS_fsopen 430
#define SYS_fspick 433
#endif
#ifndef SYS_mount_setattr
#define SYS_mount_setattr 442
#endif
#ifndef OPEN_TREE_CLONE
#define OPEN_TREE_CLONE 1
#endif
#ifndef MOVE_MOUNT_F_EMPTY_PATH
#define MOVE_MOUNT_F_EMPTY_PATH 0x00000004
#endif

static const char *errname(int e)
{
	switch (e) {
	case 0: return "ok";
	case EPERM: return "EPERM";
	case ENOENT: return "ENOENT";
	case ESRCH: return "ESRCH";
	case EINTR: return "EINTR";
	case EIO: return "EIO";
	case EBADF: return "EBADF";
	case EACCES: return "EACCES";
	case EFAULT: return "EFAULT";
	case ENOTBLK: return "ENOTBLK";
	case EBUSY: return "EBUSY";
	case EEXIST: return "EEXIST";
	case EXDEV: return "EXDEV";
	case ENODEV: return "ENODEV";
	case ENOTDIR: return "ENOTDIR";
	case EISDIR: return "EISDIR";
	case EINVAL: return "EINVAL";
	case ENOSPC: return "ENOSPC";
	case EROFS: return "EROFS";
	case ENAMETOOLONG: return "ENAMETOOLONG";
	case ENOSYS: return "ENOSYS";
	case ELOOP: return "ELOOP";
	case ENOMEM: return "ENOMEM";
	case EOVERFLOW: return "EOVERFLOW";
	}
	static char buf[32];
	snprintf(buf, sizeof buf, "E%d", e);
	return buf;
}

static const struct {
	const char *name;
	unsigned long flag;
} flagnames[] = {
	{"rdonly", MS_RDONLY}, {"nosuid", MS_NOSUID}, {"nodev", MS_NODEV},
	{"noexec", MS_NOEXEC}, {"remount", MS_REMOUNT}, {"bind", MS_BIND},
	{"move", MS_MOVE}, {"rec", MS_REC}, {"private", MS_PRIVATE},
	{"slave", MS_SLAVE}, {"shared", MS_SHARED}, {"detach", MNT_DETACH},
	{"force", MNT_FORCE}, {"nofollow", UMOUNT_NOFOLLOW}, {"expire", MNT_EXPIRE},
	{"silent", MS_SILENT},
};

static unsigned long parseflags(const char *s)
{
	if (strcmp(s, "0") == 0 || strcmp(s, "-") == 0)
		return 0;
	if (s[0] >= '0' && s[0] <= '9')
		return strtoul(s, NULL, 0);
	unsigned long f = 0;
	char *dup = strdup(s), *save = NULL;
	for (char *t = strtok_r(dup, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		size_t i;
		for (i = 0; i < sizeof flagnames / sizeof flagnames[0]; i++)
			if (strcmp(t, flagnames[i].name) == 0)
				break;
		if (i == sizeof flagnames / sizeof flagnames[0]) {
			fprintf(stderr, "unknown flag %s\n", t);
			exit(2);
		}
		f |= flagnames[i].flag;
	}
	free(dup);
	return f;
}

static const char *arg(const char *s) { return strcmp(s, "-") == 0 ? NULL : s; }

static int report(long rc)
{
	int e = rc < 0 ? errno : 0;
	puts(errname(e));
	return e != 0;
}

static void newapi(void)
{
	struct mount_attr_s {
		unsigned long long set, clr, prop, userns;
	} attr = {1, 0, 0, 0}; /* MOUNT_ATTR_RDONLY */
	long rc;
	rc = syscall(SYS_fsopen, "tmpfs", 0);
	printf("fsopen %s\n", errname(rc < 0 ? errno : 0));
	rc = syscall(SYS_fspick, AT_FDCWD, "/", 0);
	printf("fspick %s\n", errname(rc < 0 ? errno : 0));
	rc = syscall(SYS_open_tree, AT_FDCWD, "/tmp", OPEN_TREE_CLONE);
	printf("open_tree %s\n", errname(rc < 0 ? errno : 0));
	int fd = open("/tmp", O_PATH);
	rc = syscall(SYS_move_mount, fd, "", AT_FDCWD, "/mnt", MOVE_MOUNT_F_EMPTY_PATH);
	printf("move_mount %s\n", errname(rc < 0 ? errno : 0));
	rc = syscall(SYS_mount_setattr, AT_FDCWD, "/tmp", 0, &attr, sizeof attr);
	printf("mount_setattr %s\n", errname(rc < 0 ? errno : 0));
}

/* Bad pointers. */
static char *page_end_unterminated; /* runs into an unmapped page */
static char *unmapped, *protnone, *longstr;

static void setup_bad(void)
{
	long pg = sysconf(_SC_PAGESIZE);
	char *m = mmap(NULL, 2 * pg, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (m == MAP_FAILED)
		exit(3);
	memset(m, 'a', pg);
	munmap(m + pg, pg);
	page_end_unterminated = m + pg - 64; /* 64 'a's, then the hole */
	unmapped = mmap(NULL, pg, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	munmap(unmapped, pg);
	protnone = mmap(NULL, pg, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	longstr = malloc(5001);
	memset(longstr, 'b', 5000);
	longstr[5000] = 0;
	for (int i = 0; i < 5000; i += 100)
		longstr[i] = '/';
}

static const struct {
	const char *name;
	char **ptr;
	const char *fixed;
} kinds[] = {
	{"null", NULL, NULL},
	{"one", NULL, (const char *)1},
	{"unmapped", &unmapped, NULL},
	{"protnone", &protnone, NULL},
	{"unterminated", &page_end_unterminated, NULL},
	{"long", &longstr, NULL},
};

enum { SRC, TGT, TYPE, DATA };
static const char *slotnames[] = {"source", "target", "fstype", "data"};

struct op {
	const char *name;
	const char *a[4];
	unsigned long flags;
	/* undo after a success, and set up before each try */
	void (*undo)(void);
	void (*setup)(void);
};

static void undo_b(void) { umount2("/mnt/bp/b", MNT_DETACH); }
static void undo_remount(void) { mount(NULL, "/mnt/bp/a", NULL, MS_REMOUNT | MS_BIND, NULL); }
static void undo_move(void) { mount("/mnt/bp/b", "/mnt/bp/a", NULL, MS_MOVE, NULL); }
static void setup_c(void)
{
	struct stat a, b;
	if (stat("/mnt/bp/c", &a) == 0 && stat("/mnt/bp", &b) == 0 && a.st_dev == b.st_dev)
		mount("none", "/mnt/bp/c", "tmpfs", 0, NULL);
}

static const struct op ops[] = {
	{"tmpfs", {"none", "/mnt/bp/b", "tmpfs", "size=1m"}, 0, undo_b, NULL},
	{"proc", {"proc", "/mnt/bp/b", "proc", "hidepid=0"}, 0, undo_b, NULL},
	{"sysfs", {"sysfs", "/mnt/bp/b", "sysfs", "rw"}, 0, undo_b, NULL},
	{"bind", {"/mnt/bp/a", "/mnt/bp/b", "none", "x"}, MS_BIND, undo_b, NULL},
	{"remount-bind", {"none", "/mnt/bp/a", "none", "x"}, MS_REMOUNT | MS_BIND | MS_RDONLY, undo_remount, NULL},
	{"remount", {"none", "/mnt/bp/a", "tmpfs", "size=2m"}, MS_REMOUNT, NULL, NULL},
	{"move", {"/mnt/bp/a", "/mnt/bp/b", "none", "x"}, MS_MOVE, undo_move, NULL},
	{"propagation", {"none", "/mnt/bp/a", "none", "x"}, MS_PRIVATE, NULL, NULL},
};

static void badptr(void)
{
	setup_bad();
	mkdir("/mnt", 0755);
	mkdir("/mnt/bp", 0755);
	if (mount("none", "/mnt/bp", "tmpfs", 0, NULL) < 0) {
		printf("setup %s\n", errname(errno));
		exit(1);
	}
	mkdir("/mnt/bp/a", 0755);
	mkdir("/mnt/bp/b", 0755);
	mkdir("/mnt/bp/c", 0755);
	if (mount("none", "/mnt/bp/a", "tmpfs", 0, NULL) < 0) {
		printf("setup %s\n", errname(errno));
		exit(1);
	}
	for (size_t o = 0; o < sizeof ops / sizeof ops[0]; o++) {
		for (int s = 0; s < 4; s++) {
			for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
				const char *a[4];
				memcpy(a, ops[o].a, sizeof a);
				a[s] = kinds[k].ptr ? *kinds[k].ptr : kinds[k].fixed;
				if (ops[o].setup)
					ops[o].setup();
				long rc = mount(a[SRC], a[TGT], a[TYPE], ops[o].flags, a[DATA]);
				int e = rc < 0 ? errno : 0;
				printf("%s %s %s %s\n", ops[o].name, slotnames[s], kinds[k].name, errname(e));
				if (e == 0 && ops[o].undo)
					ops[o].undo();
			}
		}
	}
	for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
		setup_c();
		const char *t = kinds[k].ptr ? *kinds[k].ptr : kinds[k].fixed;
		long rc = umount2(t, 0);
		printf("umount target %s %s\n", kinds[k].name, errname(rc < 0 ? errno : 0));
		rc = umount2(t, MNT_DETACH);
		printf("umount-detach target %s %s\n", kinds[k].name, errname(rc < 0 ? errno : 0));
	}
	/* Served afterwards: a mount and an umount still work. */
	long rc = mount("none", "/mnt/bp/c", "tmpfs", 0, NULL);
	printf("after mount %s\n", errname(rc < 0 ? errno : 0));
	rc = mount("proc", "/mnt/bp/b", "proc", 0, NULL);
	printf("after proc %s\n", errname(rc < 0 ? errno : 0));
	rc = umount2("/mnt/bp/c", 0);
	printf("after umount %s\n", errname(rc < 0 ? errno : 0));
	umount2("/mnt/bp", MNT_DETACH);
}

int main(int argc, char **argv)
{
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 3 && strcmp(argv[1], "--chroot") == 0) {
		if (chroot(argv[2]) != 0 || chdir("/") != 0) {
			perror("mountcall: chroot");
			return 2;
		}
		argv += 2;
		argc -= 2;
	}
	if (argc >= 7 && strcmp(argv[1], "mount") == 0)
		return report(mount(arg(argv[2]), arg(argv[3]), arg(argv[4]), parseflags(argv[5]), arg(argv[6])));
	if (argc >= 4 && strcmp(argv[1], "umount") == 0)
		return report(umount2(arg(argv[2]), (int)parseflags(argv[3])));
	if (argc >= 2 && strcmp(argv[1], "newapi") == 0) {
		newapi();
		return 0;
	}
	if (argc >= 2 && strcmp(argv[1], "badptr") == 0) {
		badptr();
		return 0;
	}
	fprintf(stderr, "usage: mountcall mount SRC TGT FSTYPE FLAGS DATA | umount TGT FLAGS | newapi | badptr\n");
	return 2;
}
