/*
 * The inputs of the benchmark's job ports (zlib_jobs.c, bzip2_jobs.c): data of the kinds a
 * compression service sees, drawn from a seed.  Included by one translation unit each.
 */
#ifndef CI_PORTS_JOB_INPUTS_H
#define CI_PORTS_JOB_INPUTS_H

#include <stdio.h>
#include <string.h>

#include "ci_runtime.h"

#define JOB_INPUT_KINDS 5

static const char *const job_words[] = {"the", "of", "and", "to", "in", "a", "is", "that", "for",
                                        "it", "as", "was", "with", "be", "by", "on", "not", "he",
                                        "this", "are", "or", "his", "from", "at", "which", "but"};

/* Prose (0), log lines (1), fixed-size records with a few changing fields (2), runs of bytes
 * (3), noise (4): n bytes at most into out; returns how many were written. */
CI_FUNC static size_t make_input(unsigned char *out, size_t n, unsigned kind, u64 *seed) {
  size_t at = 0;
  if (kind == 0) {
    while (at + 12 < n) {
      const char *w = job_words[ci_rand(seed) % (sizeof job_words / sizeof job_words[0])];
      size_t len = strlen(w);
      memcpy(out + at, w, len);
      at += len;
      out[at++] = (ci_rand(seed) % 11) ? ' ' : '\n';
    }
  } else if (kind == 1) {
    while (at + 64 < n)
      at += (size_t)snprintf((char *)out + at, n - at, "%08x host%u req=%u status=%u\n",
                             (unsigned)ci_rand(seed), (unsigned)(ci_rand(seed) % 8),
                             (unsigned)(ci_rand(seed) % 5000), 200 + (unsigned)(ci_rand(seed) % 4));
  } else if (kind == 2) {
    while (at + 32 <= n) {
      memset(out + at, 0, 32);
      u64 v = ci_rand(seed);
      memcpy(out + at, &v, 2);
      out[at + 8] = (unsigned char)(at / 32);
      at += 32;
    }
  } else if (kind == 3) {
    while (at < n) {
      size_t run = 1 + ci_rand(seed) % 200;
      if (run > n - at)
        run = n - at;
      memset(out + at, (int)(ci_rand(seed) & 0xFF), run);
      at += run;
    }
  } else {
    for (; at < n; at++)
      out[at] = (unsigned char)ci_rand(seed);
  }
  return at;
}

#endif
