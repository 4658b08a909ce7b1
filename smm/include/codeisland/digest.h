/*
 * ci_digest64: the change detector used for plan digests and diff chunks.
 *
 * It is a position-weighted sum (Fletcher style, four 64-bit lanes over
 * 32-byte blocks) finished by a murmur3 mixer.  The loop is two adds per
 * word, so it runs near memory speed and vectorises with plain SSE2; that is
 * why it was chosen over a cryptographic hash: it decides "is this chunk
 * already what the plan wants", and the security of the handler rests on the
 * validator, not on this digest.  It detects any single change and any
 * change of one word by a delta that moved elsewhere (the displacement edits a
 * re-relocation makes), which plain sums do not.
 *
 * Definition (the Python mirror in host/codeisland/plan/digest.py must match):
 *   pad the input with zero bytes to a multiple of 32; m = blocks;
 *   for lane k in 0..3: a_k = CI_DIGEST_LANE[k]; b_k = 0;
 *     for block i: a_k += le64(block i, word k); b_k += a_k;
 *   h = len * CI_DIGEST_P1 (mod 2^64);
 *   for k in 0..3: h = rotl(h ^ fmix(a_k), 27) * CI_DIGEST_P1 + CI_DIGEST_P2;
 *                  h = rotl(h ^ fmix(b_k), 31) * CI_DIGEST_P2 + CI_DIGEST_P1;
 *   return fmix(h ^ seed);   (seed is 0 for every digest in plan v1)
 */
#ifndef CODEISLAND_DIGEST_H
#define CODEISLAND_DIGEST_H

#include <stddef.h>
#include <stdint.h>

#define CI_DIGEST_P1 0x9E3779B185EBCA87ULL
#define CI_DIGEST_P2 0xC2B2AE3D27D4EB4FULL

static const uint64_t CI_DIGEST_LANE[4] = {
    0x243F6A8885A308D3ULL, 0x13198A2E03707344ULL,
    0xA4093822299F31D0ULL, 0x082EFA98EC4E6C89ULL};

static inline uint64_t ci_digest_fmix(uint64_t x) {
  x ^= x >> 33;
  x *= 0xFF51AFD7ED558CCDULL;
  x ^= x >> 33;
  x *= 0xC4CEB9FE1A85EC53ULL;
  x ^= x >> 33;
  return x;
}

static inline uint64_t ci_digest_rotl(uint64_t x, unsigned r) {
  return (x << r) | (x >> (64u - r));
}

/* le64 at any alignment.  On a little-endian GNU C compiler (clang, gcc: the
 * PE build, the native build, the test probes) it is one unaligned 8-byte
 * load through a may_alias type, which the compiler keeps as one load even
 * when the digest is inlined into a large function (the byte-wise form was
 * not merged there by clang 14); elsewhere the portable byte-wise form.
 * Same values either way. */
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
typedef uint64_t __attribute__((may_alias, aligned(1))) ci_digest_u64u;
static inline uint64_t ci_digest_le64(const uint8_t *p) { return *(const ci_digest_u64u *)p; }
#if defined(__SSE2__) && !defined(CI_DIGEST_NO_SSE2)
/* SSE2 (every x86-64; the SMI entry saves its state): compiler intrinsics,
 * no libc.  Little-endian lanes, so a 16-byte load is two le64 words. */
#define CI_DIGEST_SSE2 1
#include <emmintrin.h>
#endif
#else
static inline uint64_t ci_digest_le64(const uint8_t *p) {
  return (uint64_t)p[0] | (uint64_t)p[1] << 8 | (uint64_t)p[2] << 16 |
         (uint64_t)p[3] << 24 | (uint64_t)p[4] << 32 | (uint64_t)p[5] << 40 |
         (uint64_t)p[6] << 48 | (uint64_t)p[7] << 56;
}
#endif

static inline uint64_t ci_digest64(const void *data, size_t len, uint64_t seed) {
  const uint8_t *p = (const uint8_t *)data;
  uint64_t a[4], b[4] = {0, 0, 0, 0};
  size_t full = len / 32u, i;
  unsigned k;
  for (k = 0; k < 4u; k++)
    a[k] = CI_DIGEST_LANE[k];
#if defined(CI_DIGEST_SSE2)
  /* the same lane sums, two lanes per SSE2 register (64-bit adds wrap alike) */
  {
    __m128i a01 = _mm_loadu_si128((const __m128i *)(const void *)a),
            a23 = _mm_loadu_si128((const __m128i *)(const void *)(a + 2));
    __m128i b01 = _mm_setzero_si128(), b23 = _mm_setzero_si128();
    for (i = 0; i < full; i++, p += 32) {
      a01 = _mm_add_epi64(a01, _mm_loadu_si128((const __m128i *)(const void *)p));
      a23 = _mm_add_epi64(a23, _mm_loadu_si128((const __m128i *)(const void *)(p + 16)));
      b01 = _mm_add_epi64(b01, a01);
      b23 = _mm_add_epi64(b23, a23);
    }
    _mm_storeu_si128((__m128i *)(void *)a, a01);
    _mm_storeu_si128((__m128i *)(void *)(a + 2), a23);
    _mm_storeu_si128((__m128i *)(void *)b, b01);
    _mm_storeu_si128((__m128i *)(void *)(b + 2), b23);
  }
#else
  for (i = 0; i < full; i++, p += 32) {
    for (k = 0; k < 4u; k++) {
      a[k] += ci_digest_le64(p + 8u * k);
      b[k] += a[k];
    }
  }
#endif
  if (len % 32u) {
    uint8_t tail[32];
    size_t rest = len % 32u, j;
    for (j = 0; j < 32u; j++)
      tail[j] = j < rest ? p[j] : 0;
    for (k = 0; k < 4u; k++) {
      a[k] += ci_digest_le64(tail + 8u * k);
      b[k] += a[k];
    }
  }
  uint64_t h = (uint64_t)len * CI_DIGEST_P1;
  for (k = 0; k < 4u; k++) {
    h = ci_digest_rotl(h ^ ci_digest_fmix(a[k]), 27) * CI_DIGEST_P1 + CI_DIGEST_P2;
    h = ci_digest_rotl(h ^ ci_digest_fmix(b[k]), 31) * CI_DIGEST_P2 + CI_DIGEST_P1;
  }
  return ci_digest_fmix(h ^ seed);
}

#endif /* CODEISLAND_DIGEST_H */
