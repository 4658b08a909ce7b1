/*
 * COMMIT: the short SMI that makes a staged plan live.  Everything that can be
 * refused is checked before the first write (call sites still what the plan
 * says, every CPU context readable, stack windows reachable); the memory
 * writes (entry jumps, call-site rel32s) are logged in the undo log first,
 * the context writes (RIPs, return addresses) are undone from the values
 * read into SMRAM, and a failure among them puts all of them back.
 */
#include "ci_host.h"
#include "internal.h"
#include "mem.h"
#include "range.h"

/* Call-site bytes may have changed since validation (an earlier SMI, or a
 * DMA during this one): each instruction is read once, into SMRAM, and that
 * copy is what is checked, logged for undo and replaced. */
static ci_status read_callsites(ci_engine *e, ci_work *w) {
  const ci_plan_view *v = &e->plan;
  for (uint32_t k = 0; k < v->header->callsite_count; k++) {
    const ci_callsite *c = &v->callsites[k];
    const uint8_t *p = ci_host_map(v->phys->insn[k], 5);
    uint8_t insn[5];
    if (!p)
      return CI_ST_INTERNAL;
    ci_copy(insn, p, 5);
    w->failed_index = k;
    if (insn[0] != c->opcode)
      return CI_ST_CALLSITE_OPCODE;
    if (!ci_callsite_enters(e, &v->islands[c->island], c->insn, insn))
      return CI_ST_CALLSITE_TARGET;
    ci_copy(e->callsite_rel[k], insn + 1, 4);
  }
  w->failed_index = CI_NO_INDEX;
  return CI_ST_OK;
}

/* The entry patch of an island: its length (0 = none), or CI_ENTRY_INVALID when the
 * validated rel32 no longer fits (cannot happen; checked rather than assumed). */
#define CI_ENTRY_INVALID 0xFFFFFFFFu

static uint32_t entry_bytes(const ci_island *isl, uint8_t out[CI_ENTRY_ABS64_LEN]) {
  int32_t rel = 0;
  switch (isl->flags & CI_ISLAND_ENTRY_MASK) {
  case CI_ISLAND_ENTRY_REL32:
    if (!ci_rel32(isl->dst, isl->src + CI_ENTRY_REL32_LEN, &rel))
      return CI_ENTRY_INVALID;
    out[0] = 0xE9;
    ci_put32(out + 1, (uint32_t)rel);
    return CI_ENTRY_REL32_LEN;
  case CI_ISLAND_ENTRY_ABS64:
    out[0] = 0xFF; /* jmp qword [rip+0] */
    out[1] = 0x25;
    ci_put32(out + 2, 0);
    ci_put64(out + 6, isl->dst);
    return CI_ENTRY_ABS64_LEN;
  default:
    return 0;
  }
}

static ci_status write_patches(ci_engine *e, ci_work *w) {
  const ci_plan_view *v = &e->plan;
  uint8_t jmp[CI_ENTRY_ABS64_LEN];
  for (uint32_t i = 0; i < v->header->island_count; i++) {
    const ci_island *isl = &v->islands[i];
    uint32_t len = entry_bytes(isl, jmp);
    if (len == CI_ENTRY_INVALID)
      return CI_ST_INTERNAL;
    if (!len)
      continue;
    uint8_t *p = ci_host_map(v->phys->src[i], len);
    if (!p)
      return CI_ST_INTERNAL;
    if (!ci_undo_save(&e->undo, CI_UNDO_MEM, v->phys->src[i], p, len))
      return CI_ST_UNDO_FULL;
    ci_copy(p, jmp, len);
  }
  for (uint32_t k = 0; k < v->header->callsite_count; k++) {
    const ci_callsite *c = &v->callsites[k];
    int32_t rel = 0;
    uint8_t *p = ci_host_map(v->phys->insn[k] + 1u, 4);
    if (!p || !ci_rel32(v->islands[c->island].dst, c->insn + 5u, &rel)) /* validated */
      return CI_ST_INTERNAL;
    if (!ci_undo_save(&e->undo, CI_UNDO_MEM, v->phys->insn[k] + 1u, e->callsite_rel[k], 4))
      return CI_ST_UNDO_FULL;
    ci_put32(p, (uint32_t)rel);
    w->callsites_patched++;
  }
  return CI_ST_OK;
}

/* Record the new generation and its address-map entries (room reserved). */
static void publish(ci_engine *e) {
  const ci_plan_view *v = &e->plan;
  uint32_t n = v->header->island_count;
  ci_generation *g = &e->gens[e->gen_count++];
  g->number = e->next_generation++;
  g->undo_start = e->pending_undo_start;
  g->map_first = e->map_count;
  g->islands = n;
  g->plan_flags = v->header->flags;
  for (uint32_t i = 0; i < n; i++) {
    ci_map_entry *m = &e->map[e->map_count];
    ci_map_space *ms = &e->map_space[e->map_count];
    ms->orig_pa = v->phys->src[i];
    ms->cur_pa = v->phys->dst[i];
    ms->cr3 = v->islands[i].cr3;
    ms->space = v->islands[i].space;
    e->map_return_slots[e->map_count++] = e->return_slots[i];
    m->orig = v->islands[i].src;
    m->cur = v->islands[i].dst;
    m->size = v->islands[i].size;
    m->island_id = v->islands[i].id;
    m->generation = g->number;
    m->flags = CI_MAP_ACTIVE;
  }
  e->total_relocations += n;
}

static void plan_moves(ci_engine *e, uint32_t *max_slots) {
  const ci_plan_view *v = &e->plan;
  *max_slots = 0;
  e->move_count = v->header->island_count;
  for (uint32_t i = 0; i < e->move_count; i++) {
    ci_move *mv = &e->moves[i];
    mv->from = v->islands[i].src;
    mv->to = v->islands[i].dst;
    mv->size = v->islands[i].size;
    mv->slots = e->return_slots[i];
    mv->space = v->islands[i].space;
    mv->cr3 = v->islands[i].cr3;
    if (mv->slots > *max_slots)
      *max_slots = mv->slots;
  }
}

ci_status ci_commit_run(ci_engine *e, const ci_cpu_ops *cpu, ci_work *w) {
  uint32_t max_slots, mark = e->undo.top, n = e->plan.header->island_count;
  ci_status st = read_callsites(e, w);
  if (st != CI_ST_OK)
    return st;
  if (e->gen_count >= CI_MAX_GENERATIONS)
    return CI_ST_GENERATIONS_FULL;
  /* Room is counted without dropping history: a refused commit leaves the
   * map as it was; the drop (if any) happens once the commit is certain. */
  if (ci_map_live_count(e) + n > CI_MAX_MAP_ENTRIES)
    return CI_ST_MAP_FULL;
  plan_moves(e, &max_slots);
  st = ci_ctx_read(e, cpu, max_slots, w);
  if (st != CI_ST_OK)
    return st;
  /* From here on, memory writes are logged and context writes remembered;
   * a failure puts all of them back. */
  st = write_patches(e, w);
  if (st == CI_ST_OK)
    st = ci_ctx_move(e, cpu, w);
  if (st == CI_ST_OK && !ci_map_reserve(e, n))
    st = CI_ST_INTERNAL; /* live entries were counted above */
  if (st != CI_ST_OK) {
    ci_ctx_restore(e, cpu);
    w->bytes_restored += ci_undo_unwind(&e->undo, mark, 1);
    w->callsites_patched = w->contexts_translated = w->returns_translated = 0;
    return st;
  }
  publish(e);
  /* KEEP_COPIES: a rollback leaves the copies in place, so the destination
   * chunks' records (the stage's, below mark) would never be replayed; drop
   * them and keep only this commit's patch records. */
  if (e->plan.header->flags & CI_PLAN_KEEP_COPIES)
    ci_undo_drop(&e->undo, e->pending_undo_start, mark);
  return CI_ST_OK;
}
