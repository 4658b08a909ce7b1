/*
 * The zlib port's glue (PORTING.md), shared by its entries zlib_round.c and zlib_jobs.c:
 * with Z_SOLO zlib has no allocator of its own, so its zalloc/zfree come from a bump arena of
 * each thread's own (zfree is a no-op, the arena is emptied per stream; threads share nothing
 * writable), and one call deflates or inflates a whole buffer.  Included by one translation
 * unit each.
 */
#ifndef CI_PORTS_ZLIB_PORT_H
#define CI_PORTS_ZLIB_PORT_H

#include <string.h>

#include "ci_runtime.h"
#include "zlib.h"

#define ZLIB_ARENA_BYTES (96 * 1024) /* the state of window bits <= 12, memLevel <= 3 */

typedef struct {
  unsigned char bytes[ZLIB_ARENA_BYTES];
  size_t used;
} zlib_arena;

static zlib_arena zlib_arenas[CI_MAX_THREADS];

static voidpf arena_alloc(voidpf opaque, uInt items, uInt size) {
  zlib_arena *a = opaque;
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

/* A stream whose allocations come from the thread's arena, emptied first. */
static void new_stream(z_stream *s, unsigned thread) {
  memset(s, 0, sizeof *s);
  zlib_arenas[thread].used = 0;
  s->zalloc = arena_alloc;
  s->zfree = arena_free;
  s->opaque = &zlib_arenas[thread];
}

/* How a stream is deflated (deflateInit2's parameters; inflate needs window_bits). */
typedef struct {
  int level, window_bits, mem_level, strategy;
} zlib_setting;

/* Run an initialised stream over in[0..n) into out[0..cap) to its end with `step` (deflate
 * or inflate), then `end` it; *written: the bytes out holds.  Z_OK or zlib's status. */
CI_FUNC static int finish(z_stream *s, int (*step)(z_streamp, int), int (*end)(z_streamp),
                          unsigned char *in, size_t n, unsigned char *out, size_t cap,
                          size_t *written) {
  s->next_in = in;
  s->avail_in = (uInt)n;
  s->next_out = out;
  s->avail_out = (uInt)cap;
  int st = step(s, Z_FINISH);
  *written = s->total_out;
  end(s);
  return st == Z_STREAM_END ? Z_OK : st;
}

CI_FUNC static int deflate_all(unsigned thread, const zlib_setting *z, unsigned char *in,
                               size_t n, unsigned char *out, size_t cap, size_t *written) {
  z_stream s;
  new_stream(&s, thread);
  int st = deflateInit2(&s, z->level, Z_DEFLATED, z->window_bits, z->mem_level, z->strategy);
  return st != Z_OK ? st : finish(&s, deflate, deflateEnd, in, n, out, cap, written);
}

CI_FUNC static int inflate_all(unsigned thread, const zlib_setting *z, unsigned char *in,
                               size_t n, unsigned char *out, size_t cap, size_t *written) {
  z_stream s;
  new_stream(&s, thread);
  int st = inflateInit2(&s, z->window_bits);
  return st != Z_OK ? st : finish(&s, inflate, inflateEnd, in, n, out, cap, written);
}

#endif
