/* Prints sysinfo(2) as key=value lines, so tests read the emulated values
 * without depending on how a tool formats them. */
#include <stdio.h>
#include <sys/sysinfo.h>

int main(void)
{
	struct sysinfo si;
	if (sysinfo(&si) != 0) {
		perror("sysinfo");
		return 1;
	}
	printf("uptime=%ld\ntotalram=%llu\nfreeram=%llu\ntotalswap=%llu\nfreeswap=%llu\nprocs=%u\nmem_unit=%u\n",
	       si.uptime, (unsigned long long)si.totalram * si.mem_unit,
	       (unsigned long long)si.freeram * si.mem_unit,
	       (unsigned long long)si.totalswap * si.mem_unit,
	       (unsigned long long)si.freeswap * si.mem_unit, si.procs, si.mem_unit);
	return 0;
}
