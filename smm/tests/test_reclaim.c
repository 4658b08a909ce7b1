/* RECLAIM: a retired copy (KEEP_COPIES rollback) is freed -- filled with int3,
 * its range free for later plans -- only when no saved register of any CPU
 * and no aligned word of any STACK region points into it; otherwise it stays
 * valid code, retired, and the answer says what holds it.  A refused RECLAIM
 * changes nothing. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define SRC_A (T_SRC + 0x1000)
#define SRC_B (T_SRC + 0x3000)
#define DST_A (T_ARENA + 0x10000)
#define DST_B (T_ARENA + 0x20000)
#define SIZE 0x800u

static void put64(uint64_t addr, uint64_t v) { memcpy(fake_ptr(addr, 8), &v, 8); }

static const ci_reclaim_info *info(const machine *m) {
  return (const ci_reclaim_info *)(m->response + sizeof(ci_result));
}

static const ci_reclaim_entry *entry(const machine *m, uint32_t k) {
  return (const ci_reclaim_entry *)(m->response + sizeof(ci_result) + sizeof(ci_reclaim_info)) +
         k;
}

static uint32_t all_int3(uint64_t addr, uint32_t len) {
  const uint8_t *p = fake_ptr(addr, len);
  for (uint32_t k = 0; k < len; k++)
    if (p[k] != 0xCC)
      return 0;
  return 1;
}

/* Commit one KEEP_COPIES island src -> dst (with a rel32 fix-up, so the copy
 * is not the source's bytes). */
static void commit_keep(machine *m, plan_builder *pb, uint32_t id, uint64_t src, uint64_t dst) {
  memset(fake_ptr(dst, SIZE), 0xCC, SIZE);
  pb_init(pb, id);
  uint32_t i = pb_island(pb, src, dst, SIZE, CI_ISLAND_ENTRY_REL32);
  pb_rel32(pb, i, 0x10, T_SRC + 0x8000);
  pb_chunks(pb, 0x400);
  pb->h.flags = CI_PLAN_KEEP_COPIES;
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, pb_encode(pb, g_plan)), CI_ST_OK);
}

/* ... and roll it back: a retired copy. */
static void retire(machine *m, plan_builder *pb, uint32_t id, uint64_t src, uint64_t dst) {
  uint32_t gen = 0;
  commit_keep(m, pb, id, src, dst);
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);
}

/* A plan that uses [dst, dst+0x100) as destination: refused while a copy is retired there. */
static ci_status place_at(machine *m, plan_builder *pb, uint64_t dst) {
  pb_init(pb, 90);
  pb_island(pb, T_SRC + 0x40000, dst, 0x100, CI_ISLAND_ENTRY_REL32);
  pb_chunks(pb, 0x100);
  return machine_smi(m, CI_CMD_STAGE, g_plan, pb_encode(pb, g_plan));
}

/* The case: a deep return address (far beyond every window) keeps
 * the copy; once that frame has returned, the copy is freed and reusable. */
static void test_deep_return_keeps_then_frees(void) {
  machine *m = machine_new();
  plan_builder *pb = malloc(sizeof *pb);
  retire(m, pb, 1, SRC_A, DST_A);
  uint8_t copy[SIZE];
  memcpy(copy, fake_ptr(DST_A, SIZE), SIZE);
  uint64_t deep = m->cpus.rsp[3] + 8u * 200u; /* slot 200: no window reaches it */
  put64(deep, DST_A + 0x1A0);
  put64(DST_A + 0x100, DST_A + 0x20); /* the copy's own ABS64-like word: no evidence */
  memcpy(copy + 0x100, fake_ptr(DST_A + 0x100, 8), 8);

  CHECK_ST(machine_smi(m, CI_CMD_RECLAIM, 0, 0), CI_ST_OK);
  CHECK_EQ(m->response_size, sizeof(ci_result) + sizeof(ci_reclaim_info) + sizeof(ci_reclaim_entry));
  CHECK_EQ(info(m)->considered, 1);
  CHECK_EQ(info(m)->reclaimed, 0);
  CHECK_EQ(info(m)->registers_scanned, 4u * 17u);
  CHECK_EQ(entry(m, 0)->cur, DST_A);
  CHECK_EQ(entry(m, 0)->size, SIZE);
  CHECK_EQ(entry(m, 0)->generation, 1);
  CHECK_EQ(entry(m, 0)->verdict, CI_RECLAIM_KEPT_MEMORY);
  CHECK_EQ(entry(m, 0)->where, deep);
  CHECK(memcmp(fake_ptr(DST_A, SIZE), copy, SIZE) == 0); /* still valid code */
  CHECK_EQ(m->engine.map[0].flags, CI_MAP_ROLLED_BACK | CI_MAP_RETIRED);
  CHECK_ST(place_at(m, pb, DST_A + 0x400), CI_ST_DST_OVERLAPS_CODE);

  /* the frame returned: the slot holds something else now */
  put64(deep, T_SRC + 0x123);
  put64(deep + 4, DST_A + 0x40); /* unaligned: not a stack slot, not evidence */
  CHECK_ST(machine_smi(m, CI_CMD_RECLAIM, 0, 0), CI_ST_OK);
  CHECK_EQ(info(m)->considered, 1);
  CHECK_EQ(info(m)->reclaimed, 1);
  CHECK_EQ(info(m)->bytes_freed, SIZE);
  CHECK_EQ(info(m)->words_scanned, (T_ARENA_SIZE + T_STACK_SIZE) / 8u);
  CHECK_EQ(entry(m, 0)->verdict, CI_RECLAIM_FREED);
  CHECK_EQ(machine_result(m)->bytes_written, SIZE);
  CHECK(all_int3(DST_A, SIZE));
  CHECK_EQ(m->engine.map[0].flags, CI_MAP_ROLLED_BACK);
  CHECK_EQ(m->engine.retired_count, 0);
  /* the range is free: a new plan may stage there */
  CHECK_ST(place_at(m, pb, DST_A + 0x400), CI_ST_OK);
  /* and nothing is left to reclaim */
  CHECK_ST(machine_smi(m, CI_CMD_RECLAIM, 0, 0), CI_ST_OK);
  CHECK_EQ(info(m)->considered, 0);
  free(pb);
  machine_free(m);
}

/* Saved RIPs and every GPR are evidence, each named in the answer. */
static void test_registers_keep(void) {
  static const uint32_t regs[] = {CI_REG_R8, 35u /* R13 */, 38u /* RAX */, 39u /* RBX */,
                                  43u /* RBP */, CI_REG_RDI};
  for (uint32_t t = 0; t < sizeof regs / sizeof regs[0] + 2u; t++) {
    machine *m = machine_new();
    plan_builder *pb = malloc(sizeof *pb);
    retire(m, pb, 1, SRC_A, DST_A);
    uint64_t want;
    if (t < sizeof regs / sizeof regs[0]) {
      m->cpus.gpr[2][regs[t] - CI_REG_R8] = DST_A + SIZE - 1u; /* last byte counts */
      want = (uint64_t)2 << 32 | regs[t];
    } else if (t == sizeof regs / sizeof regs[0]) {
      m->cpus.rip[1] = DST_A + 0x44; /* a thread running in the retired copy */
      want = (uint64_t)1 << 32 | CI_REG_RIP;
    } else {
      m->cpus.rsp[0] = DST_A + 0x80; /* RSP itself, inside the arena (a STACK region) */
      want = (uint64_t)0 << 32 | CI_REG_RSP;
    }
    CHECK_ST(machine_smi(m, CI_CMD_RECLAIM, 0, 0), CI_ST_OK);
    CHECK_EQ(info(m)->reclaimed, 0);
    CHECK_EQ(entry(m, 0)->verdict, CI_RECLAIM_KEPT_REGISTER);
    CHECK_EQ(entry(m, 0)->where, want);
    CHECK_EQ(m->engine.retired_count, 1);
    free(pb);
    machine_free(m);
  }
  /* one past the end is no reference */
  machine *m = machine_new();
  plan_builder *pb = malloc(sizeof *pb);
  retire(m, pb, 1, SRC_A, DST_A);
  m->cpus.gpr[1][39u - CI_REG_R8] = DST_A + SIZE;
  m->cpus.gpr[1][38u - CI_REG_R8] = DST_A - 1u;
  CHECK_ST(machine_smi(m, CI_CMD_RECLAIM, 0, 0), CI_ST_OK);
  CHECK_EQ(info(m)->reclaimed, 1);
  free(pb);
  machine_free(m);
}

/* A kept newer copy keeps the older copies that were active when it was
 * committed (its code may branch into them), and only those. */
static void test_pinning(void) {
  machine *m = machine_new();
  plan_builder *pb = malloc(sizeof *pb);
  uint32_t gen = 1;
  /* gen 1 then gen 2 on top of it, both rolled back (2 first, then 1) */
  commit_keep(m, pb, 1, SRC_A, DST_A);
  commit_keep(m, pb, 2, SRC_B, DST_B);
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK); /* undoes 2, then 1 */
  put64(m->cpus.rsp[1] + 0x300, DST_B + 0x10);
  CHECK_ST(machine_smi(m, CI_CMD_RECLAIM, 0, 0), CI_ST_OK);
  CHECK_EQ(info(m)->considered, 2);
  CHECK_EQ(info(m)->reclaimed, 0);
  CHECK_EQ(entry(m, 0)->cur, DST_A);
  CHECK_EQ(entry(m, 0)->verdict, CI_RECLAIM_KEPT_PINNED);
  CHECK_EQ(entry(m, 0)->where, 2);
  CHECK_EQ(entry(m, 1)->verdict, CI_RECLAIM_KEPT_MEMORY);
  /* the reference is into the older copy: the newer one is free */
  put64(m->cpus.rsp[1] + 0x300, DST_A + 0x10);
  CHECK_ST(machine_smi(m, CI_CMD_RECLAIM, 0, 0), CI_ST_OK);
  CHECK_EQ(info(m)->reclaimed, 1);
  CHECK_EQ(entry(m, 0)->verdict, CI_RECLAIM_KEPT_MEMORY);
  CHECK_EQ(entry(m, 1)->verdict, CI_RECLAIM_FREED);
  CHECK(all_int3(DST_B, SIZE));
  free(pb);
  machine_free(m);

  /* gen 1 rolled back before gen 2 committed: no pin */
  m = machine_new();
  pb = malloc(sizeof *pb);
  retire(m, pb, 1, SRC_A, DST_A);
  retire(m, pb, 2, SRC_B, DST_B);
  put64(m->cpus.rsp[1] + 0x300, DST_B + 0x10);
  CHECK_ST(machine_smi(m, CI_CMD_RECLAIM, 0, 0), CI_ST_OK);
  CHECK_EQ(info(m)->reclaimed, 1);
  CHECK_EQ(entry(m, 0)->verdict, CI_RECLAIM_FREED);
  CHECK_EQ(entry(m, 1)->verdict, CI_RECLAIM_KEPT_MEMORY);
  CHECK(all_int3(DST_A, SIZE));
  free(pb);
  machine_free(m);
}

/* Refusals write nothing; a virtual-space copy is never freed; with nothing
 * retired no CPU is even read. */
static void test_refusals(void) {
  machine *m = machine_new();
  plan_builder *pb = malloc(sizeof *pb);
  CHECK_ST(machine_smi(m, CI_CMD_RECLAIM, 0, 0), CI_ST_OK);
  CHECK_EQ(info(m)->considered, 0);
  retire(m, pb, 1, SRC_A, DST_A);
  uint32_t bad = 0;
  CHECK_ST(machine_smi(m, CI_CMD_RECLAIM, &bad, 4), CI_ST_BAD_REQUEST);
  fake_snapshot before;
  fake_snapshot_take(&before);

  m->cpus.fail_read = 2;
  CHECK_ST(machine_smi(m, CI_CMD_RECLAIM, 0, 0), CI_ST_CPU_ACCESS);
  CHECK_EQ(machine_result(m)->failed_index, 2);
  CHECK_EQ(m->response_size, sizeof(ci_result));
  m->cpus.fail_read = -1;
  uint64_t rsp = m->cpus.rsp[3];
  m->cpus.rsp[3] = T_FAR + 0x100; /* managed code (T_SRC) on a stack the scan cannot see */
  CHECK_ST(machine_smi(m, CI_CMD_RECLAIM, 0, 0), CI_ST_STACK_ACCESS);
  CHECK_EQ(machine_result(m)->failed_index, 3);
  m->cpus.rsp[3] = rsp;
  CHECK_EQ(fake_snapshot_diff(&before), 0);
  CHECK_EQ(m->engine.retired_count, 1);

  m->engine.map_space[0].space = CI_SPACE_USER; /* as if a process's copy */
  CHECK_ST(machine_smi(m, CI_CMD_RECLAIM, 0, 0), CI_ST_OK);
  CHECK_EQ(info(m)->considered, 1);
  CHECK_EQ(entry(m, 0)->verdict, CI_RECLAIM_KEPT_SPACE);
  CHECK_EQ(info(m)->registers_scanned, 0);
  CHECK_EQ(fake_snapshot_diff(&before), 0);
  m->engine.map_space[0].space = CI_SPACE_PHYSICAL;
  CHECK_ST(machine_smi(m, CI_CMD_RECLAIM, 0, 0), CI_ST_OK);
  CHECK_EQ(info(m)->reclaimed, 1);
  CHECK_EQ(fake_snapshot_diff_outside(&before, DST_A, SIZE), 0);
  fake_snapshot_free(&before);
  free(pb);
  machine_free(m);
}

void suite_reclaim(void) {
  test_deep_return_keeps_then_frees();
  test_registers_keep();
  test_pinning();
  test_refusals();
}
