/*
 * The SMI of the native host: signals, the rendezvous of every thread, the
 * engine run over their ucontexts, and SIGPROF samples.
 *
 *   host: write request, bump sequence, kill(pid, SIG_SMI)
 *     |
 *   thread T takes SIG_SMI (any thread; the "BSP")
 *     |  list /proc/self/task; tgkill(SIG_RENDEZVOUS) every other thread;
 *     |  wait (futex) until each has stored its ucontext or is gone;
 *     |  list again until no new thread appears (one created meanwhile is
 *     |  stopped too: its creator was running until it stopped)
 *     |  ci_dispatch over [T, the others] (text writable for COMMIT and
 *     |  ROLLBACK only); answer in the mailbox; done_sequence last
 *     v
 *   release: every handler returns; sigreturn reloads the (maybe rewritten)
 *   RIP -- the RSM
 *
 * Everything here runs in signal handlers: only system calls (raw), atomics
 * and the freestanding engine; errno is saved and restored.  Handlers run
 * with SA_RESTART, so a read() or futex wait the signal interrupted restarts
 * where the kernel allows it; the waits that never restart (nanosleep, poll,
 * select, epoll_wait, ...) run with the agent's signals blocked (waits.c).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/futex.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include "agent.h"
#include "mem.h"

#define GATHER_TIMEOUT_NS 2000000000ll /* a thread that never arrives: refuse */
#define POLL_NS 2000000l

static struct {
  uint32_t phase;   /* rendezvous number; odd while one gathers */
  uint32_t arrived; /* futex: bumped by every arrival */
  uint32_t release; /* futex: == phase when the threads may leave */
  uint32_t count;   /* threads listed (tids[0] is the BSP) */
  int tids[CI_AGENT_MAX_THREADS];
  ucontext_t *ctx[CI_AGENT_MAX_THREADS];
  uint8_t gone[CI_AGENT_MAX_THREADS];
} rv;

/* The engine runs once at a time: the BSP, or one thread's SIGPROF sample. */
static int engine_busy;
static uint32_t smi_count;
static uint32_t samples_dropped;

static long sys_futex(uint32_t *addr, int op, uint32_t val, const struct timespec *ts) {
  return syscall(SYS_futex, addr, op, val, ts, 0, 0);
}
static int gettid_raw(void) { return (int)syscall(SYS_gettid); }
static int tgkill_raw(int tid, int sig) {
  return (int)syscall(SYS_tgkill, ci_agent_state.pid, tid, sig);
}
static int64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (int64_t)t.tv_sec * 1000000000ll + t.tv_nsec;
}
static void engine_lock(void) {
  while (__atomic_exchange_n(&engine_busy, 1, __ATOMIC_ACQUIRE))
    __builtin_ia32_pause();
}
static int engine_trylock(void) { return !__atomic_exchange_n(&engine_busy, 1, __ATOMIC_ACQUIRE); }
static void engine_unlock(void) { __atomic_store_n(&engine_busy, 0, __ATOMIC_RELEASE); }

/* ---- the save state: ucontext ------------------------------------------- */

typedef struct contexts {
  ucontext_t *uc[CI_AGENT_MAX_THREADS];
} contexts;

static int ctx_read(void *ctx, uint32_t cpu, uint32_t reg, uint64_t *value) {
  mcontext_t *m = &((contexts *)ctx)->uc[cpu]->uc_mcontext;
  switch (reg) {
  case CI_REG_RIP:
    *value = (uint64_t)m->gregs[REG_RIP];
    return 0;
  case CI_REG_RSP:
    *value = (uint64_t)m->gregs[REG_RSP];
    return 0;
  case CI_REG_CS: /* low 16 bits of CSGSFS: CS; its RPL is 3 in user mode */
    *value = (uint64_t)m->gregs[REG_CSGSFS] & 0xFFFFu;
    return 0;
  case CI_REG_CR3: /* one address space: the process's (plans are PHYSICAL) */
    *value = 0;
    return 0;
  default:
    return 1;
  }
}

static int ctx_write(void *ctx, uint32_t cpu, uint32_t reg, uint64_t value) {
  if (reg != CI_REG_RIP)
    return 1; /* the engine writes RIPs only; anything else is refused */
  ((contexts *)ctx)->uc[cpu]->uc_mcontext.gregs[REG_RIP] = (greg_t)value;
  return 0;
}

int ci_agent_text_writable(int writable) {
  ci_agent *a = &ci_agent_state;
  int prot = PROT_READ | PROT_EXEC | (writable ? PROT_WRITE : 0);
  int rc = 0;
  for (uint32_t k = 0; k < a->text_count; k++)
    rc |= mprotect((void *)(uintptr_t)a->text_lo[k], a->text_hi[k] - a->text_lo[k], prot);
  return rc ? -1 : 0;
}

/* ---- the rendezvous ------------------------------------------------------ */

static int listed(int tid) {
  for (uint32_t k = 0; k < rv.count; k++)
    if (rv.tids[k] == tid)
      return 1;
  return 0;
}

/* Signal every thread of /proc/self/task not listed yet.  Returns how many
 * were added, or -1 (cannot list, or more than CI_AGENT_MAX_THREADS). */
static int signal_new_threads(void) {
  char buf[4096];
  int added = 0;
  int fd = open("/proc/self/task", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return -1;
  for (;;) {
    long n = syscall(SYS_getdents64, fd, buf, sizeof buf);
    if (n <= 0) {
      close(fd);
      return n < 0 ? -1 : added;
    }
    for (long off = 0; off < n;) {
      /* struct linux_dirent64: u64 ino, s64 off, u16 reclen, u8 type, name */
      unsigned short reclen = *(unsigned short *)(buf + off + 16);
      const char *name = buf + off + 19;
      off += reclen;
      int tid = 0;
      for (const char *c = name; *c; c++)
        tid = *c >= '0' && *c <= '9' ? tid * 10 + (*c - '0') : -1;
      if (tid <= 0 || listed(tid))
        continue;
      if (rv.count >= CI_AGENT_MAX_THREADS) {
        close(fd);
        return -1;
      }
      uint32_t k = rv.count;
      rv.tids[k] = tid;
      rv.ctx[k] = 0;
      rv.gone[k] = 0;
      __atomic_store_n(&rv.count, k + 1, __ATOMIC_RELEASE);
      if (tgkill_raw(tid, ci_agent_state.sig_rendezvous) != 0)
        rv.gone[k] = 1; /* exited between the listing and the signal */
      added++;
    }
  }
}

/* 1 once every listed thread has arrived or exited; 0 on timeout. */
static int wait_arrivals(int64_t deadline) {
  for (;;) {
    uint32_t seen = __atomic_load_n(&rv.arrived, __ATOMIC_ACQUIRE);
    int missing = 0;
    for (uint32_t k = 1; k < rv.count; k++) {
      if (rv.gone[k] || __atomic_load_n(&rv.ctx[k], __ATOMIC_ACQUIRE))
        continue;
      /* in a wait with our signals blocked (waits.c): it runs no program code until it takes
       * the rendezvous signal on its way out, so it is stopped as far as the engine cares;
       * its RIP is in libc or the kernel, nothing to translate */
      if (ci_agent_waiting(rv.tids[k]))
        continue;
      if (tgkill_raw(rv.tids[k], 0) != 0) /* ESRCH: it exited with the signal pending */
        rv.gone[k] = 1;
      else
        missing++;
    }
    if (!missing)
      return 1;
    if (now_ns() > deadline)
      return 0;
    struct timespec ts = {0, POLL_NS};
    sys_futex(&rv.arrived, FUTEX_WAIT_PRIVATE, seen, &ts);
  }
}

/* Stop every thread.  Returns 1 when all are in their handlers. */
static int gather(ucontext_t *self) {
  rv.count = 1;
  rv.tids[0] = gettid_raw();
  rv.ctx[0] = self;
  rv.gone[0] = 0;
  __atomic_store_n(&rv.arrived, 0, __ATOMIC_RELAXED);
  __atomic_add_fetch(&rv.phase, 1, __ATOMIC_ACQ_REL); /* odd: gathering */
  int64_t deadline = now_ns() + GATHER_TIMEOUT_NS;
  for (;;) {
    int added = signal_new_threads();
    if (added < 0 || !wait_arrivals(deadline))
      return 0;
    if (added == 0)
      return 1; /* a listing that found nobody new, with everyone stopped */
  }
}

static void release(void) {
  uint32_t phase = __atomic_add_fetch(&rv.phase, 1, __ATOMIC_ACQ_REL); /* even: idle */
  __atomic_store_n(&rv.release, phase, __ATOMIC_RELEASE);
  sys_futex(&rv.release, FUTEX_WAKE_PRIVATE, INT_MAX, 0);
}

/* ---- one SMI ------------------------------------------------------------- */

static void answer(volatile ci_mailbox *mb, uint32_t seq, uint32_t status, uint32_t size) {
  mb->status = status;
  mb->response_size = size;
  mb->smi_count = smi_count;
  mb->sample_head = ci_agent_state.ring.head;
  __atomic_thread_fence(__ATOMIC_RELEASE);
  mb->done_sequence = seq;
}

/* A request refused before the engine ran (the threads could not all be
 * stopped): a result that says so, nothing written. */
static void refuse(volatile ci_mailbox *mb, uint32_t seq, uint32_t command, uint32_t threads) {
  ci_result r;
  ci_fill(&r, 0, sizeof r);
  r.command = command;
  r.status = CI_ST_CPU_ACCESS;
  r.smi = smi_count;
  r.cpus = threads;
  r.failed_index = CI_NO_INDEX;
  ci_copy((uint8_t *)ci_agent_state.mailbox + mb->response_offset, &r, sizeof r);
  answer(mb, seq, r.status, sizeof r);
}

static void serve(uint32_t seq, int stopped) {
  ci_agent *a = &ci_agent_state;
  volatile ci_mailbox *mb = a->mailbox;
  uint32_t command = mb->command, size = mb->request_size, budget = mb->stage_budget;
  smi_count++;
  if (!stopped) {
    refuse(mb, seq, command, rv.count);
    return;
  }
  static contexts cs; /* the BSP's, under the engine lock */
  uint32_t n = 0;
  for (uint32_t k = 0; k < rv.count; k++)
    if (!rv.gone[k] && rv.ctx[k])
      cs.uc[n++] = rv.ctx[k];
  ci_cpu_ops ops = {&cs, n, ctx_read, ctx_write};
  if (size <= CI_PLAN_MAX_SIZE)
    ci_copy(ci_engine_request_buffer(&a->engine), (uint8_t *)a->mailbox + mb->request_offset,
            size);
  int writes = command == CI_CMD_COMMIT || command == CI_CMD_ROLLBACK;
  if (writes && ci_agent_text_writable(1) != 0) {
    (void)ci_agent_text_writable(0);
    refuse(mb, seq, command, n);
    return;
  }
  uint32_t resp_size = 0;
  ci_status st = ci_dispatch(&a->engine, &ops, &a->ring, command, size, budget, smi_count,
                             (uint8_t *)a->mailbox + mb->response_offset, mb->response_max,
                             &resp_size);
  if (writes)
    (void)ci_agent_text_writable(0);
  answer(mb, seq, st, resp_size);
}

static void on_smi(int sig, siginfo_t *info, void *uc) {
  (void)sig;
  int saved = errno;
  ci_agent *a = &ci_agent_state;
  volatile ci_mailbox *mb = a->mailbox;
  /* only a request sent with kill() to this process, and one not answered */
  if (a->active && getpid() == a->pid && (info->si_code == SI_USER || info->si_code == SI_QUEUE) &&
      mb->sequence != mb->done_sequence) {
    uint32_t seq = mb->sequence;
    int stopped = gather((ucontext_t *)uc);
    engine_lock();
    serve(seq, stopped);
    engine_unlock();
    release();
  }
  errno = saved;
}

static void on_rendezvous(int sig, siginfo_t *info, void *uc) {
  (void)sig, (void)info;
  int saved = errno;
  uint32_t phase = __atomic_load_n(&rv.phase, __ATOMIC_ACQUIRE);
  int me = gettid_raw();
  uint32_t count = __atomic_load_n(&rv.count, __ATOMIC_ACQUIRE);
  if (phase & 1u) { /* a rendezvous gathers: join it if it listed us */
    for (uint32_t k = 1; k < count; k++) {
      if (rv.tids[k] != me)
        continue;
      __atomic_store_n(&rv.ctx[k], (ucontext_t *)uc, __ATOMIC_RELEASE);
      __atomic_add_fetch(&rv.arrived, 1, __ATOMIC_ACQ_REL);
      sys_futex(&rv.arrived, FUTEX_WAKE_PRIVATE, 1, 0);
      while (__atomic_load_n(&rv.release, __ATOMIC_ACQUIRE) != phase + 1u)
        sys_futex(&rv.release, FUTEX_WAIT_PRIVATE,
                  __atomic_load_n(&rv.release, __ATOMIC_RELAXED), 0);
      break;
    }
  }
  errno = saved; /* sigreturn: the RSM */
}

static void on_sample(int sig, siginfo_t *info, void *uc) {
  (void)sig, (void)info;
  int saved = errno;
  ci_agent *a = &ci_agent_state;
  if (a->active && getpid() == a->pid) {
    if (engine_trylock()) {
      static contexts sampled; /* under the engine lock */
      sampled.uc[0] = (ucontext_t *)uc;
      uint32_t resp_size = 0;
      ci_cpu_ops ops = {&sampled, 1, ctx_read, ctx_write};
      (void)ci_dispatch(&a->engine, &ops, &a->ring, CI_CMD_SAMPLE, 0, 0, ++smi_count,
                        a->response_scratch, CI_RESPONSE_MAX, &resp_size);
      a->mailbox->sample_head = a->ring.head;
      a->mailbox->smi_count = smi_count;
      engine_unlock();
    } else {
      samples_dropped++;
    }
  }
  errno = saved;
}

static int install(int sig, void (*fn)(int, siginfo_t *, void *)) {
  struct sigaction sa;
  ci_fill(&sa, 0, sizeof sa);
  sa.sa_sigaction = fn;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  /* none of ours nests in another: a thread stopped in the rendezvous takes
   * no sample, a sampled thread joins the rendezvous after its sample */
  sigemptyset(&sa.sa_mask);
  sigaddset(&sa.sa_mask, ci_agent_state.sig_smi);
  sigaddset(&sa.sa_mask, ci_agent_state.sig_rendezvous);
  sigaddset(&sa.sa_mask, SIGPROF);
  return sigaction(sig, &sa, 0);
}

int ci_agent_signals_install(unsigned hz) {
  ci_agent *a = &ci_agent_state;
  if (install(a->sig_smi, on_smi) || install(a->sig_rendezvous, on_rendezvous))
    return -1;
  if (!hz)
    return 0;
  if (install(SIGPROF, on_sample))
    return -1;
  long us = 1000000l / (long)hz;
  struct itimerval it = {{us / 1000000l, us % 1000000l}, {us / 1000000l, us % 1000000l}};
  return setitimer(ITIMER_PROF, &it, 0);
}
