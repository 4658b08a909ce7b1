/*
 * phase_daily: a workload whose hot code follows the emulated clock and user input.
 *
 * 64 worker functions, each on its own 4 KiB page (so the front end feels where they lie):
 *   hour group  the RTC hour (CMOS 0x70/0x71, BCD) picks 8 of the first 48 workers: the group
 *               of (hour / 2) mod 6 runs in most iterations (a daily cycle)
 *   ui group    workers 48..55 run while input events arrive on port 0xEB (user bursts)
 *   background  workers 56..63 run one per iteration, round robin (cache and iTLB pressure)
 * Every worker computes the same function of its input with its own copy of the code, so the
 * checksum a thread prints depends only on (thread, nthreads), never on which workers the
 * clock or the input chose: the differential test stays exact.
 */
#include "workload.h"

#define ROUNDS 6000u
#define PAGE __attribute__((noinline, aligned(4096)))

static u64 step(u64 x, u64 k) { return (x ^ (x >> 29)) * 0xBF58476D1CE4E5B9ULL + k; }

#define WORKER(n)                                                   \
  PAGE static u64 worker_##n(u64 x) {                               \
    for (u32 i = 0; i < 24; i++) x = step(x, i);                    \
    return x;                                                       \
  }
#define W8(a) WORKER(a##0) WORKER(a##1) WORKER(a##2) WORKER(a##3) \
              WORKER(a##4) WORKER(a##5) WORKER(a##6) WORKER(a##7)
W8(1) W8(2) W8(3) W8(4) W8(5) W8(6) W8(7) W8(8)

/* No table of function pointers (it would need a load-time relocation): a switch instead. */
__attribute__((noinline)) static u64 call_worker(u32 w, u64 x) {
  switch (w) {
#define C(a, n) case (a - 1) * 8 + n: return worker_##a##n(x);
#define C8(a) C(a, 0) C(a, 1) C(a, 2) C(a, 3) C(a, 4) C(a, 5) C(a, 6) C(a, 7)
    C8(1) C8(2) C8(3) C8(4) C8(5) C8(6) C8(7) C8(8)
    default: return x;
  }
}

__attribute__((noinline)) static u32 rtc_hour(void) {
  u8 v;
  __asm__ volatile("outb %0, $0x70" : : "a"((u8)4));
  __asm__ volatile("inb $0x71, %0" : "=a"(v));
  return (u32)(v >> 4) * 10u + (v & 15u);
}

void workload_thread(unsigned thread, unsigned nthreads) {
  (void)nthreads;
  u64 seed = 0x9E3779B97F4A7C15ULL * (thread + 1);
  u64 sum = 0;
  for (u32 r = 0; r < ROUNDS; r++) {
    u32 group = (rtc_hour() / 2u) % 6u;
    u64 x = seed + r;
    for (u32 k = 0; k < 8; k++) x = call_worker(group * 8u + k, x);
    /* input pending: the UI workers run; otherwise the hour group runs again.  Both give the
     * same value (every worker computes the same function), so the checksum does not depend
     * on when input arrived. */
    u32 ui = ci_input() ? 48u : group * 8u;
    for (u32 k = 0; k < 8; k++) x = call_worker(ui + k, x);
    x = call_worker(56u + r % 8u, x);
    sum += x;
  }
  ci_line("phase_daily", sum);
}
