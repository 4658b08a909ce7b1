/* ci_host.h for the SMM driver: physical addresses are identity-mapped in SMM
 * (PiSmmCpuDxeSmm's page tables); the validator has already confined every
 * range to the registered regions, outside SMRAM. */
#include "ci_host.h"

uint8_t *ci_host_map(uint64_t addr, uint64_t len) {
  (void)len;
  return (uint8_t *)(uintptr_t)addr;
}
