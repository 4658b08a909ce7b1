"""A small, fast reader of .eh_frame: the [start, end) of every FDE.

pyelftools parses every CFA instruction of every FDE, which takes seconds on a large binary; the
planner only needs the ranges, so this reader walks the records and decodes just the CIE
augmentation (for the pointer encoding) and each FDE's pc_begin / pc_range.
"""

from __future__ import annotations

import struct

from ..errors import InputError

DW_EH_PE_OMIT = 0xFF
_FIXED = {0x00: "<Q", 0x02: "<H", 0x03: "<I", 0x04: "<Q", 0x0A: "<h", 0x0B: "<i", 0x0C: "<q"}


def _uleb(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(buf):
            raise InputError(".eh_frame is truncated inside a LEB128 number")
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _sleb(buf: bytes, pos: int) -> tuple[int, int]:
    start = pos
    value, pos = _uleb(buf, pos)
    bits = 7 * (pos - start)
    if value & (1 << (bits - 1)):
        value -= 1 << bits
    return value, pos


def _encoded(buf: bytes, pos: int, enc: int, field_addr: int) -> tuple[int, int]:
    fmt = enc & 0x0F
    if fmt == 0x01:
        value, end = _uleb(buf, pos)
    elif fmt == 0x09:
        value, end = _sleb(buf, pos)
    elif fmt in _FIXED:
        size = struct.calcsize(_FIXED[fmt])
        if pos + size > len(buf):
            raise InputError(".eh_frame is truncated inside an encoded pointer")
        (value,) = struct.unpack_from(_FIXED[fmt], buf, pos)
        end = pos + size
    else:
        raise InputError(f".eh_frame uses unsupported pointer encoding {enc:#x}")
    if enc & 0x70 == 0x10:  # pcrel: relative to the field itself
        value += field_addr
    return value & 0xFFFFFFFFFFFFFFFF, end


def _cie_encoding(buf: bytes, pos: int, end: int, section_addr: int) -> int:
    """Pointer encoding of a CIE's FDEs (DW_EH_PE_absptr unless 'R' says otherwise)."""
    version = buf[pos]
    pos += 1
    aug_end = buf.index(b"\0", pos, end)
    aug = buf[pos:aug_end].decode("ascii", "replace")
    pos = aug_end + 1
    if "eh" in aug:
        pos += 8
    _, pos = _uleb(buf, pos)  # code alignment
    _, pos = _sleb(buf, pos)  # data alignment
    if version == 1:
        pos += 1
    else:
        _, pos = _uleb(buf, pos)
    if not aug.startswith("z"):
        return 0x00
    _, pos = _uleb(buf, pos)  # augmentation length
    for ch in aug[1:]:
        if ch == "R":
            return buf[pos]
        if ch == "P":
            penc = buf[pos]
            _, pos = _encoded(buf, pos + 1, penc & 0x7F, section_addr + pos + 1)
        elif ch == "L":
            pos += 1
        elif ch not in "SB":
            break
    return 0x00


def fde_ranges(buf: bytes, section_addr: int) -> list[tuple[int, int]]:
    """[pc_begin, pc_begin + pc_range) of every FDE in an .eh_frame section's bytes."""
    out: list[tuple[int, int]] = []
    cies: dict[int, int] = {}
    pos = 0
    try:
        while pos + 4 <= len(buf):
            (length,) = struct.unpack_from("<I", buf, pos)
            if length == 0:
                break
            hdr = 4
            if length == 0xFFFFFFFF:
                (length,) = struct.unpack_from("<Q", buf, pos + 4)
                hdr = 12
            body = pos + hdr
            end = body + length
            if end > len(buf):
                raise InputError(".eh_frame record runs past the section end")
            (cie_id,) = struct.unpack_from("<I", buf, body)
            if cie_id == 0:
                cies[pos] = _cie_encoding(buf, body + 4, end, section_addr)
            else:
                cie_pos = body - cie_id
                enc = cies.get(cie_pos)
                if enc is None:
                    enc = _cie_encoding(buf, cie_pos + 8, len(buf), section_addr)
                    cies[cie_pos] = enc
                if enc != DW_EH_PE_OMIT:
                    field = body + 4
                    begin, nxt = _encoded(buf, field, enc, section_addr + field)
                    size, _ = _encoded(buf, nxt, enc & 0x0F, 0)
                    if size:
                        out.append((begin, begin + size))
            pos = end
    except (ValueError, IndexError, struct.error) as exc:
        raise InputError(f".eh_frame is corrupt near offset {pos:#x}: {exc}") from None
    return out
