/*
 * QEMU user-mode TCG plugin: the front-end cost model (fetchmodel.c) fed with the fetch stream
 * of a real Linux program, once per layout, in one run (codeisland.native.calibrate).
 *
 *   qemu-x86_64 -plugin libciqtrace.so,spec=SPEC,out=OUT[,sample=K] PROGRAM ARGS
 *
 * With sample=K only one window of 2^20 executed blocks in K (counted per thread) is modeled, its
 * first 1/16 warming the modeled caches (and the copies' entry states) uncounted; outside the
 * modeled windows a block costs one count.  "counted" in
 * OUT is how many of the program's blocks the totals cover.
 *
 * A layout is the program's own code plus the copies one native run committed (generation by
 * generation, each from the block count at which the native run committed it).  Every executed
 * translation block is fed to every layout's model, at the address it would have run at in that
 * layout.  Which blocks of a moved island run in its copy follows the relocation's rules, not a
 * guess: the island is entered in its copy when the call or jump that entered it is one the plan
 * re-pointed (a call site in original code), or at its entry when the entry was patched with a
 * jump (the jump is fetched first).  A copy's own calls resolve to the callee's original, as
 * the engine's fix-ups write them, and so do indirect calls; a copy's indirect jump (a jump
 * table, a computed goto) lands in the original, whose addresses the table holds.  Control that comes back into the
 * island from outside (a return) stays where that thread last entered it.
 *
 * SPEC (text, one record a line; offsets are from the executable's load base in the native
 * run, copies are offsets in its arena; the plugin finds the load base QEMU chose in
 * /proc/self/maps and puts the arena 2 MiB aligned below it, as the agent does):
 *   exe PATH                         the executable (its first mapping is the load base)
 *   layouts N                        layout 0 is the program as built (no generation)
 *   huge LAYOUT ARENA_OFF SIZE       a 2 MiB-page range of the arena in that layout
 *   gen LAYOUT BLOCK                 the layout's next generation, from executed block BLOCK on
 *   island ORIG_OFF SIZE COPY_OFF ENTRY_PATCHED      a copy of that generation
 *   call ISLAND_ORIG_OFF END_OFF     a re-pointed call site in original code (end of the insn)
 *   range OFF SIZE                   an island whose own costs layout 0 reports ("range" lines)
 *   params L1I_SIZE L1I_WAYS L1I_LINE TLB4K TLB4K_WAYS TLB2M TLB2M_WAYS FETCH L1I_MISS
 *          TLB4K_MISS TLB2M_MISS     the model's parameters (the platform profile's [frontend])
 * OUT: "blocks N" then, per layout, "layout K counted blocks bytes lines l1i_misses itlb4k_misses
 * itlb2m_misses cycles in_copies" (in_copies: counted blocks that ran in a copy) summed over
 * the program's threads (one modeled front end per thread); then "range OFF blocks l1i_misses
 * itlb_misses cycles" for each spec range that ran (layout 0, over the modeled windows, their
 * warm-up included: where the binary as built misses).
 *
 * The plugin API is declared here, not included: Debian ships the plugin-enabled qemu-user but
 * not its header; these are the QEMU 7.2 (plugin API version 1) entry points it exports.
 */
#define _GNU_SOURCE
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fetchmodel.h"

typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
typedef struct qemu_info_t qemu_info_t;
typedef void (*tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*udata_cb_t)(qemu_plugin_id_t id, void *userdata);
enum { QEMU_PLUGIN_CB_NO_REGS = 0 };
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_cb(struct qemu_plugin_tb *tb, vcpu_udata_cb_t cb,
                                          int flags, void *userdata);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb_t cb, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
uint64_t qemu_plugin_tb_vaddr(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
size_t qemu_plugin_insn_size(const struct qemu_plugin_insn *insn);
const void *qemu_plugin_insn_data(const struct qemu_plugin_insn *insn);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

#define MAX_LAYOUTS 64
#define MAX_VCPUS 32
#define MAX_ISLANDS 8192
#define MAX_GENS 64
#define HASH_SLOTS 16384u /* per layout and kind: re-pointed sites of all generations */
#define BATCH 4096
#define ENTRY_JMP_LEN 5   /* the rel32 jump an entry patch writes */
#define ARENA_SIZE 0x800000ull
#define HUGE_ALIGN 0x200000ull
#define WINDOW_SHIFT 20u /* sampled windows of 2^20 blocks, the first 1/16 to warm the model */
#define WARM_BLOCKS (1ull << (WINDOW_SHIFT - 4))

typedef struct {
  uint64_t orig_off, size;
} island_t;

typedef struct { /* one copy of one generation, resolved at load */
  uint32_t island;
  uint64_t copy_off;
  int entry;
} move_t;

typedef struct {
  uint64_t key; /* END_OFF + 1 (0 = empty) */
  uint32_t island;
} slot_t;

typedef struct {
  uint64_t from_block;
  uint32_t first_move, moves, first_site, sites;
} gen_t;

typedef struct {
  uint64_t end_off;
  uint32_t island;
} site_t;

typedef struct { /* one program thread (QEMU vCPU), padded apart from the others */
  uint64_t count; /* blocks it executed */
  int phase;
  char pad[48];
} thread_t;

typedef struct {
  ci_fm *fm;
  uint64_t addr[BATCH];
  uint32_t size[BATCH];
  size_t n;
  int32_t prev_island;
  int prev_in_copy;
  int prev_indirect;
  uint64_t prev_end;
  uint8_t *in_copy; /* per island: where this thread last entered it */
  int phase;        /* the phase its counters were last taken in */
  ci_fm_totals snap, sum;
  uint64_t counted; /* translation blocks executed while counting */
  uint64_t in_copies; /* of those, run in a copy */
} vcpu_t;

enum { SKIP, WARM, COUNT };

typedef struct {
  uint32_t gens, next_gen;
  gen_t gen[MAX_GENS];
  uint64_t huge_off[4], huge_size[4];
  uint32_t huges;
  int64_t *delta;  /* per island: copy - original, 0 while not moved */
  uint8_t *entry;  /* per island: its entry jumps to the copy */
  slot_t call[HASH_SLOTS];
  vcpu_t *vcpu[MAX_VCPUS];
} layout_t;

static struct {
  char exe[4096], out[4096];
  ci_fm_params params;
  uint32_t layouts, islands, nmoves, nsites, nranges;
  uint64_t *range_off, *range_size; /* islands whose costs layout 0 reports one by one */
  island_t island[MAX_ISLANDS];
  move_t *move;
  site_t *site;
  layout_t *layout;
  uint64_t base, arena; /* load base QEMU chose; the arena's place in the model */
  int based;
  thread_t thread[MAX_VCPUS];
  uint64_t sample; /* model one window of WINDOW blocks in `sample` (1: every block) */
  pthread_mutex_t lock;
} G = {.lock = PTHREAD_MUTEX_INITIALIZER};

typedef struct {
  uint64_t vaddr, end;
  uint32_t size;
  int32_t island;
  int indirect_jmp; /* the block ends with jmp through a register or memory (FF /4) */
  int endbr;        /* it starts with the endbr64 just before island's start (the marker stays
                       outside the island: a copy starts after it, re-pointed calls skip it) */
} tb_t;

#define ENDBR64_LEN 4
static const uint8_t ENDBR64[ENDBR64_LEN] = {0xF3, 0x0F, 0x1E, 0xFA};

/* FF /4 after any legacy or REX prefixes: a jump table's or computed goto's dispatch. */
static int is_indirect_jmp(const uint8_t *b, size_t n) {
  size_t k = 0;
  while (k < n && (b[k] == 0x3E || b[k] == 0x2E || b[k] == 0xF2 || (b[k] & 0xF0) == 0x40)) k++;
  return k + 1 < n && b[k] == 0xFF && ((b[k + 1] >> 3) & 7) == 4;
}

static void die(const char *what) {
  fprintf(stderr, "ciqtrace: %s\n", what);
  exit(70);
}

static int32_t island_of(uint64_t off) {
  uint32_t lo = 0, hi = G.islands;
  while (lo < hi) { /* islands are sorted and disjoint */
    uint32_t mid = (lo + hi) / 2;
    if (off < G.island[mid].orig_off) hi = mid;
    else if (off >= G.island[mid].orig_off + G.island[mid].size) lo = mid + 1;
    else return (int32_t)mid;
  }
  return -1;
}

static int island_cmp(const void *a, const void *b) {
  const island_t *x = a, *y = b;
  return x->orig_off < y->orig_off ? -1 : x->orig_off > y->orig_off;
}

static void add_island(uint64_t off, uint64_t size) {
  for (uint32_t i = 0; i < G.islands; i++)
    if (G.island[i].orig_off == off) return;
  if (G.islands == MAX_ISLANDS) die("too many islands in the spec");
  G.island[G.islands++] = (island_t){off, size};
}

static void hash_put(slot_t *t, uint64_t end_off, uint32_t island) {
  for (uint32_t h = (uint32_t)(end_off * 0x9E3779B97F4A7C15ull >> 50), i = 0; i < HASH_SLOTS;
       i++, h = (h + 1) & (HASH_SLOTS - 1)) {
    if (t[h].key == 0 || t[h].key == end_off + 1) {
      t[h] = (slot_t){end_off + 1, island};
      return;
    }
  }
  die("too many re-pointed sites in one layout");
}

static int32_t hash_get(const slot_t *t, uint64_t end_off) {
  for (uint32_t h = (uint32_t)(end_off * 0x9E3779B97F4A7C15ull >> 50), i = 0; i < HASH_SLOTS;
       i++, h = (h + 1) & (HASH_SLOTS - 1)) {
    if (t[h].key == 0) return -1;
    if (t[h].key == end_off + 1) return (int32_t)t[h].island;
  }
  return -1;
}

/* Two passes over SPEC: islands first (their table is sorted before moves name them). */
static void load_spec(const char *path) {
  for (int pass = 0; pass < 2; pass++) {
    FILE *f = fopen(path, "r");
    if (!f) die("cannot open the spec");
    char line[8192];
    int32_t cur = -1;
    while (fgets(line, sizeof line, f)) {
      uint64_t a, b, c, d;
      uint32_t k;
      if (sscanf(line, "exe %4095s", G.exe) == 1) continue;
      if (sscanf(line, "layouts %" SCNu32, &G.layouts) == 1) {
        if (G.layouts < 1 || G.layouts > MAX_LAYOUTS) die("layouts must be 1..64");
        if (pass == 1 && !G.layout) G.layout = calloc(G.layouts, sizeof *G.layout);
        continue;
      }
      if (sscanf(line, "params %u %u %u %u %u %u %u %u %u %u %u", &G.params.l1i_size,
                 &G.params.l1i_ways, &G.params.l1i_line, &G.params.itlb4k_entries,
                 &G.params.itlb4k_ways, &G.params.itlb2m_entries, &G.params.itlb2m_ways,
                 &G.params.fetch_cycles, &G.params.l1i_miss_cycles,
                 &G.params.itlb4k_miss_cycles, &G.params.itlb2m_miss_cycles) == 11)
        continue;
      if (sscanf(line, "island %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64, &a, &b, &c, &d) ==
          4) {
        if (pass == 0) add_island(a, b);
        else {
          if (cur < 0) die("island before gen");
          int32_t i = island_of(a);
          G.move[G.nmoves++] = (move_t){(uint32_t)i, c, (int)d};
          G.layout[cur].gen[G.layout[cur].gens - 1].moves++;
        }
        continue;
      }
      if (pass == 0) continue;
      if (sscanf(line, "range %" SCNu64 " %" SCNu64, &a, &b) == 2) {
        if (G.nranges == CI_FM_MAX_RANGES) die("too many ranges");
        G.range_off[G.nranges] = a;
        G.range_size[G.nranges++] = b;
      } else if (sscanf(line, "huge %" SCNu32 " %" SCNu64 " %" SCNu64, &k, &a, &b) == 3) {
        if (k >= G.layouts || G.layout[k].huges == 4) die("bad huge record");
        layout_t *L = &G.layout[k];
        L->huge_off[L->huges] = a;
        L->huge_size[L->huges++] = b;
      } else if (sscanf(line, "gen %" SCNu32 " %" SCNu64, &k, &a) == 2) {
        if (k >= G.layouts || G.layout[k].gens == MAX_GENS) die("bad gen record");
        cur = (int32_t)k;
        layout_t *L = &G.layout[k];
        L->gen[L->gens++] = (gen_t){a, G.nmoves, 0, G.nsites, 0};
      } else if (sscanf(line, "call %" SCNu64 " %" SCNu64, &a, &b) == 2) {
        int32_t i = island_of(a);
        if (cur < 0 || i < 0) die("call site before gen or naming no island of the spec");
        G.site[G.nsites++] = (site_t){b, (uint32_t)i};
        G.layout[cur].gen[G.layout[cur].gens - 1].sites++;
      }
    }
    fclose(f);
    if (pass == 0) {
      qsort(G.island, G.islands, sizeof G.island[0], island_cmp);
      G.move = calloc(65536, sizeof *G.move);
      G.site = calloc(262144, sizeof *G.site);
      G.range_off = calloc(CI_FM_MAX_RANGES, sizeof *G.range_off);
      G.range_size = calloc(CI_FM_MAX_RANGES, sizeof *G.range_size);
    }
  }
  if (!G.exe[0] || !G.layout) die("the spec names no exe or no layouts");
  for (uint32_t k = 0; k < G.layouts; k++) {
    G.layout[k].delta = calloc(G.islands + 1, sizeof(int64_t));
    G.layout[k].entry = calloc(G.islands + 1, 1);
  }
}

/* The executable's lowest mapping in QEMU's own address space (guest_base is 0 for an x86-64
 * guest on an x86-64 host without -B). */
static void find_base(void) {
  FILE *f = fopen("/proc/self/maps", "r");
  char line[8192], path[4096];
  uint64_t lo = UINT64_MAX;
  char *want = realpath(G.exe, NULL);
  if (!f || !want) die("cannot read /proc/self/maps or resolve the exe");
  while (fgets(line, sizeof line, f)) {
    uint64_t start;
    path[0] = 0;
    if (sscanf(line, "%" SCNx64 "-%*x %*s %*x %*s %*u %4095s", &start, path) == 2 &&
        strcmp(path, want) == 0 && start < lo)
      lo = start;
  }
  fclose(f);
  free(want);
  if (lo == UINT64_MAX) die("the exe is not mapped");
  G.base = lo;
  G.arena = (lo - ARENA_SIZE) & ~(HUGE_ALIGN - 1);
  G.based = 1;
}

/* Layout 0's per-island counters over the spec's ranges (the binary as built). */
static void set_ranges(ci_fm *fm) {
  uint64_t *start = calloc(G.nranges, 8), *end = calloc(G.nranges, 8);
  uint32_t *index = calloc(G.nranges, 4);
  for (uint32_t k = 0; k < G.nranges; k++) {
    start[k] = G.base + G.range_off[k];
    end[k] = start[k] + G.range_size[k];
    index[k] = k;
  }
  if (ci_fm_set_ranges(fm, start, end, index, G.nranges) != 0) die("bad or overlapping ranges");
  free(start), free(end), free(index);
}

static vcpu_t *vcpu_of(layout_t *L, unsigned v) {
  if (v >= MAX_VCPUS) die("more than 32 threads");
  vcpu_t *c = __atomic_load_n(&L->vcpu[v], __ATOMIC_ACQUIRE);
  if (c) return c;
  c = calloc(1, sizeof *c);
  c->fm = aligned_alloc(16, ci_fm_size());
  c->in_copy = calloc(G.islands + 1, 1);
  if (!c->fm || !c->in_copy || ci_fm_init(c->fm, &G.params)) die("model parameters rejected");
  for (uint32_t h = 0; h < L->huges; h++)
    ci_fm_add_huge(c->fm, G.arena + L->huge_off[h], L->huge_size[h]);
  if (L == &G.layout[0] && G.nranges) set_ranges(c->fm);
  c->prev_island = -1;
  __atomic_store_n(&L->vcpu[v], c, __ATOMIC_RELEASE);
  return c;
}

/* The layout's generations up to block `now` take effect (under the lock). */
static void advance(layout_t *L, uint64_t now) {
  pthread_mutex_lock(&G.lock);
  while (L->next_gen < L->gens && L->gen[L->next_gen].from_block <= now) {
    const gen_t *g = &L->gen[L->next_gen++];
    for (uint32_t m = g->first_move; m < g->first_move + g->moves; m++) {
      const move_t *mv = &G.move[m];
      uint64_t orig = G.base + G.island[mv->island].orig_off;
      L->delta[mv->island] = (int64_t)(G.arena + mv->copy_off) - (int64_t)orig;
      L->entry[mv->island] = (uint8_t)mv->entry;
    }
    for (uint32_t s = g->first_site; s < g->first_site + g->sites; s++)
      hash_put(L->call, G.site[s].end_off, G.site[s].island);
  }
  pthread_mutex_unlock(&G.lock);
}

static void add_totals(ci_fm_totals *acc, const ci_fm_totals *a, const ci_fm_totals *b) {
  acc->blocks += a->blocks - b->blocks, acc->bytes += a->bytes - b->bytes;
  acc->lines += a->lines - b->lines, acc->l1i_misses += a->l1i_misses - b->l1i_misses;
  acc->itlb4k_misses += a->itlb4k_misses - b->itlb4k_misses;
  acc->itlb2m_misses += a->itlb2m_misses - b->itlb2m_misses;
  acc->cycles += a->cycles - b->cycles;
}

/* Enter the phase the block count asks for: counters are taken over COUNT phases only. */
static void set_phase(vcpu_t *c, int phase) {
  if (phase == c->phase) return;
  ci_fm_feed(c->fm, c->addr, c->size, c->n);
  c->n = 0;
  ci_fm_totals now;
  ci_fm_totals_get(c->fm, &now);
  if (c->phase == COUNT) add_totals(&c->sum, &now, &c->snap);
  c->snap = now;
  c->phase = phase;
}

static void emit(vcpu_t *c, uint64_t addr, uint32_t size) {
  if (c->phase == SKIP) return;
  c->addr[c->n] = addr;
  c->size[c->n++] = size;
  if (c->n == BATCH) {
    ci_fm_feed(c->fm, c->addr, c->size, c->n);
    c->n = 0;
  }
}

static void run_layout(layout_t *L, vcpu_t *c, const tb_t *tb, int phase) {
  int32_t i = tb->island;
  set_phase(c, phase);
  c->counted += phase == COUNT;
  int in = 0;
  uint64_t at = tb->vaddr + (tb->endbr ? ENDBR64_LEN : 0); /* where the island's code starts */
  if (i >= 0 && L->delta[i] != 0) {
    if (c->prev_island != i) { /* control came in from outside the island */
      int via = !c->prev_in_copy && hash_get(L->call, c->prev_end - G.base) == i;
      if (via) {
        c->in_copy[i] = 1;
      } else if (at == G.base + G.island[i].orig_off) {
        c->in_copy[i] = L->entry[i]; /* a call not re-pointed: through the entry jump, if any */
        if (L->entry[i]) emit(c, tb->vaddr, (uint32_t)(at - tb->vaddr) + ENTRY_JMP_LEN);
      } /* else a return into it (or a jump into its middle): where this thread entered it */
    } else if (c->prev_in_copy && c->prev_indirect) {
      c->in_copy[i] = 0; /* a jump table's targets are the original's: the copy escaped */
    }
    in = c->in_copy[i];
  }
  c->in_copies += in && phase == COUNT;
  if (in)
    emit(c, (uint64_t)((int64_t)at + L->delta[i]), tb->size - (uint32_t)(at - tb->vaddr));
  else
    emit(c, tb->vaddr, tb->size);
  c->prev_island = i;
  c->prev_in_copy = in;
  c->prev_indirect = tb->indirect_jmp;
  c->prev_end = tb->end;
}

/* The program's blocks so far: the threads' counts, read without a lock (a generation takes
 * effect within a window of where the native run committed it). */
static uint64_t blocks_so_far(void) {
  uint64_t sum = 0;
  for (unsigned v = 0; v < MAX_VCPUS; v++) sum += G.thread[v].count;
  return sum;
}

/* A thread's window boundary: its phase for the next blocks, and the generations now due. */
static void next_phase(thread_t *t) {
  uint64_t in_window = t->count & ((1ull << WINDOW_SHIFT) - 1);
  if (in_window == 0) {
    uint64_t now = blocks_so_far();
    for (uint32_t k = 0; k < G.layouts; k++) {
      layout_t *L = &G.layout[k];
      if (L->next_gen < L->gens && L->gen[L->next_gen].from_block <= now) advance(L, now);
    }
    t->phase = G.sample <= 1 ? COUNT : (t->count >> WINDOW_SHIFT) % G.sample ? SKIP : WARM;
  } else if (in_window == WARM_BLOCKS && t->phase == WARM) {
    t->phase = COUNT;
  }
}

/* Once per executed block: nothing but a count outside the sampled windows (the fast path). */
static void on_exec(unsigned int v, void *udata) {
  if (v >= MAX_VCPUS) die("more than 32 threads");
  thread_t *t = &G.thread[v];
  if ((t->count & ((1ull << WINDOW_SHIFT) - 1)) == 0 || (t->count & (WARM_BLOCKS - 1)) == 0)
    next_phase(t);
  t->count++;
  if (t->phase == SKIP) return;
  for (uint32_t k = 0; k < G.layouts; k++)
    run_layout(&G.layout[k], vcpu_of(&G.layout[k], v), udata, t->phase);
}

static void on_trans(qemu_plugin_id_t id, struct qemu_plugin_tb *qtb) {
  (void)id;
  if (!G.based) {
    pthread_mutex_lock(&G.lock);
    if (!G.based) find_base();
    pthread_mutex_unlock(&G.lock);
  }
  tb_t *tb = calloc(1, sizeof *tb); /* lives as long as QEMU may run the block */
  tb->vaddr = qemu_plugin_tb_vaddr(qtb);
  size_t n = qemu_plugin_tb_n_insns(qtb);
  for (size_t k = 0; k < n; k++)
    tb->size += (uint32_t)qemu_plugin_insn_size(qemu_plugin_tb_get_insn(qtb, k));
  if (n) {
    const struct qemu_plugin_insn *last = qemu_plugin_tb_get_insn(qtb, n - 1);
    tb->indirect_jmp = is_indirect_jmp(qemu_plugin_insn_data(last), qemu_plugin_insn_size(last));
  }
  tb->end = tb->vaddr + tb->size;
  tb->island = tb->vaddr >= G.base ? island_of(tb->vaddr - G.base) : -1;
  if (tb->island < 0 && n && tb->vaddr >= G.base && tb->size > ENDBR64_LEN &&
      qemu_plugin_insn_size(qemu_plugin_tb_get_insn(qtb, 0)) == ENDBR64_LEN &&
      memcmp(qemu_plugin_insn_data(qemu_plugin_tb_get_insn(qtb, 0)), ENDBR64, ENDBR64_LEN) == 0) {
    int32_t i = island_of(tb->vaddr + ENDBR64_LEN - G.base);
    if (i >= 0 && G.base + G.island[i].orig_off == tb->vaddr + ENDBR64_LEN) {
      tb->island = i; /* a call to the function's marker enters the island */
      tb->endbr = 1;
    }
  }
  qemu_plugin_register_vcpu_tb_exec_cb(qtb, on_exec, QEMU_PLUGIN_CB_NO_REGS, tb);
}

static void write_result(qemu_plugin_id_t id, void *udata) {
  (void)id;
  (void)udata;
  FILE *f = fopen(G.out, "w");
  if (!f) die("cannot write the result");
  fprintf(f, "blocks %" PRIu64 "\nbase 0x%" PRIx64 "\n", blocks_so_far(), G.base);
  for (uint32_t k = 0; k < G.layouts; k++) {
    ci_fm_totals sum = {0};
    uint64_t counted = 0, in_copies = 0;
    for (unsigned v = 0; v < MAX_VCPUS; v++) {
      vcpu_t *c = G.layout[k].vcpu[v];
      if (!c) continue;
      set_phase(c, SKIP);
      counted += c->counted;
      in_copies += c->in_copies;
      const ci_fm_totals t = c->sum;
      sum.blocks += t.blocks, sum.bytes += t.bytes, sum.lines += t.lines;
      sum.l1i_misses += t.l1i_misses, sum.itlb4k_misses += t.itlb4k_misses;
      sum.itlb2m_misses += t.itlb2m_misses, sum.cycles += t.cycles;
    }
    fprintf(f,
            "layout %u %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64
            " %" PRIu64 " %" PRIu64 "\n",
            k, counted, sum.blocks, sum.bytes, sum.lines, sum.l1i_misses, sum.itlb4k_misses,
            sum.itlb2m_misses, sum.cycles, in_copies);
  }
  static ci_fm_island_counts one[CI_FM_MAX_ISLANDS], sum[CI_FM_MAX_ISLANDS];
  for (unsigned v = 0; G.nranges && v < MAX_VCPUS; v++) {
    vcpu_t *c = G.layout[0].vcpu[v];
    if (!c) continue;
    uint32_t n = ci_fm_island_counts_get(c->fm, one, G.nranges);
    for (uint32_t k = 0; k < n; k++) {
      sum[k].blocks += one[k].blocks, sum[k].l1i_misses += one[k].l1i_misses;
      sum[k].itlb_misses += one[k].itlb_misses, sum[k].cycles += one[k].cycles;
    }
  }
  for (uint32_t k = 0; k < G.nranges; k++)
    if (sum[k].blocks)
      fprintf(f, "range %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 " %" PRIu64 "\n",
              G.range_off[k], sum[k].blocks, sum[k].l1i_misses, sum[k].itlb_misses, sum[k].cycles);
  fclose(f);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
                                                               const qemu_info_t *info,
                                                               int argc, char **argv) {
  (void)info;
  const char *spec = NULL;
  for (int k = 0; k < argc; k++) {
    if (strncmp(argv[k], "spec=", 5) == 0) spec = argv[k] + 5;
    else if (strncmp(argv[k], "sample=", 7) == 0) G.sample = strtoull(argv[k] + 7, NULL, 10);
    else if (strncmp(argv[k], "out=", 4) == 0) snprintf(G.out, sizeof G.out, "%s", argv[k] + 4);
  }
  if (!spec || !G.out[0]) die("usage: -plugin libciqtrace.so,spec=FILE,out=FILE");
  load_spec(spec);
  qemu_plugin_register_vcpu_tb_trans_cb(id, on_trans);
  qemu_plugin_register_atexit_cb(id, write_result, NULL);
  return 0;
}
