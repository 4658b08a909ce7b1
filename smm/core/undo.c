/*
 * The undo log: a stack of records in an SMRAM pool.  Each record is its saved
 * bytes (padded to 8) followed by a 16-byte header, so the log can be walked
 * from the top down without an index:
 *
 *   pool                                                     top
 *   | data | hdr | data | hdr | (FILL: no data) hdr | ... |
 *
 * A destination that held one repeated byte (a fresh, zeroed or 0xCC-filled
 * arena) is recorded as a FILL record of 16 bytes instead of its contents:
 * that keeps the undo cost of staging far below a second copy.
 */
#include "ci_host.h"
#include "internal.h"
#include "mem.h"

typedef struct undo_hdr {
  uint64_t addr;  /* memory address */
  uint32_t len;   /* bytes covered in memory */
  uint8_t kind;   /* CI_UNDO_* */
  uint8_t fill;   /* FILL: the byte */
  uint16_t pad;
} undo_hdr;
_Static_assert(sizeof(undo_hdr) == CI_UNDO_HDR, "undo header");

static uint32_t pad8(uint32_t n) { return (n + 7u) & ~7u; }

uint32_t ci_undo_cost(uint32_t len) { return CI_UNDO_HDR + pad8(len); }

static int push(ci_undo *u, const undo_hdr *h, const uint8_t *data, uint32_t dlen) {
  uint32_t need = CI_UNDO_HDR + pad8(dlen);
  if (need > u->size - u->top)
    return 0;
  if (dlen)
    ci_copy(u->pool + u->top, data, dlen);
  ci_copy(u->pool + u->top + pad8(dlen), h, sizeof *h);
  u->top += need;
  return 1;
}

int ci_undo_save(ci_undo *u, uint32_t kind, uint64_t addr, const uint8_t *ptr, uint32_t len) {
  undo_hdr h = {addr, len, (uint8_t)kind, 0, 0};
  if (kind == CI_UNDO_MEM && len >= 64u && ci_uniform(ptr, len)) {
    h.kind = CI_UNDO_FILL;
    h.fill = ptr[0];
    return push(u, &h, 0, 0);
  }
  return push(u, &h, ptr, len);
}

/*
 * Same records and bytes as ci_undo_save(MEM) followed by the copy, in one
 * pass over the destination when the log has room for a full record: the
 * copy runs while the old bytes are all dst[0] (ci_copy_over_fill); if it
 * reaches the end, they were uniform and a FILL record is pushed; if it stops
 * at n, the old bytes [0, n) are known to have been dst[0], so the MEM record
 * is that fill followed by the untouched rest, and then the rest is copied.
 * With less room (a FILL record may still fit) the two-pass path decides.
 */
uint32_t ci_undo_copy(ci_undo *u, uint64_t addr, uint8_t *dst, const uint8_t *src,
                      uint32_t len) {
  uint32_t need = CI_UNDO_HDR + pad8(len);
  if (len < 64u || need > u->size - u->top) {
    if (!ci_undo_save(u, CI_UNDO_MEM, addr, dst, len))
      return 0;
    ci_copy(dst, src, len);
    return 1;
  }
  uint8_t fill = dst[0];
  undo_hdr h = {addr, len, CI_UNDO_FILL, fill, 0};
  size_t n = ci_copy_over_fill(dst, src, len, fill);
  if (n == len)
    return push(u, &h, 0, 0); /* room checked above */
  uint8_t *data = u->pool + u->top;
  ci_fill(data, fill, n);
  ci_copy(data + n, dst + n, len - n);
  h.kind = CI_UNDO_MEM;
  h.fill = 0;
  ci_copy(data + pad8(len), &h, sizeof h);
  u->top += need;
  ci_copy(dst + n, src + n, len - n);
  return 1;
}

static uint32_t restore(const undo_hdr *h, const uint8_t *data) {
  uint8_t *p = ci_host_map(h->addr, h->len);
  if (!p)
    return 0;
  if (h->kind == CI_UNDO_FILL)
    ci_fill(p, h->fill, h->len);
  else
    ci_copy(p, data, h->len);
  return h->len;
}

/* The record below `at` (a record boundary above the pool's start). */
static uint32_t record_below(const ci_undo *u, uint32_t at, undo_hdr *h) {
  ci_copy(h, u->pool + at - CI_UNDO_HDR, sizeof *h);
  return at - CI_UNDO_HDR - (h->kind == CI_UNDO_FILL ? 0 : pad8(h->len));
}

uint32_t ci_undo_unwind(ci_undo *u, uint32_t start, int pop) {
  uint32_t at = u->top, restored = 0;
  while (at > start) {
    undo_hdr h;
    at = record_below(u, at, &h);
    restored += restore(&h, u->pool + at);
  }
  if (pop)
    u->top = start;
  return restored;
}

uint32_t ci_undo_relog_cost(const ci_undo *u, uint32_t start) {
  uint32_t at = u->top, need = 0;
  while (at > start) {
    undo_hdr h;
    at = record_below(u, at, &h);
    need += ci_undo_cost(h.len);
  }
  return need;
}

/* Each restore is itself logged (the bytes it overwrites, pushed above the
 * top), newest record first: unwinding the pushed records, newest first,
 * replays the restores backwards. */
uint32_t ci_undo_unwind_logged(ci_undo *u, uint32_t start) {
  uint32_t at = u->top, restored = 0;
  while (at > start) {
    undo_hdr h;
    at = record_below(u, at, &h);
    const uint8_t *now = ci_host_map(h.addr, h.len);
    if (now)
      (void)ci_undo_save(u, CI_UNDO_MEM, h.addr, now, h.len); /* room: ci_undo_relog_cost */
    restored += restore(&h, u->pool + at);
  }
  return restored;
}

/* Records are position-independent (each is its data then its header), so a
 * run of them moved down stays walkable.  Forward byte copy: the ranges may
 * overlap with the destination below the source. */
void ci_undo_drop(ci_undo *u, uint32_t from, uint32_t to) {
  uint32_t n = u->top - to;
  for (uint32_t i = 0; i < n; i++)
    u->pool[from + i] = u->pool[to + i];
  u->top = from + n;
}
