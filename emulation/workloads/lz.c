/* An LZ77-style compressor with a hash-chain matcher, and its decompressor.
 * Phases: text generation (gen_text), compression (lz_compress, hot), decompression and
 * round-trip verification (lz_decompress), checksums. */
#include "workload.h"

#define TEXT_SIZE 12288
#define OUT_SIZE (TEXT_SIZE + TEXT_SIZE / 8 + 16)
#define HASH_BITS 12
#define MIN_MATCH 3
#define MAX_MATCH 66
#define WINDOW 4095

struct lz_state {
  u8 text[TEXT_SIZE];
  u8 packed[OUT_SIZE];
  u8 unpacked[TEXT_SIZE];
  int head[1 << HASH_BITS];
  int prev[TEXT_SIZE];
};

static struct lz_state states[CI_MAX_THREADS];

static const char words[] = "smm island relocate hot cold cache page thread arena stage commit "
                            "rollback sample plan fixup trampoline region budget handler ";

/* Pseudo-English: words picked by a skewed random walk, so there is plenty to match. */
static CI_FUNC void gen_text(u8 *text, u64 seed) {
  u32 starts[32];
  u32 nwords = 0;
  u32 i = 0;
  while (words[i] && nwords < 32) {
    starts[nwords++] = i;
    while (words[i] && words[i] != ' ')
      i++;
    i++;
  }
  u64 rng = seed;
  u32 pos = 0;
  while (pos < TEXT_SIZE) {
    u64 r = ci_rand(&rng);
    u32 w = (u32)((r & 7) < 5 ? (r >> 8) % 6 : (r >> 8) % nwords);
    for (u32 j = starts[w]; pos < TEXT_SIZE && words[j]; j++) {
      text[pos++] = (u8)words[j];
      if (words[j] == ' ')
        break;
    }
    if ((r >> 40) % 23 == 0 && pos < TEXT_SIZE)
      text[pos++] = (u8)('0' + (r >> 50) % 10);
  }
}

static u32 hash3(const u8 *p) { return ((p[0] << 16 | p[1] << 8 | p[2]) * 2654435761u) >> (32 - HASH_BITS); }

static CI_FUNC u32 match_len(const u8 *a, const u8 *b, u32 limit) {
  u32 n = 0;
  while (n < limit && a[n] == b[n])
    n++;
  return n;
}

/* Output: a flag byte per 8 items; literal = 1 byte, match = 2 bytes (12-bit distance, 4+ len). */
static CI_FUNC u32 lz_compress(struct lz_state *s) {
  for (u32 i = 0; i < (1u << HASH_BITS); i++)
    s->head[i] = -1;
  u32 in = 0, out = 0, flag_pos = 0, nitems = 8;
  while (in < TEXT_SIZE) {
    if (nitems == 8) {
      flag_pos = out++;
      s->packed[flag_pos] = 0;
      nitems = 0;
    }
    u32 best = 0, best_dist = 0;
    if (in + MIN_MATCH <= TEXT_SIZE) {
      u32 h = hash3(&s->text[in]);
      int cand = s->head[h];
      u32 limit = TEXT_SIZE - in < MAX_MATCH ? TEXT_SIZE - in : MAX_MATCH;
      for (int chain = 0; cand >= 0 && chain < 16 && in - (u32)cand <= WINDOW; chain++) {
        u32 len = match_len(&s->text[cand], &s->text[in], limit);
        if (len > best) {
          best = len;
          best_dist = in - (u32)cand;
        }
        cand = s->prev[cand];
      }
      s->prev[in] = s->head[h];
      s->head[h] = (int)in;
    }
    if (best >= MIN_MATCH) {
      u32 len_code = best - MIN_MATCH; /* 0..63 */
      s->packed[flag_pos] |= (u8)(1u << nitems);
      s->packed[out++] = (u8)(best_dist & 0xFF);
      s->packed[out++] = (u8)((best_dist >> 8) | (len_code << 4 & 0xF0));
      s->packed[out++] = (u8)(len_code >> 4);
      for (u32 k = 1; k < best; k++) {
        u32 p = in + k;
        if (p + MIN_MATCH <= TEXT_SIZE) {
          u32 h = hash3(&s->text[p]);
          s->prev[p] = s->head[h];
          s->head[h] = (int)p;
        }
      }
      in += best;
    } else {
      s->packed[out++] = s->text[in++];
    }
    nitems++;
  }
  return out;
}

static CI_FUNC u32 lz_decompress(struct lz_state *s, u32 packed_len) {
  u32 in = 0, out = 0;
  while (in < packed_len) {
    u8 flags = s->packed[in++];
    for (u32 i = 0; i < 8 && in < packed_len; i++) {
      if (flags & (1u << i)) {
        u32 dist = s->packed[in] | (u32)(s->packed[in + 1] & 0x0F) << 8;
        u32 len = (u32)(s->packed[in + 1] >> 4 | s->packed[in + 2] << 4) + MIN_MATCH;
        in += 3;
        if (dist == 0 || dist > out || out + len > TEXT_SIZE)
          ci_fail(30);
        for (u32 k = 0; k < len; k++, out++)
          s->unpacked[out] = s->unpacked[out - dist];
      } else {
        if (out >= TEXT_SIZE)
          ci_fail(31);
        s->unpacked[out++] = s->packed[in++];
      }
    }
  }
  return out;
}

static CI_FUNC u64 fnv1a(const u8 *p, u32 n) {
  u64 h = 0xcbf29ce484222325ULL;
  for (u32 i = 0; i < n; i++)
    h = (h ^ p[i]) * 0x100000001b3ULL;
  return h;
}

void workload_thread(unsigned thread, unsigned nthreads) {
  struct lz_state *s = &states[thread % CI_MAX_THREADS];
  u64 total = 0;
  (void)nthreads;
  for (u32 round = 0; round < 3; round++) {
    gen_text(s->text, 0x9E3779B97F4A7C15ULL * (thread + 1) + round);
    u32 packed = lz_compress(s);
    u32 unpacked = lz_decompress(s, packed);
    if (unpacked != TEXT_SIZE || fnv1a(s->unpacked, TEXT_SIZE) != fnv1a(s->text, TEXT_SIZE))
      ci_fail(32);
    ci_line("lz.packed", packed);
    total ^= fnv1a(s->packed, packed) + round;
  }
  ci_line("lz.checksum", total);
}
