/* Fake physical memory for native hosts: windows of guest addresses backed by
 * heap buffers.  ci_host_map() (ci_host.h) resolves through them, so tests can
 * place regions at any address (4 GiB apart, near 2^64, ...). */
#ifndef FAKE_MEM_H
#define FAKE_MEM_H

#include <stddef.h>
#include <stdint.h>

#define FAKE_MAX_WINDOWS 8

/* Add a zero-filled window; returns its host buffer. */
uint8_t *fake_mem_add(uint64_t base, uint64_t size);
void fake_mem_reset(void);
/* Host pointer of guest address (window must hold [addr, addr+len)). */
uint8_t *fake_ptr(uint64_t addr, uint64_t len);

/* A simulated DMA write: on the nth ci_host_map() (from 1) whose range holds
 * addr, the byte at addr is XORed with mask before the pointer is returned,
 * i.e. between the engine's earlier look at that memory and this one. */
void fake_dma_arm(uint64_t addr, unsigned nth, uint8_t mask);
void fake_dma_disarm(void);
/* 1 if the armed write happened. */
int fake_dma_fired(void);

/* Whole-memory snapshots: take one, then check nothing changed. */
typedef struct fake_snapshot {
  uint8_t *bytes[FAKE_MAX_WINDOWS];
  uint64_t size[FAKE_MAX_WINDOWS];
  unsigned count;
} fake_snapshot;
void fake_snapshot_take(fake_snapshot *s);
/* Number of bytes that differ from the snapshot (all windows). */
uint64_t fake_snapshot_diff(const fake_snapshot *s);
/* Bytes that differ outside the guest range [addr, addr+len). */
uint64_t fake_snapshot_diff_outside(const fake_snapshot *s, uint64_t addr, uint64_t len);
void fake_snapshot_free(fake_snapshot *s);

#endif
