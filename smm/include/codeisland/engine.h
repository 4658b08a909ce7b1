/*
 * The relocation engine's interface for its hosts (SMM driver, native tests,
 * fuzzer, benchmark).  The engine is freestanding C11: it reaches memory only
 * through ci_host_map() (smm/core/ci_host.h, one implementation per host) and
 * CPU contexts only through ci_cpu_ops below.
 *
 * A host:
 *   1. ci_engine_init() with SMRAM buffers for the two plan slots and the
 *      undo pool, then ci_region_add() for SMRAM (forbidden) and the arena;
 *   2. ci_engine_lock() at ready-to-lock;
 *   3. per SMI: copy the request into ci_engine_request_buffer(), then
 *      ci_dispatch(), and hand the response to the requester.
 */
#ifndef CODEISLAND_ENGINE_H
#define CODEISLAND_ENGINE_H

#include <stddef.h>
#include <stdint.h>

#include "codeisland/plan.h"

/* Save-state register numbers (PI EFI_SMM_SAVE_STATE_REGISTER), passed
 * through unchanged to EFI_SMM_CPU_PROTOCOL by the driver. */
#define CI_REG_CS  21u /* selector; its RPL (bits 1:0) is the CPL */
#define CI_REG_R8  30u /* R8..R15 30..37, RAX RBX RCX RDX RSP RBP RSI RDI 38..45 */
#define CI_REG_RDI 45u /* last GPR (RECLAIM reads all 16) */
#define CI_REG_RSP 42u
#define CI_REG_RIP 46u
#define CI_REG_CR3 53u

/*
 * Memory policy for page walks (virtual islands, plan.h).  RESTRICTED, the
 * default and what production firmware needs (SMM restricted memory access:
 * a handler faults on memory that was conventional at lock): every table
 * page must lie inside a registered region and every final page inside a
 * region with the role's flags.  UNRESTRICTED, for test boards whose
 * firmware was built with PcdCpuSmmRestrictedMemoryAccess FALSE: table and
 * final pages may be any memory outside SMRAM and the driver's pages
 * (CI_REGION_DRIVER).  Physical islands are checked against the regions
 * under either policy.  Set before lock; the driver's one switch is the
 * build define CI_SMM_UNRESTRICTED (smm/README.md).
 */
#define CI_MEM_RESTRICTED   0u
#define CI_MEM_UNRESTRICTED 1u

/* Longest virtual range one walk translates (an island). */
#define CI_WALK_MAX_LEN CI_MAX_ISLAND_SIZE

/*
 * CPU contexts.  read/write return 0 on success, anything else is a failure
 * the engine reports as CI_ST_CPU_ACCESS (after unwinding what it wrote).
 */
typedef struct ci_cpu_ops {
  void *ctx;
  uint32_t count; /* CPUs whose contexts are saved in this SMI */
  int (*read)(void *ctx, uint32_t cpu, uint32_t reg, uint64_t *value);
  int (*write)(void *ctx, uint32_t cpu, uint32_t reg, uint64_t value);
} ci_cpu_ops;

/* Where SAMPLE writes: a ring the glue has placed and checked. */
typedef struct ci_sample_ring {
  ci_sample *slots;
  uint32_t capacity;
  uint32_t head; /* samples ever written */
} ci_sample_ring;

/* Physical addresses the validator derived for a plan (== the plan's own
 * for physical islands): island sources, destinations and call sites. */
typedef struct ci_plan_phys {
  uint64_t src[CI_MAX_ISLANDS];
  uint64_t dst[CI_MAX_ISLANDS];
  uint64_t insn[CI_MAX_CALLSITES];
} ci_plan_phys;

/* The validated plan: typed views into the plan slot it was copied to. */
typedef struct ci_plan_view {
  const ci_plan_phys *phys; /* filled by the validator */
  const ci_plan_header *header;
  const ci_island *islands;
  const ci_fixup *fixups;
  const ci_callsite *callsites;
  const ci_chunk *chunks;
  const ci_target *targets;
  const ci_rule *rules;
  uint32_t copy_bytes;  /* sum of chunk lengths */
  uint32_t undo_need;   /* worst-case undo bytes for stage + commit */
  uint8_t return_rules; /* 1 if some rule translates return addresses */
  uint8_t rel32_only;   /* 1 if every fix-up is REL32/RIPREL32 (0 = unknown) */
} ci_plan_view;

/* One active generation: the undo log above undo_start and the map entries
 * [map_first, map_first + islands) belong to it. */
typedef struct ci_generation {
  uint32_t number;
  uint32_t undo_start;
  uint32_t map_first;
  uint32_t islands;
  uint32_t plan_flags; /* CI_PLAN_* of the plan that made it */
} ci_generation;

/* One translation for context rewriting: [from, from+size) -> to; return
 * addresses are rewritten in the first `slots` stack slots. */
typedef struct ci_move {
  uint64_t from;
  uint64_t to;
  uint32_t size;
  uint32_t slots;
  uint32_t space; /* CI_SPACE_*: PHYSICAL moves apply to every CPU, */
  uint64_t cr3;   /* others only to CPUs whose saved CR3 names these tables */
} ci_move;

/* The fields of the pending plan (and the reported state) kept while a
 * COMMIT of a new plan runs, so that its refusal puts them back (dispatch.c). */
typedef struct ci_aside {
  uint32_t pending; /* a plan was pending: its records sit below the redo */
  uint32_t state, plan_id, pending_slot, chunk_total, pending_undo_start;
  uint32_t chunks_done, chunk_next;
  uint32_t undo_top; /* log top when set aside: the redo records start here */
  uint32_t redo_end; /* end of the records that undo the abandonment */
  ci_plan_view plan;
  uint32_t chunk_smi[CI_MAX_CHUNKS];
  uint32_t chunk_fixup[CI_MAX_CHUNKS];
  uint16_t chunk_fast[CI_MAX_CHUNKS];
  uint16_t return_slots[CI_MAX_ISLANDS];
} ci_aside;
/* Engine-side facts of one address-map entry (not published): the physical
 * ranges every overlap check compares, and the address space. */
typedef struct ci_map_space {
  uint64_t orig_pa;
  uint64_t cur_pa;
  uint64_t cr3;
  uint32_t space;
  uint32_t retire_seq; /* order of its generation's ROLLBACK among all (0: not rolled back) */
} ci_map_space;

typedef struct ci_undo {
  uint8_t *pool;
  uint32_t size;
  uint32_t top; /* bytes used; records grow up, each ends with its header */
} ci_undo;

typedef struct ci_engine {
  /* allow-list, fixed before lock */
  ci_region_info regions[CI_MAX_REGIONS];
  uint32_t region_count;
  uint32_t locked;
  uint32_t memory_policy; /* CI_MEM_* */

  /* the pending plan (one at a time) */
  uint8_t *slot[2];    /* SMRAM plan buffers, CI_PLAN_MAX_SIZE each */
  ci_plan_phys phys[2]; /* the physical addresses of each slot's plan */
  uint32_t pending_slot;
  uint32_t state;      /* CI_STATE_* */
  ci_plan_view plan;   /* valid while a plan is pending */
  uint32_t plan_id;    /* of the newest adopted plan (slots get reused) */
  uint32_t chunk_total;
  uint32_t pending_undo_start;
  uint32_t chunks_done;
  uint32_t chunk_next;                  /* first chunk not yet staged */
  uint32_t chunk_smi[CI_MAX_CHUNKS];    /* epoch of the SMI that staged it, 0 = not */
  uint32_t chunk_fixup[CI_MAX_CHUNKS];  /* first fix-up that may touch it */
  uint16_t chunk_fast[CI_MAX_CHUNKS];   /* then (after one straddling in from
                                           the previous chunk) how many lie
                                           inside it with 8 bytes to spare */
  uint16_t return_slots[CI_MAX_ISLANDS];/* per island, from the rules */

  /* committed generations, oldest first */
  ci_generation gens[CI_MAX_GENERATIONS];
  uint32_t gen_count;
  uint32_t next_generation;

  /* address map; entries of rolled-back generations are kept for history,
   * retired ones (KEEP_COPIES) for the whole boot */
  ci_map_entry map[CI_MAX_MAP_ENTRIES];
  uint16_t map_return_slots[CI_MAX_MAP_ENTRIES];
  ci_map_space map_space[CI_MAX_MAP_ENTRIES];
  uint32_t map_count;
  uint32_t retired_count; /* entries with CI_MAP_RETIRED */
  uint32_t retire_seq;    /* generations rolled back so far (ci_map_space.retire_seq) */

  /* the last RECLAIM's verdicts (reclaim.c), answered in its response */
  ci_reclaim_info reclaim_info;
  ci_reclaim_entry reclaim[CI_MAX_MAP_ENTRIES];
  uint16_t reclaim_map[CI_MAX_MAP_ENTRIES]; /* map index of each reclaim[] entry */

  ci_undo undo;

  /* scratch of one commit/rollback (kept here, not on the small SMM stack);
   * a ROLLBACK moves the contexts of every generation it undoes at once */
  ci_move moves[CI_MAX_MAP_ENTRIES];
  uint32_t move_count;
  uint64_t ctx_rip[CI_MAX_CPUS];   /* as read: what a refused request puts back */
  uint64_t ctx_rsp[CI_MAX_CPUS];
  uint32_t ctx_slots[CI_MAX_CPUS]; /* stack slots usable per CPU */
  uint64_t ctx_cr3[CI_MAX_CPUS];   /* SAMPLE, and COMMIT/ROLLBACK of virtual islands */
  uint64_t ctx_stack_pa[CI_MAX_CPUS]; /* physical address of the window */
  uint8_t ctx_cpl[CI_MAX_CPUS];
  uint8_t ctx_moved[CI_MAX_CPUS];  /* CI_CTX_MOVED_* written so far */
  uint64_t ctx_win[CI_MAX_CPUS][CI_MAX_STACK_SLOTS]; /* stack windows, read once */
  uint8_t callsite_rel[CI_MAX_CALLSITES][4]; /* call-site rel32s as checked at COMMIT */

  /* the pending plan set aside while a COMMIT of a new plan runs */
  ci_aside aside;

  /* per SMI */
  uint32_t smi;        /* the host's SMI counter (reported) */
  uint32_t epoch;      /* engine's own request counter, never 0 */
  uint32_t budget;

  /* totals */
  uint64_t total_bytes_written;
  uint64_t total_relocations;
  uint64_t total_rollbacks;
} ci_engine;

/* Initialise; slot0/slot1 hold CI_PLAN_MAX_SIZE bytes, undo_pool
 * CI_UNDO_POOL_BYTES, all in SMRAM (or the native host's heap). */
void ci_engine_init(ci_engine *e, uint8_t *slot0, uint8_t *slot1, uint8_t *undo_pool);

/* Register a region before lock.  Returns CI_ST_OK, CI_ST_LOCKED or
 * CI_ST_REGION_INVALID (empty, wraps, overlaps another, or table full). */
ci_status ci_region_add(ci_engine *e, uint64_t base, uint64_t size, uint32_t flags);
void ci_engine_lock(ci_engine *e);
/* CI_MEM_RESTRICTED (the default) or CI_MEM_UNRESTRICTED, before lock:
 * CI_ST_OK, CI_ST_LOCKED or CI_ST_BAD_REQUEST (unknown policy). */
ci_status ci_engine_set_memory_policy(ci_engine *e, uint32_t policy);

/* The SMRAM buffer the glue copies the next request into (never the slot
 * holding the pending plan). */
uint8_t *ci_engine_request_buffer(ci_engine *e);

/* Clamp a host-requested per-SMI budget: 0 = default, at least one maximal
 * chunk (so staging always progresses), at most CI_STAGE_BUDGET_MAX. */
uint32_t ci_budget_clamp(uint32_t requested);

/*
 * Run one request whose req_size bytes the glue copied into
 * ci_engine_request_buffer().  Writes ci_result and the command's tail to
 * resp (resp_max bytes, at least sizeof(ci_result)); returns the status.
 */
ci_status ci_dispatch(ci_engine *e, const ci_cpu_ops *cpu, ci_sample_ring *ring,
                      uint32_t command, uint32_t req_size, uint32_t budget, uint32_t smi,
                      uint8_t *resp, uint32_t resp_max, uint32_t *resp_size);

/* The validator: the only reader of plan bytes.  Writes only *view, *phys
 * (the physical addresses it derived; view->phys points there) and
 * *failed_index (the digest field of plan is zeroed while it is summed and
 * restored).  Exposed for the fuzzer and tests. */

ci_status ci_validate(const ci_engine *e, uint8_t *plan, uint32_t size,
                      ci_plan_view *view, ci_plan_phys *phys, uint32_t *failed_index);

/* Text of a status (from CI_STATUS_LIST); "unknown status" otherwise. */
const char *ci_status_text(uint32_t status);

#endif /* CODEISLAND_ENGINE_H */
