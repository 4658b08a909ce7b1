/*
 * ROLLBACK: undo committed generations, newest first (LIFO), down to the one
 * asked for; a pending (uncommitted) plan is dropped first.  Saved RIPs (and
 * return addresses, where a generation's rules asked) in the copies go back
 * to the originals at the same offset -- all generations' contexts in one
 * pass, so that a refused context write is put back before anything else is
 * touched -- then every memory byte each generation wrote (destination
 * chunks, entry jumps, call sites) is restored from the undo log, except,
 * for a generation made with CI_PLAN_KEEP_COPIES, the copies' bytes, which
 * stay as valid code and are marked CI_MAP_RETIRED (plan.h gives the rule).
 * All CPUs are in SMM for the whole SMI, so the order of these writes is not
 * observable.  The copies of the generations undone are disjoint and no
 * original lies in another's copy (the validator's ISLAND_ACTIVE and
 * DST_OVERLAPS_CODE), so one pass over their moves equals one per generation.
 */
#include "internal.h"

void ci_pending_abandon(ci_engine *e, ci_work *w) {
  if (e->state != CI_STATE_VALIDATED && e->state != CI_STATE_STAGING &&
      e->state != CI_STATE_STAGED)
    return;
  uint32_t index = w->failed_index;
  if (ci_space_recheck(e, w) == CI_ST_OK)
    w->bytes_restored += ci_undo_unwind(&e->undo, e->pending_undo_start, 1);
  else
    e->undo.top = e->pending_undo_start; /* gone: nothing of it is restored */
  w->failed_index = index;
  e->state = CI_STATE_EMPTY;
}

/* Append the moves copy -> original of generation g; returns its largest
 * window. */
static uint32_t generation_moves(ci_engine *e, const ci_generation *g) {
  uint32_t max_slots = 0;
  for (uint32_t i = 0; i < g->islands; i++) {
    const ci_map_entry *m = &e->map[g->map_first + i];
    ci_move *mv = &e->moves[e->move_count++];
    mv->from = m->cur;
    mv->to = m->orig;
    mv->size = m->size;
    mv->slots = e->map_return_slots[g->map_first + i];
    mv->space = e->map_space[g->map_first + i].space;
    mv->cr3 = e->map_space[g->map_first + i].cr3;
    if (mv->slots > max_slots)
      max_slots = mv->slots;
  }
  return max_slots;
}

/* The newest generation's memory and bookkeeping (cannot fail). */
static void rollback_memory(ci_engine *e, ci_work *w) {
  ci_generation *g = &e->gens[e->gen_count - 1u];
  /* KEEP_COPIES: COMMIT dropped the destination records, so this restores
   * only entry jumps and call sites; the copies stay, retired. */
  w->bytes_restored += ci_undo_unwind(&e->undo, g->undo_start, 1);
  uint32_t keep = (g->plan_flags & CI_PLAN_KEEP_COPIES) != 0;
  e->retire_seq++; /* RECLAIM's pinning rule: which generations were under this one */
  for (uint32_t i = 0; i < g->islands; i++) {
    e->map[g->map_first + i].flags = CI_MAP_ROLLED_BACK | (keep ? CI_MAP_RETIRED : 0u);
    e->map_space[g->map_first + i].retire_seq = e->retire_seq;
  }
  e->retired_count += keep ? g->islands : 0u;
  e->gen_count--;
  e->total_rollbacks++;
}

ci_status ci_rollback_run(ci_engine *e, const ci_cpu_ops *cpu, uint32_t generation,
                          ci_work *w) {
  uint32_t first, max_slots = 0;
  if (e->gen_count == 0)
    return CI_ST_NOTHING_TO_ROLLBACK;
  if (generation == 0) {
    first = e->gen_count - 1u;
  } else {
    for (first = 0; first < e->gen_count && e->gens[first].number != generation; first++)
      ;
    if (first == e->gen_count)
      return CI_ST_BAD_GENERATION;
  }
  for (uint32_t g = first; g < e->gen_count; g++) { /* before anything is touched */
    ci_status st = ci_generation_recheck(e, &e->gens[g], w);
    if (st != CI_ST_OK)
      return st;
  }
  e->move_count = 0; /* at most CI_MAX_MAP_ENTRIES: the generations' entries */
  for (uint32_t g = first; g < e->gen_count; g++) {
    uint32_t s = generation_moves(e, &e->gens[g]);
    if (s > max_slots)
      max_slots = s;
  }
  ci_status st = ci_ctx_read(e, cpu, max_slots, w);
  if (st == CI_ST_OK)
    st = ci_ctx_move(e, cpu, w);
  if (st != CI_ST_OK) {
    ci_ctx_restore(e, cpu);
    w->contexts_translated = w->returns_translated = 0;
    return st; /* refused: generations and a pending plan stay as they were */
  }
  ci_pending_abandon(e, w); /* its staged bytes sit above every generation's */
  while (e->gen_count > first)
    rollback_memory(e, w);
  return CI_ST_OK;
}
