/*
 * The worked example of PORTING.md: zlib (Debian source package `zlib`, taken at test time with
 * `apt-get source`, never vendored) as a guest workload.  Each thread deflates seeded text at
 * two levels, inflates it back, checks the round trip and prints sizes, CRC-32 and Adler-32.
 *
 * What the port needed (PORTING.md): Z_SOLO (no gz* file API, no malloc of its own: zalloc and
 * zfree below, from a per-thread arena), the guest libc for memcpy/memset/strlen, and the
 * loaders' R_X86_64_RELATIVE relocations: zlib's data holds pointer tables (z_errmsg[], the
 * string table behind zError(), and deflate's configuration_table of function pointers).
 */
#include <stdio.h>
#include <string.h>

#include "ci_runtime.h"
#include "zlib.h"

#define TEXT_BYTES 5000
#define ARENA_BYTES (96 * 1024)

/* zlib's allocations from a bump arena of the thread's own: zfree is a no-op, the arena is
 * reset per stream.  Threads share nothing writable. */
typedef struct {
  unsigned char bytes[ARENA_BYTES];
  size_t used;
} arena;

static arena arenas[CI_MAX_THREADS];
static unsigned char text[CI_MAX_THREADS][TEXT_BYTES];
static unsigned char packed[CI_MAX_THREADS][TEXT_BYTES + 1024];
static unsigned char unpacked[CI_MAX_THREADS][TEXT_BYTES];

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

static const char *const words[] = {"island", "relocation", "handler", "interrupt", "copy",
                                    "fix-up", "trampoline", "stack", "return", "address",
                                    "generation", "rollback", "region", "arena", "plan"};

CI_FUNC static size_t gen_text(unsigned char *out, size_t cap, u64 seed) {
  size_t n = 0;
  while (n + 16 < cap) {
    const char *w = words[ci_rand(&seed) % (sizeof words / sizeof words[0])];
    size_t len = strlen(w);
    memcpy(out + n, w, len);
    n += len;
    out[n++] = (ci_rand(&seed) & 7) ? ' ' : '\n';
  }
  return n;
}

/* A stream whose allocations come from the thread's arena, emptied first. */
static void new_stream(z_stream *s, unsigned thread) {
  memset(s, 0, sizeof *s);
  arenas[thread].used = 0;
  s->zalloc = arena_alloc;
  s->zfree = arena_free;
  s->opaque = &arenas[thread];
}

CI_FUNC static int squeeze(unsigned thread, int level, size_t in, size_t *out) {
  z_stream s;
  new_stream(&s, thread);
  int st = deflateInit2(&s, level, Z_DEFLATED, 10, 2, Z_DEFAULT_STRATEGY);
  if (st != Z_OK)
    return st;
  s.next_in = text[thread];
  s.avail_in = (uInt)in;
  s.next_out = packed[thread];
  s.avail_out = sizeof packed[thread];
  st = deflate(&s, Z_FINISH);
  *out = s.total_out;
  deflateEnd(&s);
  return st == Z_STREAM_END ? Z_OK : st;
}

CI_FUNC static int expand(unsigned thread, size_t in, size_t *out) {
  z_stream s;
  new_stream(&s, thread);
  int st = inflateInit2(&s, 10);
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
  size_t n = gen_text(text[thread], TEXT_BYTES, 0x5EED0000ULL + thread * 7919ULL + nthreads);
  printf("zlib %s thread %u/%u: %zu bytes of text\n", zlibVersion(), thread, nthreads, n);
  static const int levels[] = {1, 9};
  for (unsigned k = 0; k < sizeof levels / sizeof levels[0]; k++) {
    size_t packed_size = 0, back = 0;
    int st = squeeze(thread, levels[k], n, &packed_size);
    if (st == Z_OK)
      st = expand(thread, packed_size, &back);
    int same = st == Z_OK && back == n && memcmp(text[thread], unpacked[thread], n) == 0;
    printf("level %d: %zu -> %zu bytes, %s, status %s\n", levels[k], n, packed_size,
           same ? "round trip ok" : "ROUND TRIP FAILED", zError(st == Z_OK ? Z_STREAM_END : st));
    if (!same)
      ci_fail(2);
  }
  printf("%s, %s\n", zError(Z_DATA_ERROR), zError(Z_VERSION_ERROR)); /* the z_errmsg[] table */
  printf("crc32 %08lx adler32 %08lx\n", crc32(0L, text[thread], (uInt)n),
         adler32(1L, text[thread], (uInt)n));
}
