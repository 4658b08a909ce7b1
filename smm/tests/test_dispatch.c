/* Commands, request sizes, the allow-list, and the QUERY/STATS/SAMPLE answers. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static void test_commands(void) {
  machine *m = machine_new();
  uint32_t word = 0;
  fake_snapshot before;
  fake_snapshot_take(&before);
  CHECK_ST(machine_smi(m, 0, 0, 0), CI_ST_BAD_COMMAND);
  CHECK_ST(machine_smi(m, CI_CMD_RECLAIM + 1, 0, 0), CI_ST_BAD_COMMAND);
  CHECK_EQ(machine_result(m)->command, CI_CMD_RECLAIM + 1);
  CHECK_ST(machine_smi(m, CI_CMD_QUERY, &word, 4), CI_ST_BAD_REQUEST);
  CHECK_ST(machine_smi(m, CI_CMD_SAMPLE, &word, 1), CI_ST_BAD_REQUEST);
  CHECK_ST(machine_smi(m, CI_CMD_STATS, &word, 4), CI_ST_BAD_REQUEST);
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &word, 0), CI_ST_BAD_REQUEST);
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &word, 3), CI_ST_BAD_REQUEST);
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, g_plan, 8), CI_ST_BAD_REQUEST);
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &word, 4), CI_ST_NOTHING_TO_ROLLBACK);
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, 0, 0), CI_ST_NO_PENDING_PLAN);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, 0, 0), CI_ST_NO_PENDING_PLAN);
  CHECK_EQ(machine_result(m)->smi, m->smi);
  CHECK_EQ(machine_result(m)->failed_index, CI_NO_INDEX);
  /* the response needs room for ci_result */
  uint32_t size = 1;
  CHECK_ST(ci_dispatch(&m->engine, &m->ops, &m->ring, CI_CMD_QUERY, 0, 0, 99, m->response,
                       sizeof(ci_result) - 1, &size),
           CI_ST_INTERNAL);
  CHECK_EQ(size, 0);
  CHECK_EQ(fake_snapshot_diff(&before), 0); /* none of these touched memory */
  CHECK_EQ(m->cpus.writes, 0);
  fake_snapshot_free(&before);
  machine_free(m);
}

static void test_budget_clamp(void) {
  CHECK_EQ(ci_budget_clamp(0), CI_STAGE_BUDGET_DEFAULT);
  CHECK_EQ(ci_budget_clamp(1), CI_MAX_CHUNK_SIZE);
  CHECK_EQ(ci_budget_clamp(CI_MAX_CHUNK_SIZE - 1), CI_MAX_CHUNK_SIZE);
  CHECK_EQ(ci_budget_clamp(CI_MAX_CHUNK_SIZE), CI_MAX_CHUNK_SIZE);
  CHECK_EQ(ci_budget_clamp(CI_STAGE_BUDGET_MAX), CI_STAGE_BUDGET_MAX);
  CHECK_EQ(ci_budget_clamp(CI_STAGE_BUDGET_MAX + 1), CI_STAGE_BUDGET_MAX);
}

static void test_regions(void) {
  static uint8_t slots[2][16];
  ci_engine *e = malloc(sizeof *e);
  ci_engine_init(e, slots[0], slots[1], 0);
  CHECK_ST(ci_region_add(e, 0x1000, 0, CI_REGION_SOURCE), CI_ST_REGION_INVALID);
  CHECK_ST(ci_region_add(e, 0xFFFFFFFFFFFFF000ULL, 0x2000, CI_REGION_SOURCE),
           CI_ST_REGION_INVALID);
  CHECK_ST(ci_region_add(e, 0xFFFFFFFFFFFFF000ULL, 0x1000, CI_REGION_SOURCE), CI_ST_OK);
  CHECK_ST(ci_region_add(e, 0x1000, 0x1000, 0), CI_ST_REGION_INVALID);
  CHECK_ST(ci_region_add(e, 0x1000, 0x1000, 0x20), CI_ST_REGION_INVALID);
  CHECK_ST(ci_region_add(e, 0x1000, 0x1000, CI_REGION_SMRAM | CI_REGION_DEST),
           CI_ST_REGION_INVALID);
  CHECK_ST(ci_region_add(e, 0x1000, 0x1000, CI_REGION_DRIVER | CI_REGION_SOURCE),
           CI_ST_REGION_INVALID);
  CHECK_ST(ci_region_add(e, 0x1000, 0x1000, CI_REGION_DRIVER | CI_REGION_SMRAM),
           CI_ST_REGION_INVALID);
  CHECK_ST(ci_region_add(e, 0x1000, 0x1000, CI_REGION_SMRAM), CI_ST_OK);
  CHECK_ST(ci_region_add(e, 0x1FFF, 0x10, CI_REGION_DEST), CI_ST_REGION_INVALID);
  CHECK_ST(ci_region_add(e, 0x0FF0, 0x11, CI_REGION_DEST), CI_ST_REGION_INVALID);
  CHECK_ST(ci_region_add(e, 0x2000, 0x10, CI_REGION_DEST), CI_ST_OK); /* adjacent */
  for (uint64_t i = 3; i < CI_MAX_REGIONS; i++)
    CHECK_ST(ci_region_add(e, 0x10000 * i, 0x100, CI_REGION_STACK), CI_ST_OK);
  CHECK_EQ(e->region_count, CI_MAX_REGIONS);
  CHECK_ST(ci_region_add(e, 0x10000000, 0x100, CI_REGION_STACK), CI_ST_REGION_INVALID);
  ci_engine_lock(e);
  CHECK_ST(ci_region_add(e, 0x20000000, 0x100, CI_REGION_STACK), CI_ST_LOCKED);
  free(e);

  /* an engine without destinations cannot stage or commit */
  machine *m = machine_new();
  plan_builder *pb = malloc(sizeof *pb);
  pb_init(pb, 1);
  pb_island(pb, T_SRC, T_ARENA, 0x40, CI_ISLAND_ENTRY_REL32);
  pb_chunks(pb, 0x40);
  uint32_t size = pb_encode(pb, g_plan);
  fake_snapshot before;
  fake_snapshot_take(&before);
  m->engine.region_count = 1; /* only SMRAM */
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, g_plan, size), CI_ST_NOT_READY);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, size), CI_ST_NOT_READY);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, 0, 0), CI_ST_NOT_READY);
  CHECK_EQ(fake_snapshot_diff(&before), 0);
  fake_snapshot_free(&before);
  free(pb);
  CHECK_ST(machine_smi(m, CI_CMD_QUERY, 0, 0), CI_ST_OK);
  machine_free(m);
}

static void test_query_stats_sample(void) {
  machine *m = machine_new();
  plan_builder *pb = malloc(sizeof *pb);
  m->budget = 0;
  CHECK_ST(machine_smi(m, CI_CMD_QUERY, 0, 0), CI_ST_OK);
  const ci_query_info *q = (const ci_query_info *)(m->response + sizeof(ci_result));
  const ci_region_info *r = (const ci_region_info *)(q + 1);
  CHECK_EQ(m->response_size, sizeof(ci_result) + sizeof *q + 5 * sizeof *r);
  CHECK_EQ(q->engine_version, CI_ENGINE_VERSION);
  CHECK_EQ(q->max_fixups, CI_MAX_FIXUPS);
  CHECK_EQ(q->plan_max_size, CI_PLAN_MAX_SIZE);
  CHECK_EQ(q->stage_budget, CI_STAGE_BUDGET_DEFAULT);
  CHECK_EQ(q->region_count, 5);
  CHECK_EQ(q->locked, 1);
  CHECK_EQ(r[1].base, T_ARENA);
  CHECK_EQ(r[1].flags, CI_REGION_SOURCE | CI_REGION_DEST | CI_REGION_STACK);
  CHECK_EQ(r[0].flags, CI_REGION_SMRAM);

  pb_init(pb, 77);
  pb_island(pb, T_SRC + 0x1000, T_ARENA + 0x1000, 0x40, CI_ISLAND_ENTRY_REL32);
  pb_island(pb, T_SRC + 0x2000, T_ARENA + 0x2000, 0x40, CI_ISLAND_ENTRY_NONE);
  pb_chunks(pb, 0x40);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, pb_encode(pb, g_plan)), CI_ST_OK);
  CHECK_ST(machine_smi(m, CI_CMD_STATS, 0, 0), CI_ST_OK);
  const ci_map_entry *me = (const ci_map_entry *)(m->response + sizeof(ci_result));
  CHECK_EQ(m->response_size, sizeof(ci_result) + 2 * sizeof *me);
  CHECK_EQ(machine_result(m)->map_count, 2);
  CHECK_EQ(me[1].orig, T_SRC + 0x2000);
  CHECK_EQ(me[1].cur, T_ARENA + 0x2000);
  CHECK_EQ(me[1].island_id, 101);
  CHECK_EQ(me[1].generation, 1);
  CHECK_EQ(me[1].flags, CI_MAP_ACTIVE);
  CHECK_ST(machine_smi(m, CI_CMD_QUERY, 0, 0), CI_ST_OK);
  CHECK_EQ(q->total_relocations, 2);
  CHECK_EQ(q->total_bytes_written, 0x80);
  CHECK_EQ(q->generations, 1);
  CHECK(q->undo_bytes_used > 0);

  /* SAMPLE: one record per CPU, ring wraps at its capacity */
  m->cpus.rip[2] = 0xABCDEF;
  m->cpus.cr3[2] = 0x12345000 | 0x7; /* PCID bits kept as found */
  m->cpus.cs[2] = 0x33;              /* Linux's user code selector: CPL 3 */
  for (uint32_t k = 0; k < 17; k++)
    CHECK_ST(machine_smi(m, CI_CMD_SAMPLE, 0, 0), CI_ST_OK);
  CHECK_EQ(machine_result(m)->samples, 4);
  CHECK_EQ(m->ring.head, 68);
  const ci_sample *s = &m->ring_slots[(68 - 2) % 64];
  CHECK_EQ(s->rip, 0xABCDEF);
  CHECK_EQ(s->cpu, 2);
  CHECK_EQ(s->smi, m->smi);
  CHECK_EQ(s->generation, 1);
  CHECK_EQ(s->cr3, 0x12345007);
  CHECK_EQ(s->cpl, 3);
  CHECK_EQ(s->reserved0 | s->reserved1 | s->reserved2, 0);
  CHECK_EQ(m->ring_slots[(68 - 3) % 64].cpl, 0);
  CHECK_EQ(m->ring_slots[(68 - 3) % 64].cr3, 0x5000);
  m->cpus.fail_read = 1;
  CHECK_ST(machine_smi(m, CI_CMD_SAMPLE, 0, 0), CI_ST_CPU_ACCESS);
  CHECK_EQ(machine_result(m)->failed_index, 1);
  uint32_t gen = 0;
  m->cpus.fail_read = -1;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);
  CHECK_ST(machine_smi(m, CI_CMD_STATS, 0, 0), CI_ST_OK);
  CHECK_EQ(me[0].flags, CI_MAP_ROLLED_BACK); /* history kept */
  CHECK_ST(machine_smi(m, CI_CMD_QUERY, 0, 0), CI_ST_OK);
  CHECK_EQ(q->total_rollbacks, 1);
  CHECK_EQ(q->undo_bytes_used, 0);
  CHECK_EQ(machine_result(m)->state, CI_STATE_ROLLED_BACK);
  CHECK_EQ(machine_result(m)->plan_id, 77);
  free(pb);
  machine_free(m);
}

/* A refused ROLLBACK leaves a pending plan alone; an accepted one drops it. */
static void test_rollback_and_pending(void) {
  machine *m = machine_new();
  plan_builder *pb = malloc(sizeof *pb);
  pb_init(pb, 5);
  pb_island(pb, T_SRC + 0x1000, T_ARENA + 0x1000, 0x2000, CI_ISLAND_ENTRY_REL32);
  pb_chunks(pb, 0x1000);
  uint32_t size = pb_encode(pb, g_plan);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, size), CI_ST_OK);
  pb_init(pb, 6);
  pb_island(pb, T_SRC + 0x4000, T_ARENA + 0x4000, 0x2000, CI_ISLAND_ENTRY_REL32);
  pb_chunks(pb, 0x1000);
  size = pb_encode(pb, g_plan);
  m->budget = 4096;
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, g_plan, size), CI_ST_OK);
  CHECK_EQ(machine_result(m)->state, CI_STATE_STAGING);
  CHECK_EQ(machine_result(m)->bytes_written, 0x1000);
  fake_snapshot before;
  fake_snapshot_take(&before);
  uint32_t gen = 7;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_BAD_GENERATION);
  CHECK_EQ(machine_result(m)->state, CI_STATE_STAGING);
  m->cpus.fail_read = 0;
  gen = 0;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_CPU_ACCESS);
  CHECK_EQ(machine_result(m)->state, CI_STATE_STAGING);
  CHECK_EQ(fake_snapshot_diff(&before), 0);
  m->cpus.fail_read = -1;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);
  CHECK_EQ(machine_result(m)->state, CI_STATE_ROLLED_BACK);
  CHECK_EQ(machine_result(m)->bytes_restored, 0x1000 + 0x2000 + 5); /* staged + gen 1 */
  CHECK_EQ(m->engine.undo.top, 0);
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, 0, 0), CI_ST_NO_PENDING_PLAN);
  fake_snapshot_free(&before);
  free(pb);
  machine_free(m);
}

void suite_dispatch(void) {
  test_rollback_and_pending();
  test_commands();
  test_budget_clamp();
  test_regions();
  test_query_stats_sample();
}
