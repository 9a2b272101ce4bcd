// seccomplisten installs a seccomp filter (allow everything) with or
// without a notify listener and prints the outcome: "ok" or the errno name.
//   seccomplisten listener | plain
#include <errno.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

int main(int argc, char **argv) {
	if (argc != 2) {
		fprintf(stderr, "usage: seccomplisten listener|plain\n");
		return 2;
	}
	struct sock_filter insns[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
	struct sock_fprog prog = {.len = 1, .filter = insns};
	unsigned flags = strcmp(argv[1], "listener") == 0 ? SECCOMP_FILTER_FLAG_NEW_LISTENER : 0;
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0) {
		perror("prctl");
		return 1;
	}
	long r = syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, &prog);
	if (r < 0) {
		printf("%s\n", errno == EBUSY ? "EBUSY" : strerror(errno));
		return 0;
	}
	printf("ok\n");
	return 0;
}
