"""The QEMU target app's side of the contract (smm/app/app.c): its control block in the arena.

arena_base + 0      ci_app_control (80 bytes, magic "CIAPCT1")
arena_base + 0x1000 the workload blob (smm/build/app/workload.elf, linked at 0)
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

from ..errors import EmulationError
from ..transport.base import Transport

APP_MAGIC = 0x31544350414943
BLOB_OFFSET = 0x1000
_CONTROL = struct.Struct("<QIIQQQQQQIIII")
_STOP_OFFSET = 64
ROUND_LINE = re.compile(r"codeisland-app: round (\d+) sum (0x[0-9a-f]+)")
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
    stop: int
    max_rounds: int
    bad_rounds: int


def read_control(t: Transport, arena_base: int) -> AppControl:
    f = _CONTROL.unpack(t.read_phys(arena_base, _CONTROL.size))
    ctl = AppControl(f[0], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11])
    if ctl.magic != APP_MAGIC:
        raise EmulationError(f"no target-app control block at {arena_base:#x}")
    return ctl


STOP_ROUNDS = 1  # finish the current round, print the summary, wait
STOP_POWER_OFF = 2  # the host is done: power the machine off


def request_stop(t: Transport, arena_base: int, value: int) -> None:
    t.write_phys(arena_base + _STOP_OFFSET, struct.pack("<I", value))


def round_sums(serial: str) -> list[tuple[int, int]]:
    return [(int(r), int(s, 16)) for r, s in ROUND_LINE.findall(serial)]
