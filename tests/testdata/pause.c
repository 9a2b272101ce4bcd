/* pause: a pod sandbox's process for the CRI tests (tests/cri.sh), as
 * Kubernetes' pause image has: it waits, reaps, and exits on TERM or INT. */
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

static void quit(int sig) { (void)sig; _exit(0); }
static void reap(int sig)
{
	(void)sig;
	while (waitpid(-1, 0, WNOHANG) > 0)
		;
}

int main(void)
{
	signal(SIGTERM, quit);
	signal(SIGINT, quit);
	signal(SIGCHLD, reap);
	for (;;)
		pause();
}
