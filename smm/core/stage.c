/*
 * Differential stage: bring each destination chunk to "source bytes with the
 * fix-ups applied", writing only chunks that differ.
 *
 * Deciding "already identical" needs no digest: the destination is compared
 * with the source, segment by segment between fix-up fields, and each field
 * with the value it must hold; the compare exits at the first difference, so a
 * fresh destination costs almost nothing and an identical chunk is found
 * without writing.  The plan's chunk digests are checked by COMMIT on the
 * destination, after the copy: the source is read once, into the
 * destination, and what is checked is that copy -- guest code (between SMIs)
 * or a DMA (during one) may have written the source or the destination since
 * the validator looked at them.
 */
#include "ci_host.h"
#include "internal.h"
#include "mem.h"

static uint32_t fixup_width(uint8_t kind) { return kind == CI_FIXUP_ABS64 ? 8u : 4u; }

/* The little-endian bytes the copy's field must hold; returns the width.
 * The validator proved that 32-bit values fit. */
static uint32_t fixup_value(const ci_island *isl, const ci_fixup *f, uint8_t out[8]) {
  if (f->kind == CI_FIXUP_ABS64) {
    ci_put64(out, f->target - isl->src + isl->dst);
    return 8;
  }
  ci_put32(out, (uint32_t)(f->target - (isl->dst + f->offset + f->pc_bias)));
  return 4;
}

void ci_stage_prepare(ci_engine *e) {
  const ci_plan_view *v = &e->plan;
  uint32_t k = 0, nf = v->header->fixup_count;
  for (uint32_t c = 0; c < v->header->chunk_count; c++) {
    const ci_chunk *ch = &v->chunks[c];
    /* First fix-up of the chunk's island whose field ends after the chunk's
     * start (fix-ups are sorted and disjoint, so their ends are sorted):
     * "before the chunk" holds for a prefix of [k, nf), found by bisection
     * (chunks ascend, so the search starts at the previous answer). */
    uint32_t hi = nf;
    while (k < hi) {
      uint32_t mid = k + (hi - k) / 2u;
      const ci_fixup *f = &v->fixups[mid];
      if (f->island < ch->island ||
          (f->island == ch->island && f->offset + fixup_width(f->kind) <= ch->offset))
        k = mid + 1u;
      else
        hi = mid;
    }
    e->chunk_fixup[c] = k;
    /* The run chunk_fixups stores without bounds tests: fix-ups of the
     * chunk's island starting in [c0, c1 - 8] (a prefix of what follows the
     * one that may straddle in from the previous chunk), also by bisection. */
    uint32_t first = k + (k < nf && v->fixups[k].island == ch->island &&
                          v->fixups[k].offset < ch->offset);
    uint32_t end = first;
    hi = ch->length >= 8u ? nf : first;
    while (end < hi) {
      uint32_t mid = end + (hi - end) / 2u;
      const ci_fixup *f = &v->fixups[mid];
      if (f->island == ch->island && f->offset <= ch->offset + ch->length - 8u)
        end = mid + 1u;
      else
        hi = mid;
    }
    e->chunk_fast[c] = (uint16_t)(end - first); /* at most 4096 / 4 */
    e->chunk_smi[c] = 0;
  }
  for (uint32_t i = 0; i < CI_MAX_ISLANDS; i++)
    e->return_slots[i] = 0;
  for (uint32_t r = 0; r < v->header->rule_count; r++) {
    const ci_rule *rule = &v->rules[r];
    if ((rule->flags & CI_RULE_TRANSLATE_RETURN) && rule->stack_slots > e->return_slots[rule->island])
      e->return_slots[rule->island] = (uint16_t)rule->stack_slots;
  }
  e->chunk_next = 0;
  e->chunks_done = 0;
}

/* 1 if the part of a fix-up field [off, off+w) that lies inside the chunk
 * [c0, c1) (d maps the chunk) holds the matching bytes of val: a field can
 * straddle two chunks. */
static int field_equal(const uint8_t *d, uint32_t c0, uint32_t c1, uint32_t off,
                       const uint8_t *val, uint32_t w) {
  for (uint32_t b = 0; b < w; b++)
    if (off + b >= c0 && off + b < c1 && d[off + b - c0] != val[b])
      return 0;
  return 1;
}

/* 1 if dst already holds the chunk's final bytes: the source between fix-up
 * fields, and each field's new value.  Exits at the first difference. */
static int chunk_matches(const ci_engine *e, uint32_t c, const uint8_t *s, const uint8_t *d) {
  const ci_plan_view *v = &e->plan;
  const ci_chunk *ch = &v->chunks[c];
  const ci_island *isl = &v->islands[ch->island];
  uint32_t c0 = ch->offset, c1 = ch->offset + ch->length, pos = c0;
  for (uint32_t k = e->chunk_fixup[c]; k < v->header->fixup_count; k++) {
    const ci_fixup *f = &v->fixups[k];
    uint8_t val[8];
    if (f->island != ch->island || f->offset >= c1)
      break;
    uint32_t w = fixup_value(isl, f, val);
    if (f->offset > pos && !ci_equal(d + (pos - c0), s + (pos - c0), f->offset - pos))
      return 0;
    if (f->offset >= c0 && f->offset + w <= c1) { /* wholly inside: one compare */
      const uint8_t *p = d + (f->offset - c0);
      if (w == 8 ? ci_le64(p) != ci_le64(val) : ci_le32(p) != ci_le32(val))
        return 0;
    } else if (!field_equal(d, c0, c1, f->offset, val, w)) {
      return 0;
    }
    pos = f->offset + w > c1 ? c1 : f->offset + w;
  }
  return ci_equal(d + (pos - c0), s + (pos - c0), c1 - pos);
}

/* Write the part of fix-up f's field that lies inside the chunk [c0, c1)
 * (d maps the chunk); 1 if the field starts inside it. */
static uint32_t fixup_store(const ci_island *isl, const ci_fixup *f, uint32_t c0, uint32_t c1,
                            uint8_t *d) {
  uint8_t val[8];
  uint32_t w = fixup_value(isl, f, val);
  if (f->offset >= c0 && f->offset + w <= c1) { /* wholly inside: store directly */
    uint8_t *p = d + (f->offset - c0);
    if (w == 8)
      ci_put64(p, ci_le64(val));
    else
      ci_put32(p, ci_le32(val));
    return 1;
  }
  for (uint32_t b = 0; b < w; b++) /* straddles a chunk boundary: the part inside */
    if (f->offset + b >= c0 && f->offset + b < c1)
      d[f->offset + b - c0] = val[b];
  return f->offset >= c0;
}

/* Overwrite the fix-up fields of a copied chunk; returns fix-ups started
 * inside this chunk (each counted once even if it straddles two).  The run
 * that ci_stage_prepare found wholly inside (nearly all) is stored with the
 * island's fields hoisted and no bounds tests; a field straddling in from
 * the previous chunk and the last ones go through fixup_store. */
static uint32_t chunk_fixups(const ci_engine *e, uint32_t c, uint8_t *d) {
  const ci_plan_view *v = &e->plan;
  const ci_chunk *ch = &v->chunks[c];
  const ci_island *isl = &v->islands[ch->island];
  const ci_fixup *fx = v->fixups;
  uint32_t c0 = ch->offset, c1 = ch->offset + ch->length, started = 0;
  uint32_t n = v->header->fixup_count, k = e->chunk_fixup[c];
  if (k < n && fx[k].island == ch->island && fx[k].offset < c0)
    started += fixup_store(isl, &fx[k++], c0, c1, d);
  const uint32_t end = k + e->chunk_fast[c];
  const uint64_t idst = isl->dst, abs_delta = isl->dst - isl->src;
  uint8_t *dc = d - c0; /* dc + offset: the field, for offset >= c0 */
  started += end - k;
  if (v->rel32_only) { /* the common plan: no kind test per field */
    for (; k < end; k++) {
      const ci_fixup *f = &fx[k];
      ci_put32(dc + f->offset, (uint32_t)(f->target - (idst + f->offset + f->pc_bias)));
    }
  }
  for (; k < end; k++) {
    const ci_fixup *f = &fx[k];
    uint32_t off = f->offset;
    if (f->kind == CI_FIXUP_ABS64)
      ci_put64(dc + off, f->target + abs_delta);
    else
      ci_put32(dc + off, (uint32_t)(f->target - (idst + off + f->pc_bias)));
  }
  for (; k < n && fx[k].island == ch->island && fx[k].offset < c1; k++)
    started += fixup_store(isl, &fx[k], c0, c1, d);
  return started;
}

ci_status ci_stage_run(ci_engine *e, ci_work *w, uint32_t budget) {
  const ci_plan_view *v = &e->plan;
  uint32_t used = 0, n = v->header->chunk_count;
  for (; e->chunk_next < n; e->chunk_next++) {
    uint32_t c = e->chunk_next;
    const ci_chunk *ch = &v->chunks[c];
    if (e->chunk_smi[c])
      continue; /* staged earlier and not found changed */
    if (ch->length > budget - used)
      break;
    /* memory through the validated physical ranges (contiguous per island) */
    const uint64_t dst_pa = v->phys->dst[ch->island] + ch->offset;
    const uint8_t *s = ci_host_map(v->phys->src[ch->island] + ch->offset, ch->length);
    uint8_t *d = ci_host_map(dst_pa, ch->length);
    if (!s || !d)
      return CI_ST_INTERNAL;
    used += ch->length;
    if (chunk_matches(e, c, s, d)) {
      w->bytes_skipped += ch->length;
    } else {
      if (!ci_undo_copy(&e->undo, dst_pa, d, s, ch->length))
        return CI_ST_UNDO_FULL;
      w->fixups_applied += chunk_fixups(e, c, d);
      w->bytes_written += ch->length;
    }
    e->chunk_smi[c] = e->epoch;
    e->chunks_done++;
  }
  return CI_ST_OK;
}

ci_status ci_stage_recheck(ci_engine *e, ci_work *w) {
  const ci_plan_view *v = &e->plan;
  uint32_t first_changed = CI_NO_INDEX;
  for (uint32_t c = 0; c < v->header->chunk_count; c++) {
    if (!e->chunk_smi[c])
      continue;
    const ci_chunk *ch = &v->chunks[c];
    const uint8_t *d = ci_host_map(v->phys->dst[ch->island] + ch->offset, ch->length);
    if (!d)
      return CI_ST_INTERNAL;
    if (ci_digest(d, ch->length) != ch->digest) {
      e->chunk_smi[c] = 0;
      e->chunks_done--;
      if (first_changed == CI_NO_INDEX) {
        first_changed = c;
        w->failed_index = c;
      }
    }
  }
  if (first_changed == CI_NO_INDEX)
    return CI_ST_OK;
  e->chunk_next = first_changed;
  return CI_ST_STAGED_CHANGED;
}
