/*
 * Test harness for the native engine: a fake machine (memory windows, CPUs),
 * a plan builder with its own oracle for the relocated bytes (written
 * independently of smm/core, after host/codeisland/plan/apply.py), and a
 * minimal check/report framework.
 */
#ifndef HARNESS_H
#define HARNESS_H

#include <stdint.h>
#include <stdio.h>

#include "codeisland/digest.h"
#include "codeisland/engine.h"
#include "ci_host.h"
#include "fake_mem.h"

/* ---- checks ---- */
extern unsigned g_checks, g_failures;
#define CHECK(cond)                                                          \
  do {                                                                       \
    g_checks++;                                                              \
    if (!(cond)) {                                                           \
      g_failures++;                                                          \
      fprintf(stderr, "%s:%d: check failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                        \
  } while (0)
#define CHECK_EQ(a, b)                                                           \
  do {                                                                           \
    unsigned long long a_ = (unsigned long long)(a), b_ = (unsigned long long)(b); \
    g_checks++;                                                                  \
    if (a_ != b_) {                                                              \
      g_failures++;                                                              \
      fprintf(stderr, "%s:%d: %s == %s failed: %#llx != %#llx\n", __FILE__, __LINE__, \
              #a, #b, a_, b_);                                                   \
    }                                                                            \
  } while (0)
#define CHECK_ST(got, want)                                                     \
  do {                                                                          \
    unsigned g_ = (unsigned)(got), w_ = (unsigned)(want);                       \
    g_checks++;                                                                 \
    if (g_ != w_) {                                                             \
      g_failures++;                                                             \
      fprintf(stderr, "%s:%d: status %u (%s), expected %u (%s)\n", __FILE__, __LINE__, \
              g_, ci_status_text(g_), w_, ci_status_text(w_));                  \
    }                                                                           \
  } while (0)

/* ---- the fake machine ---- */
#define T_SMRAM      0x7F000000ULL /* 1 MiB, forbidden */
#define T_SMRAM_SIZE 0x100000ULL
#define T_ARENA      0x100000000ULL /* 4 MiB, SOURCE|DEST|STACK */
#define T_ARENA_SIZE 0x400000ULL
#define T_SRC        0x101000000ULL /* 1 MiB, SOURCE only, near the arena */
#define T_SRC_SIZE   0x100000ULL
#define T_FAR        0x300000000ULL /* 1 MiB, DEST only, > 2 GiB from the others */
#define T_FAR_SIZE   0x100000ULL
#define T_STACK      0x400000000ULL /* 64 KiB, STACK only */
#define T_STACK_SIZE 0x10000ULL

typedef struct fake_cpus {
  uint32_t count;
  uint64_t rip[CI_MAX_CPUS + 1];
  uint64_t rsp[CI_MAX_CPUS + 1];
  uint64_t cr3[CI_MAX_CPUS + 1];
  uint64_t cs[CI_MAX_CPUS + 1];
  uint64_t gpr[CI_MAX_CPUS + 1][16]; /* CI_REG_R8 + i (the RSP slot unused: rsp[]) */
  int fail_read;  /* CPU index whose reads fail, or -1 */
  int fail_write; /* CPU index whose writes fail, or -1 */
  unsigned writes;
} fake_cpus;

typedef struct machine {
  ci_engine engine;
  fake_cpus cpus;
  ci_cpu_ops ops;
  ci_sample ring_slots[64];
  ci_sample_ring ring;
  uint8_t response[CI_RESPONSE_MAX];
  uint32_t response_size;
  uint32_t smi;
  uint32_t budget;
} machine;

/* Fresh machine: memory windows, regions registered, 4 CPUs idle in T_SRC. */
machine *machine_new(void);
void machine_free(machine *m);
const ci_result *machine_result(const machine *m);
/* One SMI with request bytes `req` (copied into the engine's buffer). */
ci_status machine_smi(machine *m, uint32_t command, const void *req, uint32_t size);

/* ---- plan builder ---- */
typedef struct plan_builder {
  ci_plan_header h;
  ci_island islands[CI_MAX_ISLANDS + 1];
  ci_fixup fixups[CI_MAX_FIXUPS + 1];
  ci_callsite callsites[CI_MAX_CALLSITES + 1];
  ci_chunk chunks[CI_MAX_CHUNKS + 1];
  ci_target targets[CI_MAX_TARGETS + 1];
  ci_rule rules[CI_MAX_RULES + 1];
} plan_builder;

void pb_init(plan_builder *pb, uint32_t plan_id);
/* How the builder and its oracle reach an island's memory: NULL (physical
 * islands) or the test's own virtual -> physical lookup (test_pagewalk.c;
 * kept apart from the engine's walk so it can serve as an oracle). */
extern uint64_t (*g_pb_xlat)(uint64_t va);
/* Island with `size` bytes of recognisable code written at src. */
uint32_t pb_island(plan_builder *pb, uint64_t src, uint64_t dst, uint32_t size, uint32_t flags);
/* A rel32 fix-up at `offset` (pc_bias 4) that resolves to target: also writes
 * the original displacement into source memory. */
void pb_rel32(plan_builder *pb, uint32_t island, uint32_t offset, uint64_t target);
void pb_abs64(plan_builder *pb, uint32_t island, uint32_t offset, uint64_t target);
/* A call (0xE8) at insn targeting the island's src, written into memory. */
void pb_callsite(plan_builder *pb, uint32_t island, uint64_t insn);
void pb_target(plan_builder *pb, uint32_t island, uint32_t offset);
void pb_rule(plan_builder *pb, uint32_t island, uint16_t flags, uint32_t slots);
/* Tile every island with chunks of chunk_size, digests from the oracle. */
void pb_chunks(plan_builder *pb, uint32_t chunk_size);
/* Serialise with digest; returns the size. */
uint32_t pb_encode(const plan_builder *pb, uint8_t *out);
/* Recompute the digest of an encoded plan after editing it. */
void plan_reseal(uint8_t *plan, uint32_t size);
/* Oracle: the island's final bytes (source + fix-ups), into out. */
void pb_final(const plan_builder *pb, uint32_t island, uint8_t *out);

extern uint8_t g_plan[CI_PLAN_MAX_SIZE + 64];

/* ---- test suites ---- */
void suite_validate(void);
void suite_apply(void);
void suite_context(void);
void suite_dispatch(void);
void suite_random(void);
void suite_keep_copies(void);
void suite_atomic(void);
void suite_dma(void);
void suite_pagewalk(void);
void suite_reclaim(void);

#endif
