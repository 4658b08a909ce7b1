/* The compiler may emit calls to memcpy/memset (struct copies, zeroing) even
 * in freestanding code; a PE without imports must carry its own.  Built with
 * -fno-builtin so these are not turned back into calls to themselves. */
#include <stddef.h>

#include "mem.h"

void *memcpy(void *dst, const void *src, size_t len);
void *memset(void *dst, int value, size_t len);

void *memcpy(void *dst, const void *src, size_t len) {
  ci_copy(dst, src, len);
  return dst;
}

void *memset(void *dst, int value, size_t len) {
  ci_fill(dst, (uint8_t)value, len);
  return dst;
}
