/*
 * The validator: the only code that reads plan bytes.  It runs on the copy in
 * SMRAM (never on the mailbox), checks every field before any other field is
 * sized from it, and writes nothing but *view and *failed_index, so a rejected
 * plan leaves memory untouched.  Checks run table by table in the order of
 * plan.h; the first failure is reported with its record index.
 *
 * Addresses come in two kinds.  The plan's own (src, dst, insn, fix-up
 * targets) are what code runs at, in the island's address space: the
 * arithmetic (rel32s, fix-ups, entry jumps) uses them.  Memory is reached,
 * and every overlap is judged, through the physical addresses the validator
 * derives itself (ci_place: as is for physical islands, by the page walk for
 * virtual ones), kept in *phys.
 */
#include "ci_host.h"
#include "internal.h"
#include "mem.h"
#include "range.h"

#define FAIL(st, idx)     \
  do {                    \
    *failed = (idx);      \
    return CI_ST_##st;    \
  } while (0)

static uint32_t entry_len(uint32_t flags) {
  switch (flags & CI_ISLAND_ENTRY_MASK) {
  case CI_ISLAND_ENTRY_REL32:
    return CI_ENTRY_REL32_LEN;
  case CI_ISLAND_ENTRY_ABS64:
    return CI_ENTRY_ABS64_LEN;
  default:
    return 0;
  }
}

/* ---- header ------------------------------------------------------------- */

static ci_status check_header(const ci_plan_header *h, uint32_t size, uint32_t *failed) {
  static const struct {
    uint32_t max;
    ci_status st;
  } limits[6] = {{CI_MAX_ISLANDS, CI_ST_TOO_MANY_ISLANDS},
                 {CI_MAX_FIXUPS, CI_ST_TOO_MANY_FIXUPS},
                 {CI_MAX_CALLSITES, CI_ST_TOO_MANY_CALLSITES},
                 {CI_MAX_CHUNKS, CI_ST_TOO_MANY_CHUNKS},
                 {CI_MAX_TARGETS, CI_ST_TOO_MANY_TARGETS},
                 {CI_MAX_RULES, CI_ST_TOO_MANY_RULES}};
  const uint32_t counts[6] = {h->island_count, h->fixup_count, h->callsite_count,
                              h->chunk_count, h->target_count, h->rule_count};
  if (h->magic != CI_PLAN_MAGIC)
    FAIL(BAD_MAGIC, CI_NO_INDEX);
  if (h->version < CI_PLAN_VERSION_MIN || h->version > CI_PLAN_VERSION)
    FAIL(BAD_VERSION, CI_NO_INDEX);
  if (h->header_size != sizeof(ci_plan_header))
    FAIL(BAD_HEADER_SIZE, CI_NO_INDEX);
  for (unsigned i = 0; i < 6u; i++)
    if (counts[i] > limits[i].max) {
      *failed = CI_NO_INDEX;
      return limits[i].st;
    }
  /* Counts are bounded now, so this sum cannot overflow 64 bits. */
  uint64_t need = sizeof(ci_plan_header) + (uint64_t)h->island_count * sizeof(ci_island) +
                  (uint64_t)h->fixup_count * sizeof(ci_fixup) +
                  (uint64_t)h->callsite_count * sizeof(ci_callsite) +
                  (uint64_t)h->chunk_count * sizeof(ci_chunk) +
                  (uint64_t)h->target_count * sizeof(ci_target) +
                  (uint64_t)h->rule_count * sizeof(ci_rule);
  if (need != h->total_size || h->total_size != size || size > CI_PLAN_MAX_SIZE)
    FAIL(BAD_TOTAL_SIZE, CI_NO_INDEX);
  return CI_ST_OK;
}

/* The digest covers the plan with its digest field zero.  The plan is our own
 * SMRAM copy, so the field is cleared for the computation and put back. */
static int digest_ok(uint8_t *plan, uint32_t size) {
  ci_plan_header *h = (ci_plan_header *)plan;
  uint64_t want = h->digest;
  h->digest = 0;
  uint64_t got = ci_digest(plan, size);
  h->digest = want;
  return got == want;
}

/* ---- islands ------------------------------------------------------------ */

/* Does [base, base+len) overlap live code: an active generation's original
 * or its copy?  Only active generations' entries are visited (rolled-back
 * history can fill the map). */
static int overlaps_active(const ci_engine *e, uint64_t base, uint64_t len) {
  for (uint32_t g = 0; g < e->gen_count; g++) {
    const ci_generation *gen = &e->gens[g];
    for (uint32_t m = gen->map_first; m < gen->map_first + gen->islands; m++) {
      const ci_map_entry *me = &e->map[m];
      const ci_map_space *ms = &e->map_space[m];
      if (ci_range_overlap(base, len, ms->orig_pa, me->size) ||
          ci_range_overlap(base, len, ms->cur_pa, me->size))
        return 1;
    }
  }
  return 0;
}

/* Does [base, base+len) overlap a retired copy (CI_PLAN_KEEP_COPIES)?  Its
 * bytes stay live code for the rest of the boot: return addresses into it
 * may sit on any stack. */
static int overlaps_retired(const ci_engine *e, uint64_t base, uint64_t len) {
  if (!e->retired_count)
    return 0;
  for (uint32_t m = 0; m < e->map_count; m++) {
    const ci_map_entry *me = &e->map[m];
    if ((me->flags & CI_MAP_RETIRED) &&
        ci_range_overlap(base, len, e->map_space[m].cur_pa, me->size))
      return 1;
  }
  return 0;
}

/* Live code: an active generation's original or copy, or a retired copy. */
static int overlaps_live(const ci_engine *e, uint64_t base, uint64_t len) {
  return overlaps_active(e, base, len) || overlaps_retired(e, base, len);
}

/* (All three take physical ranges.)  Does [base, base+len) overlap a
 * destination of the pending plan?  Its
 * staged bytes are restored when a new plan replaces it, so a new plan must
 * not read (as source or call site) what it staged. */
static int overlaps_pending_dst(const ci_engine *e, uint64_t base, uint64_t len) {
  if (e->state != CI_STATE_VALIDATED && e->state != CI_STATE_STAGING &&
      e->state != CI_STATE_STAGED)
    return 0;
  for (uint32_t i = 0; i < e->plan.header->island_count; i++)
    if (ci_range_overlap(base, len, e->plan.phys->dst[i], e->plan.islands[i].size))
      return 1;
  return 0;
}

/* The island's address space: v1 plans had reserved zeros in its place. */
static ci_status check_space(const ci_plan_header *h, const ci_island *isl) {
  if (h->version == 1u && (isl->space || isl->cr3))
    return CI_ST_BAD_RESERVED;
  if (isl->space > CI_SPACE_MAX)
    return CI_ST_BAD_SPACE;
  if (isl->space == CI_SPACE_PHYSICAL)
    return isl->cr3 ? CI_ST_BAD_SPACE : CI_ST_OK;
  return isl->cr3 & CI_CR3_ADDR_MASK ? CI_ST_OK : CI_ST_BAD_SPACE; /* names tables */
}

/* Island i: its own fields, and where its source and destination lie
 * physically (into phys). */
static ci_status check_island(const ci_engine *e, const ci_plan_header *h, const ci_island *isl,
                              ci_plan_phys *phys, uint32_t i) {
  ci_status st;
  int32_t rel;
  if (isl->flags & ~CI_ISLAND_FLAGS_KNOWN)
    return CI_ST_BAD_RESERVED;
  st = check_space(h, isl);
  if (st != CI_ST_OK)
    return st;
  if ((isl->flags & CI_ISLAND_ENTRY_MASK) == CI_ISLAND_ENTRY_MASK)
    return CI_ST_ENTRY_FLAGS;
  if (isl->size == 0 || isl->size > CI_MAX_ISLAND_SIZE)
    return CI_ST_ISLAND_SIZE;
  st = ci_place(e, isl, isl->src, isl->size, CI_REGION_SOURCE, CI_ST_SRC_NOT_REGISTERED,
                &phys->src[i]);
  if (st != CI_ST_OK)
    return st;
  st = ci_place(e, isl, isl->dst, isl->size, CI_REGION_DEST, CI_ST_DST_NOT_REGISTERED,
                &phys->dst[i]);
  if (st != CI_ST_OK)
    return st;
  const uint64_t src = phys->src[i], dst = phys->dst[i];
  if (entry_len(isl->flags) > isl->size)
    return CI_ST_ENTRY_TOO_SMALL;
  if ((isl->flags & CI_ISLAND_ENTRY_MASK) == CI_ISLAND_ENTRY_REL32 &&
      !ci_rel32(isl->dst, isl->src + CI_ENTRY_REL32_LEN, &rel))
    return CI_ST_ENTRY_RANGE;
  if (overlaps_live(e, src, isl->size) || overlaps_pending_dst(e, src, isl->size))
    return CI_ST_ISLAND_ACTIVE;
  if (overlaps_live(e, dst, isl->size) || ci_range_overlap(dst, isl->size, src, isl->size))
    return CI_ST_DST_OVERLAPS_CODE;
  return CI_ST_OK;
}

/* Island i against the islands before it (O(n^2) over at most 64), by
 * physical range: two virtual ranges may alias one physical range. */
static ci_status check_island_pairs(const ci_island *isl, const ci_plan_phys *ph, uint32_t i) {
  const uint32_t an = isl[i].size;
  for (uint32_t j = 0; j < i; j++) {
    const uint32_t bn = isl[j].size;
    if (ci_range_overlap(ph->src[i], an, ph->src[j], bn))
      return CI_ST_SRC_OVERLAP;
    if (ci_range_overlap(ph->dst[i], an, ph->dst[j], bn))
      return CI_ST_DST_OVERLAP;
    if (ci_range_overlap(ph->dst[i], an, ph->src[j], bn) ||
        ci_range_overlap(ph->dst[j], bn, ph->src[i], an))
      return CI_ST_DST_OVERLAPS_CODE;
  }
  return CI_ST_OK;
}

/* ---- fix-ups ------------------------------------------------------------ */

static uint32_t fixup_width(uint8_t kind) { return kind == CI_FIXUP_ABS64 ? 8u : 4u; }

/* Shape of fix-up f of island isl: kind and bias, field inside the island,
 * after the previous field (prev_end: end offset of the previous fix-up of
 * the same island, 0 for its first). */
static ci_status check_fixup_shape(const ci_fixup *f, const ci_island *isl, uint32_t prev_end) {
  int rel = f->kind == CI_FIXUP_REL32 || f->kind == CI_FIXUP_RIPREL32;
  if (rel ? (f->pc_bias < 4u || f->pc_bias > 15u)
          : (f->kind != CI_FIXUP_ABS64 || f->pc_bias != 0))
    return CI_ST_FIXUP_KIND;
  uint32_t width = fixup_width(f->kind);
  if (isl->size < width || f->offset > isl->size - width)
    return CI_ST_FIXUP_OUTSIDE;
  if (f->offset < prev_end)
    return CI_ST_FIXUP_ORDER;
  return CI_ST_OK;
}

/* Original bytes agree with the fix-up, and the copy's value fits.  src maps
 * the island's source. */
static ci_status check_fixup_value(const ci_fixup *f, const ci_island *isl, const uint8_t *src) {
  const uint8_t *p = src + f->offset;
  int32_t rel;
  if (f->kind == CI_FIXUP_ABS64) {
    if (ci_le64(p) != f->target || !ci_range_has(isl->src, isl->size, f->target))
      return CI_ST_FIXUP_MISMATCH;
    return CI_ST_OK;
  }
  uint64_t pc_old = isl->src + f->offset + f->pc_bias;
  if (pc_old + (uint64_t)(int64_t)(int32_t)ci_le32(p) != f->target)
    return CI_ST_FIXUP_MISMATCH;
  if (!ci_rel32(f->target, isl->dst + f->offset + f->pc_bias, &rel))
    return CI_ST_FIXUP_RANGE;
  return CI_ST_OK;
}

/*
 * Fast pass over the run of fix-ups of one island that starts at k: the
 * tests of check_fixup_shape and check_fixup_value for the common kinds
 * (REL32, RIPREL32), with the island's fields hoisted.  Returns the end of
 * the run (first fix-up of another island) if every fix-up in it passed, 0
 * at the first that did not (or is ABS64); the caller then runs the exact
 * checks over the run, which name the status and index as always (the
 * validator writes nothing, so running them again changes nothing).  The
 * field is read only after its shape is known to lie inside the island.
 * Since pc_old + disp == target is required, the new displacement
 * target - (pc_old + delta) is disp - delta (mod 2^64): ci_rel32's test on it.
 * Needs isl->size >= 4 (lim4 = size - 4).
 */
_Static_assert(offsetof(ci_fixup, island) == 0 && offsetof(ci_fixup, kind) == 2 &&
                   offsetof(ci_fixup, pc_bias) == 3,
               "fixups_fast_run reads island, kind and pc_bias as one word");

static uint32_t fixups_fast_run(const ci_fixup *fx, uint32_t k, uint32_t n, uint32_t island,
                                const ci_island *isl, const uint8_t *src) {
  const uint64_t src_base = isl->src, delta = isl->dst - isl->src;
  const uint32_t lim4 = isl->size - 4u;
  /* The record's first word, island | kind << 16 | pc_bias << 24 (plan.h
   * layout, little-endian), minus island | 1 << 16 | 4 << 24: its low 16
   * bits are 0 iff the island matches (no borrow then), bits 17..23 are 0
   * iff kind - 1 is 0 or 1, and its top byte is pc_bias - 4, at most 11. */
  const uint32_t base_word = island | 1u << 16 | 4u << 24;
  uint32_t prev_end = 0;
  for (; k < n; k++) {
    const ci_fixup *f = &fx[k];
    uint32_t x = ci_le32((const uint8_t *)f) - base_word;
    if ((x & 0x00FEFFFFu) != 0 || x > 0x0BFFFFFFu) {
      if (f->island != island)
        break; /* the end of the run */
      return 0;
    }
    uint32_t off = f->offset, bias4 = x >> 24; /* pc_bias - 4 */
    if (off > lim4 || off < prev_end)
      return 0;
    uint64_t disp = (uint64_t)(int64_t)(int32_t)ci_le32(src + off);
    if (src_base + off + 4u + bias4 + disp != f->target ||
        disp - delta + 0x80000000ULL > 0xFFFFFFFFULL)
      return 0;
    prev_end = off + 4u;
  }
  return k;
}

/* One pass over the fix-ups (sorted by island, then offset): the island's
 * fields and mapping are taken once per island, each fix-up's shape is
 * checked before the bytes it describes are read.  Each island's run is
 * first tried by fixups_fast_run; the exact checks below run only for a run
 * it did not pass. */
static ci_status check_fixups(const ci_plan_view *v, uint32_t *failed, uint8_t *rel32_only) {
  const uint32_t n = v->header->fixup_count, islands = v->header->island_count;
  const ci_fixup *fx = v->fixups;
  const ci_island *isl = 0;
  const uint8_t *src = 0;
  uint32_t cur = CI_NO_INDEX, prev_end = 0;
  *rel32_only = 1; /* stays 1 if every run passes fixups_fast_run (32-bit kinds only) */
  for (uint32_t k = 0; k < n; k++) {
    const ci_fixup *f = &fx[k];
    ci_status st = CI_ST_OK;
    if (f->island != cur) {
      if (f->island >= islands)
        st = CI_ST_FIXUP_ISLAND;
      else if (cur != CI_NO_INDEX && f->island < cur)
        st = CI_ST_FIXUP_ORDER;
      else {
        cur = f->island;
        isl = &v->islands[cur];
        src = ci_host_map(v->phys->src[cur], isl->size);
        prev_end = 0;
        if (!src)
          st = CI_ST_INTERNAL;
        else if (isl->size >= 4u) {
          uint32_t end = fixups_fast_run(fx, k, n, cur, isl, src);
          if (end) { /* the whole run passed; go on at the next island */
            k = end - 1u;
            continue;
          }
        }
      }
    }
    *rel32_only = 0;
    if (st == CI_ST_OK)
      st = check_fixup_shape(f, isl, prev_end);
    if (st == CI_ST_OK)
      st = check_fixup_value(f, isl, src);
    if (st != CI_ST_OK) {
      *failed = k;
      return st;
    }
    prev_end = f->offset + fixup_width(f->kind); /* shape checked: no overflow */
  }
  return CI_ST_OK;
}

/* ---- call sites --------------------------------------------------------- */

static int in_plan_code(const ci_plan_view *v, uint64_t base, uint64_t len) {
  for (uint32_t i = 0; i < v->header->island_count; i++) {
    const uint32_t size = v->islands[i].size;
    if (ci_range_overlap(base, len, v->phys->src[i], size) ||
        ci_range_overlap(base, len, v->phys->dst[i], size))
      return 1;
  }
  return 0;
}

/* Shape and placement, no memory read (all call sites before any value);
 * the call site lies in its island's address space. */
static ci_status check_callsite_shape(const ci_engine *e, const ci_plan_view *v,
                                      ci_plan_phys *phys, uint32_t k) {
  const ci_callsite *c = &v->callsites[k];
  if (c->island >= v->header->island_count)
    return CI_ST_CALLSITE_ISLAND;
  if (c->reserved0 || c->reserved1)
    return CI_ST_BAD_RESERVED;
  ci_status st = ci_place(e, &v->islands[c->island], c->insn, 5, CI_REGION_SOURCE,
                          CI_ST_CALLSITE_REGION, &phys->insn[k]);
  if (st != CI_ST_OK)
    return st;
  const uint64_t pa = phys->insn[k];
  if (in_plan_code(v, pa, 5) || overlaps_live(e, pa, 5) || overlaps_pending_dst(e, pa, 5))
    return CI_ST_CALLSITE_IN_ISLAND;
  for (uint32_t j = 0; j < k; j++)
    if (ci_range_overlap(pa, 5, phys->insn[j], 5))
      return CI_ST_CALLSITE_OVERLAP;
  return CI_ST_OK;
}

/* A call to an island whose function starts with endbr64 targets the marker, which stays in
 * front of the island (src - 4, outside it: indirect calls still land on it).  Re-pointing
 * such a direct call to the copy skips the marker, which only indirect branches need. */
static int is_endbr_before(const ci_engine *e, const ci_island *isl, uint64_t target) {
  static const uint8_t endbr64[4] = {0xF3, 0x0F, 0x1E, 0xFA};
  uint64_t pa;
  if (isl->src < 4 || target != isl->src - 4 ||
      ci_place(e, isl, target, 4, CI_REGION_SOURCE, CI_ST_CALLSITE_TARGET, &pa) != CI_ST_OK)
    return 0;
  const uint8_t *p = ci_host_map(pa, 4);
  return p && p[0] == endbr64[0] && p[1] == endbr64[1] && p[2] == endbr64[2] &&
         p[3] == endbr64[3];
}

int ci_callsite_enters(const ci_engine *e, const ci_island *isl, uint64_t insn,
                       const uint8_t *bytes) {
  uint64_t target = insn + 5u + (uint64_t)(int64_t)(int32_t)ci_le32(bytes + 1);
  return target == isl->src || is_endbr_before(e, isl, target);
}

/* The instruction in memory is the one the plan names, and can be re-pointed. */
static ci_status check_callsite_value(const ci_engine *e, const ci_plan_view *v, uint32_t k) {
  const ci_callsite *c = &v->callsites[k];
  const ci_island *isl = &v->islands[c->island];
  const uint8_t *p = ci_host_map(v->phys->insn[k], 5);
  int32_t rel;
  if (!p)
    return CI_ST_INTERNAL;
  if ((c->opcode != 0xE8 && c->opcode != 0xE9) || p[0] != c->opcode)
    return CI_ST_CALLSITE_OPCODE;
  if (!ci_callsite_enters(e, isl, c->insn, p))
    return CI_ST_CALLSITE_TARGET;
  if (!ci_rel32(isl->dst, c->insn + 5u, &rel))
    return CI_ST_CALLSITE_RANGE;
  return CI_ST_OK;
}

/* ---- chunks ------------------------------------------------------------- */

/* Chunks tile island 0, then island 1, ... each from offset 0 to its size. */
static ci_status check_chunks(const ci_plan_view *v, uint32_t *failed, uint32_t *copy) {
  uint32_t n = v->header->chunk_count, islands = v->header->island_count;
  uint32_t cur = 0, off = 0;
  *copy = 0;
  for (uint32_t k = 0; k < n; k++) {
    const ci_chunk *c = &v->chunks[k];
    if (c->island >= islands)
      FAIL(CHUNK_ISLAND, k);
    if (c->reserved0 || c->reserved1)
      FAIL(BAD_RESERVED, k);
    if (c->length == 0 || c->length > CI_MAX_CHUNK_SIZE)
      FAIL(CHUNK_SIZE, k);
    if (off == v->islands[cur].size && cur + 1u < islands) {
      cur++;
      off = 0;
    }
    if (c->island != cur || c->offset != off || c->length > v->islands[cur].size - off)
      FAIL(CHUNK_LAYOUT, k);
    off += c->length;
    *copy += c->length; /* <= 64 islands * 256 KiB: fits */
  }
  if (islands != 0 && (cur + 1u != islands || off != v->islands[cur].size))
    FAIL(CHUNK_LAYOUT, n);
  return CI_ST_OK;
}

/* ---- targets and rules -------------------------------------------------- */

static ci_status check_target(const ci_plan_view *v, uint32_t k) {
  const ci_target *t = &v->targets[k];
  if (t->island >= v->header->island_count)
    return CI_ST_TARGET_ISLAND;
  if (t->reserved)
    return CI_ST_BAD_RESERVED;
  const ci_island *isl = &v->islands[t->island];
  if (t->offset >= isl->size)
    return CI_ST_TARGET_OUTSIDE;
  if (t->offset > 0 && t->offset < entry_len(isl->flags))
    return CI_ST_ENTRY_COVERS_TARGET;
  return CI_ST_OK;
}

static ci_status check_rule(const ci_plan_view *v, uint32_t k) {
  const ci_rule *r = &v->rules[k];
  if (r->island >= v->header->island_count)
    return CI_ST_RULE_ISLAND;
  int wants_return = (r->flags & CI_RULE_TRANSLATE_RETURN) != 0;
  if (r->flags == 0 || (r->flags & ~CI_RULE_FLAGS_KNOWN) ||
      r->stack_slots > CI_MAX_STACK_SLOTS || wants_return != (r->stack_slots != 0))
    return CI_ST_RULE_FLAGS;
  return CI_ST_OK;
}

/* ---- capacity ----------------------------------------------------------- */

/* Worst-case undo bytes: every chunk, entry and call site saved, and every
 * CPU's RIP (and stack window if a rule asks) rewritten at commit. */
/* The undo records a COMMIT of this plan writes: the destinations' old bytes (one per
   chunk), the entry patches and the call sites' rel32s.  CPU contexts have none: their RIPs
   and stack windows are kept in SMRAM as read and restored from there (context.c). */
static uint32_t undo_need(const ci_plan_view *v) {
  const ci_plan_header *h = v->header;
  uint64_t need = 0;
  for (uint32_t k = 0; k < h->chunk_count; k++)
    need += CI_UNDO_COPY_COST(v->chunks[k].length);
  for (uint32_t i = 0; i < h->island_count; i++)
    need += ci_undo_cost(entry_len(v->islands[i].flags));
  need += (uint64_t)h->callsite_count * ci_undo_cost(4);
  return need > UINT32_MAX ? UINT32_MAX : (uint32_t)need;
}

static ci_status check_capacity(const ci_engine *e, ci_plan_view *v) {
  /* A pending plan is abandoned when this one is adopted: its undo is free. */
  uint32_t used = e->state == CI_STATE_EMPTY || e->state == CI_STATE_COMMITTED ||
                          e->state == CI_STATE_ROLLED_BACK
                      ? e->undo.top
                      : e->pending_undo_start;
  v->undo_need = undo_need(v);
  if (v->undo_need > e->undo.size - used)
    return CI_ST_UNDO_FULL;
  if (ci_map_live_count(e) + v->header->island_count > CI_MAX_MAP_ENTRIES)
    return CI_ST_MAP_FULL;
  if (e->gen_count >= CI_MAX_GENERATIONS)
    return CI_ST_GENERATIONS_FULL;
  return CI_ST_OK;
}

/* ---- the validator ------------------------------------------------------ */

static void make_view(const uint8_t *plan, const ci_plan_phys *phys, ci_plan_view *v) {
  const ci_plan_header *h = (const ci_plan_header *)plan;
  const uint8_t *p = plan + sizeof(ci_plan_header);
  v->phys = phys;
  v->header = h;
  v->islands = (const ci_island *)p;
  p += h->island_count * sizeof(ci_island);
  v->fixups = (const ci_fixup *)p;
  p += h->fixup_count * sizeof(ci_fixup);
  v->callsites = (const ci_callsite *)p;
  p += h->callsite_count * sizeof(ci_callsite);
  v->chunks = (const ci_chunk *)p;
  p += h->chunk_count * sizeof(ci_chunk);
  v->targets = (const ci_target *)p;
  p += h->target_count * sizeof(ci_target);
  v->rules = (const ci_rule *)p;
  v->return_rules = 0;
  v->rel32_only = 0;
}

#define EACH(count, check, ...)              \
  for (uint32_t k = 0; k < (count); k++) {   \
    ci_status st_ = check(__VA_ARGS__);      \
    if (st_ != CI_ST_OK) {                   \
      *failed = k;                           \
      return st_;                            \
    }                                        \
  }

ci_status ci_validate(const ci_engine *e, uint8_t *plan, uint32_t size, ci_plan_view *v,
                      ci_plan_phys *phys, uint32_t *failed) {
  *failed = CI_NO_INDEX;
  if (size < sizeof(ci_plan_header))
    return CI_ST_BAD_TOTAL_SIZE;
  const ci_plan_header *h = (const ci_plan_header *)plan;
  ci_status st = check_header(h, size, failed);
  if (st != CI_ST_OK)
    return st;
  if (!digest_ok(plan, size))
    return CI_ST_BAD_DIGEST;
  if (h->flags & ~CI_PLAN_FLAGS_KNOWN || h->reserved[0] || h->reserved[1])
    return CI_ST_BAD_RESERVED;
  make_view(plan, phys, v);
  EACH(h->island_count, check_island, e, h, &v->islands[k], phys, k);
  EACH(h->island_count, check_island_pairs, v->islands, phys, k);
  st = check_fixups(v, failed, &v->rel32_only);
  if (st != CI_ST_OK)
    return st;
  EACH(h->callsite_count, check_callsite_shape, e, v, phys, k);
  EACH(h->callsite_count, check_callsite_value, e, v, k);
  st = check_chunks(v, failed, &v->copy_bytes);
  if (st != CI_ST_OK)
    return st;
  EACH(h->target_count, check_target, v, k);
  EACH(h->rule_count, check_rule, v, k);
  for (uint32_t k = 0; k < h->rule_count; k++)
    if (v->rules[k].flags & CI_RULE_TRANSLATE_RETURN)
      v->return_rules = 1;
  return check_capacity(e, v);
}
