"""The QEMU target app's side of the contract (smm/app/app.c): its control block in the arena.

Where the QEMU targets put things follows the platform profile's arena layout
(`target_placement`); their builds generate the same constants from the same TOML
(smm/app/mkarena.py -> smm/build/app/include/arena_layout.h):

source region + 0       ci_app_control (80 bytes, magic "CIAPCT1")
source region + 0x1000  the workload blob (smm/build/app/workload.elf, linked at 0), which must
                        end inside the source region (the hot/far regions take the copies)
"""

from __future__ import annotations

import re
import struct
import time
from dataclasses import dataclass
from functools import cache

from ..errors import EmulationError, UsageError
from ..planning.platform import Platform, load_platform
from ..transport.base import Transport

PLATFORM = "emulated"  # the driver's arena layout (the same driver, the same arena)
APP_MAGIC = 0x31544350414943
CONTROL_PAGE = 0x1000  # the control block's page: the blob starts one page after it


@dataclass(frozen=True)
class TargetPlacement:
    """Offsets into the driver's arena where a QEMU target puts its control block and its
    workload blob."""

    control: int
    blob: int
    blob_limit: int  # the end of the source region: the blob's image must end at or before it


def target_placement(platform: Platform) -> TargetPlacement:
    """The targets' placement from the platform's source region (islands are copied out of it)."""
    sources = [r for r in platform.regions if r.role == "source" and r.arena_offset is not None]
    if len(sources) != 1:
        raise UsageError(f"platform {platform.name}: needs one arena-relative source region")
    code = sources[0]
    if code.size <= CONTROL_PAGE:
        raise UsageError(f"platform {platform.name}: source region {code.name} too small")
    start = int(code.arena_offset or 0)
    return TargetPlacement(start, start + CONTROL_PAGE, start + code.size)


@cache
def placement() -> TargetPlacement:
    """The placement on the platform the QEMU hosts use."""
    return target_placement(load_platform(PLATFORM))


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
    at = arena_base + placement().control
    f = _CONTROL.unpack(t.read_phys(at, _CONTROL.size))
    ctl = AppControl(f[0], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12])
    if ctl.magic != APP_MAGIC:
        raise EmulationError(f"no target-app control block at {at:#x}")
    return ctl


RUN = 0
PAUSE = 1  # finish the round, then park outside the workload (no workload frame on the stack)
FINISH = 2  # print the summary and power off


def command(t: Transport, arena_base: int, value: int) -> None:
    t.write_phys(arena_base + placement().control + _COMMAND_OFFSET, struct.pack("<I", value))


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
