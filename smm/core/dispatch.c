/*
 * Commands -> verbs.  Each verb asserts the pending-plan state it expects:
 *
 *   EMPTY/COMMITTED/ROLLED_BACK --STAGE plan--> VALIDATED --stage--> STAGING
 *     --all chunks--> STAGED --COMMIT--> COMMITTED --ROLLBACK--> ROLLED_BACK
 *   COMMIT plan (fits the budget): validate + stage + commit in this one SMI.
 *   A new plan replaces a pending one (its staged bytes are restored first);
 *   STAGED_CHANGED at COMMIT sends the plan back to STAGING.
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

/* ---- plan verbs --------------------------------------------------------- */

/* Validate the request buffer; on success it becomes the pending plan. */
static ci_status adopt(ci_engine *e, uint32_t size, uint32_t over_budget, ci_work *w) {
  uint8_t *buf = ci_engine_request_buffer(e);
  ci_plan_view view;
  ci_status st = ci_validate(e, buf, size, &view, &w->failed_index);
  if (st != CI_ST_OK)
    return st;
  if (over_budget && view.copy_bytes > e->budget)
    return CI_ST_OVER_BUDGET;
  ci_pending_abandon(e, w);
  e->pending_slot = buf == e->slot[0] ? 0u : 1u;
  e->plan = view;
  e->plan_id = view.header->plan_id;
  e->chunk_total = view.header->chunk_count;
  e->pending_undo_start = e->undo.top;
  e->state = CI_STATE_VALIDATED;
  ci_stage_prepare(e);
  return CI_ST_OK;
}

static ci_status stage_some(ci_engine *e, ci_work *w) {
  ci_status st = ci_stage_run(e, w, e->budget);
  e->state = e->chunks_done == e->plan.header->chunk_count ? CI_STATE_STAGED : CI_STATE_STAGING;
  return st;
}

static ci_status do_stage(ci_engine *e, uint32_t size, ci_work *w) {
  if (size) {
    ci_status st = adopt(e, size, 0, w);
    if (st != CI_ST_OK)
      return st;
  } else if (!plan_pending(e)) {
    return CI_ST_NO_PENDING_PLAN;
  }
  return stage_some(e, w);
}

static ci_status commit_pending(ci_engine *e, const ci_cpu_ops *cpu, ci_work *w) {
  if (!plan_pending(e))
    return CI_ST_NO_PENDING_PLAN;
  if (e->state != CI_STATE_STAGED)
    return CI_ST_NOT_STAGED;
  ci_status st = ci_stage_recheck(e, w);
  if (st != CI_ST_OK) {
    e->state = CI_STATE_STAGING;
    return st;
  }
  st = ci_commit_run(e, cpu, w);
  if (st == CI_ST_OK)
    e->state = CI_STATE_COMMITTED;
  return st;
}

/* Stage and commit in one SMI: nothing ran in between, so no re-check. */
static ci_status commit_plan(ci_engine *e, const ci_cpu_ops *cpu, uint32_t size, ci_work *w) {
  ci_status st = adopt(e, size, 1, w);
  if (st != CI_ST_OK)
    return st;
  st = stage_some(e, w);
  if (st == CI_ST_OK && e->state != CI_STATE_STAGED)
    st = CI_ST_INTERNAL; /* the budget was checked: cannot happen */
  if (st == CI_ST_OK)
    st = ci_commit_run(e, cpu, w);
  if (st != CI_ST_OK) {
    ci_pending_abandon(e, w); /* all or nothing */
    return st;
  }
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

static ci_status do_sample(ci_engine *e, const ci_cpu_ops *cpu, ci_sample_ring *ring,
                           ci_work *w) {
  if (!ring || !ring->capacity)
    return CI_ST_INTERNAL;
  for (uint32_t n = 0; n < cpu->count; n++) {
    uint64_t rip, cr3, cs;
    if (cpu->read(cpu->ctx, n, CI_REG_RIP, &rip) != 0 ||
        cpu->read(cpu->ctx, n, CI_REG_CR3, &cr3) != 0 ||
        cpu->read(cpu->ctx, n, CI_REG_CS, &cs) != 0) {
      w->failed_index = n;
      return CI_ST_CPU_ACCESS;
    }
    ci_sample *s = &ring->slots[ring->head % ring->capacity];
    ci_fill(s, 0, sizeof *s);
    s->rip = rip;
    s->cr3 = cr3;
    s->smi = e->smi;
    s->cpu = (uint16_t)n;
    s->generation = (uint16_t)ci_newest_generation(e);
    s->cpl = (uint8_t)(cs & 3u); /* CS.RPL == CPL */
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
                   command == CI_CMD_SAMPLE;
  int no_payload = command == CI_CMD_QUERY || command == CI_CMD_SAMPLE ||
                   command == CI_CMD_STATS;
  if (command < CI_CMD_QUERY || command > CI_CMD_STATS)
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
  if (command == CI_CMD_STAGE || command == CI_CMD_COMMIT)
    e->total_bytes_written += w.bytes_written;
  if (st == CI_ST_OK && command == CI_CMD_QUERY)
    tail = query_tail(e, resp + sizeof r, resp_max - (uint32_t)sizeof r);
  if (st == CI_ST_OK && command == CI_CMD_STATS)
    tail = stats_tail(e, resp + sizeof r, resp_max - (uint32_t)sizeof r);
  fill_result(e, &r, command, st, &w, cpu->count);
  ci_copy(resp, &r, sizeof r);
  *resp_size = (uint32_t)sizeof r + tail;
  return st;
}
