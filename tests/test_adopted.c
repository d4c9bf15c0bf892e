/* SPDX-License-Identifier: MIT */
/*
 * test_adopted - a pager driving memory it does not own (PC_BACKEND_ADOPTED),
 * as a Firecracker page-fault handler does: a child process maps its own
 * memory, registers it with a userfaultfd of its own and hands the fd over
 * a Unix socket (SCM_RIGHTS), in two ranges with a hole between them (as
 * Firecracker's memory regions are); this process creates an adopted region on it,
 * the child's threads touch every page and compare every byte with the
 * source; demand faults alone, and with the filler installing ahead of
 * them; 4 KiB pages and 2 MiB hugetlb pages (zero pages included); a
 * balloon (MADV_DONTNEED, UFFD_EVENT_REMOVE) giving back pages served and
 * pages never touched mid-run, which must then read as zeros.  Bad
 * adoptions are refused with a reason: exit mode, a descriptor that is not
 * a userfaultfd (left open: it is the caller's), a misaligned base.
 */
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "postcopy.h"
#include "tap.h"

#define SIZE (8 * MIB)
#define SEED 77

enum { CHILD_OK = 0, CHILD_SETUP = 2, CHILD_BAD_DATA = 3 };

static void send_fd(int sock, int fd, const struct pc_remote_range *g)
{
	char ctl[CMSG_SPACE(sizeof(int))] = { 0 };
	struct iovec iov = { (void *)g, 2 * sizeof(*g) };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int));
	memcpy(CMSG_DATA(c), &fd, sizeof(int));
	if (sendmsg(sock, &m, 0) != 2 * sizeof(*g))
		_exit(CHILD_SETUP);
}

static int recv_fd(int sock, struct pc_remote_range *g)
{
	char ctl[CMSG_SPACE(sizeof(int))];
	struct iovec iov = { g, 2 * sizeof(*g) };
	struct msghdr m = { .msg_iov = &iov, .msg_iovlen = 1,
			    .msg_control = ctl, .msg_controllen = sizeof(ctl) };
	if (recvmsg(sock, &m, MSG_WAITALL) != 2 * sizeof(*g))
		return -1;
	struct cmsghdr *c = CMSG_FIRSTHDR(&m);
	int fd;
	if (!c || c->cmsg_type != SCM_RIGHTS)
		return -1;
	memcpy(&fd, CMSG_DATA(c), sizeof(int));
	return fd;
}

/* The owner's memory: the region's first half at mem, its second half
 * a hole of GAP bytes further on. */
#define GAP (4 * MIB)
#define HALF (SIZE / 2)

struct toucher {
	char *mem;
	pc_source *ref;
	unsigned id;
	uint64_t bad;
	uint64_t zero_from, zero_to; /* region bytes given back: zeros */
};

/* Compare region bytes [from, from + len) at @at with the source (zeros
 * where the toucher's balloon gave pages back). */
static uint64_t verify_part(const struct toucher *t, const char *at, uint64_t from,
			    uint64_t len)
{
	char want[SRC_PAGE];
	uint64_t bad = 0;
	for (uint64_t off = 0; off < len; off += SRC_PAGE) {
		uint64_t o = from + off;
		if (o >= t->zero_from && o < t->zero_to)
			memset(want, 0, SRC_PAGE);
		else if (pc_source_read(t->ref, o / SRC_PAGE, 1, want))
			bad++;
		if (memcmp(at + off, want, SRC_PAGE))
			bad++;
	}
	return bad;
}

/* Half the pages each, then the whole region compared. */
static void *touch_main(void *arg)
{
	struct toucher *t = arg;
	for (uint64_t p = t->id; p < SIZE / SRC_PAGE; p += 2) {
		uint64_t off = p * SRC_PAGE;
		(void)*(volatile char *)(t->mem + off + (off >= HALF ? GAP : 0));
	}
	t->bad = verify_part(t, t->mem, 0, HALF) +
		 verify_part(t, t->mem + HALF + GAP, HALF, HALF);
	return NULL;
}

/* The owner: its memory, its userfaultfd, its vCPU threads; with
 * @balloon, it gives back region bytes [2 MiB, 4 MiB) after touching
 * [0, 3 MiB) (so some of them were served, some not). */
static int owner(int sock, bool huge, bool balloon)
{
	pc_source *ref;
	int flags = MAP_PRIVATE | MAP_ANONYMOUS | (huge ? MAP_HUGETLB | (21 << MAP_HUGE_SHIFT) : 0);
	char *mem = mmap(NULL, SIZE + GAP, PROT_READ | PROT_WRITE, flags, -1, 0);
	if (mem == MAP_FAILED || pc_source_pattern(SIZE, SEED, &ref))
		return CHILD_SETUP;
	if (!huge) /* 2 MiB aligned anyway, and no THP behind our back */
		madvise(mem, SIZE, MADV_NOHUGEPAGE);
	int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	struct uffdio_api api = { .api = UFFD_API,
				  .features = balloon ? UFFD_FEATURE_EVENT_REMOVE : 0 };
	struct pc_remote_range g[2] = { { (uintptr_t)mem, HALF },
					{ (uintptr_t)mem + HALF + GAP, HALF } };
	if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api))
		return CHILD_SETUP;
	for (unsigned i = 0; i < 2; i++) {
		struct uffdio_register reg = {
			.range = { g[i].base, g[i].size }, .mode = UFFDIO_REGISTER_MODE_MISSING,
		};
		if (ioctl(uffd, UFFDIO_REGISTER, &reg))
			return CHILD_SETUP;
	}
	send_fd(sock, uffd, g);
	close(uffd);
	char go;
	if (read(sock, &go, 1) != 1)
		return CHILD_SETUP;
	uint64_t zf = 0, zt = 0;
	if (balloon) { /* served pages and missing ones, one huge page */
		zf = 2 * MIB, zt = 4 * MIB;
		for (uint64_t off = 0; off < 3 * MIB; off += SRC_PAGE)
			(void)*(volatile char *)(mem + off);
		if (madvise(mem + zf, zt - zf, MADV_DONTNEED))
			return CHILD_SETUP;
	}
	struct toucher t[2] = { { mem, ref, 0, 0, zf, zt }, { mem, ref, 1, 0, zf, zt } };
	pthread_t th[2];
	for (unsigned i = 0; i < 2; i++)
		if (pthread_create(&th[i], NULL, touch_main, &t[i]))
			return CHILD_SETUP;
	for (unsigned i = 0; i < 2; i++)
		pthread_join(th[i], NULL);
	return t[0].bad || t[1].bad ? CHILD_BAD_DATA : CHILD_OK;
}

static void adopt(bool huge, bool fill, bool balloon)
{
	char name[96], why[256] = "";
	snprintf(name, sizeof(name), "adopted_%s%s_%s", huge ? "hugetlb" : "anon",
		 fill ? "_with_fill" : "",
		 balloon ? "pages_given_back_read_zeros_the_rest_every_byte_right" :
			   "every_byte_arrives_in_the_owner");
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv))
		bail_out("socketpair");
	pid_t pid = fork_or_bail();
	if (pid == 0) {
		close(sv[0]);
		_exit(owner(sv[1], huge, balloon));
	}
	close(sv[1]);
	struct pc_remote_range g[2];
	int uffd = recv_fd(sv[0], g);
	pc_source *src;
	pc_region *r = NULL;
	int ret = uffd < 0 ? -EBADF : pc_source_pattern(SIZE, SEED, &src);
	struct pc_region_opts o = { .size = SIZE, .backend = PC_BACKEND_ADOPTED,
				    .mode = PC_MODE_WAIT, .uffd = uffd,
				    .remote = g, .nremote = 2,
				    .page_size = huge ? HUGE_PAGE : SRC_PAGE };
	if (ret == 0)
		ret = pc_region_create(&o, src, &r, why, sizeof(why));
	if (ret == 0)
		ret = pc_region_start(r);
	if (ret == 0 && fill)
		ret = pc_region_start_fill(r);
	if (send(sv[0], "g", 1, MSG_NOSIGNAL) != 1)
		ret = ret ? ret : -EPIPE;
	int st = wait_child(pid);
	int wret = r && ret == 0 ? pc_region_wait(r, 30000) : ret;
	struct pc_stats *s = NULL;
	if (r && pc_region_stats(r, &s) == 0 && !ok(wret == 0 && WIFEXITED(st) &&
						     WEXITSTATUS(st) == CHILD_OK &&
						     s->present == s->pages,
						     "%s", name))
		diag("setup %d (%s), wait %d, child status %#x, %llu of %llu present",
		     ret, why[0] ? why : (r ? pc_region_error(r) : ""), wret, st,
		     (unsigned long long)s->present, (unsigned long long)s->pages);
	/* (With the filler the region may be complete, and unregistered,
	 * before the balloon: then the kernel zero-fills and nothing is
	 * counted.) */
	if (s && balloon && !fill && !ok(s->pages_removed == 2 * MIB / (huge ? HUGE_PAGE : SRC_PAGE),
				"%s_counted", name))
		diag("%llu pages removed", (unsigned long long)s->pages_removed);
	else if (!r)
		ok(false, "%s", name), diag("setup %d: %s", ret, why);
	free(s);
	pc_region_destroy(r);
	close(sv[0]);
}

/* A refused adoption, with the reason it gives and who keeps the fd. */
static void refused(const char *name, struct pc_region_opts o, const char *reason,
		    bool fd_closed)
{
	pc_source *src;
	pc_region *r = NULL;
	char why[256] = "";
	if (pc_source_pattern(SIZE, SEED, &src))
		bail_out("pc_source_pattern");
	int ret = pc_region_create(&o, src, &r, why, sizeof(why));
	bool closed = fcntl(o.uffd, F_GETFD) < 0;
	if (!ok(ret == -EINVAL && strstr(why, reason) && closed == fd_closed, "%s", name))
		diag("pc_region_create = %d (%s); fd %s", ret, why, closed ? "closed" : "open");
	if (!closed)
		close(o.uffd);
	pc_region_destroy(r);
}

int main(void)
{
	struct hugepages hp;
	plan(15);
	tap_watchdog(300);
	for (int balloon = 0; balloon < 2; balloon++) {
		adopt(false, false, balloon);
		adopt(false, true, balloon);
	}
	if (hugepages_reserve(&hp, (SIZE + GAP) / HUGE_PAGE)) {
		for (int balloon = 0; balloon < 2; balloon++) {
			adopt(true, false, balloon);
			adopt(true, true, balloon);
		}
		hugepages_restore(&hp);
	} else {
		for (int i = 0; i < 5; i++)
			skip("no 2 MiB huge pages could be reserved", "adopted_hugetlb_case_%d", i);
	}
	struct pc_remote_range g = { 1ull << 30, SIZE };
	struct pc_region_opts o = { .size = SIZE, .backend = PC_BACKEND_ADOPTED,
				    .mode = PC_MODE_WAIT, .remote = &g, .nremote = 1 };
	o.uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	o.mode = PC_MODE_EXIT;
	refused("adopted_in_exit_mode_is_refused_and_the_fd_closed", o, "wait mode", true);
	int p[2];
	if (pipe(p))
		bail_out("pipe");
	close(p[1]);
	o.mode = PC_MODE_WAIT;
	o.uffd = p[0];
	refused("adopting_a_descriptor_that_is_not_a_userfaultfd_is_refused_and_it_stays_open",
		o, "not a userfaultfd", false);
	o.uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	g.base += 100;
	refused("adopted_misaligned_base_is_refused", o, "multiple of the page size", true);
	struct pc_remote_range two[2] = { { 1ull << 30, SIZE / 2 }, { (1ull << 30) + 4096, SIZE / 2 } };
	o.remote = two;
	o.nremote = 2;
	o.uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	refused("adopted_overlapping_ranges_are_refused", o, "overlap", true);
	two[1].base = 1ull << 31;
	two[1].size = SIZE;
	o.uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
	refused("adopted_ranges_that_do_not_add_up_are_refused", o, "add up", true);
	return done();
}
