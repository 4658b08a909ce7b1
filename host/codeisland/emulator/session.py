"""The emulator host: boot the smmemu board with the real driver and find the driver the way a
host finds it (the EFI configuration table, through the board's Transport), then drive it only
through the mailbox and the relocation layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from smmemu.guest import ArenaLayout, Guest
from smmemu.machine import Machine
from smmemu.transport import EmulatorTransport
from smmemu.workload import WorkloadImage

from ..errors import EmulationError
from ..paths import built_driver
from ..planning.platform import Platform, load_platform
from ..relocation import Relocator
from ..transport.mailbox import MailboxClient

PLATFORM = "emulated"  # the driver's arena layout: code, hot, far, stacks


def arena_layout(platform: Platform) -> ArenaLayout:
    """The guest loader's part of the platform profile: its source and stack regions."""
    code = next((r for r in platform.regions if r.role == "source"), None)
    stack = next((r for r in platform.regions if r.role == "stack"), None)
    if code is None or stack is None or code.arena_offset is None or stack.arena_offset is None:
        raise EmulationError(f"platform {platform.name} has no arena-relative source/stack region")
    return ArenaLayout(code.arena_offset, code.size, stack.arena_offset, stack.size)


@dataclass
class Session:
    machine: Machine
    transport: EmulatorTransport
    client: MailboxClient
    platform: Platform = field(default_factory=lambda: load_platform(PLATFORM))
    relocator: Relocator = field(init=False)

    def __post_init__(self) -> None:
        self.relocator = Relocator(self.client)

    def region(self, name: str) -> tuple[int, int]:
        """(absolute start, size) of one of the platform's regions in this boot's arena."""
        r = self.platform.region(name)
        return r.start(self.arena[0]), r.size

    @property
    def arena(self) -> tuple[int, int]:
        """The code arena the driver published in its mailbox header."""
        return int(self.client.header.arena_base), int(self.client.header.arena_size)

    def guest(self, image: WorkloadImage, threads: int, slice_instructions: int = 20_000) -> Guest:
        base, size = self.arena
        layout = arena_layout(self.platform)
        return Guest(self.machine, image, base, size, threads, layout, slice_instructions)


def boot(
    cpus: int = 2,
    layout: str = "intel64",
    *,
    sw_dispatch: bool = True,
    driver: Path | None = None,
    smm_access: bool = True,
    withhold: frozenset[str] = frozenset(),
    count_smm_instructions: bool = True,
) -> Session:
    """Build the machine, run the driver's entry point, signal ready-to-lock, find the mailbox.
    count_smm_instructions=False: SmiRecord.handler_instructions stays 0 (faster SMIs)."""
    machine = Machine(
        cpus, layout, sw_dispatch=sw_dispatch, smm_access=smm_access, withhold=withhold,
        count_smm_instructions=count_smm_instructions,
    )  # fmt: skip
    machine.boot(driver or built_driver())
    machine.ready_to_lock()
    transport = EmulatorTransport(machine)
    return Session(machine, transport, MailboxClient(transport))
