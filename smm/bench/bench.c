/*
 * Native benchmark of the engine (prints figures; not a test).
 *
 * Workload: a 64 KiB hot set (16 islands of 4 KiB, 1,000 rel32 fix-ups to code
 * outside the islands, 4 KiB chunks) moved into the arena.  Figures, each the
 * median of many repetitions, all in the same run:
 *   memcpy       libc memcpy of the same 64 KiB (the baseline)
 *   validate     ci_validate alone (plan digest, every check, fix-up reads)
 *   stage        STAGE of the whole plan in one SMI (validate + copy + fix-ups)
 *   commit       COMMIT with the plan: validate + stage + commit in one SMI
 *                (the one-SMI fast path; 4 CPUs, 1 inside an island)
 *   restage      STAGE when every chunk is already in place (differential)
 *   commit/junk  COMMIT when the destination held non-uniform bytes (the undo
 *                log must save them in full instead of a FILL record)
 *   0 fix-ups    COMMIT of the same islands without fix-ups
 * Untimed between repetitions: ROLLBACK, which restores the destination.
 * Then a breakdown of the one-SMI path: parts timed alone (the glue's copy of
 * the request into SMRAM, the plan digest, a plain memcpy of the 16 chunks
 * at the engine's own source/destination addresses, the engine's fused
 * copy + undo scan of them) and parts derived from the rows above (a
 * difference of two medians, so it carries the noise of both).
 */
#define _POSIX_C_SOURCE 199309L
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "mem.h" /* ci_digest, ci_copy_over_fill: timed alone in the breakdown */

#define ISLANDS 16u
#define ISLAND_SIZE 4096u
#define FIXUPS 1000u
#ifndef REPS
#define REPS 3001u
#endif

static machine *m;
static plan_builder *pb;
static uint32_t plan_size;
static volatile uint8_t sink;

static uint64_t now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

/* Minima of each measurement, next to the medians: on a loaded machine the
 * minimum is the steadier figure (nothing can make a run faster). */
static uint64_t g_min[16];
static unsigned g_nmin;

static uint64_t median(uint64_t *t, unsigned n) {
  qsort(t, n, sizeof *t, cmp_u64);
  g_min[g_nmin++ % 16] = t[0];
  return t[n / 2];
}

static void build_plan(uint32_t fixups) {
  pb_init(pb, 1);
  for (uint32_t i = 0; i < ISLANDS; i++)
    pb_island(pb, T_SRC + 0x10000 + i * 0x2000, T_ARENA + 0x100000 + i * ISLAND_SIZE,
              ISLAND_SIZE, CI_ISLAND_ENTRY_REL32);
  /* 1,000 fix-ups spread evenly (62 or 63 per island), targets outside */
  for (uint32_t k = 0; k < fixups; k++) {
    uint32_t island = k * ISLANDS / fixups;
    uint32_t first = (island * fixups + ISLANDS - 1) / ISLANDS;
    uint32_t offset = 16u + (k - first) * 64u;
    pb_rel32(pb, island, offset, T_SRC + 0x80000 + 16u * k);
  }
  pb_chunks(pb, ISLAND_SIZE);
  plan_size = pb_encode(pb, g_plan);
  m->cpus.rip[1] = T_SRC + 0x10000 + 0x2000 * 5 + 0x123;
}

static ci_status smi(uint32_t command, const void *req, uint32_t size) {
  return machine_smi(m, command, req, size);
}

static void must(ci_status st, const char *what) {
  if (st != CI_ST_OK) {
    fprintf(stderr, "bench: %s failed: %s\n", what, ci_status_text(st));
    exit(1);
  }
}

static void rollback(void) {
  uint32_t gen = 0;
  must(smi(CI_CMD_ROLLBACK, &gen, 4), "rollback");
}

static uint64_t bench_memcpy(uint8_t *dst, const uint8_t *src, size_t len) {
  static uint64_t t[REPS];
  for (unsigned r = 0; r < REPS; r++) {
    uint64_t t0 = now_ns();
    memcpy(dst, src, len);
    __asm__ volatile("" ::: "memory");
    t[r] = now_ns() - t0;
    sink = dst[r % len];
    memset(dst, 0, len); /* a fresh destination each time, like the engine's */
  }
  return median(t, REPS);
}

static uint64_t bench_commit(void) {
  static uint64_t t[REPS];
  for (unsigned r = 0; r < REPS; r++) {
    uint64_t t0 = now_ns();
    ci_status st = smi(CI_CMD_COMMIT, g_plan, plan_size);
    t[r] = now_ns() - t0;
    must(st, "commit");
    rollback();
  }
  return median(t, REPS);
}

static uint64_t bench_stage(void) {
  static uint64_t t[REPS];
  for (unsigned r = 0; r < REPS; r++) {
    uint64_t t0 = now_ns();
    ci_status st = smi(CI_CMD_STAGE, g_plan, plan_size);
    t[r] = now_ns() - t0;
    must(st, "stage");
    must(smi(CI_CMD_COMMIT, 0, 0), "commit staged");
    rollback();
  }
  return median(t, REPS);
}

static uint64_t bench_restage(void) {
  static uint64_t t[REPS];
  static uint8_t final[ISLANDS][ISLAND_SIZE];
  for (uint32_t i = 0; i < ISLANDS; i++)
    pb_final(pb, i, final[i]);
  for (unsigned r = 0; r < REPS; r++) {
    for (uint32_t i = 0; i < ISLANDS; i++)
      memcpy(fake_ptr(pb->islands[i].dst, ISLAND_SIZE), final[i], ISLAND_SIZE);
    uint64_t t0 = now_ns();
    ci_status st = smi(CI_CMD_STAGE, g_plan, plan_size);
    t[r] = now_ns() - t0;
    must(st, "restage");
    if (machine_result(m)->bytes_written != 0) {
      fprintf(stderr, "bench: restage wrote %u bytes\n", machine_result(m)->bytes_written);
      exit(1);
    }
  }
  must(smi(CI_CMD_COMMIT, 0, 0), "commit restaged");
  rollback();
  for (uint32_t i = 0; i < ISLANDS; i++)
    memset(fake_ptr(pb->islands[i].dst, ISLAND_SIZE), 0, ISLAND_SIZE);
  return median(t, REPS);
}

static uint64_t bench_validate(void) {
  static uint64_t t[REPS];
  ci_plan_view view;
  uint32_t failed;
  for (unsigned r = 0; r < REPS; r++) {
    uint64_t t0 = now_ns();
    ci_status st = ci_validate(&m->engine, g_plan, plan_size, &view, &m->engine.phys[0], &failed);
    t[r] = now_ns() - t0;
    must(st, "validate");
  }
  return median(t, REPS);
}

static uint64_t bench_commit_junk(void) {
  static uint64_t t[REPS];
  for (unsigned r = 0; r < REPS; r++) {
    for (uint32_t i = 0; i < ISLANDS; i++) {
      uint8_t *d = fake_ptr(pb->islands[i].dst, ISLAND_SIZE);
      for (uint32_t k = 0; k < ISLAND_SIZE; k++)
        d[k] = (uint8_t)(k * 7u + r);
    }
    uint64_t t0 = now_ns();
    ci_status st = smi(CI_CMD_COMMIT, g_plan, plan_size);
    t[r] = now_ns() - t0;
    must(st, "commit junk");
    rollback();
  }
  return median(t, REPS);
}

/* The glue's copy of the request into the engine's SMRAM buffer (part of
 * every timed SMI above, through machine_smi). */
static uint64_t bench_request_copy(void) {
  static uint64_t t[REPS];
  uint8_t *buf = ci_engine_request_buffer(&m->engine);
  for (unsigned r = 0; r < REPS; r++) {
    uint64_t t0 = now_ns();
    memcpy(buf, g_plan, plan_size);
    __asm__ volatile("" ::: "memory");
    t[r] = now_ns() - t0;
  }
  return median(t, REPS);
}

static uint64_t bench_digest(void) {
  static uint64_t t[REPS];
  for (unsigned r = 0; r < REPS; r++) {
    uint64_t t0 = now_ns();
    uint64_t d = ci_digest(g_plan, plan_size);
    __asm__ volatile("" ::: "memory");
    t[r] = now_ns() - t0;
    sink = (uint8_t)d;
  }
  return median(t, REPS);
}

/* The 16 chunks at the engine's addresses, destination zeroed before each
 * run (as ROLLBACK leaves it): fused = the engine's copy + undo scan. */
static uint64_t bench_chunks(int fused) {
  static uint64_t t[REPS];
  for (unsigned r = 0; r < REPS; r++) {
    for (uint32_t i = 0; i < ISLANDS; i++)
      memset(fake_ptr(pb->islands[i].dst, ISLAND_SIZE), 0, ISLAND_SIZE);
    uint64_t t0 = now_ns();
    for (uint32_t i = 0; i < ISLANDS; i++) {
      uint8_t *d = fake_ptr(pb->islands[i].dst, ISLAND_SIZE);
      const uint8_t *s = fake_ptr(pb->islands[i].src, ISLAND_SIZE);
      if (fused)
        sink = (uint8_t)ci_copy_over_fill(d, s, ISLAND_SIZE, 0);
      else
        memcpy(d, s, ISLAND_SIZE);
    }
    __asm__ volatile("" ::: "memory");
    t[r] = now_ns() - t0;
  }
  for (uint32_t i = 0; i < ISLANDS; i++)
    memset(fake_ptr(pb->islands[i].dst, ISLAND_SIZE), 0, ISLAND_SIZE);
  return median(t, REPS);
}

static void row(const char *what, uint64_t med, uint64_t min, uint64_t base, uint64_t mbase,
                const char *note) {
  printf("  %-24s %6.2f us %6.2f us   %5.2fx %5.2fx%s\n", what, med / 1e3, min / 1e3,
         (double)med / base, (double)min / mbase, note);
}

int main(void) {
  static uint8_t copy_src[ISLANDS * ISLAND_SIZE], copy_dst[ISLANDS * ISLAND_SIZE];
  m = machine_new();
  pb = malloc(sizeof *pb);
  m->budget = CI_STAGE_BUDGET_MAX;
  build_plan(FIXUPS);
  for (uint32_t i = 0; i < ISLANDS; i++)
    memcpy(copy_src + i * ISLAND_SIZE, fake_ptr(pb->islands[i].src, ISLAND_SIZE), ISLAND_SIZE);

  /* warm-up, and one checked round trip */
  must(smi(CI_CMD_COMMIT, g_plan, plan_size), "warm-up commit");
  if (machine_result(m)->bytes_written != ISLANDS * ISLAND_SIZE ||
      machine_result(m)->fixups_applied != FIXUPS ||
      machine_result(m)->contexts_translated != 1) {
    fprintf(stderr, "bench: unexpected work counters\n");
    return 1;
  }
  rollback();

  uint32_t fixup_plan_size = plan_size;
  uint64_t t_memcpy = bench_memcpy(copy_dst, copy_src, sizeof copy_src); /* min 0 */
  uint64_t t_validate = bench_validate();                                 /* min 1 */
  uint64_t t_stage = bench_stage();                                       /* min 2 */
  uint64_t t_commit = bench_commit();                                     /* min 3 */
  uint64_t t_restage = bench_restage();                                   /* min 4 */
  uint64_t t_junk = bench_commit_junk();                                  /* min 5 */
  uint64_t t_reqcopy = bench_request_copy();                              /* min 6 */
  uint64_t t_digest = bench_digest();                                     /* min 7 */
  uint64_t t_chunks = bench_chunks(0);                                    /* min 8 */
  uint64_t t_fused = bench_chunks(1);                                     /* min 9 */
  build_plan(0); /* same islands, no fix-ups: the copy machinery alone */
  uint64_t t_nofix = bench_commit();                                      /* min 10 */
  uint64_t t_valid0 = bench_validate();                                   /* min 11 */
  uint64_t t_memcpy2 = bench_memcpy(copy_dst, copy_src, sizeof copy_src); /* min 12 */
  uint64_t base = (t_memcpy + t_memcpy2) / 2;
  uint64_t mbase = g_min[0] < g_min[12] ? g_min[0] : g_min[12];

  printf("codeisland engine benchmark: %u KiB hot set, %u islands, %u fix-ups, plan %u bytes, "
         "median of %u runs\n",
         ISLANDS * ISLAND_SIZE / 1024, ISLANDS, FIXUPS, fixup_plan_size, REPS);
  printf("  %-24s %8s %8s   %s\n", "", "median", "min", "ratio to memcpy (median, min)");
  printf("  %-24s %6.2f us %6.2f us\n", "memcpy 64 KiB", base / 1e3, mbase / 1e3);
  row("validate", t_validate, g_min[1], base, mbase, "");
  row("stage (one SMI)", t_stage, g_min[2], base, mbase, "");
  row("stage+commit (one SMI)", t_commit, g_min[3], base, mbase, "  <- target <= 1.5x");
  row("restage, all identical", t_restage, g_min[4], base, mbase, "");
  row("commit, junk dest", t_junk, g_min[5], base, mbase, "");
  row("stage+commit, 0 fix-ups", t_nofix, g_min[10], base, mbase, "");
  printf("one-SMI breakdown (medians, us; \"~\" = difference of two rows above):\n");
  printf("  request copy %.2f | validate %.2f = digest %.2f + ~checks %.2f | "
         "~stage %.2f | ~commit %.2f\n",
         t_reqcopy / 1e3, t_validate / 1e3, t_digest / 1e3,
         ((double)t_validate - (double)t_digest) / 1e3,
         ((double)t_stage - (double)t_validate - (double)t_reqcopy) / 1e3,
         ((double)t_commit - (double)t_stage) / 1e3);
  printf("  the 16 chunks at the engine's addresses: memcpy %.2f, engine copy + undo scan %.2f\n",
         t_chunks / 1e3, t_fused / 1e3);
  printf("  the %u fix-ups: ~%.2f in all (stage+commit with minus without), "
         "~%.2f of it in validate\n",
         FIXUPS, ((double)t_commit - (double)t_nofix) / 1e3,
         ((double)t_validate - (double)t_valid0) / 1e3);
  free(pb);
  machine_free(m);
  return 0;
}
