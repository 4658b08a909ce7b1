/*
 * RECLAIM: free the retired copies (CI_PLAN_KEEP_COPIES rollbacks) that a
 * conservative scan proves unreachable, in one SMI with every CPU in SMM.
 * plan.h (CI_CMD_RECLAIM) states the rule; here is why it is enough.
 *
 * After a ROLLBACK nothing branches into a copy any more: entry jumps and
 * call sites are the original bytes again, and a later plan may not use a
 * retired range as source, destination or call site.  So a thread can come
 * back into a copy only through a value it already holds: its RIP, a return
 * address or pointer in a register, on its stack, in a saved context of a
 * thread off its CPU, or in data it reaches -- which are the save states and
 * the STACK regions a host registers.  The one reference that is no 8-byte
 * value is a rel32 in another copy's code: a newer generation's copy, fixed
 * up while an older one was active, may call that older copy directly.  The
 * pinning pass covers it (an older generation F was active when G committed
 * exactly when F is older than G and was rolled back after G: rollback is
 * LIFO).  Each word outside SMRAM is read once into a local and decided on
 * there; nothing is written before every CPU has been read, so a refusal
 * leaves memory and the map as they were.
 */
#include "ci_host.h"
#include "internal.h"
#include "mem.h"
#include "range.h"

#define INT3 0xCCu
#define PAGE 4096u
#define GROUP 16u /* words tested without a branch before the slow path */

/* Physical range of the copy of map entry m. */
static uint64_t copy_pa(const ci_engine *e, uint32_t m) { return e->map_space[m].cur_pa; }

/* Collect the retired entries: physical ones start as FREED (candidates),
 * virtual ones are KEPT_SPACE.  Returns the candidates' hull in lo/span. */
static uint32_t collect(ci_engine *e, uint64_t *lo, uint64_t *span) {
  uint64_t hi = 0;
  uint32_t candidates = 0;
  *lo = UINT64_MAX;
  e->reclaim_info.considered = 0;
  for (uint32_t m = 0; m < e->map_count; m++) {
    const ci_map_entry *me = &e->map[m];
    if (!(me->flags & CI_MAP_RETIRED))
      continue;
    uint32_t k = e->reclaim_info.considered++;
    ci_reclaim_entry *r = &e->reclaim[k];
    ci_fill(r, 0, sizeof *r);
    e->reclaim_map[k] = (uint16_t)m;
    r->cur = me->cur;
    r->size = me->size;
    r->island_id = me->island_id;
    r->generation = me->generation;
    if (e->map_space[m].space != CI_SPACE_PHYSICAL) {
      r->verdict = CI_RECLAIM_KEPT_SPACE;
      continue;
    }
    r->verdict = CI_RECLAIM_FREED;
    candidates++;
    uint64_t first = copy_pa(e, m), last = first + (me->size - 1u); /* validated: no wrap */
    *lo = first < *lo ? first : *lo;
    hi = last > hi ? last : hi;
  }
  *span = candidates ? hi - *lo : 0;
  return candidates;
}

/* Does a word at addr lie inside a retired copy (whose bytes are no evidence)? */
static int in_retired(const ci_engine *e, uint64_t addr) {
  for (uint32_t k = 0; k < e->reclaim_info.considered; k++) {
    uint32_t m = e->reclaim_map[k];
    if (ci_range_has(copy_pa(e, m), e->map[m].size, addr))
      return 1;
  }
  return 0;
}

/* Value v refers to the candidates it lies in: they are kept, for `why` at `where`.
 * Returns how many candidates were still FREED and are kept now. */
static uint32_t refer(ci_engine *e, uint64_t v, uint32_t why, uint64_t where) {
  uint32_t kept = 0;
  for (uint32_t k = 0; k < e->reclaim_info.considered; k++) {
    ci_reclaim_entry *r = &e->reclaim[k];
    if (r->verdict == CI_RECLAIM_FREED && ci_range_has(copy_pa(e, e->reclaim_map[k]), r->size, v)) {
      r->verdict = why;
      r->where = where;
      kept++;
    }
  }
  return kept;
}

static int managed_code(const ci_engine *e, uint64_t rip) {
  uint64_t last;
  return ci_region_end(e, rip, CI_REGION_SOURCE, &last) ||
         ci_region_end(e, rip, CI_REGION_DEST, &last);
}

/* Every CPU's RIP and 16 GPRs.  CPU_ACCESS, STACK_ACCESS (managed code with a
 * stack the scan cannot see) or OK; *left drops by the candidates kept. */
static ci_status scan_registers(ci_engine *e, const ci_cpu_ops *cpu, ci_work *w, uint32_t *left) {
  for (uint32_t n = 0; n < cpu->count; n++) {
    uint64_t rip, rsp, v;
    if (cpu->read(cpu->ctx, n, CI_REG_RIP, &rip) != 0 ||
        cpu->read(cpu->ctx, n, CI_REG_RSP, &rsp) != 0) {
      w->failed_index = n;
      return CI_ST_CPU_ACCESS;
    }
    uint64_t last;
    if (managed_code(e, rip) && !ci_region_end(e, rsp, CI_REGION_STACK, &last)) {
      w->failed_index = n;
      return CI_ST_STACK_ACCESS;
    }
    *left -= refer(e, rip, CI_RECLAIM_KEPT_REGISTER, (uint64_t)n << 32 | CI_REG_RIP);
    e->reclaim_info.registers_scanned++;
    for (uint32_t reg = CI_REG_R8; reg <= CI_REG_RDI; reg++) {
      if (reg == CI_REG_RSP) {
        v = rsp;
      } else if (cpu->read(cpu->ctx, n, reg, &v) != 0) {
        w->failed_index = n;
        return CI_ST_CPU_ACCESS;
      }
      *left -= refer(e, v, CI_RECLAIM_KEPT_REGISTER, (uint64_t)n << 32 | reg);
      e->reclaim_info.registers_scanned++;
    }
  }
  return CI_ST_OK;
}

/* GROUP words at p copied to out (the one read of each); 1 if one lies in
 * the hull.  A fixed count, so the compiler unrolls it into straight code:
 * one branch per GROUP words (what keeps an emulated scan fast, too). */
static int group_near(uint64_t out[GROUP], const uint8_t *p, uint64_t lo, uint64_t span) {
  uint64_t near = 0;
  for (uint32_t k = 0; k < GROUP; k++) {
    out[k] = ci_le64(p + 8u * k);
    near |= (uint64_t)(out[k] - lo <= span);
  }
  return near != 0;
}

/* One mapped piece of a STACK region: `words` aligned words at addr.  The
 * common case (no word inside the candidates' hull) costs one branch per
 * GROUP words; a word inside it is looked at again in the local copy. */
static void scan_words(ci_engine *e, uint64_t addr, const uint8_t *p, uint32_t words,
                       uint64_t lo, uint64_t span, uint32_t *left) {
  uint64_t group[GROUP];
  for (uint32_t i = 0; i < words && *left; i += GROUP) {
    uint32_t n = words - i < GROUP ? words - i : GROUP;
    int near = 0;
    if (n == GROUP) {
      near = group_near(group, p + 8u * i, lo, span);
    } else {
      for (uint32_t k = 0; k < n; k++) {
        group[k] = ci_le64(p + 8u * (i + k));
        near |= group[k] - lo <= span;
      }
    }
    if (!near)
      continue;
    for (uint32_t k = 0; k < n; k++) {
      uint64_t at = addr + 8u * (i + k);
      if (group[k] - lo <= span && !in_retired(e, at))
        *left -= refer(e, group[k], CI_RECLAIM_KEPT_MEMORY, at);
    }
  }
  e->reclaim_info.words_scanned += words;
}

/* Every aligned word of every STACK region, a page at a time; stops once
 * every candidate is kept.  INTERNAL if a registered region cannot be mapped. */
static ci_status scan_memory(ci_engine *e, uint64_t lo, uint64_t span, uint32_t *left) {
  for (uint32_t i = 0; i < e->region_count && *left; i++) {
    const ci_region_info *r = &e->regions[i];
    if (!(r->flags & CI_REGION_STACK) || r->size < 8u)
      continue;
    /* registered: base + size - 1 does not wrap, so neither does base + 7 */
    uint64_t last = r->base + (r->size - 1u), first = (r->base + 7u) & ~7ull;
    if (first > last || last - first < 7u)
      continue;
    uint64_t words = (last - first + 1u) / 8u; /* <= size / 8: no overflow */
    for (uint64_t done = 0; done < words && *left;) {
      uint64_t at = first + 8u * done;
      uint64_t to_page = (PAGE - (at & (PAGE - 1u))) / 8u;
      uint32_t n = (uint32_t)(words - done < to_page ? words - done : to_page);
      const uint8_t *p = ci_host_map(at, 8u * n);
      if (!p)
        return CI_ST_INTERNAL;
      scan_words(e, at, p, n, lo, span, left);
      done += n;
    }
  }
  return CI_ST_OK;
}

/* A kept copy of generation G keeps every retired copy of an older generation
 * rolled back after G (active when G committed).  Map order is generation
 * order, so one pass from the newest entry down reaches the closure. */
static void pin(ci_engine *e) {
  for (uint32_t k = e->reclaim_info.considered; k-- > 0;) {
    const ci_reclaim_entry *kept = &e->reclaim[k];
    if (kept->verdict == CI_RECLAIM_FREED)
      continue;
    uint32_t seq = e->map_space[e->reclaim_map[k]].retire_seq;
    for (uint32_t j = 0; j < k; j++) {
      ci_reclaim_entry *r = &e->reclaim[j];
      if (r->verdict == CI_RECLAIM_FREED && r->generation < kept->generation &&
          e->map_space[e->reclaim_map[j]].retire_seq > seq) {
        r->verdict = CI_RECLAIM_KEPT_PINNED;
        r->where = kept->generation;
      }
    }
  }
}

/* Fill the unreferenced copies with int3 and release their ranges; every
 * copy is checked and mapped before the first byte is written. */
static ci_status release(ci_engine *e, ci_work *w) {
  for (uint32_t k = 0; k < e->reclaim_info.considered; k++) {
    const ci_reclaim_entry *r = &e->reclaim[k];
    uint64_t pa = copy_pa(e, e->reclaim_map[k]);
    if (r->verdict == CI_RECLAIM_FREED &&
        (ci_region_check(e, pa, r->size, CI_REGION_DEST, CI_ST_INTERNAL) != CI_ST_OK ||
         !ci_host_map(pa, r->size)))
      return CI_ST_INTERNAL; /* its plan placed it in a DEST region */
  }
  for (uint32_t k = 0; k < e->reclaim_info.considered; k++) {
    const ci_reclaim_entry *r = &e->reclaim[k];
    uint32_t m = e->reclaim_map[k];
    if (r->verdict != CI_RECLAIM_FREED)
      continue;
    ci_fill(ci_host_map(copy_pa(e, m), r->size), INT3, r->size);
    e->map[m].flags = CI_MAP_ROLLED_BACK; /* plain history: dropped when room is needed */
    e->retired_count--;
    e->reclaim_info.reclaimed++;
    e->reclaim_info.bytes_freed += r->size;
    w->bytes_written += r->size;
  }
  return CI_ST_OK;
}

ci_status ci_reclaim_run(ci_engine *e, const ci_cpu_ops *cpu, ci_work *w) {
  uint64_t lo, span;
  ci_fill(&e->reclaim_info, 0, sizeof e->reclaim_info);
  uint32_t left = collect(e, &lo, &span);
  if (!left)
    return CI_ST_OK; /* nothing to prove: no CPU or memory is read */
  ci_status st = scan_registers(e, cpu, w, &left);
  if (st == CI_ST_OK)
    st = scan_memory(e, lo, span, &left);
  if (st != CI_ST_OK)
    return st;
  pin(e);
  return release(e, w);
}

uint32_t ci_reclaim_tail(const ci_engine *e, uint8_t *out, uint32_t room) {
  uint32_t entries = e->reclaim_info.considered * (uint32_t)sizeof(ci_reclaim_entry);
  uint32_t need = (uint32_t)sizeof(ci_reclaim_info) + entries;
  if (need > room)
    return 0;
  ci_copy(out, &e->reclaim_info, sizeof e->reclaim_info);
  ci_copy(out + sizeof e->reclaim_info, e->reclaim, entries);
  return need;
}
