/*
 * No double fetch (issue 16, part 2): a DMA write to a byte the engine reads
 * from outside SMRAM -- island source (code and a fix-up field), call-site
 * opcode and rel32, a stack slot holding a return address -- lands between
 * any two of the engine's looks at it (fake_dma_arm: before the nth map of a
 * range holding it, for every n that occurs).  Whatever n, the request is
 * either refused with nothing changed but that byte, or accepted with the
 * copy exactly the plan's bytes (source as validated plus fix-ups); and an
 * accepted one rolls back to the bytes that were checked, never to bytes
 * read after the check.  Both paths: one-SMI COMMIT, and STAGE then COMMIT.
 */
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define SRC   (T_SRC + 0x1000)
#define DST   (T_ARENA + 0x20000)
#define SIZE  0x2000u
#define CALL  (T_SRC + 0x9000)
#define FIXUP 0x1010u /* a rel32 field in the island's second chunk */

static plan_builder *pb;
static uint8_t g_want[SIZE];

/* The scenario's plan and machine: CPU 0 runs in the island, CPU 1's stack
 * holds a return address into it (slot 1 of a 4-slot window). */
static uint32_t scenario(machine *m) {
  pb_init(pb, 16);
  pb_island(pb, SRC, DST, SIZE, CI_ISLAND_ENTRY_REL32);
  pb_rel32(pb, 0, 0x20, SRC + 0x100);
  pb_rel32(pb, 0, FIXUP, T_SRC + 0x80000);
  pb_callsite(pb, 0, CALL);
  pb_rule(pb, 0, CI_RULE_TRANSLATE_RIP | CI_RULE_TRANSLATE_RETURN, 4);
  pb_chunks(pb, 0x1000);
  pb_final(pb, 0, g_want);
  m->cpus.rip[0] = SRC + 0x40;
  uint64_t ret = SRC + 0x80;
  memcpy(fake_ptr(m->cpus.rsp[1] + 8, 8), &ret, 8);
  return pb_encode(pb, g_plan);
}

/* One run with the DMA at the nth look at addr; returns 0 once n is past
 * every look (the DMA did not fire). */
static int run(uint64_t addr, unsigned nth, int one_smi, const char *what) {
  machine *m = machine_new();
  uint32_t size = scenario(m);
  uint8_t original = *fake_ptr(addr, 1);
  fake_cpus regs = m->cpus;
  fake_snapshot before;
  fake_snapshot_take(&before);
  fake_dma_arm(addr, nth, 0x5A);
  ci_status st;
  if (one_smi) {
    st = machine_smi(m, CI_CMD_COMMIT, g_plan, size);
  } else {
    st = machine_smi(m, CI_CMD_STAGE, g_plan, size);
    if (st == CI_ST_OK)
      st = machine_smi(m, CI_CMD_COMMIT, 0, 0);
  }
  int fired = fake_dma_fired();
  fake_dma_disarm();
  const char *bad = 0;
  if (!fired) {
    bad = st != CI_ST_OK ? "refused without a DMA" : 0;
  } else if (st != CI_ST_OK) {
    /* refused: only the DMA's byte differs (STAGE's accepted copy stays
     * when the multi-SMI COMMIT finds it changed) */
    if (one_smi && (fake_snapshot_diff_outside(&before, addr, 1) || m->engine.undo.top))
      bad = "refused, but memory or the undo log changed";
    if (memcmp(regs.rip, m->cpus.rip, sizeof regs.rip) || m->engine.gen_count)
      bad = "refused, but registers or generations changed";
  } else if (memcmp(fake_ptr(DST, SIZE), g_want, SIZE) != 0) {
    bad = "accepted a copy that is not the plan's bytes";
  } else {
    uint32_t gen = 0;
    if (machine_smi(m, CI_CMD_ROLLBACK, &gen, 4) != CI_ST_OK)
      bad = "rollback refused";
    else if (fake_snapshot_diff_outside(&before, addr, 1))
      bad = "rollback did not restore memory";
    else if (addr >= CALL && addr < CALL + 5 && *fake_ptr(addr, 1) != original)
      bad = "rollback restored a call-site byte read after its check";
  }
  g_checks++;
  if (bad) {
    g_failures++;
    fprintf(stderr, "test_dma.c: %s, DMA at look %u (%s): %s (status %u %s)\n", what, nth,
            one_smi ? "one SMI" : "STAGE+COMMIT", bad, st, ci_status_text(st));
  }
  fake_snapshot_free(&before);
  machine_free(m);
  return fired;
}

static void each_look(uint64_t addr, const char *what) {
  for (int one_smi = 1; one_smi >= 0; one_smi--) {
    unsigned nth = 1;
    while (run(addr, nth, one_smi, what))
      nth++;
    CHECK(nth > 1); /* the engine looked at it at least once */
  }
}

void suite_dma(void) {
  pb = malloc(sizeof *pb);
  each_look(SRC + 0x1800, "island source code byte");
  each_look(SRC + FIXUP + 1, "island source fix-up field");
  each_look(CALL, "call-site opcode");
  each_look(CALL + 2, "call-site rel32");
  each_look(T_STACK + 0x9000 + 8 + 1, "return address on a stack"); /* CPU 1's slot 1 */
  free(pb);
}
