/*
 * zlib (Debian source package `zlib`, taken at test time, never vendored) as a long-running
 * guest workload for the benchmark's recorded profiles (host/codeisland/loop/recorded.py): each
 * thread serves a stream of compression jobs.  A job is drawn at random (seeded per thread):
 * the kind of input, its size, the level, the strategy and the window size; the job deflates
 * the input, inflates it back, checks the round trip and folds CRC-32 and Adler-32 of the
 * output into the thread's checksum.  There are no phases on purpose: which of zlib's functions
 * run in a window follows from the drawn jobs and from zlib's own code, nothing else.
 *
 * The port itself is the one of zlib_round.c (PORTING.md, zlib_port.h): Z_SOLO, zalloc/zfree
 * from a bump arena of the thread's own, the guest libc.
 */
#include <stdio.h>
#include <string.h>

#include "ci_runtime.h"
#include "../job_inputs.h"
#include "zlib.h"
#include "zlib_port.h"

#ifndef JOBS
#define JOBS 2000 /* per thread: far more than a recording's windows need */
#endif
#define MAX_INPUT (12 * 1024)

static unsigned char input[CI_MAX_THREADS][MAX_INPUT];
static unsigned char packed[CI_MAX_THREADS][MAX_INPUT + MAX_INPUT / 8 + 256];
static unsigned char unpacked[CI_MAX_THREADS][MAX_INPUT];

typedef struct {
  zlib_setting z;
  unsigned kind;
  size_t size;
} job;

CI_FUNC static job draw_job(u64 *seed) {
  static const int strategies[] = {Z_DEFAULT_STRATEGY, Z_DEFAULT_STRATEGY, Z_FILTERED,
                                   Z_HUFFMAN_ONLY, Z_RLE};
  job j;
  j.z.level = (int)(ci_rand(seed) % 10);
  j.z.strategy = strategies[ci_rand(seed) % (sizeof strategies / sizeof strategies[0])];
  j.z.window_bits = 9 + (int)(ci_rand(seed) % 4); /* 9..12: the state fits the arena */
  j.z.mem_level = 1 + (int)(ci_rand(seed) % 3);
  j.kind = (unsigned)(ci_rand(seed) % JOB_INPUT_KINDS);
  j.size = 512 + ci_rand(seed) % (MAX_INPUT - 512);
  return j;
}

void workload_thread(unsigned thread, unsigned nthreads) {
  u64 seed = 0x21B00000ULL + thread * 104729ULL + nthreads;
  unsigned long check = adler32(0L, Z_NULL, 0);
  unsigned long in_total = 0, out_total = 0;
  for (unsigned k = 0; k < JOBS; k++) {
    job j = draw_job(&seed);
    size_t n = make_input(input[thread], j.size, j.kind, &seed);
    size_t packed_size = 0, back = 0;
    int st = deflate_all(thread, &j.z, input[thread], n, packed[thread], sizeof packed[thread],
                         &packed_size);
    if (st == Z_OK)
      st = inflate_all(thread, &j.z, packed[thread], packed_size, unpacked[thread],
                       sizeof unpacked[thread], &back);
    if (st != Z_OK || back != n || memcmp(input[thread], unpacked[thread], n) != 0) {
      printf("job %u (level %d, strategy %d, kind %u): ROUND TRIP FAILED, %s\n", k, j.z.level,
             j.z.strategy, j.kind, zError(st));
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
