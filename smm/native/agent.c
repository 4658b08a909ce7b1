/*
 * libcodeisland-agent.so: set-up at load time (an ELF constructor), the
 * native counterpart of the SMM driver's entry point (smm/driver/driver.c).
 *
 * Environment (read once, then removed, so that a program this one execs
 * starts clean):
 *   CODEISLAND_NATIVE=1          activate (without it the library does nothing)
 *   CODEISLAND_SAMPLE_HZ=N       SIGPROF samples per CPU second (0: none)
 *   CODEISLAND_ARENA_MIB=N       code arena size (default 8, multiple of 2)
 * and the library's own path is dropped from LD_PRELOAD.
 *
 * Process memory, as placed here:
 *
 *   arena  (RWX, 0xCC-filled)   2 MiB aligned, just below the executable's
 *   +-----------------------+   lowest mapping (PIE) or 512 MiB above its
 *   | SOURCE|DEST           |   end (fixed-address executables), so every
 *   +-----------------------+   copy reaches the program's data with rel32
 *   executable (r-x text registered SOURCE; made writable only while a
 *   COMMIT or ROLLBACK runs with every thread stopped)
 *   ...
 *   mailbox (memfd "codeisland-mailbox", private, 1 MiB; layout of
 *            smm/include/codeisland/plan.h, as the driver's)
 *   engine buffers (plan slots, undo pool), right above the arena where free:
 *            registered SMRAM, i.e. forbidden
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <linux/memfd.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "agent.h"
#include "mem.h"

#define MIB (1024u * 1024u)
#define HUGE_2M (2u * MIB)
#define ARENA_DEFAULT_MIB 8u
#define ABOVE_GAP (512u * MIB) /* fixed-address executables: room for brk */
#define ENGINE_ROOM (4u * MIB)  /* the engine buffers go right above the arena */

ci_agent ci_agent_state;

static void agent_error(const char *what) {
  /* one line, and only when set-up fails: the program's output stays its own */
  fprintf(stderr, "codeisland-agent: error: %s: %s\n", what, strerror(errno));
}

static unsigned env_unsigned(const char *name, unsigned fallback) {
  const char *v = getenv(name);
  if (!v || !*v)
    return fallback;
  char *end = 0;
  unsigned long n = strtoul(v, &end, 10);
  return *end || n > 100000ul ? fallback : (unsigned)n;
}

/* LD_PRELOAD without the entries naming this library. */
static void drop_self_from_preload(void) {
  const char *v = getenv("LD_PRELOAD");
  if (!v)
    return;
  char *copy = strdup(v), *out = calloc(1, strlen(v) + 1), *save = 0;
  if (!copy || !out)
    goto done;
  for (char *tok = strtok_r(copy, " :", &save); tok; tok = strtok_r(0, " :", &save)) {
    if (strstr(tok, "libcodeisland-agent"))
      continue;
    if (*out)
      strcat(out, ":");
    strcat(out, tok);
  }
  if (*out)
    setenv("LD_PRELOAD", out, 1);
  else
    unsetenv("LD_PRELOAD");
done:
  free(copy);
  free(out);
}

/* The executable's mappings from /proc/self/maps: [lo, hi) over all of them,
 * its executable ones into the agent's text table.  Returns 0 or -1. */
static int find_executable(uint64_t *lo, uint64_t *hi) {
  char exe[4096], line[4096 + 256];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n <= 0)
    return -1;
  exe[n] = 0;
  FILE *f = fopen("/proc/self/maps", "re");
  if (!f)
    return -1;
  ci_agent *a = &ci_agent_state;
  *lo = UINT64_MAX, *hi = 0;
  while (fgets(line, sizeof line, f)) {
    unsigned long start, end;
    char perms[8] = {0};
    int path_at = 0;
    if (sscanf(line, "%lx-%lx %7s %*s %*s %*s %n", &start, &end, perms, &path_at) < 3 ||
        !path_at)
      continue;
    char *path = line + path_at;
    path[strcspn(path, "\n")] = 0;
    if (strcmp(path, exe) != 0)
      continue;
    if (start < *lo)
      *lo = start;
    if (end > *hi)
      *hi = end;
    if (perms[2] == 'x' && a->text_count < CI_AGENT_MAX_TEXT) {
      a->text_lo[a->text_count] = start;
      a->text_hi[a->text_count] = end;
      a->text_count++;
    }
  }
  fclose(f);
  return a->text_count ? 0 : -1;
}

/* Map `size` bytes RWX at `at` (2 MiB aligned), 2 MiB pages first: a hugetlb
 * memfd (needs reserved pages: vm.nr_hugepages), else anonymous memory with
 * MADV_HUGEPAGE (THP).  The host reads which one it got from smaps. */
static void *map_arena_at(uint64_t at, uint64_t size) {
  int prot = PROT_READ | PROT_WRITE | PROT_EXEC;
  int fd = memfd_create("codeisland-arena", MFD_CLOEXEC | MFD_HUGETLB | MFD_HUGE_2MB);
  if (fd >= 0) {
    void *p = MAP_FAILED;
    if (ftruncate(fd, (off_t)size) == 0)
      p = mmap((void *)(uintptr_t)at, size, prot, MAP_PRIVATE | MAP_FIXED_NOREPLACE, fd, 0);
    close(fd);
    if (p != MAP_FAILED)
      return p;
  }
  void *p = mmap((void *)(uintptr_t)at, size, prot,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (p == MAP_FAILED)
    return 0;
  (void)madvise(p, size, MADV_HUGEPAGE); /* refused where THP is off: 4 KiB pages */
  return p;
}

static void *map_arena(uint64_t lo, uint64_t hi, uint64_t size) {
  for (unsigned attempt = 0; attempt < 16; attempt++) {
    uint64_t step = (uint64_t)attempt * size;
    uint64_t at;
    if (lo > size + step + 64u * MIB) /* below a PIE, room left above for the engine buffers */
      at = (lo - size - ENGINE_ROOM - step) & ~(uint64_t)(HUGE_2M - 1);
    else
      at = (hi + ABOVE_GAP + step + HUGE_2M - 1) & ~(uint64_t)(HUGE_2M - 1);
    void *p = map_arena_at(at, size);
    if (p)
      return p;
  }
  return 0;
}

static ci_mailbox *map_mailbox(void) {
  int fd = memfd_create("codeisland-mailbox", MFD_CLOEXEC);
  if (fd < 0)
    return 0;
  void *p = MAP_FAILED;
  if (ftruncate(fd, CI_MAILBOX_SIZE) == 0)
    p = mmap(0, CI_MAILBOX_SIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
  close(fd);
  return p == MAP_FAILED ? 0 : (ci_mailbox *)p;
}

static void at_fork_child(void) {
  /* the child is not the process the host talks to: it keeps the code as it
   * is (valid, copies included) and takes no more SMIs or samples */
  ci_agent_state.active = 0;
}

static int setup(void) {
  ci_agent *a = &ci_agent_state;
  uint64_t lo, hi;
  unsigned mib = env_unsigned("CODEISLAND_ARENA_MIB", ARENA_DEFAULT_MIB);
  unsigned hz = env_unsigned("CODEISLAND_SAMPLE_HZ", 0);
  uint64_t arena_size = (uint64_t)((mib + 1u) & ~1u) * MIB;
  if (arena_size == 0)
    arena_size = HUGE_2M;
  if (find_executable(&lo, &hi) != 0)
    return agent_error("the executable's text is not in /proc/self/maps"), -1;
  a->mailbox = map_mailbox();
  uint8_t *arena = map_arena(lo, hi, arena_size);
  /* right above the arena, like SMRAM beside the firmware's reserved memory: a plan aimed at
   * it is one the planner can build (in rel32 reach), so the engine is the one to refuse it */
  size_t smram_size = 2u * CI_PLAN_MAX_SIZE + CI_UNDO_POOL_BYTES + CI_RESPONSE_MAX;
  uint8_t *smram = MAP_FAILED;
  if (arena)
    smram = mmap(arena + arena_size, smram_size, PROT_READ | PROT_WRITE,
                 MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
  if (smram == MAP_FAILED)
    smram = mmap(0, smram_size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (smram == MAP_FAILED || !a->mailbox || !arena)
    return agent_error("cannot map the engine buffers, mailbox or arena"), -1;
  ci_fill(arena, 0xCC, arena_size); /* int3: as the driver's arena; faults in the pages */
  ci_engine_init(&a->engine, smram, smram + CI_PLAN_MAX_SIZE, smram + 2u * CI_PLAN_MAX_SIZE);
  a->response_scratch = smram + 2u * CI_PLAN_MAX_SIZE + CI_UNDO_POOL_BYTES;
  ci_engine *e = &a->engine;
  int bad = ci_region_add(e, (uint64_t)(uintptr_t)smram, smram_size, CI_REGION_SMRAM) != CI_ST_OK;
  bad |= ci_region_add(e, (uint64_t)(uintptr_t)a->mailbox, CI_MAILBOX_SIZE, CI_REGION_DRIVER) !=
         CI_ST_OK;
  bad |= ci_region_add(e, (uint64_t)(uintptr_t)arena, arena_size,
                       CI_REGION_SOURCE | CI_REGION_DEST) != CI_ST_OK;
  for (uint32_t k = 0; k < a->text_count; k++)
    bad |= ci_region_add(e, a->text_lo[k], a->text_hi[k] - a->text_lo[k], CI_REGION_SOURCE) !=
           CI_ST_OK;
  if (bad)
    return errno = EINVAL, agent_error("the engine refused a region"), -1;
  ci_engine_lock(e);
  /* high real-time signals: glibc and most libraries take theirs from SIGRTMIN up */
  a->sig_smi = SIGRTMAX - 7;
  a->sig_rendezvous = SIGRTMAX - 6;
  /* the "APM_CNT value" is the signal; firmware_flags stay 0 (no firmware to describe) and
   * the signature goes in last, once the handlers answer */
  ci_mailbox_layout(a->mailbox, (uint64_t)(uintptr_t)a->mailbox, (uint32_t)a->sig_smi,
                    (uint64_t)(uintptr_t)arena, arena_size);
  a->ring.slots = (ci_sample *)((uint8_t *)a->mailbox + a->mailbox->sample_offset);
  a->ring.capacity = CI_SAMPLE_RING_ENTRIES;
  a->pid = getpid();
  a->active = 1;
  if (pthread_atfork(0, 0, at_fork_child) != 0 || ci_agent_signals_install(hz) != 0) {
    a->active = 0;
    return agent_error("cannot install the SMI and sample handlers"), -1;
  }
  __atomic_store_n(&a->mailbox->signature, CI_MAILBOX_SIGNATURE, __ATOMIC_RELEASE);
  return 0;
}

__attribute__((constructor)) static void ci_agent_load(void) {
  const char *on = getenv("CODEISLAND_NATIVE");
  int wanted = on && strcmp(on, "1") == 0;
  int saved = errno;
  unsetenv("CODEISLAND_NATIVE");
  drop_self_from_preload();
  if (wanted)
    (void)setup();
  unsetenv("CODEISLAND_SAMPLE_HZ");
  unsetenv("CODEISLAND_ARENA_MIB");
  errno = saved;
}
