/*
 * The Linux guest agent's side of the host contract: a control block in the driver's code
 * arena, which the host reads and writes through chipsec.  Where it and the workload go is the
 * platform profile's arena layout (arena_layout.h, generated from the TOML the host plans with).
 *
 *   physical arena (mapped by the agent from /dev/mem at an ordinary, ASLR-chosen address)
 *   +-----------------------------+ arena_base            (virtual: arena_va)
 *   :                             :
 *   +-----------------------------+ arena_base + CI_AGENT_CONTROL_OFFSET (the source region)
 *   | ci_agent_control            |  progress, addresses, and the host's command
 *   +-----------------------------+ arena_base + CI_AGENT_BLOB_OFFSET
 *   | workload image (PIC, SysV)  |  copied by the agent; islands move out of here
 *   +-----------------------------+
 *   | free: plan destinations     |
 *   +-----------------------------+ arena_base + arena_size
 *
 * Every address the agent publishes is labelled: *_va are virtual addresses in the agent's
 * address space, *_phys physical.  The host mirrors this layout in
 * host/codeisland/qemu/linux/agent.py (a test compiles a probe so the two cannot drift).
 */
#ifndef CI_AGENT_H
#define CI_AGENT_H

#include <stdint.h>

#include "arena_layout.h"

#define CI_AGENT_MAGIC 0x3147414C49434ULL /* "CILAG1" */
#define CI_AGENT_VERSION 1u
#define CI_AGENT_CONTROL_OFFSET CI_TARGET_CONTROL_OFFSET
#define CI_AGENT_BLOB_OFFSET CI_TARGET_BLOB_OFFSET
#define CI_AGENT_MAX_THREADS 16u

/* Host commands (ci_agent_control.command). */
#define CI_AGENT_RUN 0u
#define CI_AGENT_PAUSE 1u  /* every thread finishes its round, then parks outside the workload */
#define CI_AGENT_FINISH 2u /* print the summary and power off */

/* ci_agent_control.mapping */
#define CI_AGENT_MAP_ANYWHERE 0u /* the kernel chose arena_va (ASLR) */
#define CI_AGENT_MAP_IDENTITY 1u /* arena_va == arena_phys (MAP_FIXED_NOREPLACE) */

typedef struct ci_agent_control {
  uint64_t magic;
  uint32_t version;
  uint32_t size;         /* sizeof(ci_agent_control) */
  uint64_t arena_phys;   /* where the agent found the arena (the mailbox header says) */
  uint64_t arena_va;     /* where it mapped it */
  uint64_t arena_size;
  uint64_t mailbox_phys; /* the mailbox page the agent found (self-address checked) */
  uint64_t blob_va;      /* the workload image, linked at 0, loaded here */
  uint64_t blob_size;    /* its size in memory */
  uint64_t entry_va;
  uint32_t pid;
  uint32_t threads;      /* worker threads running the workload */
  uint32_t command;      /* written by the host: CI_AGENT_RUN / PAUSE / FINISH */
  uint32_t parked;       /* threads parked on PAUSE (== threads: no workload code runs) */
  uint32_t kind;         /* 0: u64 workload_round(round); 1: workload.h's workload_thread */
  uint32_t mapping;      /* CI_AGENT_MAP_* */
  uint64_t rounds;       /* rounds completed by all threads */
  uint64_t first_sum;    /* the first round's checksum: the reference */
  uint64_t last_sum;
  uint64_t bad_rounds;   /* rounds whose checksum differed from first_sum */
  uint64_t thread_rounds[CI_AGENT_MAX_THREADS];
  char workload[32];     /* NUL-terminated name */
} ci_agent_control;

_Static_assert(sizeof(ci_agent_control) == 288, "agent control");

#endif /* CI_AGENT_H */
