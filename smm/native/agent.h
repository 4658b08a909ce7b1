/*
 * The native host of the engine: an LD_PRELOAD agent that runs smm/core
 * inside a live Linux process, with SMM's semantics mapped one to one.
 *
 *   SMI            a real-time signal (CI_AGENT_SIG_SMI) sent to the process;
 *                  the thread that takes it signals every other thread
 *                  (CI_AGENT_SIG_RENDEZVOUS, tgkill)
 *   all CPUs in    every thread of the process waiting in its handler
 *   SMM            (re-enumerated until no new thread appears)
 *   save state     each thread's ucontext (RIP, RSP, CS; CR3 reads 0: one
 *                  address space, the process's, so plans are PHYSICAL with
 *                  process addresses)
 *   engine         the same smm/core, run by the thread that took the SMI
 *   RSM            sigreturn of every handler
 *   SMRAM          the engine's plan slots and undo pool (registered forbidden)
 *   mailbox        an anonymous memfd mapping named "codeisland-mailbox" (the
 *                  host finds it in /proc/PID/maps, reads and writes it through
 *                  /proc/PID/mem; private, so a fork's child has its own copy)
 *   arena          code arena next to the executable (rel32 reach), 2 MiB
 *                  pages where the kernel gives them (hugetlb, else THP)
 *   sources        the executable's text mappings
 *   SAMPLE         SIGPROF (ITIMER_PROF): the engine's SAMPLE of the thread
 *                  that was running
 */
#ifndef CI_NATIVE_AGENT_H
#define CI_NATIVE_AGENT_H

#include <stdint.h>
#include <ucontext.h>

#include "codeisland/engine.h"

/* Threads one rendezvous stops (the engine itself takes CI_MAX_CPUS; more
 * are stopped all the same and the engine answers TOO_MANY_CPUS). */
#define CI_AGENT_MAX_THREADS 512u
#define CI_AGENT_MAX_TEXT 8u

/* What the agent set up at load (agent.c), read by the SMI code (smi.c). */
typedef struct ci_agent {
  ci_engine engine;
  ci_mailbox *mailbox; /* process memory the host writes */
  ci_sample_ring ring;
  uint8_t *response_scratch; /* SIGPROF's SAMPLE answers here, not in the mailbox */
  uint64_t text_lo[CI_AGENT_MAX_TEXT], text_hi[CI_AGENT_MAX_TEXT];
  uint32_t text_count;
  int pid;
  int sig_smi, sig_rendezvous;
  volatile int active; /* 0 in a fork's child and when set-up failed */
} ci_agent;

extern ci_agent ci_agent_state;

/* smi.c: install the SMI, rendezvous and SIGPROF handlers; start sampling at
 * `hz` (0: none).  Returns 0 or -1 (errno set). */
int ci_agent_signals_install(unsigned hz);
/* smi.c: make the executable's text writable (1) or not (0) around the
 * requests that write it.  Returns 0 or -1. */
int ci_agent_text_writable(int writable);
/* waits.c: 1 while thread `tid` is inside a wait the agent's signals must not
 * interrupt (they are blocked there; the rendezvous counts it as stopped). */
int ci_agent_waiting(int tid);

#endif /* CI_NATIVE_AGENT_H */
