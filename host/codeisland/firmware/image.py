"""The layout of an OVMF-style flash image, as found and as rebuilt.

    flash image
    +--------------------------------------+ 0
    | FVMAIN_COMPACT (FFS2)                |
    |   FV_IMAGE file                      |
    |     GUID-defined section, LZMA       |--decompress--> section stream
    |   free (0xFF)                        |                  raw pad | FV image: PEIFV
    +--------------------------------------+                  raw pad | FV image: DXEFV
    | SECFV (untouched)                    |                  (DXEFV size is fixed: SEC checks it)
    +--------------------------------------+ end

`find_compressed_dxe` locates the DXE volume through that chain; `rebuild` puts a modified DXE
volume back, recompressing and fixing every size and checksum on the way out.  Anything that does
not match this shape is refused: we only write images we understand.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass

from ..errors import InputError
from . import sections as S
from .volume import (
    FFS_FIXED_CHECKSUM,
    FFS_HEADER_SIZE,
    FfsFile,
    Volume,
    checksum8,
    is_volume,
    parse_volume,
)

FILE_TYPE_FV_IMAGE = 0x0B
FILE_TYPE_DXE_CORE = 0x05
FILE_TYPE_SECURITY_CORE = 0x03
SECTION_TE = 0x12
MACHINE_X64 = 0x8664


def top_volumes(raw: bytes) -> list[tuple[int, Volume]]:
    """The volumes laid end to end in a flash image; InputError if there is none at offset 0."""
    if not is_volume(raw):
        raise InputError("not a UEFI firmware image: no firmware volume at offset 0")
    out = []
    off = 0
    while off < len(raw) and is_volume(raw, off):
        vol = parse_volume(raw[off:], f"volume at {off:#x}")
        out.append((off, vol))
        off += vol.length
    return out


@dataclass
class CompressedDxe:
    """Where the DXE volume sits inside the image, and everything needed to rebuild the chain."""

    outer_offset: int
    outer: Volume
    fv_file: FfsFile
    guided: S.Section  # the LZMA section, offsets within the file body
    guided_hdr: S.GuidDefined
    stream: bytes  # decompressed section stream
    dxe_section: S.Section  # the FV image section holding DXE, offsets within `stream`
    dxe: Volume


def find_compressed_dxe(raw: bytes) -> CompressedDxe:
    for off, vol in top_volumes(raw):
        for f in vol.files:
            if f.type != FILE_TYPE_FV_IMAGE:
                continue
            found = _dxe_in_file(off, vol, f)
            if found is not None:
                return found
    raise InputError(
        "image layout not understood: no LZMA-compressed volume holding the DXE core "
        "(expected an OVMF-style FVMAIN_COMPACT)"
    )


def _dxe_in_file(off: int, vol: Volume, f: FfsFile) -> CompressedDxe | None:
    body = f.body(vol.data)
    secs = S.parse_sections(body, f"file {f.guid}")
    if len(secs) != 1 or secs[0].type != S.SECTION_GUID_DEFINED:
        return None
    hdr = S.guid_defined_header(body, secs[0], f"file {f.guid}")
    if hdr.guid != S.LZMA_GUID:
        return None
    payload = body[secs[0].offset + hdr.data_offset : secs[0].offset + secs[0].size]
    stream = S.lzma_decompress(payload, f"file {f.guid}")
    for sec in S.parse_sections(stream, "compressed volume stream"):
        if sec.type != S.SECTION_FV_IMAGE:
            continue
        inner = parse_volume(sec.body(stream), f"volume in file {f.guid}")
        if any(x.type == FILE_TYPE_DXE_CORE for x in inner.files):
            return CompressedDxe(off, vol, f, secs[0], hdr, stream, sec, inner)
    return None


def rebuild(raw: bytes, where: CompressedDxe, new_dxe: bytes) -> bytes:
    """The image with `new_dxe` (same length as the old DXE volume) in place of the old one."""
    if len(new_dxe) != where.dxe.length:
        raise InputError("internal: a rebuilt DXE volume must keep its size")
    sec = where.dxe_section
    start = sec.offset + sec.header_size
    stream = where.stream[:start] + new_dxe + where.stream[start + len(new_dxe) :]
    packed = S.lzma_compress(stream)
    guided = _guid_defined(where.guided_hdr, packed)
    new_file = _fv_image_file(where.outer, where.fv_file, guided)
    outer = bytearray(where.outer.data)
    f = where.fv_file
    limit = _next_file_offset(where.outer, f)
    if f.offset + len(new_file) > limit:
        raise InputError(
            f"the recompressed volume needs {len(new_file):#x} bytes, "
            f"only {limit - f.offset:#x} are available in the outer volume"
        )
    outer[f.offset : limit] = new_file + b"\xff" * (limit - f.offset - len(new_file))
    out = bytearray(raw)
    out[where.outer_offset : where.outer_offset + len(outer)] = outer
    return bytes(out)


def _guid_defined(hdr: S.GuidDefined, payload: bytes) -> bytes:
    """A GUID-defined section with the original GUID, data offset and attributes."""
    head = hdr.guid.bytes_le + struct.pack("<HH", hdr.data_offset, hdr.attributes)
    head += b"\0" * (hdr.data_offset - S.GUID_DEFINED_HEADER)
    return S.section(S.SECTION_GUID_DEFINED, head + payload)


def _fv_image_file(vol: Volume, f: FfsFile, body: bytes) -> bytes:
    if f.header_size != FFS_HEADER_SIZE or f.attributes & 0x40:
        raise InputError("image layout not understood: the compressed file has unusual attributes")
    size = FFS_HEADER_SIZE + len(body)
    if size >= 1 << 24:
        raise InputError("the recompressed volume is too large for a small FFS file")
    header = bytearray(vol.data[f.offset : f.offset + FFS_HEADER_SIZE])
    header[16] = header[17] = 0
    header[20:23] = size.to_bytes(3, "little")
    state = header[23]
    header[23] = 0
    header[16] = checksum8(bytes(header))
    header[17] = FFS_FIXED_CHECKSUM
    header[23] = state
    return bytes(header) + body


def _next_file_offset(vol: Volume, f: FfsFile) -> int:
    later = [x.offset for x in vol.files if x.offset > f.offset]
    return min(later) if later else vol.length


def file_guid(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError as exc:
        raise InputError(f"{text!r} is not a GUID") from exc


def sec_core_machine(raw: bytes) -> int | None:
    """The PE machine type of the image's SEC core (IA32 0x14c, X64 0x8664), from its PE32 or
    TE section in an uncompressed top volume; None when there is none to read."""
    for _, vol in top_volumes(raw):
        for f in vol.files:
            if f.type != FILE_TYPE_SECURITY_CORE:
                continue
            body = f.body(vol.data)
            for sec in S.parse_sections(body, f"SEC core {f.guid}"):
                machine = _image_machine(sec.type, sec.body(body))
                if machine is not None:
                    return machine
    return None


def _image_machine(kind: int, image: bytes) -> int | None:
    if kind == SECTION_TE and image[:2] == b"VZ" and len(image) >= 4:
        return int.from_bytes(image[2:4], "little")  # EFI_TE_IMAGE_HEADER.Machine
    if kind == S.SECTION_PE32 and image[:2] == b"MZ" and len(image) >= 0x40:
        pe = int.from_bytes(image[0x3C:0x40], "little")  # e_lfanew
        if image[pe : pe + 4] == b"PE\0\0" and len(image) >= pe + 6:
            return int.from_bytes(image[pe + 4 : pe + 6], "little")
    return None


def has_x64_pei(raw: bytes) -> bool:
    """OVMF's SEC core is built for its PEI arch: X64 here means OvmfPkgX64-style X64 PEI,
    which with SMM has no S3 resume (PlatformPei stops while the machine offers S3)."""
    try:
        return sec_core_machine(raw) == MACHINE_X64
    except InputError:
        return False
