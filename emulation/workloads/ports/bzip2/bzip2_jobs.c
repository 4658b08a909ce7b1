/*
 * bzip2 1.0.8 (Debian source package `bzip2`, taken at test time, never vendored) as a
 * long-running guest workload for the benchmark's recorded profiles: each thread serves a
 * stream of jobs drawn at random (seeded per thread): the kind of input, its size, the work
 * factor; a job compresses the input with BZ2_bzCompress (block sorting, MTF, Huffman coding),
 * decompresses it back (in normal or in "small" mode), checks the round trip and folds a
 * checksum of the compressed bytes into the thread's.  No phases on purpose.
 *
 * Port: BZ_NO_STDIO (no FILE API), bz_internal_error below, allocations from a bump arena
 * handed to the library through bzalloc/bzfree.  A compressor needs about 1.1 MB whatever the
 * input (100k-byte block: two suffix arrays and the radix table), so there are SLOTS arenas,
 * each under a lock: with more threads than slots, threads take turns.
 */
#include <stdio.h>
#include <string.h>

#include "bzlib.h"
#include "ci_runtime.h"
#include "../job_inputs.h"

#ifndef JOBS
#define JOBS 2000 /* per thread: far more than a recording's windows need */
#endif
#define SLOTS 2
#define MAX_INPUT (48 * 1024)
#define ARENA_BYTES (1216 * 1024)

typedef struct {
  ci_lock_t lock;
  size_t used;
  unsigned char bytes[ARENA_BYTES];
  unsigned char input[MAX_INPUT];
  unsigned char packed[MAX_INPUT + MAX_INPUT / 64 + 1024];
  unsigned char unpacked[MAX_INPUT];
} slot;

static slot slots[SLOTS];

void bz_internal_error(int errcode) {
  printf("bzip2 internal error %d\n", errcode);
  ci_fail(3);
}

static void *slot_alloc(void *opaque, int items, int size) {
  slot *s = opaque;
  size_t n = ((size_t)items * (size_t)size + 15) & ~(size_t)15;
  if (s->used + n > sizeof s->bytes)
    return NULL;
  void *p = s->bytes + s->used;
  s->used += n;
  return p;
}

static void slot_free(void *opaque, void *address) {
  (void)opaque;
  (void)address;
}

static void new_stream(bz_stream *z, slot *s) {
  memset(z, 0, sizeof *z);
  s->used = 0;
  z->bzalloc = slot_alloc;
  z->bzfree = slot_free;
  z->opaque = s;
}

CI_FUNC static int compress(slot *s, size_t in, int work_factor, size_t *out) {
  bz_stream z;
  new_stream(&z, s);
  int st = BZ2_bzCompressInit(&z, 1, 0, work_factor);
  if (st != BZ_OK)
    return st;
  z.next_in = (char *)s->input;
  z.avail_in = (unsigned)in;
  z.next_out = (char *)s->packed;
  z.avail_out = sizeof s->packed;
  do
    st = BZ2_bzCompress(&z, BZ_FINISH);
  while (st == BZ_FINISH_OK);
  *out = z.total_out_lo32;
  BZ2_bzCompressEnd(&z);
  return st == BZ_STREAM_END ? BZ_OK : st;
}

CI_FUNC static int decompress(slot *s, size_t in, int small, size_t *out) {
  bz_stream z;
  new_stream(&z, s);
  int st = BZ2_bzDecompressInit(&z, 0, small);
  if (st != BZ_OK)
    return st;
  z.next_in = (char *)s->packed;
  z.avail_in = (unsigned)in;
  z.next_out = (char *)s->unpacked;
  z.avail_out = sizeof s->unpacked;
  st = BZ2_bzDecompress(&z);
  *out = z.total_out_lo32;
  BZ2_bzDecompressEnd(&z);
  return st == BZ_STREAM_END ? BZ_OK : st;
}

CI_FUNC static u64 fold(u64 h, const unsigned char *p, size_t n) {
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 0x100000001B3ULL;
  return h;
}

void workload_thread(unsigned thread, unsigned nthreads) {
  u64 seed = 0xB21B0000ULL + thread * 104729ULL + nthreads;
  u64 check = 0xCBF29CE484222325ULL;
  unsigned long in_total = 0, out_total = 0;
  slot *s = &slots[thread % SLOTS];
  for (unsigned k = 0; k < JOBS; k++) {
    unsigned kind = (unsigned)(ci_rand(&seed) % JOB_INPUT_KINDS);
    size_t size = 256 + ci_rand(&seed) % (MAX_INPUT - 256);
    int work_factor = (int)(ci_rand(&seed) % 4) * 10; /* 0 = the library's default (30) */
    int small = (ci_rand(&seed) % 4) == 0;
    ci_lock(&s->lock);
    size_t n = make_input(s->input, size, kind, &seed);
    size_t packed_size = 0, back = 0;
    int st = compress(s, n, work_factor, &packed_size);
    if (st == BZ_OK)
      st = decompress(s, packed_size, small, &back);
    int same = st == BZ_OK && back == n && memcmp(s->input, s->unpacked, n) == 0;
    check = fold(check, s->packed, packed_size);
    ci_unlock(&s->lock);
    if (!same) {
      printf("job %u (kind %u, %zu bytes): ROUND TRIP FAILED, status %d\n", k, kind, n, st);
      ci_fail(2);
    }
    in_total += n;
    out_total += packed_size;
    if ((k + 1) % 50 == 0 || k + 1 == JOBS)
      printf("bzip2 %s thread %u/%u: %u jobs, %lu -> %lu bytes, check %016llx\n",
             BZ2_bzlibVersion(), thread, nthreads, k + 1, in_total, out_total,
             (unsigned long long)check);
  }
}
