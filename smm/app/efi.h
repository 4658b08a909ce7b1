/*
 * The few UEFI definitions the target app needs (UEFI 2.x, x64 offsets), declared here so the
 * app builds with clang alone.  Only the members the app calls are typed; the others are
 * placeholders that keep the offsets right.
 */
#ifndef CI_APP_EFI_H
#define CI_APP_EFI_H

#include <stdint.h>

#define EFIAPI __attribute__((ms_abi))
typedef uint64_t EFI_STATUS;
typedef void *EFI_HANDLE;
typedef uint16_t CHAR16;

typedef struct {
  uint32_t d1;
  uint16_t d2, d3;
  uint8_t d4[8];
} EFI_GUID;

typedef struct {
  uint64_t Signature;
  uint32_t Revision, HeaderSize, CRC32, Reserved;
} EFI_TABLE_HEADER;

typedef struct EFI_TEXT_OUT {
  void *Reset;
  EFI_STATUS(EFIAPI *OutputString)(struct EFI_TEXT_OUT *This, const CHAR16 *String);
} EFI_TEXT_OUT;

typedef struct {
  EFI_TABLE_HEADER Hdr;
  void *GetTime, *SetTime, *GetWakeupTime, *SetWakeupTime, *SetVirtualAddressMap,
      *ConvertPointer, *GetVariable, *GetNextVariableName, *SetVariable,
      *GetNextHighMonotonicCount;
  void(EFIAPI *ResetSystem)(uint32_t Type, EFI_STATUS Status, uint64_t Size, void *Data);
} EFI_RUNTIME_SERVICES;

typedef struct {
  EFI_TABLE_HEADER Hdr;
  void *fn[28]; /* RaiseTPL .. GetNextMonotonicCount */
  EFI_STATUS(EFIAPI *Stall)(uint64_t Microseconds);
  EFI_STATUS(EFIAPI *SetWatchdogTimer)(uint64_t Timeout, uint64_t Code, uint64_t Size, void *Data);
} EFI_BOOT_SERVICES;

typedef struct {
  EFI_GUID VendorGuid;
  void *VendorTable;
} EFI_CONFIGURATION_TABLE;

typedef struct {
  EFI_TABLE_HEADER Hdr;
  CHAR16 *FirmwareVendor;
  uint32_t FirmwareRevision;
  EFI_HANDLE ConsoleInHandle;
  void *ConIn;
  EFI_HANDLE ConsoleOutHandle;
  EFI_TEXT_OUT *ConOut;
  EFI_HANDLE StandardErrorHandle;
  void *StdErr;
  EFI_RUNTIME_SERVICES *RuntimeServices;
  EFI_BOOT_SERVICES *BootServices;
  uint64_t NumberOfTableEntries;
  EFI_CONFIGURATION_TABLE *ConfigurationTable;
} EFI_SYSTEM_TABLE;

#define EFI_RESET_SHUTDOWN 2u

_Static_assert(__builtin_offsetof(EFI_SYSTEM_TABLE, ConOut) == 64, "ConOut");
_Static_assert(__builtin_offsetof(EFI_SYSTEM_TABLE, ConfigurationTable) == 112, "config");
_Static_assert(__builtin_offsetof(EFI_RUNTIME_SERVICES, ResetSystem) == 104, "ResetSystem");
_Static_assert(__builtin_offsetof(EFI_BOOT_SERVICES, Stall) == 248, "Stall");
_Static_assert(__builtin_offsetof(EFI_BOOT_SERVICES, SetWatchdogTimer) == 256, "Watchdog");

#endif
