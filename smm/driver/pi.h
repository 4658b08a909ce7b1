/*
 * The few UEFI and PI definitions the driver uses.
 *
 * Two sources, one set of names (EDK2's):
 * - built by EDK2 (CodeIslandSmm.inf defines CODEISLAND_EDK2_BUILD): EDK2 force-includes the
 *   module's AutoGen.h, which already declares UEFI and PI, so the driver takes EDK2's own
 *   headers; a second copy of EFI_GUID, UINTN, EFI_SUCCESS... would clash with them.
 * - built alone (make -C smm, clang for x86_64-unknown-windows): the declarations below,
 *   written from the UEFI 2.x and PI 1.x specifications (volume 4: SMM).  Only what is called
 *   is typed; the rest of each table is padding whose offsets are asserted, so a miscount
 *   cannot go unnoticed.
 * The driver code uses only what both provide (e.g. EFI_PHYSICAL_ADDRESS for page addresses,
 * non-const GUIDs for the boot services that take EFI_GUID *).
 */
#ifndef CI_PI_H
#define CI_PI_H

#ifdef CODEISLAND_EDK2_BUILD

#include <PiSmm.h>
#include <Library/PcdLib.h>
#include <Protocol/SmmAccess2.h>
#include <Protocol/SmmBase2.h>
#include <Protocol/SmmCpu.h>
#include <Protocol/SmmReadyToLock.h>
#include <Protocol/SmmSwDispatch2.h>

#define EFI_IS_ERROR(s) EFI_ERROR(s)

#else /* built alone */

#include <stddef.h>
#include <stdint.h>

#define EFIAPI __attribute__((ms_abi))

typedef uint64_t UINTN;
typedef UINTN EFI_STATUS;
typedef void *EFI_HANDLE;
typedef uint64_t EFI_PHYSICAL_ADDRESS;

#define EFI_SUCCESS 0ULL
#define EFI_ERROR_BIT (1ULL << 63)
#define EFI_UNSUPPORTED (EFI_ERROR_BIT | 3ULL)
#define EFI_BUFFER_TOO_SMALL (EFI_ERROR_BIT | 5ULL)
#define EFI_OUT_OF_RESOURCES (EFI_ERROR_BIT | 9ULL)
#define EFI_NOT_FOUND (EFI_ERROR_BIT | 14ULL)
/* PI status codes set bit 61 (PI vol. 1, EDK2's PI_ENCODE_WARNING), not UEFI's bit 62 */
#define EFI_WARN_INTERRUPT_SOURCE_QUIESCED 0x2000000000000001ULL
#define EFI_IS_ERROR(s) (((s) & EFI_ERROR_BIT) != 0)

typedef struct EFI_GUID {
  uint32_t d1;
  uint16_t d2, d3;
  uint8_t d4[8];
} EFI_GUID;

typedef struct EFI_TABLE_HEADER {
  uint64_t Signature;
  uint32_t Revision, HeaderSize, CRC32, Reserved;
} EFI_TABLE_HEADER;

/* EFI_ALLOCATE_TYPE, EFI_MEMORY_TYPE */
#define AllocateAnyPages 0u
#define EfiReservedMemoryType 0u
#define EfiRuntimeServicesCode 5u
#define EfiRuntimeServicesData 6u

/* ---- UEFI boot services (only the entries used) ------------------------ */

typedef struct EFI_BOOT_SERVICES {
  EFI_TABLE_HEADER Hdr;
  void *RaiseTPL, *RestoreTPL;
  EFI_STATUS(EFIAPI *AllocatePages)(uint32_t Type, uint32_t MemoryType, UINTN Pages,
                                    EFI_PHYSICAL_ADDRESS *Memory);
  void *pad1[18]; /* FreePages .. LocateDevicePath */
  EFI_STATUS(EFIAPI *InstallConfigurationTable)(EFI_GUID *Guid, void *Table);
  void *pad2[15]; /* LoadImage .. LocateHandleBuffer */
  EFI_STATUS(EFIAPI *LocateProtocol)(EFI_GUID *Protocol, void *Registration,
                                     void **Interface);
} EFI_BOOT_SERVICES;
_Static_assert(offsetof(EFI_BOOT_SERVICES, AllocatePages) == 40, "AllocatePages");
_Static_assert(offsetof(EFI_BOOT_SERVICES, InstallConfigurationTable) == 192, "InstallCT");
_Static_assert(offsetof(EFI_BOOT_SERVICES, LocateProtocol) == 320, "LocateProtocol");

typedef struct EFI_SYSTEM_TABLE {
  EFI_TABLE_HEADER Hdr;
  void *pad[9]; /* FirmwareVendor .. RuntimeServices */
  EFI_BOOT_SERVICES *BootServices;
} EFI_SYSTEM_TABLE;
_Static_assert(offsetof(EFI_SYSTEM_TABLE, BootServices) == 96, "BootServices");

/* ---- PI SMM ------------------------------------------------------------ */

typedef EFI_STATUS(EFIAPI *EFI_SMM_HANDLER_ENTRY_POINT2)(EFI_HANDLE DispatchHandle,
                                                         const void *Context, void *CommBuffer,
                                                         UINTN *CommBufferSize);
typedef EFI_STATUS(EFIAPI *EFI_SMM_NOTIFY_FN)(const EFI_GUID *Protocol, void *Interface,
                                              EFI_HANDLE Handle);

typedef struct EFI_SMM_SYSTEM_TABLE2 {
  EFI_TABLE_HEADER Hdr;
  void *pad0[7]; /* vendor, revision, InstallConfigurationTable, SmmIo (4) */
  EFI_STATUS(EFIAPI *SmmAllocatePool)(uint32_t PoolType, UINTN Size, void **Buffer);
  void *SmmFreePool;
  EFI_STATUS(EFIAPI *SmmAllocatePages)(uint32_t Type, uint32_t MemoryType, UINTN Pages,
                                       EFI_PHYSICAL_ADDRESS *Memory);
  void *SmmFreePages, *SmmStartupThisAp;
  UINTN CurrentlyExecutingCpu;
  UINTN NumberOfCpus;
  UINTN *CpuSaveStateSize;
  void **CpuSaveState;
  UINTN NumberOfTableEntries;
  void *SmmConfigurationTable;
  void *SmmInstallProtocolInterface, *SmmUninstallProtocolInterface, *SmmHandleProtocol;
  EFI_STATUS(EFIAPI *SmmRegisterProtocolNotify)(const EFI_GUID *Protocol,
                                                EFI_SMM_NOTIFY_FN Function,
                                                void **Registration);
  void *SmmLocateHandle;
  EFI_STATUS(EFIAPI *SmmLocateProtocol)(EFI_GUID *Protocol, void *Registration,
                                        void **Interface);
  void *SmiManage;
  EFI_STATUS(EFIAPI *SmiHandlerRegister)(EFI_SMM_HANDLER_ENTRY_POINT2 Handler,
                                         const EFI_GUID *HandlerType,
                                         EFI_HANDLE *DispatchHandle);
  void *SmiHandlerUnRegister;
} EFI_SMM_SYSTEM_TABLE2;
_Static_assert(offsetof(EFI_SMM_SYSTEM_TABLE2, SmmAllocatePool) == 80, "SmmAllocatePool");
_Static_assert(offsetof(EFI_SMM_SYSTEM_TABLE2, SmmAllocatePages) == 96, "SmmAllocatePages");
_Static_assert(offsetof(EFI_SMM_SYSTEM_TABLE2, CurrentlyExecutingCpu) == 120, "CurrentCpu");
_Static_assert(offsetof(EFI_SMM_SYSTEM_TABLE2, NumberOfCpus) == 128, "NumberOfCpus");
_Static_assert(offsetof(EFI_SMM_SYSTEM_TABLE2, CpuSaveState) == 144, "CpuSaveState");
_Static_assert(offsetof(EFI_SMM_SYSTEM_TABLE2, SmmRegisterProtocolNotify) == 192, "Notify");
_Static_assert(offsetof(EFI_SMM_SYSTEM_TABLE2, SmmLocateProtocol) == 208, "SmmLocateProtocol");
_Static_assert(offsetof(EFI_SMM_SYSTEM_TABLE2, SmiHandlerRegister) == 224, "SmiHandlerRegister");
_Static_assert(sizeof(EFI_SMM_SYSTEM_TABLE2) == 240, "SMST size");

typedef struct EFI_SMM_BASE2_PROTOCOL {
  EFI_STATUS(EFIAPI *InSmm)(const struct EFI_SMM_BASE2_PROTOCOL *This, uint8_t *InSmram);
  EFI_STATUS(EFIAPI *GetSmstLocation)(const struct EFI_SMM_BASE2_PROTOCOL *This,
                                      EFI_SMM_SYSTEM_TABLE2 **Smst);
} EFI_SMM_BASE2_PROTOCOL;

typedef struct EFI_SMRAM_DESCRIPTOR {
  uint64_t PhysicalStart, CpuStart, PhysicalSize, RegionState;
} EFI_SMRAM_DESCRIPTOR;

typedef struct EFI_SMM_ACCESS2_PROTOCOL {
  void *Open, *Close, *Lock;
  EFI_STATUS(EFIAPI *GetCapabilities)(const struct EFI_SMM_ACCESS2_PROTOCOL *This,
                                      UINTN *SmramMapSize, EFI_SMRAM_DESCRIPTOR *SmramMap);
  uint8_t LockState, OpenState;
} EFI_SMM_ACCESS2_PROTOCOL;

typedef struct EFI_SMM_CPU_PROTOCOL {
  EFI_STATUS(EFIAPI *ReadSaveState)(const struct EFI_SMM_CPU_PROTOCOL *This, UINTN Width,
                                    uint32_t Register, UINTN CpuIndex, void *Buffer);
  EFI_STATUS(EFIAPI *WriteSaveState)(const struct EFI_SMM_CPU_PROTOCOL *This, UINTN Width,
                                     uint32_t Register, UINTN CpuIndex, const void *Buffer);
} EFI_SMM_CPU_PROTOCOL;

typedef struct EFI_SMM_SW_REGISTER_CONTEXT {
  UINTN SwSmiInputValue;
} EFI_SMM_SW_REGISTER_CONTEXT;

typedef struct EFI_SMM_SW_DISPATCH2_PROTOCOL {
  EFI_STATUS(EFIAPI *Register)(const struct EFI_SMM_SW_DISPATCH2_PROTOCOL *This,
                               EFI_SMM_HANDLER_ENTRY_POINT2 DispatchFunction,
                               EFI_SMM_SW_REGISTER_CONTEXT *RegisterContext,
                               EFI_HANDLE *DispatchHandle);
  void *UnRegister;
  UINTN MaximumSwiValue;
} EFI_SMM_SW_DISPATCH2_PROTOCOL;

/* Protocol GUIDs (PI 1.x vol. 4) */
#define EFI_SMM_BASE2_PROTOCOL_GUID \
  {0xf4ccbfb7, 0xf6e0, 0x47fd, {0x9d, 0xd4, 0x10, 0xa8, 0xf1, 0x50, 0xc1, 0x91}}
#define EFI_SMM_ACCESS2_PROTOCOL_GUID \
  {0xc2702b74, 0x800c, 0x4131, {0x87, 0x46, 0x8f, 0xb5, 0xb8, 0x9c, 0xe4, 0xac}}
#define EFI_SMM_CPU_PROTOCOL_GUID \
  {0xeb346b97, 0x975f, 0x4a9f, {0x8b, 0x22, 0xf8, 0xe9, 0x2b, 0xb3, 0xd5, 0x69}}
#define EFI_SMM_SW_DISPATCH2_PROTOCOL_GUID \
  {0x18a3c6dc, 0x5eea, 0x48c8, {0xa1, 0xc1, 0xb5, 0x33, 0x89, 0xf9, 0x89, 0x99}}
#define EFI_SMM_READY_TO_LOCK_PROTOCOL_GUID \
  {0x47b7fa8c, 0xf4bd, 0x4af6, {0x82, 0x00, 0x33, 0x30, 0x86, 0xf0, 0xd2, 0xc8}}

#endif /* CODEISLAND_EDK2_BUILD */

#endif /* CI_PI_H */
