"""The emulator host: boot the smmemu board with the real driver and find the driver the way a
host finds it (the EFI configuration table, through the board's Transport), then drive it only
through the mailbox and the relocation layer."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from smmemu.guest import Guest
from smmemu.machine import Machine
from smmemu.transport import EmulatorTransport
from smmemu.workload import WorkloadImage

from ..paths import driver_binary
from ..relocation import Relocator
from ..transport.mailbox import MailboxClient


@dataclass
class Session:
    machine: Machine
    transport: EmulatorTransport
    client: MailboxClient
    relocator: Relocator = field(init=False)

    def __post_init__(self) -> None:
        self.relocator = Relocator(self.client)

    @property
    def arena(self) -> tuple[int, int]:
        """The code arena the driver published in its mailbox header."""
        return int(self.client.header.arena_base), int(self.client.header.arena_size)

    def guest(self, image: WorkloadImage, threads: int, slice_instructions: int = 20_000) -> Guest:
        base, size = self.arena
        return Guest(self.machine, image, base, size, threads, slice_instructions)


def boot(
    cpus: int = 2,
    layout: str = "intel64",
    *,
    sw_dispatch: bool = True,
    driver: Path | None = None,
    smm_access: bool = True,
    withhold: frozenset[str] = frozenset(),
) -> Session:
    """Build the machine, run the driver's entry point, signal ready-to-lock, find the mailbox."""
    machine = Machine(
        cpus, layout, sw_dispatch=sw_dispatch, smm_access=smm_access, withhold=withhold
    )
    machine.boot(driver or driver_binary())
    machine.ready_to_lock()
    transport = EmulatorTransport(machine)
    return Session(machine, transport, MailboxClient(transport))
