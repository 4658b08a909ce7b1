/*
 * Property test over random valid plans (fixed seed, so failures repeat):
 * whatever the islands, fix-up kinds and positions, call sites, rules, chunk
 * sizes, CPU positions and budget, COMMIT (one SMI or staged over several)
 * produces exactly the oracle's bytes and moves exactly the RIPs and return
 * addresses inside islands, and ROLLBACK then restores every byte of memory
 * and every register.
 */
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define PLANS 60u

static uint64_t g_rng = 0x9E3779B97F4A7C15ULL;
static uint32_t rnd(uint32_t n) { /* xorshift64*, uniform enough for tests */
  g_rng ^= g_rng >> 12;
  g_rng ^= g_rng << 25;
  g_rng ^= g_rng >> 27;
  return (uint32_t)((g_rng * 0x2545F4914F6CDD1DULL) >> 33) % n;
}

static plan_builder *pb;
static uint8_t *g_finals[8];

static void random_island(uint32_t slot) {
  static const uint32_t entry[3] = {CI_ISLAND_ENTRY_NONE, CI_ISLAND_ENTRY_REL32,
                                    CI_ISLAND_ENTRY_ABS64};
  uint32_t size = 16 + rnd(2032);
  uint64_t src = T_SRC + 0x1000u * slot + rnd(0x100);
  uint64_t dst = T_ARENA + 0x1000u * slot + rnd(0x100);
  uint32_t flags = entry[rnd(3)];
  uint32_t i = pb_island(pb, src, dst, size, flags);
  uint32_t elen = flags == CI_ISLAND_ENTRY_ABS64 ? 14 : flags ? 5 : 0;
  for (uint32_t off = rnd(8); off + 8 <= size; off += 8 + rnd(40)) {
    uint32_t kind = rnd(3);
    if (kind == 2) {
      pb_abs64(pb, i, off, src + rnd(size));
    } else {
      pb_rel32(pb, i, off, T_SRC + 0x80000 + rnd(0x10000));
      if (kind == 1) { /* RIP-relative with a longer instruction tail */
        ci_fixup *f = &pb->fixups[pb->h.fixup_count - 1];
        uint32_t extra = rnd(12);
        f->kind = CI_FIXUP_RIPREL32;
        f->pc_bias = (uint8_t)(4 + extra);
        f->target += extra;
      }
    }
  }
  for (uint32_t k = rnd(3); k > 0; k--)
    pb_callsite(pb, i, T_SRC + 0x40000 + 0x100u * slot + 8u * k);
  for (uint32_t k = rnd(4); k > 0; k--)
    pb_target(pb, i, elen + rnd(size - elen));
  if (rnd(2)) {
    uint32_t slots = rnd(9);
    pb_rule(pb, i, (uint16_t)(CI_RULE_TRANSLATE_RIP | (slots ? CI_RULE_TRANSLATE_RETURN : 0)),
            slots);
  }
}

/* Where an address ends up after commit: in the copy if inside an island. */
static uint64_t moved(uint64_t a) {
  for (uint32_t i = 0; i < pb->h.island_count; i++) {
    const ci_island *isl = &pb->islands[i];
    if (a >= isl->src && a - isl->src < isl->size)
      return isl->dst + (a - isl->src);
  }
  return a;
}

static uint32_t slots_for(uint64_t a) {
  uint32_t best = 0;
  for (uint32_t r = 0; r < pb->h.rule_count; r++) {
    const ci_island *isl = &pb->islands[pb->rules[r].island];
    if (a >= isl->src && a - isl->src < isl->size && pb->rules[r].stack_slots > best)
      best = pb->rules[r].stack_slots;
  }
  return best;
}

static uint64_t random_address(void) {
  if (rnd(3) == 0)
    return T_SRC + 0xF0000 + rnd(0x100);
  const ci_island *isl = &pb->islands[rnd(pb->h.island_count)];
  return isl->src + rnd(isl->size);
}

static void one_plan(machine *m, uint32_t n) {
  uint32_t islands = 1 + rnd(8);
  pb_init(pb, n);
  for (uint32_t slot = 0; slot < islands; slot++)
    random_island(slot);
  pb_chunks(pb, 1 + rnd(CI_MAX_CHUNK_SIZE));
  uint32_t size = pb_encode(pb, g_plan);
  for (uint32_t i = 0; i < islands; i++)
    pb_final(pb, i, g_finals[i]);

  /* CPUs anywhere; stack slots holding addresses inside and outside islands */
  uint64_t rip[4], rip_after[4], slot_after[4][8];
  for (uint32_t c = 0; c < 4; c++) {
    rip[c] = m->cpus.rip[c] = random_address();
    rip_after[c] = moved(rip[c]);
    for (uint32_t s = 0; s < 8; s++) {
      uint64_t v = random_address();
      memcpy(fake_ptr(m->cpus.rsp[c] + 8 * s, 8), &v, 8);
      slot_after[c][s] = v;
    }
  }
  fake_snapshot before;
  fake_snapshot_take(&before);
  for (uint32_t c = 0; c < 4; c++)
    for (uint32_t s = 0; s < 8; s++)
      if (s < slots_for(slot_after[c][s]))
        slot_after[c][s] = moved(slot_after[c][s]);

  ci_status st;
  if (rnd(2)) {
    m->budget = CI_STAGE_BUDGET_MAX;
    st = machine_smi(m, CI_CMD_COMMIT, g_plan, size);
  } else {
    m->budget = 4096 + rnd(8192);
    st = machine_smi(m, CI_CMD_STAGE, g_plan, size);
    while (st == CI_ST_OK && machine_result(m)->state == CI_STATE_STAGING)
      st = machine_smi(m, CI_CMD_STAGE, 0, 0);
    if (st == CI_ST_OK)
      st = machine_smi(m, CI_CMD_COMMIT, 0, 0);
  }
  CHECK_ST(st, CI_ST_OK);
  for (uint32_t i = 0; i < islands; i++)
    CHECK(memcmp(fake_ptr(pb->islands[i].dst, pb->islands[i].size), g_finals[i],
                 pb->islands[i].size) == 0);
  for (uint32_t c = 0; c < 4; c++) {
    CHECK_EQ(m->cpus.rip[c], rip_after[c]);
    for (uint32_t s = 0; s < 8; s++) {
      uint64_t v;
      memcpy(&v, fake_ptr(m->cpus.rsp[c] + 8 * s, 8), 8);
      CHECK_EQ(v, slot_after[c][s]);
    }
  }
  uint32_t gen = 0;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);
  CHECK_EQ(fake_snapshot_diff(&before), 0);
  for (uint32_t c = 0; c < 4; c++)
    CHECK_EQ(m->cpus.rip[c], rip[c]);
  CHECK_EQ(m->engine.undo.top, 0);
  fake_snapshot_free(&before);
}

void suite_random(void) {
  pb = malloc(sizeof *pb);
  for (uint32_t i = 0; i < 8; i++)
    g_finals[i] = malloc(4096);
  machine *m = machine_new();
  for (uint32_t n = 0; n < PLANS; n++)
    one_plan(m, n);
  machine_free(m);
  for (uint32_t i = 0; i < 8; i++)
    free(g_finals[i]);
  free(pb);
}
