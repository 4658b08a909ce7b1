/*
 * Native write tracking for smmemu: a Unicorn UC_HOOK_MEM_WRITE callback that sets one byte per
 * 4 KiB page stored to inside a watched range.
 *
 * Why: a host that must know what changed (the plan fuzzer diffs the board after every case)
 * would otherwise compare all 76 MB twice per case, or pay a Python callback per store (about
 * 1,400 stores per case outside SMRAM).  One C call per store costs nanoseconds.
 *
 * Unicorn matches a hook on the store's first byte; a store that runs across a page's end marks
 * both pages.  The library links against nothing.
 */
#include <stdint.h>

struct ci_writes {
  uint64_t base;    /* first byte watched (page aligned) */
  uint64_t pages;   /* pages watched from base */
  uint8_t *dirty;   /* one byte per page: 1 once stored to */
  uint64_t stores;  /* stores seen inside the range, ever */
};

static void mark(struct ci_writes *w, uint64_t address) {
  uint64_t page = (address - w->base) >> 12;
  if (address >= w->base && page < w->pages) {
    w->dirty[page] = 1;
  }
}

void ci_writes_hook(void *uc, int type, uint64_t address, int size, int64_t value, void *user) {
  struct ci_writes *w = (struct ci_writes *)user;
  (void)uc;
  (void)type;
  (void)value;
  w->stores++;
  mark(w, address);
  if (size > 1) {
    mark(w, address + (uint64_t)size - 1);
  }
}
