/*
 * zlib (Debian source package `zlib`, taken at test time, never vendored) as a long-running
 * guest workload for the benchmark's recorded profiles (host/codeisland/loop/recorded.py): each
 * thread serves a stream of compression jobs.  A job is drawn at random (seeded per thread):
 * the kind of input, its size, the level, the strategy and the window size; the job deflates
 * the input, inflates it back, checks the round trip and folds CRC-32 and Adler-32 of the
 * output into the thread's checksum.  There are no phases on purpose: which of zlib's functions
 * run in a window follows from the drawn jobs and from zlib's own code, nothing else.
 *
 * The port itself is the one of zlib_round.c (PORTING.md): Z_SOLO, zalloc/zfree from a bump
 * arena of the thread's own, the guest libc.
 */
#include <stdio.h>
#include <string.h>

#include "ci_runtime.h"
#include "../job_inputs.h"
#include "zlib.h"

#ifndef JOBS
#define JOBS 2000 /* per thread: far more than a recording's windows need */
#endif
#define MAX_INPUT (12 * 1024)
#define ARENA_BYTES (96 * 1024)

typedef struct {
  unsigned char bytes[ARENA_BYTES];
  size_t used;
} arena;

static arena arenas[CI_MAX_THREADS];
static unsigned char input[CI_MAX_THREADS][MAX_INPUT];
static unsigned char packed[CI_MAX_THREADS][MAX_INPUT + MAX_INPUT / 8 + 256];
static unsigned char unpacked[CI_MAX_THREADS][MAX_INPUT];

static voidpf arena_alloc(voidpf opaque, uInt items, uInt size) {
  arena *a = opaque;
  size_t n = ((size_t)items * size + 15) & ~(size_t)15;
  if (a->used + n > sizeof a->bytes)
    return Z_NULL;
  void *p = a->bytes + a->used;
  a->used += n;
  return p;
}

static void arena_free(voidpf opaque, voidpf address) {
  (void)opaque;
  (void)address;
}

static void new_stream(z_stream *s, unsigned thread) {
  memset(s, 0, sizeof *s);
  arenas[thread].used = 0;
  s->zalloc = arena_alloc;
  s->zfree = arena_free;
  s->opaque = &arenas[thread];
}

typedef struct {
  int level, strategy, window_bits, mem_level;
  unsigned kind;
  size_t size;
} job;

CI_FUNC static job draw_job(u64 *seed) {
  static const int strategies[] = {Z_DEFAULT_STRATEGY, Z_DEFAULT_STRATEGY, Z_FILTERED,
                                   Z_HUFFMAN_ONLY, Z_RLE};
  job j;
  j.level = (int)(ci_rand(seed) % 10);
  j.strategy = strategies[ci_rand(seed) % (sizeof strategies / sizeof strategies[0])];
  j.window_bits = 9 + (int)(ci_rand(seed) % 4); /* 9..12: the state fits the arena */
  j.mem_level = 1 + (int)(ci_rand(seed) % 3);
  j.kind = (unsigned)(ci_rand(seed) % JOB_INPUT_KINDS);
  j.size = 512 + ci_rand(seed) % (MAX_INPUT - 512);
  return j;
}

CI_FUNC static int squeeze(unsigned thread, const job *j, size_t in, size_t *out) {
  z_stream s;
  new_stream(&s, thread);
  int st = deflateInit2(&s, j->level, Z_DEFLATED, j->window_bits, j->mem_level, j->strategy);
  if (st != Z_OK)
    return st;
  s.next_in = input[thread];
  s.avail_in = (uInt)in;
  s.next_out = packed[thread];
  s.avail_out = sizeof packed[thread];
  st = deflate(&s, Z_FINISH);
  *out = s.total_out;
  deflateEnd(&s);
  return st == Z_STREAM_END ? Z_OK : st;
}

CI_FUNC static int expand(unsigned thread, const job *j, size_t in, size_t *out) {
  z_stream s;
  new_stream(&s, thread);
  int st = inflateInit2(&s, j->window_bits);
  if (st != Z_OK)
    return st;
  s.next_in = packed[thread];
  s.avail_in = (uInt)in;
  s.next_out = unpacked[thread];
  s.avail_out = sizeof unpacked[thread];
  st = inflate(&s, Z_FINISH);
  *out = s.total_out;
  inflateEnd(&s);
  return st == Z_STREAM_END ? Z_OK : st;
}

void workload_thread(unsigned thread, unsigned nthreads) {
  u64 seed = 0x21B00000ULL + thread * 104729ULL + nthreads;
  unsigned long check = adler32(0L, Z_NULL, 0);
  unsigned long in_total = 0, out_total = 0;
  for (unsigned k = 0; k < JOBS; k++) {
    job j = draw_job(&seed);
    size_t n = make_input(input[thread], j.size, j.kind, &seed);
    size_t packed_size = 0, back = 0;
    int st = squeeze(thread, &j, n, &packed_size);
    if (st == Z_OK)
      st = expand(thread, &j, packed_size, &back);
    if (st != Z_OK || back != n || memcmp(input[thread], unpacked[thread], n) != 0) {
      printf("job %u (level %d, strategy %d, kind %u): ROUND TRIP FAILED, %s\n", k, j.level,
             j.strategy, j.kind, zError(st));
      ci_fail(2);
    }
    check = adler32(check, packed[thread], (uInt)packed_size);
    check ^= crc32(0L, unpacked[thread], (uInt)back);
    in_total += n;
    out_total += packed_size;
    if ((k + 1) % 100 == 0 || k + 1 == JOBS)
      printf("zlib %s thread %u/%u: %u jobs, %lu -> %lu bytes, check %08lx\n", zlibVersion(),
             thread, nthreads, k + 1, in_total, out_total, check);
  }
}
