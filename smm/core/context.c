/*
 * Saved CPU contexts: read them all first (so a failure is found before any
 * write), then rewrite RIPs and return addresses through a move table.  Each
 * stack window is read once, into SMRAM (e->ctx_win): the decision which
 * slots to rewrite, their new values and a refusal's restore all use that
 * copy, never a second read of memory a DMA could change in between.
 *
 * Return addresses are read in a window of 8-byte slots above the saved RSP,
 * clipped to the end of the STACK region that holds RSP.  A CPU running code
 * of a SOURCE or DEST region (a thread of the managed code) must have its
 * stack in a STACK region, else STACK_ACCESS; other CPUs (firmware, idle
 * APs) have no window, since the handler may not read their stacks.
 *
 * Address spaces: a move of a virtual island applies only to CPUs whose
 * saved CR3 names the island's tables (PCID bits masked); for such a CPU
 * the saved RSP is a virtual address too, so its window is walked from that
 * CR3 and clipped to the end of RSP's page (one contiguous physical piece;
 * return addresses beyond it stay untranslated, which is safe: the original
 * code stays valid).  A move of a physical island applies to every CPU, as
 * in plan v1 (firmware runs identity-mapped).
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

/* Does move mv apply to CPU n (its address space)? */
static int applies(const ci_engine *e, const ci_move *mv, uint32_t n) {
  return mv->space == CI_SPACE_PHYSICAL || ci_cr3_same(mv->cr3, e->ctx_cr3[n]);
}

static int any_virtual(const ci_engine *e) {
  for (uint32_t m = 0; m < e->move_count; m++)
    if (e->moves[m].space != CI_SPACE_PHYSICAL)
      return 1;
  return 0;
}

/* Is CPU n in the address space of some virtual move (and, with rip_inside,
 * running inside that move's range)? */
static int in_virtual_space(const ci_engine *e, uint32_t n, int rip_inside) {
  for (uint32_t m = 0; m < e->move_count; m++) {
    const ci_move *mv = &e->moves[m];
    if (mv->space != CI_SPACE_PHYSICAL && applies(e, mv, n) &&
        (!rip_inside || ci_range_has(mv->from, mv->size, e->ctx_rip[n])))
      return 1;
  }
  return 0;
}

/* Window of a CPU in a virtual address space: RSP walked from its CR3, up
 * to the end of RSP's page, checked as a STACK pointer; 0 slots if the walk
 * or the checks refuse.  The physical start goes to ctx_stack_pa. */
static uint32_t window_walked(ci_engine *e, uint32_t n, uint32_t max_slots) {
  uint64_t pa, room;
  if (ci_walk_addr(e, CI_SPACE_KERNEL, e->ctx_cr3[n], e->ctx_rsp[n], &pa, &room) != CI_ST_OK)
    return 0;
  uint64_t slots = room / 8u < max_slots ? room / 8u : max_slots;
  if (!slots || ci_walk_range(e, CI_SPACE_KERNEL, e->ctx_cr3[n], e->ctx_rsp[n], 8u * slots,
                              CI_REGION_STACK, CI_ST_STACK_ACCESS, &pa) != CI_ST_OK)
    return 0;
  e->ctx_stack_pa[n] = pa;
  return (uint32_t)slots;
}

ci_status ci_ctx_read(ci_engine *e, const ci_cpu_ops *cpu, uint32_t max_slots, ci_work *w) {
  const int spaces = any_virtual(e);
  for (uint32_t n = 0; n < cpu->count; n++) {
    e->ctx_slots[n] = 0;
    e->ctx_moved[n] = 0;
    e->ctx_cr3[n] = 0;
    if (cpu->read(cpu->ctx, n, CI_REG_RIP, &e->ctx_rip[n]) != 0 ||
        (spaces && cpu->read(cpu->ctx, n, CI_REG_CR3, &e->ctx_cr3[n]) != 0)) {
      w->failed_index = n;
      return CI_ST_CPU_ACCESS;
    }
    if (!max_slots)
      continue;
    if (cpu->read(cpu->ctx, n, CI_REG_RSP, &e->ctx_rsp[n]) != 0) {
      w->failed_index = n;
      return CI_ST_CPU_ACCESS;
    }
    uint32_t slots;
    if (spaces && in_virtual_space(e, n, 0)) {
      slots = window_walked(e, n, max_slots);
      if (!slots && in_virtual_space(e, n, 1)) {
        w->failed_index = n;
        return CI_ST_STACK_ACCESS;
      }
    } else {
      e->ctx_stack_pa[n] = e->ctx_rsp[n];
      slots = window_slots(e, e->ctx_rsp[n], max_slots);
      if (!slots && managed_code(e, e->ctx_rip[n])) {
        w->failed_index = n;
        return CI_ST_STACK_ACCESS;
      }
    }
    if (slots) {
      const uint8_t *win = ci_host_map(e->ctx_stack_pa[n], 8u * slots);
      if (!win)
        return CI_ST_INTERNAL;
      ci_copy(e->ctx_win[n], win, 8u * slots);
    }
    e->ctx_slots[n] = slots;
  }
  return CI_ST_OK;
}

static const ci_move *find_move(const ci_engine *e, uint32_t n, uint64_t addr, uint32_t slot) {
  for (uint32_t m = 0; m < e->move_count; m++) {
    const ci_move *mv = &e->moves[m];
    if (slot < mv->slots && ci_range_has(mv->from, mv->size, addr) && applies(e, mv, n))
      return mv;
  }
  return 0;
}

static ci_status move_rip(ci_engine *e, const ci_cpu_ops *cpu, uint32_t n, ci_work *w) {
  uint64_t rip = e->ctx_rip[n];
  for (uint32_t m = 0; m < e->move_count; m++) {
    const ci_move *mv = &e->moves[m];
    if (!ci_range_has(mv->from, mv->size, rip) || !applies(e, mv, n))
      continue;
    if (cpu->write(cpu->ctx, n, CI_REG_RIP, mv->to + (rip - mv->from)) != 0) {
      w->failed_index = n;
      return CI_ST_CPU_ACCESS;
    }
    e->ctx_moved[n] |= CI_CTX_MOVED_RIP;
    w->contexts_translated++;
    return CI_ST_OK;
  }
  return CI_ST_OK;
}

/* Write the translated (restore == 0) or the original (restore != 0) value
 * of every slot of CPU n's window that a move covers; returns how many, or
 * NO_WINDOW if the window cannot be mapped (the allow-list was checked). */
#define NO_WINDOW 0xFFFFFFFFu
static uint32_t write_returns(ci_engine *e, uint32_t n, int restore, uint8_t **win) {
  uint32_t written = 0;
  for (uint32_t s = 0; s < e->ctx_slots[n]; s++) {
    uint64_t value = e->ctx_win[n][s];
    const ci_move *mv = find_move(e, n, value, s);
    if (!mv)
      continue;
    if (!*win && !(*win = ci_host_map(e->ctx_stack_pa[n], 8u * e->ctx_slots[n])))
      return NO_WINDOW;
    ci_put64(*win + 8u * s, restore ? value : mv->to + (value - mv->from));
    written++;
  }
  return written;
}

ci_status ci_ctx_move(ci_engine *e, const ci_cpu_ops *cpu, ci_work *w) {
  for (uint32_t n = 0; n < cpu->count; n++) {
    ci_status st = move_rip(e, cpu, n, w);
    if (st != CI_ST_OK)
      return st;
    uint8_t *win = 0;
    uint32_t written = write_returns(e, n, 0, &win);
    if (written == NO_WINDOW)
      return CI_ST_INTERNAL;
    if (written)
      e->ctx_moved[n] |= CI_CTX_MOVED_STACK;
    w->returns_translated += written;
  }
  return CI_ST_OK;
}

void ci_ctx_restore(ci_engine *e, const ci_cpu_ops *cpu) {
  for (uint32_t n = 0; n < cpu->count; n++) {
    if (e->ctx_moved[n] & CI_CTX_MOVED_RIP)
      (void)cpu->write(cpu->ctx, n, CI_REG_RIP, e->ctx_rip[n]); /* it took the new value */
    if (e->ctx_moved[n] & CI_CTX_MOVED_STACK) {
      uint8_t *win = 0;
      (void)write_returns(e, n, 1, &win);
    }
    e->ctx_moved[n] = 0;
  }
}
