/*
 * libFuzzer target for the validator (make check runs it for a bounded number
 * of runs).  Input byte 0 selects a mode: odd = the rest is sealed first
 * (magic, version, header size, total size, digest set), so the fuzzer reaches
 * the table checks instead of stopping at the digest.  Invariants beyond the
 * sanitizers': the validator reads only inside the plan, restores the plan's
 * bytes, and an accepted plan's tables lie inside it.
 */
#include <stdlib.h>
#include <string.h>

#include "harness.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static machine *g_m;
static uint8_t *g_buf;
static uint8_t *g_base;
static uint32_t g_base_size;

static void build_base(void) {
  plan_builder *pb = malloc(sizeof *pb);
  pb_init(pb, 1);
  pb_island(pb, T_SRC + 0x1000, T_ARENA + 0x1000, 0x100, CI_ISLAND_ENTRY_REL32);
  pb_island(pb, T_SRC + 0x2000, T_ARENA + 0x2000, 0x40, CI_ISLAND_ENTRY_ABS64);
  pb_rel32(pb, 0, 0x10, T_SRC + 0x8000);
  pb_abs64(pb, 0, 0x20, T_SRC + 0x1010);
  pb_rel32(pb, 1, 0x30, T_SRC + 0x9000);
  pb_callsite(pb, 0, T_SRC + 0x5000);
  pb_callsite(pb, 1, T_SRC + 0x5010);
  pb_target(pb, 0, 0x40);
  pb_target(pb, 1, 0x0);
  pb_rule(pb, 0, CI_RULE_TRANSLATE_RIP | CI_RULE_TRANSLATE_RETURN, 8);
  pb_chunks(pb, 0x40);
  g_base = malloc(CI_PLAN_MAX_SIZE);
  g_base_size = pb_encode(pb, g_base);
  free(pb);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!g_m) {
    g_m = machine_new();
    g_buf = malloc(CI_PLAN_MAX_SIZE);
    /* some code with plausible bytes in the source regions */
    for (uint32_t k = 0; k < 0x10000; k++)
      fake_ptr(T_SRC + k, 1)[0] = (uint8_t)(k * 31u);
  }
  if (!g_base)
    build_base();
  if (size < 1 || size - 1 > CI_PLAN_MAX_SIZE)
    return 0;
  uint32_t n = (uint32_t)(size - 1);
  uint8_t *plan;
  if (data[0] & 2) {
    n = g_base_size;
    plan = malloc(n);
    memcpy(plan, g_base, n);
    for (size_t k = 1; k + 2 < size; k += 3)
      plan[(data[k] | (uint32_t)data[k + 1] << 8) % n] = data[k + 2];
    plan_reseal(plan, n);
  } else {
    plan = malloc(n ? n : 1); /* exact size: ASan sees any overread */
    memcpy(plan, data + 1, n);
  }
  if ((data[0] & 3) == 1 && n >= sizeof(ci_plan_header)) {
    ci_plan_header *h = (ci_plan_header *)plan;
    h->magic = CI_PLAN_MAGIC;
    h->version = CI_PLAN_VERSION;
    h->header_size = sizeof(ci_plan_header);
    h->total_size = n;
    plan_reseal(plan, n);
  }
  memcpy(g_buf, plan, n);
  ci_plan_view view;
  uint32_t failed;
  ci_status st = ci_validate(&g_m->engine, plan, n, &view, &g_m->engine.phys[0], &failed);
  if (memcmp(g_buf, plan, n) != 0)
    abort(); /* the validator must leave the plan as it found it */
  if (st == CI_ST_OK) {
    const uint8_t *end = (const uint8_t *)(view.rules + view.header->rule_count);
    if (end != plan + n || (view.copy_bytes == 0 && view.header->island_count))
      abort();
  } else if (st >= CI_ST__COUNT) {
    abort();
  }
  free(plan);
  return 0;
}
