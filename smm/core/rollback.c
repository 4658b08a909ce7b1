/*
 * ROLLBACK: undo committed generations, newest first (LIFO), down to the one
 * asked for; a pending (uncommitted) plan is dropped first.  For each: saved RIPs (and return addresses, where its rules
 * asked) in the copy go back to the original at the same offset, then every
 * memory byte the generation wrote (destination chunks, entry jumps, call
 * sites) is restored from the undo log -- except, for a generation made with
 * CI_PLAN_KEEP_COPIES, the copies' bytes, which stay as valid code and are
 * marked CI_MAP_RETIRED (plan.h gives the rule).  All CPUs are in SMM for the whole
 * SMI, so the order of these writes is not observable.  Register and stack
 * records are not replayed: they belong to the SMI that committed.
 */
#include "internal.h"

#define RESTORE_MEMORY ((1u << CI_UNDO_MEM) | (1u << CI_UNDO_FILL))

void ci_pending_abandon(ci_engine *e, ci_work *w) {
  if (e->state != CI_STATE_VALIDATED && e->state != CI_STATE_STAGING &&
      e->state != CI_STATE_STAGED)
    return;
  w->bytes_restored += ci_undo_unwind(&e->undo, e->pending_undo_start, RESTORE_MEMORY, 0, 1);
  e->state = CI_STATE_EMPTY;
}

/* Moves copy -> original for generation g; returns the largest window. */
static uint32_t generation_moves(ci_engine *e, const ci_generation *g) {
  uint32_t max_slots = 0;
  e->move_count = g->islands;
  for (uint32_t i = 0; i < g->islands; i++) {
    const ci_map_entry *m = &e->map[g->map_first + i];
    ci_move *mv = &e->moves[i];
    mv->from = m->cur;
    mv->to = m->orig;
    mv->size = m->size;
    mv->slots = e->map_return_slots[g->map_first + i];
    if (mv->slots > max_slots)
      max_slots = mv->slots;
  }
  return max_slots;
}

static ci_status rollback_one(ci_engine *e, const ci_cpu_ops *cpu, ci_work *w) {
  ci_generation *g = &e->gens[e->gen_count - 1u];
  (void)generation_moves(e, g);
  ci_status st = ci_ctx_move(e, cpu, 0, w);
  if (st != CI_ST_OK)
    return st; /* generation stays active: original and copy both still valid */
  /* KEEP_COPIES: COMMIT dropped the destination records, so this restores
   * only entry jumps and call sites; the copies stay, retired. */
  w->bytes_restored += ci_undo_unwind(&e->undo, g->undo_start, RESTORE_MEMORY, 0, 1);
  uint32_t keep = (g->plan_flags & CI_PLAN_KEEP_COPIES) != 0;
  for (uint32_t i = 0; i < g->islands; i++)
    e->map[g->map_first + i].flags = CI_MAP_ROLLED_BACK | (keep ? CI_MAP_RETIRED : 0u);
  e->retired_count += keep ? g->islands : 0u;
  e->gen_count--;
  e->total_rollbacks++;
  return CI_ST_OK;
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
  for (uint32_t g = first; g < e->gen_count; g++) {
    uint32_t s = generation_moves(e, &e->gens[g]);
    if (s > max_slots)
      max_slots = s;
  }
  ci_status st = ci_ctx_read(e, cpu, max_slots, w);
  if (st != CI_ST_OK)
    return st; /* refused before any write: a pending plan stays pending too */
  ci_pending_abandon(e, w); /* its staged bytes sit above every generation's */
  while (st == CI_ST_OK && e->gen_count > first)
    st = rollback_one(e, cpu, w);
  return st;
}
