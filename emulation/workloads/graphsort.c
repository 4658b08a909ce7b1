/* Sort and graph kernels: generate data, sort it three ways (insertion for small runs,
 * heap sort, bottom-up merge sort), then breadth-first search and connected components on a
 * generated sparse graph.  Each phase prints a checksum. */
#include "workload.h"

#define N 4096
#define NODES 2048
#define DEG 3

struct gs_state {
  u32 data[N];
  u32 copy[N];
  u32 tmp[N];
  u32 adj[NODES * DEG];
  u32 dist[NODES];
  u32 queue[NODES];
  u32 comp[NODES];
};

static struct gs_state states[CI_MAX_THREADS];

static CI_FUNC void gen_data(u32 *d, u64 seed) {
  u64 rng = seed;
  for (u32 i = 0; i < N; i++)
    d[i] = (u32)(ci_rand(&rng) >> 33);
}

static CI_FUNC void sift_down(u32 *a, u32 start, u32 end) {
  u32 root = start;
  while (2 * root + 1 < end) {
    u32 child = 2 * root + 1;
    if (child + 1 < end && a[child] < a[child + 1])
      child++;
    if (a[root] >= a[child])
      return;
    u32 t = a[root];
    a[root] = a[child];
    a[child] = t;
    root = child;
  }
}

static CI_FUNC void heap_sort(u32 *a, u32 n) {
  for (u32 i = n / 2; i-- > 0;)
    sift_down(a, i, n);
  for (u32 end = n; end-- > 1;) {
    u32 t = a[0];
    a[0] = a[end];
    a[end] = t;
    sift_down(a, 0, end);
  }
}

static CI_FUNC void insertion_runs(u32 *a, u32 n, u32 run) {
  for (u32 base = 0; base < n; base += run) {
    u32 lim = base + run < n ? base + run : n;
    for (u32 i = base + 1; i < lim; i++) {
      u32 v = a[i], j = i;
      while (j > base && a[j - 1] > v) {
        a[j] = a[j - 1];
        j--;
      }
      a[j] = v;
    }
  }
}

static CI_FUNC void merge_sort(u32 *a, u32 *tmp, u32 n) {
  insertion_runs(a, n, 16);
  for (u32 width = 16; width < n; width *= 2) {
    for (u32 lo = 0; lo < n; lo += 2 * width) {
      u32 mid = lo + width < n ? lo + width : n;
      u32 hi = lo + 2 * width < n ? lo + 2 * width : n;
      u32 i = lo, j = mid, k = lo;
      while (i < mid && j < hi)
        tmp[k++] = a[i] <= a[j] ? a[i++] : a[j++];
      while (i < mid)
        tmp[k++] = a[i++];
      while (j < hi)
        tmp[k++] = a[j++];
    }
    ci_memcpy(a, tmp, n * sizeof(u32));
  }
}

static CI_FUNC u64 checksum_sorted(const u32 *a, u32 n) {
  u64 h = 0;
  for (u32 i = 0; i < n; i++) {
    if (i && a[i - 1] > a[i])
      ci_fail(40);
    h = h * 1000003 + a[i];
  }
  return h;
}

static CI_FUNC void gen_graph(struct gs_state *s, u64 seed) {
  u64 rng = seed;
  for (u32 v = 0; v < NODES; v++)
    for (u32 k = 0; k < DEG; k++)
      s->adj[v * DEG + k] = k == 0 ? (v + 1) % NODES * ((ci_rand(&rng) & 7) != 0)
                                   : (u32)(ci_rand(&rng) >> 40) % NODES;
}

static CI_FUNC u64 bfs(struct gs_state *s, u32 src) {
  for (u32 v = 0; v < NODES; v++)
    s->dist[v] = 0xFFFFFFFFu;
  u32 head = 0, tail = 0;
  s->dist[src] = 0;
  s->queue[tail++] = src;
  u64 sum = 0;
  while (head < tail) {
    u32 v = s->queue[head++];
    sum += s->dist[v] * (u64)(v + 1);
    for (u32 k = 0; k < DEG; k++) {
      u32 w = s->adj[v * DEG + k];
      if (s->dist[w] == 0xFFFFFFFFu) {
        s->dist[w] = s->dist[v] + 1;
        s->queue[tail++] = w;
      }
    }
  }
  return sum ^ (u64)tail << 32;
}

/* Components of the undirected version, by label propagation until stable. */
static CI_FUNC u32 components(struct gs_state *s) {
  for (u32 v = 0; v < NODES; v++)
    s->comp[v] = v;
  int changed = 1;
  while (changed) {
    changed = 0;
    for (u32 v = 0; v < NODES; v++)
      for (u32 k = 0; k < DEG; k++) {
        u32 w = s->adj[v * DEG + k];
        u32 m = s->comp[v] < s->comp[w] ? s->comp[v] : s->comp[w];
        if (s->comp[v] != m || s->comp[w] != m) {
          s->comp[v] = s->comp[w] = m;
          changed = 1;
        }
      }
  }
  u32 count = 0;
  for (u32 v = 0; v < NODES; v++)
    count += s->comp[v] == v;
  return count;
}

void workload_thread(unsigned thread, unsigned nthreads) {
  struct gs_state *s = &states[thread % CI_MAX_THREADS];
  u64 seed = 0xD1B54A32D192ED03ULL * (thread + 3);
  (void)nthreads;
  gen_data(s->data, seed);
  ci_memcpy(s->copy, s->data, sizeof(s->data));
  heap_sort(s->data, N);
  u64 h1 = checksum_sorted(s->data, N);
  merge_sort(s->copy, s->tmp, N);
  u64 h2 = checksum_sorted(s->copy, N);
  if (h1 != h2)
    ci_fail(41);
  ci_line("sort.checksum", h1);
  gen_graph(s, seed ^ 0x5555);
  u64 b = 0;
  for (u32 src = 0; src < 4; src++)
    b = b * 17 + bfs(s, src * 97 % NODES);
  ci_line("graph.bfs", b);
  ci_line("graph.components", components(s));
}
