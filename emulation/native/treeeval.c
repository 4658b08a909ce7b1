/*
 * Batch evaluation of a fitted gradient-boosted tree ensemble (scikit-learn's
 * HistGradientBoostingRegressor, compiled by host/codeisland/predict/fasttrees.py).
 * One decision of the closed loop predicts every island at once.  Two evaluators:
 *
 *   ci_trees_predict       walks each tree for each row over a flat node table (any tree
 *                          size; the reference the other is tested against);
 *   ci_trees_predict_bits  bit tables (trees of <= 64 leaves): no walk, see below; on the
 *                          heat model (20 trees, 10,000 rows) about 0.5 ms against the
 *                          walk's 2.4 ms (scripts/bench_predict.py).
 *
 * Numerical splits only (the model has no categorical features and no missing values):
 * x <= threshold goes left.  Indexes from the tables are checked before use, so a corrupt
 * table ends the call (-1) instead of reading out of bounds; no recursion, no allocation.
 */
#include <stddef.h>
#include <stdint.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#endif

typedef struct ci_tree_node {
  double value;       /* leaf value */
  double threshold;   /* split: x[feature] <= threshold -> left */
  uint32_t feature;
  uint32_t left;      /* absolute node indexes */
  uint32_t right;
  uint32_t is_leaf;
} ci_tree_node;

_Static_assert(sizeof(ci_tree_node) == 32, "ci_tree_node is 32 bytes (mirrored in Python)");

#define CI_TREE_MAX_DEPTH 64u

/* out[r] = baseline + sum over trees of the leaf row r reaches.  Returns 0, or -1
 * when a node index or feature is out of range (out is then incomplete). */
int ci_trees_predict(const double *x, uint32_t rows, uint32_t features, const ci_tree_node *nodes,
                     uint32_t node_count, const uint32_t *roots, uint32_t trees, double baseline,
                     double *out) {
  for (uint32_t r = 0; r < rows; r++) {
    const double *row = x + (size_t)r * features;
    double sum = baseline;
    for (uint32_t t = 0; t < trees; t++) {
      uint32_t n = roots[t];
      for (uint32_t depth = 0; depth < CI_TREE_MAX_DEPTH; depth++) {
        if (n >= node_count) return -1;
        const ci_tree_node *node = &nodes[n];
        if (node->is_leaf) {
          sum += node->value;
          break;
        }
        if (node->feature >= features) return -1;
        n = row[node->feature] <= node->threshold ? node->left : node->right;
      }
    }
    out[r] = sum;
  }
  return 0;
}

/*
 * Bit-vector evaluation (the QuickScorer idea, Lucchese et al., SIGIR 2015), with the
 * per-feature work precomputed into tables.  Leaves of each tree are numbered left to
 * right; a split node whose test fails (x > threshold: the row goes right) rules out the
 * leaves of its left subtree, and the leaf a row exits at is the leftmost one no failed
 * node ruled out.  Which nodes fail depends, per feature, only on where x falls among the
 * ensemble's sorted thresholds for that feature (its rank: how many thresholds are < x;
 * x <= t  <=>  rank(x) <= index of t).  So fasttrees.py stores, for every used feature and
 * every rank k, one leaf mask per tree: the AND of the masks of that feature's nodes with
 * index < k.  A row is then: one rank per used feature (a grid cell and two compares, no
 * search), an AND of one table row per used feature into the tree masks (16-byte vectors),
 * and one count-trailing-zeros + leaf value per tree.  No data-dependent branch on the node
 * path, no pointer chasing; the tables of the heat model (20 trees of 15 leaves) take
 * about 20 KiB.
 *
 * Exact: the leaf is the one the walk reaches, and leaf values are added in tree order
 * starting from the baseline, as sklearn does (tests compare bit for bit).  A NaN feature
 * returns -2 (the caller falls back to sklearn, whose missing-value routing this does not
 * model).
 */
#define CI_QS_MAX_VARY 64u /* used features the fast path handles */
#define CI_QS_BLOCK 16u   /* rows whose ranks are found before their masks are ANDed */
#define CI_QS_MAX_WORDS 256u /* words of leaf masks per row: 1024 trees of <= 16 leaves, 256 of more */

/* Fully unrolled small loops (the row's masks must stay in registers). */
#if defined(__clang__)
#define CI_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define CI_UNROLL _Pragma("GCC unroll 16")
#else
#define CI_UNROLL
#endif

/* One used feature of the bit tables.  Its `count` thresholds (sorted ascending, followed by
 * `probes` +inf, which are never < x) start at thresholds[thr_off].  The rank of x (how many
 * thresholds are < x, 0..count: the table row) is found without a search: a grid of `buckets`
 * equal cells, cell(x) = clamp((x - origin) * scale), is monotone in x, so every threshold in a
 * lower cell than x's is < x and every one in a higher cell is > x; only the thresholds in
 * x's own cell (at most `probes`, starting at first[bucket_off + cell]) need comparing.  The
 * grid is sized in fasttrees.py so that a cell holds at most 2 thresholds where it can (then
 * probes is 2: a probe past the cell meets a larger threshold or +inf and adds nothing). */
typedef struct ci_bits_feature {
  double origin;
  double scale;
  uint32_t feature;
  uint32_t count;
  uint32_t thr_off;
  uint32_t bucket_off;
  uint32_t buckets;
  uint32_t probes;
  uint32_t tab_row; /* first of its count + 1 table rows */
  uint32_t reserved;
} ci_bits_feature;

_Static_assert(sizeof(ci_bits_feature) == 48, "ci_bits_feature is 48 bytes (mirrored in Python)");

#define CI_QS_ROWS 32u /* rows per block: each stage loops over independent rows */

typedef uint64_t ci_u64x2 __attribute__((vector_size(16), aligned(8)));

/* clamp(c, 0, top); compiles to maxsd/minsd (a ?: on doubles may become a jump); a NaN c
 * (inf * 0) becomes 0 */
static inline double ci_clamp(double c, double top) {
#if defined(__SSE2__)
  return _mm_cvtsd_f64(_mm_min_sd(_mm_max_sd(_mm_set_sd(c), _mm_setzero_pd()), _mm_set_sd(top)));
#else
  c = c > 0.0 ? c : 0.0;
  return c < top ? c : top;
#endif
}

/* The rank of x (not NaN) among g's thresholds. */
static inline uint32_t ci_rank(const ci_bits_feature *g, const double *thr, const uint32_t *first,
                               double top, double xv) {
  uint32_t k = first[(uint32_t)ci_clamp((xv - g->origin) * g->scale, top)];
  const double *t = thr + k;
  for (uint32_t j = 0; j < g->probes; j++) k += (uint32_t)(t[j] < xv);
  return k > g->count ? g->count : k;
}

/* The common case, 16-bit masks and W 64-bit words a row (W even, known at compile time):
 * a row's masks start from `base` (the features that are the same in every row, e.g. the time
 * of day, ANDed in once per call) and stay in W/2 vector registers while the varying features
 * vary[0..n_vary) are ANDed in; rows go four at a time through the trees (four independent
 * sums, each added in tree order). */
#define CI_QS_FIXED(W)                                                                          \
  static int ci_bits16_w##W(const double *x, uint32_t rows, uint32_t features,                 \
                            const ci_bits_feature *used, const uint32_t *vary,                 \
                            uint32_t n_vary, const uint64_t *base, const double *thresholds,   \
                            const uint32_t *first, const uint64_t *table, uint32_t trees,      \
                            const double *leaf_value, double baseline, double *out) {          \
    uint32_t off[CI_QS_MAX_VARY][CI_QS_BLOCK];                                                  \
    uint64_t v[4][W];                                                                           \
    for (uint32_t r0 = 0; r0 < rows; r0 += CI_QS_BLOCK) {                                       \
      const uint32_t nr = rows - r0 < CI_QS_BLOCK ? rows - r0 : CI_QS_BLOCK;                    \
      const double *block = x + (size_t)r0 * features;                                          \
      for (uint32_t u = 0; u < n_vary; u++) { /* ranks: independent rows overlap */             \
        const ci_bits_feature *g = &used[vary[u]];                                              \
        const double *thr = thresholds + g->thr_off, origin = g->origin, scale = g->scale;      \
        const uint32_t *cell_first = first + g->bucket_off;                                     \
        const double top = (double)(g->buckets - 1);                                            \
        const uint32_t f = g->feature, row0 = g->tab_row, count = g->count;                     \
        uint32_t *o = off[u]; /* locals: stores to o[] may not alias g's fields */              \
        if (count <= 2) { /* two probes from 0 see every threshold: no grid needed */           \
          for (uint32_t r = 0; r < nr; r++) {                                                   \
            const double xv = block[(size_t)r * features + f];                                  \
            if (xv != xv) return -2;                                                            \
            o[r] = (row0 + (uint32_t)(thr[0] < xv) + (uint32_t)(thr[1] < xv)) * W;              \
          }                                                                                     \
          continue;                                                                             \
        }                                                                                       \
        for (uint32_t r = 0; r < nr; r++) {                                                     \
          const double xv = block[(size_t)r * features + f];                                    \
          if (xv != xv) return -2;                                                              \
          double c = ci_clamp((xv - origin) * scale, top);                                      \
          uint32_t k = cell_first[(uint32_t)c];                                                 \
          /* two probes (the grid holds <= 2 thresholds a cell; a probe past the cell meets a  \
           * larger threshold or the +inf padding and adds nothing) */                          \
          k += (uint32_t)(thr[k] < xv) + (uint32_t)(thr[k + 1] < xv);                           \
          o[r] = (row0 + (k > count ? count : k)) * W;                                          \
        }                                                                                       \
      }                                                                                         \
      for (uint32_t r1 = 0; r1 < nr; r1 += 4) {                                                 \
        for (uint32_t i = 0; i < 4; i++) {                                                      \
          const uint32_t r = r1 + i < nr ? r1 + i : nr - 1; /* tail: repeat the last row */    \
          ci_u64x2 acc[W / 2];                                                                  \
          CI_UNROLL for (uint32_t w = 0; w < W / 2; w++) acc[w] = (ci_u64x2){base[2 * w],       \
                                                                         base[2 * w + 1]};      \
          for (uint32_t u = 0; u < n_vary; u++) {                                               \
            const ci_u64x2 *m = (const ci_u64x2 *)(table + off[u][r]);                          \
            CI_UNROLL for (uint32_t w = 0; w < W / 2; w++) acc[w] &= m[w];                      \
          }                                                                                     \
          CI_UNROLL for (uint32_t w = 0; w < W / 2; w++) {                                      \
            v[i][2 * w] = acc[w][0];                                                            \
            v[i][2 * w + 1] = acc[w][1];                                                        \
          }                                                                                     \
        }                                                                                       \
        double s0 = baseline, s1 = baseline, s2 = baseline, s3 = baseline;                      \
        const double *lv = leaf_value;                                                          \
        for (uint32_t w = 0; w * 4 < trees; w++) { /* four trees a word: constant shifts */     \
          const uint64_t a0 = v[0][w], a1 = v[1][w], a2 = v[2][w], a3 = v[3][w];                \
          CI_UNROLL for (uint32_t j = 0; j < 4; j++) {                                          \
            if (w * 4 + j >= trees) break;                                                      \
            s0 += lv[__builtin_ctzll(((a0 >> (16 * j)) & 0xffff) | 0x8000)];                    \
            s1 += lv[__builtin_ctzll(((a1 >> (16 * j)) & 0xffff) | 0x8000)];                    \
            s2 += lv[__builtin_ctzll(((a2 >> (16 * j)) & 0xffff) | 0x8000)];                    \
            s3 += lv[__builtin_ctzll(((a3 >> (16 * j)) & 0xffff) | 0x8000)];                    \
            lv += 16;                                                                           \
          }                                                                                     \
        }                                                                                       \
        double *o = out + r0 + r1;                                                              \
        o[0] = s0;                                                                              \
        if (r1 + 1 < nr) o[1] = s1;                                                             \
        if (r1 + 2 < nr) o[2] = s2;                                                             \
        if (r1 + 3 < nr) o[3] = s3;                                                             \
      }                                                                                         \
    }                                                                                           \
    return 0;                                                                                   \
  }

CI_QS_FIXED(2)
CI_QS_FIXED(4)
CI_QS_FIXED(6)
CI_QS_FIXED(8)
CI_QS_FIXED(10)
CI_QS_FIXED(12)
CI_QS_FIXED(14)
CI_QS_FIXED(16)

/* mask_bits is 16 (four trees' masks per 64-bit word; trees of <= 16 leaves) or 64 (one tree
 * per word; <= 64 leaves).  Table rows are `words` words (trees rounded up to whole words,
 * then to an even count: 16-byte ANDs); leaf_value is trees x mask_bits (leaf values left to
 * right, zero-padded).  Rows are done in blocks: ranks of every row of the block (independent
 * rows overlap in the pipeline), masks, then tree by tree the leaf value of every row (each
 * row's sum in tree order, as sklearn adds them).  Returns 0, -1 on an inconsistent layout,
 * -2 on a NaN feature. */
int ci_trees_predict_bits(const double *x, uint32_t rows, uint32_t features,
                          const ci_bits_feature *used, uint32_t n_used, const double *thresholds,
                          uint32_t n_thresholds, const uint32_t *first, uint32_t n_first,
                          const uint64_t *table, uint32_t table_rows, uint32_t trees,
                          uint32_t mask_bits, const double *leaf_value, double baseline,
                          double *out) {
  uint64_t v[CI_QS_ROWS * CI_QS_MAX_WORDS];
  uint32_t rank[CI_QS_ROWS];
  double sum[CI_QS_ROWS];
  if (mask_bits != 16 && mask_bits != 64) return -1;
  const uint32_t per_word = 64 / mask_bits;
  const uint32_t words = ((trees + per_word - 1) / per_word + 1) & ~1u;
  if (words > CI_QS_MAX_WORDS) return -1;
  for (uint32_t u = 0; u < n_used; u++) {
    const ci_bits_feature *g = &used[u];
    if (g->feature >= features || g->buckets == 0 || g->bucket_off > n_first ||
        g->buckets > n_first - g->bucket_off || g->tab_row > table_rows ||
        g->count >= table_rows - g->tab_row || g->thr_off > n_thresholds ||
        (uint64_t)g->count + g->probes > n_thresholds - g->thr_off)
      return -1;
    for (uint32_t b = 0; b < g->buckets; b++)
      if (first[g->bucket_off + b] > g->count) return -1;
  }
  /* the fast path always makes two probes: each feature needs <= 2 and two +inf after its
   * thresholds (checked above: count + probes fit) */
  uint32_t two_probes = 1;
  for (uint32_t u = 0; u < n_used && two_probes; u++) {
    const ci_bits_feature *g = &used[u];
    two_probes = g->probes == 2 && thresholds[g->thr_off + g->count] == __builtin_inf() &&
                 thresholds[g->thr_off + g->count + 1] == __builtin_inf();
  }
  if (mask_bits == 16 && rows > 0 && n_used <= CI_QS_MAX_VARY && two_probes &&
      (uint64_t)table_rows * words <= UINT32_MAX) {
    uint32_t vary[CI_QS_MAX_VARY], n_vary = 0;
    uint64_t base[CI_QS_MAX_WORDS];
    for (uint32_t w = 0; w < words; w++) base[w] = ~0ull;
    for (uint32_t u = 0; u < n_used; u++) {
      const ci_bits_feature *g = &used[u];
      /* the same bits in every row (one compare a row; -0.0 vs 0.0 just counts as varying) */
      const double x0 = x[g->feature];
      uint64_t b0, b;
      __builtin_memcpy(&b0, &x0, sizeof b0);
      uint32_t r = 1;
      for (; r < rows; r++) {
        __builtin_memcpy(&b, &x[(size_t)r * features + g->feature], sizeof b);
        if (b != b0) break;
      }
      if (r < rows || x0 != x0) {
        vary[n_vary++] = u;
        continue;
      }
      const uint32_t k = ci_rank(g, thresholds + g->thr_off, first + g->bucket_off,
                                 (double)(g->buckets - 1), x0);
      const uint64_t *m = table + (size_t)(g->tab_row + k) * words;
      for (uint32_t w = 0; w < words; w++) base[w] &= m[w];
    }
    switch (words) {
#define CI_QS_CASE(W)                                                                       \
  case W:                                                                                   \
    return ci_bits16_w##W(x, rows, features, used, vary, n_vary, base, thresholds, first, \
                          table, trees, leaf_value, baseline, out);
      CI_QS_CASE(2)
      CI_QS_CASE(4)
      CI_QS_CASE(6)
      CI_QS_CASE(8)
      CI_QS_CASE(10)
      CI_QS_CASE(12)
      CI_QS_CASE(14)
      CI_QS_CASE(16)
#undef CI_QS_CASE
      default:
        break;
    }
  }
  /* the highest leaf bit is never ruled out in a valid table; or-ing it in bounds the leaf
   * index of a corrupt one */
  const uint64_t last = 1ull << (mask_bits - 1);
  const uint64_t low = mask_bits == 64 ? ~0ull : (1ull << mask_bits) - 1;
  for (uint32_t r0 = 0; r0 < rows; r0 += CI_QS_ROWS) {
    const uint32_t nr = rows - r0 < CI_QS_ROWS ? rows - r0 : CI_QS_ROWS;
    const double *block = x + (size_t)r0 * features;
    for (uint32_t i = 0; i < nr * words; i++) v[i] = ~0ull;
    for (uint32_t u = 0; u < n_used; u++) {
      const ci_bits_feature *g = &used[u];
      const double *thr = thresholds + g->thr_off;
      const uint32_t *cell_first = first + g->bucket_off;
      const double top = (double)(g->buckets - 1);
      for (uint32_t r = 0; r < nr; r++) {
        const double xv = block[(size_t)r * features + g->feature];
        if (xv != xv) return -2;
        rank[r] = ci_rank(g, thr, cell_first, top, xv);
      }
      const uint64_t *tab = table + (size_t)g->tab_row * words;
      for (uint32_t r = 0; r < nr; r++) {
        const ci_u64x2 *m = (const ci_u64x2 *)(tab + (size_t)rank[r] * words);
        ci_u64x2 *d = (ci_u64x2 *)(v + (size_t)r * words);
        for (uint32_t w = 0; w < words / 2; w++) d[w] &= m[w];
      }
    }
    for (uint32_t r = 0; r < nr; r++) sum[r] = baseline;
    const double *lv = leaf_value;
    for (uint32_t t = 0; t < trees; t++, lv += mask_bits) {
      const uint64_t *vt = v + t / per_word;
      const uint32_t shift = (t % per_word) * mask_bits;
      for (uint32_t r = 0; r < nr; r++) {
        uint64_t bits = (vt[(size_t)r * words] >> shift) & low;
        sum[r] += lv[__builtin_ctzll(bits | last)];
      }
    }
    for (uint32_t r = 0; r < nr; r++) out[r0 + r] = sum[r];
  }
  return 0;
}
