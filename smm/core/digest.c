/*
 * ci_digest64 (codeisland/digest.h) instantiated in its own translation unit.
 * Inlined into the validator's large function, clang 14 no longer merges the
 * header's byte-wise little-endian loads into 8-byte loads (about 6x more
 * instructions per block); compiled alone it does.  Same function, same
 * results: this only decides where the compiler sees it.
 */
#include "codeisland/digest.h"
#include "internal.h"

uint64_t ci_digest(const void *data, size_t len) { return ci_digest64(data, len, 0); }
