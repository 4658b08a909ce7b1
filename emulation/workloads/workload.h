/*
 * The guest workload ABI of smmemu (and of the QEMU path's UEFI target app).
 *
 * A workload is a freestanding, position-independent x86-64 blob (ELF, kept with
 * its symbols for the analysis).  The loader copies its PT_LOAD segments into the
 * driver's code arena at whatever address the firmware gave the arena; nothing is
 * relocated at load time (the Makefile refuses any dynamic relocation).
 *
 *   entry      ci_start (runtime.c): SysV ABI, rdi = thread index, rsi = thread
 *              count, rsp as right after a call: a zero return address on top of
 *              the thread's own stack (inside the arena's STACK area).  It calls
 *              workload_thread(thread, n).
 *   output     every byte goes out on I/O port CI_PORT_OUT (0xE9); the emulator
 *              keeps one stream per guest thread, so threads never interleave.
 *   end        workload_thread returns; ci_start writes the exit code (0) to
 *              CI_PORT_EXIT (0xEA) and halts.  ci_fail(code) ends a thread early
 *              with a non-zero code (a self-check failed).
 *   input      CI_PORT_IN (0xEB) is read with IN by phase-aware workloads; the
 *              emulator answers 0 unless a handler is registered for it.
 *
 * Threads share nothing writable except their own slot of per-thread arrays, so
 * every thread's output is a function of (thread, nthreads) alone: the
 * differential test compares outputs byte for byte across any schedule.
 */
#ifndef CI_WORKLOAD_H
#define CI_WORKLOAD_H

#define CI_PORT_OUT  0xE9
#define CI_PORT_EXIT 0xEA
#define CI_PORT_IN   0xEB
#define CI_MAX_THREADS 16

typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned char u8;

/* Marks a function that must stay a function (an island the analysis can find and move):
 * at -O2 clang would inline every static helper into workload_thread. */
#define CI_FUNC __attribute__((noinline))

/* The one function each workload defines. */
void workload_thread(unsigned thread, unsigned nthreads);

/* runtime.c */
void ci_putc(char c);
void ci_puts(const char *s);
void ci_puthex(u64 value, int digits);
void ci_putdec(u64 value);
void ci_line(const char *label, u64 value); /* "label=0x%016llx\n" */
void ci_fail(u32 code) __attribute__((noreturn));
u32 ci_input(void);
void *ci_memset(void *dst, int c, u64 n);
void *ci_memcpy(void *dst, const void *src, u64 n);

/* xorshift64*: the workloads' only source of "randomness" (seeded per thread). */
static inline u64 ci_rand(u64 *state) {
  u64 x = *state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * 0x2545F4914F6CDD1DULL;
}

#endif
