"""FFS section streams (PI spec vol. 3, 2.2.4) and the LZMA GUID-defined section.

A section is a 4-byte header (24-bit size, type) — or 8 bytes when the size field is 0xFFFFFF —
followed by its body; sections in a stream are 4-byte aligned from the stream start.
"""

from __future__ import annotations

import lzma
import struct
import uuid
from dataclasses import dataclass

from ..errors import InputError

SECTION_GUID_DEFINED = 0x02
SECTION_PE32 = 0x10
SECTION_USER_INTERFACE = 0x15
SECTION_FV_IMAGE = 0x17
SECTION_RAW = 0x19
SECTION_MM_DEPEX = 0x1C
GUIDED_PROCESSING_REQUIRED = 0x01
LZMA_GUID = uuid.UUID("ee4e5898-3914-4259-9d6e-dc7bd79403cf")
GUID_DEFINED_HEADER = 24  # common header + GUID + DataOffset + Attributes
MAX_SMALL_SECTION = 0xFFFFFF
LZMA_DICT = 1 << 24  # what EDK2's LzmaCompress uses for OVMF (16 MiB)

SECTION_TYPES = {
    0x01: "compression",
    0x02: "guid defined",
    0x03: "disposable",
    0x10: "pe32",
    0x11: "pic",
    0x12: "te",
    0x13: "dxe depex",
    0x14: "version",
    0x15: "user interface",
    0x16: "compatibility16",
    0x17: "firmware volume image",
    0x18: "freeform subtype guid",
    0x19: "raw",
    0x1B: "pei depex",
    0x1C: "mm depex",
}


@dataclass
class Section:
    offset: int  # from the stream start
    type: int
    size: int  # header included
    header_size: int

    @property
    def type_name(self) -> str:
        return SECTION_TYPES.get(self.type, f"type {self.type:#x}")

    def body(self, stream: bytes) -> bytes:
        return stream[self.offset + self.header_size : self.offset + self.size]


def parse_sections(stream: bytes, what: str) -> list[Section]:
    """Split a section stream; InputError when a size runs past the stream."""
    out: list[Section] = []
    off = 0
    while off + 4 <= len(stream):
        size = int.from_bytes(stream[off : off + 3], "little")
        header = 4
        if size == MAX_SMALL_SECTION:
            if off + 8 > len(stream):
                raise InputError(f"{what}: section at {off:#x} is truncated")
            size = struct.unpack_from("<I", stream, off + 4)[0]
            header = 8
        if size < header or off + size > len(stream):
            raise InputError(f"{what}: section at {off:#x} has an impossible size {size:#x}")
        out.append(Section(off, stream[off + 3], size, header))
        off = (off + size + 3) & ~3
    return out


def section(kind: int, body: bytes) -> bytes:
    """One section with a small (4-byte) header."""
    size = 4 + len(body)
    if size >= MAX_SMALL_SECTION:
        raise InputError(f"section of {size:#x} bytes needs a large header (not supported)")
    return size.to_bytes(3, "little") + bytes([kind]) + body


@dataclass
class GuidDefined:
    guid: uuid.UUID
    data_offset: int
    attributes: int


def guid_defined_header(stream: bytes, sec: Section, what: str) -> GuidDefined:
    if sec.size < sec.header_size + 20:
        raise InputError(f"{what}: guid-defined section is truncated")
    base = sec.offset + sec.header_size
    guid = uuid.UUID(bytes_le=stream[base : base + 16])
    data_offset, attributes = struct.unpack_from("<HH", stream, base + 16)
    if not sec.header_size + 20 <= data_offset <= sec.size:
        raise InputError(f"{what}: guid-defined section data offset {data_offset} is invalid")
    return GuidDefined(guid, data_offset, attributes)


def lzma_decompress(blob: bytes, what: str) -> bytes:
    """Decode EDK2's LZMA ("alone" format: 5 property bytes + 64-bit size)."""
    if len(blob) < 13:
        raise InputError(f"{what}: LZMA stream is truncated")
    expected = struct.unpack_from("<Q", blob, 5)[0]
    try:
        out = lzma.decompress(blob, format=lzma.FORMAT_ALONE)
    except lzma.LZMAError as exc:
        raise InputError(f"{what}: LZMA data is corrupt ({exc})") from exc
    if len(out) != expected:
        raise InputError(f"{what}: LZMA header says {expected} bytes, stream gave {len(out)}")
    return out


def lzma_compress(data: bytes) -> bytes:
    """Encode as EDK2's LzmaCompress does (lc3 lp0 pb2, 16 MiB dictionary, known size).

    Python writes the "unknown size" marker (all ones) and an end marker; EDK2's decoder accepts
    the end marker once the real size is patched into header bytes 5..13.
    """
    filters = [{"id": lzma.FILTER_LZMA1, "preset": 9, "dict_size": LZMA_DICT}]
    out = bytearray(lzma.compress(data, format=lzma.FORMAT_ALONE, filters=filters))
    out[5:13] = struct.pack("<Q", len(data))
    return bytes(out)
