/* The region allow-list: registered before lock, consulted by every check. */
#include "internal.h"
#include "range.h"

#define CI_REGION_FLAGS_KNOWN \
  (CI_REGION_SOURCE | CI_REGION_DEST | CI_REGION_STACK | CI_REGION_SMRAM | CI_REGION_DRIVER)
#define CI_REGION_FORBIDDEN (CI_REGION_SMRAM | CI_REGION_DRIVER) /* each stands alone */

ci_status ci_region_add(ci_engine *e, uint64_t base, uint64_t size, uint32_t flags) {
  if (e->locked)
    return CI_ST_LOCKED;
  if (!ci_range_valid(base, size) || flags == 0 || (flags & ~CI_REGION_FLAGS_KNOWN) ||
      ((flags & CI_REGION_FORBIDDEN) && flags != CI_REGION_SMRAM && flags != CI_REGION_DRIVER) ||
      e->region_count >= CI_MAX_REGIONS)
    return CI_ST_REGION_INVALID;
  for (uint32_t i = 0; i < e->region_count; i++)
    if (ci_range_overlap(base, size, e->regions[i].base, e->regions[i].size))
      return CI_ST_REGION_INVALID;
  ci_region_info *r = &e->regions[e->region_count++];
  r->base = base;
  r->size = size;
  r->flags = flags;
  r->reserved = 0;
  return CI_ST_OK;
}

void ci_engine_lock(ci_engine *e) { e->locked = 1; }

ci_status ci_region_check(const ci_engine *e, uint64_t base, uint64_t len, uint32_t need,
                          ci_status outside) {
  if (!ci_range_valid(base, len))
    return CI_ST_RANGE_WRAP;
  /* One pass.  Regions never overlap (ci_region_add), so a range inside a
   * region other than SMRAM touches no SMRAM region and may be accepted at
   * once; a range inside an SMRAM region overlaps it, and that test comes
   * first.  Same answer as "any SMRAM overlap, then any containing region". */
  for (uint32_t i = 0; i < e->region_count; i++) {
    const ci_region_info *r = &e->regions[i];
    if ((r->flags & CI_REGION_SMRAM) && ci_range_overlap(base, len, r->base, r->size))
      return CI_ST_TOUCHES_SMRAM;
    if ((r->flags & need) == need && ci_range_inside(base, len, r->base, r->size))
      return CI_ST_OK;
  }
  return outside;
}

int ci_region_end(const ci_engine *e, uint64_t addr, uint32_t need, uint64_t *end) {
  for (uint32_t i = 0; i < e->region_count; i++) {
    const ci_region_info *r = &e->regions[i];
    if ((r->flags & need) == need && ci_range_has(r->base, r->size, addr)) {
      *end = r->base + (r->size - 1u); /* last byte: never wraps */
      return 1;
    }
  }
  return 0;
}
