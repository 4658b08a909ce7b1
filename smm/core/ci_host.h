/*
 * The one place where the engine's hosts differ (SMM driver, emulator-loaded
 * driver, native tests/bench/fuzz).  Each host links exactly one
 * implementation: smm/driver/host_smm.c (physical address == pointer, the
 * SMM page tables map what the allow-list admits) or smm/tests/fake_mem.c
 * (addresses are looked up in fake memory windows).
 */
#ifndef CI_HOST_H
#define CI_HOST_H

#include <stdint.h>

/* Pointer to [addr, addr + len), or NULL if this host cannot reach it.  The
 * engine calls it only for ranges the validator placed inside registered
 * regions; NULL then means the host and the allow-list disagree (INTERNAL). */
uint8_t *ci_host_map(uint64_t addr, uint64_t len);

#endif /* CI_HOST_H */
