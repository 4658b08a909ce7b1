"""A booted board: the machine with the real driver loaded and locked, its transport and the
mailbox client -- found through the configuration table, as a host would find them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from codeisland.paths import driver_binary
from codeisland.transport.mailbox import MailboxClient

from .guest import Guest
from .machine import Machine
from .transport import EmulatorTransport
from .workload import WorkloadImage


@dataclass
class Session:
    machine: Machine
    transport: EmulatorTransport
    client: MailboxClient

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
