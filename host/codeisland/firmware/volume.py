"""Firmware volumes (PI spec vol. 3, 3.2.1) and the FFS files inside them.

Headers are decoded with edk2-pytool-library's EfiFirmwareVolumeHeader and
EfiFirmwareFileSystemHeader; what that library does not provide (walking the files, free space,
checksums for a rebuilt file) is here.

    +---------------------------+ 0
    | EFI_FIRMWARE_VOLUME_HEADER|  HeaderLength (block map included), 16-bit checksum = 0
    | ext header (optional)     |  at ExtHeaderOffset
    +---------------------------+ first file, 8-byte aligned from the FV start
    | FFS file | FFS file | ... |  each 8-byte aligned, 24-byte header (+4 for a large file)
    +---------------------------+ free: all bytes = 0xFF (erase polarity 1)
    |           0xFF ...        |
    +---------------------------+ FvLength
"""

from __future__ import annotations

import io
import struct
import uuid
from dataclasses import dataclass, field

from edk2toollib.uefi.pi_firmware_file import EfiFirmwareFileSystemHeader
from edk2toollib.uefi.pi_firmware_volume import EfiFirmwareVolumeHeader

from ..errors import InputError

FFS2_GUID = uuid.UUID("8c8ce578-8a3d-4f1c-9935-896185c32dd3")
FFS3_GUID = uuid.UUID("5473c07a-3dcb-4dca-bd6f-1e9689e7349a")
FV_HEADER_MIN = 56 + 16  # header + one block map entry + terminator
FFS_HEADER_SIZE = 24
FFS_LARGE_HEADER_SIZE = 32
FFS_ATTRIB_LARGE_FILE = 0x01
FFS_ATTRIB_CHECKSUM = 0x40
FVB2_ERASE_POLARITY = 0x800
FFS_FIXED_CHECKSUM = 0xAA
FFS_STATE_VALID = 0xF8  # DATA_VALID with erase polarity 1 (bits cleared from 0xFF)

FILE_TYPES = {
    0x01: "raw",
    0x02: "freeform",
    0x03: "security core",
    0x04: "pei core",
    0x05: "dxe core",
    0x06: "peim",
    0x07: "driver",
    0x08: "combined peim/driver",
    0x09: "application",
    0x0A: "smm",
    0x0B: "firmware volume image",
    0x0C: "combined smm/dxe",
    0x0D: "smm core",
    0xF0: "padding",
}


def checksum8(data: bytes) -> int:
    """The byte that makes `data` + it sum to 0 mod 256."""
    return (-sum(data)) & 0xFF


def checksum16(data: bytes) -> int:
    """Sum of the little-endian 16-bit words of `data`, mod 65536."""
    return sum(struct.unpack(f"<{len(data) // 2}H", data[: len(data) // 2 * 2])) & 0xFFFF


@dataclass
class FfsFile:
    """One file of a volume: where it is and what its header says."""

    offset: int  # from the volume start
    guid: uuid.UUID
    type: int
    attributes: int
    size: int  # whole file, header included
    state: int
    header_size: int

    @property
    def type_name(self) -> str:
        return FILE_TYPES.get(self.type, f"type {self.type:#x}")

    def body(self, fv: bytes) -> bytes:
        return fv[self.offset + self.header_size : self.offset + self.size]


@dataclass
class Volume:
    """A parsed firmware volume (a bytes view; nothing is copied until asked)."""

    data: bytes
    fs_guid: uuid.UUID
    length: int
    attributes: int
    header_length: int
    first_file: int
    files: list[FfsFile] = field(default_factory=list)
    end_of_files: int = 0

    @property
    def free_offset(self) -> int:
        """Where a new file may go (8-byte aligned end of the last file)."""
        return align(self.end_of_files, 8)

    @property
    def free_bytes(self) -> int:
        return max(0, self.length - self.free_offset)

    def find(self, guid: uuid.UUID) -> FfsFile | None:
        return next((f for f in self.files if f.guid == guid), None)


def align(value: int, alignment: int) -> int:
    return (value + alignment - 1) & ~(alignment - 1)


def is_volume(data: bytes, offset: int = 0) -> bool:
    return data[offset + 40 : offset + 44] == b"_FVH"


def parse_volume(data: bytes, what: str = "firmware volume") -> Volume:
    """Parse a firmware volume at the start of `data`; InputError naming the first problem."""
    if len(data) < FV_HEADER_MIN or not is_volume(data):
        raise InputError(f"{what}: no firmware volume signature (_FVH)")
    hdr = EfiFirmwareVolumeHeader().load_from_file(io.BytesIO(data))
    if hdr.FvLength > len(data) or hdr.HeaderLength < FV_HEADER_MIN or hdr.HeaderLength % 2:
        raise InputError(
            f"{what}: header says {hdr.FvLength:#x} bytes (header {hdr.HeaderLength}), "
            f"only {len(data):#x} present"
        )
    if checksum16(data[: hdr.HeaderLength]) != 0:
        raise InputError(f"{what}: header checksum is wrong (corrupt volume)")
    if hdr.FileSystemGuid not in (FFS2_GUID, FFS3_GUID):
        raise InputError(f"{what}: file system {hdr.FileSystemGuid} is not FFS2/FFS3")
    if not hdr.Attributes & FVB2_ERASE_POLARITY:
        raise InputError(f"{what}: erase polarity 0 is not supported")
    first = hdr.HeaderLength
    if hdr.ExtHeaderOffset:
        ext_size = struct.unpack_from("<I", data, hdr.ExtHeaderOffset + 16)[0]
        first = hdr.ExtHeaderOffset + ext_size
    vol = Volume(
        data=data[: hdr.FvLength],
        fs_guid=hdr.FileSystemGuid,
        length=hdr.FvLength,
        attributes=hdr.Attributes,
        header_length=hdr.HeaderLength,
        first_file=align(first, 8),
    )
    _walk_files(vol, what)
    return vol


def _walk_files(vol: Volume, what: str) -> None:
    off = vol.first_file
    vol.end_of_files = off
    data = vol.data
    while off + FFS_HEADER_SIZE <= vol.length:
        if data[off : off + FFS_HEADER_SIZE] == b"\xff" * FFS_HEADER_SIZE:
            break  # free space starts here
        hdr = EfiFirmwareFileSystemHeader().load_from_file(io.BytesIO(data[off : off + 24]))
        size, header_size = hdr.get_size(), FFS_HEADER_SIZE
        if hdr.Attributes & FFS_ATTRIB_LARGE_FILE:
            size = struct.unpack_from("<Q", data, off + 24)[0]
            header_size = FFS_LARGE_HEADER_SIZE
        if size < header_size or off + size > vol.length:
            raise InputError(f"{what}: file at {off:#x} has an impossible size {size:#x}")
        vol.files.append(
            FfsFile(off, hdr.FileSystemGuid, hdr.Type, hdr.Attributes, size, hdr.State, header_size)
        )
        off += size
        vol.end_of_files = off
        off = align(off, 8)
    tail = data[vol.free_offset :]
    if tail.count(0xFF) != len(tail):
        raise InputError(f"{what}: bytes after the last file are not free space (0xFF)")
