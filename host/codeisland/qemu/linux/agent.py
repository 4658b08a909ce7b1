"""The host's side of the Linux guest agent (guest/linux/agent.h): its control block in the
driver's arena (physical, at CONTROL_OFFSET: the platform TOML's source region, as for the UEFI
target app), and the commands the host writes there.

The agent labels every address it publishes: `*_va` are virtual addresses in the agent's own
address space (where the workload runs and where SAMPLE finds its RIPs), `*_phys` physical.
tests/test_linux_guest.py compiles a probe against agent.h so this mirror cannot drift.
"""

from __future__ import annotations

import ctypes
import time
from collections.abc import Callable
from dataclasses import dataclass

from ...errors import EmulationError
from ...plan.layout import _Record, u32, u64
from ...transport.base import Transport
from ..target import placement

MAGIC = 0x3147414C49434
VERSION = 1
CONTROL_OFFSET = placement().control  # the arena layout of the platform TOML (one definition)
BLOB_OFFSET = placement().blob
MAX_THREADS = 16
RUN, PAUSE, FINISH = 0, 1, 2
MAP_ANYWHERE, MAP_IDENTITY = 0, 1
_Name = ctypes.c_char * 32


class AgentControl(_Record):
    _fields_ = [  # noqa: RUF012 -- ctypes reads the class attribute
        ("magic", u64),
        ("version", u32),
        ("size", u32),
        ("arena_phys", u64),
        ("arena_va", u64),
        ("arena_size", u64),
        ("mailbox_phys", u64),
        ("blob_va", u64),
        ("blob_size", u64),
        ("entry_va", u64),
        ("pid", u32),
        ("threads", u32),
        ("command", u32),
        ("parked", u32),
        ("kind", u32),
        ("mapping", u32),
        ("rounds", u64),
        ("first_sum", u64),
        ("last_sum", u64),
        ("bad_rounds", u64),
        ("thread_rounds", u64 * MAX_THREADS),
        ("workload", _Name),
    ]

    def va_to_phys(self, va: int) -> int:
        """Physical address of an arena byte the agent sees at `va` (one linear mapping)."""
        if not self.arena_va <= va < self.arena_va + self.arena_size:
            raise EmulationError(f"{va:#x} is outside the agent's arena mapping")
        return int(va - self.arena_va + self.arena_phys)

    def phys_to_va(self, phys: int) -> int:
        if not self.arena_phys <= phys < self.arena_phys + self.arena_size:
            raise EmulationError(f"{phys:#x} is outside the arena")
        return int(phys - self.arena_phys + self.arena_va)


CONSTANTS = {
    "MAGIC": MAGIC,
    "VERSION": VERSION,
    "CONTROL_OFFSET": CONTROL_OFFSET,
    "BLOB_OFFSET": BLOB_OFFSET,
    "MAX_THREADS": MAX_THREADS,
    "RUN": RUN,
    "PAUSE": PAUSE,
    "FINISH": FINISH,
    "MAP_ANYWHERE": MAP_ANYWHERE,
    "MAP_IDENTITY": MAP_IDENTITY,
}
_COMMAND = AgentControl.command.offset


@dataclass
class Agent:
    """The agent of one guest, reached through a transport at the arena's physical base."""

    t: Transport
    arena_phys: int

    def control(self) -> AgentControl:
        at = self.arena_phys + CONTROL_OFFSET
        ctl = AgentControl.from_bytes(self.t.read_phys(at, ctypes.sizeof(AgentControl)))
        if ctl.magic != MAGIC or ctl.size != ctypes.sizeof(AgentControl):
            raise EmulationError(f"no Linux agent control block at {at:#x}")
        return ctl

    def command(self, value: int) -> None:
        self.t.write_phys(self.arena_phys + CONTROL_OFFSET + _COMMAND, value.to_bytes(4, "little"))

    def wait(
        self, what: str, done: Callable[[AgentControl], bool], timeout_s: float
    ) -> AgentControl:
        deadline = time.monotonic() + timeout_s
        while True:
            ctl = self.control()
            if done(ctl):
                return ctl
            if time.monotonic() > deadline:
                raise EmulationError(f"the Linux agent did not {what} within {timeout_s:.0f} s")
            time.sleep(0.02)

    def pause(self, timeout_s: float = 30.0) -> AgentControl:
        """Every worker finishes its round and parks: no workload code runs or is on a stack."""
        self.command(PAUSE)
        return self.wait("park", lambda c: c.parked == c.threads, timeout_s)

    def resume(self, timeout_s: float = 30.0) -> AgentControl:
        self.command(RUN)
        return self.wait("resume", lambda c: c.parked == 0, timeout_s)

    def wait_every_thread(
        self, since: AgentControl, more: int, timeout_s: float = 60.0
    ) -> AgentControl:
        """`more` rounds in all since `since`, and at least one by every thread (rounds of a
        port-output workload take turns under a mutex, so one thread may wait a while)."""

        def done(c: AgentControl) -> bool:
            each = all(c.thread_rounds[k] > since.thread_rounds[k] for k in range(c.threads))
            return c.rounds >= since.rounds + more and each

        return self.wait("make progress in every thread", done, timeout_s)

    def wait_rounds(self, more: int, timeout_s: float = 60.0) -> AgentControl:
        start = self.control().rounds
        return self.wait("make progress", lambda c: c.rounds >= start + more, timeout_s)
