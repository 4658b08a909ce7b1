/*
 * CodeIslandSmm: the PI SMM driver that hosts the relocation engine.
 *
 * Entry point (in SMM, before SmmReadyToLock): find the SMST, learn SMRAM,
 * reserve the mailbox and the code arena, publish them, register the SMI
 * handler and the ready-to-lock notification.  On its SMI: copy the request
 * into SMRAM, run the engine, answer in the mailbox.
 *
 * Memory, as placed here (addresses chosen by the firmware):
 *
 *   outside SMRAM (reserved before lock, so SMM may touch it afterwards)
 *   +-----------------------------+ mailbox (EfiReservedMemoryType, 1 MiB)
 *   | ci_mailbox header   0x000   |  signature, layout, host<->driver fields
 *   | ci_config_table     0x800   |  also an EFI configuration table
 *   +-----------------------------+ +0x1000            request (plan), 512 KiB
 *   +-----------------------------+ +0x81000           response, 64 KiB
 *   +-----------------------------+ +0x91000           ci_sample ring, 128 KiB
 *   +-----------------------------+ +0xB1000 .. 1 MiB  unused
 *
 *   +-----------------------------+ arena (EfiRuntimeServicesCode, 16 MiB)
 *   | filled with 0xCC (int3)     |  region SOURCE|DEST|STACK: code to move,
 *   |                             |  hot destinations, managed stacks
 *   +-----------------------------+
 *
 *   inside SMRAM (SmmAllocatePages)
 *   +-----------------------------+ plan slot 0, 512 KiB  (request copy /
 *   +-----------------------------+ plan slot 1, 512 KiB   pending plan)
 *   +-----------------------------+ undo pool, 1 MiB
 *   + driver image: ci_engine state (regions, map, generations) in .bss
 */
#include "codeisland/engine.h"
#include "log.h"
#include "mem.h"
#include "pi.h"

#ifndef CI_SMM_UNRESTRICTED
#define CI_SMM_UNRESTRICTED 0 /* 1: CI_MEM_UNRESTRICTED page walks (test boards) */
#endif
#ifndef CI_ARENA_PAGES
#define CI_ARENA_PAGES 4096u /* 16 MiB */
#endif
#define CI_PAGE 4096u
#define CI_CONFIG_OFFSET 0x800u
#define CI_MAX_SMRAM_RANGES 8u

_Static_assert(CI_CONFIG_OFFSET + sizeof(ci_config_table) <= CI_MAILBOX_HEADER_SIZE &&
                   sizeof(ci_mailbox) <= CI_CONFIG_OFFSET,
               "config table inside the header page, after the header");

static ci_engine g_engine;
static EFI_SMM_SYSTEM_TABLE2 *g_smst;
static EFI_SMM_CPU_PROTOCOL *g_cpu;
static ci_mailbox *g_mailbox;     /* outside SMRAM: host-writable */
static ci_mailbox g_layout;       /* our SMRAM copy of the fields we set */
static ci_sample_ring g_ring;
static uint32_t g_smi_count;

/* ---- CPU contexts through EFI_SMM_CPU_PROTOCOL --------------------------- */

/* PI save-state registers have fixed widths: ReadSaveState refuses a wider read
 * (OVMF/EDK2: segment selectors ES..TR_SEL, 20..27, are 4 bytes in 64-bit mode). */
static UINTN reg_width(uint32_t reg) { return reg >= 20u && reg <= 27u ? 4u : 8u; }

static int cpu_read(void *ctx, uint32_t cpu, uint32_t reg, uint64_t *value) {
  (void)ctx;
  *value = 0;
  return EFI_IS_ERROR(g_cpu->ReadSaveState(g_cpu, reg_width(reg), reg, cpu, value));
}

static int cpu_write(void *ctx, uint32_t cpu, uint32_t reg, uint64_t value) {
  (void)ctx;
  return EFI_IS_ERROR(g_cpu->WriteSaveState(g_cpu, 8, reg, cpu, &value));
}

/* ---- the SMI ------------------------------------------------------------ */

/* One request: the host fields are read once, the request is copied into
 * SMRAM before the engine looks at it, and done_sequence is written last.
 * Returns 0 when no request was pending (APM_CNT keeps its last value, so an
 * SMI from another source can find ours there). */
static int handle_request(void) {
  volatile ci_mailbox *mb = g_mailbox;
  uint32_t sequence = mb->sequence;
  if (sequence == mb->done_sequence)
    return 0;
  uint32_t command = mb->command, size = mb->request_size, budget = mb->stage_budget;
  uint8_t *base = (uint8_t *)g_mailbox;
  uint32_t response_size = 0;
  g_smi_count++;
  if (size <= g_layout.request_max)
    ci_copy(ci_engine_request_buffer(&g_engine), base + g_layout.request_offset, size);
  ci_cpu_ops ops = {0, 0, cpu_read, cpu_write};
  ops.count = g_smst->NumberOfCpus > 0xFFFFFFFFu ? 0xFFFFFFFFu : (uint32_t)g_smst->NumberOfCpus;
  ci_status st = ci_dispatch(&g_engine, &ops, &g_ring, command, size, budget, g_smi_count,
                             base + g_layout.response_offset, g_layout.response_max,
                             &response_size);
  mb->status = st;
  mb->response_size = response_size;
  mb->smi_count = g_smi_count;
  mb->sample_head = g_ring.head;
  __asm__ volatile("" ::: "memory"); /* x86 keeps store order; the compiler must too */
  mb->done_sequence = sequence;
  return 1;
}

static EFI_STATUS EFIAPI sw_handler(EFI_HANDLE h, const void *ctx, void *comm, UINTN *size) {
  (void)h, (void)ctx, (void)comm, (void)size;
  (void)handle_request();
  return EFI_SUCCESS;
}

static uint8_t inb(uint16_t port) {
  uint8_t v;
  __asm__ volatile("inb %1, %0" : "=a"(v) : "Nd"(port));
  return v;
}

/* Root handler (no SwDispatch2, e.g. Debian's OVMF): runs on every SMI. */
static EFI_STATUS EFIAPI root_handler(EFI_HANDLE h, const void *ctx, void *comm, UINTN *size) {
  (void)h, (void)ctx, (void)comm, (void)size;
  if (inb(0xB2) != g_layout.sw_smi_value || !handle_request())
    return EFI_WARN_INTERRUPT_SOURCE_QUIESCED;
  return EFI_SUCCESS;
}

static EFI_STATUS EFIAPI ready_to_lock(const EFI_GUID *p, void *i, EFI_HANDLE h) {
  (void)p, (void)i, (void)h;
  ci_engine_lock(&g_engine);
  return EFI_SUCCESS;
}

/* ---- entry -------------------------------------------------------------- */

static EFI_SMRAM_DESCRIPTOR g_smram[CI_MAX_SMRAM_RANGES];
static UINTN g_smram_count;

/* Step 2: learn SMRAM (registered as forbidden once the engine exists). */
static void learn_smram(EFI_BOOT_SERVICES *bs) {
  static EFI_GUID access_guid = EFI_SMM_ACCESS2_PROTOCOL_GUID;
  EFI_SMM_ACCESS2_PROTOCOL *access = 0;
  UINTN size = sizeof g_smram;
  if (EFI_IS_ERROR(bs->LocateProtocol(&access_guid, 0, (void **)&access)) ||
      EFI_IS_ERROR(access->GetCapabilities(access, &size, g_smram))) {
    ci_log("codeisland: SMRAM map unavailable; the allow-list alone confines access\n");
    return;
  }
  g_smram_count = size / sizeof g_smram[0];
}

static void register_smram(void) {
  for (UINTN i = 0; i < g_smram_count; i++)
    if (ci_region_add(&g_engine, g_smram[i].PhysicalStart, g_smram[i].PhysicalSize,
                      CI_REGION_SMRAM) != CI_ST_OK) {
      ci_log_hex("codeisland: error: SMRAM range not registered: ", g_smram[i].PhysicalStart);
      ci_log("\n");
    }
}

/* How the firmware around the driver was built (mailbox firmware_flags).  Only a driver compiled
 * inside the platform's EDK2 build knows: it reads the same fixed-at-build PCD that
 * PiSmmCpuDxeSmm was compiled with.  CodeIslandPkg.dsc's package-only build and make -C smm do
 * not know which firmware will carry them, so they say nothing. */
static uint32_t firmware_flags(void) {
#if defined(CODEISLAND_EDK2_BUILD) && !defined(CODEISLAND_PACKAGE_ONLY)
  return CI_FIRMWARE_BUILD_KNOWN |
         (FixedPcdGetBool(PcdCpuSmmRestrictedMemoryAccess) ? 0u : CI_FIRMWARE_SMM_UNRESTRICTED);
#else
  return 0;
#endif
}

static void log_firmware_mode(uint32_t flags) {
  if (!(flags & CI_FIRMWARE_BUILD_KNOWN))
    ci_log("codeisland: smm memory access=unknown (driver not built with the platform)\n");
  else if (flags & CI_FIRMWARE_SMM_UNRESTRICTED)
    ci_log("codeisland: smm memory access=UNRESTRICTED (test-board firmware)\n");
  else
    ci_log("codeisland: smm memory access=restricted\n");
}

static void fill_mailbox(uint64_t mailbox, uint64_t arena) {
  ci_mailbox *m = &g_layout;
  ci_fill(m, 0, sizeof *m);
  ci_mailbox_layout(m, mailbox, CI_DEFAULT_SW_SMI, arena, (uint64_t)CI_ARENA_PAGES * CI_PAGE);
  m->signature = CI_MAILBOX_SIGNATURE;
  m->firmware_flags = firmware_flags();
  g_mailbox = (ci_mailbox *)(uintptr_t)mailbox;
  ci_fill(g_mailbox, 0, CI_MAILBOX_SIZE);
  ci_copy(g_mailbox, m, sizeof *m);
  g_ring.slots = (ci_sample *)(uintptr_t)(mailbox + m->sample_offset);
  g_ring.capacity = CI_SAMPLE_RING_ENTRIES;
  g_ring.head = 0;
}

static EFI_STATUS publish(EFI_BOOT_SERVICES *bs) {
  static EFI_GUID table_guid = CI_CONFIG_TABLE_GUID_INIT;
  ci_config_table *t = (ci_config_table *)((uint8_t *)g_mailbox + CI_CONFIG_OFFSET);
  t->signature = CI_CONFIG_SIGNATURE;
  t->version = CI_MAILBOX_VERSION;
  t->size = sizeof *t;
  t->mailbox_base = g_layout.mailbox_base;
  t->arena_base = g_layout.arena_base;
  t->arena_size = g_layout.arena_size;
  t->mailbox_size = g_layout.mailbox_size;
  t->sw_smi_value = g_layout.sw_smi_value;
  return bs->InstallConfigurationTable(&table_guid, t);
}

static EFI_STATUS reserve(EFI_BOOT_SERVICES *bs) {
  EFI_PHYSICAL_ADDRESS mailbox = 0, arena = 0, smram = 0;
  if (EFI_IS_ERROR(bs->AllocatePages(AllocateAnyPages, EfiReservedMemoryType,
                                     CI_MAILBOX_SIZE / CI_PAGE, &mailbox)) ||
      EFI_IS_ERROR(bs->AllocatePages(AllocateAnyPages, EfiRuntimeServicesCode, CI_ARENA_PAGES,
                                     &arena)) ||
      EFI_IS_ERROR(g_smst->SmmAllocatePages(AllocateAnyPages, EfiRuntimeServicesData,
                                            (2u * CI_PLAN_MAX_SIZE + CI_UNDO_POOL_BYTES) /
                                                CI_PAGE,
                                            &smram)))
    return EFI_OUT_OF_RESOURCES;
  uint8_t *s = (uint8_t *)(uintptr_t)smram;
  ci_engine_init(&g_engine, s, s + CI_PLAN_MAX_SIZE, s + 2u * CI_PLAN_MAX_SIZE);
  ci_fill((void *)(uintptr_t)arena, 0xCC, (uint64_t)CI_ARENA_PAGES * CI_PAGE);
  fill_mailbox(mailbox, arena);
  return EFI_SUCCESS;
}

static EFI_STATUS register_handler(void) {
  static EFI_GUID sw_guid = EFI_SMM_SW_DISPATCH2_PROTOCOL_GUID;
  EFI_SMM_SW_DISPATCH2_PROTOCOL *sw = 0;
  EFI_HANDLE handle = 0;
  if (!EFI_IS_ERROR(g_smst->SmmLocateProtocol(&sw_guid, 0, (void **)&sw))) {
    /* static: a dispatcher may keep the pointer rather than a copy */
    static EFI_SMM_SW_REGISTER_CONTEXT ctx = {CI_DEFAULT_SW_SMI};
    EFI_STATUS st = sw->Register(sw, sw_handler, &ctx, &handle);
    ci_log(EFI_IS_ERROR(st) ? "codeisland: SwDispatch2 register failed\n"
                            : "codeisland: sw-smi path=swdispatch2\n");
    return st;
  }
  EFI_STATUS st = g_smst->SmiHandlerRegister(root_handler, 0, &handle);
  ci_log(EFI_IS_ERROR(st) ? "codeisland: root handler register failed\n"
                          : "codeisland: sw-smi path=root\n");
  return st;
}

EFI_STATUS EFIAPI CodeIslandSmmEntry(EFI_HANDLE image, EFI_SYSTEM_TABLE *system) {
  static EFI_GUID base2_guid = EFI_SMM_BASE2_PROTOCOL_GUID;
  static EFI_GUID cpu_guid = EFI_SMM_CPU_PROTOCOL_GUID;
  static EFI_GUID lock_guid = EFI_SMM_READY_TO_LOCK_PROTOCOL_GUID;
  EFI_BOOT_SERVICES *bs = system->BootServices;
  EFI_SMM_BASE2_PROTOCOL *base2 = 0;
  void *registration = 0;
  (void)image;
  if (EFI_IS_ERROR(bs->LocateProtocol(&base2_guid, 0, (void **)&base2)) ||
      EFI_IS_ERROR(base2->GetSmstLocation(base2, &g_smst))) {
    ci_log("codeisland: error: no SMM base2 protocol\n");
    return EFI_UNSUPPORTED;
  }
  learn_smram(bs);
  if (EFI_IS_ERROR(reserve(bs))) {
    ci_log("codeisland: error: cannot reserve mailbox/arena/SMRAM buffers\n");
    return EFI_OUT_OF_RESOURCES;
  }
  register_smram();
  if (EFI_IS_ERROR(publish(bs)))
    ci_log("codeisland: error: configuration table not installed\n");
  /* the mailbox is the host's: a page walk must never read or write it */
  if (ci_region_add(&g_engine, g_layout.mailbox_base, CI_MAILBOX_SIZE, CI_REGION_DRIVER) !=
      CI_ST_OK)
    ci_log("codeisland: error: mailbox not registered as the driver's\n");
  /* The memory policy of page walks (smm/README.md): unrestricted -- any page
   * but SMRAM and the mailbox -- only where the firmware is built without SMM
   * restricted memory access: the build define, or the platform's own EDK2
   * build saying so (firmware_flags from PcdCpuSmmRestrictedMemoryAccess). */
  if (CI_SMM_UNRESTRICTED || (g_layout.firmware_flags & CI_FIRMWARE_SMM_UNRESTRICTED)) {
    (void)ci_engine_set_memory_policy(&g_engine, CI_MEM_UNRESTRICTED);
    ci_log("codeisland: page walks=unrestricted\n");
  }
  if (ci_region_add(&g_engine, g_layout.arena_base, g_layout.arena_size,
                    CI_REGION_SOURCE | CI_REGION_DEST | CI_REGION_STACK) != CI_ST_OK) {
    ci_log("codeisland: error: arena overlaps SMRAM or the region table is full\n");
    return EFI_UNSUPPORTED;
  }
  if (EFI_IS_ERROR(g_smst->SmmLocateProtocol(&cpu_guid, 0, (void **)&g_cpu))) {
    ci_log("codeisland: error: no SMM CPU protocol\n");
    return EFI_UNSUPPORTED;
  }
  if (EFI_IS_ERROR(register_handler()))
    return EFI_UNSUPPORTED;
  if (EFI_IS_ERROR(g_smst->SmmRegisterProtocolNotify(&lock_guid, ready_to_lock, &registration)))
    ci_log("codeisland: error: ready-to-lock notification not registered\n");
  ci_log_hex("codeisland: mailbox=", g_layout.mailbox_base);
  ci_log_hex(" arena=", g_layout.arena_base);
  ci_log_hex(" size=", g_layout.arena_size);
  ci_log("\n");
  log_firmware_mode(g_layout.firmware_flags);
  return EFI_SUCCESS;
}
