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
/* ci_digest64(data, len, 0), compiled out of line (see mem.c). */
uint64_t ci_digest(const void *data, size_t len);
/* 1 if every byte of p equals p[0] (len > 0). */
int ci_uniform(const uint8_t *p, size_t len);
/* Copy src over dst while dst's old bytes all equal `fill`, in one pass
 * (each destination block is read, compared, then overwritten).  Returns
 * the number of leading bytes copied: len if every old byte was `fill`;
 * otherwise n < len such that the old dst[0, n) all held `fill` (and now
 * hold src[0, n)) and dst[n, len) is untouched.  dst and src do not overlap. */
size_t ci_copy_over_fill(uint8_t *dst, const uint8_t *src, size_t len, uint8_t fill);


/* Little-endian loads and stores at any alignment (x86-64 is the only
 * target: plain moves through a may_alias type). */
typedef uint32_t __attribute__((may_alias, aligned(1))) ci_u32u;
typedef uint64_t __attribute__((may_alias, aligned(1))) ci_u64u;
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "little-endian host");

static inline uint32_t ci_le32(const uint8_t *p) { return *(const ci_u32u *)p; }
static inline uint64_t ci_le64(const uint8_t *p) { return *(const ci_u64u *)p; }
static inline void ci_put32(uint8_t *p, uint32_t v) { *(ci_u32u *)p = v; }
static inline void ci_put64(uint8_t *p, uint64_t v) { *(ci_u64u *)p = v; }

#endif /* CI_MEM_H */
