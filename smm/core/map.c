/*
 * The versioned address map: one entry per committed island (original range,
 * where it runs now, generation).  Entries of rolled-back generations stay as
 * history until their room is needed; then they are dropped oldest first.
 * Retired entries (rolled back with CI_PLAN_KEEP_COPIES: the copy's bytes
 * stay as valid code) are never dropped: they reserve the copy's range for
 * the rest of the boot.
 */
#include "internal.h"

uint32_t ci_map_live_count(const ci_engine *e) {
  uint32_t n = 0;
  for (uint32_t m = 0; m < e->map_count; m++)
    n += (e->map[m].flags & (CI_MAP_ACTIVE | CI_MAP_RETIRED)) != 0;
  return n;
}

uint32_t ci_newest_generation(const ci_engine *e) {
  return e->gen_count ? e->gens[e->gen_count - 1u].number : 0;
}

/* Drop rolled-back entries that are not retired, keeping order; generations re-find their first
 * entry (entries of one generation are contiguous and stay so). */
static void compact(ci_engine *e) {
  uint32_t out = 0;
  for (uint32_t m = 0; m < e->map_count; m++) {
    if (!(e->map[m].flags & (CI_MAP_ACTIVE | CI_MAP_RETIRED)))
      continue;
    e->map[out] = e->map[m];
    e->map_return_slots[out] = e->map_return_slots[m];
    e->map_space[out] = e->map_space[m];
    out++;
  }
  e->map_count = out;
  for (uint32_t g = 0; g < e->gen_count; g++)
    for (uint32_t m = 0; m < e->map_count; m++)
      if (e->map[m].generation == e->gens[g].number) {
        e->gens[g].map_first = m;
        break;
      }
}

int ci_map_reserve(ci_engine *e, uint32_t n) {
  if (e->map_count + n > CI_MAX_MAP_ENTRIES)
    compact(e);
  return e->map_count + n <= CI_MAX_MAP_ENTRIES;
}
