/*
 * Address spaces: virtual islands through the engine's own page walk.
 *
 * The test builds real 4-level page tables (4 KiB, 2 MiB and 1 GiB leaves)
 * in the arena, keeps its own list of what it mapped (the oracle the plan
 * builder uses, independent of pagewalk.c), and checks: round trips (stage
 * over several SMIs, commit, rollback) at VA != PA with page-crossing
 * islands and 2 MiB pages; CR3 matching with PCID bits; every walk status,
 * each refused with zero bytes written; the memory policy switch.
 */
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define P   0x1ULL
#define RW  0x2ULL
#define US  0x4ULL
#define PS  0x80ULL
#define USER (P | RW | US)
#define KERN (P | RW)

/* physical layout inside the arena */
#define PA_SRC    (T_ARENA + 0x10000)  /* 3 pages */
#define PA_DST    (T_ARENA + 0x40000)  /* 3 pages */
#define PA_ALT    (T_ARENA + 0x50000)  /* spare pages */
#define PA_STK    (T_ARENA + 0x60000)  /* 1 page */
#define PA_TABLES (T_ARENA + 0x100000) /* table pool, 64 pages */
#define PA_HUGE   (T_ARENA + 0x200000) /* one 2 MiB page */
#define PA_GIG    0x100000000ULL       /* 1 GiB page over the arena (1 GiB aligned) */

/* virtual layout of the process */
#define VA_SRC  0x00007F1234561000ULL
#define VA_DST  0x00007F1234581000ULL
#define VA_STK  0x00007FFD00000000ULL
#define VA_HUGE 0x00007F1234800000ULL
#define VA_GIG  0x00007F1240000000ULL
#define VA_ALIAS 0x00007F1235000000ULL /* second mappings of the same pages */

/* memory outside every region, and the driver's pages */
#define T_UNREG      0x600000000ULL
#define T_UNREG_SIZE 0x10000ULL
#define T_DRV        0x500000000ULL
#define T_DRV_SIZE   0x10000ULL

#define PCID 0x5u

/* ---- the test's page tables and its own lookup ---- */

typedef struct mapping {
  uint64_t va, pa, size;
} mapping;

static mapping g_maps[64];
static unsigned g_map_count;
static uint64_t g_cr3, g_next_table;

static uint64_t *table(uint64_t pa) { return (uint64_t *)fake_ptr(pa, 4096); }

static uint64_t new_table(void) {
  uint64_t pa = g_next_table;
  g_next_table += 4096;
  memset(table(pa), 0, 4096);
  return pa;
}

/* Map [va, va+size) -> pa with a leaf of `size` (4 KiB, 2 MiB or 1 GiB);
 * tables on the way get `dir` flags, the leaf `leaf` flags. */
static void map_page(uint64_t va, uint64_t pa, uint64_t size, uint64_t leaf, uint64_t dir) {
  uint64_t t = g_cr3 & CI_CR3_ADDR_MASK;
  unsigned leaf_level = size == 0x40000000ULL ? 1u : size == 0x200000ULL ? 2u : 3u;
  for (unsigned level = 0; level < leaf_level; level++) {
    uint64_t *e = &table(t)[(va >> (39u - 9u * level)) & 511u];
    if (!(*e & P))
      *e = new_table() | dir;
    t = *e & CI_CR3_ADDR_MASK;
  }
  table(t)[(va >> (39u - 9u * leaf_level)) & 511u] = pa | leaf | (leaf_level < 3u ? PS : 0);
  g_maps[g_map_count++] = (mapping){va, pa, size};
}

/* The entry that maps va at `level` (0 = PML4), for tests that break it. */
static uint64_t *entry_of(uint64_t va, unsigned level) {
  uint64_t t = g_cr3 & CI_CR3_ADDR_MASK;
  for (unsigned l = 0; l < level; l++)
    t = table(t)[(va >> (39u - 9u * l)) & 511u] & CI_CR3_ADDR_MASK;
  return &table(t)[(va >> (39u - 9u * level)) & 511u];
}

static uint64_t lookup(uint64_t va) {
  for (unsigned i = g_map_count; i-- > 0;)
    if (va >= g_maps[i].va && va - g_maps[i].va < g_maps[i].size)
      return g_maps[i].pa + (va - g_maps[i].va);
  return ~0ULL;
}

/* A machine with a process address space: SRC 3 pages, DST 3 pages,
 * a stack page, a 2 MiB page and a 1 GiB page. */
static machine *space_machine(void) {
  machine *m = machine_new();
  fake_mem_add(T_DRV, T_DRV_SIZE);
  fake_mem_add(T_UNREG, T_UNREG_SIZE);
  m->engine.locked = 0; /* the driver registers its pages before lock */
  if (ci_region_add(&m->engine, T_DRV, T_DRV_SIZE, CI_REGION_DRIVER) != CI_ST_OK)
    abort();
  ci_engine_lock(&m->engine);
  g_map_count = 0;
  g_next_table = PA_TABLES;
  g_cr3 = new_table();
  for (unsigned k = 0; k < 3; k++) {
    map_page(VA_SRC + 0x1000u * k, PA_SRC + 0x1000u * k, 0x1000, USER, USER);
    map_page(VA_DST + 0x1000u * k, PA_DST + 0x1000u * k, 0x1000, USER, USER);
  }
  map_page(VA_STK, PA_STK, 0x1000, USER, USER);
  map_page(VA_HUGE, PA_HUGE, 0x200000, USER, USER);
  map_page(VA_GIG, PA_GIG, 0x40000000ULL, USER, USER);
  g_pb_xlat = lookup;
  return m;
}

static void space_free(machine *m) {
  g_pb_xlat = 0;
  machine_free(m);
}

static plan_builder g_pb;
static plan_builder *const pb = &g_pb;

static void make_virtual(uint32_t island, uint32_t space) {
  pb->islands[island].space = space;
  pb->islands[island].cr3 = g_cr3 | PCID; /* PCID bits never matter */
}

/* A page-crossing user island [VA_SRC + 0x800, + 0x1800) -> VA_DST + 0x800,
 * with a rel32 fix-up, a call site, a branch target and a return rule. */
static void base_plan(void) {
  pb_init(pb, 12);
  pb->h.version = CI_PLAN_VERSION;
  uint32_t i = pb_island(pb, VA_SRC + 0x800, VA_DST + 0x800, 0x1800, CI_ISLAND_ENTRY_REL32);
  make_virtual(i, CI_SPACE_USER);
  pb_rel32(pb, i, 0x7FE, VA_SRC + 0x10); /* straddles the page boundary at 0x800 */
  pb_rel32(pb, i, 0x1000, VA_SRC + 0x20);
  pb_callsite(pb, i, VA_SRC + 0x2F00); /* page 2, after the island */
  pb_target(pb, i, 0x40);
  pb_rule(pb, i, CI_RULE_TRANSLATE_RIP | CI_RULE_TRANSLATE_RETURN, 8);
  pb_chunks(pb, 0x800);
}

static uint32_t encode(void) { return pb_encode(pb, g_plan); }

/* Send the plan as STAGE and as COMMIT: both refused with `want`, nothing
 * written, engine state and CPUs unchanged. */
static void reject(machine *m, uint32_t size, ci_status want, uint32_t index, int line) {
  static const uint32_t commands[2] = {CI_CMD_STAGE, CI_CMD_COMMIT};
  for (unsigned c = 0; c < 2; c++) {
    fake_snapshot before;
    fake_cpus cpus = m->cpus;
    uint32_t state = m->engine.state, top = m->engine.undo.top, gens = m->engine.gen_count;
    fake_snapshot_take(&before);
    ci_status st = machine_smi(m, commands[c], g_plan, size);
    g_checks += 3;
    if (st != want) {
      g_failures++;
      fprintf(stderr, "test_pagewalk.c:%d: cmd %u: status %u (%s), expected %u (%s)\n", line,
              commands[c], st, ci_status_text(st), want, ci_status_text(want));
    }
    if (index != CI_NO_INDEX - 1u && machine_result(m)->failed_index != index) {
      g_failures++;
      fprintf(stderr, "test_pagewalk.c:%d: failed_index %u, expected %u\n", line,
              machine_result(m)->failed_index, index);
    }
    if (fake_snapshot_diff(&before) || memcmp(&cpus, &m->cpus, sizeof cpus) ||
        m->engine.state != state || m->engine.undo.top != top || m->engine.gen_count != gens) {
      g_failures++;
      fprintf(stderr, "test_pagewalk.c:%d: a refused plan changed something\n", line);
    }
    fake_snapshot_free(&before);
  }
}
#define REJECT(m, size, st, index) reject((m), (size), CI_ST_##st, (index), __LINE__)
#define ANY CI_NO_INDEX - 1u

static void accept(machine *m, uint32_t size, int line) {
  uint32_t gen = 0;
  ci_status st = machine_smi(m, CI_CMD_COMMIT, g_plan, size);
  g_checks++;
  if (st != CI_ST_OK) {
    g_failures++;
    fprintf(stderr, "test_pagewalk.c:%d: status %u (%s), expected ok (index %u)\n", line, st,
            ci_status_text(st), machine_result(m)->failed_index);
    return;
  }
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);
}
#define ACCEPT(m, size) accept((m), (size), __LINE__)

/* ---- round trips ---- */

static void test_round_trip(void) {
  machine *m = space_machine();
  static uint8_t want[0x1800], orig_src[0x3000], orig_dst[0x3000];
  base_plan();
  uint32_t size = encode();
  pb_final(pb, 0, want);
  memcpy(orig_src, fake_ptr(PA_SRC, 0x3000), 0x3000);
  memcpy(orig_dst, fake_ptr(PA_DST, 0x3000), 0x3000);
  /* cpu0: in the process (other PCID), inside the island, return address
   * in slot 1; cpu1: other tables, same RIP value: not this address space;
   * cpu2: idle firmware. */
  m->cpus.cr3[0] = g_cr3 | 0x9u;
  m->cpus.rip[0] = VA_SRC + 0x900;
  m->cpus.rsp[0] = VA_STK + 0xF00;
  uint64_t ret = VA_SRC + 0x1234;
  memcpy(fake_ptr(PA_STK + 0xF08, 8), &ret, 8);
  m->cpus.cr3[1] = PA_TABLES + 0x3F000;
  m->cpus.rip[1] = VA_SRC + 0x900;
  m->cpus.rsp[1] = VA_STK + 0xF00;

  m->budget = 0x1000; /* two chunks per SMI: 3 chunks need two STAGE SMIs */
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, g_plan, size), CI_ST_OK);
  CHECK_EQ(machine_result(m)->state, CI_STATE_STAGING);
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, 0, 0), CI_ST_OK);
  CHECK_EQ(machine_result(m)->state, CI_STATE_STAGED);
  CHECK(memcmp(fake_ptr(PA_DST + 0x800, 0x1800), want, 0x1800) == 0);
  CHECK(memcmp(fake_ptr(PA_SRC, 0x3000), orig_src, 0x3000) == 0); /* source untouched */
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, 0, 0), CI_ST_OK);
  const ci_result *r = machine_result(m);
  CHECK_EQ(r->contexts_translated, 1);
  CHECK_EQ(r->returns_translated, 1);
  CHECK_EQ(r->callsites_patched, 1);
  /* virtual arithmetic: the entry jump, the call site and the RIP are VAs */
  const uint8_t *entry = fake_ptr(PA_SRC + 0x800, 5);
  int32_t rel;
  memcpy(&rel, entry + 1, 4);
  CHECK_EQ(entry[0], 0xE9);
  CHECK_EQ(VA_SRC + 0x805 + (uint64_t)(int64_t)rel, VA_DST + 0x800);
  memcpy(&rel, fake_ptr(PA_SRC + 0x2F01, 4), 4);
  CHECK_EQ(VA_SRC + 0x2F05 + (uint64_t)(int64_t)rel, VA_DST + 0x800);
  CHECK_EQ(m->cpus.rip[0], VA_DST + 0x900);
  CHECK_EQ(m->cpus.rip[1], VA_SRC + 0x900); /* other address space: untouched */
  uint64_t slot;
  memcpy(&slot, fake_ptr(PA_STK + 0xF08, 8), 8);
  CHECK_EQ(slot, VA_DST + 0x1234);
  /* the address map publishes the plan's (virtual) addresses */
  CHECK_ST(machine_smi(m, CI_CMD_STATS, 0, 0), CI_ST_OK);
  const ci_map_entry *me = (const ci_map_entry *)(m->response + sizeof(ci_result));
  CHECK_EQ(me[0].orig, VA_SRC + 0x800);
  CHECK_EQ(me[0].cur, VA_DST + 0x800);

  /* a new plan for the same physical bytes through another virtual alias
   * is the same island: refused as already moved */
  map_page(VA_SRC + 0x10000, PA_SRC, 0x1000, USER, USER);
  plan_builder saved = *pb;
  pb_init(pb, 13);
  (void)pb_island(pb, VA_SRC + 0x10900, VA_DST + 0x2000, 0x100, CI_ISLAND_ENTRY_NONE);
  make_virtual(0, CI_SPACE_USER);
  pb_chunks(pb, 0x100);
  REJECT(m, encode(), ISLAND_ACTIVE, 0);
  memcpy(fake_ptr(PA_SRC + 0x900, 0x100), orig_src + 0x900, 0x100); /* pb_island's bytes */
  *pb = saved;

  /* ROLLBACK: RIP back (cpu0 ran on inside the copy), every byte restored */
  m->cpus.rip[0] = VA_DST + 0xA00;
  uint32_t gen = 0;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);
  CHECK_EQ(m->cpus.rip[0], VA_SRC + 0xA00);
  CHECK(memcmp(fake_ptr(PA_SRC, 0x3000), orig_src, 0x3000) == 0);
  CHECK(memcmp(fake_ptr(PA_DST, 0x3000), orig_dst, 0x3000) == 0);
  space_free(m);
}

/* An island inside a 2 MiB page moved into 4 KiB pages and back; another
 * inside the 1 GiB page; a kernel island over supervisor pages. */
static void test_large_pages(void) {
  machine *m = space_machine();
  static uint8_t want[0x2000], orig[0x2000];
  pb_init(pb, 14);
  pb->h.version = CI_PLAN_VERSION;
  uint32_t i = pb_island(pb, VA_HUGE + 0x1FF000 - 0x1000, VA_DST, 0x2000, CI_ISLAND_ENTRY_ABS64);
  make_virtual(i, CI_SPACE_USER);
  pb_abs64(pb, i, 0x100, VA_HUGE + 0x1FF000 - 0x1000 + 0x40);
  pb_rel32(pb, i, 0x1FFC, VA_HUGE); /* the last field ends at the 2 MiB page's end */
  pb_chunks(pb, 0x1000);
  uint32_t size = encode();
  pb_final(pb, i, want);
  memcpy(orig, fake_ptr(PA_DST, 0x2000), 0x2000);
  m->cpus.cr3[0] = g_cr3;
  m->cpus.rip[0] = VA_HUGE + 0x1FF000 - 0x1000 + 0x20;
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, size), CI_ST_OK);
  CHECK(memcmp(fake_ptr(PA_DST, 0x2000), want, 0x2000) == 0);
  CHECK_EQ(m->cpus.rip[0], VA_DST + 0x20);
  uint64_t target;
  memcpy(&target, fake_ptr(PA_HUGE + 0x1FE000 + 6, 8), 8); /* FF 25 0 imm64 */
  CHECK_EQ(target, VA_DST);
  uint32_t gen = 0;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &gen, 4), CI_ST_OK);
  CHECK(memcmp(fake_ptr(PA_DST, 0x2000), orig, 0x2000) == 0);
  CHECK_EQ(m->cpus.rip[0], VA_HUGE + 0x1FF000 - 0x1000 + 0x20);

  /* 1 GiB leaf: VA_GIG + 0x20000 is the arena's PA_GIG + 0x20000 */
  pb_init(pb, 15);
  i = pb_island(pb, VA_GIG + 0x20000, VA_GIG + 0x30000, 0x300, CI_ISLAND_ENTRY_REL32);
  make_virtual(i, CI_SPACE_USER);
  pb_chunks(pb, 0x100);
  ACCEPT(m, encode());

  /* kernel island: supervisor leaf is fine for KERNEL, refused for USER */
  map_page(0xFFFFFFFF81000000ULL, PA_ALT, 0x1000, KERN, KERN);
  map_page(0xFFFFFFFF81001000ULL, PA_ALT + 0x1000, 0x1000, KERN, KERN);
  pb_init(pb, 16);
  i = pb_island(pb, 0xFFFFFFFF81000000ULL, 0xFFFFFFFF81001000ULL, 0x80, CI_ISLAND_ENTRY_REL32);
  make_virtual(i, CI_SPACE_KERNEL);
  pb_chunks(pb, 0x80);
  ACCEPT(m, encode());
  make_virtual(i, CI_SPACE_USER);
  REJECT(m, encode(), SUPERVISOR_PAGE, 0);
  space_free(m);
}

/* ---- every walk status ---- */

static void test_statuses(void) {
  machine *m = space_machine();
  base_plan();
  ACCEPT(m, encode());

  /* the island's space itself */
  base_plan();
  pb->islands[0].cr3 = 0xFFF; /* PCID only: names no tables */
  REJECT(m, encode(), BAD_SPACE, 0);

  /* non-canonical: the source, then a range running into the hole */
  base_plan();
  pb->islands[0].src = 0x0000800000000000ULL;
  REJECT(m, encode(), NONCANONICAL, 0);
  base_plan();
  pb->islands[0].dst = 0x00007FFFFFFFFF00ULL;
  REJECT(m, encode(), NONCANONICAL, 0);

  /* non-present: an unmapped destination, a hole in the middle of the
   * source (second page), a PML4 entry with PS (reserved) */
  base_plan();
  pb->islands[0].dst = VA_DST + 0x10000;
  REJECT(m, encode(), PAGE_NOT_PRESENT, 0);
  base_plan();
  uint32_t size = encode();
  uint64_t *pte = entry_of(VA_SRC + 0x1000, 3), saved = *pte;
  *pte &= ~P;
  REJECT(m, size, PAGE_NOT_PRESENT, 0);
  *pte = saved;
  uint64_t *pml4e = entry_of(VA_SRC, 0), saved4 = *pml4e;
  *pml4e |= PS;
  REJECT(m, size, PAGE_NOT_PRESENT, 0);

  /* supervisor: at the leaf, and at the top level only */
  *pml4e = saved4 & ~US;
  REJECT(m, size, SUPERVISOR_PAGE, 0);
  *pml4e = saved4;
  *pte = saved & ~US;
  REJECT(m, size, SUPERVISOR_PAGE, 0);
  *pte = saved;

  /* table pages: in SMRAM, outside the regions, in the driver's pages */
  uint64_t *pde = entry_of(VA_SRC, 2), saved_pde = *pde;
  *pde = T_SMRAM | USER;
  REJECT(m, size, WALK_TABLE_SMRAM, 0);
  *pde = T_UNREG | USER;
  REJECT(m, size, WALK_TABLE_OUTSIDE, 0);
  *pde = T_DRV | USER;
  REJECT(m, size, WALK_DRIVER, 0);
  *pde = saved_pde;
  base_plan();
  pb->islands[0].cr3 = T_SMRAM + 0x1000;
  REJECT(m, encode(), WALK_TABLE_SMRAM, 0);
  base_plan();
  size = encode();

  /* final pages: SMRAM, the driver's pages, outside the role's regions */
  *pte = (T_SMRAM + 0x2000) | USER;
  REJECT(m, size, WALK_PAGE_SMRAM, 0);
  *pte = T_DRV | USER;
  REJECT(m, size, WALK_DRIVER, 0);
  *pte = T_FAR | USER; /* DEST only: not a source */
  REJECT(m, size, SRC_NOT_REGISTERED, 0);
  *pte = T_UNREG | USER;
  REJECT(m, size, SRC_NOT_REGISTERED, 0);
  *pte = (PA_SRC + 0x5000) | USER; /* registered, but not after page 0 */
  REJECT(m, size, PAGES_DISCONTIGUOUS, 0);
  *pte = saved;
  uint64_t *dpte = entry_of(VA_DST + 0x1000, 3), dsaved = *dpte;
  *dpte = (T_SRC + 0x1000) | USER; /* SOURCE only: not a destination */
  REJECT(m, size, DST_NOT_REGISTERED, 0);
  *dpte = dsaved;

  /* call sites are walked in their island's space */
  uint64_t *cpte = entry_of(VA_SRC + 0x2000, 3), csaved = *cpte;
  base_plan();
  pb->callsites[0].insn = VA_SRC + 0x3000; /* unmapped */
  REJECT(m, encode(), PAGE_NOT_PRESENT, 0);
  base_plan();
  size = encode();
  *cpte = T_FAR | USER; /* the call site's page is DEST only */
  REJECT(m, size, CALLSITE_REGION, 0);
  *cpte = csaved;

  /* aliases: two virtual ranges over one physical source are one source */
  map_page(VA_ALIAS, PA_SRC + 0x1000, 0x1000, USER, USER);
  base_plan();
  uint32_t j = pb_island(pb, VA_ALIAS, VA_DST + 0x2100, 0x100, CI_ISLAND_ENTRY_NONE);
  make_virtual(j, CI_SPACE_USER);
  pb_chunks(pb, 0x800);
  REJECT(m, encode(), SRC_OVERLAP, 1);
  /* and a destination aliasing a source is refused as overlapping code */
  base_plan();
  j = pb_island(pb, VA_SRC + 0x2000 + 0x100, VA_ALIAS, 0x100, CI_ISLAND_ENTRY_NONE);
  make_virtual(j, CI_SPACE_USER);
  pb_chunks(pb, 0x800);
  REJECT(m, encode(), DST_OVERLAPS_CODE, 1);
  space_free(m);
}

/* The tables change between the SMIs of one plan: refused, nothing written
 * in that SMI, and a rewalk that finds the old answer goes on. */
static void test_mapping_changed(void) {
  machine *m = space_machine();
  base_plan();
  uint32_t size = encode();
  m->budget = 0x1000;
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, g_plan, size), CI_ST_OK);
  uint64_t *dpte = entry_of(VA_DST, 3), dsaved[2] = {dpte[0], dpte[1]};
  dpte[0] = PA_ALT | USER; /* the destination moved, contiguous again */
  dpte[1] = (PA_ALT + 0x1000) | USER;
  fake_snapshot before;
  fake_snapshot_take(&before);
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, 0, 0), CI_ST_MAPPING_CHANGED);
  CHECK_EQ(machine_result(m)->failed_index, 0);
  CHECK_EQ(fake_snapshot_diff(&before), 0);
  dpte[1] = (PA_ALT + 0x5000) | USER; /* or torn apart */
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, 0, 0), CI_ST_PAGES_DISCONTIGUOUS);
  dpte[0] = dsaved[0];
  dpte[1] = dsaved[1];
  fake_snapshot_free(&before);
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, 0, 0), CI_ST_OK);
  CHECK_EQ(machine_result(m)->state, CI_STATE_STAGED);
  uint64_t *cpte = entry_of(VA_SRC + 0x2000, 3), csaved = *cpte;
  *cpte &= ~P; /* the call site's page went away before COMMIT */
  fake_snapshot_take(&before);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, 0, 0), CI_ST_PAGE_NOT_PRESENT);
  CHECK_EQ(fake_snapshot_diff(&before), 0);
  *cpte = csaved;
  map_page(VA_SRC + 0x2000, PA_ALT + 0x3000, 0x1000, USER, USER); /* same VA, other page */
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, 0, 0), CI_ST_MAPPING_CHANGED);
  *cpte = csaved;
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, 0, 0), CI_ST_OK);
  fake_snapshot_free(&before);
  space_free(m);
}

/* A CPU in the process with its stack page not mapped has no window: with
 * its RIP inside the island, COMMIT is refused (its returns cannot be seen). */
static void test_stack_walk(void) {
  machine *m = space_machine();
  base_plan();
  uint32_t size = encode();
  m->cpus.cr3[0] = g_cr3;
  m->cpus.rip[0] = VA_SRC + 0x900;
  m->cpus.rsp[0] = VA_STK + 0x10000; /* unmapped */
  fake_snapshot before;
  fake_snapshot_take(&before);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, size), CI_ST_STACK_ACCESS);
  CHECK_EQ(machine_result(m)->failed_index, 0);
  CHECK_EQ(fake_snapshot_diff(&before), 0);
  CHECK_EQ(m->cpus.rip[0], VA_SRC + 0x900);
  fake_snapshot_free(&before);
  m->cpus.rsp[0] = VA_STK + 0xFF8; /* one slot left in the page: clipped, fine */
  uint64_t ret = VA_SRC + 0x1000;
  memcpy(fake_ptr(PA_STK + 0xFF8, 8), &ret, 8);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, size), CI_ST_OK);
  CHECK_EQ(machine_result(m)->returns_translated, 1);
  uint64_t slot;
  memcpy(&slot, fake_ptr(PA_STK + 0xFF8, 8), 8);
  CHECK_EQ(slot, VA_DST + 0x1000);
  space_free(m);
}

/* ---- the memory policy ---- */

static void test_policy(void) {
  machine *m = space_machine();
  CHECK_ST(ci_engine_set_memory_policy(&m->engine, CI_MEM_UNRESTRICTED), CI_ST_LOCKED);
  m->engine.locked = 0;
  CHECK_ST(ci_engine_set_memory_policy(&m->engine, 7), CI_ST_BAD_REQUEST);
  ci_engine_lock(&m->engine);
  /* a process page outside every region, with its tables outside too */
  base_plan();
  uint32_t size = encode();
  uint64_t *pte0 = entry_of(VA_DST, 3), saved0 = *pte0;
  *pte0 = T_UNREG | USER;
  REJECT(m, size, DST_NOT_REGISTERED, 0);
  *pte0 = saved0;
  uint64_t *pde = entry_of(VA_SRC, 2), saved_pde = *pde;
  memcpy(fake_ptr(T_UNREG + 0x8000, 4096), fake_ptr(saved_pde & CI_CR3_ADDR_MASK, 4096), 4096);
  *pde = (T_UNREG + 0x8000) | USER;
  REJECT(m, size, WALK_TABLE_OUTSIDE, 0);

  m->engine.locked = 0;
  CHECK_ST(ci_engine_set_memory_policy(&m->engine, CI_MEM_UNRESTRICTED), CI_ST_OK);
  ci_engine_lock(&m->engine);
  ACCEPT(m, size); /* the table page outside the regions is now readable */
  uint64_t *upte = entry_of(VA_DST, 3), usaved = *upte;
  upte[0] = T_UNREG | USER; /* ... and final pages outside them writable */
  upte[1] = (T_UNREG + 0x1000) | USER;
  ACCEPT(m, size);
  *upte = (T_SMRAM + 0x3000) | USER; /* SMRAM and the driver stay forbidden */
  REJECT(m, size, WALK_PAGE_SMRAM, 0);
  *upte = T_DRV | USER;
  REJECT(m, size, WALK_DRIVER, 0);
  *upte = usaved;
  *pde = T_DRV | USER;
  REJECT(m, size, WALK_DRIVER, 0);
  *pde = saved_pde;
  /* physical islands still need their regions */
  g_pb_xlat = 0;
  pb_init(pb, 17);
  (void)pb_island(pb, T_ARENA + 0x1000, T_UNREG, 0x100, CI_ISLAND_ENTRY_NONE);
  pb_chunks(pb, 0x100);
  REJECT(m, encode(), DST_NOT_REGISTERED, 0);
  space_free(m);
}

/* ROLLBACK of an older virtual generation under a newer physical one: both
 * are undone, the virtual one only on the CPU of its address space. */
static void test_rollback_mixed(void) {
  machine *m = space_machine();
  base_plan();
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, encode()), CI_ST_OK);
  uint32_t first = machine_result(m)->generation;
  g_pb_xlat = 0;
  pb_init(pb, 18);
  (void)pb_island(pb, T_SRC + 0x1000, T_ARENA + 0x80000, 0x100, CI_ISLAND_ENTRY_REL32);
  pb_chunks(pb, 0x100);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, encode()), CI_ST_OK);
  m->cpus.cr3[0] = g_cr3 | 0x2u;
  m->cpus.rip[0] = VA_DST + 0x880;
  m->cpus.rsp[0] = VA_STK + 0xF00; /* its stack is walked from its own CR3 */
  m->cpus.cr3[1] = PA_TABLES + 0x3F000; /* other tables: its equal RIP stays */
  m->cpus.rip[1] = VA_DST + 0x880;
  m->cpus.rip[2] = T_ARENA + 0x80010; /* physical copy: any CPU */
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &first, 4), CI_ST_OK);
  CHECK_EQ(machine_result(m)->contexts_translated, 2);
  CHECK_EQ(m->cpus.rip[0], VA_SRC + 0x880);
  CHECK_EQ(m->cpus.rip[1], VA_DST + 0x880);
  CHECK_EQ(m->cpus.rip[2], T_SRC + 0x1010);
  CHECK_EQ(m->engine.gen_count, 0);
  space_free(m);
}

/* ---- the process exits: nothing is written into pages it no longer owns ---- */

/* The process's pages and the physical plan's, as they are now (the page
 * tables are left out: the tests edit them). */
typedef struct pages {
  uint8_t src[0x3000], dst[0x3000], other[0x100];
} pages;
static void pages_take(pages *p) {
  memcpy(p->src, fake_ptr(PA_SRC, 0x3000), 0x3000);
  memcpy(p->dst, fake_ptr(PA_DST, 0x3000), 0x3000);
  memcpy(p->other, fake_ptr(T_ARENA + 0x80000, 0x100), 0x100);
}
static int pages_same(const pages *p, int with_other) {
  return !memcmp(p->src, fake_ptr(PA_SRC, 0x3000), 0x3000) &&
         !memcmp(p->dst, fake_ptr(PA_DST, 0x3000), 0x3000) &&
         (!with_other || !memcmp(p->other, fake_ptr(T_ARENA + 0x80000, 0x100), 0x100));
}

/* A plan staged over SMIs (2 of 3 chunks), then the process exits: its PML4
 * entry is gone (tables freed).  Continuing, committing, or committing a new
 * plan on top are refused with nothing written; STAGE of a new plan drops
 * the dead one without restoring its staged bytes (those pages may belong to
 * someone else now) and goes on. */
static void test_exit_with_pending_plan(void) {
  static pages before;
  machine *m = space_machine();
  base_plan();
  uint32_t size = encode();
  m->budget = 0x1000;
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, g_plan, size), CI_ST_OK);
  CHECK_EQ(machine_result(m)->state, CI_STATE_STAGING);
  uint64_t *pml4e = entry_of(VA_SRC, 0), saved = *pml4e;
  *pml4e = 0; /* exit: the kernel freed the process's tables */
  pages_take(&before);
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, 0, 0), CI_ST_PAGE_NOT_PRESENT);
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &(uint32_t){0}, 4), CI_ST_NOTHING_TO_ROLLBACK);
  g_pb_xlat = 0; /* a physical plan elsewhere, in one SMI: refused, the dead one is named */
  pb_init(pb, 21);
  (void)pb_island(pb, T_SRC + 0x1000, T_ARENA + 0x80000, 0x100, CI_ISLAND_ENTRY_REL32);
  pb_chunks(pb, 0x100);
  uint32_t other = encode();
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, other), CI_ST_PAGE_NOT_PRESENT);
  CHECK(pages_same(&before, 1));
  CHECK_EQ(m->engine.state, CI_STATE_STAGING);
  /* STAGE of the new plan: the dead plan is dropped, its staged bytes stay */
  CHECK_ST(machine_smi(m, CI_CMD_STAGE, g_plan, other), CI_ST_OK);
  CHECK_EQ(machine_result(m)->bytes_restored, 0);
  CHECK(pages_same(&before, 0));
  CHECK_EQ(machine_result(m)->state, CI_STATE_STAGED);
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, 0, 0), CI_ST_OK);
  *pml4e = saved;
  space_free(m);
}

/* A committed generation whose process exited: ROLLBACK is refused with the
 * walk's status and writes nothing (its undo log names physical pages the
 * kernel has freed); with the tables reused so that the same VAs map other
 * pages it is MAPPING_CHANGED; with the mapping back it rolls back. */
static void test_exit_with_committed_generation(void) {
  static pages before;
  machine *m = space_machine();
  base_plan();
  CHECK_ST(machine_smi(m, CI_CMD_COMMIT, g_plan, encode()), CI_ST_OK);
  uint32_t gens = m->engine.gen_count;
  uint64_t *pml4e = entry_of(VA_SRC, 0), saved = *pml4e;
  *pml4e = 0;
  pages_take(&before);
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &(uint32_t){0}, 4), CI_ST_PAGE_NOT_PRESENT);
  CHECK_EQ(machine_result(m)->failed_index, 0);
  CHECK(pages_same(&before, 1));
  CHECK_EQ(m->engine.gen_count, gens);
  *pml4e = saved;
  uint64_t *pte = entry_of(VA_SRC, 3), spte[2] = {pte[0], pte[1]};
  pte[0] = PA_ALT | USER; /* contiguous, but other pages */
  pte[1] = (PA_ALT + 0x1000) | USER;
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &(uint32_t){0}, 4), CI_ST_MAPPING_CHANGED);
  CHECK(pages_same(&before, 1));
  pte[0] = spte[0];
  pte[1] = spte[1];
  CHECK_ST(machine_smi(m, CI_CMD_ROLLBACK, &(uint32_t){0}, 4), CI_ST_OK);
  CHECK_EQ(m->engine.gen_count, gens - 1u);
  space_free(m);
}

void suite_pagewalk(void) {
  test_exit_with_pending_plan();
  test_exit_with_committed_generation();
  test_rollback_mixed();
  test_round_trip();
  test_large_pages();
  test_statuses();
  test_mapping_changed();
  test_stack_walk();
  test_policy();
}
