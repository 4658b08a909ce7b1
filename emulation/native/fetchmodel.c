/*
 * Front-end cost model and per-island counters; see fetchmodel.h for the model.
 * Freestanding apart from the fixed-size state below: no allocation, no libc
 * calls, no recursion.  The object is allocated by the caller (ci_fm_size).
 */
#include "fetchmodel.h"

#define NO_TAG UINT64_MAX
#define HUGE_SHIFT 21u
#define SMALL_SHIFT 12u

/* One set-associative LRU array: tags and last-use stamps, sets x ways. */
typedef struct lru_array {
  uint32_t sets;
  uint32_t ways;
  uint64_t tag[CI_FM_MAX_TLB > CI_FM_MAX_LINES ? CI_FM_MAX_TLB : CI_FM_MAX_LINES];
  uint64_t stamp[CI_FM_MAX_TLB > CI_FM_MAX_LINES ? CI_FM_MAX_TLB : CI_FM_MAX_LINES];
} lru_array;

typedef struct range {
  uint64_t start;
  uint64_t end;
  uint32_t index;
  uint32_t pad;
} range;

struct ci_fm {
  ci_fm_params p;
  uint32_t line_shift;
  uint32_t huge_count;
  uint64_t huge_base[CI_FM_MAX_HUGE];
  uint64_t huge_end[CI_FM_MAX_HUGE];
  uint64_t clock;
  lru_array l1i;
  lru_array tlb4k;
  lru_array tlb2m;
  uint32_t range_count;
  uint32_t last_range;        /* lookup cache: blocks of one island come in runs */
  uint32_t current_island;    /* island of the last block, for data accesses */
  uint32_t islands_seen;      /* 1 + the highest island index of any range since init */
  range ranges[CI_FM_MAX_RANGES];
  ci_fm_totals totals;
  ci_fm_island_counts counts[CI_FM_MAX_ISLANDS];
};

size_t ci_fm_size(void) { return (sizeof(ci_fm) + 15u) & ~(size_t)15u; }

uint32_t ci_fm_abi_version(void) { return CI_FM_ABI_VERSION; }

static void zero(void *dst, size_t n) {
  volatile uint8_t *d = dst; /* volatile: keep clang from emitting a memset call */
  for (size_t i = 0; i < n; i++) d[i] = 0;
}

static int is_pow2(uint32_t v) { return v != 0 && (v & (v - 1u)) == 0; }

static void lru_clear(lru_array *a) {
  uint32_t n = a->sets * a->ways;
  for (uint32_t i = 0; i < n; i++) {
    a->tag[i] = NO_TAG;
    a->stamp[i] = 0;
  }
}

/* entries/ways must divide evenly and fit the fixed table. */
static int lru_setup(lru_array *a, uint32_t entries, uint32_t ways, uint32_t max) {
  if (ways == 0 || ways > CI_FM_MAX_WAYS || entries == 0 || entries > max || entries % ways)
    return -1;
  a->sets = entries / ways;
  a->ways = ways;
  lru_clear(a);
  return 0;
}

/* Looks key up; on a miss evicts the least recently used way.  1 = hit. */
static int lru_access(lru_array *a, uint64_t key, uint64_t now) {
  uint32_t set = (uint32_t)(key % a->sets);
  uint64_t *tag = &a->tag[(size_t)set * a->ways];
  uint64_t *stamp = &a->stamp[(size_t)set * a->ways];
  uint32_t victim = 0;
  for (uint32_t w = 0; w < a->ways; w++) {
    if (tag[w] == key) {
      stamp[w] = now;
      return 1;
    }
    if (stamp[w] < stamp[victim]) victim = w;
  }
  tag[victim] = key;
  stamp[victim] = now;
  return 0;
}

int ci_fm_init(ci_fm *m, const ci_fm_params *p) {
  if (!m || !p) return -1;
  zero(m, sizeof(*m));
  if (!is_pow2(p->l1i_line) || p->l1i_line < 16 || p->l1i_line > 4096) return -2;
  if (p->l1i_size % p->l1i_line) return -3;
  if (lru_setup(&m->l1i, p->l1i_size / p->l1i_line, p->l1i_ways, CI_FM_MAX_LINES)) return -4;
  if (lru_setup(&m->tlb4k, p->itlb4k_entries, p->itlb4k_ways, CI_FM_MAX_TLB)) return -5;
  if (lru_setup(&m->tlb2m, p->itlb2m_entries, p->itlb2m_ways, CI_FM_MAX_TLB)) return -6;
  m->p = *p;
  while ((1u << m->line_shift) < p->l1i_line) m->line_shift++;
  m->current_island = UINT32_MAX;
  return 0;
}

void ci_fm_flush(ci_fm *m) {
  lru_clear(&m->l1i);
  lru_clear(&m->tlb4k);
  lru_clear(&m->tlb2m);
}

/* Only the counts of islands some range has named can be non-zero: zeroing the whole table
 * (3 MiB) took 4 ms, most of a model-bench window. */
void ci_fm_reset_counts(ci_fm *m) {
  zero(&m->totals, sizeof(m->totals));
  zero(m->counts, (size_t)m->islands_seen * sizeof(m->counts[0]));
}

int ci_fm_add_huge(ci_fm *m, uint64_t base, uint64_t size) {
  uint64_t mask = (1ull << HUGE_SHIFT) - 1u;
  if (m->huge_count >= CI_FM_MAX_HUGE || size == 0 || (base & mask) || (size & mask)) return -1;
  if (base > UINT64_MAX - size) return -1;
  m->huge_base[m->huge_count] = base;
  m->huge_end[m->huge_count] = base + size;
  m->huge_count++;
  return 0;
}

void ci_fm_clear_huge(ci_fm *m) { m->huge_count = 0; }

/* Insertion sort keeps this allocation-free; tables are set once per window. */
static void sort_ranges(range *r, uint32_t n) {
  for (uint32_t i = 1; i < n; i++) {
    range key = r[i];
    uint32_t j = i;
    while (j > 0 && r[j - 1].start > key.start) {
      r[j] = r[j - 1];
      j--;
    }
    r[j] = key;
  }
}

int ci_fm_set_ranges(ci_fm *m, const uint64_t *start, const uint64_t *end,
                     const uint32_t *index, uint32_t n) {
  if (n > CI_FM_MAX_RANGES || (n && (!start || !end || !index))) return -1;
  for (uint32_t i = 0; i < n; i++) {
    if (start[i] >= end[i] || index[i] >= CI_FM_MAX_ISLANDS) return -1;
    m->ranges[i].start = start[i];
    m->ranges[i].end = end[i];
    m->ranges[i].index = index[i];
    if (index[i] >= m->islands_seen) m->islands_seen = index[i] + 1u;
  }
  sort_ranges(m->ranges, n);
  for (uint32_t i = 1; i < n; i++)
    if (m->ranges[i].start < m->ranges[i - 1].end) {
      m->range_count = 0;
      return -2;
    }
  m->range_count = n;
  m->last_range = 0;
  return 0;
}

static uint32_t find_island(ci_fm *m, uint64_t addr) {
  if (m->range_count == 0) return UINT32_MAX;
  range *last = &m->ranges[m->last_range];
  if (addr >= last->start && addr < last->end) return last->index;
  uint32_t lo = 0, hi = m->range_count; /* first range with start > addr */
  while (lo < hi) {
    uint32_t mid = lo + (hi - lo) / 2u;
    if (m->ranges[mid].start <= addr) lo = mid + 1u;
    else hi = mid;
  }
  if (lo == 0 || addr >= m->ranges[lo - 1u].end) return UINT32_MAX;
  m->last_range = lo - 1u;
  return m->ranges[lo - 1u].index;
}

static int in_huge(const ci_fm *m, uint64_t addr) {
  for (uint32_t i = 0; i < m->huge_count; i++)
    if (addr >= m->huge_base[i] && addr < m->huge_end[i]) return 1;
  return 0;
}

/* One line fetch: iTLB for its page, then L1i.  Returns the cycles it cost. */
static uint64_t fetch_line(ci_fm *m, uint64_t line_addr, ci_fm_island_counts *c) {
  uint64_t cycles = m->p.fetch_cycles;
  uint64_t now = ++m->clock;
  if (in_huge(m, line_addr)) {
    if (!lru_access(&m->tlb2m, line_addr >> HUGE_SHIFT, now)) {
      m->totals.itlb2m_misses++;
      cycles += m->p.itlb2m_miss_cycles;
      if (c) c->itlb_misses++;
    }
  } else if (!lru_access(&m->tlb4k, line_addr >> SMALL_SHIFT, now)) {
    m->totals.itlb4k_misses++;
    cycles += m->p.itlb4k_miss_cycles;
    if (c) c->itlb_misses++;
  }
  if (!lru_access(&m->l1i, line_addr >> m->line_shift, now)) {
    m->totals.l1i_misses++;
    cycles += m->p.l1i_miss_cycles;
    if (c) c->l1i_misses++;
  }
  m->totals.lines++;
  return cycles;
}

static void feed_block(ci_fm *m, uint64_t addr, uint32_t size) {
  if (size == 0) return;
  uint32_t island = find_island(m, addr);
  ci_fm_island_counts *c = island == UINT32_MAX ? 0 : &m->counts[island];
  m->current_island = island;
  uint64_t first = addr >> m->line_shift;
  uint64_t last = (addr + (uint64_t)size - 1u) >> m->line_shift;
  if (addr > UINT64_MAX - ((uint64_t)size - 1u)) last = UINT64_MAX >> m->line_shift;
  uint64_t cycles = 0;
  for (uint64_t line = first; line <= last; line++) cycles += fetch_line(m, line << m->line_shift, c);
  m->totals.blocks++;
  m->totals.bytes += size;
  m->totals.cycles += cycles;
  if (c) {
    c->blocks++;
    c->bytes += size;
    c->cycles += cycles;
  } else {
    m->totals.unattributed_blocks++;
  }
}

void ci_fm_feed(ci_fm *m, const uint64_t *addr, const uint32_t *size, size_t n) {
  for (size_t i = 0; i < n; i++) feed_block(m, addr[i], size[i]);
}

void ci_fm_totals_get(const ci_fm *m, ci_fm_totals *out) { *out = m->totals; }

uint32_t ci_fm_island_counts_get(const ci_fm *m, ci_fm_island_counts *out, uint32_t n) {
  if (n > CI_FM_MAX_ISLANDS) n = CI_FM_MAX_ISLANDS;
  for (uint32_t i = 0; i < n; i++) out[i] = m->counts[i];
  return n;
}

void ci_fm_block_hook(void *uc, uint64_t address, uint32_t size, void *user) {
  (void)uc;
  feed_block((ci_fm *)user, address, size);
}

void ci_fm_mem_hook(void *uc, int type, uint64_t address, int size, int64_t value, void *user) {
  (void)uc;
  (void)type;
  (void)address;
  (void)size;
  (void)value;
  ci_fm *m = (ci_fm *)user;
  m->totals.mem_accesses++;
  if (m->current_island != UINT32_MAX) m->counts[m->current_island].mem_accesses++;
}
