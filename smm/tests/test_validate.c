/*
 * Every rejection reason of the validator, and the boundary values on both
 * sides of every maximum.  Each rejection is sent as STAGE and as COMMIT (the
 * one-SMI path) and must leave every byte of (fake) memory, every CPU
 * register and the engine's state unchanged, with the failing record named.
 */
#include <stdlib.h>
#include <string.h>

#include "harness.h"
#include "internal.h" /* CI_UNDO_HDR: the undo pool's accounting */

static plan_builder *pb;

/* A valid plan: one 0x100-byte island T_SRC+0x1000 -> T_ARENA+0x10000 with a
 * rel32 fix-up, a branch target and a RIP rule. */
static void base_plan(void) {
  pb_init(pb, 42);
  uint32_t i = pb_island(pb, T_SRC + 0x1000, T_ARENA + 0x10000, 0x100, CI_ISLAND_ENTRY_REL32);
  pb_rel32(pb, i, 0x10, T_SRC + 0x8000);
  pb_target(pb, i, 0x20);
  pb_rule(pb, i, CI_RULE_TRANSLATE_RIP, 0);
  pb_chunks(pb, 0x80);
}

static uint32_t encode(void) { return pb_encode(pb, g_plan); }

/* Send g_plan[0..size) as `command`; expect `want` and nothing changed. */
static void expect_one(machine *m, uint32_t command, uint32_t size, ci_status want,
                       uint32_t index, int line) {
  static uint8_t copy[CI_PLAN_MAX_SIZE + 64];
  fake_snapshot before;
  fake_cpus cpus = m->cpus;
  uint32_t state = m->engine.state, gens = m->engine.gen_count, top = m->engine.undo.top;
  memcpy(copy, g_plan, size);
  fake_snapshot_take(&before);
  ci_status st = machine_smi(m, command, copy, size);
  const ci_result *r = machine_result(m);
  g_checks += 4;
  if (st != want || r->status != want) {
    g_failures++;
    fprintf(stderr, "test_validate.c:%d: cmd %u: status %u (%s), expected %u (%s)\n", line,
            command, st, ci_status_text(st), want, ci_status_text(want));
  }
  if (index != 0xFFFFFFFEu && r->failed_index != index) {
    g_failures++;
    fprintf(stderr, "test_validate.c:%d: failed_index %u, expected %u\n", line, r->failed_index,
            index);
  }
  uint64_t diff = fake_snapshot_diff(&before);
  if (diff || memcmp(&cpus.rip, &m->cpus.rip, sizeof cpus.rip)) {
    g_failures++;
    fprintf(stderr, "test_validate.c:%d: rejected plan changed %llu bytes\n", line,
            (unsigned long long)diff);
  }
  if (m->engine.state != state || m->engine.gen_count != gens || m->engine.undo.top != top) {
    g_failures++;
    fprintf(stderr, "test_validate.c:%d: rejected plan changed engine state\n", line);
  }
  fake_snapshot_free(&before);
}

#define ANY_INDEX 0xFFFFFFFEu
/* Reject through both STAGE and COMMIT. */
#define REJECT(m, size, want, index)                                     \
  do {                                                                   \
    expect_one((m), CI_CMD_STAGE, (size), CI_ST_##want, (index), __LINE__); \
    expect_one((m), CI_CMD_COMMIT, (size), CI_ST_##want, (index), __LINE__); \
  } while (0)

/* Accept: COMMIT succeeds, then roll back so the machine is reusable. */
#define ACCEPT(m, size)                                                       \
  do {                                                                        \
    uint32_t gen_ = 0;                                                        \
    CHECK_ST(machine_smi((m), CI_CMD_COMMIT, g_plan, (size)), CI_ST_OK);      \
    if (machine_result(m)->status == CI_ST_OK)                                \
      CHECK_ST(machine_smi((m), CI_CMD_ROLLBACK, &gen_, 4), CI_ST_OK);        \
  } while (0)

static ci_plan_header *hdr(void) { return (ci_plan_header *)g_plan; }

/* ---- header ---- */

static void test_header(machine *m) {
  base_plan();
  uint32_t size = encode();
  ACCEPT(m, size);
  REJECT(m, sizeof(ci_plan_header) - 1, BAD_TOTAL_SIZE, CI_NO_INDEX);
  hdr()->magic ^= 1;
  REJECT(m, size, BAD_MAGIC, CI_NO_INDEX);
  size = encode();
  hdr()->version = CI_PLAN_VERSION + 1u;
  REJECT(m, size, BAD_VERSION, CI_NO_INDEX);
  size = encode();
  hdr()->header_size = 65;
  REJECT(m, size, BAD_HEADER_SIZE, CI_NO_INDEX);
  size = encode();
  REJECT(m, size - 1, BAD_TOTAL_SIZE, CI_NO_INDEX); /* request shorter than the plan */
  hdr()->total_size += 8;
  plan_reseal(g_plan, size);
  REJECT(m, size, BAD_TOTAL_SIZE, CI_NO_INDEX);
  size = encode();
  hdr()->target_count++; /* tables no longer match the size */
  plan_reseal(g_plan, size);
  REJECT(m, size, BAD_TOTAL_SIZE, CI_NO_INDEX);
  size = encode();
  g_plan[size - 1] ^= 0x80;
  REJECT(m, size, BAD_DIGEST, CI_NO_INDEX);
  size = encode();
  hdr()->flags = CI_PLAN_FLAGS_KNOWN + 1u; /* the lowest unknown plan flag */
  plan_reseal(g_plan, size);
  REJECT(m, size, BAD_RESERVED, CI_NO_INDEX);
  size = encode();
  hdr()->flags = 0x80000000u | CI_PLAN_KEEP_COPIES;
  plan_reseal(g_plan, size);
  REJECT(m, size, BAD_RESERVED, CI_NO_INDEX);
  size = encode();
  hdr()->reserved[1] = 1;
  plan_reseal(g_plan, size);
  REJECT(m, size, BAD_RESERVED, CI_NO_INDEX);
  /* a request larger than any plan */
  expect_one(m, CI_CMD_STAGE, CI_PLAN_MAX_SIZE + 1, CI_ST_BAD_REQUEST, CI_NO_INDEX, __LINE__);
}

/* Counts one past each maximum (rejected before any table is sized). */
static void test_count_limits(machine *m) {
  static const struct {
    size_t field;
    uint32_t max;
    ci_status st;
  } limits[] = {
      {offsetof(ci_plan_header, island_count), CI_MAX_ISLANDS, CI_ST_TOO_MANY_ISLANDS},
      {offsetof(ci_plan_header, fixup_count), CI_MAX_FIXUPS, CI_ST_TOO_MANY_FIXUPS},
      {offsetof(ci_plan_header, callsite_count), CI_MAX_CALLSITES, CI_ST_TOO_MANY_CALLSITES},
      {offsetof(ci_plan_header, chunk_count), CI_MAX_CHUNKS, CI_ST_TOO_MANY_CHUNKS},
      {offsetof(ci_plan_header, target_count), CI_MAX_TARGETS, CI_ST_TOO_MANY_TARGETS},
      {offsetof(ci_plan_header, rule_count), CI_MAX_RULES, CI_ST_TOO_MANY_RULES},
  };
  for (unsigned k = 0; k < sizeof limits / sizeof limits[0]; k++) {
    base_plan();
    uint32_t size = encode(), count = limits[k].max + 1u;
    memcpy(g_plan + limits[k].field, &count, 4);
    plan_reseal(g_plan, size);
    expect_one(m, CI_CMD_STAGE, size, limits[k].st, CI_NO_INDEX, __LINE__);
    count = 0xFFFFFFFFu; /* would overflow a 32-bit size computation */
    memcpy(g_plan + limits[k].field, &count, 4);
    plan_reseal(g_plan, size);
    expect_one(m, CI_CMD_COMMIT, size, limits[k].st, CI_NO_INDEX, __LINE__);
  }
}

/* Exactly at each maximum: accepted. */
static void test_at_maxima(machine *m) {
  /* 64 islands */
  pb_init(pb, 1);
  for (uint32_t i = 0; i < CI_MAX_ISLANDS; i++)
    pb_island(pb, T_SRC + 0x100 * i, T_ARENA + 0x100 * i, 0x10, CI_ISLAND_ENTRY_REL32);
  pb_chunks(pb, 0x10);
  ACCEPT(m, encode());
  /* 8192 fix-ups, back to back */
  pb_init(pb, 2);
  pb_island(pb, T_SRC, T_ARENA, 4 * CI_MAX_FIXUPS, CI_ISLAND_ENTRY_NONE);
  for (uint32_t k = 0; k < CI_MAX_FIXUPS; k++)
    pb_rel32(pb, 0, 4 * k, T_SRC + 0x80000 + k);
  pb_chunks(pb, CI_MAX_CHUNK_SIZE);
  ACCEPT(m, encode());
  /* 1024 call sites */
  pb_init(pb, 3);
  pb_island(pb, T_SRC, T_ARENA, 0x20, CI_ISLAND_ENTRY_NONE);
  for (uint32_t k = 0; k < CI_MAX_CALLSITES; k++)
    pb_callsite(pb, 0, T_SRC + 0x10000 + 5 * k);
  pb_chunks(pb, 0x20);
  ACCEPT(m, encode());
  /* 4096 chunks, 4096 targets, 64 rules */
  pb_init(pb, 4);
  pb_island(pb, T_SRC, T_ARENA, CI_MAX_CHUNKS, CI_ISLAND_ENTRY_NONE);
  for (uint32_t k = 0; k < CI_MAX_TARGETS; k++)
    pb_target(pb, 0, k);
  for (uint32_t k = 0; k < CI_MAX_RULES; k++)
    pb_rule(pb, 0, CI_RULE_TRANSLATE_RIP | CI_RULE_TRANSLATE_RETURN, CI_MAX_STACK_SLOTS);
  pb_chunks(pb, 1);
  ACCEPT(m, encode());
  /* the largest island, and a maximal chunk */
  pb_init(pb, 5);
  pb_island(pb, T_ARENA, T_ARENA + CI_MAX_ISLAND_SIZE, CI_MAX_ISLAND_SIZE, CI_ISLAND_ENTRY_REL32);
  pb_chunks(pb, CI_MAX_CHUNK_SIZE);
  ACCEPT(m, encode());
}

/* ---- islands ---- */

static void test_islands(machine *m) {
  uint32_t size;
  base_plan();
  pb->h.version = 1; /* v1: space and cr3 were reserved */
  pb->islands[0].cr3 = 1;
  REJECT(m, encode(), BAD_RESERVED, 0);
  base_plan();
  pb->h.version = 1;
  pb->islands[0].space = CI_SPACE_USER;
  REJECT(m, encode(), BAD_RESERVED, 0);
  base_plan();
  pb->h.version = 1; /* a v1 plan is accepted as physical */
  ACCEPT(m, encode());
  base_plan();
  pb->h.version = 3;
  REJECT(m, encode(), BAD_VERSION, CI_NO_INDEX);
  base_plan();
  pb->h.version = 0;
  REJECT(m, encode(), BAD_VERSION, CI_NO_INDEX);
  base_plan();
  pb->islands[0].space = CI_SPACE_MAX + 1;
  REJECT(m, encode(), BAD_SPACE, 0);
  base_plan();
  pb->islands[0].cr3 = 0x1000; /* physical islands name no tables */
  REJECT(m, encode(), BAD_SPACE, 0);
  base_plan();
  pb->islands[0].space = CI_SPACE_USER; /* virtual islands must */
  REJECT(m, encode(), BAD_SPACE, 0);
  base_plan();
  pb->islands[0].flags = 0x4;
  REJECT(m, encode(), BAD_RESERVED, 0);
  base_plan();
  pb->islands[0].flags = CI_ISLAND_ENTRY_MASK;
  REJECT(m, encode(), ENTRY_FLAGS, 0);
  base_plan();
  pb->islands[0].size = 0;
  REJECT(m, encode(), ISLAND_SIZE, 0);
  base_plan();
  pb->islands[0].size = CI_MAX_ISLAND_SIZE + 1;
  REJECT(m, encode(), ISLAND_SIZE, 0);

  /* wrap-around: the last byte would pass 2^64-1; ending exactly at 2^64 does not wrap */
  base_plan();
  pb->islands[0].src = 0xFFFFFFFFFFFFFF80ULL;
  REJECT(m, encode(), RANGE_WRAP, 0);
  pb->islands[0].src = 0xFFFFFFFFFFFFFF00ULL;
  REJECT(m, encode(), SRC_NOT_REGISTERED, 0);
  base_plan();
  pb->islands[0].dst = 0xFFFFFFFFFFFFFFFFULL;
  REJECT(m, encode(), RANGE_WRAP, 0);

  /* SMRAM: overlapping its first or last byte, or inside */
  base_plan();
  pb->islands[0].src = T_SMRAM - 0x80;
  REJECT(m, encode(), TOUCHES_SMRAM, 0);
  pb->islands[0].src = T_SMRAM + T_SMRAM_SIZE - 1;
  REJECT(m, encode(), TOUCHES_SMRAM, 0);
  pb->islands[0].src = T_SMRAM - 0x100; /* ends right below: not SMRAM, not registered */
  REJECT(m, encode(), SRC_NOT_REGISTERED, 0);
  base_plan();
  pb->islands[0].dst = T_SMRAM + 0x1000;
  REJECT(m, encode(), TOUCHES_SMRAM, 0);

  /* regions: wrong kind, straddling the end, exactly at the end */
  base_plan();
  pb->islands[0].src = T_FAR; /* DEST only */
  REJECT(m, encode(), SRC_NOT_REGISTERED, 0);
  base_plan();
  pb->islands[0].dst = T_SRC + 0x20000; /* SOURCE only */
  REJECT(m, encode(), DST_NOT_REGISTERED, 0);
  base_plan();
  pb->islands[0].dst = T_STACK; /* STACK only */
  REJECT(m, encode(), DST_NOT_REGISTERED, 0);
  base_plan();
  pb->islands[0].dst = T_ARENA + T_ARENA_SIZE - 0x80; /* straddles the arena's end */
  REJECT(m, encode(), DST_NOT_REGISTERED, 0);
  pb->islands[0].dst = T_ARENA + T_ARENA_SIZE - 0x100; /* ends exactly at it */
  pb_chunks(pb, 0x80);
  ACCEPT(m, encode());

  /* entry patch */
  pb_init(pb, 1);
  pb_island(pb, T_SRC, T_ARENA, CI_ENTRY_REL32_LEN - 1, CI_ISLAND_ENTRY_REL32);
  pb_chunks(pb, 16);
  REJECT(m, encode(), ENTRY_TOO_SMALL, 0);
  pb->islands[0].size = CI_ENTRY_REL32_LEN;
  pb_chunks(pb, 16);
  ACCEPT(m, encode());
  pb->islands[0].size = CI_ENTRY_ABS64_LEN - 1;
  pb->islands[0].flags = CI_ISLAND_ENTRY_ABS64;
  pb_chunks(pb, 16);
  REJECT(m, encode(), ENTRY_TOO_SMALL, 0);
  pb->islands[0].size = CI_ENTRY_ABS64_LEN;
  pb_chunks(pb, 16);
  ACCEPT(m, encode());
  base_plan();
  pb->islands[0].dst = T_FAR; /* > 2 GiB away: E9 cannot reach, FF25 can */
  pb->h.fixup_count = 0;
  pb_chunks(pb, 0x80);
  REJECT(m, encode(), ENTRY_RANGE, 0);
  pb->islands[0].flags = CI_ISLAND_ENTRY_ABS64;
  ACCEPT(m, encode());

  /* overlaps between islands (index names the later island) */
  base_plan();
  pb_island(pb, T_SRC + 0x10FF, T_ARENA + 0x20000, 0x100, CI_ISLAND_ENTRY_NONE);
  pb_chunks(pb, 0x80);
  REJECT(m, encode(), SRC_OVERLAP, 1);
  pb->islands[1].src = T_SRC + 0x1100; /* adjacent: fine */
  pb_chunks(pb, 0x80);
  ACCEPT(m, encode());
  pb->islands[1].dst = T_ARENA + 0x100FF;
  pb_chunks(pb, 0x80);
  REJECT(m, encode(), DST_OVERLAP, 1);
  pb_init(pb, 1);
  pb_island(pb, T_ARENA + 0x60000, T_ARENA + 0x70000, 0x100, CI_ISLAND_ENTRY_REL32);
  pb_island(pb, T_ARENA + 0x30000, T_ARENA + 0x60080, 0x100, CI_ISLAND_ENTRY_REL32);
  pb_chunks(pb, 0x80);
  REJECT(m, encode(), DST_OVERLAPS_CODE, 1); /* onto island 0's source */
  pb->islands[1].dst = T_ARENA + 0x60100;
  pb_chunks(pb, 0x80);
  ACCEPT(m, encode());
  pb->islands[0].dst = T_ARENA + 0x30000 + 0xFF; /* island 0 onto island 1's source */
  pb->islands[1].dst = T_ARENA + 0x80000;
  pb_chunks(pb, 0x80);
  REJECT(m, encode(), DST_OVERLAPS_CODE, 1);
  base_plan();
  pb->islands[0].dst = T_ARENA + 0x40000;
  pb->islands[0].src = T_ARENA + 0x400F0; /* its own source */
  pb->h.fixup_count = 0;
  pb_chunks(pb, 0x80);
  REJECT(m, encode(), DST_OVERLAPS_CODE, 0);

  /* against an active generation */
  base_plan();
  size = encode();
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, size), CI_ST_OK);
  base_plan();
  pb->islands[0].src = T_SRC + 0x1080; /* inside the moved original */
  pb->islands[0].dst = T_ARENA + 0x50000;
  pb->h.fixup_count = 0;
  pb->h.target_count = 0;
  pb_chunks(pb, 0x80);
  REJECT(m, encode(), ISLAND_ACTIVE, 0);
  pb->islands[0].src = T_ARENA + 0x10010; /* inside the live copy */
  pb_chunks(pb, 0x80);
  REJECT(m, encode(), ISLAND_ACTIVE, 0);
  pb->islands[0].src = T_SRC + 0x3000;
  pb->islands[0].dst = T_ARENA + 0x100F0; /* onto the live copy */
  pb_chunks(pb, 0x80);
  REJECT(m, encode(), DST_OVERLAPS_CODE, 0);
  uint32_t gen = 0;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);

  /* against a pending plan: a new plan may reuse its destinations, but not
   * read what it staged (those bytes are restored when it is replaced) */
  pb_init(pb, 1);
  pb_island(pb, T_SRC + 0x1000, T_ARENA + 0x50000, 0x100, CI_ISLAND_ENTRY_REL32);
  pb_chunks(pb, 0x80);
  m->budget = 4096;
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, g_plan, encode()), CI_ST_OK);
  m->budget = CI_STAGE_BUDGET_MAX;
  pb_init(pb, 3); /* a source inside the pending destination: refused */
  pb->islands[0].src = T_ARENA + 0x50080;
  pb->islands[0].dst = T_ARENA + 0x60000;
  pb->islands[0].size = 0x40;
  pb->islands[0].flags = CI_ISLAND_ENTRY_REL32;
  pb->h.island_count = 1;
  pb_chunks(pb, 0x40);
  REJECT(m, encode(), ISLAND_ACTIVE, 0);
  pb_init(pb, 4); /* a call site inside the pending destination: refused */
  pb_island(pb, T_SRC + 0x6000, T_ARENA + 0x70000, 0x40, CI_ISLAND_ENTRY_REL32);
  pb->callsites[0].insn = T_ARENA + 0x50010;
  pb->callsites[0].opcode = 0xE8;
  pb->callsites[0].island = 0;
  pb->h.callsite_count = 1;
  pb_chunks(pb, 0x40);
  REJECT(m, encode(), CALLSITE_IN_ISLAND, 0);
  pb_init(pb, 2); /* overlapping the pending destination is fine: it replaces it */
  pb_island(pb, T_SRC + 0x3000, T_ARENA + 0x50080, 0x100, CI_ISLAND_ENTRY_REL32);
  pb_chunks(pb, 0x80);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, encode()), CI_ST_OK);
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);
}

/* ---- fix-ups ---- */

static void test_fixups(machine *m) {
  base_plan();
  pb->fixups[0].island = 1;
  REJECT(m, encode(), FIXUP_ISLAND, 0);
  base_plan();
  pb->fixups[0].kind = 0;
  REJECT(m, encode(), FIXUP_KIND, 0);
  pb->fixups[0].kind = 4;
  REJECT(m, encode(), FIXUP_KIND, 0);
  base_plan();
  pb->fixups[0].pc_bias = 3;
  REJECT(m, encode(), FIXUP_KIND, 0);
  pb->fixups[0].pc_bias = 16;
  REJECT(m, encode(), FIXUP_KIND, 0);
  /* pc_bias 4..15 are valid kinds; the original bytes decide the rest */
  base_plan();
  pb->h.fixup_count = 0;
  pb_rel32(pb, 0, 0x10, T_SRC + 0x8000);
  pb->fixups[0].pc_bias = 15;
  pb->fixups[0].target += 11; /* pc is 11 bytes further: same field resolves 11 further */
  pb->fixups[0].kind = CI_FIXUP_RIPREL32;
  pb_chunks(pb, 0x80);
  ACCEPT(m, encode());
  base_plan();
  pb->h.fixup_count = 0;
  pb_abs64(pb, 0, 0x40, T_SRC + 0x1000 + 0x20);
  pb->fixups[0].pc_bias = 1;
  REJECT(m, encode(), FIXUP_KIND, 0);
  pb->fixups[0].pc_bias = 0;
  pb_chunks(pb, 0x80);
  ACCEPT(m, encode());

  /* outside: the field's last byte must be inside */
  base_plan();
  pb->h.fixup_count = 0;
  pb_rel32(pb, 0, 0xFC, T_SRC + 0x8000);
  pb_chunks(pb, 0x80);
  ACCEPT(m, encode());
  pb->fixups[0].offset = 0xFD;
  REJECT(m, encode(), FIXUP_OUTSIDE, 0);
  pb->fixups[0].offset = 0xFFFFFFFFu;
  REJECT(m, encode(), FIXUP_OUTSIDE, 0);
  base_plan();
  pb->h.fixup_count = 0;
  pb_abs64(pb, 0, 0xF9, T_SRC + 0x1000);
  REJECT(m, encode(), FIXUP_OUTSIDE, 0);

  /* order: sorted by (island, offset), fields disjoint */
  base_plan();
  pb->fixups[1] = pb->fixups[0]; /* overlaps [0x10, 0x14) by one byte */
  pb->fixups[1].offset = 0x13;
  pb->h.fixup_count = 2;
  REJECT(m, encode(), FIXUP_ORDER, 1);
  base_plan();
  pb_rel32(pb, 0, 0x14, T_SRC + 0x8000); /* adjacent: fine */
  pb_chunks(pb, 0x80);
  ACCEPT(m, encode());
  base_plan();
  pb_rel32(pb, 0, 0x08, T_SRC + 0x8000); /* before the previous one */
  pb_chunks(pb, 0x80);
  REJECT(m, encode(), FIXUP_ORDER, 1);

  /* mismatch: memory does not resolve to the target */
  base_plan();
  pb->fixups[0].target += 1;
  REJECT(m, encode(), FIXUP_MISMATCH, 0);
  base_plan();
  pb->h.fixup_count = 0;
  pb_abs64(pb, 0, 0x40, T_SRC + 0x1000 + 0x100); /* one past the island */
  pb_chunks(pb, 0x80);
  REJECT(m, encode(), FIXUP_MISMATCH, 0);
  base_plan();
  pb->h.fixup_count = 0;
  pb_abs64(pb, 0, 0x40, T_SRC + 0x1000 + 0xFF); /* last byte: fine */
  pb_chunks(pb, 0x80);
  ACCEPT(m, encode());

  /* range: the copy in FAR cannot reach T_SRC code with rel32 */
  base_plan();
  pb->islands[0].dst = T_FAR;
  pb->islands[0].flags = CI_ISLAND_ENTRY_ABS64;
  pb->h.target_count = 0;
  pb_chunks(pb, 0x80);
  REJECT(m, encode(), FIXUP_RANGE, 0);
}

/* ---- call sites ---- */

static void test_callsites(machine *m) {
  base_plan();
  pb_callsite(pb, 0, T_SRC + 0x5000);
  uint32_t size = encode();
  ACCEPT(m, size);
  pb->callsites[0].island = 1;
  REJECT(m, encode(), CALLSITE_ISLAND, 0);
  base_plan();
  pb_callsite(pb, 0, T_SRC + 0x5000);
  pb->callsites[0].reserved1 = 1;
  REJECT(m, encode(), BAD_RESERVED, 0);
  base_plan();
  pb_callsite(pb, 0, T_SRC + 0x5000);
  pb->callsites[0].insn = T_FAR + 0x10;
  REJECT(m, encode(), CALLSITE_REGION, 0);
  pb->callsites[0].insn = T_SRC + T_SRC_SIZE - 4; /* straddles the end */
  REJECT(m, encode(), CALLSITE_REGION, 0);
  pb->callsites[0].insn = 0xFFFFFFFFFFFFFFFEULL;
  REJECT(m, encode(), RANGE_WRAP, 0);
  pb->callsites[0].insn = T_SMRAM - 2;
  REJECT(m, encode(), TOUCHES_SMRAM, 0);
  pb->callsites[0].insn = T_SRC + 0x1000 + 0xFC; /* inside the island */
  REJECT(m, encode(), CALLSITE_IN_ISLAND, 0);
  pb->callsites[0].insn = T_SRC + 0x1000 - 4; /* last byte on the island's first */
  REJECT(m, encode(), CALLSITE_IN_ISLAND, 0);
  pb->callsites[0].insn = T_ARENA + 0x10000 + 0x10; /* inside the destination */
  REJECT(m, encode(), CALLSITE_IN_ISLAND, 0);
  base_plan();
  pb_callsite(pb, 0, T_SRC + 0x5000);
  pb_callsite(pb, 0, T_SRC + 0x5004);
  REJECT(m, encode(), CALLSITE_OVERLAP, 1);
  base_plan();
  pb_callsite(pb, 0, T_SRC + 0x5000);
  pb->callsites[0].opcode = 0xE9; /* memory holds E8 */
  REJECT(m, encode(), CALLSITE_OPCODE, 0);
  pb->callsites[0].opcode = 0x90;
  REJECT(m, encode(), CALLSITE_OPCODE, 0);
  base_plan();
  pb_callsite(pb, 0, T_SRC + 0x5000);
  fake_ptr(T_SRC + 0x5001, 1)[0] ^= 1; /* targets elsewhere */
  REJECT(m, encode(), CALLSITE_TARGET, 0);
  /* a call to the endbr64 in front of the island: accepted only when the marker is there */
  base_plan();
  pb_callsite(pb, 0, T_SRC + 0x5000);
  uint32_t to_marker = (uint32_t)(pb->islands[0].src - 4 - (T_SRC + 0x5005));
  memcpy(fake_ptr(T_SRC + 0x5001, 4), &to_marker, 4);
  uint8_t *marker = fake_ptr(pb->islands[0].src - 4, 4), saved[4];
  static const uint8_t endbr64[4] = {0xF3, 0x0F, 0x1E, 0xFA};
  memcpy(saved, marker, 4);
  REJECT(m, encode(), CALLSITE_TARGET, 0); /* no marker there */
  memcpy(marker, endbr64, 4);
  ACCEPT(m, encode());
  marker[3] = 0xFB; /* endbr32: not the marker of a 64-bit function */
  REJECT(m, encode(), CALLSITE_TARGET, 0);
  memcpy(marker, saved, 4);
  base_plan();
  pb->islands[0].dst = T_FAR;
  pb->islands[0].flags = CI_ISLAND_ENTRY_ABS64;
  pb->h.fixup_count = 0;
  pb->h.target_count = 0;
  pb_callsite(pb, 0, T_SRC + 0x5000);
  pb_chunks(pb, 0x80);
  REJECT(m, encode(), CALLSITE_RANGE, 0);
}

/* ---- chunks, targets, rules ---- */

static void test_chunks(machine *m) {
  base_plan();
  pb->chunks[1].island = 1;
  REJECT(m, encode(), CHUNK_ISLAND, 1);
  base_plan();
  pb->chunks[0].reserved0 = 1;
  REJECT(m, encode(), BAD_RESERVED, 0);
  base_plan();
  pb->chunks[1].length = 0;
  REJECT(m, encode(), CHUNK_SIZE, 1);
  pb->chunks[1].length = CI_MAX_CHUNK_SIZE + 1;
  REJECT(m, encode(), CHUNK_SIZE, 1);
  base_plan();
  pb->chunks[1].offset = 0x81; /* gap */
  REJECT(m, encode(), CHUNK_LAYOUT, 1);
  base_plan();
  pb->chunks[1].length = 0x81; /* past the island's end */
  REJECT(m, encode(), CHUNK_LAYOUT, 1);
  base_plan();
  pb->h.chunk_count = 1; /* does not cover the end */
  REJECT(m, encode(), CHUNK_LAYOUT, 1);
  base_plan();
  pb_island(pb, T_SRC + 0x4000, T_ARENA + 0x20000, 0x40, CI_ISLAND_ENTRY_NONE);
  REJECT(m, encode(), CHUNK_LAYOUT, 2); /* island 1 has no chunks */
  pb_chunks(pb, 0x40);
  ACCEPT(m, encode());
  ci_chunk tmp = pb->chunks[0]; /* island 1's chunk first: out of order */
  memmove(&pb->chunks[0], &pb->chunks[1], 4 * sizeof tmp);
  pb->chunks[4] = tmp;
  REJECT(m, encode(), CHUNK_LAYOUT, 0);
}

static void test_targets(machine *m) {
  base_plan();
  pb->targets[0].island = 1;
  REJECT(m, encode(), TARGET_ISLAND, 0);
  base_plan();
  pb->targets[0].reserved = 1;
  REJECT(m, encode(), BAD_RESERVED, 0);
  base_plan();
  pb->targets[0].offset = 0x100;
  REJECT(m, encode(), TARGET_OUTSIDE, 0);
  pb->targets[0].offset = 0xFF;
  ACCEPT(m, encode());
  pb->targets[0].offset = 0; /* the entry itself is allowed */
  ACCEPT(m, encode());
  pb->targets[0].offset = CI_ENTRY_REL32_LEN - 1; /* covered by E9 rel32 */
  REJECT(m, encode(), ENTRY_COVERS_TARGET, 0);
  pb->targets[0].offset = CI_ENTRY_REL32_LEN;
  ACCEPT(m, encode());
  pb->islands[0].flags = CI_ISLAND_ENTRY_ABS64; /* 14 bytes cover offset 5 */
  REJECT(m, encode(), ENTRY_COVERS_TARGET, 0);
  pb->targets[0].offset = CI_ENTRY_ABS64_LEN - 1;
  REJECT(m, encode(), ENTRY_COVERS_TARGET, 0);
  pb->targets[0].offset = CI_ENTRY_ABS64_LEN;
  ACCEPT(m, encode());
  pb->islands[0].flags = CI_ISLAND_ENTRY_NONE;
  pb->targets[0].offset = 1;
  ACCEPT(m, encode());
}

static void test_rules(machine *m) {
  base_plan();
  pb->rules[0].island = 1;
  REJECT(m, encode(), RULE_ISLAND, 0);
  base_plan();
  pb->rules[0].flags = 0;
  REJECT(m, encode(), RULE_FLAGS, 0);
  pb->rules[0].flags = 0x4;
  REJECT(m, encode(), RULE_FLAGS, 0);
  pb->rules[0].flags = CI_RULE_TRANSLATE_RETURN; /* return without a window */
  REJECT(m, encode(), RULE_FLAGS, 0);
  pb->rules[0].stack_slots = CI_MAX_STACK_SLOTS + 1;
  REJECT(m, encode(), RULE_FLAGS, 0);
  pb->rules[0].stack_slots = CI_MAX_STACK_SLOTS;
  ACCEPT(m, encode());
  pb->rules[0].flags = CI_RULE_TRANSLATE_RIP; /* a window without return */
  REJECT(m, encode(), RULE_FLAGS, 0);
}

/* ---- capacity: undo pool, address map, generations ---- */

static void test_capacity(void) {
  machine *m = machine_new();
  /* 4 x 256 KiB destinations need more than the 1 MiB undo pool ... */
  pb_init(pb, 1);
  for (uint32_t i = 0; i < 4; i++)
    pb_island(pb, T_ARENA + i * CI_MAX_ISLAND_SIZE,
              T_ARENA + (4 + i) * CI_MAX_ISLAND_SIZE - (i == 3 ? 0 : 0), CI_MAX_ISLAND_SIZE,
              CI_ISLAND_ENTRY_REL32);
  pb_chunks(pb, CI_MAX_CHUNK_SIZE);
  m->budget = CI_STAGE_BUDGET_MAX;
  REJECT(m, encode(), UNDO_FULL, CI_NO_INDEX);
  /* ... 3 fit */
  pb->h.island_count = 3;
  pb_chunks(pb, CI_MAX_CHUNK_SIZE);
  expect_one(m, CI_CMD_COMMIT, encode(), CI_ST_OVER_BUDGET, CI_NO_INDEX, __LINE__);
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, g_plan, encode()), CI_ST_OK);
  while (machine_result(m)->state == CI_STATE_STAGING)
    CHECK_ST(machine_smi(m, CI_CMD_STAGE, 0, 0), CI_ST_OK);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, 0, 0), CI_ST_OK);
  uint32_t gen = 0;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);
  machine_free(m);

  /* The room reserved is the room logged: 4 islands whose chunk copies and entry patches
     need 1,048,384 of the 1,048,576 pool bytes fit, with every CPU's context to move and a
     stack window rule (contexts are restored from SMRAM, not from undo records), and the
     COMMIT logs exactly that many bytes (destinations without uniform runs, so no chunk is
     logged as a fill).  Before: 64 CPUs' RIP and window records were
     reserved on top, and this plan was refused with UNDO_FULL. */
  m = machine_new();
  pb_init(pb, 2);
  const uint32_t size = 63u * CI_MAX_CHUNK_SIZE + 3000u;
  for (uint32_t i = 0; i < 4; i++)
    pb_island(pb, T_ARENA + i * CI_MAX_ISLAND_SIZE, T_ARENA + (4 + i) * CI_MAX_ISLAND_SIZE, size,
              CI_ISLAND_ENTRY_REL32);
  pb_rule(pb, 0, CI_RULE_TRANSLATE_RIP | CI_RULE_TRANSLATE_RETURN, CI_MAX_STACK_SLOTS);
  pb_chunks(pb, CI_MAX_CHUNK_SIZE);
  const uint32_t logged = 4u * (63u * (CI_UNDO_HDR + CI_MAX_CHUNK_SIZE) + CI_UNDO_HDR + 3000u) +
                          4u * (CI_UNDO_HDR + 8u);
  CHECK(logged == 1048384u && logged <= CI_UNDO_POOL_BYTES);
  uint8_t *old = fake_ptr(T_ARENA + 4u * CI_MAX_ISLAND_SIZE, 4u * CI_MAX_ISLAND_SIZE);
  for (uint32_t i = 0; i < 4u * CI_MAX_ISLAND_SIZE; i++)
    old[i] = (uint8_t)(i * 7u + 1u); /* no uniform run: every destination byte is logged */
  m->budget = CI_STAGE_BUDGET_MAX;
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, g_plan, encode()), CI_ST_OK);
  while (machine_result(m)->state == CI_STATE_STAGING)
    CHECK_ST(machine_smi(m, CI_CMD_STAGE, 0, 0), CI_ST_OK);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, 0, 0), CI_ST_OK);
  CHECK(m->engine.undo.top == logged);
  gen = 0;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);
  machine_free(m);

  /* 16 generations fit, the 17th does not */
  m = machine_new();
  for (uint32_t g = 0; g <= CI_MAX_GENERATIONS; g++) {
    pb_init(pb, g);
    pb_island(pb, T_SRC + 0x100 * g, T_ARENA + 0x100 * g, 0x10, CI_ISLAND_ENTRY_REL32);
    pb_chunks(pb, 0x10);
    uint32_t size = encode();
    if (g < CI_MAX_GENERATIONS)
      CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, size), CI_ST_OK);
    else
      REJECT(m, size, GENERATIONS_FULL, CI_NO_INDEX);
  }
  machine_free(m);

  /* 256 active map entries fit (4 x 64 islands), one more does not */
  m = machine_new();
  for (uint32_t g = 0; g < 5; g++) {
    pb_init(pb, g);
    uint32_t n = g < 4 ? CI_MAX_ISLANDS : 1;
    for (uint32_t i = 0; i < n; i++)
      pb_island(pb, T_SRC + 0x40 * (64 * g + i), T_ARENA + 0x40 * (64 * g + i), 0x20,
                CI_ISLAND_ENTRY_REL32);
    pb_chunks(pb, 0x20);
    uint32_t size = encode();
    if (g < 4)
      CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, size), CI_ST_OK);
    else
      REJECT(m, size, MAP_FULL, CI_NO_INDEX);
  }
  CHECK_EQ(machine_result(m)->map_count, CI_MAX_MAP_ENTRIES);
  /* rolled-back history makes room again */
  gen = 0;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, encode()), CI_ST_OK);
  CHECK_EQ(machine_result(m)->map_count, 3 * CI_MAX_ISLANDS + 1);
  gen = 1; /* everything, newest first, across the compacted map */
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);
  CHECK_EQ(machine_result(m)->generation, 0);
  CHECK_EQ(m->engine.undo.top, 0);
  const uint8_t *dsts = fake_ptr(T_ARENA, 0x40 * (64 * 4 + 1));
  uint64_t nonzero = 0;
  for (uint32_t k = 0; k < 0x40 * (64 * 4 + 1); k++)
    nonzero += dsts[k] != 0;
  CHECK_EQ(nonzero, 0); /* every destination restored */
  for (uint32_t g = 0; g < 4; g++)
    for (uint32_t i = 0; i < CI_MAX_ISLANDS; i++) /* every entry restored */
      CHECK_EQ(fake_ptr(T_SRC + 0x40 * (64 * g + i), 1)[0], 0x40 + (i * 7u) % 0x3F);
  machine_free(m);
}

/* A region the host registered but cannot reach: reported, nothing written. */
static void test_internal(void) {
  machine *m = machine_new();
  m->engine.locked = 0;
  CHECK_ST(ci_region_add(&m->engine, 0x500000000ULL, 0x10000, CI_REGION_SOURCE), CI_ST_OK);
  pb_init(pb, 1);
  pb_island(pb, 0x500000000ULL, T_ARENA, 0x20, CI_ISLAND_ENTRY_ABS64);
  pb_rel32(pb, 0, 4, 0x500000000ULL + 0x100);
  pb->h.chunk_count = 1;
  pb->chunks[0].length = 0x20;
  REJECT(m, encode(), INTERNAL, 0);
  machine_free(m);
}

void suite_validate(void) {
  pb = malloc(sizeof *pb);
  machine *m = machine_new();
  test_header(m);
  test_count_limits(m);
  test_at_maxima(m);
  test_islands(m);
  test_fixups(m);
  test_callsites(m);
  test_chunks(m);
  test_targets(m);
  test_rules(m);
  machine_free(m);
  test_capacity();
  test_internal();
  free(pb);
}
