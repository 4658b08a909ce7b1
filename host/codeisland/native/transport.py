"""A live process as the machine: its memory through /proc/PID/mem, the SMI as a signal.

The agent (smm/native/agent.c) plans with PHYSICAL islands whose addresses are the process's
own, so `read_phys`/`write_phys` take process addresses.  The mailbox is the agent's memfd
mapping named `codeisland-mailbox`, found in /proc/PID/maps (the native counterpart of the EFI
configuration table); `raise_sw_smi(value)` sends signal `value` (the mailbox's sw_smi_value)
to the process, whose agent answers in a signal handler.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable

from ..errors import TransportError
from ..transport.base import Transport

MAILBOX_NAME = "/memfd:codeisland-mailbox"


def maps(pid: int) -> list[tuple[int, int, str, str]]:
    """(start, end, perms, path) of every mapping of `pid`."""
    out = []
    try:
        with open(f"/proc/{pid}/maps") as f:
            for line in f:
                parts = line.split(maxsplit=5)
                lo, hi = (int(x, 16) for x in parts[0].split("-"))
                out.append((lo, hi, parts[1], parts[5].strip() if len(parts) > 5 else ""))
    except OSError as exc:
        raise TransportError(f"process {pid} is gone ({exc.strerror})") from None
    return out


class ProcessTransport(Transport):
    """Memory, SMI and mailbox discovery of one process that runs the agent."""

    name = "native"

    def __init__(self, pid: int, alive: Callable[[], bool] | None = None) -> None:
        self.pid = pid
        self.alive = alive or (lambda: os.path.exists(f"/proc/{pid}"))
        try:
            self.fd = os.open(f"/proc/{pid}/mem", os.O_RDWR)
        except OSError as exc:
            raise TransportError(f"cannot open /proc/{pid}/mem: {exc.strerror}") from None

    def read_phys(self, address: int, size: int) -> bytes:
        try:
            data = os.pread(self.fd, size, address)
        except OSError as exc:
            raise TransportError(
                f"cannot read {size} bytes at {address:#x} of process {self.pid}: {exc.strerror}"
            ) from None
        if len(data) != size:
            raise TransportError(f"short read at {address:#x} of process {self.pid}")
        return data

    def write_phys(self, address: int, data: bytes) -> None:
        try:
            done = os.pwrite(self.fd, data, address)
        except OSError as exc:
            raise TransportError(
                f"cannot write {len(data)} bytes at {address:#x} of process {self.pid}: "
                f"{exc.strerror}"
            ) from None
        if done != len(data):
            raise TransportError(f"short write at {address:#x} of process {self.pid}")

    def raise_sw_smi(self, value: int, data: int = 0) -> None:
        try:
            os.kill(self.pid, value)
        except ProcessLookupError:
            raise TransportError(f"process {self.pid} exited") from None

    def locate_mailbox(self) -> int:
        for lo, _hi, _perms, path in maps(self.pid):
            if path.startswith(MAILBOX_NAME):
                return lo
        raise TransportError(f"process {self.pid} has no codeisland mailbox (agent not loaded)")

    def wait(self) -> None:
        if not self.alive():
            raise TransportError(f"process {self.pid} exited before the agent answered")
        time.sleep(0.0002)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
