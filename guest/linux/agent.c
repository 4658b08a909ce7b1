/*
 * codeisland's Linux guest agent: runs a workload from the SMM driver's code arena inside a
 * running Linux, so that the host can relocate its islands from outside the VM.
 *
 *   1. find the driver's mailbox: scan the "Reserved" ranges of /proc/iomem through /dev/mem
 *      for the page whose header carries CI_MAILBOX_SIGNATURE and names itself as mailbox_base
 *      (no pointer is trusted: the EFI configuration table is virtual after SetVirtualAddressMap)
 *   2. map the arena it names from /dev/mem, read/write/exec, MAP_SHARED, at an address the
 *      kernel chooses (ASLR left on) -- or at virtual == physical with codeisland.identity=1
 *   3. copy the embedded workload image (smm/app/mkblob.py's layout) into the arena, publish a
 *      ci_agent_control (agent.h) at its start, and run the workload in worker threads
 *   4. obey the host's commands (RUN / PAUSE / FINISH) and power the machine off at FINISH or
 *      when the host goes quiet for too long
 *
 * Settings come from the kernel command line (/proc/cmdline): codeisland.threads=N (1..16),
 * codeisland.identity=1, codeisland.max_seconds=S.  Every line it prints starts with
 * "codeisland-agent:" on the console (the serial port), which the host reads.
 *
 * Threads of KIND 0 workloads (u64 workload_round(round), a checksum) run concurrently; KIND 1
 * workloads (workload.h: workload_thread writes its output on port 0xE9) run one round at a time
 * under a mutex so that each round's port output stays one unbroken stream.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/io.h>
#include <sys/mman.h>
#include <sys/reboot.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

#include "agent.h"
#include "codeisland/plan.h"
#include "workload_blob.h"
#include "blob_relocate.h"

#define PAGE 4096u
#define PORT_OUT 0xE9
#define DEFAULT_MAX_SECONDS 600u
#define ROUND_MARK "#end-of-round\n"

extern const uint8_t ci_workload_blob[];
extern const uint8_t ci_workload_blob_end[];
__asm__(".section .rodata\n"
        ".p2align 4\n"
        ".globl ci_workload_blob\n"
        "ci_workload_blob:\n"
        ".incbin \"" CI_WORKLOAD_BIN "\"\n"
        ".globl ci_workload_blob_end\n"
        "ci_workload_blob_end:\n"
        ".previous\n");

typedef uint64_t (*workload_fn)(uint64_t a, uint64_t b);

struct settings {
  unsigned threads;
  int identity;
  unsigned max_seconds;
};

static volatile ci_agent_control *ctl;
static uint8_t *blob;
static workload_fn run_workload;
static pthread_mutex_t round_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_mutex_t print_lock = PTHREAD_MUTEX_INITIALIZER;

static void vsay(const char *prefix, const char *fmt, va_list ap) {
  char line[224];
  vsnprintf(line, sizeof line, fmt, ap);
  pthread_mutex_lock(&print_lock);
  printf("codeisland-agent: %s%s\n", prefix, line);
  fflush(stdout);
  pthread_mutex_unlock(&print_lock);
}

static void say(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsay("", fmt, ap);
  va_end(ap);
}

static void power_off(int code) {
  say("power off (%s)", code ? "error" : "done");
  sync();
  reboot(RB_POWER_OFF);
  _exit(code);
}

static void fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  vsay("error: ", fmt, ap);
  va_end(ap);
  power_off(1);
}

/* ---- the workload's devices: port I/O the agent answers itself ----------------------------
 *
 * workload.h's board has more than port 0xE9: a CMOS clock at 0x70/0x71 and an input-event port
 * 0xEB.  A user process must not touch the real CMOS (the kernel's RTC driver owns its index
 * register), so only 0xE9 is opened with ioperm; any other IN/OUT traps (#GP -> SIGSEGV) and is
 * answered here as smmemu's devices answer by default: the clock reads midnight (BCD), the input
 * port has no event (0), an OUT to the exit port 0xEA is the workload's failure code. */

#define PORT_EXIT 0xEA

/* Every register of the clock at midnight is BCD 00 (seconds, minutes, hours; smmemu's other
 * CMOS registers read 0 as well), the input port 0xEB has no event (0): every IN reads 0, and
 * OUTs other than the exit port (the CMOS index) change nothing that a read could see. */
static uint32_t port_in(unsigned port) {
  (void)port;
  return 0;
}

/* Emulate the IN/OUT at rip (imm8 and DX forms, 8/16/32 bits); its length, or 0 if not one. */
static int emulate_io(ucontext_t *uc, const uint8_t *rip) {
  greg_t *g = uc->uc_mcontext.gregs;
  int len = 0, width = 1;
  if (rip[0] == 0x66) width = 2, len = 1, rip++;
  uint8_t op = rip[0];
  unsigned port = (unsigned)(g[REG_RDX] & 0xFFFF);
  int imm = op == 0xE4 || op == 0xE5 || op == 0xE6 || op == 0xE7;
  if (imm) port = rip[1];
  if (op != 0xE4 && op != 0xE5 && op != 0xE6 && op != 0xE7 && (op < 0xEC || op > 0xEF)) return 0;
  if (op & 1) width = width == 2 ? 2 : 4;
  else width = 1;
  len += imm ? 2 : 1;
  int out = op == 0xE6 || op == 0xE7 || op == 0xEE || op == 0xEF;
  uint64_t rax = (uint64_t)g[REG_RAX];
  if (out) {
    if (port == PORT_EXIT) {
      char line[96];
      int n = snprintf(line, sizeof line, "codeisland-agent: error: workload failed with code %u\n",
                       (unsigned)(rax & 0xFFFFFFFFu));
      if (n > 0) (void)!write(1, line, (size_t)n);
      sync();
      reboot(RB_POWER_OFF);
      _exit(1);
    }
  } else {
    uint64_t v = port_in(port);
    uint64_t keep = width == 4 ? 0 : (width == 2 ? ~0xFFFFull : ~0xFFull);
    g[REG_RAX] = (greg_t)(width == 4 ? (uint32_t)v : ((rax & keep) | v));
  }
  return len;
}

/* ---- a fault in the workload: one line naming where, then power off ------------------------ */

static void on_fault(int sig, siginfo_t *info, void *uc_) {
  ucontext_t *uc = uc_;
  uint64_t rip = (uint64_t)uc->uc_mcontext.gregs[REG_RIP];
  uint64_t base = (uint64_t)(uintptr_t)blob;
  if (sig == SIGSEGV && blob && rip >= base && rip < base + CI_WORKLOAD_MEM_SIZE) {
    int len = emulate_io(uc, (const uint8_t *)(uintptr_t)rip);
    if (len) {
      uc->uc_mcontext.gregs[REG_RIP] += len;
      return;
    }
  }
  char line[200];
  int n = snprintf(line, sizeof line,
                   "codeisland-agent: error: signal %d at rip %#llx (workload +%#llx) address %p\n",
                   sig, (unsigned long long)rip, (unsigned long long)(rip - base), info->si_addr);
  if (n > 0) (void)!write(1, line, (size_t)n);
  sync();
  reboot(RB_POWER_OFF);
  _exit(128 + sig);
}

static void catch_faults(void) {
  struct sigaction sa;
  memset(&sa, 0, sizeof sa);
  sa.sa_sigaction = on_fault;
  sa.sa_flags = SA_SIGINFO;
  sigaction(SIGSEGV, &sa, NULL);
  sigaction(SIGILL, &sa, NULL);
  sigaction(SIGBUS, &sa, NULL);
  sigaction(SIGFPE, &sa, NULL);
}

/* ---- settings from the kernel command line ----------------------------------------------- */

static unsigned cmdline_uint(const char *cmdline, const char *key, unsigned dflt) {
  const char *p = cmdline;
  size_t n = strlen(key);
  while ((p = strstr(p, key)) != NULL) {
    if ((p == cmdline || p[-1] == ' ') && p[n] == '=') return (unsigned)strtoul(p + n + 1, 0, 0);
    p += n;
  }
  return dflt;
}

static struct settings read_settings(void) {
  char cmdline[4096] = "";
  FILE *f = fopen("/proc/cmdline", "r");
  if (f) {
    if (!fgets(cmdline, sizeof cmdline, f)) cmdline[0] = 0;
    fclose(f);
  }
  struct settings s = {
      .threads = cmdline_uint(cmdline, "codeisland.threads", 1),
      .identity = (int)cmdline_uint(cmdline, "codeisland.identity", 0),
      .max_seconds = cmdline_uint(cmdline, "codeisland.max_seconds", DEFAULT_MAX_SECONDS),
  };
  if (s.threads < 1 || s.threads > CI_AGENT_MAX_THREADS)
    fail("codeisland.threads=%u is outside 1..%u", s.threads, CI_AGENT_MAX_THREADS);
  return s;
}

/* ---- finding the mailbox ------------------------------------------------------------------- */

/* The mailbox header at `page`, if that page is one: signature, self-address, sane sizes. */
static int read_mailbox(int mem, uint64_t page, ci_mailbox *out) {
  if (pread(mem, out, sizeof *out, (off_t)page) != (ssize_t)sizeof *out) return 0;
  return out->signature == CI_MAILBOX_SIGNATURE && out->mailbox_base == page &&
         out->version == CI_MAILBOX_VERSION && out->header_size == sizeof *out &&
         out->arena_size >= CI_AGENT_BLOB_OFFSET && out->arena_base % PAGE == 0 &&
         out->arena_base + out->arena_size > out->arena_base;
}

static uint64_t find_mailbox(int mem, ci_mailbox *found) {
  FILE *f = fopen("/proc/iomem", "r");
  if (!f) fail("cannot read /proc/iomem: %s", strerror(errno));
  char line[256];
  uint64_t hit = 0;
  unsigned ranges = 0;
  while (!hit && fgets(line, sizeof line, f)) {
    unsigned long long lo, hi;
    char name[128];
    if (sscanf(line, " %llx-%llx : %127[^\n]", &lo, &hi, name) != 3) continue;
    if (strcmp(name, "Reserved") != 0 || hi <= lo) continue;
    ranges++;
    for (uint64_t p = (lo + PAGE - 1) & ~(uint64_t)(PAGE - 1); p + PAGE - 1 <= hi; p += PAGE) {
      uint64_t sig;
      if (pread(mem, &sig, sizeof sig, (off_t)p) != (ssize_t)sizeof sig) break;
      if (sig == CI_MAILBOX_SIGNATURE && read_mailbox(mem, p, found)) {
        hit = p;
        break;
      }
    }
  }
  fclose(f);
  if (!hit) fail("no codeisland mailbox in the %u Reserved ranges of /proc/iomem", ranges);
  return hit;
}

/* ---- the arena and the workload ------------------------------------------------------------ */

static uint8_t *map_arena(int mem, const ci_mailbox *mb, int identity) {
  void *want = identity ? (void *)(uintptr_t)mb->arena_base : NULL;
  int flags = MAP_SHARED | (identity ? MAP_FIXED_NOREPLACE : 0);
  void *va = mmap(want, mb->arena_size, PROT_READ | PROT_WRITE | PROT_EXEC, flags, mem,
                  (off_t)mb->arena_base);
  if (va == MAP_FAILED)
    fail("mmap of the arena %#llx+%#llx from /dev/mem: %s",
         (unsigned long long)mb->arena_base, (unsigned long long)mb->arena_size, strerror(errno));
  if (identity && va != want) fail("the arena could not be mapped at virtual == physical");
  return va;
}

/* One round's writable segment from the same state (KIND 1 rounds must print the same). */
static void restore_rw(void) {
  memcpy(blob + CI_WORKLOAD_RW_OFFSET, ci_workload_blob + CI_WORKLOAD_RW_OFFSET,
         CI_WORKLOAD_RW_FILESZ);
  memset(blob + CI_WORKLOAD_RW_OFFSET + CI_WORKLOAD_RW_FILESZ, 0,
         CI_WORKLOAD_RW_MEMSZ - CI_WORKLOAD_RW_FILESZ);
  ci_blob_relocate(blob, CI_WORKLOAD_RW_OFFSET, CI_WORKLOAD_RW_OFFSET + CI_WORKLOAD_RW_MEMSZ);
}

static void load_workload(uint8_t *arena, const ci_mailbox *mb, uint64_t mailbox, int identity) {
  uint64_t blob_size = (uint64_t)(ci_workload_blob_end - ci_workload_blob);
  if (blob_size > CI_WORKLOAD_MEM_SIZE || mb->arena_size < CI_AGENT_BLOB_OFFSET + CI_WORKLOAD_MEM_SIZE)
    fail("the arena (%#llx bytes) is too small for the workload (%#llx)",
         (unsigned long long)mb->arena_size, (unsigned long long)CI_WORKLOAD_MEM_SIZE);
  ctl = (volatile ci_agent_control *)(arena + CI_AGENT_CONTROL_OFFSET);
  memset((void *)ctl, 0, sizeof *ctl);
  blob = arena + CI_AGENT_BLOB_OFFSET;
  memcpy(blob, ci_workload_blob, blob_size);
  memset(blob + blob_size, 0, CI_WORKLOAD_MEM_SIZE - blob_size);
  ci_blob_relocate(blob, 0, CI_WORKLOAD_MEM_SIZE);
  run_workload = (workload_fn)(uintptr_t)(blob + CI_WORKLOAD_ENTRY);
  ctl->version = CI_AGENT_VERSION;
  ctl->size = sizeof *ctl;
  ctl->arena_phys = mb->arena_base;
  ctl->arena_va = (uint64_t)(uintptr_t)arena;
  ctl->arena_size = mb->arena_size;
  ctl->mailbox_phys = mailbox;
  ctl->blob_va = (uint64_t)(uintptr_t)blob;
  ctl->blob_size = CI_WORKLOAD_MEM_SIZE;
  ctl->entry_va = (uint64_t)(uintptr_t)run_workload;
  ctl->pid = (uint32_t)getpid();
  ctl->kind = CI_WORKLOAD_KIND;
  ctl->mapping = identity ? CI_AGENT_MAP_IDENTITY : CI_AGENT_MAP_ANYWHERE;
  strncpy((char *)ctl->workload, CI_AGENT_WORKLOAD, sizeof ctl->workload - 1);
}

/* ---- worker threads ------------------------------------------------------------------------ */

static uint32_t command(void) { return __atomic_load_n(&ctl->command, __ATOMIC_ACQUIRE); }

static void park(void) {
  __atomic_add_fetch(&ctl->parked, 1u, __ATOMIC_ACQ_REL);
  while (command() == CI_AGENT_PAUSE) usleep(5000);
  __atomic_sub_fetch(&ctl->parked, 1u, __ATOMIC_ACQ_REL);
}

static uint64_t one_round(uint64_t round) {
  if (CI_WORKLOAD_KIND == 0) return run_workload(round, 0);
  pthread_mutex_lock(&round_lock);
  restore_rw();
  run_workload(0, 1);
  for (const char *m = ROUND_MARK; *m; m++) outb((unsigned char)*m, PORT_OUT);
  pthread_mutex_unlock(&round_lock);
  return 0;
}

static void record(unsigned thread, uint64_t round, uint64_t sum) {
  uint64_t done = __atomic_add_fetch(&ctl->rounds, 1, __ATOMIC_ACQ_REL);
  uint64_t expected = 0;
  if (!__atomic_compare_exchange_n(&ctl->first_sum, &expected, sum, 0, __ATOMIC_ACQ_REL,
                                   __ATOMIC_ACQUIRE) &&
      expected != sum)
    __atomic_add_fetch(&ctl->bad_rounds, 1, __ATOMIC_ACQ_REL);
  __atomic_store_n(&ctl->last_sum, sum, __ATOMIC_RELEASE);
  __atomic_store_n(&ctl->thread_rounds[thread], round + 1, __ATOMIC_RELEASE);
  say("thread %u round %llu sum %#llx (total %llu)", thread, (unsigned long long)round,
      (unsigned long long)sum, (unsigned long long)done);
}

static void *worker(void *arg) {
  unsigned thread = (unsigned)(uintptr_t)arg;
  for (uint64_t round = 0;;) {
    uint32_t cmd = command();
    if (cmd == CI_AGENT_FINISH) break;
    if (cmd == CI_AGENT_PAUSE) {
      park();
      continue;
    }
    record(thread, round, one_round(round));
    round++;
  }
  return NULL;
}

int main(void) {
  setvbuf(stdout, NULL, _IOLBF, 0);
  catch_faults();
  struct settings s = read_settings();
  int mem = open("/dev/mem", O_RDWR);
  if (mem < 0) fail("cannot open /dev/mem: %s", strerror(errno));
  ci_mailbox mb;
  uint64_t mailbox = find_mailbox(mem, &mb);
  uint8_t *arena = map_arena(mem, &mb, s.identity);
  /* the output port only: the other ports of workload.h are answered by emulate_io */
  if (CI_WORKLOAD_KIND == 1 && ioperm(PORT_OUT, 1, 1) != 0)
    fail("ioperm for the workload's ports: %s", strerror(errno));
  load_workload(arena, &mb, mailbox, s.identity);
  ctl->threads = s.threads;
  __atomic_store_n(&ctl->magic, CI_AGENT_MAGIC, __ATOMIC_RELEASE);
  say("mailbox phys %#llx arena phys %#llx va %p size %#llx pid %d", (unsigned long long)mailbox,
      (unsigned long long)mb.arena_base, (void *)arena, (unsigned long long)mb.arena_size,
      (int)getpid());
  say("ready workload %s blob %p entry %p threads %u", CI_AGENT_WORKLOAD, (void *)blob,
      (void *)run_workload, s.threads);

  pthread_t tids[CI_AGENT_MAX_THREADS];
  for (unsigned t = 0; t < s.threads; t++)
    if (pthread_create(&tids[t], NULL, worker, (void *)(uintptr_t)t) != 0)
      fail("cannot start worker thread %u", t);
  /* The host drives the run; a lost host must not keep CI waiting forever. */
  time_t deadline = time(NULL) + (time_t)s.max_seconds;
  while (command() != CI_AGENT_FINISH) {
    if (time(NULL) > deadline) {
      say("no FINISH from the host within %u s", s.max_seconds);
      __atomic_store_n(&ctl->command, CI_AGENT_FINISH, __ATOMIC_RELEASE);
      break;
    }
    usleep(20000);
  }
  for (unsigned t = 0; t < s.threads; t++) pthread_join(tids[t], NULL);
  say("done rounds %llu bad %llu", (unsigned long long)ctl->rounds,
      (unsigned long long)ctl->bad_rounds);
  power_off(0);
  return 0;
}
