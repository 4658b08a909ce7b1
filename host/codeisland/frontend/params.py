"""Front-end model parameters: the [frontend] table of a platform profile (TOML).

    [frontend]
    l1i_size = 32768          # bytes
    l1i_ways = 8
    l1i_line = 64             # bytes
    itlb4k_entries = 64       # 4 KiB-page iTLB
    itlb4k_ways = 8
    itlb2m_entries = 8        # 2 MiB-page iTLB
    itlb2m_ways = 8
    fetch_cycles = 1          # per line fetched that hits
    l1i_miss_cycles = 20      # fill from L2
    itlb4k_miss_cycles = 30   # STLB hit / short page walk
    itlb2m_miss_cycles = 30
    smi_entry_cycles = 20000  # one SMI round trip (enter, handler prologue, RSM)
    stage_cycles_per_byte = 2 # copying + digest in the handler
    fixup_cycles = 40         # one fix-up applied
    cycles_per_handler_insn = 1

The defaults describe a generic recent x86 core (32 KiB 8-way L1i, 64-byte lines, a 64-entry
4 KiB iTLB and an 8-entry 2 MiB iTLB); they are assumptions of the model, not measurements.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from ..documents import load_toml
from ..errors import InputError
from ..paths import repo_root


@dataclass(frozen=True)
class FrontendParams:
    l1i_size: int = 32768
    l1i_ways: int = 8
    l1i_line: int = 64
    itlb4k_entries: int = 64
    itlb4k_ways: int = 8
    itlb2m_entries: int = 8
    itlb2m_ways: int = 8
    fetch_cycles: int = 1
    l1i_miss_cycles: int = 20
    itlb4k_miss_cycles: int = 30
    itlb2m_miss_cycles: int = 30
    smi_entry_cycles: int = 20000
    stage_cycles_per_byte: int = 2
    fixup_cycles: int = 40
    cycles_per_handler_insn: int = 1

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            # the native model takes 32-bit fields (fetchmodel.h ci_fm_params)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**32:
                raise InputError(f"[frontend] {f.name} must be an integer in 0..2**32-1")
        line = self.l1i_line
        if line < 16 or line > 4096 or line & (line - 1):
            raise InputError("[frontend] l1i_line must be a power of two between 16 and 4096")
        checks = (
            (self.l1i_size % (line * max(self.l1i_ways, 1)) == 0, "l1i_size / (line * ways)"),
            (self.itlb4k_entries % max(self.itlb4k_ways, 1) == 0, "itlb4k_entries / ways"),
            (self.itlb2m_entries % max(self.itlb2m_ways, 1) == 0, "itlb2m_entries / ways"),
        )
        for ok, what in checks:
            if not ok:
                raise InputError(f"[frontend] {what} must divide evenly")
        for name in ("l1i_ways", "itlb4k_ways", "itlb2m_ways", "l1i_size"):
            if getattr(self, name) == 0:
                raise InputError(f"[frontend] {name} must be positive")

    def relocation_cycles(self, smis: int, written: int, fixups: int) -> int:
        """What relocation work takes from the program: SMI entries, bytes written, fix-ups."""
        return (
            smis * self.smi_entry_cycles
            + written * self.stage_cycles_per_byte
            + fixups * self.fixup_cycles
        )

    @property
    def l1i_sets(self) -> int:
        return self.l1i_size // (self.l1i_line * self.l1i_ways)

    def native(self) -> dict[str, int]:
        """The subset the native model takes (fetchmodel.h ci_fm_params)."""
        d = asdict(self)
        for extra in (
            "smi_entry_cycles",
            "stage_cycles_per_byte",
            "fixup_cycles",
            "cycles_per_handler_insn",
        ):
            d.pop(extra)
        return d

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_platform() -> Path:
    return repo_root() / "host" / "codeisland" / "data" / "platforms" / "emulated.toml"


def load_frontend_params(platform: Path | None = None) -> FrontendParams:
    """Read [frontend] from a platform profile; missing keys take the documented defaults.

    A profile without a [frontend] table (or the default profile not shipped yet) gives the
    defaults; a given path that does not exist or does not parse is an InputError.
    """
    path = platform or default_platform()
    if not path.is_file():
        if platform is not None:
            raise InputError(f"{path}: platform profile not found")
        return FrontendParams()
    table = load_toml(path, "platform").get("frontend", {})
    if not isinstance(table, dict):
        raise InputError(f"{path}: [frontend] must be a table")
    known = {f.name for f in fields(FrontendParams)}
    unknown = sorted(set(table) - known)
    if unknown:
        raise InputError(f"{path}: unknown [frontend] keys: {', '.join(unknown)}")
    return FrontendParams(**table)
