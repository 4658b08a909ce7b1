/* Test harness; see harness.h. */
#include "harness.h"

#include <stdlib.h>
#include <string.h>

unsigned g_checks, g_failures;
uint8_t g_plan[CI_PLAN_MAX_SIZE + 64];

/* ---- fake CPUs ---- */

static int cpu_read(void *ctx, uint32_t cpu, uint32_t reg, uint64_t *value) {
  fake_cpus *c = ctx;
  if (cpu >= c->count || (int)cpu == c->fail_read)
    return -1;
  if (reg == CI_REG_RIP)
    *value = c->rip[cpu];
  else if (reg == CI_REG_RSP)
    *value = c->rsp[cpu];
  else if (reg == CI_REG_CR3)
    *value = c->cr3[cpu];
  else if (reg == CI_REG_CS)
    *value = c->cs[cpu];
  else if (reg >= CI_REG_R8 && reg <= CI_REG_RDI)
    *value = c->gpr[cpu][reg - CI_REG_R8];
  else
    return -1;
  return 0;
}

static int cpu_write(void *ctx, uint32_t cpu, uint32_t reg, uint64_t value) {
  fake_cpus *c = ctx;
  if (cpu >= c->count || (int)cpu == c->fail_write)
    return -1;
  c->writes++;
  if (reg == CI_REG_RIP)
    c->rip[cpu] = value;
  else if (reg == CI_REG_RSP)
    c->rsp[cpu] = value;
  else
    return -1;
  return 0;
}

/* ---- machine ---- */

machine *machine_new(void) {
  machine *m = calloc(1, sizeof *m);
  uint8_t *smram = malloc(2u * CI_PLAN_MAX_SIZE + CI_UNDO_POOL_BYTES);
  if (!m || !smram)
    abort();
  fake_mem_reset();
  fake_mem_add(T_SMRAM, T_SMRAM_SIZE);
  fake_mem_add(T_ARENA, T_ARENA_SIZE);
  fake_mem_add(T_SRC, T_SRC_SIZE);
  fake_mem_add(T_FAR, T_FAR_SIZE);
  fake_mem_add(T_STACK, T_STACK_SIZE);
  ci_engine_init(&m->engine, smram, smram + CI_PLAN_MAX_SIZE, smram + 2u * CI_PLAN_MAX_SIZE);
  if (ci_region_add(&m->engine, T_SMRAM, T_SMRAM_SIZE, CI_REGION_SMRAM) ||
      ci_region_add(&m->engine, T_ARENA, T_ARENA_SIZE,
                    CI_REGION_SOURCE | CI_REGION_DEST | CI_REGION_STACK) ||
      ci_region_add(&m->engine, T_SRC, T_SRC_SIZE, CI_REGION_SOURCE) ||
      ci_region_add(&m->engine, T_FAR, T_FAR_SIZE, CI_REGION_DEST) ||
      ci_region_add(&m->engine, T_STACK, T_STACK_SIZE, CI_REGION_STACK))
    abort();
  ci_engine_lock(&m->engine);
  m->cpus.count = 4;
  m->cpus.fail_read = m->cpus.fail_write = -1;
  for (uint32_t i = 0; i < m->cpus.count; i++) {
    m->cpus.rip[i] = T_SRC + 0xF0000 + 16u * i; /* idle, outside every island */
    m->cpus.rsp[i] = T_STACK + 0x8000 + 0x1000u * i;
    m->cpus.cr3[i] = 0x5000; /* firmware's tables (no virtual island uses them) */
    m->cpus.cs[i] = 0x38;    /* OVMF's 64-bit code selector: CPL 0 */
  }
  m->ops.ctx = &m->cpus;
  m->ops.read = cpu_read;
  m->ops.write = cpu_write;
  m->ring.slots = m->ring_slots;
  m->ring.capacity = 64;
  m->budget = CI_STAGE_BUDGET_MAX;
  return m;
}

void machine_free(machine *m) {
  free(m->engine.slot[0]);
  free(m);
  fake_mem_reset();
}

const ci_result *machine_result(const machine *m) { return (const ci_result *)m->response; }

ci_status machine_smi(machine *m, uint32_t command, const void *req, uint32_t size) {
  if (size && size <= CI_PLAN_MAX_SIZE)
    memcpy(ci_engine_request_buffer(&m->engine), req, size);
  m->ops.count = m->cpus.count;
  m->smi++;
  return ci_dispatch(&m->engine, &m->ops, &m->ring, command, size, m->budget, m->smi,
                     m->response, sizeof m->response, &m->response_size);
}

/* ---- plan builder ---- */

uint64_t (*g_pb_xlat)(uint64_t va);

/* Memory behind a plan address (physical, or through g_pb_xlat). */
static uint8_t *pb_mem(uint64_t addr, uint64_t len) {
  return ci_host_map(g_pb_xlat ? g_pb_xlat(addr) : addr, len);
}

void pb_init(plan_builder *pb, uint32_t plan_id) {
  memset(pb, 0, sizeof *pb);
  pb->h.magic = CI_PLAN_MAGIC;
  pb->h.version = CI_PLAN_VERSION;
  pb->h.header_size = sizeof(ci_plan_header);
  pb->h.plan_id = plan_id;
}

uint32_t pb_island(plan_builder *pb, uint64_t src, uint64_t dst, uint32_t size, uint32_t flags) {
  uint32_t i = pb->h.island_count++;
  ci_island *isl = &pb->islands[i];
  isl->src = src;
  isl->dst = dst;
  isl->size = size;
  isl->id = 100 + i;
  isl->flags = flags;
  uint8_t *p = pb_mem(src, size);
  if (p)
    for (uint32_t k = 0; k < size; k++)
      p[k] = (uint8_t)(0x40 + ((k * 13u + i * 7u) % 0x3F)); /* never uniform */
  return i;
}

static void put32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

void pb_rel32(plan_builder *pb, uint32_t island, uint32_t offset, uint64_t target) {
  ci_fixup *f = &pb->fixups[pb->h.fixup_count++];
  const ci_island *isl = &pb->islands[island];
  f->island = (uint16_t)island;
  f->kind = CI_FIXUP_REL32;
  f->pc_bias = 4;
  f->offset = offset;
  f->target = target;
  uint8_t *p = pb_mem(isl->src + offset, 4);
  if (p)
    put32(p, (uint32_t)(target - (isl->src + offset + 4)));
}

void pb_abs64(plan_builder *pb, uint32_t island, uint32_t offset, uint64_t target) {
  ci_fixup *f = &pb->fixups[pb->h.fixup_count++];
  f->island = (uint16_t)island;
  f->kind = CI_FIXUP_ABS64;
  f->pc_bias = 0;
  f->offset = offset;
  f->target = target;
  uint8_t *p = pb_mem(pb->islands[island].src + offset, 8);
  if (p)
    memcpy(p, &target, 8);
}

void pb_callsite(plan_builder *pb, uint32_t island, uint64_t insn) {
  ci_callsite *c = &pb->callsites[pb->h.callsite_count++];
  c->insn = insn;
  c->island = (uint16_t)island;
  c->opcode = 0xE8;
  c->reserved0 = 0;
  c->reserved1 = 0;
  uint8_t *p = pb_mem(insn, 5);
  if (p) {
    p[0] = 0xE8;
    put32(p + 1, (uint32_t)(pb->islands[island].src - (insn + 5)));
  }
}

void pb_target(plan_builder *pb, uint32_t island, uint32_t offset) {
  ci_target *t = &pb->targets[pb->h.target_count++];
  t->island = (uint16_t)island;
  t->offset = offset;
}

void pb_rule(plan_builder *pb, uint32_t island, uint16_t flags, uint32_t slots) {
  ci_rule *r = &pb->rules[pb->h.rule_count++];
  r->island = (uint16_t)island;
  r->flags = flags;
  r->stack_slots = slots;
}

void pb_final(const plan_builder *pb, uint32_t island, uint8_t *out) {
  const ci_island *isl = &pb->islands[island];
  uint8_t *src = pb_mem(isl->src, isl->size);
  if (!src)
    abort();
  memcpy(out, src, isl->size);
  for (uint32_t k = 0; k < pb->h.fixup_count; k++) {
    const ci_fixup *f = &pb->fixups[k];
    if (f->island != island)
      continue;
    if (f->kind == CI_FIXUP_ABS64) {
      uint64_t v = f->target - isl->src + isl->dst;
      memcpy(out + f->offset, &v, 8);
    } else {
      put32(out + f->offset, (uint32_t)(f->target - (isl->dst + f->offset + f->pc_bias)));
    }
  }
}

void pb_chunks(plan_builder *pb, uint32_t chunk_size) {
  static uint8_t final[CI_MAX_ISLAND_SIZE];
  pb->h.chunk_count = 0;
  for (uint32_t i = 0; i < pb->h.island_count; i++) {
    uint32_t size = pb->islands[i].size;
    pb_final(pb, i, final);
    for (uint32_t off = 0; off < size; off += chunk_size) {
      ci_chunk *c = &pb->chunks[pb->h.chunk_count++];
      c->island = (uint16_t)i;
      c->offset = off;
      c->length = size - off < chunk_size ? size - off : chunk_size;
      c->digest = ci_digest64(final + off, c->length, 0);
    }
  }
}

uint32_t pb_encode(const plan_builder *pb, uint8_t *out) {
  ci_plan_header h = pb->h;
  uint8_t *p = out + sizeof h;
#define PUT(arr, n)                      \
  memcpy(p, (arr), (size_t)(n) * sizeof *(arr)); \
  p += (size_t)(n) * sizeof *(arr);
  PUT(pb->islands, h.island_count);
  PUT(pb->fixups, h.fixup_count);
  PUT(pb->callsites, h.callsite_count);
  PUT(pb->chunks, h.chunk_count);
  PUT(pb->targets, h.target_count);
  PUT(pb->rules, h.rule_count);
#undef PUT
  h.total_size = (uint32_t)(p - out);
  h.digest = 0;
  memcpy(out, &h, sizeof h);
  plan_reseal(out, h.total_size);
  return h.total_size;
}

void plan_reseal(uint8_t *plan, uint32_t size) {
  ci_plan_header *h = (ci_plan_header *)plan;
  h->digest = 0;
  h->digest = ci_digest64(plan, size, 0);
}
