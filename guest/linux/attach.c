/* codeisland attach: give a process that is already running (started by somebody else, not
 * under our LD_PRELOAD landing library) what landing.c gives a program it starts, without
 * restarting it: the --pid form of `codeisland qemu process` and `loop --guest linux`.
 *
 *   codeisland-attach PID|NAME      (a PID as the guest's ps shows it, or a name as pidof takes it)
 *
 *   1. finds the process (a NAME must match exactly one process's comm; it is waited for a while,
 *      the board's job may still be starting) and refuses, before touching it, a PID that does not
 *      exist, a thread that is not a process, a kernel thread (no executable), an executable that
 *      is not x86-64 ELF, a process whose executable has no file-backed text (attached already?);
 *   2. stops every thread (PTRACE_SEIZE + PTRACE_INTERRUPT: no signal is sent, the process cannot
 *      see it), and injects system calls into its main thread through a `syscall` instruction the
 *      process already maps (its libc's, or any executable mapping's), with the registers saved
 *      and a system call it was blocked in restarted as the kernel would have;
 *   3. maps the landing zone RWX within rel32 reach below the load base (MAP_HUGETLB, else THP
 *      via MADV_HUGEPAGE) and fills it with int3 (a process that cannot have one keeps its text
 *      as it was: a zone larger than the room below a non-PIE program's 0x400000), then makes the text its own
 *      and physically contiguous (a transparent huge page filled with the text and mremap'ed
 *      over it: text_via remap; else every text page written through /proc/PID/mem, which
 *      breaks the page-cache sharing: text_via fault), and locks both;
 *   4. restores the registers, detaches (the process runs on as before) and prints landing.c's
 *      line, so the host reads both the same way:
 *      codeisland-landing: pid P exe PATH base B text LO-HI private 0|1 zone Z size S page 2M|4K
 *      via hugetlb|thp|none text_breaks N text_via remap|fault
 *   5. exits (its caller goes on), leaving a child that waits for the process's exit (pidfd)
 *      and prints "codeisland-landing: pid P exit".
 * A failure is one "codeisland-attach: error: ..." line and exit 1; before step 2 nothing of the
 * process was touched, after it the registers are restored and the threads detached either way.
 * fork: zone and text are private anonymous mappings, inherited copy-on-write by a child (the
 * same physical pages until one of them writes, which neither does); execve drops both.
 * Output goes to stdout (the guest's init runs this on the console), never to the process's.
 */
#define _GNU_SOURCE
#include <ctype.h>
#include <dirent.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "procfs.h"

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#define PRIVATE_ATTEMPTS 8
#define MAX_THREADS 256
#define NAME_WAIT_MS 20000
#define PF_KTHREAD 0x00200000u
/* the kernel's restart codes (not in the uapi headers) */
#define ERESTARTSYS 512
#define ERESTARTNOINTR 513
#define ERESTARTNOHAND 514
#define ERESTART_RESTARTBLOCK 516

struct target {
    pid_t pid;
    int mem; /* /proc/PID/mem, read-write */
    char exe[256];
    uintptr_t base, lo, hi; /* load base (file offset 0), the executable mapping */
    uintptr_t syscall_insn;
    struct user_regs_struct saved; /* the main thread's registers, restart applied */
    int have_saved; /* `saved` holds them (only then are they written back) */
    int signal; /* a signal that arrived for the main thread while we injected */
    pid_t tids[MAX_THREADS];
    int threads;
};

static void fail(const char *fmt, ...) {
    va_list ap;
    printf("codeisland-attach: error: ");
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
}

static int read_file(const char *path, char *buf, size_t size) {
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, size - 1);
    close(fd);
    if (n < 0)
        return -1;
    buf[n] = 0;
    return (int)n;
}

static int all_digits(const char *s) {
    if (!*s)
        return 0;
    for (; *s; s++)
        if (!isdigit((unsigned char)*s))
            return 0;
    return 1;
}

/* Processes whose comm is `name`; their count (up to `max` stored). */
static int find_by_name(const char *name, pid_t *found, int max) {
    DIR *d = opendir("/proc");
    if (!d)
        return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!all_digits(e->d_name))
            continue;
        char path[64], comm[64];
        snprintf(path, sizeof path, "/proc/%d/comm", atoi(e->d_name));
        if (read_file(path, comm, sizeof comm) <= 0)
            continue;
        comm[strcspn(comm, "\n")] = 0;
        if (strcmp(comm, name) == 0) {
            if (n < max)
                found[n] = (pid_t)atoi(e->d_name);
            n++;
        }
    }
    closedir(d);
    return n;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

/* The process PID|NAME names, or 0 after one error line. */
static pid_t resolve(const char *arg) {
    if (all_digits(arg)) {
        long v = strtol(arg, NULL, 10);
        if (v <= 0 || v > 4194304 || (kill((pid_t)v, 0) != 0 && errno == ESRCH)) {
            fail("no process %s in the guest (look it up there with ps or pidof)", arg);
            return 0;
        }
        return (pid_t)v;
    }
    pid_t found[8];
    int n = 0;
    for (long waited = 0; waited <= NAME_WAIT_MS; waited += 100) {
        if ((n = find_by_name(arg, found, 8)) > 0)
            break;
        sleep_ms(100);
    }
    if (n == 0) {
        fail("no process named %s in the guest after %d s", arg, NAME_WAIT_MS / 1000);
        return 0;
    }
    if (n > 1) {
        fail("%d processes are named %s (pids %d, %d%s): give one PID", n, arg, (int)found[0],
             (int)found[1], n > 2 ? ", ..." : "");
        return 0;
    }
    return found[0];
}

/* The checks that need nothing but /proc: 0, or -1 after one error line. */
static int inspect(struct target *t) {
    char path[64], buf[4096];
    snprintf(path, sizeof path, "/proc/%d/status", (int)t->pid);
    if (read_file(path, buf, sizeof buf) <= 0) {
        fail("no process %d in the guest (it exited?)", (int)t->pid);
        return -1;
    }
    const char *tg = strstr(buf, "\nTgid:");
    if (tg && atoi(tg + 6) != t->pid) {
        fail("%d is a thread of process %d: name the process", (int)t->pid, atoi(tg + 6));
        return -1;
    }
    snprintf(path, sizeof path, "/proc/%d/stat", (int)t->pid);
    unsigned flags = 0;
    if (read_file(path, buf, sizeof buf) > 0) {
        const char *p = strrchr(buf, ')'); /* comm may hold spaces */
        if (p)
            sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %u", &flags);
    }
    snprintf(path, sizeof path, "/proc/%d/exe", (int)t->pid);
    ssize_t n = readlink(path, t->exe, sizeof t->exe - 1);
    if (n <= 0) {
        if (flags & PF_KTHREAD)
            fail("process %d is a kernel thread: it has no program to analyse", (int)t->pid);
        else
            fail("the executable of process %d cannot be read (%s)", (int)t->pid,
                 strerror(errno));
        return -1;
    }
    t->exe[n] = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    Elf64_Ehdr eh;
    int ok = fd >= 0 && read(fd, &eh, sizeof eh) == (ssize_t)sizeof eh &&
             memcmp(eh.e_ident, ELFMAG, SELFMAG) == 0 && eh.e_ident[EI_CLASS] == ELFCLASS64 &&
             eh.e_machine == EM_X86_64;
    if (fd >= 0)
        close(fd);
    if (!ok) {
        fail("the executable of process %d (%s) is not an x86-64 ELF program", (int)t->pid,
             t->exe);
        return -1;
    }
    return 0;
}

/* The executable's mappings (load base, text) and a `syscall` instruction (0f 05) the process
 * maps, preferably outside its text (which is about to move). */
static int find_mappings(struct target *t) {
    char path[64], line[512];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)t->pid);
    FILE *f = fopen(path, "re");
    if (!f)
        return -1;
    uintptr_t xs[64][2];
    int nx = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi, off;
        char perms[8];
        int at = 0;
        if (sscanf(line, "%lx-%lx %7s %lx %*s %*s %n", &lo, &hi, perms, &off, &at) < 4)
            continue;
        char *name = at ? line + at : line + strlen(line);
        name[strcspn(name, "\n")] = 0;
        int ours = *name && strcmp(name, t->exe) == 0;
        if (ours && off == 0 && !t->base)
            t->base = lo;
        if (perms[2] != 'x' || strcmp(name, "[vsyscall]") == 0)
            continue;
        if (ours && !t->lo) {
            t->lo = lo;
            t->hi = hi;
        } else if (nx < 64) {
            xs[nx][0] = lo;
            xs[nx++][1] = hi;
        }
    }
    fclose(f);
    if (!t->base || !t->lo) {
        fail("process %d maps no file-backed text of %s (attached already?)", (int)t->pid, t->exe);
        return -1;
    }
    if (nx < 64) { /* the text last */
        xs[nx][0] = t->lo;
        xs[nx++][1] = t->hi;
    }
    static uint8_t chunk[65536];
    for (int k = 0; k < nx && !t->syscall_insn; k++)
        for (uintptr_t p = xs[k][0]; p < xs[k][1] && !t->syscall_insn; p += sizeof chunk - 1) {
            size_t want = xs[k][1] - p < sizeof chunk ? xs[k][1] - p : sizeof chunk;
            ssize_t got = pread(t->mem, chunk, want, (off_t)p);
            for (ssize_t i = 0; i + 1 < got; i++)
                if (chunk[i] == 0x0f && chunk[i + 1] == 0x05) {
                    t->syscall_insn = p + (uintptr_t)i;
                    break;
                }
        }
    if (!t->syscall_insn) {
        fail("process %d maps no syscall instruction to borrow", (int)t->pid);
        return -1;
    }
    return 0;
}

/* Wait for tid's next ptrace stop; its status, or -1 when it is gone. */
static int wait_stop(pid_t tid) {
    int st;
    for (;;) {
        if (waitpid(tid, &st, __WALL) < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (WIFEXITED(st) || WIFSIGNALED(st))
            return -1;
        if (WIFSTOPPED(st))
            return st;
    }
}

static int seized(const struct target *t, pid_t tid) {
    for (int k = 0; k < t->threads; k++)
        if (t->tids[k] == tid)
            return 1;
    return 0;
}

/* Stop every thread (new ones are caught on a second pass over /proc/PID/task). */
static int stop_all(struct target *t) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/task", (int)t->pid);
    for (int pass = 0, added = 1; added && pass < 8; pass++) {
        added = 0;
        DIR *d = opendir(path);
        if (!d)
            return -1;
        struct dirent *e;
        while ((e = readdir(d))) {
            pid_t tid = all_digits(e->d_name) ? (pid_t)atoi(e->d_name) : 0;
            if (!tid || seized(t, tid) || t->threads == MAX_THREADS)
                continue;
            if (ptrace(PTRACE_SEIZE, tid, 0, (void *)(long)PTRACE_O_TRACESYSGOOD) != 0 ||
                ptrace(PTRACE_INTERRUPT, tid, 0, 0) != 0)
                continue; /* exited meanwhile */
            t->tids[t->threads++] = tid;
            added = 1;
            /* a signal arriving first shows as a signal-delivery stop: let it be delivered
             * (the process's own business) and stop at the interrupt after it */
            for (int st = wait_stop(tid); st != -1 && (st >> 16) != PTRACE_EVENT_STOP;
                 st = wait_stop(tid))
                ptrace(PTRACE_CONT, tid, 0, (void *)(long)WSTOPSIG(st));
        }
        closedir(d);
    }
    return seized(t, t->pid) ? 0 : -1;
}

/* The main thread's registers back, every thread let go (a signal kept back delivered). */
static void release(struct target *t) {
    if (t->have_saved)
        ptrace(PTRACE_SETREGS, t->pid, 0, &t->saved);
    for (int k = 0; k < t->threads; k++)
        ptrace(PTRACE_DETACH, t->tids[k], 0,
               (void *)(long)(t->tids[k] == t->pid ? t->signal : 0));
    t->threads = 0;
}

/* The main thread's registers as the kernel would have returned to user mode with them: a
 * system call that the interrupt broke off is restarted (we deliver no signal). */
static int save_regs(struct target *t) {
    struct user_regs_struct *r = &t->saved;
    if (ptrace(PTRACE_GETREGS, t->pid, 0, r) != 0)
        return -1;
    long ax = (long)r->rax;
    if ((long)r->orig_rax >= 0 && (ax == -ERESTARTSYS || ax == -ERESTARTNOINTR ||
                                   ax == -ERESTARTNOHAND || ax == -ERESTART_RESTARTBLOCK)) {
        r->rax = ax == -ERESTART_RESTARTBLOCK ? SYS_restart_syscall : r->orig_rax;
        r->rip -= 2; /* the syscall instruction again */
    }
    r->orig_rax = (unsigned long long)-1;
    t->have_saved = 1;
    return 0;
}

/* One system call in the main thread, at the borrowed instruction; its return value
 * (-errno on failure, -ESRCH when the process went away). */
static long inject(struct target *t, long nr, long a1, long a2, long a3, long a4, long a5,
                   long a6) {
    struct user_regs_struct r = t->saved;
    r.rip = t->syscall_insn;
    r.rax = (unsigned long long)nr;
    r.orig_rax = (unsigned long long)-1;
    r.rdi = (unsigned long long)a1;
    r.rsi = (unsigned long long)a2;
    r.rdx = (unsigned long long)a3;
    r.r10 = (unsigned long long)a4;
    r.r8 = (unsigned long long)a5;
    r.r9 = (unsigned long long)a6;
    if (ptrace(PTRACE_SETREGS, t->pid, 0, &r) != 0)
        return -ESRCH;
    for (int stop = 0; stop < 2; stop++) { /* syscall entry, then exit */
        if (ptrace(PTRACE_SYSCALL, t->pid, 0, 0) != 0)
            return -ESRCH;
        int st = wait_stop(t->pid);
        if (st == -1)
            return -ESRCH;
        if (WSTOPSIG(st) != (SIGTRAP | 0x80)) { /* a signal: kept for the detach */
            if ((st >> 16) == 0 && WSTOPSIG(st) != SIGTRAP)
                t->signal = WSTOPSIG(st);
            stop--;
        }
    }
    if (ptrace(PTRACE_GETREGS, t->pid, 0, &r) != 0)
        return -ESRCH;
    return (long)r.rax;
}

#define MMAP(t, at, len, prot, flags) inject(t, SYS_mmap, (long)(at), (long)(len), prot, flags, -1, 0)

static int put(struct target *t, uintptr_t at, const void *buf, size_t n) {
    return pwrite(t->mem, buf, n, (off_t)at) == (ssize_t)n ? 0 : -1;
}

/* smaps of the mapping at va: its KernelPageSize in kB, and its AnonHugePages. */
static unsigned long page_kib(pid_t pid, uintptr_t va, int *thp_kib) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/smaps", (int)pid);
    return smaps_page_kib(path, va, thp_kib);
}

/* Physical discontinuities between the text's pages (/proc/PID/pagemap), -1 unknown. */
static int text_breaks(const struct target *t) {
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/pagemap", (int)t->pid);
    return pagemap_breaks(path, t->lo, t->hi);
}

/* landing.c's remap_text, done from outside: 0, or -1 with nothing changed. */
static int remap_text(struct target *t) {
    size_t len = t->hi - t->lo;
    if (len > HUGE_2M)
        return -1;
    long raw = MMAP(t, 0, 2 * HUGE_2M, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS);
    if (raw < 0 && raw > -4096)
        return -1;
    uintptr_t buf = ((uintptr_t)raw + HUGE_2M - 1) & ~(HUGE_2M - 1);
    int thp = 0;
    uint8_t zero = 0;
    if (inject(t, SYS_madvise, (long)buf, HUGE_2M, MADV_HUGEPAGE, 0, 0, 0) == 0 &&
        put(t, buf, &zero, 1) == 0)
        (void)page_kib(t->pid, buf, &thp);
    uint8_t *text = malloc(len);
    int ok = thp >= (int)(HUGE_2M >> 10) && text &&
             pread(t->mem, text, len, (off_t)t->lo) == (ssize_t)len && put(t, buf, text, len) == 0 &&
             inject(t, SYS_mprotect, (long)buf, (long)len, PROT_READ | PROT_EXEC, 0, 0, 0) == 0 &&
             inject(t, SYS_mremap, (long)buf, (long)len, (long)len, MREMAP_MAYMOVE | MREMAP_FIXED,
                    (long)t->lo, 0) == (long)t->lo;
    free(text);
    if (!ok) {
        inject(t, SYS_munmap, raw, 2 * HUGE_2M, 0, 0, 0, 0);
        return -1;
    }
    inject(t, SYS_munmap, raw, (long)(buf - (uintptr_t)raw), 0, 0, 0, 0);
    inject(t, SYS_munmap, (long)(buf + len), (long)(2 * HUGE_2M - (buf - (uintptr_t)raw) - len), 0,
           0, 0, 0);
    inject(t, SYS_mlock, (long)t->lo, (long)len, 0, 0, 0, 0);
    return 0;
}

/* landing.c's privatise: every text page written (its own byte) through /proc/PID/mem, a few
 * times in alternating order; the breaks left (-1 unknown), or -2 on failure. */
static int privatise(struct target *t) {
    size_t pages = (t->hi - t->lo) / PAGE_4K;
    int breaks = -1;
    for (int attempt = 0; attempt < PRIVATE_ATTEMPTS; attempt++) {
        if (attempt &&
            inject(t, SYS_madvise, (long)t->lo, (long)(t->hi - t->lo), MADV_DONTNEED, 0, 0, 0))
            break;
        for (size_t k = 0; k < pages; k++) {
            uintptr_t p = t->lo + PAGE_4K * ((attempt & 1) ? pages - 1 - k : k);
            uint8_t b;
            if (pread(t->mem, &b, 1, (off_t)p) != 1 || put(t, p, &b, 1) != 0)
                return -2;
        }
        breaks = text_breaks(t);
        if (breaks <= 0)
            break;
    }
    inject(t, SYS_mlock, (long)t->lo, (long)(t->hi - t->lo), 0, 0, 0, 0);
    return breaks;
}

/* landing.c's map_near: 2 MiB aligned, below the load base, within rel32 reach of the text
 * (from right below it: a non-PIE program at 0x400000 has just the 2 MiB at 0x200000). */
static long map_near(struct target *t, size_t size, int flags) {
    for (uintptr_t k = 0; k <= 64; k++) {
        uintptr_t below = k * HUGE_2M + size;
        uintptr_t at = (t->base & ~(HUGE_2M - 1)) - below;
        if (below + HUGE_2M > (t->base & ~(HUGE_2M - 1)) || t->hi - at >= REACH)
            break; /* nothing below it but the first 2 MiB (never mapped), or out of reach */
        long p = MMAP(t, at, size, PROT_READ | PROT_WRITE | PROT_EXEC, flags | MAP_FIXED_NOREPLACE);
        if (p == (long)at)
            return p;
        if (p >= 0) { /* a kernel without MAP_FIXED_NOREPLACE put it elsewhere */
            inject(t, SYS_munmap, p, (long)size, 0, 0, 0, 0);
            continue;
        }
        if (p != -EEXIST)
            return p;
    }
    return -ENOSPC;
}

/* Step 3 with every thread stopped: the landing line in `line`; 0, or -1
 * after one error line. */
static int prepare(struct target *t, size_t size, char *line, size_t line_size) {
    /* the zone first: a process that cannot have one keeps its text as it was */
    const char *via = "hugetlb";
    long z = map_near(t, size, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB);
    long hugetlb_err = z < 0 ? -z : 0;
    if (z < 0) {
        via = "thp";
        z = map_near(t, size, MAP_PRIVATE | MAP_ANONYMOUS);
        if (z >= 0 && inject(t, SYS_madvise, z, (long)size, MADV_HUGEPAGE, 0, 0, 0) != 0)
            via = "none";
    }
    if (z < 0) {
        fail("no landing zone of %#zx bytes within rel32 reach below the load base %#lx of "
             "process %d (%s)",
             size, (unsigned long)t->base, (int)t->pid, strerror((int)-z));
        return -1;
    }
    static uint8_t int3[65536];
    memset(int3, 0xCC, sizeof int3); /* a stray jump into unused zone traps */
    for (size_t off = 0; off < size; off += sizeof int3)
        if (put(t, (uintptr_t)z + off, int3, sizeof int3) != 0) {
            fail("cannot fill the landing zone of process %d (%s)", (int)t->pid, strerror(errno));
            return -1;
        }
    inject(t, SYS_mlock, z, (long)size, 0, 0, 0, 0);
    const char *text_via = "remap";
    int breaks = remap_text(t) == 0 ? text_breaks(t) : -2;
    if (breaks == -2) {
        text_via = "fault";
        breaks = privatise(t);
    }
    int priv = breaks != -2;
    int thp_kib = 0;
    unsigned long kps = page_kib(t->pid, (uintptr_t)z, &thp_kib);
    int huge = kps == 2048 || (strcmp(via, "thp") == 0 && (size_t)thp_kib * 1024 >= size);
    if (!huge) /* never pretend: say why the zone has 4 KiB pages */
        printf("codeisland-landing: pid %d warning: huge pages not given (hugetlb: %s; THP: %d kB "
               "of %zu)\n",
               (int)t->pid, hugetlb_err ? strerror((int)hugetlb_err) : "-", thp_kib, size >> 10);
    snprintf(line, line_size,
             "codeisland-landing: pid %d " LANDING_FORMAT, (int)t->pid, t->exe, (unsigned long)t->base, (unsigned long)t->lo,
             (unsigned long)t->hi, priv, (unsigned long)z, size, huge ? "2M" : "4K", via,
             priv ? breaks : -1, text_via);
    return 0;
}

static void wait_exit(pid_t pid) {
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd >= 0) {
        struct pollfd p = {fd, POLLIN, 0};
        while (poll(&p, 1, -1) < 0 && errno == EINTR)
            ;
        close(fd);
    } else { /* an old kernel: poll /proc */
        while (kill(pid, 0) == 0)
            sleep_ms(50);
    }
    printf("codeisland-landing: pid %d exit\n", (int)pid);
}

int main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc != 2) {
        fail("usage: codeisland-attach PID|NAME");
        return 2;
    }
    size_t size = landing_zone_size();
    if (!size) {
        fail("CODEISLAND_LANDING_SIZE must be a multiple of 2 MiB up to 64 MiB");
        return 2;
    }
    struct target t = {0};
    if (!(t.pid = resolve(argv[1])) || inspect(&t) != 0)
        return 1;
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/mem", (int)t.pid);
    if ((t.mem = open(path, O_RDWR | O_CLOEXEC)) < 0) {
        fail("cannot open the memory of process %d (%s)", (int)t.pid, strerror(errno));
        return 1;
    }
    if (find_mappings(&t) != 0)
        return 1;
    if (stop_all(&t) != 0 || save_regs(&t) != 0) {
        int err = errno;
        release(&t);
        fail("cannot stop process %d with ptrace (%s)", (int)t.pid, strerror(err));
        return 1;
    }
    char line[512];
    int rc = prepare(&t, size, line, sizeof line);
    release(&t); /* either way: the process runs on as it was */
    if (rc != 0)
        return 1;
    printf("%s\n", line); /* after the detach: the host finds the process running */
    /* the caller goes on (the guest's init waits for its job next); a child watches the exit */
    pid_t watcher = fork();
    if (watcher == 0)
        wait_exit(t.pid);
    else if (watcher < 0)
        printf("codeisland-landing: pid %d warning: no exit watcher (%s)\n", (int)t.pid,
               strerror(errno));
    return 0;
}
