/* Byte helpers of the freestanding core; see mem.h. */
#include "mem.h"

/* Unaligned 8-byte loads/stores through a may_alias type: the compiler emits
 * plain moves, and strict aliasing cannot reorder them around byte access. */
typedef uint64_t __attribute__((may_alias, aligned(1))) ci_u64u;

void ci_copy(void *dst, const void *src, size_t len) {
  uint8_t *d = (uint8_t *)dst;
  const uint8_t *s = (const uint8_t *)src;
#if defined(__x86_64__)
  /* rep movsb is the fast path on every CPU with ERMSB/FSRM (and still
   * correct elsewhere); it is also what SMM code of EDK2 uses. */
  __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(len) : : "memory");
#else
  for (; len >= 8u; len -= 8u, d += 8, s += 8)
    *(ci_u64u *)d = *(const ci_u64u *)s;
  while (len--)
    *d++ = *s++;
#endif
}

void ci_fill(void *dst, uint8_t value, size_t len) {
  uint8_t *d = (uint8_t *)dst;
#if defined(__x86_64__)
  __asm__ volatile("rep stosb" : "+D"(d), "+c"(len) : "a"(value) : "memory");
#else
  while (len--)
    *d++ = value;
#endif
}

int ci_equal(const void *a, const void *b, size_t len) {
  const uint8_t *x = (const uint8_t *)a, *y = (const uint8_t *)b;
  for (; len >= 8u; len -= 8u, x += 8, y += 8)
    if (*(const ci_u64u *)x != *(const ci_u64u *)y)
      return 0;
  while (len--)
    if (*x++ != *y++)
      return 0;
  return 1;
}

int ci_uniform(const uint8_t *p, size_t len) {
  uint64_t pattern = 0x0101010101010101ULL * p[0], diff = 0;
  size_t i = 0;
  /* No early exit inside a block: the loop vectorises, and a destination
   * that is not uniform is rare (arenas start zeroed or filled). */
  for (; i + 64u <= len; i += 64u) {
    for (size_t k = 0; k < 64u; k += 8u)
      diff |= *(const ci_u64u *)(p + i + k) ^ pattern;
    if (diff)
      return 0;
  }
  for (; i < len; i++)
    diff |= (uint64_t)(p[i] ^ p[0]);
  return diff == 0;
}

size_t ci_copy_over_fill(uint8_t *dst, const uint8_t *src, size_t len, uint8_t fill) {
  uint64_t pattern = 0x0101010101010101ULL * fill;
  size_t i = 0;
  for (; i + 32u <= len; i += 32u) {
    uint64_t d0 = *(const ci_u64u *)(dst + i), d1 = *(const ci_u64u *)(dst + i + 8);
    uint64_t d2 = *(const ci_u64u *)(dst + i + 16), d3 = *(const ci_u64u *)(dst + i + 24);
    if (((d0 ^ pattern) | (d1 ^ pattern) | (d2 ^ pattern) | (d3 ^ pattern)) != 0)
      return i;
    *(ci_u64u *)(dst + i) = *(const ci_u64u *)(src + i);
    *(ci_u64u *)(dst + i + 8) = *(const ci_u64u *)(src + i + 8);
    *(ci_u64u *)(dst + i + 16) = *(const ci_u64u *)(src + i + 16);
    *(ci_u64u *)(dst + i + 24) = *(const ci_u64u *)(src + i + 24);
  }
  for (; i < len; i++) {
    if (dst[i] != fill)
      return i;
    dst[i] = src[i];
  }
  return i;
}
