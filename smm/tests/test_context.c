/* Context translation at COMMIT and ROLLBACK: saved RIPs at an island's first,
 * middle and last instruction on several CPU counts, return addresses in a
 * stack window, and the failures (CPU_ACCESS, STACK_ACCESS, TOO_MANY_CPUS),
 * each of which leaves memory and registers as they were. */
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define SRC (T_SRC + 0x1000)
#define DST (T_ARENA + 0x10000)
#define SIZE 0x100u

static plan_builder *pb;

static uint32_t one_island(uint16_t rule_flags, uint32_t slots) {
  pb_init(pb, 11);
  pb_island(pb, SRC, DST, SIZE, CI_ISLAND_ENTRY_REL32);
  if (rule_flags)
    pb_rule(pb, 0, rule_flags, slots);
  pb_chunks(pb, SIZE);
  return pb_encode(pb, g_plan);
}

static void test_rips(uint32_t cpus) {
  machine *m = machine_new();
  /* offsets of instructions: first, inside the entry jump, middle, last; and
   * just outside on both sides */
  static const int64_t offs[] = {0, 3, 0x80, SIZE - 1, SIZE, -1};
  static const int moved[] = {1, 1, 1, 1, 0, 0};
  m->cpus.count = cpus;
  for (uint32_t n = 0; n < cpus; n++)
    m->cpus.rip[n] = n < 6 ? SRC + (uint64_t)offs[n] : T_SRC + 0xF0000 + n;
  uint32_t size = one_island(CI_RULE_TRANSLATE_RIP, 0);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, size), CI_ST_OK);
  uint32_t expect = 0;
  for (uint32_t n = 0; n < cpus && n < 6; n++) {
    CHECK_EQ(m->cpus.rip[n], (moved[n] ? DST : SRC) + (uint64_t)offs[n]);
    expect += (uint32_t)moved[n];
  }
  for (uint32_t n = 6; n < cpus; n++)
    CHECK_EQ(m->cpus.rip[n], T_SRC + 0xF0000 + n);
  CHECK_EQ(machine_result(m)->contexts_translated, expect);
  CHECK_EQ(machine_result(m)->cpus, cpus);
  uint32_t gen = 0;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);
  CHECK_EQ(machine_result(m)->contexts_translated, expect);
  for (uint32_t n = 0; n < cpus && n < 6; n++)
    CHECK_EQ(m->cpus.rip[n], SRC + (uint64_t)offs[n]);
  machine_free(m);
}

static void put64(uint64_t addr, uint64_t v) { memcpy(fake_ptr(addr, 8), &v, 8); }
static uint64_t get64(uint64_t addr) {
  uint64_t v;
  memcpy(&v, fake_ptr(addr, 8), 8);
  return v;
}

static void test_returns(void) {
  machine *m = machine_new();
  uint64_t rsp = m->cpus.rsp[0];
  put64(rsp + 0, SRC + 0x10);  /* a return into the island: moves */
  put64(rsp + 8, 0x1234);      /* data */
  put64(rsp + 16, SRC + SIZE); /* one past the island: stays */
  put64(rsp + 24, SRC);        /* first byte: moves */
  put64(rsp + 32, SRC + 0x20); /* beyond the 4-slot window: stays */
  /* CPU 1's stack ends 16 bytes below the region's end: window clipped to 2 */
  m->cpus.rsp[1] = T_STACK + T_STACK_SIZE - 16;
  put64(m->cpus.rsp[1], 0x99);
  put64(m->cpus.rsp[1] + 8, SRC + 0xFF);
  uint32_t size = one_island(CI_RULE_TRANSLATE_RIP | CI_RULE_TRANSLATE_RETURN, 4);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, size), CI_ST_OK);
  CHECK_EQ(machine_result(m)->returns_translated, 3);
  CHECK_EQ(get64(rsp), DST + 0x10);
  CHECK_EQ(get64(rsp + 8), 0x1234);
  CHECK_EQ(get64(rsp + 16), SRC + SIZE);
  CHECK_EQ(get64(rsp + 24), DST);
  CHECK_EQ(get64(rsp + 32), SRC + 0x20);
  CHECK_EQ(get64(m->cpus.rsp[1] + 8), DST + 0xFF);
  uint32_t gen = 0;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);
  CHECK_EQ(machine_result(m)->returns_translated, 3);
  CHECK_EQ(get64(rsp), SRC + 0x10);
  CHECK_EQ(get64(rsp + 24), SRC);
  CHECK_EQ(get64(m->cpus.rsp[1] + 8), SRC + 0xFF);
  /* without a return rule the stack is not read or written */
  size = one_island(CI_RULE_TRANSLATE_RIP, 0);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, size), CI_ST_OK);
  CHECK_EQ(machine_result(m)->returns_translated, 0);
  CHECK_EQ(get64(rsp), SRC + 0x10);
  machine_free(m);
}

/* Failures: status, the failing CPU, and nothing changed. */
static void expect_refused(machine *m, uint32_t size, ci_status want, uint32_t cpu, int line) {
  fake_snapshot before;
  fake_cpus regs = m->cpus;
  fake_snapshot_take(&before);
  ci_status st = machine_smi(m, CI_CMD_COMMIT, g_plan, size);
  g_checks += 3;
  if (st != want || machine_result(m)->failed_index != cpu) {
    g_failures++;
    fprintf(stderr, "test_context.c:%d: status %u index %u, expected %u index %u\n", line, st,
            machine_result(m)->failed_index, want, cpu);
  }
  if (fake_snapshot_diff(&before) != 0) {
    g_failures++;
    fprintf(stderr, "test_context.c:%d: memory changed\n", line);
  }
  if (memcmp(regs.rip, m->cpus.rip, sizeof regs.rip) || m->engine.gen_count != 0 ||
      m->engine.undo.top != 0) {
    g_failures++;
    fprintf(stderr, "test_context.c:%d: registers or engine state changed\n", line);
  }
  fake_snapshot_free(&before);
}

static void test_failures(void) {
  machine *m = machine_new();
  m->cpus.rip[0] = SRC + 0x10;
  m->cpus.rip[1] = SRC + 0x20;
  uint32_t size = one_island(CI_RULE_TRANSLATE_RIP, 0);
  m->cpus.fail_read = 2;
  expect_refused(m, size, CI_ST_CPU_ACCESS, 2, __LINE__);
  m->cpus.fail_read = -1;
  m->cpus.fail_write = 1; /* CPU 0 was already moved: must be moved back */
  m->cpus.writes = 0;
  expect_refused(m, size, CI_ST_CPU_ACCESS, 1, __LINE__);
  CHECK_EQ(m->cpus.writes, 2); /* CPU 0 moved, then restored */
  m->cpus.fail_write = -1;

  /* a managed thread (RIP in a SOURCE region) whose stack is not in a STACK region */
  size = one_island(CI_RULE_TRANSLATE_RIP | CI_RULE_TRANSLATE_RETURN, 8);
  m->cpus.rsp[3] = 0x9000;
  m->cpus.rip[3] = T_SRC + 0x50;
  expect_refused(m, size, CI_ST_STACK_ACCESS, 3, __LINE__);
  m->cpus.rip[3] = 0xFFFF0000; /* firmware code: no window, not an error */
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, size), CI_ST_OK);
  CHECK_EQ(m->cpus.rip[0], DST + 0x10);
  /* rollback cannot read a CPU: refused, the generation stays */
  m->cpus.fail_read = 0;
  uint32_t gen = 0;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_CPU_ACCESS);
  CHECK_EQ(machine_result(m)->generation, 1);
  CHECK_EQ(m->cpus.rip[0], DST + 0x10);
  m->cpus.fail_read = -1;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);
  CHECK_EQ(m->cpus.rip[0], SRC + 0x10);
  machine_free(m);

  /* CPU count: 64 is the maximum */
  m = machine_new();
  size = one_island(CI_RULE_TRANSLATE_RIP, 0);
  m->cpus.count = CI_MAX_CPUS + 1;
  expect_refused(m, size, CI_ST_TOO_MANY_CPUS, CI_NO_INDEX, __LINE__);
  CHECK_ST(machine_smi(m, CI_CMD_SAMPLE, 0, 0), CI_ST_TOO_MANY_CPUS);
  m->cpus.count = CI_MAX_CPUS;
  for (uint32_t n = 0; n < CI_MAX_CPUS; n++)
    m->cpus.rip[n] = SRC + n;
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, size), CI_ST_OK);
  CHECK_EQ(machine_result(m)->contexts_translated, CI_MAX_CPUS);
  CHECK_EQ(m->cpus.rip[CI_MAX_CPUS - 1], DST + CI_MAX_CPUS - 1);
  machine_free(m);
}

/* Multi-SMI staging: contexts are touched only by the COMMIT SMI. */
static void test_staged_commit_moves_late_rips(void) {
  machine *m = machine_new();
  m->budget = 4096;
  pb_init(pb, 12);
  pb_island(pb, SRC, DST, 0x3000, CI_ISLAND_ENTRY_REL32);
  pb_chunks(pb, 0x1000);
  uint32_t size = pb_encode(pb, g_plan);
  m->cpus.rip[0] = SRC + 0x2FFF;
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, g_plan, size), CI_ST_OK);
  CHECK_EQ(m->cpus.rip[0], SRC + 0x2FFF);
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, 0, 0), CI_ST_OK);
  m->cpus.rip[0] = SRC + 0x1800; /* the thread ran on between SMIs */
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, 0, 0), CI_ST_OK);
  CHECK_EQ(machine_result(m)->state, CI_STATE_STAGED);
  CHECK_EQ(m->cpus.writes, 0);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, 0, 0), CI_ST_OK);
  CHECK_EQ(m->cpus.rip[0], DST + 0x1800);
  machine_free(m);
}

void suite_context(void) {
  static const uint32_t counts[] = {1, 2, 4, 8, 64};
  pb = malloc(sizeof *pb);
  for (unsigned k = 0; k < sizeof counts / sizeof counts[0]; k++)
    test_rips(counts[k]);
  test_returns();
  test_failures();
  test_staged_commit_moves_late_rips();
  free(pb);
}
