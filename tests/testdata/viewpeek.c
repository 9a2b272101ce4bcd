/* viewpeek: tries, from inside a container, to reach what is not its own
 * (the adversarial views tests).
 *
 *   viewpeek send SOCK FILE   open FILE, listen on the unix socket SOCK
 *                             (mode 0777), hand the fd to each client
 *   viewpeek recv SOCK        take an fd from SOCK and read it from offset 0
 *   viewpeek handle FILE      name_to_handle_at + open_by_handle_at of FILE
 *
 * recv prints the first line read, or "ERR <errno text>"; handle prints
 * "OPEN ok" or "ERR <step>: <errno text>". */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

static int addr(const char *path, struct sockaddr_un *sa)
{
	memset(sa, 0, sizeof *sa);
	sa->sun_family = AF_UNIX;
	if (strlen(path) >= sizeof sa->sun_path)
		return -1;
	strcpy(sa->sun_path, path);
	return 0;
}

static int do_send(const char *sock, const char *file)
{
	int fd = open(file, O_RDONLY);
	if (fd < 0) {
		printf("ERR open: %s\n", strerror(errno));
		return 1;
	}
	struct sockaddr_un sa;
	int l = socket(AF_UNIX, SOCK_STREAM, 0);
	unlink(sock);
	if (l < 0 || addr(sock, &sa) || bind(l, (struct sockaddr *)&sa, sizeof sa) || chmod(sock, 0777) || listen(l, 8)) {
		printf("ERR listen: %s\n", strerror(errno));
		return 1;
	}
	printf("listening\n");
	fflush(stdout);
	for (;;) {
		int c = accept(l, NULL, NULL);
		if (c < 0)
			continue;
		char byte = 'f';
		struct iovec iov = {.iov_base = &byte, .iov_len = 1};
		char cbuf[CMSG_SPACE(sizeof(int))];
		struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
		struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
		cm->cmsg_level = SOL_SOCKET;
		cm->cmsg_type = SCM_RIGHTS;
		cm->cmsg_len = CMSG_LEN(sizeof(int));
		memcpy(CMSG_DATA(cm), &fd, sizeof(int));
		sendmsg(c, &m, 0);
		close(c);
	}
}

static int do_recv(const char *sock)
{
	struct sockaddr_un sa;
	int c = socket(AF_UNIX, SOCK_STREAM, 0);
	if (c < 0 || addr(sock, &sa) || connect(c, (struct sockaddr *)&sa, sizeof sa)) {
		printf("ERR connect: %s\n", strerror(errno));
		return 1;
	}
	char byte;
	struct iovec iov = {.iov_base = &byte, .iov_len = 1};
	char cbuf[CMSG_SPACE(sizeof(int))];
	struct msghdr m = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cbuf, .msg_controllen = sizeof cbuf};
	if (recvmsg(c, &m, 0) != 1) {
		printf("ERR recvmsg: %s\n", strerror(errno));
		return 1;
	}
	struct cmsghdr *cm = CMSG_FIRSTHDR(&m);
	if (!cm || cm->cmsg_type != SCM_RIGHTS) {
		printf("ERR no fd received\n");
		return 1;
	}
	int fd;
	memcpy(&fd, CMSG_DATA(cm), sizeof(int));
	char buf[4096];
	ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
	if (n < 0) {
		printf("ERR read: %s\n", strerror(errno));
		return 1;
	}
	buf[n] = 0;
	char *nl = strchr(buf, '\n');
	if (nl)
		*nl = 0;
	printf("%s\n", buf);
	return 0;
}

static int do_handle(const char *file)
{
	struct file_handle *h = malloc(sizeof *h + MAX_HANDLE_SZ);
	int mnt;
	h->handle_bytes = MAX_HANDLE_SZ;
	if (name_to_handle_at(AT_FDCWD, file, h, &mnt, 0)) {
		printf("ERR name_to_handle_at: %s\n", strerror(errno));
		return 1;
	}
	int mfd = open(file, O_RDONLY);
	int fd = open_by_handle_at(mfd, h, O_RDONLY);
	if (fd < 0) {
		printf("ERR open_by_handle_at: %s\n", strerror(errno));
		return 1;
	}
	printf("OPEN ok\n");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 4 && !strcmp(argv[1], "send"))
		return do_send(argv[2], argv[3]);
	if (argc == 3 && !strcmp(argv[1], "recv"))
		return do_recv(argv[2]);
	if (argc == 3 && !strcmp(argv[1], "handle"))
		return do_handle(argv[2]);
	fprintf(stderr, "usage: viewpeek send SOCK FILE | recv SOCK | handle FILE\n");
	return 2;
}
