/*
 * Batch evaluation of a fitted gradient-boosted tree ensemble (scikit-learn's
 * HistGradientBoostingRegressor, flattened by host/codeisland/predict/fasttrees.py).
 * One decision of the closed loop predicts every island at once; doing the tree
 * walks here instead of through sklearn's per-call machinery keeps a decision
 * over thousands of islands well under a millisecond.  Numerical splits only
 * (the model has no categorical features and no missing values): x <= threshold
 * goes left.  Node indexes are checked against the node count, so a corrupt
 * table ends a walk instead of reading out of bounds; no recursion.
 */
#include <stddef.h>
#include <stdint.h>

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
