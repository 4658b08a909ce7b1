/* Fake physical memory; see fake_mem.h. */
#include "fake_mem.h"

#include <stdlib.h>
#include <string.h>

#include "ci_host.h"

typedef struct window {
  uint64_t base, size;
  uint8_t *buf;
} window;

static window g_win[FAKE_MAX_WINDOWS];
static unsigned g_count;

uint8_t *fake_mem_add(uint64_t base, uint64_t size) {
  if (g_count >= FAKE_MAX_WINDOWS)
    abort();
  window *w = &g_win[g_count++];
  w->base = base;
  w->size = size;
  w->buf = calloc(1, size);
  if (!w->buf)
    abort();
  return w->buf;
}

/* The byte at addr, without the DMA hook (addr is known to be mapped). */
static uint8_t *plain_byte(uint64_t addr) {
  for (unsigned i = 0; i < g_count; i++)
    if (addr >= g_win[i].base && addr - g_win[i].base < g_win[i].size)
      return g_win[i].buf + (addr - g_win[i].base);
  abort();
}

static struct {
  uint64_t addr;
  unsigned nth, seen;
  uint8_t mask;
  int armed, fired;
} g_dma;

void fake_mem_reset(void) {
  g_dma.armed = 0;
  for (unsigned i = 0; i < g_count; i++)
    free(g_win[i].buf);
  g_count = 0;
}

void fake_dma_arm(uint64_t addr, unsigned nth, uint8_t mask) {
  g_dma.addr = addr;
  g_dma.nth = nth;
  g_dma.seen = 0;
  g_dma.mask = mask;
  g_dma.armed = 1;
  g_dma.fired = 0;
}

void fake_dma_disarm(void) { g_dma.armed = 0; }

int fake_dma_fired(void) { return g_dma.fired; }

uint8_t *ci_host_map(uint64_t addr, uint64_t len) {
  for (unsigned i = 0; i < g_count; i++) {
    window *w = &g_win[i];
    if (!(len && addr >= w->base && addr - w->base <= w->size - len && len <= w->size))
      continue;
    if (g_dma.armed && g_dma.addr >= addr && g_dma.addr - addr < len && ++g_dma.seen == g_dma.nth) {
      uint8_t *p = plain_byte(g_dma.addr);
      *p ^= g_dma.mask;
      g_dma.fired = 1;
    }
    return w->buf + (addr - w->base);
  }
  return NULL;
}

uint8_t *fake_ptr(uint64_t addr, uint64_t len) {
  uint8_t *p = ci_host_map(addr, len);
  if (!p)
    abort();
  return p;
}

void fake_snapshot_take(fake_snapshot *s) {
  s->count = g_count;
  for (unsigned i = 0; i < g_count; i++) {
    s->size[i] = g_win[i].size;
    s->bytes[i] = malloc(g_win[i].size);
    if (!s->bytes[i])
      abort();
    memcpy(s->bytes[i], g_win[i].buf, g_win[i].size);
  }
}

uint64_t fake_snapshot_diff(const fake_snapshot *s) {
  uint64_t diff = 0;
  for (unsigned i = 0; i < s->count && i < g_count; i++)
    for (uint64_t k = 0; k < s->size[i]; k++)
      diff += s->bytes[i][k] != g_win[i].buf[k];
  return diff;
}

uint64_t fake_snapshot_diff_outside(const fake_snapshot *s, uint64_t addr, uint64_t len) {
  uint64_t diff = 0;
  for (unsigned i = 0; i < s->count && i < g_count; i++)
    for (uint64_t k = 0; k < s->size[i]; k++) {
      uint64_t a = g_win[i].base + k;
      if (s->bytes[i][k] != g_win[i].buf[k] && !(a >= addr && a - addr < len))
        diff++;
    }
  return diff;
}

void fake_snapshot_free(fake_snapshot *s) {
  for (unsigned i = 0; i < s->count; i++)
    free(s->bytes[i]);
  s->count = 0;
}
