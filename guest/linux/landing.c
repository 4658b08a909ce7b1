/* codeisland landing zone: an LD_PRELOAD library that prepares an unmodified, dynamically
 * linked program for relocation of its own code from SMM, without rebuilding it.
 *
 *   LD_PRELOAD=/lib/codeisland-landing.so PROGRAM ARGS...
 *
 * Before main() it
 *   1. privatises the program's text pages (mprotect RW, rewrite one byte per page, mprotect
 *      back): the SMI handler writes physical pages, and a text page still shared with the page
 *      cache is the file itself and every other process running it; after this each page is the
 *      process's own anonymous copy (shared again only with its own fork children).  The engine
 *      copies an island from one physical range, so the copy is wanted physically contiguous:
 *      first the text is copied into a transparent huge page and moved over its own addresses
 *      (text_via remap), else each page is write-faulted, a few times in alternating order
 *      (text_via fault); the breaks left are reported (text_breaks, from /proc/self/pagemap,
 *      -1 unknown): an island across a break cannot be moved;
 *   2. maps the landing zone (default 2 MiB, CODEISLAND_LANDING_SIZE a multiple of it) RWX within
 *      rel32 reach below the program's load base: MAP_HUGETLB first, else an aligned anonymous
 *      mapping with MADV_HUGEPAGE (THP); /proc/self/smaps says which took effect, and a zone of
 *      4 KiB pages is reported as such (the host then plans within one page: the engine needs
 *      each copy physically contiguous);
 *   3. fills the zone with int3 and locks zone and text in memory;
 *   4. writes one line to /dev/console (never to the program's stdout/stderr; to the file
 *      CODEISLAND_LANDING_LOG names instead, if set):
 *      codeisland-landing: pid P exe PATH base B text LO-HI private 0|1 zone Z size S page 2M|4K
 *      via hugetlb|thp|none text_breaks N text_via remap|fault
 * A failure is one "codeisland-landing: pid P error: ..." line; the program runs on unharmed.
 * fork: the child inherits zone and text (copy-on-write, the same physical pages until one of
 * them writes, which neither does), so a copy the parent's plan placed is valid in the child too;
 * the child reports itself with a "forked" line.  Exit: a "exit" line from the destructor.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "procfs.h"

#define PRIVATE_ATTEMPTS 8

struct text_range {
    uintptr_t base; /* the mapping of the executable at file offset 0 */
    uintptr_t lo, hi; /* its executable mapping */
    char exe[256];
};

static void say(const char *fmt, ...) {
    char line[512];
    va_list ap;
    int n = snprintf(line, sizeof line, "codeisland-landing: pid %d ", (int)getpid());
    va_start(ap, fmt);
    n += vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
    va_end(ap);
    if (n > (int)sizeof line - 2)
        n = (int)sizeof line - 2;
    line[n++] = '\n';
    const char *to = getenv("CODEISLAND_LANDING_LOG"); /* tests on the host: a file */
    int fd = to && *to ? open(to, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644)
                       : open("/dev/console", O_WRONLY | O_NOCTTY | O_CLOEXEC);
    if (fd < 0)
        return; /* no console: nothing to tell, and the program must not notice */
    ssize_t w = write(fd, line, (size_t)n);
    (void)w;
    close(fd);
}

static int find_text(struct text_range *t) {
    ssize_t n = readlink("/proc/self/exe", t->exe, sizeof t->exe - 1);
    if (n <= 0)
        return -1;
    t->exe[n] = 0;
    FILE *f = fopen("/proc/self/maps", "re");
    if (!f)
        return -1;
    char line[512];
    t->base = t->lo = t->hi = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi, off;
        char perms[8];
        int path = 0;
        if (sscanf(line, "%lx-%lx %7s %lx %*s %*s %n", &lo, &hi, perms, &off, &path) < 4 || !path)
            continue;
        char *name = line + path;
        name[strcspn(name, "\n")] = 0;
        if (strcmp(name, t->exe) != 0)
            continue;
        if (off == 0 && !t->base)
            t->base = lo;
        if (perms[2] == 'x' && !t->lo) {
            t->lo = lo;
            t->hi = hi;
        }
    }
    fclose(f);
    return t->base && t->lo ? 0 : -1;
}

/* Physical discontinuities between the text's consecutive pages, or -1 when unknown. */
static int text_breaks(uintptr_t lo, uintptr_t hi) {
    return pagemap_breaks("/proc/self/pagemap", lo, hi);
}

/* The kernel's page size for the mapping at va: 2048 for hugetlb or a mapped THP, else 4. */
static unsigned long zone_page_kib(uintptr_t va, int *thp_kib) {
    return smaps_page_kib("/proc/self/smaps", va, thp_kib);
}

/* Write-fault every text page (a write through a writable mapping breaks the page-cache
 * sharing), in ascending or descending order. */
static void touch_text(const struct text_range *t, int descending) {
    size_t pages = (t->hi - t->lo) / PAGE_4K;
    for (size_t k = 0; k < pages; k++) {
        uintptr_t p = t->lo + PAGE_4K * (descending ? pages - 1 - k : k);
        volatile unsigned char *b = (volatile unsigned char *)p;
        *b = *b;
    }
}

/* The text copied into one transparent huge page and that part of it moved over the text's
 * addresses (mremap splits the huge mapping into 4 KiB entries; the frames stay adjacent): the
 * process's own, physically contiguous text.  The mapping is anonymous afterwards (no file name
 * in /proc/PID/maps).  0 on success; -1 (nothing changed) when no huge page is given. */
static int remap_text(const struct text_range *t) {
    size_t len = t->hi - t->lo;
    if (len > HUGE_2M)
        return -1;
    uint8_t *raw = mmap(NULL, 2 * HUGE_2M, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                        -1, 0);
    if (raw == MAP_FAILED)
        return -1;
    uint8_t *buf = (uint8_t *)(((uintptr_t)raw + HUGE_2M - 1) & ~(HUGE_2M - 1));
    int thp = 0;
    if (madvise(buf, HUGE_2M, MADV_HUGEPAGE) == 0) {
        buf[0] = 0; /* one fault: a huge page if the kernel gives one */
        (void)zone_page_kib((uintptr_t)buf, &thp);
    }
    if (thp < (int)(HUGE_2M >> 10)) {
        munmap(raw, 2 * HUGE_2M);
        return -1;
    }
    memcpy(buf, (const void *)t->lo, len);
    if (mprotect(buf, len, PROT_READ | PROT_EXEC) != 0 ||
        mremap(buf, len, len, MREMAP_MAYMOVE | MREMAP_FIXED, (void *)t->lo) == MAP_FAILED) {
        munmap(raw, 2 * HUGE_2M);
        return -1;
    }
    munmap(raw, (size_t)(buf - raw)); /* what is left of the scratch mapping */
    munmap(buf + len, 2 * HUGE_2M - (size_t)(buf - raw) - len);
    (void)mlock((void *)t->lo, len);
    return 0;
}

/* Give the process its own copy of every text page, R-X again afterwards.  The SMI handler
 * copies an island from one physical range, so the copies are wanted physically contiguous:
 * the page allocator hands out runs of adjacent frames, in one order or the other, so a few
 * attempts in alternating order (dropping the copies in between) usually get one run.
 * Returns the discontinuities left (-1 unknown), or -2 on failure. */
static int privatise(const struct text_range *t) {
    size_t len = t->hi - t->lo;
    if (mprotect((void *)t->lo, len, PROT_READ | PROT_WRITE | PROT_EXEC) != 0)
        return -2;
    int breaks = -1;
    for (int attempt = 0; attempt < PRIVATE_ATTEMPTS; attempt++) {
        if (attempt && madvise((void *)t->lo, len, MADV_DONTNEED) != 0)
            break; /* keep the copies there are */
        touch_text(t, attempt & 1);
        breaks = text_breaks(t->lo, t->hi);
        if (breaks <= 0)
            break;
    }
    if (mprotect((void *)t->lo, len, PROT_READ | PROT_EXEC) != 0)
        return -2;
    (void)mlock((void *)t->lo, len);
    return breaks;
}

/* Addresses to try: 2 MiB aligned, below the load base, within rel32 reach of all the text. */
static void *map_near(uintptr_t base, uintptr_t text_hi, size_t size, int flags) {
    for (uintptr_t k = 1; k <= 64; k++) {
        uintptr_t at = ((base & ~(HUGE_2M - 1)) - k * HUGE_2M - size);
        if (at >= base || text_hi - at >= REACH)
            break;
        void *p = mmap((void *)at, size, PROT_READ | PROT_WRITE | PROT_EXEC,
                       flags | MAP_FIXED_NOREPLACE, -1, 0);
        if (p != MAP_FAILED)
            return p;
        if (errno != EEXIST)
            return MAP_FAILED;
    }
    errno = ENOSPC;
    return MAP_FAILED;
}

static void on_fork_child(void) {
    say("forked from %d (zone and text inherited copy-on-write: the same physical pages)",
        (int)getppid());
}

static void __attribute__((destructor)) landing_exit(void) {
    say("exit");
}

static void __attribute__((constructor)) landing_init(void) {
    struct text_range t;
    if (find_text(&t) != 0) {
        say("error: the executable's text mapping is not in /proc/self/maps");
        return;
    }
    const char *text_via = "remap";
    int breaks = remap_text(&t) == 0 ? text_breaks(t.lo, t.hi) : -2;
    if (breaks == -2) {
        text_via = "fault";
        breaks = privatise(&t);
    }
    int priv = breaks != -2;
    if (!priv)
        say("error: could not privatise the text pages (%s); they stay shared", strerror(errno));
    size_t size = landing_zone_size();
    if (!size) {
        say("error: CODEISLAND_LANDING_SIZE must be a multiple of 2 MiB up to 64 MiB");
        return;
    }
    const char *via = "hugetlb";
    void *z = map_near(t.base, t.hi, size, MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB);
    int hugetlb_errno = z == MAP_FAILED ? errno : 0;
    if (z == MAP_FAILED) {
        via = "thp";
        z = map_near(t.base, t.hi, size, MAP_PRIVATE | MAP_ANONYMOUS);
        if (z != MAP_FAILED && madvise(z, size, MADV_HUGEPAGE) != 0)
            via = "none";
    }
    if (z == MAP_FAILED) {
        say("error: no landing zone of %#zx bytes within rel32 reach of the text (%s)", size,
            strerror(errno));
        return;
    }
    memset(z, 0xCC, size); /* int3: a stray jump into unused zone traps */
    (void)mlock(z, size);
    int thp_kib = 0;
    unsigned long kps = zone_page_kib((uintptr_t)z, &thp_kib);
    int huge = kps == 2048 || (strcmp(via, "thp") == 0 && (size_t)thp_kib * 1024 >= size);
    if (!huge) /* never pretend: say why the zone has 4 KiB pages */
        say("warning: huge pages not given (hugetlb: %s; THP: %d kB of %zu)",
            hugetlb_errno ? strerror(hugetlb_errno) : "-", thp_kib, size >> 10);
    if (pthread_atfork(NULL, NULL, on_fork_child) != 0)
        say("error: pthread_atfork failed; forks are not reported");
    say(LANDING_FORMAT, t.exe, (unsigned long)t.base, (unsigned long)t.lo, (unsigned long)t.hi, priv,
        (unsigned long)(uintptr_t)z, size, huge ? "2M" : "4K", via, priv ? breaks : -1, text_via);
}
