"""Page walks and the firmware: which firmware relocating a Linux process at its own virtual
addresses needs, and the proof that a refused walk wrote nothing.

A USER island names the process's CR3; the engine walks the process's page tables from SMM.
Those tables are ordinary RAM, which firmware with SMM restricted memory access (Debian's OVMF,
production boards: PcdCpuSmmRestrictedMemoryAccess TRUE) does not map in SMM, so the driver
walks restricted and refuses the plan (WALK_TABLE_OUTSIDE) before it writes anything.  Test-board
firmware built with the PCD FALSE (`codeisland firmware build --variant unrestricted`) tells the
driver so (mailbox firmware_flags) and the driver walks unrestricted ("page walks=unrestricted"
on its log).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ...firmware.build import OUTPUT_NAMES, VARIANTS, default_output
from ...plan import layout as L
from ...relocation import Relocator

UNRESTRICTED_LOG = "codeisland: page walks=unrestricted"  # smm/driver/driver.c, at entry
WALK_REFUSALS = frozenset({L.Status.WALK_TABLE_OUTSIDE, L.Status.BAD_SPACE})
Reader = Callable[[int, int], bytes]


def walks_unrestricted(driver_log: list[str]) -> bool:
    """The driver's own word on its page-walk policy (it logs only the unrestricted one)."""
    return any(UNRESTRICTED_LOG in line for line in driver_log)


def unrestricted_images() -> tuple[str, str]:
    """Where `codeisland firmware build --variant unrestricted` writes CODE and VARS."""
    out, prefix = default_output("unrestricted"), VARIANTS["unrestricted"].prefix
    code, vars_ = (prefix + OUTPUT_NAMES[f"FV/OVMF_{k}.fd"] for k in ("CODE", "VARS"))
    return str(out / code), str(out / vars_)


def firmware_needed(command: str = "codeisland qemu e2e --guest linux --virtual") -> str:
    """How to get firmware the engine may walk a process's page tables on, and boot it with
    `command`."""
    code, vars_ = unrestricted_images()
    return (
        "relocating a process at its own virtual addresses needs test-board firmware without "
        "SMM restricted memory access: `codeisland firmware build --variant unrestricted`, then "
        f"`{command} --firmware {code} --vars {vars_}`"
    )


def refusal_message(status: int, firmware_mode: str, untouched: bool) -> str:
    written = (
        "nothing written"
        if untouched
        else "BUT the driver's counters or the bytes changed (an engine bug)"
    )
    return (
        f"the engine refused the process's page walk with {L.Status(status).name}, {written}: "
        f"the driver walks restricted here (the firmware's SMM memory access: {firmware_mode}), "
        "so SMM may not read the process's page tables (ordinary RAM); "
        f"{firmware_needed()}; or run without --virtual (arena at virtual == physical)"
    )


@dataclass
class Untouched:
    """What a refused plan must leave as it was: the driver's byte and generation counters and
    the bytes of the ranges it would have written (islands' sources, their destination)."""

    written: int
    generations: int
    ranges: list[tuple[int, bytes]]

    @classmethod
    def take(cls, rel: Relocator, read: Reader, ranges: list[tuple[int, int]]) -> Untouched:
        info = rel.query().info
        assert info is not None
        snap = [(a, read(a, n)) for a, n in ranges]
        return cls(int(info.total_bytes_written), int(info.generations), snap)

    def holds(self, rel: Relocator, read: Reader) -> bool:
        info = rel.query().info
        assert info is not None
        return (
            int(info.total_bytes_written) == self.written
            and int(info.generations) == self.generations
            and all(read(a, len(b)) == b for a, b in self.ranges)
        )
