"""The plan document: encode to and decode from the binary format of plan.h.

`Plan.to_bytes` lays the tables out in their fixed order and seals the digest; `Plan.from_bytes`
is the host's twin of the engine's structural checks (magic, version, sizes, digest, maxima,
reserved fields), so that `plan show` rejects a corrupt file with one clear line.  Semantic checks
that need memory (regions, original bytes) stay in the engine.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass, field

from ..errors import PlanError
from . import layout as L
from .digest import digest64

_HEADER_SIZE = ctypes.sizeof(L.PlanHeader)
_DIGEST_OFFSET = L.PlanHeader.digest.offset

_LIMITS = {
    "island_count": (L.MAX_ISLANDS, "islands"),
    "fixup_count": (L.MAX_FIXUPS, "fix-ups"),
    "callsite_count": (L.MAX_CALLSITES, "call sites"),
    "chunk_count": (L.MAX_CHUNKS, "diff chunks"),
    "target_count": (L.MAX_TARGETS, "branch targets"),
    "rule_count": (L.MAX_RULES, "context rules"),
}


@dataclass
class Plan:
    """A relocation plan: one generation of islands to move."""

    plan_id: int = 0
    islands: list[L.Island] = field(default_factory=list)
    fixups: list[L.Fixup] = field(default_factory=list)
    callsites: list[L.Callsite] = field(default_factory=list)
    chunks: list[L.Chunk] = field(default_factory=list)
    targets: list[L.Target] = field(default_factory=list)
    rules: list[L.Rule] = field(default_factory=list)
    flags: int = 0

    def tables(self) -> list[list]:  # type: ignore[type-arg]
        return [self.islands, self.fixups, self.callsites, self.chunks, self.targets, self.rules]

    def place_in_address_space(self, space: int, cr3: int) -> None:
        """Every island (and its call sites) lives at virtual addresses in the page tables at
        cr3 (SPACE_USER: a process, SPACE_KERNEL), or SPACE_PHYSICAL with cr3 0.  The engine
        walks the tables itself; nothing here names a physical address."""
        if space not in (L.SPACE_PHYSICAL, L.SPACE_USER, L.SPACE_KERNEL):
            raise PlanError(f"unknown address space {space}")
        if space == L.SPACE_PHYSICAL and cr3:
            raise PlanError("a physical island has cr3 0")
        if space != L.SPACE_PHYSICAL and not cr3 & L.CR3_ADDR_MASK:
            raise PlanError("a virtual island needs the CR3 of its page tables")
        for isl in self.islands:
            isl.space, isl.cr3 = space, cr3

    @property
    def keep_copies(self) -> bool:
        """PLAN_KEEP_COPIES: a ROLLBACK of this plan leaves its copies in place (retired)."""
        return bool(self.flags & L.PLAN_KEEP_COPIES)

    @keep_copies.setter
    def keep_copies(self, keep: bool) -> None:
        self.flags &= ~L.PLAN_KEEP_COPIES
        if keep:
            self.flags |= L.PLAN_KEEP_COPIES

    @property
    def total_size(self) -> int:
        return _HEADER_SIZE + sum(
            len(rows) * ctypes.sizeof(rtype)
            for rows, (_, rtype) in zip(self.tables(), L.PLAN_TABLES, strict=True)
        )

    @property
    def copy_bytes(self) -> int:
        """Bytes the engine copies when every chunk differs."""
        return sum(int(c.length) for c in self.chunks)

    def header(self) -> L.PlanHeader:
        h = L.PlanHeader()
        h.magic = L.PLAN_MAGIC
        h.version = L.PLAN_VERSION
        h.header_size = _HEADER_SIZE
        h.total_size = self.total_size
        h.plan_id = self.plan_id
        h.flags = self.flags
        for rows, (count_field, _) in zip(self.tables(), L.PLAN_TABLES, strict=True):
            setattr(h, count_field, len(rows))
        return h

    def to_bytes(self) -> bytes:
        """Encode the plan and seal its digest; raises PlanError past a fixed maximum."""
        header = self.header()
        for count_field, (limit, what) in _LIMITS.items():
            if getattr(header, count_field) > limit:
                raise PlanError(f"plan has {getattr(header, count_field)} {what}, at most {limit}")
        if header.total_size > L.PLAN_MAX_SIZE:
            raise PlanError(f"plan is {header.total_size} bytes, at most {L.PLAN_MAX_SIZE}")
        out = bytearray(bytes(header))
        for rows in self.tables():
            for row in rows:
                out += bytes(row)
        digest = digest64(out)
        out[_DIGEST_OFFSET : _DIGEST_OFFSET + 8] = digest.to_bytes(8, "little")
        return bytes(out)

    @property
    def digest(self) -> int:
        return int.from_bytes(self.to_bytes()[_DIGEST_OFFSET : _DIGEST_OFFSET + 8], "little")

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> Plan:
        """Decode and structurally check a plan; raises PlanError naming the first problem."""
        raw = bytes(data)
        if len(raw) < _HEADER_SIZE:
            raise PlanError(
                f"plan is truncated: {len(raw)} bytes, a header alone is {_HEADER_SIZE}"
            )
        h = L.PlanHeader.from_bytes(raw)
        if h.magic != L.PLAN_MAGIC:
            raise PlanError(f"not a codeisland plan (magic {h.magic:#018x})")
        if not L.PLAN_VERSION_MIN <= h.version <= L.PLAN_VERSION:
            raise PlanError(
                f"plan version {h.version} is not supported (this tool reads "
                f"v{L.PLAN_VERSION_MIN}..v{L.PLAN_VERSION})"
            )
        if h.header_size != _HEADER_SIZE:
            raise PlanError(f"plan header size {h.header_size} is wrong (expected {_HEADER_SIZE})")
        for count_field, (limit, what) in _LIMITS.items():
            if getattr(h, count_field) > limit:
                raise PlanError(f"plan declares {getattr(h, count_field)} {what}, at most {limit}")
        plan = cls(plan_id=h.plan_id, flags=h.flags)
        expected = plan_size_for(h)
        if h.total_size != expected or len(raw) != h.total_size:
            raise PlanError(
                f"plan size is inconsistent: header says {h.total_size}, tables need {expected}, "
                f"file has {len(raw)} bytes"
            )
        sealed = bytearray(raw)
        sealed[_DIGEST_OFFSET : _DIGEST_OFFSET + 8] = bytes(8)
        if digest64(sealed) != h.digest:
            raise PlanError("plan digest does not match its bytes (corrupt or edited plan)")
        if h.flags & ~L.PLAN_FLAGS_KNOWN or any(h.reserved):
            raise PlanError("plan header has unknown flags or reserved fields set")
        offset = _HEADER_SIZE
        for rows, (count_field, rtype) in zip(plan.tables(), L.PLAN_TABLES, strict=True):
            size = ctypes.sizeof(rtype)
            for _ in range(getattr(h, count_field)):
                rows.append(rtype.from_bytes(raw, offset))
                offset += size
        if h.version == 1 and any(isl.space or isl.cr3 for isl in plan.islands):
            raise PlanError("plan v1 has reserved island fields set (v2's space and cr3)")
        return plan


def plan_size_for(header: L.PlanHeader) -> int:
    """Total size that the counts of `header` imply."""
    return _HEADER_SIZE + sum(
        getattr(header, count_field) * ctypes.sizeof(rtype) for count_field, rtype in L.PLAN_TABLES
    )
