"""The QEMU target app's side of the contract (smm/app/app.c): its control block in the arena.

arena_base + 0      ci_app_control (80 bytes, magic "CIAPCT1")
arena_base + 0x1000 the workload blob (smm/build/app/workload.elf, linked at 0)
"""

from __future__ import annotations

import re
import struct
import time
from dataclasses import dataclass

from ..errors import EmulationError
from ..transport.base import Transport

APP_MAGIC = 0x31544350414943
BLOB_OFFSET = 0x1000
_CONTROL = struct.Struct("<QIIQQQQQQIIII")
_COMMAND_OFFSET = 64
ROUND_LINE = re.compile(r"codeisland-app: round (\d+) sum (0x[0-9a-f]+)")
ROUND_MARK = "#end-of-round\n"  # written by the app on port 0xE9 after every round
DONE_LINE = re.compile(r"codeisland-app: done rounds (\d+) bad (\d+)")


@dataclass
class AppControl:
    magic: int
    blob_base: int
    blob_size: int
    entry: int
    rounds: int
    first_sum: int
    last_sum: int
    command: int
    max_rounds: int
    bad_rounds: int
    parked: int


def read_control(t: Transport, arena_base: int) -> AppControl:
    f = _CONTROL.unpack(t.read_phys(arena_base, _CONTROL.size))
    ctl = AppControl(f[0], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12])
    if ctl.magic != APP_MAGIC:
        raise EmulationError(f"no target-app control block at {arena_base:#x}")
    return ctl


RUN = 0
PAUSE = 1  # finish the round, then park outside the workload (no workload frame on the stack)
FINISH = 2  # print the summary and power off


def command(t: Transport, arena_base: int, value: int) -> None:
    t.write_phys(arena_base + _COMMAND_OFFSET, struct.pack("<I", value))


def wait_parked(t: Transport, arena_base: int, parked: bool, timeout_s: float = 30.0) -> None:
    """Wait until the app is parked (or running again); EmulationError past the timeout."""
    deadline = time.monotonic() + timeout_s
    while bool(read_control(t, arena_base).parked) != parked:
        if time.monotonic() > deadline:
            state = "park" if parked else "resume"
            raise EmulationError(f"the target app did not {state} within {timeout_s:.0f} s")
        time.sleep(0.02)


def pause(t: Transport, arena_base: int) -> None:
    command(t, arena_base, PAUSE)
    wait_parked(t, arena_base, True)


def resume(t: Transport, arena_base: int) -> None:
    command(t, arena_base, RUN)
    wait_parked(t, arena_base, False)


def round_sums(serial: str) -> list[tuple[int, int]]:
    return [(int(r), int(s, 16)) for r, s in ROUND_LINE.findall(serial)]
