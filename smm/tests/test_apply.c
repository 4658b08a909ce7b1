/* Apply, commit and rollback round trips; differential stage; per-SMI budget;
 * re-check at commit. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static uint8_t g_final[CI_MAX_ISLAND_SIZE];
static uint8_t g_orig[CI_MAX_ISLAND_SIZE];

/* A 4 KiB island in T_SRC moved to the arena, with two rel32 fix-ups (one out
 * to T_SRC code, one to the far region), an abs64 into itself, a call site. */
static void sample_plan(plan_builder *pb) {
  pb_init(pb, 7);
  uint32_t i = pb_island(pb, T_SRC + 0x1000, T_ARENA + 0x10000, 0x1000, CI_ISLAND_ENTRY_REL32);
  pb_rel32(pb, i, 0x10, T_SRC + 0x8000);
  pb_rel32(pb, i, 0x3FE, T_SRC + 0x9000); /* straddles the 0x400 chunk boundary */
  pb_abs64(pb, i, 0x800, T_SRC + 0x1000 + 0x40);
  pb_callsite(pb, i, T_SRC + 0x20000);
  pb_target(pb, i, 0x40);
  pb_chunks(pb, 0x400);
}

/* The oracle's bytes, taken before COMMIT patches the source's entry. */
static void expect_final(const plan_builder *pb, uint32_t island) { pb_final(pb, island, g_final); }

static int dst_is_final(const plan_builder *pb, uint32_t island) {
  const ci_island *isl = &pb->islands[island];
  return memcmp(fake_ptr(isl->dst, isl->size), g_final, isl->size) == 0;
}

static void test_commit_one_smi_and_rollback(void) {
  machine *m = machine_new();
  plan_builder *pb = malloc(sizeof *pb);
  sample_plan(pb);
  uint32_t size = pb_encode(pb, g_plan);
  const ci_island *isl = &pb->islands[0];
  expect_final(pb, 0);
  memcpy(g_orig, fake_ptr(isl->src, isl->size), isl->size);
  fake_snapshot before;
  fake_snapshot_take(&before);

  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, size), CI_ST_OK);
  const ci_result *r = machine_result(m);
  CHECK_EQ(r->state, CI_STATE_COMMITTED);
  CHECK_EQ(r->bytes_written, 0x1000);
  CHECK_EQ(r->fixups_applied, 3);
  CHECK_EQ(r->callsites_patched, 1);
  CHECK_EQ(r->generation, 1);
  CHECK_EQ(r->map_count, 1);
  CHECK_EQ(r->plan_id, 7);
  CHECK(dst_is_final(pb, 0));
  /* entry: E9 rel32 to dst */
  const uint8_t *src = fake_ptr(isl->src, 16);
  int32_t rel;
  memcpy(&rel, src + 1, 4);
  CHECK_EQ(src[0], 0xE9);
  CHECK_EQ((uint64_t)((int64_t)isl->src + 5 + rel), isl->dst);
  CHECK(memcmp(src + 5, g_orig + 5, isl->size - 5) == 0); /* rest of original intact */
  /* call site re-pointed at dst */
  const uint8_t *cs = fake_ptr(T_SRC + 0x20000, 5);
  memcpy(&rel, cs + 1, 4);
  CHECK_EQ((uint64_t)((int64_t)(T_SRC + 0x20005) + rel), isl->dst);
  /* exactly: dst bytes, 5 entry bytes, 4 call-site bytes changed */
  CHECK(fake_snapshot_diff(&before) <= 0x1000 + 5 + 4);

  uint32_t gen = 0;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);
  r = machine_result(m);
  CHECK_EQ(r->state, CI_STATE_ROLLED_BACK);
  CHECK_EQ(r->generation, 0);
  CHECK_EQ(r->bytes_restored, 0x1000 + 5 + 4);
  CHECK_EQ(fake_snapshot_diff(&before), 0);
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_NOTHING_TO_ROLLBACK);
  fake_snapshot_free(&before);
  free(pb);
  machine_free(m);
}

static void test_multi_smi_stage_budget(void) {
  machine *m = machine_new();
  plan_builder *pb = malloc(sizeof *pb);
  pb_init(pb, 9);
  uint32_t i = pb_island(pb, T_SRC + 0x10000, T_ARENA + 0x40000, 0x5000, CI_ISLAND_ENTRY_ABS64);
  pb_rel32(pb, i, 0x20, T_SRC);
  pb_chunks(pb, 0x400); /* 20 chunks */
  uint32_t size = pb_encode(pb, g_plan);
  expect_final(pb, 0);
  m->budget = 4096; /* 4 chunks per SMI */
  fake_snapshot before;
  fake_snapshot_take(&before);

  CHECK_ST(machine_smi(m, CI_CMD_STAGE, g_plan, size), CI_ST_OK);
  CHECK_EQ(machine_result(m)->bytes_written, 4096);
  CHECK_EQ(machine_result(m)->chunks_done, 4);
  CHECK_EQ(machine_result(m)->chunks_total, 20);
  CHECK_EQ(machine_result(m)->state, CI_STATE_STAGING);
  CHECK_EQ(fake_snapshot_diff_outside(&before, T_ARENA + 0x40000, 4096), 0);
  fake_snapshot staging;
  fake_snapshot_take(&staging);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, 0, 0), CI_ST_NOT_STAGED);
  CHECK_EQ(fake_snapshot_diff(&staging), 0);
  fake_snapshot_free(&staging);
  unsigned smis = 1;
  while (machine_result(m)->state == CI_STATE_STAGING && smis < 100) {
    CHECK_ST(machine_smi(m, CI_CMD_STAGE, 0, 0), CI_ST_OK);
    CHECK(machine_result(m)->bytes_written <= 4096);
    smis++;
  }
  CHECK_EQ(smis, 5);
  CHECK_EQ(machine_result(m)->state, CI_STATE_STAGED);
  CHECK(dst_is_final(pb, 0));
  /* nothing live yet: source untouched */
  CHECK_EQ(fake_snapshot_diff_outside(&before, T_ARENA + 0x40000, 0x5000), 0);
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, 0, 0), CI_ST_OK); /* staged: no-op */
  CHECK_EQ(machine_result(m)->bytes_written, 0);

  /* guest code wrote into the staged copy between SMIs */
  fake_ptr(T_ARENA + 0x40000 + 0x1234, 1)[0] ^= 0xFF;
  fake_snapshot mid;
  fake_snapshot_take(&mid);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, 0, 0), CI_ST_STAGED_CHANGED);
  CHECK_EQ(machine_result(m)->failed_index, 0x1234 / 0x400);
  CHECK_EQ(machine_result(m)->state, CI_STATE_STAGING);
  CHECK_EQ(fake_snapshot_diff(&mid), 0); /* refused: nothing written */
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, 0, 0), CI_ST_OK);
  CHECK_EQ(machine_result(m)->bytes_written, 0x400); /* only the changed chunk */
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, 0, 0), CI_ST_OK);
  CHECK(dst_is_final(pb, 0));
  const uint8_t *e = fake_ptr(T_SRC + 0x10000, 14);
  uint64_t abs;
  memcpy(&abs, e + 6, 8);
  CHECK(e[0] == 0xFF && e[1] == 0x25 && e[2] == 0 && e[5] == 0);
  CHECK_EQ(abs, T_ARENA + 0x40000);

  uint32_t gen = 1;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);
  CHECK_EQ(fake_snapshot_diff(&before), 0);
  fake_snapshot_free(&before);
  fake_snapshot_free(&mid);
  free(pb);
  machine_free(m);
}

/* A destination that already holds the final bytes is found without writing. */
static void test_differential_skip(void) {
  machine *m = machine_new();
  plan_builder *pb = malloc(sizeof *pb);
  sample_plan(pb);
  uint32_t size = pb_encode(pb, g_plan);
  expect_final(pb, 0);
  uint8_t *dst = fake_ptr(pb->islands[0].dst, 0x1000);
  memcpy(dst, g_final, 0x1000);
  dst[0x900] ^= 1; /* one chunk differs */
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, g_plan, size), CI_ST_OK);
  CHECK_EQ(machine_result(m)->bytes_written, 0x400);
  CHECK_EQ(machine_result(m)->bytes_skipped, 0xC00);
  CHECK_EQ(machine_result(m)->state, CI_STATE_STAGED);
  CHECK(dst_is_final(pb, 0));
  free(pb);
  machine_free(m);
}

/* Generations are LIFO: rolling back the older undoes the newer first. */
static void test_generations_lifo(void) {
  machine *m = machine_new();
  plan_builder *pb = malloc(sizeof *pb);
  fake_snapshot before;
  fake_snapshot_take(&before);
  for (uint32_t g = 0; g < 3; g++) {
    pb_init(pb, 20 + g);
    pb_island(pb, T_SRC + 0x1000 * (g + 1), T_ARENA + 0x10000 * (g + 1), 0x800,
              CI_ISLAND_ENTRY_REL32);
    pb_chunks(pb, 0x400);
    uint32_t size = pb_encode(pb, g_plan);
    if (g == 0) { /* pb_island wrote source bytes: snapshot after the first */
      fake_snapshot_free(&before);
      fake_snapshot_take(&before);
    }
    CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, size), CI_ST_OK);
    CHECK_EQ(machine_result(m)->generation, g + 1);
  }
  uint32_t gen = 9;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_BAD_GENERATION);
  gen = 2;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);
  CHECK_EQ(machine_result(m)->generation, 1);
  CHECK_EQ(m->engine.gen_count, 1);
  CHECK_EQ(m->engine.map_count, 3);
  CHECK_EQ(m->engine.map[2].flags, CI_MAP_ROLLED_BACK);
  CHECK_EQ(m->engine.map[0].flags, CI_MAP_ACTIVE);
  gen = 0;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);
  CHECK_EQ(machine_result(m)->generation, 0);
  /* islands 2 and 3 were written after the snapshot; compare island 1 only */
  CHECK(memcmp(fake_ptr(T_SRC + 0x1000, 0x800), before.bytes[2] + 0x1000, 0x800) == 0);
  CHECK_EQ(m->engine.undo.top, 0);
  fake_snapshot_free(&before);
  free(pb);
  machine_free(m);
}

/* A new plan replaces a pending one; the pending one's staged bytes go back. */
static void test_replace_pending(void) {
  machine *m = machine_new();
  plan_builder *pb = malloc(sizeof *pb);
  pb_init(pb, 1);
  pb_island(pb, T_SRC + 0x1000, T_ARENA + 0x10000, 0x2000, CI_ISLAND_ENTRY_REL32);
  pb_chunks(pb, 0x1000);
  uint32_t size = pb_encode(pb, g_plan);
  fake_snapshot before;
  fake_snapshot_take(&before);
  m->budget = 4096;
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, g_plan, size), CI_ST_OK);
  CHECK_EQ(machine_result(m)->state, CI_STATE_STAGING);
  pb->islands[0].dst = T_ARENA + 0x80000;
  pb->h.plan_id = 2;
  pb_chunks(pb, 0x1000);
  size = pb_encode(pb, g_plan);
  expect_final(pb, 0);
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, g_plan, size), CI_ST_OK);
  CHECK_EQ(machine_result(m)->bytes_restored, 0x1000);
  CHECK_EQ(machine_result(m)->plan_id, 2);
  /* the old plan's chunk is restored; only the new plan's first chunk differs */
  CHECK_EQ(fake_snapshot_diff_outside(&before, T_ARENA + 0x80000, 0x1000), 0);
  /* an invalid plan leaves the pending one alone */
  ((ci_plan_header *)g_plan)->magic ^= 1;
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, g_plan, size), CI_ST_BAD_MAGIC);
  CHECK_EQ(machine_result(m)->plan_id, 2);
  CHECK_EQ(machine_result(m)->state, CI_STATE_STAGING);
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, 0, 0), CI_ST_OK);
  CHECK_EQ(machine_result(m)->state, CI_STATE_STAGED);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, 0, 0), CI_ST_OK);
  CHECK(dst_is_final(pb, 0));
  fake_snapshot_free(&before);
  free(pb);
  machine_free(m);
}

/* COMMIT of a staged plan re-checks call sites, and a failing commit keeps the
 * plan STAGED with nothing written. */
static void test_commit_rechecks_and_keeps_staged(void) {
  machine *m = machine_new();
  plan_builder *pb = malloc(sizeof *pb);
  sample_plan(pb);
  uint32_t size = pb_encode(pb, g_plan);
  m->budget = 4096;
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, g_plan, size), CI_ST_OK);
  CHECK_EQ(machine_result(m)->state, CI_STATE_STAGED);
  uint8_t *cs = fake_ptr(T_SRC + 0x20000, 5);
  cs[0] = 0xE9; /* guest code rewrote the call into a jump */
  fake_snapshot before;
  fake_snapshot_take(&before);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, 0, 0), CI_ST_CALLSITE_OPCODE);
  CHECK_EQ(fake_snapshot_diff(&before), 0);
  fake_snapshot_free(&before);
  CHECK_EQ(machine_result(m)->failed_index, 0);
  cs[0] = 0xE8;
  cs[1] ^= 1;
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, 0, 0), CI_ST_CALLSITE_TARGET);
  cs[1] ^= 1;
  fake_snapshot_take(&before);
  m->cpus.rip[2] = pb->islands[0].src + 0x10;
  m->cpus.fail_write = 2;
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, 0, 0), CI_ST_CPU_ACCESS);
  CHECK_EQ(machine_result(m)->state, CI_STATE_STAGED);
  CHECK_EQ(machine_result(m)->bytes_restored, 5 + 4); /* entry and call site unwound */
  CHECK_EQ(fake_snapshot_diff(&before), 0);
  m->cpus.fail_write = -1;
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, 0, 0), CI_ST_OK);
  CHECK_EQ(m->cpus.rip[2], pb->islands[0].dst + 0x10);
  fake_snapshot_free(&before);
  free(pb);
  machine_free(m);
}

void suite_apply(void) {
  test_commit_rechecks_and_keeps_staged();
  test_commit_one_smi_and_rollback();
  test_multi_smi_stage_budget();
  test_differential_skip();
  test_generations_lifo();
  test_replace_pending();
}
