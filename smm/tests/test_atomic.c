/*
 * A rejected request changes nothing (issue 16, part 1): with a plan pending
 * mid-stage (STAGING) or fully staged (STAGED), and with or without an active
 * generation, every kind of refusal of every verb leaves memory, the CPU
 * registers, the sample ring, the pending plan (its slot, tables and undo
 * records) and the engine's reported state exactly as they were; the pending
 * plan then still stages and commits.
 */
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define A_SRC  (T_SRC + 0x10000)
#define A_DST  (T_ARENA + 0x100000)
#define A_SIZE 0x3800u /* 4 chunks of 4 KiB (the last shorter) */
#define G_SRC  (T_SRC + 0x40000)
#define G_DST  (T_ARENA + 0x200000)
#define B_SRC  (T_SRC + 0x60000)

/* Everything a refused request must leave alone. */
typedef struct world {
  ci_engine engine;
  uint8_t *undo;    /* pool bytes [0, top) */
  uint8_t *pending; /* the pending plan's slot */
  fake_snapshot mem;
  fake_cpus cpus;
  ci_sample ring_slots[64];
  uint32_t ring_head;
} world;

/* Fields that are per-SMI or scratch of one request (never reported). */
static void scrub(ci_engine *e) {
  e->smi = e->epoch = e->budget = 0;
  memset(e->moves, 0, sizeof e->moves);
  e->move_count = 0;
  memset(e->ctx_rip, 0, sizeof e->ctx_rip);
  memset(e->ctx_rsp, 0, sizeof e->ctx_rsp);
  memset(e->ctx_slots, 0, sizeof e->ctx_slots);
  memset(e->ctx_moved, 0, sizeof e->ctx_moved);
  memset(e->ctx_cr3, 0, sizeof e->ctx_cr3);
  memset(e->ctx_stack_pa, 0, sizeof e->ctx_stack_pa);
  memset(e->ctx_cpl, 0, sizeof e->ctx_cpl);
  memset(e->ctx_win, 0, sizeof e->ctx_win);
  memset(e->callsite_rel, 0, sizeof e->callsite_rel);
  memset(&e->aside, 0, sizeof e->aside);
  /* the request slot's physical addresses are the validator's scratch, like
   * the slot itself (a pending plan's are not) */
  int pending = e->state == CI_STATE_VALIDATED || e->state == CI_STATE_STAGING ||
                e->state == CI_STATE_STAGED;
  for (uint32_t k = 0; k < 2; k++)
    if (!pending || k != e->pending_slot)
      memset(&e->phys[k], 0, sizeof e->phys[k]);
  /* per-plan tables beyond the plan's chunks hold nothing */
  for (uint32_t c = e->chunk_total; c < CI_MAX_CHUNKS; c++)
    e->chunk_smi[c] = e->chunk_fixup[c] = e->chunk_fast[c] = 0;
}

static world *world_take(const machine *m) {
  world *w = malloc(sizeof *w);
  w->engine = m->engine;
  scrub(&w->engine);
  w->undo = malloc(m->engine.undo.top + 1u);
  memcpy(w->undo, m->engine.undo.pool, m->engine.undo.top);
  w->pending = malloc(CI_PLAN_MAX_SIZE);
  memcpy(w->pending, m->engine.slot[m->engine.pending_slot], CI_PLAN_MAX_SIZE);
  fake_snapshot_take(&w->mem);
  w->cpus = m->cpus;
  memcpy(w->ring_slots, m->ring_slots, sizeof w->ring_slots);
  w->ring_head = m->ring.head;
  return w;
}

/* Names of what differs, or "" if nothing does. */
static const char *world_diff(const world *w, const machine *m) {
  ci_engine now = m->engine;
  scrub(&now);
  if (fake_snapshot_diff(&w->mem))
    return "memory";
  if (memcmp(w->cpus.rip, m->cpus.rip, sizeof w->cpus.rip) ||
      memcmp(w->cpus.rsp, m->cpus.rsp, sizeof w->cpus.rsp))
    return "registers";
  if (w->ring_head != m->ring.head || memcmp(w->ring_slots, m->ring_slots, sizeof w->ring_slots))
    return "sample ring";
  if (now.state != w->engine.state || now.plan_id != w->engine.plan_id ||
      now.chunks_done != w->engine.chunks_done || now.chunk_total != w->engine.chunk_total)
    return "reported state";
  if (memcmp(&now, &w->engine, sizeof now))
    return "engine fields";
  if (memcmp(w->undo, m->engine.undo.pool, m->engine.undo.top))
    return "undo log";
  int pending = now.state == CI_STATE_VALIDATED || now.state == CI_STATE_STAGING ||
                now.state == CI_STATE_STAGED;
  if (pending && memcmp(w->pending, m->engine.slot[m->engine.pending_slot], CI_PLAN_MAX_SIZE))
    return "pending plan slot";
  return "";
}

static void world_free(world *w) {
  fake_snapshot_free(&w->mem);
  free(w->undo);
  free(w->pending);
  free(w);
}

static plan_builder *pb;
static uint8_t *g_req;

/* Expect `command` with req to be refused with `want` and to change nothing;
 * the response names the pending plan and its state. */
static void refused(machine *m, uint32_t command, const void *req, uint32_t size, ci_status want,
                    const char *what, int line) {
  world *w = world_take(m);
  ci_status st = machine_smi(m, command, req, size);
  const char *diff = world_diff(w, m);
  const ci_result *r = machine_result(m);
  g_checks++;
  if (st != want || *diff || r->plan_id != w->engine.plan_id || r->state != w->engine.state ||
      r->chunks_done != w->engine.chunks_done) {
    g_failures++;
    fprintf(stderr,
            "test_atomic.c:%d: %s: status %u (%s), expected %u (%s); changed: %s; reply plan %u "
            "state %u, expected plan %u state %u\n",
            line, what, st, ci_status_text(st), want, ci_status_text(want),
            *diff ? diff : "nothing", r->plan_id, r->state, w->engine.plan_id, w->engine.state);
  }
  world_free(w);
}
#define REFUSED(m, cmd, req, size, want, what) refused(m, cmd, req, size, want, what, __LINE__)

/* Plan B: one island whose destination reuses plan A's (allowed), a call
 * site, and a rule with a return window.  Returns its size in g_req. */
static uint32_t plan_b(uint32_t island_size) {
  pb_init(pb, 0xB);
  pb_island(pb, B_SRC, A_DST + 0x800, island_size, CI_ISLAND_ENTRY_REL32);
  pb_rel32(pb, 0, 0x10, B_SRC + 0x200);
  pb_callsite(pb, 0, B_SRC + 0x8000);
  pb_rule(pb, 0, CI_RULE_TRANSLATE_RIP | CI_RULE_TRANSLATE_RETURN, 4);
  pb_chunks(pb, 0x1000);
  return pb_encode(pb, g_req);
}

/* A machine with generation 1 active (when with_gen) and plan A pending in
 * `state` (STAGING after 2 of 4 chunks, or STAGED). */
static machine *setup(uint32_t state, int with_gen) {
  machine *m = machine_new();
  if (with_gen) {
    pb_init(pb, 0x6);
    pb_island(pb, G_SRC, G_DST, 0x400, CI_ISLAND_ENTRY_REL32);
    pb_chunks(pb, 0x400);
    CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, pb_encode(pb, g_plan)), CI_ST_OK);
  }
  pb_init(pb, 0xA);
  pb_island(pb, A_SRC, A_DST, A_SIZE, CI_ISLAND_ENTRY_REL32);
  pb_rel32(pb, 0, 0x1FFE, A_SRC + 0x30); /* straddles chunks 1 and 2 */
  pb_chunks(pb, 0x1000);
  m->budget = 2 * 4096;
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, g_plan, pb_encode(pb, g_plan)), CI_ST_OK);
  if (state == CI_STATE_STAGED)
    CHECK_ST(machine_smi(m, CI_CMD_STAGE, 0, 0), CI_ST_OK);
  CHECK_EQ(machine_result(m)->state, state);
  return m;
}

/* After the refusals, plan A completes and its copy is the oracle's. */
static void finish_a(machine *m) {
  static uint8_t want[A_SIZE];
  pb_init(pb, 0xA);
  pb_island(pb, A_SRC, A_DST, A_SIZE, CI_ISLAND_ENTRY_REL32);
  pb_rel32(pb, 0, 0x1FFE, A_SRC + 0x30);
  pb_final(pb, 0, want);
  m->budget = CI_STAGE_BUDGET_MAX;
  if (m->engine.state == CI_STATE_STAGING)
    CHECK_ST(machine_smi(m, CI_CMD_STAGE, 0, 0), CI_ST_OK);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, 0, 0), CI_ST_OK);
  CHECK_EQ(machine_result(m)->plan_id, 0xA);
  CHECK(memcmp(fake_ptr(A_DST, A_SIZE), want, A_SIZE) == 0);
}

static void each_refusal(uint32_t state, int with_gen) {
  machine *m = setup(state, with_gen);
  uint32_t word = 0, size;
  /* commands and request sizes */
  REFUSED(m, 0, 0, 0, CI_ST_BAD_COMMAND, "command 0");
  REFUSED(m, CI_CMD_RECLAIM + 1, 0, 0, CI_ST_BAD_COMMAND, "command past RECLAIM");
  REFUSED(m, CI_CMD_QUERY, &word, 4, CI_ST_BAD_REQUEST, "QUERY with a payload");
  REFUSED(m, CI_CMD_STATS, &word, 4, CI_ST_BAD_REQUEST, "STATS with a payload");
  REFUSED(m, CI_CMD_SAMPLE, &word, 4, CI_ST_BAD_REQUEST, "SAMPLE with a payload");
  REFUSED(m, CI_CMD_RECLAIM, &word, 4, CI_ST_BAD_REQUEST, "RECLAIM with a payload");
  REFUSED(m, CI_CMD_STAGE, g_req, CI_PLAN_MAX_SIZE + 1, CI_ST_BAD_REQUEST, "STAGE too large");
  /* SAMPLE: CPU 2 cannot be read (CPUs 0 and 1 can) */
  m->cpus.fail_read = 2;
  REFUSED(m, CI_CMD_SAMPLE, 0, 0, CI_ST_CPU_ACCESS, "SAMPLE, CPU 2 unreadable");
  m->cpus.fail_read = -1;
  m->cpus.count = CI_MAX_CPUS + 1;
  REFUSED(m, CI_CMD_SAMPLE, 0, 0, CI_ST_TOO_MANY_CPUS, "SAMPLE, 65 CPUs");
  REFUSED(m, CI_CMD_RECLAIM, 0, 0, CI_ST_TOO_MANY_CPUS, "RECLAIM, 65 CPUs");
  m->cpus.count = 4;
  /* STAGE and COMMIT of a plan that does not validate */
  size = plan_b(0x2000);
  g_req[100] ^= 1;
  REFUSED(m, CI_CMD_STAGE, g_req, size, CI_ST_BAD_DIGEST, "STAGE, bad digest");
  REFUSED(m, CI_CMD_COMMIT, g_req, size, CI_ST_BAD_DIGEST, "COMMIT, bad digest");
  size = plan_b(0x2000);
  fake_ptr(B_SRC + 0x8000, 1)[0] = 0xE9; /* the call site is a jmp now */
  REFUSED(m, CI_CMD_COMMIT, g_req, size, CI_ST_CALLSITE_OPCODE, "COMMIT, call site changed");
  fake_ptr(B_SRC + 0x8000, 1)[0] = 0xE8;
  /* COMMIT of a valid plan refused at commit time, after staging it */
  m->budget = 4096;
  REFUSED(m, CI_CMD_COMMIT, g_req, size, CI_ST_OVER_BUDGET, "COMMIT, over budget");
  m->budget = CI_STAGE_BUDGET_MAX;
  m->cpus.rip[1] = T_ARENA + 0x300000; /* runs arena code ... */
  m->cpus.rsp[1] = T_SRC + 0x100;      /* ... on a stack outside the STACK regions */
  REFUSED(m, CI_CMD_COMMIT, g_req, size, CI_ST_STACK_ACCESS, "COMMIT, STACK_ACCESS");
  m->cpus.rip[1] = T_SRC + 0xF0010;
  m->cpus.rsp[1] = T_STACK + 0x9000;
  m->cpus.fail_read = 3;
  REFUSED(m, CI_CMD_COMMIT, g_req, size, CI_ST_CPU_ACCESS, "COMMIT, CPU 3 unreadable");
  m->cpus.fail_read = -1;
  m->cpus.rip[0] = B_SRC + 0x40; /* CPU 0 moves, then CPU 2's write fails */
  m->cpus.rip[2] = B_SRC + 0x80;
  m->cpus.fail_write = 2;
  REFUSED(m, CI_CMD_COMMIT, g_req, size, CI_ST_CPU_ACCESS, "COMMIT, CPU 2 unwritable");
  m->cpus.fail_write = -1;
  m->cpus.rip[0] = T_SRC + 0xF0000;
  m->cpus.rip[2] = T_SRC + 0xF0020;
  m->cpus.count = CI_MAX_CPUS + 1;
  REFUSED(m, CI_CMD_COMMIT, g_req, size, CI_ST_TOO_MANY_CPUS, "COMMIT, 65 CPUs");
  m->cpus.count = 4;
  /* COMMIT of the pending plan itself */
  if (state == CI_STATE_STAGING)
    REFUSED(m, CI_CMD_COMMIT, 0, 0, CI_ST_NOT_STAGED, "COMMIT while STAGING");
  /* ROLLBACK */
  REFUSED(m, CI_CMD_ROLLBACK, &word, 3, CI_ST_BAD_REQUEST, "ROLLBACK, 3 bytes");
  if (!with_gen) {
    REFUSED(m, CI_CMD_ROLLBACK, &word, 4, CI_ST_NOTHING_TO_ROLLBACK, "ROLLBACK, no generation");
  } else {
    word = 9;
    REFUSED(m, CI_CMD_ROLLBACK, &word, 4, CI_ST_BAD_GENERATION, "ROLLBACK, generation 9");
    word = 0;
    m->cpus.fail_read = 1;
    REFUSED(m, CI_CMD_ROLLBACK, &word, 4, CI_ST_CPU_ACCESS, "ROLLBACK, CPU 1 unreadable");
    m->cpus.fail_read = -1;
    m->cpus.rip[0] = G_DST + 0x10; /* CPU 0 runs the copy; CPU 3 cannot be written */
    m->cpus.rip[3] = G_DST + 0x20;
    m->cpus.fail_write = 3;
    REFUSED(m, CI_CMD_ROLLBACK, &word, 4, CI_ST_CPU_ACCESS, "ROLLBACK, CPU 3 unwritable");
    m->cpus.fail_write = -1;
    m->cpus.rip[0] = T_SRC + 0xF0000;
    m->cpus.rip[3] = T_SRC + 0xF0030;
  }
  finish_a(m);
  machine_free(m);
}

/* Without a pending plan too: a refused one-SMI COMMIT leaves the state
 * (COMMITTED), the reported plan and the address map's history alone. */
static void refusal_without_pending(void) {
  machine *m = machine_new();
  uint32_t word = 0;
  for (uint32_t k = 0; k < 3; k++) { /* history entries in the map */
    pb_init(pb, 0x20 + k);
    pb_island(pb, G_SRC, G_DST, 0x400, CI_ISLAND_ENTRY_REL32);
    pb_chunks(pb, 0x400);
    CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, pb_encode(pb, g_plan)), CI_ST_OK);
    CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &word, 4), CI_ST_OK);
  }
  pb_init(pb, 0x30);
  pb_island(pb, G_SRC, G_DST, 0x400, CI_ISLAND_ENTRY_REL32);
  pb_chunks(pb, 0x400);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, pb_encode(pb, g_plan)), CI_ST_OK);
  uint32_t size = plan_b(0x1000);
  m->cpus.rip[0] = B_SRC + 0x40;
  m->cpus.fail_write = 0;
  REFUSED(m, CI_CMD_COMMIT, g_req, size, CI_ST_CPU_ACCESS, "COMMIT after COMMITTED");
  m->cpus.fail_write = -1;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &word, 4), CI_ST_OK);
  m->cpus.rip[1] = T_ARENA + 0x300000;
  m->cpus.rsp[1] = T_SRC + 0x100;
  REFUSED(m, CI_CMD_COMMIT, g_req, size, CI_ST_STACK_ACCESS, "COMMIT after ROLLED_BACK");
  machine_free(m);
}

void suite_atomic(void) {
  pb = malloc(sizeof *pb);
  g_req = malloc(CI_PLAN_MAX_SIZE + 64);
  each_refusal(CI_STATE_STAGING, 0);
  each_refusal(CI_STATE_STAGED, 0);
  each_refusal(CI_STATE_STAGING, 1);
  each_refusal(CI_STATE_STAGED, 1);
  refusal_without_pending();
  free(g_req);
  free(pb);
}
