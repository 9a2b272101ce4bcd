/*
 * csup: a minimal seccomp user-notification supervisor in C, the floor that
 * sysvisord's notify path is measured against.
 *
 * It accepts one listener over the OCI seccomp-listener protocol on a unix
 * socket (as sysvisord's seccomp socket does), then answers sysinfo(2).
 *
 * --work full (the default) does the work of sysvisord's Go handler
 * (handlers/sysinfo.go) with the same design and the same system calls, in
 * the same order:
 *   sysinfo(2) of the host; clock_gettime(CLOCK_BOOTTIME) as a system call
 *   (golang.org/x/sys/unix does not use the vDSO); the memory cgroup files
 *   (linux/cgroup ReadMemoryFrom, v1 or v2, same files, same logic, one
 *   key of memory.stat) and the pids cgroup's pids.current, each through an
 *   fd opened at first use and kept for the container's life, re-read with
 *   pread from offset 0 to EOF (linux/cgroup/files.go: one pread for
 *   the data, one that returns 0); the container view computed as
 *   ContainerSysinfo does; then Request.WriteMem and Request.Close: open
 *   /proc/<pid>/maps and /proc/<pid>/mem (once per call, as Go opens them once
 *   per request), SECCOMP_IOCTL_NOTIF_ID_VALID, the writability check
 *   (PROCMAP_QUERY, or the maps text before Linux 6.11), pwrite the struct,
 *   close both; SECCOMP_IOCTL_NOTIF_SEND returning 0.
 * --work reopen is the same but opens, reads (one read) and closes every
 *   cgroup file on every call, and uses the vDSO clock: the design sysvisord
 *   had before linux/cgroup/files.go. Context only.
 * --work min skips everything before WriteMem (the bare mechanism: receive,
 *   checked and validated memory write, send).
 *
 * Unlike sysvisord it blocks in SECCOMP_IOCTL_NOTIF_RECV on one thread: no
 * poll, no event loop, which is the cheapest way to serve one listener.
 *
 *   csup --socket PATH [--memcg DIR --cgroup-version 1|2] [--pidscg DIR]
 *        [--sync-wakeup] [--work full|reopen|min] [--linger]
 *
 * Cgroup directories are passed in, where sysvisord resolves them from
 * /proc/<pid>/cgroup once per container at handoff: that is not per-call
 * work. Prints "notifications=N" on stderr when the listener hangs up, and
 * exits, unless --linger: then it stays until killed, so that whoever
 * started it can still read its CPU time in /proc/<pid>/stat once its client
 * is done (figure 7 adds up that of hundreds of them).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <poll.h>
#include <stdint.h>
#include <time.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/sysinfo.h>
#include <sys/un.h>

#include "common.h"

static const char *prog = "csup";

static const char *memcg, *pidscg;
static int cgv = 2;
static int64_t init_start_ns;

enum work { WORK_MIN, WORK_FULL, WORK_REOPEN };
static enum work work = WORK_FULL;

/* read_file reads a small kernel file in one read; -1 on error. */
static ssize_t read_file(const char *dir, const char *name, char *buf, size_t size)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, size - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = 0;
	return n;
}

/* A cgroup file kept open for the container's life, as
 * linux/cgroup.Files keeps them: opened at first use, forgotten when a
 * read fails. */
struct cgfile {
	char path[4096];
	int fd;
};
static struct cgfile cgfiles[16];
static int ncgfiles;

/* read_kept reads dir/name through its kept fd with pread from offset 0 to
 * EOF, as Files.ReadFile does; -1 on error. */
static ssize_t read_kept(const char *dir, const char *name, char *buf, size_t size)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	struct cgfile *f = NULL;
	for (int i = 0; i < ncgfiles; i++)
		if (!strcmp(cgfiles[i].path, path)) {
			f = &cgfiles[i];
			break;
		}
	if (!f || f->fd < 0) {
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		if (fd < 0)
			return -1;
		if (!f) {
			if (ncgfiles == (int)(sizeof(cgfiles) / sizeof(cgfiles[0]))) {
				errno = 0;
				die(prog, "too many cgroup files");
			}
			f = &cgfiles[ncgfiles++];
			strcpy(f->path, path);
		}
		f->fd = fd;
	}
	size_t len = 0;
	for (;;) {
		ssize_t n = pread(f->fd, buf + len, size - 1 - len, (off_t)len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			close(f->fd);
			f->fd = -1;
			return -1;
		}
		if (n == 0 || len + n == size - 1) {
			len += n;
			break;
		}
		len += n;
	}
	buf[len] = 0;
	return (ssize_t)len;
}

/* read_cg reads a cgroup file the way the selected work mode does. */
static ssize_t read_cg(const char *dir, const char *name, char *buf, size_t size)
{
	if (work == WORK_FULL)
		return read_kept(dir, name, buf, size);
	return read_file(dir, name, buf, size);
}

static int read_u64(const char *dir, const char *name, uint64_t *v)
{
	char buf[64], *end;
	if (read_cg(dir, name, buf, sizeof(buf)) < 0)
		return -1;
	errno = 0;
	*v = strtoull(buf, &end, 10);
	if (errno || end == buf)
		return -1;
	return 0;
}

/* read_max reads a v2 "max"-or-number file; max is 0 (unlimited). */
static int read_max(const char *dir, const char *name, uint64_t *v)
{
	char buf[64];
	if (read_cg(dir, name, buf, sizeof(buf)) < 0)
		return -1;
	if (!strncmp(buf, "max", 3)) {
		*v = 0;
		return 0;
	}
	char *end;
	errno = 0;
	*v = strtoull(buf, &end, 10);
	return errno || end == buf ? -1 : 0;
}

/* stat_key finds "key value" in a memory.stat file, scanning line by line
 * for that one key as linux/cgroup's readStatKey does; 0 when absent. */
static uint64_t stat_key(const char *buf, const char *key)
{
	size_t kl = strlen(key);
	for (const char *p = buf; p && *p; p = strchr(p, '\n'), p = p ? p + 1 : p)
		if (!strncmp(p, key, kl) && p[kl] == ' ')
			return strtoull(p + kl + 1, NULL, 10);
	return 0;
}

struct memory {
	uint64_t limit, usage, inactive_file, swap_limit, swap_usage;
};

#define V1_UNLIMITED (1ULL << 62)

static int read_memory(struct memory *m)
{
	static char stat[16384];
	memset(m, 0, sizeof(*m));
	if (!memcg)
		return -1;
	if (cgv == 1) {
		uint64_t lim, ms, mu;
		if (read_u64(memcg, "memory.limit_in_bytes", &lim) < 0)
			return -1;
		if (lim < V1_UNLIMITED)
			m->limit = lim;
		if (read_u64(memcg, "memory.usage_in_bytes", &m->usage) < 0)
			return -1;
		if (read_cg(memcg, "memory.stat", stat, sizeof(stat)) >= 0)
			m->inactive_file = stat_key(stat, "total_inactive_file");
		if (m->limit && read_u64(memcg, "memory.memsw.limit_in_bytes", &ms) == 0 && ms < V1_UNLIMITED && ms > m->limit) {
			m->swap_limit = ms - m->limit;
			if (read_u64(memcg, "memory.memsw.usage_in_bytes", &mu) == 0 && mu > m->usage)
				m->swap_usage = mu - m->usage;
		}
		return 0;
	}
	if (read_max(memcg, "memory.max", &m->limit) < 0)
		return -1;
	if (read_u64(memcg, "memory.current", &m->usage) < 0)
		return -1;
	if (read_cg(memcg, "memory.stat", stat, sizeof(stat)) >= 0)
		m->inactive_file = stat_key(stat, "inactive_file");
	if (m->limit && read_max(memcg, "memory.swap.max", &m->swap_limit) == 0)
		read_u64(memcg, "memory.swap.current", &m->swap_usage);
	return 0;
}

/* container_sysinfo is handlers.ContainerSysinfo. */
static void container_sysinfo(struct sysinfo *si, const struct sysinfo *host, int64_t uptime_ns,
			      const struct memory *mem, uint64_t procs)
{
	*si = *host;
	uint64_t unit = host->mem_unit ? host->mem_unit : 1;
	si->mem_unit = 1;
	si->uptime = uptime_ns / 1000000000;
	uint64_t total = host->totalram * unit;
	if (mem->limit && mem->limit < total)
		total = mem->limit;
	uint64_t used = mem->usage;
	if (mem->inactive_file < used)
		used -= mem->inactive_file;
	if (used > total)
		used = total;
	si->totalram = total;
	si->freeram = total - used;
	si->sharedram = si->bufferram = 0;
	si->totalhigh = si->freehigh = 0;
	si->totalswap = si->freeswap = 0;
	if (mem->swap_limit) {
		uint64_t swap = mem->swap_limit, host_swap = host->totalswap * unit;
		if (host_swap < swap)
			swap = host_swap;
		si->totalswap = swap;
		if (mem->swap_usage < swap)
			si->freeswap = swap - mem->swap_usage;
	}
	if (procs > 0xffff)
		procs = 0xffff;
	if (procs)
		si->procs = procs;
}

/* procmap_query mirrors struct procmap_query of linux/fs.h (6.11+). */
struct procmap_query {
	uint64_t size, query_flags, query_addr;
	uint64_t vma_start, vma_end, vma_flags, vma_page_size;
	uint64_t vma_offset, inode;
	uint32_t dev_major, dev_minor;
	uint32_t vma_name_size, build_id_size;
	uint64_t vma_name_addr, build_id_addr;
};
#define PROCMAP_QUERY_IOCTL 0xc0686611UL /* _IOWR('f', 17, struct procmap_query) */
#define PROCMAP_QUERY_VMA_WRITABLE 0x2

/* writable_maps_text is the fallback for kernels without PROCMAP_QUERY:
 * [addr, end) covered, without gaps, by writable lines of /proc/<pid>/maps. */
static int writable_maps_text(int maps, uint64_t addr, uint64_t end)
{
	static char buf[1 << 20];
	ssize_t n, len = 0;
	while ((n = pread(maps, buf + len, sizeof(buf) - 1 - len, len)) > 0)
		len += n;
	if (n < 0)
		return 0;
	buf[len] = 0;
	for (char *l = buf; addr < end && l && *l; l = strchr(l, '\n'), l = l ? l + 1 : l) {
		char *p;
		uint64_t lo = strtoull(l, &p, 16), hi = strtoull(p + 1, &p, 16);
		if (hi <= addr)
			continue;
		if (lo > addr || p[0] != ' ' || p[2] != 'w') /* " rwxp" */
			return 0;
		addr = hi;
	}
	return addr >= end;
}

/* writable is handlers.accessible(maps, addr, n, writeAccess). */
static int writable(int maps, uint64_t addr, uint64_t n)
{
	uint64_t end = addr + n;
	if (end < addr)
		return 0;
#ifdef CSUP_MAPS_TEXT /* test build: the pre-6.11 path */
	return writable_maps_text(maps, addr, end);
#endif
	while (addr < end) {
		struct procmap_query q = {.size = sizeof(q), .query_addr = addr};
		if (ioctl(maps, PROCMAP_QUERY_IOCTL, &q) < 0) {
			if (errno == ENOENT)
				return 0;
			return writable_maps_text(maps, addr, end);
		}
		if (!(q.vma_flags & PROCMAP_QUERY_VMA_WRITABLE) || q.vma_end <= addr)
			return 0;
		addr = q.vma_end;
	}
	return 1;
}

/* write_mem is handlers.Request.WriteMem plus Request.Close: maps opened
 * first, then mem, then the notification re-validated (a recycled pid is
 * another process), the range checked writable, the data written. */
static int write_mem(int listener, const struct seccomp_notif *req, const void *b, size_t n)
{
	char path[64];
	int maps, mem, e = 0;
	snprintf(path, sizeof(path), "/proc/%u/maps", req->pid);
	if ((maps = open(path, O_RDONLY | O_CLOEXEC)) < 0)
		return -EFAULT;
	snprintf(path, sizeof(path), "/proc/%u/mem", req->pid);
	if ((mem = open(path, O_WRONLY | O_CLOEXEC)) < 0) {
		close(maps);
		return -EFAULT;
	}
	if (ioctl(listener, SECCOMP_IOCTL_NOTIF_ID_VALID, &req->id) < 0)
		e = -EINTR;
	else if (!writable(maps, req->data.args[0], n))
		e = -EFAULT;
	else if (pwrite(mem, b, n, (off_t)req->data.args[0]) != (ssize_t)n)
		e = -EFAULT;
	close(mem);
	close(maps);
	return e;
}

/* boottime is CLOCK_BOOTTIME: a system call in full mode, as
 * unix.ClockGettime is; the vDSO otherwise. */
static int boottime(struct timespec *ts)
{
	if (work == WORK_FULL)
		return syscall(SYS_clock_gettime, CLOCK_BOOTTIME, ts);
	return clock_gettime(CLOCK_BOOTTIME, ts);
}

static void handle_sysinfo(int listener, const struct seccomp_notif *req, struct seccomp_notif_resp *resp)
{
	struct sysinfo si;
	if (work != WORK_MIN) {
		struct sysinfo host;
		struct timespec ts;
		struct memory mem;
		uint64_t procs = 0;
		if (sysinfo(&host) < 0 || boottime(&ts) < 0) {
			resp->error = -EIO;
			return;
		}
		int64_t uptime = (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec - init_start_ns;
		if (uptime < 0)
			uptime = 0;
		if (read_memory(&mem) < 0) {
			memset(&mem, 0, sizeof(mem));
			mem.usage = (host.totalram - host.freeram) * (uint64_t)host.mem_unit;
		}
		if (pidscg)
			read_u64(pidscg, "pids.current", &procs);
		container_sysinfo(&si, &host, uptime, &mem, procs);
	} else {
		memset(&si, 0, sizeof(si));
		si.mem_unit = 1;
	}
	int e = write_mem(listener, req, &si, sizeof(si));
	if (e)
		resp->error = e;
}

/* receive_listener accepts one connection on the seccomp socket and returns
 * the listener fd it carried; *pid is the state document's pid. */
static int receive_listener(int ls, int *pid)
{
	int c = accept4(ls, NULL, NULL, SOCK_CLOEXEC);
	if (c < 0)
		die(prog, "accept");
	static char data[1 << 16];
	size_t len = 0;
	int fd = -1;
	for (;;) {
		char cbuf[CMSG_SPACE(16 * sizeof(int))];
		struct iovec iov = {.iov_base = data + len, .iov_len = sizeof(data) - 1 - len};
		struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof(cbuf)};
		ssize_t n = recvmsg(c, &m, MSG_CMSG_CLOEXEC);
		if (n < 0)
			die(prog, "recvmsg");
		for (struct cmsghdr *h = CMSG_FIRSTHDR(&m); h; h = CMSG_NXTHDR(&m, h))
			if (h->cmsg_level == SOL_SOCKET && h->cmsg_type == SCM_RIGHTS && fd < 0)
				memcpy(&fd, CMSG_DATA(h), sizeof(int));
		if (n == 0 || len + n >= sizeof(data) - 1)
			break;
		len += n;
	}
	close(c);
	data[len] = 0;
	/* ContainerProcessState: {"ociVersion":..,"fds":[..],"pid":N,...} */
	const char *p = strstr(data, "\"pid\":");
	if (fd < 0 || !p) {
		errno = 0;
		die(prog, "handoff without a listener fd or pid: %s", data);
	}
	*pid = atoi(p + 6);
	return fd;
}

/* proc_start is init's start time on CLOCK_BOOTTIME, /proc/<pid>/stat field 22. */
static int64_t proc_start(int pid)
{
	char path[64], buf[4096];
	snprintf(path, sizeof(path), "/proc/%d", pid);
	if (read_file(path, "stat", buf, sizeof(buf)) < 0)
		die(prog, "read %s/stat", path);
	char *p = strrchr(buf, ')');
	if (!p) {
		errno = 0;
		die(prog, "malformed %s/stat", path);
	}
	/* p+2 is field 3; starttime is field 22, 19 fields on. */
	p += 2;
	for (int i = 0; i < 19 && p; i++)
		p = strchr(p, ' '), p = p ? p + 1 : p;
	if (!p) {
		errno = 0;
		die(prog, "malformed %s/stat", path);
	}
	return (int64_t)strtoull(p, NULL, 10) * (1000000000 / 100);
}

int main(int argc, char **argv)
{
	const char *sock = NULL;
	int sync = 0, linger = 0;
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
		if (!strcmp(a, "--sync-wakeup"))
			sync = 1;
		else if (!strcmp(a, "--linger"))
			linger = 1;
		else if (v && !strcmp(a, "--socket"))
			sock = v, i++;
		else if (v && !strcmp(a, "--memcg"))
			memcg = v, i++;
		else if (v && !strcmp(a, "--pidscg"))
			pidscg = v, i++;
		else if (v && !strcmp(a, "--cgroup-version"))
			cgv = atoi(v), i++;
		else if (v && !strcmp(a, "--work") && !strcmp(v, "full"))
			work = WORK_FULL, i++;
		else if (v && !strcmp(a, "--work") && !strcmp(v, "reopen"))
			work = WORK_REOPEN, i++;
		else if (v && !strcmp(a, "--work") && !strcmp(v, "min"))
			work = WORK_MIN, i++;
		else {
			fprintf(stderr, "%s: bad argument %s\n", prog, a);
			return 2;
		}
	}
	if (!sock || (cgv != 1 && cgv != 2)) {
		fprintf(stderr, "usage: %s --socket PATH [--memcg DIR --cgroup-version 1|2] [--pidscg DIR] [--sync-wakeup] [--work full|reopen|min] [--linger]\n", prog);
		return 2;
	}
	int ls = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (ls < 0)
		die(prog, "socket");
	struct sockaddr_un a = {.sun_family = AF_UNIX};
	if (strlen(sock) >= sizeof(a.sun_path)) {
		errno = 0;
		die(prog, "socket path too long");
	}
	strcpy(a.sun_path, sock);
	unlink(sock);
	if (bind(ls, (struct sockaddr *)&a, sizeof(a)) < 0 || listen(ls, 1) < 0)
		die(prog, "listen on %s", sock);
	int pid;
	int fd = receive_listener(ls, &pid);
	close(ls);
	unlink(sock);
	init_start_ns = proc_start(pid);
	if (sync) {
		__u64 flags = SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP;
		if (ioctl(fd, SECCOMP_IOCTL_NOTIF_SET_FLAGS, flags) < 0)
			die(prog, "SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP");
	}
	unsigned long long count = 0;
	for (;;) {
		struct seccomp_notif req;
		struct seccomp_notif_resp resp;
		memset(&req, 0, sizeof(req));
		if (ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, &req) < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ENOENT) {
				/* Target interrupted, or (6.6+) no task uses the filter any more. */
				struct pollfd p = {.fd = fd, .events = POLLIN};
				if (poll(&p, 1, 0) == 1 && (p.revents & POLLHUP))
					break;
				continue;
			}
			die(prog, "SECCOMP_IOCTL_NOTIF_RECV");
		}
		count++;
		memset(&resp, 0, sizeof(resp));
		resp.id = req.id;
		if (req.data.nr == __NR_sysinfo)
			handle_sysinfo(fd, &req, &resp);
		else
			resp.error = -ENOSYS;
		if (ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND, &resp) < 0 && errno != ENOENT)
			die(prog, "SECCOMP_IOCTL_NOTIF_SEND");
	}
	fprintf(stderr, "notifications=%llu\n", count);
	if (linger) {
		close(fd);
		for (;;)
			pause();
	}
	return 0;
}
