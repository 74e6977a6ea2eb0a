/*
 * The fork-write workload on the live kernel (bench/bench_live.py compiles this with cc -O2).
 *
 *     live_workload SIZE_BYTES THP
 *
 * THP is 1 (madvise(MADV_HUGEPAGE)) or 0 (MADV_NOHUGEPAGE); the system-wide setting in
 * /sys/kernel/mm/transparent_hugepage/enabled is left as it is ("madvise" or "always" lets the
 * advice work). Steps: mmap SIZE private anonymous bytes at a 2 MiB boundary, write one byte in
 * every 4 KiB page (first touch), fork, write one byte in every page again in the parent (COW
 * faults), then let the child go and reap it. The child touches nothing of the region: it
 * blocks in read() on a pipe until the parent has written every page (or died: the write end
 * closes then too) and calls _exit(). Its stack page, written on the way out of fork(), is the
 * only page it copies.
 *
 * Output, one "key=value" a line: the phase times in nanoseconds (CLOCK_MONOTONIC), the minor
 * faults each phase took (getrusage ru_minflt), peak RSS of the parent (KiB, VmHWM: ru_maxrss
 * would count the Python process that started this one, as Linux keeps it across execve) and
 * of the child (ru_maxrss of RUSAGE_CHILDREN) and AnonHugePages after the first touch (KiB,
 * /proc/self/smaps_rollup).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <signal.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096UL
#define HPAGE (2UL << 20)

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static long minflt(void)
{
	struct rusage ru;

	getrusage(RUSAGE_SELF, &ru);
	return ru.ru_minflt;
}

/* "<field> <n> kB" from a /proc file (format: "AnonHugePages: %ld kB"), -1 if absent */
static long proc_kb(const char *path, const char *format)
{
	char line[256];
	long kb = -1;
	FILE *f = fopen(path, "r");

	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, format, &kb) == 1)
			break;
	fclose(f);
	return kb;
}

static void die(const char *what)
{
	fprintf(stderr, "live_workload: %s: %s\n", what, strerror(errno));
	exit(1);
}

static void write_pages(volatile char *p, unsigned long size, char value)
{
	for (unsigned long off = 0; off < size; off += PAGE)
		p[off] = value;
}

int main(int argc, char **argv)
{
	unsigned long size;
	int thp, pipefd[2], status;
	long long t0, t1, t2, t3, t4, t5, t6, t7;
	long f0, f1, f2, f3, f4, f5, f6, f7, huge_kb;
	char *raw, *p, token;
	pid_t pid;
	long peak_kb;
	struct rusage children;

	if (argc != 3) {
		fprintf(stderr, "usage: live_workload SIZE_BYTES THP(0|1)\n");
		return 2;
	}
	size = strtoul(argv[1], NULL, 0);
	thp = atoi(argv[2]);
	if (size == 0 || size % PAGE) {
		fprintf(stderr, "live_workload: size must be a positive multiple of 4096\n");
		return 2;
	}
	raw = mmap(NULL, size + HPAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (raw == MAP_FAILED)
		die("mmap");
	p = (char *)(((unsigned long)raw + HPAGE - 1) & ~(HPAGE - 1));
	if (madvise(p, size, thp ? MADV_HUGEPAGE : MADV_NOHUGEPAGE))
		die("madvise");

	f0 = minflt();
	t0 = now_ns();
	write_pages(p, size, 'a');
	t1 = now_ns();
	f1 = minflt();
	huge_kb = proc_kb("/proc/self/smaps_rollup", "AnonHugePages: %ld kB");

	if (pipe(pipefd))
		die("pipe");
	f2 = minflt();
	t2 = now_ns();
	pid = fork();
	if (pid < 0)
		die("fork");
	if (pid == 0) {
		prctl(PR_SET_PDEATHSIG, SIGKILL);
		close(pipefd[1]);
		while (read(pipefd[0], &token, 1) < 0 && errno == EINTR)
			;
		_exit(0);
	}
	t3 = now_ns();
	f3 = minflt();
	close(pipefd[0]);

	f4 = minflt();
	t4 = now_ns();
	write_pages(p, size, 'b');
	t5 = now_ns();
	f5 = minflt();

	f6 = minflt();
	t6 = now_ns();
	close(pipefd[1]);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			die("waitpid");
	t7 = now_ns();
	f7 = minflt();
	if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
		fprintf(stderr, "live_workload: the child did not exit cleanly (%#x)\n", status);
		return 1;
	}
	peak_kb = proc_kb("/proc/self/status", "VmHWM: %ld kB");
	getrusage(RUSAGE_CHILDREN, &children);
	munmap(raw, size + HPAGE);

	printf("size=%lu\nthp=%d\npages=%lu\n", size, thp, size / PAGE);
	printf("first_touch_ns=%lld\nfork_ns=%lld\ncow_write_ns=%lld\nexit_ns=%lld\n",
	       t1 - t0, t3 - t2, t5 - t4, t7 - t6);
	printf("first_touch_faults=%ld\nfork_faults=%ld\ncow_write_faults=%ld\nexit_faults=%ld\n",
	       f1 - f0, f3 - f2, f5 - f4, f7 - f6);
	printf("anon_huge_kb=%ld\npeak_rss_kb=%ld\nchild_peak_rss_kb=%ld\n", huge_kb,
	       peak_kb, children.ru_maxrss);
	return 0;
}
