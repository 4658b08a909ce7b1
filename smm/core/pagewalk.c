/*
 * Address spaces: the engine's own 4-level page walk (plan.h, ci_island).
 *
 * A virtual island's addresses are turned into physical ones here and
 * nowhere else.  The walk starts at the CR3 it is given (the plan's, or a
 * CPU's saved one), reads each of the four levels' entries once (one 8-byte
 * load, then only the local copy is looked at), and checks every table page
 * and every final page before it is used: SMRAM and the driver's own pages
 * are never read as tables nor accepted as final pages; under the restricted
 * policy a table page must lie inside a registered region (reading anything
 * else would fault in SMM after lock), and a final page must lie inside a
 * region with the role's flags, exactly as a physical pointer would.
 * Leaves of 4 KiB, 2 MiB (PD.PS) and 1 GiB (PDPT.PS) are handled; PS in a
 * PML4 entry is reserved and refused as not present.  No recursion: one
 * loop over four levels, and ranges are walked page by page with a bound
 * set by their length (at most CI_MAX_ISLAND_SIZE / 4 KiB + 1 pages).
 */
#include "ci_host.h"
#include "internal.h"
#include "mem.h"
#include "range.h"

#define PTE_P   0x1ULL
#define PTE_US  0x4ULL
#define PTE_PS  0x80ULL
#define PAGE_4K 0x1000ULL

int ci_cr3_same(uint64_t a, uint64_t b) {
  return (a & CI_CR3_ADDR_MASK) == (b & CI_CR3_ADDR_MASK);
}

int ci_canonical(uint64_t va) { return (uint64_t)((int64_t)(va << 16) >> 16) == va; }

/* Does [base, base+len) overlap a region with exactly these flags? */
static int overlaps_kind(const ci_engine *e, uint64_t base, uint64_t len, uint32_t flags) {
  for (uint32_t i = 0; i < e->region_count; i++)
    if (e->regions[i].flags == flags &&
        ci_range_overlap(base, len, e->regions[i].base, e->regions[i].size))
      return 1;
  return 0;
}

/* What no walk may reach under either policy: SMRAM (`in_smram`), then the
 * driver's own pages. */
static ci_status forbidden(const ci_engine *e, uint64_t base, uint64_t len, ci_status in_smram) {
  if (overlaps_kind(e, base, len, CI_REGION_SMRAM))
    return in_smram;
  if (overlaps_kind(e, base, len, CI_REGION_DRIVER))
    return CI_ST_WALK_DRIVER;
  return CI_ST_OK;
}

/* A table page may be read: never SMRAM or the driver's pages; restricted,
 * only inside a registered region (SOURCE, DEST or STACK). */
static ci_status check_table(const ci_engine *e, uint64_t table) {
  ci_status st = forbidden(e, table, PAGE_4K, CI_ST_WALK_TABLE_SMRAM);
  if (st != CI_ST_OK || e->memory_policy == CI_MEM_UNRESTRICTED)
    return st;
  for (uint32_t i = 0; i < e->region_count; i++)
    if (ci_range_inside(table, PAGE_4K, e->regions[i].base, e->regions[i].size))
      return CI_ST_OK; /* regions never overlap: this one is not SMRAM/DRIVER */
  return CI_ST_WALK_TABLE_OUTSIDE;
}

/* The bytes [pa, pa+len) a walk landed on, for a role needing `need`. */
static ci_status check_final(const ci_engine *e, uint64_t pa, uint64_t len, uint32_t need,
                             ci_status outside) {
  if (!ci_range_valid(pa, len))
    return CI_ST_RANGE_WRAP;
  ci_status st = forbidden(e, pa, len, CI_ST_WALK_PAGE_SMRAM);
  if (st != CI_ST_OK || e->memory_policy == CI_MEM_UNRESTRICTED)
    return st;
  return ci_region_check(e, pa, len, need, outside);
}

ci_status ci_walk_addr(const ci_engine *e, uint32_t space, uint64_t cr3, uint64_t va,
                       uint64_t *pa, uint64_t *room) {
  if (!ci_canonical(va))
    return CI_ST_NONCANONICAL;
  uint64_t table = cr3 & CI_CR3_ADDR_MASK;
  for (uint32_t level = 0; level < 4u; level++) {
    uint32_t shift = 39u - 9u * level;
    ci_status st = check_table(e, table);
    if (st != CI_ST_OK)
      return st;
    const uint8_t *p = ci_host_map(table + 8u * ((va >> shift) & 511u), 8);
    if (!p)
      return CI_ST_INTERNAL; /* the host cannot reach a page the policy admits */
    uint64_t entry = *(volatile const ci_u64u *)p; /* read once */
    if (!(entry & PTE_P) || (level == 0 && (entry & PTE_PS)))
      return CI_ST_PAGE_NOT_PRESENT;
    if (space == CI_SPACE_USER && !(entry & PTE_US))
      return CI_ST_SUPERVISOR_PAGE;
    if (level == 3u || (entry & PTE_PS)) { /* leaf: 4 KiB, or 2 MiB / 1 GiB */
      uint64_t size = 1ULL << shift;
      uint64_t base = entry & CI_CR3_ADDR_MASK & ~(size - 1u); /* drops PAT (bit 12) */
      *pa = base + (va & (size - 1u));
      *room = size - (va & (size - 1u));
      return CI_ST_OK;
    }
    table = entry & CI_CR3_ADDR_MASK;
  }
  return CI_ST_INTERNAL; /* the loop always ends at level 3 */
}

ci_status ci_walk_range(const ci_engine *e, uint32_t space, uint64_t cr3, uint64_t va,
                        uint64_t len, uint32_t need, ci_status outside, uint64_t *pa) {
  if (!ci_range_valid(va, len) || len > CI_WALK_MAX_LEN)
    return CI_ST_RANGE_WRAP;
  if (!ci_canonical(va) || !ci_canonical(va + (len - 1u)))
    return CI_ST_NONCANONICAL; /* both ends canonical: the hole is not crossed */
  uint64_t done = 0, first = 0;
  while (done < len) { /* at most len / 4 KiB + 1 rounds */
    uint64_t piece_pa, room;
    ci_status st = ci_walk_addr(e, space, cr3, va + done, &piece_pa, &room);
    if (st != CI_ST_OK)
      return st;
    uint64_t piece = room < len - done ? room : len - done;
    st = check_final(e, piece_pa, piece, need, outside); /* before contiguity: */
    if (st != CI_ST_OK)                                  /* the graver refusal */
      return st;
    if (done == 0)
      first = piece_pa;
    else if (piece_pa != first + done)
      return CI_ST_PAGES_DISCONTIGUOUS;
    done += piece;
  }
  *pa = first;
  return CI_ST_OK;
}

ci_status ci_place(const ci_engine *e, const ci_island *isl, uint64_t addr, uint64_t len,
                   uint32_t need, ci_status outside, uint64_t *pa) {
  if (isl->space == CI_SPACE_PHYSICAL) {
    *pa = addr;
    return ci_region_check(e, addr, len, need, outside);
  }
  return ci_walk_range(e, isl->space, isl->cr3, addr, len, need, outside, pa);
}

ci_status ci_engine_set_memory_policy(ci_engine *e, uint32_t policy) {
  if (e->locked)
    return CI_ST_LOCKED;
  if (policy != CI_MEM_RESTRICTED && policy != CI_MEM_UNRESTRICTED)
    return CI_ST_BAD_REQUEST;
  e->memory_policy = policy;
  return CI_ST_OK;
}

/* Re-walk the pending plan's virtual islands and call sites (page tables
 * may have changed since an earlier SMI): the same physical addresses, or
 * MAPPING_CHANGED (or the walk's own refusal) and nothing touched. */
ci_status ci_space_recheck(const ci_engine *e, ci_work *w) {
  const ci_plan_view *v = &e->plan;
  const ci_plan_phys *ph = v->phys;
  uint64_t pa;
  for (uint32_t i = 0; i < v->header->island_count; i++) {
    const ci_island *isl = &v->islands[i];
    if (isl->space == CI_SPACE_PHYSICAL)
      continue;
    w->failed_index = i;
    ci_status st = ci_place(e, isl, isl->src, isl->size, CI_REGION_SOURCE,
                            CI_ST_SRC_NOT_REGISTERED, &pa);
    if (st == CI_ST_OK && pa != ph->src[i])
      st = CI_ST_MAPPING_CHANGED;
    if (st == CI_ST_OK)
      st = ci_place(e, isl, isl->dst, isl->size, CI_REGION_DEST, CI_ST_DST_NOT_REGISTERED, &pa);
    if (st == CI_ST_OK && pa != ph->dst[i])
      st = CI_ST_MAPPING_CHANGED;
    if (st != CI_ST_OK)
      return st;
  }
  for (uint32_t k = 0; k < v->header->callsite_count; k++) {
    const ci_callsite *c = &v->callsites[k];
    const ci_island *isl = &v->islands[c->island];
    if (isl->space == CI_SPACE_PHYSICAL)
      continue;
    w->failed_index = k;
    ci_status st = ci_place(e, isl, c->insn, 5, CI_REGION_SOURCE, CI_ST_CALLSITE_REGION, &pa);
    if (st == CI_ST_OK && pa != ph->insn[k])
      st = CI_ST_MAPPING_CHANGED;
    if (st != CI_ST_OK)
      return st;
  }
  w->failed_index = CI_NO_INDEX;
  return CI_ST_OK;
}

/* Do generation g's virtual map entries still walk to the physical pages
 * they were committed at?  A process that exited (its tables freed or
 * reused) or remapped its pages answers with the walk's status or
 * MAPPING_CHANGED: undoing it would write into pages that are no longer
 * its own, so the caller writes nothing. */
ci_status ci_generation_recheck(const ci_engine *e, const ci_generation *g, ci_work *w) {
  uint64_t pa;
  for (uint32_t i = 0; i < g->islands; i++) {
    const ci_map_entry *m = &e->map[g->map_first + i];
    const ci_map_space *ms = &e->map_space[g->map_first + i];
    if (ms->space == CI_SPACE_PHYSICAL)
      continue;
    w->failed_index = i;
    ci_status st = ci_walk_range(e, ms->space, ms->cr3, m->orig, m->size, CI_REGION_SOURCE,
                                 CI_ST_SRC_NOT_REGISTERED, &pa);
    if (st == CI_ST_OK && pa != ms->orig_pa)
      st = CI_ST_MAPPING_CHANGED;
    if (st == CI_ST_OK)
      st = ci_walk_range(e, ms->space, ms->cr3, m->cur, m->size, CI_REGION_DEST,
                         CI_ST_DST_NOT_REGISTERED, &pa);
    if (st == CI_ST_OK && pa != ms->cur_pa)
      st = CI_ST_MAPPING_CHANGED;
    if (st != CI_ST_OK)
      return st;
  }
  w->failed_index = CI_NO_INDEX;
  return CI_ST_OK;
}
