"""Build the FFS file that carries the SMM driver: MM_DEPEX, PE32 and USER_INTERFACE sections.

Rules (PI spec vol. 3, and FACTS.md for what Debian's OVMF checks): type 0x0A (SMM), attributes 0,
state 0xF8 with erase polarity 1, header checksum over the 24 header bytes with State and the file
checksum counted as 0, file checksum 0xAA (no FFS_ATTRIB_CHECKSUM), sections 4-byte aligned.
"""

from __future__ import annotations

import struct
import uuid

from ..errors import InputError
from . import sections as S
from .volume import FFS_FIXED_CHECKSUM, FFS_HEADER_SIZE, FFS_STATE_VALID, checksum8

FILE_TYPE_SMM = 0x0A
SMM_CPU_PROTOCOL = uuid.UUID("eb346b97-975f-4a9f-8b22-f8e92bb3d569")
DEPEX_PUSH, DEPEX_AND, DEPEX_TRUE, DEPEX_END = 0x02, 0x03, 0x06, 0x08
PE_MACHINE_X64 = 0x8664
PE32PLUS_MAGIC = 0x20B
SUBSYSTEMS = {11: "EFI boot service driver", 12: "EFI runtime driver"}


def default_depex() -> bytes:
    """PUSH gEfiSmmCpuProtocolGuid, END: dispatched once SMM CPU services exist."""
    return bytes([DEPEX_PUSH]) + SMM_CPU_PROTOCOL.bytes_le + bytes([DEPEX_END])


def check_depex(depex: bytes, what: str) -> None:
    """Walk the opcodes so a truncated or foreign file is refused before it reaches firmware."""
    pos = 0
    while pos < len(depex):
        op = depex[pos]
        if op == DEPEX_PUSH:
            pos += 17
        elif op in (DEPEX_AND, 0x04, 0x05, DEPEX_TRUE, 0x07):  # AND OR NOT TRUE FALSE
            pos += 1
        elif op == DEPEX_END:
            if pos != len(depex) - 1:
                raise InputError(f"{what}: bytes after the END opcode")
            return
        else:
            raise InputError(f"{what}: unknown dependency opcode {op:#x} at {pos}")
    raise InputError(f"{what}: dependency expression has no END opcode")


def check_driver(pe: bytes, what: str) -> int:
    """Refuse anything but an x64 PE32+ UEFI driver; returns its subsystem."""
    if len(pe) < 0x40 or pe[:2] != b"MZ":
        raise InputError(f"{what}: not a PE image (no MZ header)")
    (lfanew,) = struct.unpack_from("<I", pe, 0x3C)
    if lfanew + 24 + 70 > len(pe) or pe[lfanew : lfanew + 4] != b"PE\0\0":
        raise InputError(f"{what}: not a PE image (no PE signature)")
    (machine,) = struct.unpack_from("<H", pe, lfanew + 4)
    opt = lfanew + 24
    (magic,) = struct.unpack_from("<H", pe, opt)
    (subsystem,) = struct.unpack_from("<H", pe, opt + 68)
    if machine != PE_MACHINE_X64 or magic != PE32PLUS_MAGIC:
        raise InputError(f"{what}: not an x86-64 PE32+ image (machine {machine:#x})")
    if subsystem not in SUBSYSTEMS:
        raise InputError(f"{what}: subsystem {subsystem} is not a UEFI driver (11 or 12)")
    return int(subsystem)


def ui_name(name: str) -> bytes:
    return name.encode("utf-16-le") + b"\0\0"


def build_smm_file(guid: uuid.UUID, pe: bytes, depex: bytes, name: str) -> bytes:
    """The whole FFS file, checksums set, ready to be placed 8-byte aligned in a volume."""
    body = bytearray()
    for kind, payload in (
        (S.SECTION_MM_DEPEX, depex),
        (S.SECTION_PE32, pe),
        (S.SECTION_USER_INTERFACE, ui_name(name)),
    ):
        body += b"\0" * (-len(body) % 4)
        body += S.section(kind, payload)
    size = FFS_HEADER_SIZE + len(body)
    if size >= 1 << 24:
        raise InputError(f"driver file of {size:#x} bytes would need a large FFS header")
    header = bytearray(guid.bytes_le + b"\0\0" + bytes([FILE_TYPE_SMM, 0]))
    header += size.to_bytes(3, "little")
    header += b"\0"  # State counts as 0 for the header checksum
    header[16] = checksum8(bytes(header))
    header[17] = FFS_FIXED_CHECKSUM
    header[23] = FFS_STATE_VALID
    return bytes(header) + bytes(body)
