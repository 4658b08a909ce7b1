/* ci_host.h for the native host: the engine's "physical" addresses are the
 * process's own addresses (plans are PHYSICAL: the agent reads CR3 as 0), and
 * the validator has already confined every range to the registered regions
 * (the executable's text, the arena), outside the engine's buffers. */
#include "ci_host.h"

uint8_t *ci_host_map(uint64_t addr, uint64_t len) {
  (void)len;
  return (uint8_t *)(uintptr_t)addr;
}
