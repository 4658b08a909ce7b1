"""UEFI/PI definitions the emulated firmware needs: GUIDs, status codes, table offsets.

Values from the UEFI spec (EFI_SYSTEM_TABLE, EFI_BOOT_SERVICES, memory types, status codes) and
PI spec vol. 4 (SMM system table, SmmBase2, SmmAccess2, SmmCpu, SmmSwDispatch2); x64 offsets.
"""

from __future__ import annotations

import uuid


def guid_bytes(text: str) -> bytes:
    """EFI_GUID as it lies in memory (first three fields little-endian)."""
    return uuid.UUID(text).bytes_le


def guid_text(raw: bytes) -> str:
    return str(uuid.UUID(bytes_le=bytes(raw[:16])))


SMM_BASE2_GUID = "f4ccbfb7-f6e0-47fd-9dd4-10a8f150c191"
SMM_ACCESS2_GUID = "c2702b74-800c-4131-8746-8fb5b89ce4ac"
SMM_CPU_GUID = "eb346b97-975f-4a9f-8b22-f8e92bb3d569"
SMM_SW_DISPATCH2_GUID = "18a3c6dc-5eea-48c8-a1c1-b53389f98999"
SMM_READY_TO_LOCK_GUID = "47b7fa8c-f4bd-4af6-8200-333086f0d2c8"

EFI_SUCCESS = 0
_ERR = 1 << 63
EFI_INVALID_PARAMETER = _ERR | 2
EFI_UNSUPPORTED = _ERR | 3
EFI_BUFFER_TOO_SMALL = _ERR | 5
EFI_OUT_OF_RESOURCES = _ERR | 9
EFI_NOT_FOUND = _ERR | 14
EFI_WARN_INTERRUPT_SOURCE_QUIESCED = 0x2000000000000001  # PI_ENCODE_WARNING(1): bit 61

# EFI_MEMORY_TYPE
MEMORY_TYPES = (
    "EfiReservedMemoryType", "EfiLoaderCode", "EfiLoaderData", "EfiBootServicesCode",
    "EfiBootServicesData", "EfiRuntimeServicesCode", "EfiRuntimeServicesData",
    "EfiConventionalMemory", "EfiUnusableMemory", "EfiACPIReclaimMemory", "EfiACPIMemoryNVS",
    "EfiMemoryMappedIO", "EfiMemoryMappedIOPortSpace", "EfiPalCode", "EfiPersistentMemory",
)  # fmt: skip
# Types that stay mapped in SMM after SmmReadyToLock under restricted memory access (FACTS.md):
# what the OS never reclaims.  Everything else outside SMRAM faults once locked.
SMM_ACCESSIBLE_TYPES = frozenset({0, 5, 6, 9, 10, 11, 12})
ALLOCATE_ANY_PAGES = 0

# EFI_BOOT_SERVICES after its 24-byte header, in order (UEFI spec 4.4).
BOOT_SERVICES = (
    "RaiseTPL", "RestoreTPL", "AllocatePages", "FreePages", "GetMemoryMap", "AllocatePool",
    "FreePool", "CreateEvent", "SetTimer", "WaitForEvent", "SignalEvent", "CloseEvent",
    "CheckEvent", "InstallProtocolInterface", "ReinstallProtocolInterface",
    "UninstallProtocolInterface", "HandleProtocol", "Reserved", "RegisterProtocolNotify",
    "LocateHandle", "LocateDevicePath", "InstallConfigurationTable", "LoadImage", "StartImage",
    "Exit", "UnloadImage", "ExitBootServices", "GetNextMonotonicCount", "Stall",
    "SetWatchdogTimer", "ConnectController", "DisconnectController", "OpenProtocol",
    "CloseProtocol", "OpenProtocolInformation", "ProtocolsPerHandle", "LocateHandleBuffer",
    "LocateProtocol", "InstallMultipleProtocolInterfaces", "UninstallMultipleProtocolInterfaces",
    "CalculateCrc32", "CopyMem", "SetMem", "CreateEventEx",
)  # fmt: skip

# EFI_SMM_SYSTEM_TABLE2 (PI vol. 4), slot offset -> name; data slots are filled separately.
SMST_SIZE = 240
SMST_SERVICES = {
    40: "SmmInstallConfigurationTable",
    48: "SmmIo.Mem.Read", 56: "SmmIo.Mem.Write", 64: "SmmIo.Io.Read", 72: "SmmIo.Io.Write",
    80: "SmmAllocatePool", 88: "SmmFreePool", 96: "SmmAllocatePages", 104: "SmmFreePages",
    112: "SmmStartupThisAp",
    168: "SmmInstallProtocolInterface", 176: "SmmUninstallProtocolInterface",
    184: "SmmHandleProtocol", 192: "SmmRegisterProtocolNotify", 200: "SmmLocateHandle",
    208: "SmmLocateProtocol", 216: "SmiManage", 224: "SmiHandlerRegister",
    232: "SmiHandlerUnRegister",
}  # fmt: skip
SMST_CURRENT_CPU = 120
SMST_NUMBER_OF_CPUS = 128
SMST_SAVE_STATE_SIZE = 136
SMST_SAVE_STATE = 144
SMST_NUMBER_OF_TABLES = 152
SMST_CONFIG_TABLE = 160

# EFI_SYSTEM_TABLE (x64)
ST_SIZE = 120
ST_BOOT_SERVICES = 96
ST_NUMBER_OF_TABLES = 104
ST_CONFIG_TABLE = 112
CONFIG_ENTRY_SIZE = 24  # EFI_GUID + VOID*

SYSTEM_TABLE_SIGNATURE = 0x5453595320494249  # "IBI SYST"
BOOT_SERVICES_SIGNATURE = 0x56524553544F4F42  # "BOOTSERV"
SMST_SIGNATURE = 0x54534D53  # "SMST"

SMRAM_DESCRIPTOR_SIZE = 32  # PhysicalStart, CpuStart, PhysicalSize, RegionState
EFI_SMRAM_OPEN = 0x1
EFI_ALLOCATED = 0x10
