/*
 * Saved CPU contexts: read them all first (so a failure is found before any
 * write), then rewrite RIPs and return addresses through a move table.
 *
 * Return addresses are read in a window of 8-byte slots above the saved RSP,
 * clipped to the end of the STACK region that holds RSP.  A CPU running code
 * of a SOURCE or DEST region (a thread of the managed code) must have its
 * stack in a STACK region, else STACK_ACCESS; other CPUs (firmware, idle
 * APs) have no window, since the handler may not read their stacks.
 */
#include "ci_host.h"
#include "internal.h"
#include "mem.h"
#include "range.h"

static uint32_t window_slots(const ci_engine *e, uint64_t rsp, uint32_t max_slots) {
  uint64_t last;
  if (!ci_region_end(e, rsp, CI_REGION_STACK, &last))
    return 0;
  uint64_t span = last - rsp; /* bytes after rsp's own, never wraps */
  uint64_t room = (span >> 3) + ((span & 7u) == 7u);
  return room < max_slots ? (uint32_t)room : max_slots;
}

static int managed_code(const ci_engine *e, uint64_t rip) {
  uint64_t last;
  return ci_region_end(e, rip, CI_REGION_SOURCE, &last) ||
         ci_region_end(e, rip, CI_REGION_DEST, &last);
}

ci_status ci_ctx_read(ci_engine *e, const ci_cpu_ops *cpu, uint32_t max_slots, ci_work *w) {
  for (uint32_t n = 0; n < cpu->count; n++) {
    e->ctx_slots[n] = 0;
    if (cpu->read(cpu->ctx, n, CI_REG_RIP, &e->ctx_rip[n]) != 0) {
      w->failed_index = n;
      return CI_ST_CPU_ACCESS;
    }
    if (!max_slots)
      continue;
    if (cpu->read(cpu->ctx, n, CI_REG_RSP, &e->ctx_rsp[n]) != 0) {
      w->failed_index = n;
      return CI_ST_CPU_ACCESS;
    }
    e->ctx_slots[n] = window_slots(e, e->ctx_rsp[n], max_slots);
    if (!e->ctx_slots[n] && managed_code(e, e->ctx_rip[n])) {
      w->failed_index = n;
      return CI_ST_STACK_ACCESS;
    }
  }
  return CI_ST_OK;
}

static const ci_move *find_move(const ci_engine *e, uint64_t addr, uint32_t slot) {
  for (uint32_t m = 0; m < e->move_count; m++) {
    const ci_move *mv = &e->moves[m];
    if (slot < mv->slots && ci_range_has(mv->from, mv->size, addr))
      return mv;
  }
  return 0;
}

static ci_status move_rip(ci_engine *e, const ci_cpu_ops *cpu, uint32_t n, int record,
                          ci_work *w) {
  for (uint32_t m = 0; m < e->move_count; m++) {
    const ci_move *mv = &e->moves[m];
    uint64_t rip = e->ctx_rip[n];
    if (!ci_range_has(mv->from, mv->size, rip))
      continue;
    if (record && !ci_undo_save_reg(&e->undo, n, CI_REG_RIP, rip))
      return CI_ST_UNDO_FULL;
    if (cpu->write(cpu->ctx, n, CI_REG_RIP, mv->to + (rip - mv->from)) != 0) {
      w->failed_index = n;
      return CI_ST_CPU_ACCESS;
    }
    e->ctx_rip[n] = mv->to + (rip - mv->from); /* later moves see the new RIP */
    w->contexts_translated++;
    return CI_ST_OK;
  }
  return CI_ST_OK;
}

static ci_status move_returns(ci_engine *e, uint32_t n, int record, ci_work *w) {
  uint32_t slots = e->ctx_slots[n];
  int saved = 0;
  if (!slots)
    return CI_ST_OK;
  uint8_t *win = ci_host_map(e->ctx_rsp[n], 8u * slots);
  if (!win)
    return CI_ST_INTERNAL;
  for (uint32_t s = 0; s < slots; s++) {
    uint64_t value = ci_le64(win + 8u * s);
    const ci_move *mv = find_move(e, value, s);
    if (!mv)
      continue;
    if (record && !saved) {
      if (!ci_undo_save(&e->undo, CI_UNDO_STACK, e->ctx_rsp[n], win, 8u * slots))
        return CI_ST_UNDO_FULL;
      saved = 1;
    }
    ci_put64(win + 8u * s, mv->to + (value - mv->from));
    w->returns_translated++;
  }
  return CI_ST_OK;
}

ci_status ci_ctx_move(ci_engine *e, const ci_cpu_ops *cpu, int record, ci_work *w) {
  for (uint32_t n = 0; n < cpu->count; n++) {
    ci_status st = move_rip(e, cpu, n, record, w);
    if (st == CI_ST_OK)
      st = move_returns(e, n, record, w);
    if (st != CI_ST_OK)
      return st;
  }
  return CI_ST_OK;
}
