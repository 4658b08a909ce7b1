/* An open-addressing hash table (linear probing, tombstones) under a mixed stream of
 * inserts, lookups and deletes whose mix changes by phase: fill, mixed, drain. */
#include "workload.h"

#define SLOTS 4096
#define EMPTY 0ULL
#define TOMB 1ULL

struct table {
  u64 keys[SLOTS];
  u64 vals[SLOTS];
  u32 used;
  u32 tombs;
};

static struct table tables[CI_MAX_THREADS];

static CI_FUNC u64 mix(u64 k) {
  k ^= k >> 33;
  k *= 0xff51afd7ed558ccdULL;
  k ^= k >> 33;
  k *= 0xc4ceb9fe1a85ec53ULL;
  return k ^ (k >> 33);
}

static CI_FUNC u32 probe(const struct table *t, u64 key, int for_insert) {
  u32 i = (u32)mix(key) & (SLOTS - 1);
  u32 first_tomb = SLOTS;
  for (u32 n = 0; n < SLOTS; n++, i = (i + 1) & (SLOTS - 1)) {
    u64 k = t->keys[i];
    if (k == key)
      return i;
    if (k == EMPTY)
      return for_insert && first_tomb != SLOTS ? first_tomb : i;
    if (k == TOMB && first_tomb == SLOTS)
      first_tomb = i;
  }
  return first_tomb;
}

static CI_FUNC void rehash(struct table *t) {
  static u64 keys[CI_MAX_THREADS][SLOTS / 2];
  static u64 vals[CI_MAX_THREADS][SLOTS / 2];
  u32 slot = (u32)(t - tables);
  u32 n = 0;
  for (u32 i = 0; i < SLOTS; i++)
    if (t->keys[i] > TOMB && n < SLOTS / 2) {
      keys[slot][n] = t->keys[i];
      vals[slot][n++] = t->vals[i];
    }
  ci_memset(t->keys, 0, sizeof(t->keys));
  t->used = 0;
  t->tombs = 0;
  for (u32 i = 0; i < n; i++) {
    u32 j = probe(t, keys[slot][i], 1);
    t->keys[j] = keys[slot][i];
    t->vals[j] = vals[slot][i];
    t->used++;
  }
}

static CI_FUNC int insert(struct table *t, u64 key, u64 val) {
  if (t->used + t->tombs >= SLOTS * 3 / 4)
    rehash(t);
  if (t->used >= SLOTS / 2)
    return 0;
  u32 i = probe(t, key, 1);
  if (t->keys[i] == key) {
    t->vals[i] += val;
    return 1;
  }
  if (t->keys[i] == TOMB)
    t->tombs--;
  t->keys[i] = key;
  t->vals[i] = val;
  t->used++;
  return 1;
}

static CI_FUNC int lookup(const struct table *t, u64 key, u64 *val) {
  u32 i = probe(t, key, 0);
  if (i < SLOTS && t->keys[i] == key) {
    *val = t->vals[i];
    return 1;
  }
  return 0;
}

static CI_FUNC int erase(struct table *t, u64 key) {
  u32 i = probe(t, key, 0);
  if (i < SLOTS && t->keys[i] == key) {
    t->keys[i] = TOMB;
    t->used--;
    t->tombs++;
    return 1;
  }
  return 0;
}

/* One phase: `ops` operations with insert/lookup/erase weights out of 16. */
static CI_FUNC u64 run_phase(struct table *t, u64 *rng, u32 ops, u32 w_ins, u32 w_look, u64 keyspace) {
  u64 sum = 0;
  for (u32 n = 0; n < ops; n++) {
    u64 r = ci_rand(rng);
    u64 key = 2 + (r >> 20) % keyspace;
    u32 kind = (u32)(r & 15);
    u64 v;
    if (kind < w_ins)
      sum += (u64)insert(t, key, r >> 40);
    else if (kind < w_ins + w_look)
      sum += lookup(t, key, &v) ? v : 7;
    else
      sum += (u64)erase(t, key) * 3;
    sum = sum * 31 + t->used;
  }
  return sum;
}

void workload_thread(unsigned thread, unsigned nthreads) {
  struct table *t = &tables[thread % CI_MAX_THREADS];
  u64 rng = 0x853c49e6748fea9bULL + thread * 0x9e3779b97f4a7c15ULL;
  (void)nthreads;
  ci_memset(t, 0, sizeof(*t));
  u64 fill = run_phase(t, &rng, 12000, 12, 3, 3000);
  ci_line("hash.fill", fill);
  u64 mixed = run_phase(t, &rng, 25000, 5, 8, 6000);
  ci_line("hash.mixed", mixed);
  u64 drain = run_phase(t, &rng, 12000, 2, 6, 6000);
  ci_line("hash.drain", drain);
  ci_line("hash.checksum", fill ^ mixed * 3 ^ drain * 7 ^ t->used);
}
