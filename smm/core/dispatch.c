/*
 * Commands -> verbs.  Each verb asserts the pending-plan state it expects:
 *
 *   EMPTY/COMMITTED/ROLLED_BACK --STAGE plan--> VALIDATED --stage--> STAGING
 *     --all chunks--> STAGED --COMMIT--> COMMITTED --ROLLBACK--> ROLLED_BACK
 *   COMMIT plan (fits the budget): validate + stage + commit in this one SMI.
 *   A new plan replaces a pending one (its staged bytes are restored first)
 *   once it is accepted; a refused request of any kind leaves the pending
 *   plan, its staged bytes and the reported state as they were.  The one
 *   exception is the answer it exists for: STAGED_CHANGED at COMMIT sends
 *   the plan back to STAGING, with the changed chunks to stage again.
 */
#include "internal.h"
#include "mem.h"

static const char *const status_text[] = {
#define CI_STATUS_TEXT_ITEM(num, name, text) [num] = text,
    CI_STATUS_LIST(CI_STATUS_TEXT_ITEM)
#undef CI_STATUS_TEXT_ITEM
};

const char *ci_status_text(uint32_t status) {
  return status < CI_ST__COUNT ? status_text[status] : "unknown status";
}

void ci_engine_init(ci_engine *e, uint8_t *slot0, uint8_t *slot1, uint8_t *undo_pool) {
  ci_fill(e, 0, sizeof *e);
  e->slot[0] = slot0;
  e->slot[1] = slot1;
  e->undo.pool = undo_pool;
  e->undo.size = CI_UNDO_POOL_BYTES;
  e->next_generation = 1;
  e->budget = CI_STAGE_BUDGET_DEFAULT;
}

uint32_t ci_budget_clamp(uint32_t requested) {
  if (requested == 0)
    return CI_STAGE_BUDGET_DEFAULT;
  if (requested < CI_MAX_CHUNK_SIZE)
    return CI_MAX_CHUNK_SIZE;
  return requested > CI_STAGE_BUDGET_MAX ? CI_STAGE_BUDGET_MAX : requested;
}

static int plan_pending(const ci_engine *e) {
  return e->state == CI_STATE_VALIDATED || e->state == CI_STATE_STAGING ||
         e->state == CI_STATE_STAGED;
}

uint8_t *ci_engine_request_buffer(ci_engine *e) {
  return e->slot[plan_pending(e) ? 1u - e->pending_slot : e->pending_slot];
}

static int has_dest(const ci_engine *e) {
  for (uint32_t i = 0; i < e->region_count; i++)
    if (e->regions[i].flags & CI_REGION_DEST)
      return 1;
  return 0;
}

/* ---- a pending plan set aside while a COMMIT of a new plan runs ---- */

static void set_aside(ci_engine *e) {
  ci_aside *a = &e->aside;
  a->pending = (uint32_t)plan_pending(e);
  a->state = e->state;
  a->plan_id = e->plan_id;
  a->pending_slot = e->pending_slot;
  a->chunk_total = e->chunk_total;
  a->pending_undo_start = e->pending_undo_start;
  a->chunks_done = e->chunks_done;
  a->chunk_next = e->chunk_next;
  a->undo_top = a->redo_end = e->undo.top;
  a->plan = e->plan;
  ci_copy(a->chunk_smi, e->chunk_smi, e->chunk_total * sizeof e->chunk_smi[0]);
  ci_copy(a->chunk_fixup, e->chunk_fixup, e->chunk_total * sizeof e->chunk_fixup[0]);
  ci_copy(a->chunk_fast, e->chunk_fast, e->chunk_total * sizeof e->chunk_fast[0]);
  ci_copy(a->return_slots, e->return_slots, sizeof a->return_slots);
}

/* The request was refused: the new plan's writes are already unwound; undo
 * the old plan's abandonment (its staged bytes come back) and its fields. */
static void put_back(ci_engine *e, ci_work *w) {
  ci_aside *a = &e->aside;
  w->bytes_restored += ci_undo_unwind(&e->undo, a->undo_top, 1);
  e->state = a->state;
  e->plan_id = a->plan_id;
  e->pending_slot = a->pending_slot;
  e->chunk_total = a->chunk_total;
  e->pending_undo_start = a->pending_undo_start;
  e->chunks_done = a->chunks_done;
  e->chunk_next = a->chunk_next;
  e->plan = a->plan;
  ci_copy(e->chunk_smi, a->chunk_smi, a->chunk_total * sizeof e->chunk_smi[0]);
  ci_copy(e->chunk_fixup, a->chunk_fixup, a->chunk_total * sizeof e->chunk_fixup[0]);
  ci_copy(e->chunk_fast, a->chunk_fast, a->chunk_total * sizeof e->chunk_fast[0]);
  ci_copy(e->return_slots, a->return_slots, sizeof e->return_slots);
}

/* The request succeeded: the old plan's records and the ones that undid its
 * abandonment go; the new generation's records move down over them. */
static void forget_aside(ci_engine *e) {
  ci_aside *a = &e->aside;
  if (!a->pending)
    return;
  uint32_t gap = a->redo_end - a->pending_undo_start;
  ci_undo_drop(&e->undo, a->pending_undo_start, a->redo_end);
  e->gens[e->gen_count - 1u].undo_start -= gap;
}

/* ---- plan verbs --------------------------------------------------------- */

/* The physical-address table that goes with plan slot buf. */
static ci_plan_phys *slot_phys(ci_engine *e, const uint8_t *buf) {
  return &e->phys[buf == e->slot[0] ? 0u : 1u];
}

/* Make the validated plan in buf the pending one. */
static void adopt(ci_engine *e, uint8_t *buf, const ci_plan_view *view) {
  e->pending_slot = buf == e->slot[0] ? 0u : 1u;
  e->plan = *view;
  e->plan_id = view->header->plan_id;
  e->chunk_total = view->header->chunk_count;
  e->pending_undo_start = e->undo.top;
  e->state = CI_STATE_VALIDATED;
  ci_stage_prepare(e);
}

static ci_status stage_some(ci_engine *e, ci_work *w) {
  ci_status st = ci_stage_run(e, w, e->budget);
  e->state = e->chunks_done == e->plan.header->chunk_count ? CI_STATE_STAGED : CI_STATE_STAGING;
  return st;
}

/* STAGE with a plan: once it validates it replaces a pending plan (whose
 * staged bytes are restored); staging it cannot be refused (the undo room
 * was reserved by the validator). */
static ci_status stage_plan(ci_engine *e, uint32_t size, ci_work *w) {
  uint8_t *buf = ci_engine_request_buffer(e);
  ci_plan_view view;
  ci_status st = ci_validate(e, buf, size, &view, slot_phys(e, buf), &w->failed_index);
  if (st != CI_ST_OK)
    return st;
  ci_pending_abandon(e, w);
  adopt(e, buf, &view);
  return stage_some(e, w);
}

static ci_status do_stage(ci_engine *e, uint32_t size, ci_work *w) {
  if (size)
    return stage_plan(e, size, w);
  if (!plan_pending(e))
    return CI_ST_NO_PENDING_PLAN;
  ci_status st = ci_space_recheck(e, w); /* guest code ran since the last SMI */
  if (st != CI_ST_OK)
    return st;
  return stage_some(e, w);
}

static ci_status commit_pending(ci_engine *e, const ci_cpu_ops *cpu, ci_work *w) {
  if (!plan_pending(e))
    return CI_ST_NO_PENDING_PLAN;
  if (e->state != CI_STATE_STAGED)
    return CI_ST_NOT_STAGED;
  ci_status st = ci_space_recheck(e, w);
  if (st != CI_ST_OK)
    return st;
  st = ci_stage_recheck(e, w);
  if (st != CI_ST_OK) {
    e->state = CI_STATE_STAGING;
    return st;
  }
  st = ci_commit_run(e, cpu, w);
  if (st == CI_ST_OK)
    e->state = CI_STATE_COMMITTED;
  return st;
}

/*
 * Validate, stage and commit in one SMI, all or nothing.  A pending plan is
 * abandoned only with every restore logged above its records (the "redo"),
 * so that a refusal at any later step -- a changed chunk, a CPU context --
 * unwinds the new plan, then the redo, and the pending plan is back with its
 * staged bytes; on success its records and the redo are dropped.
 */
static ci_status commit_plan(ci_engine *e, const ci_cpu_ops *cpu, uint32_t size, ci_work *w) {
  uint8_t *buf = ci_engine_request_buffer(e);
  ci_plan_view view;
  ci_status st = ci_validate(e, buf, size, &view, slot_phys(e, buf), &w->failed_index);
  if (st != CI_ST_OK)
    return st;
  if (view.copy_bytes > e->budget)
    return CI_ST_OVER_BUDGET;
  if (plan_pending(e)) { /* its staged bytes are put back below: only into its own pages */
    st = ci_space_recheck(e, w); /* else refused (failed_index: the pending plan's); a */
    if (st != CI_ST_OK)          /* STAGE of a new plan drops it with nothing written */
      return st;
  }
  set_aside(e);
  if (e->aside.pending) {
    uint64_t need = (uint64_t)e->undo.top +
                    ci_undo_relog_cost(&e->undo, e->pending_undo_start) + view.undo_need;
    if (need > e->undo.size)
      return CI_ST_UNDO_FULL; /* the validator counted the pending plan's room as free */
    w->bytes_restored += ci_undo_unwind_logged(&e->undo, e->pending_undo_start);
    e->aside.redo_end = e->undo.top;
  }
  adopt(e, buf, &view);
  st = stage_some(e, w);
  if (st == CI_ST_OK && e->state != CI_STATE_STAGED)
    st = CI_ST_INTERNAL; /* the budget was checked: cannot happen */
  if (st == CI_ST_OK)
    st = ci_stage_recheck(e, w); /* the copies, as read once from the source */
  if (st == CI_ST_OK)
    st = ci_commit_run(e, cpu, w);
  if (st != CI_ST_OK) {
    e->state = CI_STATE_STAGED;
    ci_pending_abandon(e, w);
    put_back(e, w);
    w->bytes_written = w->bytes_skipped = w->fixups_applied = 0;
    return st;
  }
  forget_aside(e);
  e->state = CI_STATE_COMMITTED;
  return CI_ST_OK;
}

static ci_status do_rollback(ci_engine *e, const ci_cpu_ops *cpu, uint32_t size, ci_work *w) {
  if (size != 4)
    return CI_ST_BAD_REQUEST;
  uint32_t generation = ci_le32(ci_engine_request_buffer(e));
  ci_status st = ci_rollback_run(e, cpu, generation, w);
  if (st == CI_ST_OK)
    e->state = CI_STATE_ROLLED_BACK;
  return st;
}

/* Every CPU is read before the first sample is written: a refused SAMPLE
 * writes nothing. */
static ci_status do_sample(ci_engine *e, const ci_cpu_ops *cpu, ci_sample_ring *ring,
                           ci_work *w) {
  if (!ring || !ring->capacity)
    return CI_ST_INTERNAL;
  for (uint32_t n = 0; n < cpu->count; n++) {
    uint64_t cs;
    if (cpu->read(cpu->ctx, n, CI_REG_RIP, &e->ctx_rip[n]) != 0 ||
        cpu->read(cpu->ctx, n, CI_REG_CR3, &e->ctx_cr3[n]) != 0 ||
        cpu->read(cpu->ctx, n, CI_REG_CS, &cs) != 0) {
      w->failed_index = n;
      return CI_ST_CPU_ACCESS;
    }
    e->ctx_cpl[n] = (uint8_t)(cs & 3u); /* CS.RPL == CPL */
  }
  for (uint32_t n = 0; n < cpu->count; n++) {
    ci_sample *s = &ring->slots[ring->head % ring->capacity];
    ci_fill(s, 0, sizeof *s);
    s->rip = e->ctx_rip[n];
    s->cr3 = e->ctx_cr3[n];
    s->smi = e->smi;
    s->cpu = (uint16_t)n;
    s->generation = (uint16_t)ci_newest_generation(e);
    s->cpl = e->ctx_cpl[n];
    ring->head++;
    w->samples++;
  }
  return CI_ST_OK;
}

/* ---- responses ---------------------------------------------------------- */

static uint32_t query_tail(const ci_engine *e, uint8_t *out, uint32_t room) {
  ci_query_info q;
  uint32_t need = sizeof q + e->region_count * sizeof(ci_region_info);
  if (need > room)
    return 0;
  ci_fill(&q, 0, sizeof q);
  q.engine_version = CI_ENGINE_VERSION;
  q.plan_version = CI_PLAN_VERSION;
  q.max_islands = CI_MAX_ISLANDS;
  q.max_fixups = CI_MAX_FIXUPS;
  q.max_callsites = CI_MAX_CALLSITES;
  q.max_chunks = CI_MAX_CHUNKS;
  q.max_targets = CI_MAX_TARGETS;
  q.max_cpus = CI_MAX_CPUS;
  q.plan_max_size = CI_PLAN_MAX_SIZE;
  q.stage_budget = e->budget;
  q.region_count = e->region_count;
  q.locked = e->locked;
  q.generations = e->gen_count;
  q.undo_bytes_used = e->undo.top;
  q.total_bytes_written = e->total_bytes_written;
  q.total_relocations = e->total_relocations;
  q.total_rollbacks = e->total_rollbacks;
  ci_copy(out, &q, sizeof q);
  ci_copy(out + sizeof q, e->regions, e->region_count * sizeof(ci_region_info));
  return need;
}

static uint32_t stats_tail(const ci_engine *e, uint8_t *out, uint32_t room) {
  uint32_t need = e->map_count * sizeof(ci_map_entry);
  if (need > room)
    return 0;
  ci_copy(out, e->map, need);
  return need;
}

static void fill_result(const ci_engine *e, ci_result *r, uint32_t command, ci_status st,
                        const ci_work *w, uint32_t cpus) {
  ci_fill(r, 0, sizeof *r);
  r->command = command;
  r->status = st;
  r->plan_id = e->plan_id;
  r->generation = ci_newest_generation(e);
  r->state = e->state;
  r->smi = e->smi;
  r->chunks_done = e->chunks_done;
  r->chunks_total = e->chunk_total;
  r->bytes_written = w->bytes_written;
  r->bytes_skipped = w->bytes_skipped;
  r->fixups_applied = w->fixups_applied;
  r->callsites_patched = w->callsites_patched;
  r->contexts_translated = w->contexts_translated;
  r->returns_translated = w->returns_translated;
  r->bytes_restored = w->bytes_restored;
  r->samples = w->samples;
  r->cpus = cpus;
  r->map_count = e->map_count;
  r->failed_index = w->failed_index;
}

/* ---- dispatch ----------------------------------------------------------- */

static ci_status run(ci_engine *e, const ci_cpu_ops *cpu, ci_sample_ring *ring,
                     uint32_t command, uint32_t size, ci_work *w) {
  int needs_cpus = command == CI_CMD_COMMIT || command == CI_CMD_ROLLBACK ||
                   command == CI_CMD_SAMPLE || command == CI_CMD_RECLAIM;
  int no_payload = command == CI_CMD_QUERY || command == CI_CMD_SAMPLE ||
                   command == CI_CMD_STATS || command == CI_CMD_RECLAIM;
  if (command < CI_CMD_QUERY || command > CI_CMD_RECLAIM)
    return CI_ST_BAD_COMMAND;
  if (size > CI_PLAN_MAX_SIZE || (no_payload && size != 0))
    return CI_ST_BAD_REQUEST;
  if (needs_cpus && cpu->count > CI_MAX_CPUS)
    return CI_ST_TOO_MANY_CPUS;
  if ((command == CI_CMD_STAGE || command == CI_CMD_COMMIT) && !has_dest(e))
    return CI_ST_NOT_READY;
  switch (command) {
  case CI_CMD_STAGE:
    return do_stage(e, size, w);
  case CI_CMD_COMMIT:
    return size ? commit_plan(e, cpu, size, w) : commit_pending(e, cpu, w);
  case CI_CMD_ROLLBACK:
    return do_rollback(e, cpu, size, w);
  case CI_CMD_SAMPLE:
    return do_sample(e, cpu, ring, w);
  case CI_CMD_RECLAIM:
    return ci_reclaim_run(e, cpu, w);
  default: /* QUERY, STATS: the tail is the answer */
    return CI_ST_OK;
  }
}

ci_status ci_dispatch(ci_engine *e, const ci_cpu_ops *cpu, ci_sample_ring *ring,
                      uint32_t command, uint32_t req_size, uint32_t budget, uint32_t smi,
                      uint8_t *resp, uint32_t resp_max, uint32_t *resp_size) {
  ci_work w;
  ci_result r;
  uint32_t tail = 0;
  ci_fill(&w, 0, sizeof w);
  w.failed_index = CI_NO_INDEX;
  *resp_size = 0;
  if (resp_max < sizeof r)
    return CI_ST_INTERNAL;
  e->smi = smi;
  e->epoch = e->epoch + 1u ? e->epoch + 1u : 1u; /* never 0: 0 marks "unstaged" */
  e->budget = ci_budget_clamp(budget);
  ci_status st = run(e, cpu, ring, command, req_size, &w);
  if (st == CI_ST_OK && (command == CI_CMD_STAGE || command == CI_CMD_COMMIT))
    e->total_bytes_written += w.bytes_written; /* a refused request wrote nothing */
  if (st == CI_ST_OK && command == CI_CMD_QUERY)
    tail = query_tail(e, resp + sizeof r, resp_max - (uint32_t)sizeof r);
  if (st == CI_ST_OK && command == CI_CMD_STATS)
    tail = stats_tail(e, resp + sizeof r, resp_max - (uint32_t)sizeof r);
  if (st == CI_ST_OK && command == CI_CMD_RECLAIM)
    tail = ci_reclaim_tail(e, resp + sizeof r, resp_max - (uint32_t)sizeof r);
  fill_result(e, &r, command, st, &w, cpu->count);
  ci_copy(resp, &r, sizeof r);
  *resp_size = (uint32_t)sizeof r + tail;
  return st;
}
