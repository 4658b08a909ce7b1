/*
 * codeisland front-end cost model and per-island execution counter (native).
 *
 * This is a MODEL of an x86 instruction front end, not a measurement: an L1
 * instruction cache (size, ways, line; LRU), an instruction TLB with separate
 * 4 KiB and 2 MiB arrays (entries, ways; LRU) and fixed miss penalties.  It is
 * fed with the fetch stream as basic blocks [address, address + size):
 *   - by Unicorn through ci_fm_block_hook (a UC_HOOK_BLOCK callback registered
 *     with uc_hook_add from the C API, so no Python runs per block), or
 *   - in bulk through ci_fm_feed (trace buffers, tests).
 * Every block touches the cache lines it spans; each line is one fetch: an
 * iTLB lookup for its page (2 MiB when the address lies in a registered huge
 * region, else 4 KiB) and an L1i lookup.  Modeled front-end cycles:
 *   lines * fetch_cycles + l1i_misses * l1i_miss_cycles
 *   + itlb4k_misses * itlb4k_miss_cycles + itlb2m_misses * itlb2m_miss_cycles
 *
 * Islands are ranges [start, end) with an island index; the original range and
 * any relocated copy may both map to the same index, so counts follow an
 * island wherever it runs.  Tables are fixed-size; nothing is allocated.
 */
#ifndef CODEISLAND_FETCHMODEL_H
#define CODEISLAND_FETCHMODEL_H

#include <stddef.h>
#include <stdint.h>

#define CI_FM_ABI_VERSION   1u
#define CI_FM_MAX_LINES     8192u   /* L1i lines (e.g. 512 KiB of 64-byte lines) */
#define CI_FM_MAX_TLB       4096u   /* entries per TLB array */
#define CI_FM_MAX_WAYS      64u
#define CI_FM_MAX_HUGE      16u     /* 2 MiB-page regions */
#define CI_FM_MAX_RANGES    65536u  /* island address ranges */
#define CI_FM_MAX_ISLANDS   65536u  /* island indexes */

typedef struct ci_fm_params {
  uint32_t l1i_size;           /* bytes */
  uint32_t l1i_ways;
  uint32_t l1i_line;           /* bytes, power of two */
  uint32_t itlb4k_entries;
  uint32_t itlb4k_ways;
  uint32_t itlb2m_entries;
  uint32_t itlb2m_ways;
  uint32_t fetch_cycles;       /* per line fetched (hit) */
  uint32_t l1i_miss_cycles;
  uint32_t itlb4k_miss_cycles;
  uint32_t itlb2m_miss_cycles;
  uint32_t reserved;
} ci_fm_params;

typedef struct ci_fm_totals {
  uint64_t blocks;
  uint64_t bytes;
  uint64_t lines;
  uint64_t l1i_misses;
  uint64_t itlb4k_misses;
  uint64_t itlb2m_misses;
  uint64_t cycles;
  uint64_t mem_accesses;       /* data accesses seen by ci_fm_mem_hook */
  uint64_t unattributed_blocks;/* blocks outside every island range */
} ci_fm_totals;

/* Per-island counters, indexed by island index. */
typedef struct ci_fm_island_counts {
  uint64_t blocks;
  uint64_t bytes;
  uint64_t l1i_misses;
  uint64_t itlb_misses;
  uint64_t cycles;
  uint64_t mem_accesses;
} ci_fm_island_counts;

typedef struct ci_fm ci_fm;

/* Size of the model object the caller allocates (aligned to 16). */
size_t ci_fm_size(void);
uint32_t ci_fm_abi_version(void);
/* 0 on success; negative when a parameter is out of range (see ci_fm_init). */
int ci_fm_init(ci_fm *m, const ci_fm_params *p);
/* Clears caches and TLBs (cold front end); counters are kept. */
void ci_fm_flush(ci_fm *m);
/* Clears totals and per-island counters; cache state is kept. */
void ci_fm_reset_counts(ci_fm *m);
/* Registers [base, base + size) as mapped with 2 MiB pages.  0 or -1. */
int ci_fm_add_huge(ci_fm *m, uint64_t base, uint64_t size);
void ci_fm_clear_huge(ci_fm *m);
/* Replaces the island range table: n ranges, need not be sorted, must not
 * overlap, index < CI_FM_MAX_ISLANDS.  0, or -1 (bad range), -2 (overlap). */
int ci_fm_set_ranges(ci_fm *m, const uint64_t *start, const uint64_t *end,
                     const uint32_t *index, uint32_t n);
void ci_fm_feed(ci_fm *m, const uint64_t *addr, const uint32_t *size, size_t n);
void ci_fm_totals_get(const ci_fm *m, ci_fm_totals *out);
/* Copies counters of islands [0, n) into out; returns how many were copied. */
uint32_t ci_fm_island_counts_get(const ci_fm *m, ci_fm_island_counts *out, uint32_t n);

/* Unicorn callbacks (signatures of uc_cb_hookcode_t / uc_cb_hookmem_t). */
void ci_fm_block_hook(void *uc, uint64_t address, uint32_t size, void *user);
void ci_fm_mem_hook(void *uc, int type, uint64_t address, int size, int64_t value, void *user);

#endif
