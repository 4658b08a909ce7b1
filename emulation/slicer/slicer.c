/*
 * Native time-slicing for smmemu: a Unicorn UC_HOOK_BLOCK callback that adds up the bytes of
 * the blocks a guest thread executes and stops the emulation once a budget is spent.
 *
 * Why: emu_start(count=) makes Unicorn call a helper on every instruction (5-10x slower), and
 * emu_start(timeout=) stops asynchronously and resumes guests wrongly in Unicorn 2.1 (a
 * single-threaded workload diverges).  A stop requested from a hook is synchronous, so the
 * context saved afterwards is exact; one C call per block costs little.
 *
 * uc_emu_stop is passed in as a function pointer, so this library links against nothing.
 */
#include <stdint.h>

typedef int (*ci_emu_stop_fn)(void *uc);

struct ci_slicer {
  uint64_t budget;   /* bytes of guest code per slice */
  uint64_t used;     /* bytes executed in this slice */
  uint64_t blocks;   /* blocks executed, ever */
  ci_emu_stop_fn stop;
  uint32_t stopped;  /* 1 once this slice asked Unicorn to stop */
  uint32_t reserved;
};

void ci_slicer_block_hook(void *uc, uint64_t address, uint32_t size, void *user) {
  struct ci_slicer *s = (struct ci_slicer *)user;
  (void)address;
  s->blocks++;
  s->used += size;
  if (s->used >= s->budget && !s->stopped && s->stop) {
    s->stopped = 1;
    s->stop(uc);
  }
}
