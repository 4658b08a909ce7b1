/*
 * The worked example of PORTING.md: zlib (Debian source package `zlib`, taken at test time with
 * `apt-get source`, never vendored) as a guest workload.  Each thread deflates seeded text at
 * two levels, inflates it back, checks the round trip and prints sizes, CRC-32 and Adler-32.
 *
 * What the port needed (PORTING.md): Z_SOLO (no gz* file API, no malloc of its own: zalloc and
 * zfree from a per-thread arena, zlib_port.h), the guest libc for memcpy/memset/strlen, and the
 * loaders' R_X86_64_RELATIVE relocations: zlib's data holds pointer tables (z_errmsg[], the
 * string table behind zError(), and deflate's configuration_table of function pointers).
 */
#include <stdio.h>
#include <string.h>

#include "ci_runtime.h"
#include "../job_inputs.h"
#include "zlib.h"
#include "zlib_port.h"

#define TEXT_BYTES 5000

static unsigned char text[CI_MAX_THREADS][TEXT_BYTES];
static unsigned char packed[CI_MAX_THREADS][TEXT_BYTES + 1024];
static unsigned char unpacked[CI_MAX_THREADS][TEXT_BYTES];

void workload_thread(unsigned thread, unsigned nthreads) {
  u64 seed = 0x5EED0000ULL + thread * 7919ULL + nthreads;
  size_t n = make_input(text[thread], TEXT_BYTES, 0, &seed); /* prose */
  printf("zlib %s thread %u/%u: %zu bytes of text\n", zlibVersion(), thread, nthreads, n);
  static const int levels[] = {1, 9};
  for (unsigned k = 0; k < sizeof levels / sizeof levels[0]; k++) {
    zlib_setting z = {levels[k], 10, 2, Z_DEFAULT_STRATEGY};
    size_t packed_size = 0, back = 0;
    int st = deflate_all(thread, &z, text[thread], n, packed[thread], sizeof packed[thread],
                         &packed_size);
    if (st == Z_OK)
      st = inflate_all(thread, &z, packed[thread], packed_size, unpacked[thread],
                       sizeof unpacked[thread], &back);
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
