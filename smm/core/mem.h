/*
 * Byte helpers for the freestanding core (no libc).  Word-at-a-time where it
 * matters for the staging path; the PE build compiles them with -fno-builtin
 * so the compiler cannot turn them back into calls to memcpy.
 */
#ifndef CI_MEM_H
#define CI_MEM_H

#include <stddef.h>
#include <stdint.h>

void ci_copy(void *dst, const void *src, size_t len);
void ci_fill(void *dst, uint8_t value, size_t len);
/* 1 if the two ranges hold the same bytes (exits at the first difference). */
int ci_equal(const void *a, const void *b, size_t len);
/* 1 if every byte of p equals p[0] (len > 0). */
int ci_uniform(const uint8_t *p, size_t len);
/* Copy src to dst while checking that dst held only the byte `fill`: returns
 * the length of the prefix of dst that did (== len if all), having copied
 * exactly that prefix.  One pass: the destination's lines are read by the
 * stores anyway, so this costs about what a copy costs. */
size_t ci_copy_over_fill(uint8_t *dst, const uint8_t *src, size_t len, uint8_t fill);

/* Copy of at most 8 bytes, inlined (fix-up fields). */
static inline void ci_copy_small(uint8_t *dst, const uint8_t *src, uint32_t len) {
  for (uint32_t i = 0; i < len; i++)
    dst[i] = src[i];
}

static inline uint32_t ci_le32(const uint8_t *p) {
  return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static inline uint64_t ci_le64(const uint8_t *p) {
  return (uint64_t)ci_le32(p) | (uint64_t)ci_le32(p + 4) << 32;
}
static inline void ci_put32(uint8_t *p, uint32_t v) {
  p[0] = (uint8_t)v;
  p[1] = (uint8_t)(v >> 8);
  p[2] = (uint8_t)(v >> 16);
  p[3] = (uint8_t)(v >> 24);
}
static inline void ci_put64(uint8_t *p, uint64_t v) {
  ci_put32(p, (uint32_t)v);
  ci_put32(p + 4, (uint32_t)(v >> 32));
}

#endif /* CI_MEM_H */
