/*
 * The QEMU target's workload: a freestanding, position-independent x86-64 blob (SysV ABI) that
 * the app copies into the driver's code arena and calls once per round.  Built like the
 * emulator's workloads (PIC ELF, no dynamic relocations, symbols kept for the analysis), but
 * with a per-round entry so the app can print progress between rounds while the host stages
 * and commits plans.
 *
 * The checksum of a round depends only on the data, never on where the code runs, so every
 * round must print the same value whether or not its islands have moved.
 */
typedef unsigned long long u64;
typedef unsigned int u32;

#define NOINLINE __attribute__((noinline))
#define DATA_WORDS 4096u
#define PASSES 512u

static u32 data[DATA_WORDS];
static u64 filled;

/* xorshift64*: deterministic data. */
static NOINLINE u64 next_rand(u64 *state) {
  u64 x = *state;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *state = x;
  return x * 0x2545F4914F6CDD1DULL;
}

static NOINLINE void fill(void) {
  u64 s = 0x9E3779B97F4A7C15ULL;
  for (u32 i = 0; i < DATA_WORDS; i++) data[i] = (u32)next_rand(&s);
  filled = 1;
}

/* A small mixing step, called from the hot loop (a rel32 call out of the hot island). */
static NOINLINE u64 mix(u64 acc, u32 word) {
  acc ^= word;
  acc *= 0x100000001B3ULL;
  return acc ^ (acc >> 29);
}

/* The hot island: almost all time of a round is spent in here. */
static NOINLINE u64 hot_loop(u64 seed) {
  u64 acc = seed;
  for (u32 pass = 0; pass < PASSES; pass++) {
    for (u32 i = 0; i < DATA_WORDS; i++) {
      if (data[i] & 1u) acc = mix(acc, data[i]);
      else acc += data[i] ^ pass;
    }
  }
  return acc;
}

static NOINLINE u64 finish(u64 acc) { return acc ^ (acc >> 33) ^ 0xC0DE15A1ULL; }

/* Entry: one round.  Returns the round's checksum. */
u64 workload_round(u64 round) {
  (void)round;
  if (!filled) fill();
  return finish(hot_loop(0xCBF29CE484222325ULL));
}
