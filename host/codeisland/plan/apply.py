"""The engine's byte transformations, in Python: what a destination must hold after STAGE.

This is the host's statement of the engine semantics in plan.h: the planner uses it to compute
chunk digests, `verify` uses it to check fix-ups by re-decoding the copy, and tests compare it
with what the real driver wrote.  Keep it in step with smm/core.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import TYPE_CHECKING

from ..errors import PlanError
from . import layout as L
from .digest import digest64

if TYPE_CHECKING:
    from .document import Plan

_S32 = (-(1 << 31), (1 << 31) - 1)


def _rel32(value: int, what: str) -> int:
    if not _S32[0] <= value <= _S32[1]:
        raise PlanError(f"{what}: displacement {value:#x} does not fit rel32")
    return value


def relocated_bytes(original: bytes, src: int, dst: int, fixups: list[L.Fixup]) -> bytes:
    """Return the island's bytes as they must stand at `dst`.

    `original` are the island's bytes at `src`; every fix-up is checked against them exactly as
    the engine checks (FIXUP_MISMATCH) and re-targeted (FIXUP_RANGE).
    """
    out = bytearray(original)
    for fx in fixups:
        off = int(fx.offset)
        if fx.kind in (L.FIXUP_REL32, L.FIXUP_RIPREL32):
            if off + 4 > len(out):
                raise PlanError(f"fix-up at +{off:#x} lies outside the island")
            (old,) = struct.unpack_from("<i", original, off)
            pc_old = src + off + fx.pc_bias
            if pc_old + old != fx.target:
                raise PlanError(
                    f"fix-up at +{off:#x}: original resolves to {pc_old + old:#x}, "
                    f"plan says {fx.target:#x}"
                )
            new = _rel32(int(fx.target) - (dst + off + fx.pc_bias), f"fix-up at +{off:#x}")
            struct.pack_into("<i", out, off, new)
        elif fx.kind == L.FIXUP_ABS64:
            if off + 8 > len(out):
                raise PlanError(f"fix-up at +{off:#x} lies outside the island")
            (old,) = struct.unpack_from("<Q", original, off)
            if old != fx.target or not src <= fx.target < src + len(original):
                raise PlanError(f"abs64 fix-up at +{off:#x} does not point into its island")
            struct.pack_into("<Q", out, off, int(fx.target) - src + dst)
        else:
            raise PlanError(f"fix-up at +{off:#x} has unknown kind {fx.kind}")
    return bytes(out)


def entry_patch(island: L.Island) -> bytes:
    """The bytes COMMIT writes at island.src (empty for ENTRY_NONE)."""
    kind = island.flags & L.ISLAND_ENTRY_MASK
    if kind == L.ISLAND_ENTRY_NONE:
        return b""
    if kind == L.ISLAND_ENTRY_REL32:
        rel = _rel32(int(island.dst) - (int(island.src) + L.ENTRY_REL32_LEN), "entry jump")
        return b"\xe9" + struct.pack("<i", rel)
    if kind == L.ISLAND_ENTRY_ABS64:
        return b"\xff\x25\x00\x00\x00\x00" + struct.pack("<Q", int(island.dst))
    raise PlanError(f"island {island.id} has an invalid entry kind")


def make_chunks(index: int, final: bytes, chunk_size: int = 1024) -> list[L.Chunk]:
    """Tile an island's final bytes into diff chunks with their digests."""
    if not 0 < chunk_size <= L.MAX_CHUNK_SIZE:
        raise PlanError(f"chunk size {chunk_size} is outside 1..{L.MAX_CHUNK_SIZE}")
    chunks = []
    for off in range(0, len(final), chunk_size):
        piece = final[off : off + chunk_size]
        chunk = L.Chunk()
        chunk.island = index
        chunk.offset = off
        chunk.length = len(piece)
        chunk.digest = digest64(piece)
        chunks.append(chunk)
    return chunks


def copies_as_planned(
    plan: Plan, original: Callable[[int, int], bytes], read: Callable[[int, int], bytes]
) -> bool:
    """Every copy of `plan` holds its island's `original` bytes with the fix-ups applied, every
    entry its jump, every re-pointed call site a call to the copy, as `read` finds them."""
    for k, isl in enumerate(plan.islands):
        src, dst, size = int(isl.src), int(isl.dst), int(isl.size)
        fixups = [f for f in plan.fixups if f.island == k]
        if read(dst, size) != relocated_bytes(original(src, size), src, dst, fixups):
            return False
        patch = entry_patch(isl)
        if patch and read(src, len(patch)) != patch:
            return False
    for cs in plan.callsites:
        rel = int(plan.islands[cs.island].dst) - (int(cs.insn) + 5)
        if read(int(cs.insn), 5) != bytes([cs.opcode]) + (rel & 0xFFFFFFFF).to_bytes(4, "little"):
            return False
    return True
