/*
 * A test program for the native host, built as Debian builds C (PIE, -O2,
 * -fcf-protection: endbr64 at every function, -fstack-protector-strong,
 * _FORTIFY_SOURCE, relro/now): threads running a hot mix of functions with a
 * switch the compiler turns into a jump table, calls through a function-
 * pointer table and a libc callback (qsort).  Its output depends only on its
 * arguments, so a relocated run must print exactly what an unrelocated run
 * prints.
 *
 *   islands THREADS ROUNDS [read|fork|exec]
 *     read  each worker first blocks in read(2) on stdin until a line comes
 *     fork  after the rounds a child runs one more round and prints it
 *     exec  after the rounds a child execs sh to print whether LD_PRELOAD
 *           still names the agent (it must not: the child starts clean)
 *     churn while the workers run, the main thread creates and joins short-
 *           lived threads one after another (threads that appear and exit
 *           while SMIs stop the process)
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define WORDS 4096

static __attribute__((noinline)) uint64_t mix(uint64_t x, int op) {
  switch (op & 15) { /* dense cases: a jump table */
  case 0: return x * 0x9E3779B97F4A7C15ull;
  case 1: return x ^ (x >> 29);
  case 2: return x + 0x632BE59BD9B4E019ull;
  case 3: return (x << 7) | (x >> 57);
  case 4: return x * 5 + 1;
  case 5: return ~x;
  case 6: return x - (x >> 3);
  case 7: return x ^ 0xDEADBEEFull;
  case 8: return x * 3;
  case 9: return x ^ (x << 13);
  case 10: return x + (x >> 11);
  case 11: return (x >> 9) | (x << 55);
  case 12: return x * 0xBF58476D1CE4E5B9ull;
  case 13: return x ^ (x >> 31);
  case 14: return x + 12345;
  default: return x - 1;
  }
}

static __attribute__((noinline)) uint64_t fold(const uint64_t *w, size_t n, uint64_t seed) {
  uint64_t acc = seed;
  for (size_t i = 0; i < n; i++)
    acc = mix(acc ^ w[i], (int)(w[i] >> 3));
  return acc;
}

static __attribute__((noinline)) void fill(uint64_t *w, size_t n, uint64_t seed) {
  for (size_t i = 0; i < n; i++) {
    seed = mix(seed + i, (int)i);
    w[i] = seed;
  }
}

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return (x > y) - (x < y);
}

static __attribute__((noinline)) uint64_t step_sort(uint64_t *w, uint64_t seed) {
  qsort(w, 256, sizeof *w, cmp_u64); /* libc calls back into this program */
  return fold(w, 256, seed);
}

static __attribute__((noinline)) uint64_t step_fold(uint64_t *w, uint64_t seed) {
  return fold(w, WORDS, seed);
}

static __attribute__((noinline)) uint64_t step_refill(uint64_t *w, uint64_t seed) {
  fill(w, WORDS, seed);
  return seed + 1;
}

static uint64_t (*const steps[])(uint64_t *, uint64_t) = {step_fold, step_sort, step_refill};

static __attribute__((noinline)) uint64_t one_round(uint64_t *w, uint64_t seed) {
  for (int k = 0; k < 24; k++)
    seed = steps[k % 3](w, seed) ^ (uint64_t)k;
  return seed;
}

struct job {
  int id, rounds, wait_read;
  uint64_t sum;
};

static void *worker(void *arg) {
  struct job *j = arg;
  uint64_t *w = malloc(WORDS * sizeof *w);
  if (!w)
    exit(3);
  if (j->wait_read) {
    char c;
    if (read(0, &c, 1) != 1) /* blocked here while SMIs arrive */
      exit(4);
  }
  fill(w, WORDS, (uint64_t)j->id);
  uint64_t s = (uint64_t)j->id;
  for (int r = 0; r < j->rounds; r++)
    s = one_round(w, s);
  j->sum = s;
  free(w);
  return 0;
}

int main(int argc, char **argv) {
  if (argc < 3) {
    fprintf(stderr, "usage: %s THREADS ROUNDS [read|fork|exec]\n", argv[0]);
    return 2;
  }
  int threads = atoi(argv[1]), rounds = atoi(argv[2]);
  const char *mode = argc > 3 ? argv[3] : "";
  if (threads < 1 || threads > 64 || rounds < 0)
    return 2;
  pthread_t tid[64];
  struct job jobs[64];
  for (int i = 0; i < threads; i++) {
    jobs[i] = (struct job){i + 1, rounds, strcmp(mode, "read") == 0, 0};
    if (pthread_create(&tid[i], 0, worker, &jobs[i]) != 0)
      return 3;
  }
  if (strcmp(mode, "churn") == 0) {
    uint64_t total = 0;
    for (int k = 0; k < 400; k++) {
      struct job j = {1000 + k, 1, 0, 0};
      pthread_t t;
      if (pthread_create(&t, 0, worker, &j) != 0)
        return 3;
      pthread_join(t, 0);
      total ^= j.sum;
    }
    printf("churn: %016llx\n", (unsigned long long)total);
  }
  for (int i = 0; i < threads; i++) {
    pthread_join(tid[i], 0);
    printf("thread %d: %016llx\n", i + 1, (unsigned long long)jobs[i].sum);
  }
  if (strcmp(mode, "fork") == 0 || strcmp(mode, "exec") == 0) {
    fflush(stdout);
    pid_t child = fork();
    if (child == 0) {
      if (strcmp(mode, "exec") == 0) {
        execl("/bin/sh", "sh", "-c", "echo \"child LD_PRELOAD=[${LD_PRELOAD:-}]\"", (char *)0);
        _exit(5);
      }
      struct job j = {99, 1, 0, 0};
      worker(&j);
      printf("child: %016llx\n", (unsigned long long)j.sum);
      _exit(0);
    }
    int st = 0;
    waitpid(child, &st, 0);
    printf("child exit %d\n", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
  }
  return 0;
}
