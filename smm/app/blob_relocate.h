/*
 * Applying a workload blob's R_X86_64_RELATIVE relocations after it is copied: shared by the
 * UEFI target app (smm/app/app.c) and the Linux guest agent (guest/linux/agent.c).  Include
 * after workload_blob.h (mkblob.py's output: CI_WORKLOAD_RELOCATIONS, sites inside the image,
 * no other kind); the loader writes base + addend at base + site for sites in [from, to).
 */
#ifndef CI_BLOB_RELOCATE_H
#define CI_BLOB_RELOCATE_H

#include <stdint.h>

static const struct {
  uint64_t site, addend;
} ci_relocations[] = {CI_WORKLOAD_RELOCATIONS};

static void ci_blob_relocate(uint8_t *blob, uint64_t from, uint64_t to) {
  const uint64_t count = CI_WORKLOAD_RELOCATION_COUNT; /* may be 0: no constant compare */
  for (uint64_t i = 0; i < count; i++) {
    uint64_t site = ci_relocations[i].site;
    if (site >= from && site < to) {
      uint64_t value = (uint64_t)(uintptr_t)blob + ci_relocations[i].addend;
      __builtin_memcpy(blob + site, &value, sizeof value);
    }
  }
}

#endif /* CI_BLOB_RELOCATE_H */
