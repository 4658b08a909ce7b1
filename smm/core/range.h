/*
 * Address ranges: the one helper every check goes through.  A range is
 * [base, base + len) with len >= 1; it "wraps" when its last byte would pass
 * 2^64 - 1.  All tests are written without computing base + len, in the
 * EDK2 style `base > max - (len - 1)`, so no intermediate overflows.
 */
#ifndef CI_RANGE_H
#define CI_RANGE_H

#include <stdint.h>

/* 1 if len >= 1 and base + len - 1 does not wrap. */
static inline int ci_range_valid(uint64_t base, uint64_t len) {
  return len != 0 && base <= UINT64_MAX - (len - 1u);
}

/* 1 if the valid range [base, base+len) lies inside the valid region
 * [rbase, rbase+rsize). */
static inline int ci_range_inside(uint64_t base, uint64_t len, uint64_t rbase, uint64_t rsize) {
  if (!ci_range_valid(base, len) || !ci_range_valid(rbase, rsize))
    return 0;
  if (base < rbase || len > rsize)
    return 0;
  return base - rbase <= rsize - len;
}

/* 1 if two valid ranges share at least one byte. */
static inline int ci_range_overlap(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen) {
  uint64_t a_last = a + (alen - 1u), b_last = b + (blen - 1u);
  return a <= b_last && b <= a_last;
}

/* 1 if value lies in the valid range [base, base+len). */
static inline int ci_range_has(uint64_t base, uint64_t len, uint64_t value) {
  return value >= base && value - base < len;
}

/* Signed 32-bit displacement from `from` to `to`, if it fits. */
static inline int ci_rel32(uint64_t to, uint64_t from, int32_t *out) {
  uint64_t d = to - from; /* two's complement difference, modulo 2^64 */
  if (d + 0x80000000ULL > 0xFFFFFFFFULL)
    return 0;
  *out = (int32_t)(uint32_t)d;
  return 1;
}

#endif /* CI_RANGE_H */
