/* CI_PLAN_KEEP_COPIES: ROLLBACK restores entry jumps, call sites and contexts
 * but leaves the copy in place (retired), so a return address into the copy
 * beyond every translated window stays valid; without the flag the copy's
 * bytes come back (the hazard).  Retired ranges are refused to later plans
 * for the rest of the boot and survive map compaction; the destination's
 * undo records are dropped at COMMIT. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "internal.h" /* CI_UNDO_HDR: the undo pool's accounting */

#define SRC (T_SRC + 0x1000)
#define DST (T_ARENA + 0x10000)
#define SIZE 0x800u
#define CALLSITE (T_SRC + 0x20000)

static uint8_t k_final[SIZE];
static uint8_t k_orig[SIZE];

static void put64(uint64_t addr, uint64_t v) { memcpy(fake_ptr(addr, 8), &v, 8); }
static uint64_t get64(uint64_t addr) {
  uint64_t v;
  memcpy(&v, fake_ptr(addr, 8), 8);
  return v;
}

/* One island SRC -> DST with two rel32 fix-ups, a call site, and a rule that
 * translates RIPs and the first 2 stack slots.  The destination is filled
 * with 0xCC first, like the driver's arena. */
static uint32_t keep_plan(plan_builder *pb, uint32_t plan_flags) {
  memset(fake_ptr(DST, SIZE), 0xCC, SIZE);
  pb_init(pb, 21);
  uint32_t i = pb_island(pb, SRC, DST, SIZE, CI_ISLAND_ENTRY_REL32);
  pb_rel32(pb, i, 0x10, T_SRC + 0x8000);
  pb_rel32(pb, i, 0x200, T_SRC + 0x9000);
  pb_callsite(pb, i, CALLSITE);
  pb_rule(pb, i, CI_RULE_TRANSLATE_RIP | CI_RULE_TRANSLATE_RETURN, 2);
  pb_chunks(pb, 0x200);
  pb->h.flags = plan_flags;
  pb_final(pb, 0, k_final);
  memcpy(k_orig, fake_ptr(SRC, SIZE), SIZE);
  return pb_encode(pb, g_plan);
}

static uint32_t undo_used(machine *m) {
  CHECK_ST(machine_smi(m, CI_CMD_QUERY, 0, 0), CI_ST_OK);
  return ((const ci_query_info *)(m->response + sizeof(ci_result)))->undo_bytes_used;
}

static uint32_t stats_flags(machine *m, uint32_t index) {
  CHECK_ST(machine_smi(m, CI_CMD_STATS, 0, 0), CI_ST_OK);
  const ci_map_entry *me = (const ci_map_entry *)(m->response + sizeof(ci_result));
  CHECK(index < machine_result(m)->map_count);
  return index < machine_result(m)->map_count ? me[index].flags : 0xFFFFFFFFu;
}

/* The scenario of both tests: CPU 0 runs in the island, CPU 1's stack holds a
 * return into the island inside the 2-slot window and one beyond it.  After
 * COMMIT, CPU 2 has entered the copy and CPU 3 holds a return address into
 * the copy deep in its stack (beyond every window).  Then ROLLBACK. */
static void run_scenario(uint32_t plan_flags, int keep) {
  machine *m = machine_new();
  plan_builder *pb = malloc(sizeof *pb);
  uint32_t size = keep_plan(pb, plan_flags);
  uint64_t rsp1 = m->cpus.rsp[1], rsp3 = m->cpus.rsp[3];
  m->cpus.rip[0] = SRC + 0x40;
  put64(rsp1 + 8, SRC + 0x80);  /* slot 1: in the window */
  put64(rsp1 + 40, SRC + 0x90); /* slot 5: beyond it, stays in the original */
  fake_snapshot before;
  fake_snapshot_take(&before);

  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, size), CI_ST_OK);
  CHECK_EQ(machine_result(m)->bytes_written, SIZE);
  CHECK_EQ(machine_result(m)->contexts_translated, 1);
  CHECK_EQ(machine_result(m)->returns_translated, 1);
  CHECK_EQ(m->cpus.rip[0], DST + 0x40);
  CHECK_EQ(get64(rsp1 + 8), DST + 0x80);
  CHECK_EQ(get64(rsp1 + 40), SRC + 0x90);
  CHECK(memcmp(fake_ptr(DST, SIZE), k_final, SIZE) == 0);
  CHECK_EQ(stats_flags(m, 0), CI_MAP_ACTIVE);
  /* undo: the flag drops the four destination records (FILL, 16 bytes
   * each); the entry and the call site are logged, contexts are not (a
   * refused commit puts them back from the values read into SMRAM) */
  uint32_t used = undo_used(m);
  uint32_t patches = CI_UNDO_HDR + 8 + CI_UNDO_HDR + 8;
  CHECK_EQ(used, keep ? patches : patches + 4u * CI_UNDO_HDR);

  /* the guest runs: CPU 2 enters the copy through the entry jump, CPU 3
   * called through the re-pointed call site and is deep in a callee */
  m->cpus.rip[2] = DST + 0x100;
  put64(rsp3 + 48, DST + 0x1A0); /* slot 6: beyond the window */
  uint32_t gen = 0;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);
  const ci_result *r = machine_result(m);
  CHECK_EQ(r->state, CI_STATE_ROLLED_BACK);
  CHECK_EQ(r->generation, 0);
  CHECK_EQ(r->contexts_translated, 2);
  CHECK_EQ(r->returns_translated, 1);
  CHECK_EQ(r->bytes_restored, keep ? 5u + 4u : SIZE + 5u + 4u);
  CHECK_EQ(m->cpus.rip[0], SRC + 0x40);
  CHECK_EQ(m->cpus.rip[2], SRC + 0x100);
  CHECK_EQ(get64(rsp1 + 8), SRC + 0x80);
  CHECK_EQ(get64(rsp1 + 40), SRC + 0x90);
  CHECK_EQ(get64(rsp3 + 48), DST + 0x1A0); /* outside every window: untouched */
  /* entry and call site are the original bytes again */
  CHECK(memcmp(fake_ptr(SRC, SIZE), k_orig, SIZE) == 0);
  put64(rsp3 + 48, 0); /* then the only difference is the copy */
  CHECK_EQ(fake_snapshot_diff_outside(&before, DST, SIZE), 0);
  put64(rsp3 + 48, DST + 0x1A0);
  if (keep) {
    /* the copy is still valid code: CPU 3 returns into the fixed-up bytes */
    CHECK(memcmp(fake_ptr(DST, SIZE), k_final, SIZE) == 0);
    CHECK_EQ(stats_flags(m, 0), CI_MAP_ROLLED_BACK | CI_MAP_RETIRED);
    CHECK_EQ(m->engine.retired_count, 1);
  } else {
    /* the hazard: CPU 3's return address now lands on int3 fill */
    CHECK_EQ(fake_ptr(DST + 0x1A0, 1)[0], 0xCC);
    const uint8_t *d = fake_ptr(DST, SIZE);
    uint32_t fill = 0;
    for (uint32_t k = 0; k < SIZE; k++)
      fill += d[k] == 0xCC;
    CHECK_EQ(fill, SIZE);
    CHECK_EQ(stats_flags(m, 0), CI_MAP_ROLLED_BACK);
    CHECK_EQ(m->engine.retired_count, 0);
  }
  CHECK_EQ(undo_used(m), 0); /* no leak either way */
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_NOTHING_TO_ROLLBACK);
  fake_snapshot_free(&before);
  free(pb);
  machine_free(m);
}

/* Later plans against a retired copy: refused as destination, source and call
 * site; the original (restored) may move again, to another destination; and
 * the retired entry survives the map compaction that drops plain history. */
static void test_retired_reserved(void) {
  machine *m = machine_new();
  plan_builder *pb = malloc(sizeof *pb);
  uint32_t size = keep_plan(pb, CI_PLAN_KEEP_COPIES);
  uint32_t gen = 0;
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, size), CI_ST_OK);
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);
  fake_snapshot before;
  fake_snapshot_take(&before);

  /* same plan again: its destination is the retired copy */
  pb_init(pb, 22);
  pb_island(pb, SRC, DST + SIZE - 1, 0x100, CI_ISLAND_ENTRY_REL32); /* last byte overlaps */
  pb_chunks(pb, 0x100);
  size = pb_encode(pb, g_plan);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, size), CI_ST_DST_OVERLAPS_CODE);
  CHECK_EQ(machine_result(m)->failed_index, 0);
  /* one byte past the copy is free */
  pb_init(pb, 23);
  pb_island(pb, T_SRC + 0x4000, DST + SIZE, 0x100, CI_ISLAND_ENTRY_REL32);
  pb_chunks(pb, 0x100);
  fake_snapshot_free(&before);
  fake_snapshot_take(&before);
  size = pb_encode(pb, g_plan);
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, g_plan, size), CI_ST_OK);
  /* the retired copy as a source (the arena is a SOURCE region) */
  pb_init(pb, 24);
  pb_island(pb, DST + 0x100, T_ARENA + 0x80000, 0x100, CI_ISLAND_ENTRY_NONE);
  pb_chunks(pb, 0x100);
  size = pb_encode(pb, g_plan);
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, g_plan, size), CI_ST_ISLAND_ACTIVE);
  /* a call site inside the retired copy */
  pb_init(pb, 25);
  uint32_t i = pb_island(pb, T_SRC + 0x6000, T_ARENA + 0x80000, 0x100, CI_ISLAND_ENTRY_NONE);
  pb_callsite(pb, i, DST + 0x300);
  pb_chunks(pb, 0x100);
  size = pb_encode(pb, g_plan);
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, g_plan, size), CI_ST_CALLSITE_IN_ISLAND);
  CHECK_EQ(machine_result(m)->failed_index, 0);
  /* the builder wrote code (island 24) and a call (25) into the copy: put
   * the copy's bytes back, then nothing must touch them again */
  memcpy(fake_ptr(DST, SIZE), k_final, SIZE);
  gen = 0;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_NOTHING_TO_ROLLBACK);

  /* the original itself moves again, elsewhere, and rolls back (plain) */
  ci_engine *e = &m->engine;
  for (uint32_t n = 0; n < CI_MAX_MAP_ENTRIES + 3u; n++) {
    pb_init(pb, 100 + n);
    pb_island(pb, SRC, T_FAR + 0x1000, SIZE, CI_ISLAND_ENTRY_NONE);
    pb_chunks(pb, SIZE);
    size = pb_encode(pb, g_plan);
    CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, size), CI_ST_OK);
    CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);
  }
  CHECK(e->map_count <= CI_MAX_MAP_ENTRIES);
  uint32_t retired = 0;
  for (uint32_t k = 0; k < e->map_count; k++)
    if (e->map[k].flags & CI_MAP_RETIRED) {
      retired++;
      CHECK_EQ(e->map[k].cur, DST);
      CHECK_EQ(e->map[k].generation, 1);
    }
  CHECK_EQ(retired, 1);
  CHECK_EQ(e->map[0].flags, CI_MAP_ROLLED_BACK | CI_MAP_RETIRED); /* compaction kept it */
  pb_init(pb, 26);
  pb_island(pb, SRC, DST + 0x10, 0x100, CI_ISLAND_ENTRY_NONE);
  pb_chunks(pb, 0x100);
  size = pb_encode(pb, g_plan);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, size), CI_ST_DST_OVERLAPS_CODE);
  CHECK(memcmp(fake_ptr(DST, SIZE), k_final, SIZE) == 0);
  fake_snapshot_free(&before);
  free(pb);
  machine_free(m);
}

/* A KEEP_COPIES commit that fails (a CPU write) is still all or nothing: the
 * destination bytes come back too; and a multi-SMI stage then COMMIT drops
 * exactly the stage's records. */
static void test_keep_commit_paths(void) {
  machine *m = machine_new();
  plan_builder *pb = malloc(sizeof *pb);
  uint32_t size = keep_plan(pb, CI_PLAN_KEEP_COPIES);
  m->cpus.rip[1] = SRC + 0x20;
  m->cpus.fail_write = 1;
  fake_snapshot before;
  fake_snapshot_take(&before);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, size), CI_ST_CPU_ACCESS);
  CHECK_EQ(fake_snapshot_diff(&before), 0);
  CHECK_EQ(undo_used(m), 0);
  CHECK_EQ(m->engine.map_count, 0);

  m->cpus.fail_write = -1;
  m->budget = 4096;
  size = keep_plan(pb, CI_PLAN_KEEP_COPIES);
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, g_plan, size), CI_ST_OK);
  CHECK_EQ(machine_result(m)->state, CI_STATE_STAGED);
  CHECK_EQ(undo_used(m), 4u * CI_UNDO_HDR); /* four FILL records while pending */
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, 0, 0), CI_ST_OK);
  CHECK_EQ(undo_used(m), 2u * (CI_UNDO_HDR + 8u)); /* entry, call site */
  CHECK(memcmp(fake_ptr(DST, SIZE), k_final, SIZE) == 0);
  uint32_t gen = 0;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);
  CHECK_EQ(m->cpus.rip[1], SRC + 0x20);
  CHECK_EQ(fake_snapshot_diff_outside(&before, DST, SIZE), 0);
  CHECK(memcmp(fake_ptr(DST, SIZE), k_final, SIZE) == 0);
  CHECK_EQ(undo_used(m), 0);
  fake_snapshot_free(&before);
  free(pb);
  machine_free(m);
}

void suite_keep_copies(void) {
  run_scenario(CI_PLAN_KEEP_COPIES, 1);
  run_scenario(0, 0);
  test_retired_reserved();
  test_keep_commit_paths();
}
