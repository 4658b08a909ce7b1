/* Byte helpers of the freestanding core; see mem.h. */
#include "mem.h"

#include "codeisland/digest.h"

#if defined(__SSE2__)
#include <emmintrin.h> /* compiler intrinsics, not libc */
#endif

void ci_copy(void *dst, const void *src, size_t len) {
  uint8_t *d = (uint8_t *)dst;
  const uint8_t *s = (const uint8_t *)src;
#if defined(__x86_64__)
  /* rep movsb is the fast path for large copies on every CPU with ERMSB/FSRM
   * (its start-up costs tens of cycles, so small ones use moves) */
  if (len >= 256u) {
    __asm__ volatile("rep movsb" : "+D"(d), "+S"(s), "+c"(len) : : "memory");
    return;
  }
#endif
  for (; len >= 8u; len -= 8u, d += 8, s += 8)
    *(ci_u64u *)d = *(const ci_u64u *)s;
  while (len--)
    *d++ = *s++;
}

void ci_fill(void *dst, uint8_t value, size_t len) {
  uint8_t *d = (uint8_t *)dst;
#if defined(__x86_64__)
  if (len >= 256u) {
    __asm__ volatile("rep stosb" : "+D"(d), "+c"(len) : "a"(value) : "memory");
    return;
  }
#endif
  while (len--)
    *d++ = value;
}

int ci_equal(const void *a, const void *b, size_t len) {
  const uint8_t *x = (const uint8_t *)a, *y = (const uint8_t *)b;
  if (len >= 8u) {
    /* 8 bytes a step; a ragged end is compared as the last 8 bytes (which
     * overlap bytes already found equal) instead of byte by byte */
    const uint8_t *xe = x + len - 8u, *ye = y + len - 8u;
    for (; len >= 8u; len -= 8u, x += 8, y += 8)
      if (*(const ci_u64u *)x != *(const ci_u64u *)y)
        return 0;
    return len == 0 || *(const ci_u64u *)xe == *(const ci_u64u *)ye;
  }
  while (len--)
    if (*x++ != *y++)
      return 0;
  return 1;
}

int ci_uniform(const uint8_t *p, size_t len) {
  uint64_t pattern = 0x0101010101010101ULL * p[0];
  size_t i = 0;
  /* 256-byte blocks whose inner loop has no exit, so it vectorises (SSE2);
   * a destination that is not uniform is rare (arenas start filled). */
  for (; i + 256u <= len; i += 256u) {
    uint64_t diff = 0;
    for (size_t k = 0; k < 256u; k += 8u)
      diff |= *(const ci_u64u *)(p + i + k) ^ pattern;
    if (diff)
      return 0;
  }
  for (; i < len; i++)
    if (p[i] != p[0])
      return 0;
  return 1;
}

size_t ci_copy_over_fill(uint8_t *dst, const uint8_t *src, size_t len, uint8_t fill) {
  size_t i = 0;
#if defined(__SSE2__)
  /* 64 bytes a step with SSE2 (the SMI entry saves FP/SSE state; x86-64
   * always has SSE2): four loads of the old bytes, one test, four copies. */
  const __m128i pat = _mm_set1_epi8((char)fill);
  for (; i + 64u <= len; i += 64u) {
    const __m128i *o = (const __m128i *)(dst + i), *s = (const __m128i *)(src + i);
    __m128i e = _mm_and_si128(
        _mm_and_si128(_mm_cmpeq_epi8(_mm_loadu_si128(o), pat),
                      _mm_cmpeq_epi8(_mm_loadu_si128(o + 1), pat)),
        _mm_and_si128(_mm_cmpeq_epi8(_mm_loadu_si128(o + 2), pat),
                      _mm_cmpeq_epi8(_mm_loadu_si128(o + 3), pat)));
    if (_mm_movemask_epi8(e) != 0xFFFF)
      return i;
    __m128i s0 = _mm_loadu_si128(s), s1 = _mm_loadu_si128(s + 1);
    __m128i s2 = _mm_loadu_si128(s + 2), s3 = _mm_loadu_si128(s + 3);
    __m128i *d = (__m128i *)(dst + i);
    _mm_storeu_si128(d, s0);
    _mm_storeu_si128(d + 1, s1);
    _mm_storeu_si128(d + 2, s2);
    _mm_storeu_si128(d + 3, s3);
  }
#else
  const uint64_t pattern = 0x0101010101010101ULL * fill;
  for (; i + 8u <= len; i += 8u) {
    if (*(const ci_u64u *)(dst + i) != pattern)
      return i;
    *(ci_u64u *)(dst + i) = *(const ci_u64u *)(src + i);
  }
#endif
  for (; i < len; i++) {
    if (dst[i] != fill)
      return i;
    dst[i] = src[i];
  }
  return len;
}

/*
 * ci_digest64 (codeisland/digest.h) instantiated here, out of the validator's
 * translation unit: inlined into the validator's large function, clang 14 no
 * longer merges the header's byte-wise little-endian loads into 8-byte loads
 * (about 6x more instructions per block); compiled on its own it does.  Same
 * function, same results.  (It sits in this module, a byte helper like the
 * others, rather than its own file, so the source list stays stable.)
 */
uint64_t ci_digest(const void *data, size_t len) { return ci_digest64(data, len, 0); }
