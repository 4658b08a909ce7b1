/* A stack-machine bytecode interpreter: assemble programs, run them, check the results.
 * Phases: program generation (emit), interpretation (vm_run, the hot loop), verification. */
#include "workload.h"

enum { OP_PUSH = 1, OP_ADD, OP_SUB, OP_MUL, OP_DUP, OP_SWAP, OP_DROP, OP_JNZ, OP_DEC,
       OP_LOAD, OP_STORE, OP_XOR, OP_SHR, OP_OVER, OP_HALT };

#define CODE_MAX 256
#define MEM_WORDS 64
#define STACK_WORDS 64

struct vm {
  u64 stack[STACK_WORDS];
  u64 mem[MEM_WORDS];
  u32 sp;
  u64 steps;
};

struct program {
  u64 code[CODE_MAX];
  u32 len;
};

static struct vm vms[CI_MAX_THREADS];
static struct program progs[CI_MAX_THREADS];

static CI_FUNC void emit(struct program *p, u64 op, u64 arg) {
  if (p->len + 2 > CODE_MAX)
    ci_fail(10);
  p->code[p->len++] = op;
  if (op == OP_PUSH || op == OP_JNZ || op == OP_LOAD || op == OP_STORE)
    p->code[p->len++] = arg;
}

/* mem[0] = n; loop: acc = acc * 31 + n ^ (acc >> 7); n--; until n == 0 */
static CI_FUNC void build_hash_loop(struct program *p, u64 n) {
  p->len = 0;
  emit(p, OP_PUSH, n);
  emit(p, OP_STORE, 0);
  emit(p, OP_PUSH, 17);
  emit(p, OP_STORE, 1);
  u32 loop = p->len;
  emit(p, OP_LOAD, 1);
  emit(p, OP_PUSH, 31);
  emit(p, OP_MUL, 0);
  emit(p, OP_LOAD, 0);
  emit(p, OP_ADD, 0);
  emit(p, OP_LOAD, 1);
  emit(p, OP_PUSH, 7);
  emit(p, OP_SHR, 0);
  emit(p, OP_XOR, 0);
  emit(p, OP_STORE, 1);
  emit(p, OP_LOAD, 0);
  emit(p, OP_DEC, 0);
  emit(p, OP_DUP, 0);
  emit(p, OP_STORE, 0);
  emit(p, OP_JNZ, loop);
  emit(p, OP_LOAD, 1);
  emit(p, OP_HALT, 0);
}

/* Fibonacci by iteration, n steps, on the stack only. */
static CI_FUNC void build_fib(struct program *p, u64 n) {
  p->len = 0;
  emit(p, OP_PUSH, n);
  emit(p, OP_STORE, 2);
  emit(p, OP_PUSH, 0);
  emit(p, OP_PUSH, 1);
  u32 loop = p->len;
  emit(p, OP_SWAP, 0);
  emit(p, OP_OVER, 0);
  emit(p, OP_ADD, 0);
  emit(p, OP_LOAD, 2);
  emit(p, OP_DEC, 0);
  emit(p, OP_DUP, 0);
  emit(p, OP_STORE, 2);
  emit(p, OP_JNZ, loop);
  emit(p, OP_DROP, 0);
  emit(p, OP_HALT, 0);
}

static void push(struct vm *m, u64 v) {
  if (m->sp >= STACK_WORDS)
    ci_fail(11);
  m->stack[m->sp++] = v;
}

static u64 pop(struct vm *m) {
  if (m->sp == 0)
    ci_fail(12);
  return m->stack[--m->sp];
}

/* The interpreter loop: an if-chain dispatch (no jump tables, see README). */
static CI_FUNC u64 vm_run(struct vm *m, const struct program *p) {
  u32 pc = 0;
  m->sp = 0;
  for (;;) {
    if (pc >= p->len)
      ci_fail(13);
    u64 op = p->code[pc++];
    m->steps++;
    u64 a, b;
    switch (op) {
    case OP_PUSH: push(m, p->code[pc++]); break;
    case OP_ADD: b = pop(m); a = pop(m); push(m, a + b); break;
    case OP_SUB: b = pop(m); a = pop(m); push(m, a - b); break;
    case OP_MUL: b = pop(m); a = pop(m); push(m, a * b); break;
    case OP_XOR: b = pop(m); a = pop(m); push(m, a ^ b); break;
    case OP_SHR: b = pop(m); a = pop(m); push(m, a >> (b & 63)); break;
    case OP_DUP: a = pop(m); push(m, a); push(m, a); break;
    case OP_OVER: b = pop(m); a = pop(m); push(m, a); push(m, b); push(m, a); break;
    case OP_SWAP: b = pop(m); a = pop(m); push(m, b); push(m, a); break;
    case OP_DROP: pop(m); break;
    case OP_DEC: push(m, pop(m) - 1); break;
    case OP_JNZ: a = p->code[pc++]; if (pop(m)) pc = (u32)a; break;
    case OP_LOAD: push(m, m->mem[p->code[pc++] % MEM_WORDS]); break;
    case OP_STORE: m->mem[p->code[pc++] % MEM_WORDS] = pop(m); break;
    case OP_HALT: return pop(m);
    default: ci_fail(14);
    }
  }
}

/* Native versions of the programs, to verify the interpreter. */
static CI_FUNC u64 native_hash_loop(u64 n) {
  u64 acc = 17;
  for (; n; n--)
    acc = (acc * 31 + n) ^ (acc >> 7);
  return acc;
}

static CI_FUNC u64 native_fib(u64 n) {
  u64 a = 0, b = 1;
  while (n--) {
    u64 t = a + b;
    a = b;
    b = t;
  }
  return a;
}

void workload_thread(unsigned thread, unsigned nthreads) {
  struct vm *m = &vms[thread % CI_MAX_THREADS];
  struct program *p = &progs[thread % CI_MAX_THREADS];
  u64 total = 0;
  (void)nthreads;
  ci_memset(m, 0, sizeof(*m));
  for (u32 round = 0; round < 6; round++) {
    u64 n = 3000 + thread * 101 + round * 17;
    build_hash_loop(p, n);
    u64 got = vm_run(m, p);
    if (got != native_hash_loop(n))
      ci_fail(20);
    total = total * 1099511628211ULL ^ got;
    build_fib(p, 40 + round);
    got = vm_run(m, p);
    if (got != native_fib(40 + round))
      ci_fail(21);
    total = total * 1099511628211ULL ^ got;
    ci_line("round", got);
  }
  ci_line("bytecode.steps", m->steps);
  ci_line("bytecode.checksum", total);
}
