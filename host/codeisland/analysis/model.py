"""The analysis result: islands (candidate functions) with fix-up sites, and the map of them.

Addresses are absolute in the *current* address space of the map: the image's link addresses, or
after `IslandMap.rebased(load_base)` the addresses where a loader put it (every start, fix-up
target, call target and call site moves by the same bias).  Island names never change.

Fix-up semantics are those of plan.h: a REL32/RIPREL32 field at `offset` inside the island
resolves to (island.start + offset + pc_bias) + value == target.  References that stay inside the
island need no fix-up (the copy keeps its relative layout), so they are internal targets, not
fix-ups.
"""

from __future__ import annotations

from bisect import bisect_right
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import InputError, UsageError
from ..plan import layout as L

if TYPE_CHECKING:
    from ..formats import Image

# reasons an island cannot be relocated (categories; details go to Island.detail)
TOO_SMALL = "too small for the entry jump"
TARGET_IN_ENTRY = "branch target inside the entry patch"
INDIRECT_JUMP = "indirect jump (jump table or computed goto)"
SHORT_BRANCH_OUT = "short branch leaves the island"
UNDECODABLE = "undecodable bytes"
PAST_END = "instruction runs past the island end"
TOO_LARGE = "larger than the engine's island maximum"
OUTSIDE_IMAGE = "reference outside the image (likely data decoded as code)"
WEAK_START = "start known only from an address reference (may be data)"

ENDBR64 = b"\xf3\x0f\x1e\xfa"
ENDBR64_LEN = len(ENDBR64)


class FixupSite(NamedTuple):
    """A field of the island that a move must rewrite (plan.h ci_fixup, island index aside)."""

    kind: int  # L.FIXUP_REL32 / L.FIXUP_RIPREL32 / L.FIXUP_ABS64
    offset: int  # of the field, from the island start
    pc_bias: int  # field to end of instruction (0 for ABS64)
    target: int  # absolute address the field resolves to


@dataclass(frozen=True)
class Island:
    """One candidate island: a function (or merged run of functions) that can move as a block."""

    name: str
    start: int
    size: int
    source: str  # where the bounds came from: symtab, dynsym, eh_frame, pdata, descent, merged...
    instructions: int = 0
    fixups: tuple[FixupSite, ...] = ()
    targets: tuple[int, ...] = ()  # internal branch target offsets, sorted, unique
    calls: tuple[int, ...] = ()  # absolute targets of direct calls leaving the island
    jumps_out: tuple[int, ...] = ()  # absolute targets of direct jumps leaving the island
    reason: str | None = None  # None when relocatable, else a category above
    detail: str = ""
    members: tuple[str, ...] = ()  # names of merged functions, in address order
    entry_insn_len: int = 0  # length of the first instruction (0: not decoded)
    entry_nops: int = 0  # one-byte NOPs the island starts with (gcc's patchable entry)
    endbr: bool = False  # an endbr64 precedes `start` and stays in place (see decode.scan)
    indirect_jumps: int = 0  # jumps through a register or an indexed table (jump tables)

    @property
    def end(self) -> int:
        return self.start + self.size

    @property
    def relocatable(self) -> bool:
        return self.reason is None

    def __contains__(self, addr: int) -> bool:
        return self.start <= addr < self.end

    @property
    def entry_preemption_safe(self) -> bool:
        """True when a 5-byte entry jump replaces exactly one instruction.

        Then no thread can be stopped inside the patched bytes: a thread the handler cannot see
        (parked by an OS scheduler, not on any CPU during the SMI) is either before the
        instruction, and runs the new jump, or past it.  This is how ftrace/livepatch make entry
        patching safe; workloads get it from clang's -fpatchable-function-entry=5 (one 5-byte NOP).
        """
        return self.entry_patch_safe(L.ENTRY_REL32_LEN)

    def entry_patch_safe(self, length: int) -> bool:
        """An entry patch of `length` bytes replaces exactly one instruction."""
        return self.entry_insn_len >= length

    @property
    def entry_hazard(self) -> str | None:
        """Why a 5-byte entry jump is not safe for parked threads (None when it is)."""
        if self.entry_preemption_safe:
            return None
        if self.entry_nops >= 2:
            return (
                f"entry is {self.entry_nops} one-byte NOPs (gcc -fpatchable-function-entry): "
                f"an entry jump would replace {min(self.entry_nops, L.ENTRY_REL32_LEN)} "
                "instructions"
            )
        if not self.entry_insn_len:
            return "first instruction not decoded"
        return (
            f"first instruction is {self.entry_insn_len} bytes: an entry jump would replace "
            "more than one instruction"
        )

    def fixup_records(self, index: int) -> list[L.Fixup]:
        """The island's fix-ups as plan records for island table slot `index`."""
        out = []
        for site in self.fixups:
            rec = L.Fixup()
            rec.island = index
            rec.kind = site.kind
            rec.pc_bias = site.pc_bias
            rec.offset = site.offset
            rec.target = site.target
            out.append(rec)
        return out

    def shifted(self, bias: int) -> Island:
        if not bias:
            return self
        return replace(
            self,
            start=self.start + bias,
            fixups=tuple(f._replace(target=f.target + bias) for f in self.fixups),
            calls=tuple(c + bias for c in self.calls),
            jumps_out=tuple(j + bias for j in self.jumps_out),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "start": self.start,
            "size": self.size,
            "source": self.source,
            "instructions": self.instructions,
            "relocatable": self.relocatable,
            "reason": self.reason,
            "detail": self.detail,
            "fixups": len(self.fixups),
            "targets": len(self.targets),
            "calls": len(self.calls),
            "members": list(self.members),
            "entry_preemption_safe": self.entry_preemption_safe,
            "entry_hazard": self.entry_hazard,
            "endbr": self.endbr,
            "indirect_jumps": self.indirect_jumps,
        }


@dataclass
class IslandMap:
    """Every island of one image, plus image-wide direct call sites and coverage figures."""

    image: Image
    islands: list[Island]  # sorted by start, disjoint
    callsites: dict[int, list[tuple[int, int]]]  # island start -> [(opcode address, opcode)]
    code_bytes: int
    bias: int = 0
    _starts: list[int] = field(default_factory=list, repr=False)
    _by_name: dict[str, Island] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self._starts = [i.start for i in self.islands]
        self._by_name = {i.name: i for i in self.islands}

    # -- lookup ------------------------------------------------------------------------

    @property
    def format(self) -> str:
        return self.image.format

    @property
    def load_base(self) -> int:
        return self.image.link_base + self.bias

    def __iter__(self) -> Iterator[Island]:
        return iter(self.islands)

    def __len__(self) -> int:
        return len(self.islands)

    def __getitem__(self, name: str) -> Island:
        try:
            return self._by_name[name]
        except KeyError:
            raise InputError(f"no island named {name!r} in {self.image.path or 'image'}") from None

    def get(self, name: str) -> Island | None:
        return self._by_name.get(name)

    def island_at(self, addr: int) -> Island | None:
        """The island containing `addr`, if any."""
        i = bisect_right(self._starts, addr) - 1
        if i >= 0 and addr in self.islands[i]:
            return self.islands[i]
        return None

    def read(self, addr: int, size: int) -> bytes:
        """Bytes at `addr` (current address space) as a loader leaves them: every absolute
        pointer that a relocation covers holds its link value plus the bias."""
        link = addr - self.bias
        data = bytearray(self.image.read(link, size))
        sites = self.image.abs_pointer_sites
        values = self.image.abs_pointers
        for i in range(bisect_right(sites, link - 1), len(sites)):
            site = sites[i]
            if site + 8 > link + size:
                break
            off = site - link
            value = (values[site] + self.bias) & (2**64 - 1)
            data[off : off + 8] = value.to_bytes(8, "little")
        return bytes(data)

    # -- derived -----------------------------------------------------------------------

    def rebased(self, load_base: int) -> IslandMap:
        """The same map for an image loaded at `load_base` instead of its link base."""
        bias = load_base - self.image.link_base
        top = max((sec.end for sec in self.image.sections), default=self.image.link_base)
        if load_base < 0 or top + bias > 2**64:
            raise UsageError(
                f"an image of {top - self.image.link_base:#x} bytes does not fit at "
                f"{load_base:#x} (past the 64-bit address space)"
            )
        delta = bias - self.bias
        return IslandMap(
            image=self.image,
            islands=[i.shifted(delta) for i in self.islands],
            callsites={
                t + delta: [(a + delta, op) for a, op in sites]
                for t, sites in self.callsites.items()
            },
            code_bytes=self.code_bytes,
            bias=bias,
        )

    def allowing_indirect_jumps(self) -> IslandMap:
        """The same map with islands whose only obstacle is an indirect jump made relocatable.

        A jump table's entries (or a computed goto's label table) hold addresses of the original
        function, so the copy's indirect jump lands in the original, which stays intact (only
        its first instruction may become an entry jump): the flow goes on there, correct if not
        fast.  An indirect target cannot be checked against the entry patch, so the planner
        patches such an entry only where the patch replaces exactly one instruction
        (planning.redirect): the target is then the patch's start, and the jump reaches the copy.
        For hosts whose relocations keep the original code intact (every host here)."""
        note = "indirect jumps reach the original, which stays intact"
        islands = [
            replace(i, reason=None, detail=f"{note} ({i.indirect_jumps})")
            if i.reason == INDIRECT_JUMP
            else i
            for i in self.islands
        ]
        return IslandMap(self.image, islands, self.callsites, self.code_bytes, self.bias)

    def island_called_at(self, addr: int) -> Island | None:
        """The island a call to `addr` enters: the one starting there, or the one whose endbr64
        sits there (the marker stays outside the island)."""
        isl = self.island_at(addr)
        if isl is None:
            after = self.island_at(addr + ENDBR64_LEN)
            if after is not None and after.endbr and after.start == addr + ENDBR64_LEN:
                return after
        return isl

    def call_graph(self) -> dict[str, list[str]]:
        """Direct call edges between islands, by name (caller -> sorted callees).  A direct
        jump to another island's start is a tail call and counts as an edge too."""
        graph: dict[str, list[str]] = {}
        for isl in self.islands:
            callees = {c.name for t in isl.calls if (c := self.island_called_at(t)) is not None}
            callees.update(
                c.name
                for t in isl.jumps_out
                if (c := self.island_called_at(t)) is not None and c.start - t in (0, 4 * c.endbr)
            )
            graph[isl.name] = sorted(callees - {isl.name})
        return graph

    def relocations(self) -> dict[str, Any]:
        """The image's dynamic relocations as the workload loaders see them: how many they apply
        (R_X86_64_RELATIVE) and the ones they would not (listed, at most 20)."""
        dynamic = self.image.dynamic_relocations
        unapplied = self.image.unapplied_relocations
        return {
            "dynamic": len(dynamic),
            "applied_by_loaders": len(dynamic) - len(unapplied),
            "not_applied": len(unapplied),
            "not_applied_list": [r.describe() for r in unapplied[:20]],
        }

    def relocation_warning(self) -> str | None:
        """One line when a workload loader would leave some relocation unapplied."""
        rel = self.relocations()
        if not rel["not_applied"]:
            return None
        return (
            f"{rel['not_applied']} dynamic relocations would not be applied by the workload "
            f"loaders (they apply R_X86_64_RELATIVE only), first: {rel['not_applied_list'][0]}"
        )

    def not_relocatable(self) -> dict[str, int]:
        return dict(Counter(i.reason for i in self.islands if i.reason is not None))

    def coverage(self) -> dict[str, Any]:
        covered = sum(i.size for i in self.islands)
        by_source = Counter()  # type: Counter[str]
        for isl in self.islands:
            by_source[isl.source] += isl.size
        reloc = sum(i.size for i in self.islands if i.relocatable)
        return {
            "code_bytes": self.code_bytes,
            "island_bytes": covered,
            "ratio": round(covered / self.code_bytes, 4) if self.code_bytes else 0.0,
            "relocatable_bytes": reloc,
            "by_source": dict(by_source),
        }

    def to_dict(self, with_islands: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "path": self.image.path,
            "format": self.format,
            "link_base": self.image.link_base,
            "load_base": self.load_base,
            "islands": len(self.islands),
            "relocatable": sum(1 for i in self.islands if i.relocatable),
            "not_relocatable": self.not_relocatable(),
            "fixups": sum(len(i.fixups) for i in self.islands),
            "callsites": sum(len(v) for v in self.callsites.values()),
            "call_edges": sum(len(v) for v in self.call_graph().values()),
            "coverage": self.coverage(),
            "relocations": self.relocations(),
        }
        if with_islands:
            out["island_list"] = [i.to_dict() for i in self.islands]
        return out
