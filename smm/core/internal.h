/*
 * Declarations shared by the engine's modules (not part of its interface).
 * Module map:
 *   regions.c   allow-list and the "inside a region" checks
 *   pagewalk.c  address spaces: the page walk, the memory policy
 *   validate.c  the validator (only reader of plan bytes)
 *   undo.c      the undo log in SMRAM
 *   stage.c     differential stage of destination chunks, with fix-ups
 *   commit.c    entry/call-site patches and context translation
 *   rollback.c  undoing generations
 *   map.c       the versioned address map
 *   reclaim.c   freeing retired copies a conservative scan proves unreachable
 *   dispatch.c  commands -> verbs -> ci_result
 */
#ifndef CI_INTERNAL_H
#define CI_INTERNAL_H

#include "codeisland/engine.h"

/* Work counters of one request, copied into ci_result. */
typedef struct ci_work {
  uint32_t bytes_written;
  uint32_t bytes_skipped;
  uint32_t fixups_applied;
  uint32_t callsites_patched;
  uint32_t contexts_translated;
  uint32_t returns_translated;
  uint32_t bytes_restored;
  uint32_t samples;
  uint32_t failed_index;
} ci_work;

/* ---- validate.c ---- */
/* Does the E8/E9 at `insn` (its 5 bytes at `bytes`, already mapped) enter island isl:
 * target its src itself, or the endbr64 right in front of it (SOURCE bytes, reached in the
 * island's address space). */
int ci_callsite_enters(const ci_engine *e, const ci_island *isl, uint64_t insn,
                       const uint8_t *bytes);

/* ---- regions.c ---- */
/* Status for [base, base+len) that must lie in one region with `need`:
 * RANGE_WRAP, TOUCHES_SMRAM, `outside` if in no such region, else OK. */
ci_status ci_region_check(const ci_engine *e, uint64_t base, uint64_t len, uint32_t need,
                          ci_status outside);
/* The region with `need` containing addr (end of that region in *end). */
int ci_region_end(const ci_engine *e, uint64_t addr, uint32_t need, uint64_t *end);

/* ---- pagewalk.c ---- */
/* 1 if two CR3 values name the same page tables (PCID bits masked). */
int ci_cr3_same(uint64_t a, uint64_t b);
int ci_canonical(uint64_t va);
/* Walk va in (space, cr3): its physical address and the bytes left in its
 * page.  NONCANONICAL, PAGE_NOT_PRESENT, SUPERVISOR_PAGE, WALK_TABLE_*,
 * WALK_DRIVER, INTERNAL or OK; the final page itself is not checked. */
ci_status ci_walk_addr(const ci_engine *e, uint32_t space, uint64_t cr3, uint64_t va,
                       uint64_t *pa, uint64_t *room);
/* Physical start of the virtual [va, va+len) (len <= CI_WALK_MAX_LEN): every
 * page walked and checked for a role needing `need` (`outside` if a final
 * page is in no such region, restricted policy), one contiguous range. */
ci_status ci_walk_range(const ci_engine *e, uint32_t space, uint64_t cr3, uint64_t va,
                        uint64_t len, uint32_t need, ci_status outside, uint64_t *pa);
/* [addr, addr+len) of island isl: a physical island's range is checked
 * against the regions as is, a virtual one's is walked. */
ci_status ci_place(const ci_engine *e, const ci_island *isl, uint64_t addr, uint64_t len,
                   uint32_t need, ci_status outside, uint64_t *pa);
/* The pending plan's virtual addresses still walk to the validated ones. */
ci_status ci_space_recheck(const ci_engine *e, ci_work *w);
/* A committed generation's virtual islands and copies still walk to the
 * pages they were committed at (checked before ROLLBACK writes). */
ci_status ci_generation_recheck(const ci_engine *e, const ci_generation *g, ci_work *w);

/* ---- undo.c ---- */
#define CI_UNDO_MEM   1u /* bytes of memory (destination, patches) */
#define CI_UNDO_FILL  2u /* memory that held one repeated byte */
#define CI_UNDO_HDR   16u
/* Worst-case pool bytes of one record saving len bytes. */
uint32_t ci_undo_cost(uint32_t len);
/* Save [addr, addr+len) (ptr maps it, or holds a copy read earlier) before
 * it is written.  0 if full. */
int ci_undo_save(ci_undo *u, uint32_t kind, uint64_t addr, const uint8_t *ptr, uint32_t len);
/* Copy src over [addr, addr+len) (dst maps it), logging the old bytes first
 * (a FILL record if they were one repeated byte).  0 (nothing written) if
 * the log lacks room. */
uint32_t ci_undo_copy(ci_undo *u, uint64_t addr, uint8_t *dst, const uint8_t *src,
                      uint32_t len);
/* Worst-case pool bytes of ci_undo_copy. */
#define CI_UNDO_COPY_COST(len) ci_undo_cost(len)
/* Drop the records in [from, to) (from <= to <= top, both record
 * boundaries): the records above `to` move down to `from`. */
void ci_undo_drop(ci_undo *u, uint32_t from, uint32_t to);
/* Restore the memory of the records above `start`, newest first; pops them
 * when pop != 0.  Returns the bytes restored. */
uint32_t ci_undo_unwind(ci_undo *u, uint32_t start, int pop);
/* Pool bytes ci_undo_unwind_logged(u, start) needs above the top. */
uint32_t ci_undo_relog_cost(const ci_undo *u, uint32_t start);
/* Restore like ci_undo_unwind without popping, logging each restore first
 * (above the top), so that unwinding those new records puts back exactly
 * what was there.  Needs ci_undo_relog_cost(u, start) bytes of room. */
uint32_t ci_undo_unwind_logged(ci_undo *u, uint32_t start);

/* ---- stage.c ---- */
/* Stage chunks from e->chunk_next within the budget; OK or INTERNAL. */
ci_status ci_stage_run(ci_engine *e, ci_work *w, uint32_t budget);
/* Check every staged chunk's destination against its digest: OK or
 * STAGED_CHANGED (and the changed chunks are marked unstaged). */
ci_status ci_stage_recheck(ci_engine *e, ci_work *w);
/* Prepare per-chunk tables of a freshly validated plan. */
void ci_stage_prepare(ci_engine *e);

/* ---- context.c ---- */
#define CI_CTX_MOVED_RIP   1u
#define CI_CTX_MOVED_STACK 2u
/* Read every CPU's RIP (and RSP when max_slots > 0) into e->ctx_*, size each
 * CPU's return-address window and copy it into e->ctx_win (the one read of
 * those stack bytes).  CPU_ACCESS, STACK_ACCESS, INTERNAL or OK; writes
 * nothing outside the engine. */
ci_status ci_ctx_read(ci_engine *e, const ci_cpu_ops *cpu, uint32_t max_slots, ci_work *w);
/* Rewrite RIPs and return addresses by e->moves (values as read by
 * ci_ctx_read).  CPU_ACCESS or INTERNAL after a partial rewrite: the caller
 * puts it back with ci_ctx_restore. */
ci_status ci_ctx_move(ci_engine *e, const ci_cpu_ops *cpu, ci_work *w);
/* Put back what ci_ctx_move wrote (RIPs and stack slots as read). */
void ci_ctx_restore(ci_engine *e, const ci_cpu_ops *cpu);

/* ---- commit.c ---- */
ci_status ci_commit_run(ci_engine *e, const ci_cpu_ops *cpu, ci_work *w);

/* ---- rollback.c ---- */
ci_status ci_rollback_run(ci_engine *e, const ci_cpu_ops *cpu, uint32_t generation,
                          ci_work *w);
/* Drop the pending plan, restoring the destination bytes it staged -- only
 * where its virtual islands still walk to the same pages: after the process
 * exited or remapped them, those pages are not its own any more and the
 * records are dropped with nothing written. */
void ci_pending_abandon(ci_engine *e, ci_work *w);

/* ---- reclaim.c ---- */
ci_status ci_reclaim_run(ci_engine *e, const ci_cpu_ops *cpu, ci_work *w);
/* The last RECLAIM's answer (ci_reclaim_info + entries) into out; 0 if no room. */
uint32_t ci_reclaim_tail(const ci_engine *e, uint8_t *out, uint32_t room);

/* ---- map.c ---- */
/* Entries that hold their range: active and retired ones. */
uint32_t ci_map_live_count(const ci_engine *e);
/* Make room for n entries (drops rolled-back history first, never a
 * retired entry). 0 if full. */
int ci_map_reserve(ci_engine *e, uint32_t n);
uint32_t ci_newest_generation(const ci_engine *e);

#endif /* CI_INTERNAL_H */
