"""SMRAM state save maps: where a CPU's context lands when it enters SMM.

Offsets are relative to SMBASE + 0x8000 (the map occupies the top of that 32 KiB segment), as
both manuals write them.  The handler never sees these offsets: it goes through
EFI_SMM_CPU_PROTOCOL Read/WriteSaveState, which the emulator implements over these tables, so the
same driver binary runs on either layout.

- INTEL64: Intel SDM vol. 3C, section "SMRAM State Save Map", table "SMRAM State Save Map for
  Intel 64 Architecture" (map at 7C00h..7FFFh).
- AMD64: AMD64 APM vol. 2, section 10.2.3 "SMRAM State-Save Area", table 10-2 (map at
  7E00h..7FFFh); the layout QEMU's x86 SMM entry writes (q35 + OVMF, see FACTS.md).

The CPU writes the map of its vendor (the machine's CPU model); the firmware's SmmCpu protocol
finds the map by the revision identifier the CPU wrote at 7EFCh (the same offset in both
manuals), as coreboot's save-state table does, and refuses a revision it does not know.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import pairwise

# EFI_SMM_SAVE_STATE_REGISTER numbers (PI spec vol. 4, EFI_SMM_CPU_PROTOCOL).
REG_GDTBASE = 4
REG_IDTBASE = 5
REG_CS = 21  # selector; RPL (bits 1:0) = CPL
REG_R8 = 30  # R8..R15 = 30..37
REG_RAX = 38
REG_RBX = 39
REG_RCX = 40
REG_RDX = 41
REG_RSP = 42
REG_RBP = 43
REG_RSI = 44
REG_RDI = 45
REG_RIP = 46
REG_RFLAGS = 51
REG_CR0 = 52
REG_CR3 = 53
REG_CR4 = 54
REG_IO = 512
REG_LMA = 513
REG_PROCESSOR_ID = 514
LMA_64BIT = 64

GPR_NAMES = (
    "rax", "rbx", "rcx", "rdx", "rsp", "rbp", "rsi", "rdi",
    "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15",
)  # fmt: skip

REGISTER_NAMES: dict[int, str] = {
    REG_RAX: "rax", REG_RBX: "rbx", REG_RCX: "rcx", REG_RDX: "rdx", REG_RSP: "rsp",
    REG_RBP: "rbp", REG_RSI: "rsi", REG_RDI: "rdi", REG_RIP: "rip", REG_RFLAGS: "rflags",
    REG_CR0: "cr0", REG_CR3: "cr3", REG_CR4: "cr4", REG_CS: "cs",
    **{REG_R8 + i: f"r{8 + i}" for i in range(8)},
}  # fmt: skip


@dataclass(frozen=True)
class Field:
    offset: int  # from SMBASE + 0x8000
    width: int  # bytes


@dataclass(frozen=True)
class SaveStateLayout:
    """One vendor's map: register name -> field, plus the revision it reports."""

    name: str
    map_start: int  # first offset of the map (from SMBASE + 0x8000)
    revision: int
    fields: dict[str, Field]

    @property
    def map_size(self) -> int:
        return 0x8000 - self.map_start


def _intel64() -> SaveStateLayout:
    # SDM vol. 3C table "SMRAM State Save Map for Intel 64 Architecture".
    f = {
        "cr0": Field(0x7FF8, 8), "cr3": Field(0x7FF0, 8), "rflags": Field(0x7FE8, 8),
        "efer": Field(0x7FE0, 8), "rip": Field(0x7FD8, 8), "dr6": Field(0x7FD0, 8),
        "dr7": Field(0x7FC8, 8), "cs": Field(0x7FAC, 4), "rdi": Field(0x7F94, 8),
        "rsi": Field(0x7F8C, 8),
        "rbp": Field(0x7F84, 8), "rsp": Field(0x7F7C, 8), "rbx": Field(0x7F74, 8),
        "rdx": Field(0x7F6C, 8), "rcx": Field(0x7F64, 8), "rax": Field(0x7F5C, 8),
        "r8": Field(0x7F54, 8), "r9": Field(0x7F4C, 8), "r10": Field(0x7F44, 8),
        "r11": Field(0x7F3C, 8), "r12": Field(0x7F34, 8), "r13": Field(0x7F2C, 8),
        "r14": Field(0x7F24, 8), "r15": Field(0x7F1C, 8),
        "revision": Field(0x7EFC, 4), "smbase": Field(0x7EF8, 4), "cr4": Field(0x7E40, 4),
    }  # fmt: skip
    return SaveStateLayout("intel64", 0x7C00, 0x00030064, f)


def _amd64() -> SaveStateLayout:
    # AMD64 APM vol. 2 table 10-2: general registers from 7FF8h down in the order
    # RAX RCX RDX RBX RSP RBP RSI RDI R8..R15; RIP 7F78h, RFLAGS 7F70h, CR0/CR3/CR4 7F58h..7F48h;
    # the CS selector at 7E10h (segment records of 16 bytes from ES at 7E00h).
    f: dict[str, Field] = {}
    order = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
             "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")  # fmt: skip
    for i, name in enumerate(order):
        f[name] = Field(0x7FF8 - 8 * i, 8)
    f.update(
        rip=Field(0x7F78, 8), rflags=Field(0x7F70, 8), dr6=Field(0x7F68, 8),
        dr7=Field(0x7F60, 8), cr0=Field(0x7F58, 8), cr3=Field(0x7F50, 8),
        cr4=Field(0x7F48, 8), smbase=Field(0x7F00, 4), revision=Field(0x7EFC, 4),
        efer=Field(0x7ED0, 8), cs=Field(0x7E10, 2),
    )  # fmt: skip
    return SaveStateLayout("amd64", 0x7E00, 0x00020064, f)


LAYOUTS: dict[str, SaveStateLayout] = {lay.name: lay for lay in (_intel64(), _amd64())}


def _check(layout: SaveStateLayout) -> None:
    """Fields lie inside the map and never overlap (a table error would corrupt a context)."""
    spans = sorted((f.offset, f.offset + f.width, n) for n, f in layout.fields.items())
    for (_a0, a1, an), (b0, _b1, bn) in pairwise(spans):
        if a1 > b0:
            raise AssertionError(f"{layout.name}: {an} overlaps {bn}")
    if spans[0][0] < layout.map_start or spans[-1][1] > 0x8000:
        raise AssertionError(f"{layout.name}: a field lies outside the map")


REVISION_FIELD = Field(0x7EFC, 4)  # SMM revision identifier, at this offset in both maps

for _layout in LAYOUTS.values():
    _check(_layout)
    assert _layout.fields["revision"] == REVISION_FIELD, _layout.name

# the maps by the revision they report; a revision not listed here is refused
BY_REVISION: dict[int, SaveStateLayout] = {lay.revision: lay for lay in LAYOUTS.values()}


class SaveStateMap:
    """One CPU's map in emulated SMRAM, read and written through the machine's memory."""

    def __init__(self, layout: SaveStateLayout, smbase: int, mem_read, mem_write) -> None:  # type: ignore[no-untyped-def]
        self.layout = layout
        self.smbase = smbase
        self._read = mem_read
        self._write = mem_write

    @property
    def base(self) -> int:
        """Address of the map's first byte."""
        return self.smbase + 0x8000 + self.layout.map_start

    def address(self, name: str) -> int:
        return self.smbase + 0x8000 + self.layout.fields[name].offset

    def has(self, name: str) -> bool:
        return name in self.layout.fields

    def read(self, name: str) -> int:
        f = self.layout.fields[name]
        return int.from_bytes(self._read(self.address(name), f.width), "little")

    def write(self, name: str, value: int) -> None:
        f = self.layout.fields[name]
        mask = (1 << (8 * f.width)) - 1
        self._write(self.address(name), (value & mask).to_bytes(f.width, "little"))

    def store(self, regs: dict[str, int]) -> None:
        """SMI entry: the CPU writes its context and the map's identification fields (the
        map built here and written at once: two CPUs' fields one by one were a third of an
        SMI's host time)."""
        raw = bytearray(self.layout.map_size)
        values = {**regs, "revision": self.layout.revision, "smbase": self.smbase}
        for name, value in values.items():
            f = self.layout.fields.get(name)
            if f is not None:
                at = f.offset - self.layout.map_start
                raw[at : at + f.width] = (value & ((1 << (8 * f.width)) - 1)).to_bytes(
                    f.width, "little"
                )
        self._write(self.base, bytes(raw))

    def load(self) -> dict[str, int]:
        """RSM: the context the CPU resumes with (what a handler may change: GPRs, RIP, RFLAGS;
        CR3 and CS are restored from the CPU's own context, as the handler never writes them)."""
        raw = self._read(self.base, self.layout.map_size)
        out = {}
        for name in (*GPR_NAMES, "rip", "rflags"):
            f = self.layout.fields[name]
            at = f.offset - self.layout.map_start
            out[name] = int.from_bytes(raw[at : at + f.width], "little")
        return out


def reported_map(smbase: int, mem_read, mem_write) -> SaveStateMap | None:  # type: ignore[no-untyped-def]
    """The map of the CPU whose save state lies at `smbase`, chosen by the revision it wrote;
    None for a revision no table describes (the caller refuses the access)."""
    raw = mem_read(smbase + 0x8000 + REVISION_FIELD.offset, REVISION_FIELD.width)
    layout = BY_REVISION.get(int.from_bytes(raw, "little"))
    return None if layout is None else SaveStateMap(layout, smbase, mem_read, mem_write)
