/* What the landing library (landing.c, inside the process) and the attacher (attach.c, from
 * outside it) both read from /proc, and the line both print: one definition for the two. */
#ifndef CODEISLAND_GUEST_PROCFS_H
#define CODEISLAND_GUEST_PROCFS_H

#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define HUGE_2M (2ul << 20)
#define PAGE_4K 4096ul
#define REACH (1ul << 31) /* rel32 */

/* The landing line after "codeisland-landing: pid P " (qemu/linux/program.py parses it). */
#define LANDING_FORMAT                                                                          \
    "exe %s base %#lx text %#lx-%#lx private %d zone %#lx size %#zx page %s via %s "            \
    "text_breaks %d text_via %s"

/* The kernel's page size in kB for the mapping at va in this smaps file (2048 for hugetlb, else
 * 4), and its AnonHugePages (a mapped THP); 0 when the file cannot be read. */
static unsigned long smaps_page_kib(const char *smaps, uintptr_t va, int *thp_kib) {
    FILE *f = fopen(smaps, "re");
    *thp_kib = 0;
    if (!f)
        return 0;
    char line[256];
    int inside = 0;
    unsigned long kps = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi, v;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) {
            inside = lo <= va && va < hi;
            continue;
        }
        if (!inside)
            continue;
        if (sscanf(line, "KernelPageSize: %lu kB", &v) == 1)
            kps = v;
        else if (sscanf(line, "AnonHugePages: %lu kB", &v) == 1)
            *thp_kib = (int)v;
    }
    fclose(f);
    return kps;
}

/* Physical discontinuities between the consecutive pages of [lo, hi) in this pagemap file
 * (frame numbers only root sees), or -1 when unknown (not present, or hidden). */
static int pagemap_breaks(const char *pagemap, uintptr_t lo, uintptr_t hi) {
    int fd = open(pagemap, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int breaks = 0;
    uint64_t prev = 0;
    for (uintptr_t p = lo; p < hi; p += PAGE_4K) {
        uint64_t e;
        if (pread(fd, &e, sizeof e, (off_t)(p / PAGE_4K * sizeof e)) != (ssize_t)sizeof e ||
            !(e >> 63) || !(e & ((1ull << 55) - 1))) {
            breaks = -1;
            break;
        }
        uint64_t pfn = e & ((1ull << 55) - 1);
        if (p != lo && pfn != prev + 1)
            breaks++;
        prev = pfn;
    }
    close(fd);
    return breaks;
}

/* CODEISLAND_LANDING_SIZE (default 2 MiB, a multiple of it up to 64 MiB), or 0 when invalid. */
static size_t landing_zone_size(void) {
    const char *s = getenv("CODEISLAND_LANDING_SIZE");
    if (!s || !*s)
        return HUGE_2M;
    char *end;
    unsigned long v = strtoul(s, &end, 0);
    if (*end || v == 0 || v % HUGE_2M || v > (64ul << 20))
        return 0;
    return v;
}

#endif
