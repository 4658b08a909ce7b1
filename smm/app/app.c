/*
 * codeisland's QEMU target: a UEFI application that runs a workload whose code lives in the
 * SMM driver's code arena, so that SMIs taken while it runs can relocate its islands.
 *
 *   driver's arena (found through CI_CONFIG_TABLE_GUID, see plan.h); the offsets are the
 *   platform profile's (arena_layout.h, generated from the TOML the host plans with)
 *   +-----------------------------+ arena_base + CI_TARGET_CONTROL_OFFSET (source region)
 *   | ci_app_control              |  progress and the host's command (host reads/writes it)
 *   +-----------------------------+ arena_base + CI_TARGET_BLOB_OFFSET
 *   | workload blob (PIC, SysV)   |  copied from this app; islands move out of here
 *   +-----------------------------+ arena_base + CI_TARGET_BLOB_LIMIT (end of the source region)
 *   | hot, far: plan destinations |
 *   +-----------------------------+ arena_base + arena_size
 *
 * Each round calls the workload once and prints "round N sum X" on ConOut (the serial port).
 * The host can PAUSE it between rounds (so that a ROLLBACK never finds a thread inside a copy
 * with return addresses into copies), RUN it again, or FINISH it, which powers the machine off.
 */
#include "codeisland/plan.h"
#include "efi.h"
#include "workload_blob.h"
#include "blob_relocate.h"
#include "arena_layout.h"

#define CI_APP_MAGIC 0x31544350414943ULL /* "CIAPCT1" */
#define CI_APP_MAX_ROUNDS 3000u
#define CI_APP_PARK_MS 30000u

/* Host commands (ci_app_control.command). */
#define CI_APP_RUN 0u
#define CI_APP_PAUSE 1u  /* finish the round, then park outside the workload */
#define CI_APP_FINISH 2u /* print the summary and power off */

typedef struct ci_app_control {
  uint64_t magic;
  uint32_t version;
  uint32_t size;
  uint64_t blob_base;
  uint64_t blob_size;
  uint64_t entry;
  uint64_t rounds;     /* completed rounds */
  uint64_t first_sum;  /* round 0, before any relocation: the reference */
  uint64_t last_sum;
  uint32_t command;    /* written by the host: CI_APP_RUN / PAUSE / FINISH */
  uint32_t max_rounds;
  uint32_t bad_rounds; /* rounds whose sum differed from first_sum */
  uint32_t parked;     /* 1 while parked on PAUSE: no workload code is running or on the stack */
} ci_app_control;
_Static_assert(sizeof(ci_app_control) == 80, "app control");
_Static_assert(CI_TARGET_CONTROL_OFFSET + sizeof(ci_app_control) <= CI_TARGET_BLOB_OFFSET,
               "control block overlaps the blob");
_Static_assert(CI_TARGET_BLOB_OFFSET + CI_WORKLOAD_MEM_SIZE <= CI_TARGET_BLOB_LIMIT,
               "the workload does not fit the arena's source region");

/* KIND 0 (workload.c): u64 workload_round(u64 round) returns the round's checksum.
 * KIND 1 (emulation/workloads, workload.h): void workload_thread(unsigned thread, unsigned n)
 * writes its output on port 0xE9; the app marks each round's end there, and the host compares
 * the rounds' outputs (they must be identical: the writable segment is restored every round). */
typedef uint64_t (*__attribute__((sysv_abi)) workload_fn)(uint64_t a, uint64_t b);
#define CI_PORT_OUT 0xE9

extern const uint8_t ci_workload_blob[];
extern const uint8_t ci_workload_blob_end[];
__asm__(".section .rdata,\"dr\"\n"
        ".p2align 4\n"
        ".globl ci_workload_blob\n"
        "ci_workload_blob:\n"
        ".incbin \"" CI_WORKLOAD_BIN "\"\n"
        ".globl ci_workload_blob_end\n"
        "ci_workload_blob_end:\n"
        ".text\n");

static EFI_SYSTEM_TABLE *gST;

/* clang may emit calls to these (freestanding, -fno-builtin keeps them honest). */
void *memcpy(void *dst, const void *src, uint64_t n) {
  uint8_t *d = dst;
  const uint8_t *s = src;
  while (n--) *d++ = *s++;
  return dst;
}

void *memset(void *dst, int c, uint64_t n) {
  uint8_t *d = dst;
  while (n--) *d++ = (uint8_t)c;
  return dst;
}

static void puts8(const char *s) {
  CHAR16 buf[128];
  uint32_t n = 0;
  while (*s && n < 126) {
    if (*s == '\n') buf[n++] = '\r';
    buf[n++] = (CHAR16)*s++;
  }
  buf[n] = 0;
  gST->ConOut->OutputString(gST->ConOut, buf);
}

static char *hex(char *p, uint64_t v) {
  *p++ = '0';
  *p++ = 'x';
  for (int i = 60; i >= 0; i -= 4) *p++ = "0123456789abcdef"[(v >> i) & 0xF];
  return p;
}

static char *dec(char *p, uint64_t v) {
  char tmp[20];
  int n = 0;
  do tmp[n++] = (char)('0' + v % 10); while ((v /= 10) && n < 20);
  while (n) *p++ = tmp[--n];
  return p;
}

static char *str(char *p, const char *s) {
  while (*s) *p++ = *s++;
  return p;
}

static int guid_eq(const EFI_GUID *a, const EFI_GUID *b) {
  const uint8_t *x = (const uint8_t *)a, *y = (const uint8_t *)b;
  for (int i = 0; i < 16; i++)
    if (x[i] != y[i]) return 0;
  return 1;
}

static const ci_config_table *find_config(void) {
  static const EFI_GUID want = CI_CONFIG_TABLE_GUID_INIT;
  for (uint64_t i = 0; i < gST->NumberOfTableEntries; i++) {
    const EFI_CONFIGURATION_TABLE *t = &gST->ConfigurationTable[i];
    if (guid_eq(&t->VendorGuid, &want)) {
      const ci_config_table *cfg = t->VendorTable;
      if (cfg && cfg->signature == CI_CONFIG_SIGNATURE) return cfg;
    }
  }
  return 0;
}

static void power_off(void) {
  gST->RuntimeServices->ResetSystem(EFI_RESET_SHUTDOWN, 0, 0, 0);
}

static void outb(uint16_t port, uint8_t v) { __asm__ volatile("outb %0, %1" : : "a"(v), "Nd"(port)); }

/* One round from the same state: restore the writable segment (and its relocations), run,
 * mark the end on 0xE9. */
static uint64_t run_round(workload_fn run, uint8_t *blob, uint64_t round) {
  memcpy(blob + CI_WORKLOAD_RW_OFFSET, ci_workload_blob + CI_WORKLOAD_RW_OFFSET,
         CI_WORKLOAD_RW_FILESZ);
  memset(blob + CI_WORKLOAD_RW_OFFSET + CI_WORKLOAD_RW_FILESZ, 0,
         CI_WORKLOAD_RW_MEMSZ - CI_WORKLOAD_RW_FILESZ);
  ci_blob_relocate(blob, CI_WORKLOAD_RW_OFFSET, CI_WORKLOAD_RW_OFFSET + CI_WORKLOAD_RW_MEMSZ);
  uint64_t sum = CI_WORKLOAD_KIND == 0 ? run(round, 0) : (run(0, 1), 0);
  for (const char *m = "#end-of-round\n"; *m; m++) outb(CI_PORT_OUT, (uint8_t)*m);
  return sum;
}

/* Park between rounds while the host holds PAUSE (bounded, so a lost host cannot hang CI). */
static void park(EFI_SYSTEM_TABLE *st, ci_app_control *ctl) {
  __atomic_store_n(&ctl->parked, 1u, __ATOMIC_RELEASE);
  puts8("codeisland-app: paused\n");
  uint32_t ms = 0;
  while (__atomic_load_n(&ctl->command, __ATOMIC_ACQUIRE) == CI_APP_PAUSE) {
    if (ms >= CI_APP_PARK_MS) {
      __atomic_store_n(&ctl->command, CI_APP_FINISH, __ATOMIC_RELEASE);
      break;
    }
    st->BootServices->Stall(10000);
    ms += 10;
  }
  puts8("codeisland-app: resumed\n");
  __atomic_store_n(&ctl->parked, 0u, __ATOMIC_RELEASE);
}

static void report_round(uint64_t round, uint64_t sum) {
  char line[96], *p = line;
  p = str(p, "codeisland-app: round ");
  p = dec(p, round);
  p = str(p, " sum ");
  p = hex(p, sum);
  p = str(p, "\n");
  *p = 0;
  puts8(line);
}

EFI_STATUS EFIAPI efi_main(EFI_HANDLE image, EFI_SYSTEM_TABLE *st) {
  (void)image;
  gST = st;
  st->BootServices->SetWatchdogTimer(0, 0, 0, 0);
  const ci_config_table *cfg = find_config();
  uint64_t blob_size = (uint64_t)(ci_workload_blob_end - ci_workload_blob);
  if (!cfg) {
    puts8("codeisland-app: error: driver configuration table not found\n");
    power_off();
    return 1;
  }
  if (blob_size > CI_WORKLOAD_MEM_SIZE ||
      cfg->arena_size < CI_TARGET_BLOB_LIMIT) {
    puts8("codeisland-app: error: arena too small for the workload\n");
    power_off();
    return 1;
  }
  char line[128], *p = line;
  p = str(p, "codeisland-app: arena ");
  p = hex(p, cfg->arena_base);
  p = str(p, " size ");
  p = hex(p, cfg->arena_size);
  p = str(p, " mailbox ");
  p = hex(p, cfg->mailbox_base);
  p = str(p, "\n");
  *p = 0;
  puts8(line);

  ci_app_control *ctl = (ci_app_control *)(uintptr_t)(cfg->arena_base + CI_TARGET_CONTROL_OFFSET);
  memset(ctl, 0, sizeof *ctl);
  uint8_t *blob = (uint8_t *)(uintptr_t)(cfg->arena_base + CI_TARGET_BLOB_OFFSET);
  memcpy(blob, ci_workload_blob, blob_size);
  memset(blob + blob_size, 0, CI_WORKLOAD_MEM_SIZE - blob_size);
  ci_blob_relocate(blob, 0, CI_WORKLOAD_MEM_SIZE);
  ctl->version = 1;
  ctl->size = sizeof *ctl;
  ctl->blob_base = (uint64_t)(uintptr_t)blob;
  ctl->blob_size = CI_WORKLOAD_MEM_SIZE;
  ctl->entry = ctl->blob_base + CI_WORKLOAD_ENTRY;
  ctl->max_rounds = CI_APP_MAX_ROUNDS;
  __atomic_store_n(&ctl->magic, CI_APP_MAGIC, __ATOMIC_RELEASE);

  p = line;
  p = str(p, "codeisland-app: blob ");
  p = hex(p, ctl->blob_base);
  p = str(p, " entry ");
  p = hex(p, ctl->entry);
  p = str(p, "\n");
  *p = 0;
  puts8(line);

  workload_fn run = (workload_fn)(uintptr_t)ctl->entry;
  uint64_t round = 0;
  while (round < CI_APP_MAX_ROUNDS) {
    uint32_t cmd = __atomic_load_n(&ctl->command, __ATOMIC_ACQUIRE);
    if (cmd == CI_APP_FINISH) break;
    if (cmd == CI_APP_PAUSE) {
      park(st, ctl);
      continue;
    }
    uint64_t sum = run_round(run, blob, round);
    if (round == 0) ctl->first_sum = sum;
    else if (sum != ctl->first_sum) ctl->bad_rounds++;
    ctl->last_sum = sum;
    __atomic_store_n(&ctl->rounds, round + 1, __ATOMIC_RELEASE);
    report_round(round, sum);
    round++;
  }
  p = line;
  p = str(p, "codeisland-app: done rounds ");
  p = dec(p, round);
  p = str(p, " bad ");
  p = dec(p, ctl->bad_rounds);
  p = str(p, "\n");
  *p = 0;
  puts8(line);
  power_off();
  return 0;
}
