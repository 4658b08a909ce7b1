"""Devices of the emulated board that guests read: the CMOS real-time clock and an input-event
port.  The machine registers both at boot, so every guest can read them; whoever runs the guest
(the profiler, the closed loop, a test) sets the clock and queues events between slices.

    port 0x70  CMOS index   (OUT; bit 7 is the NMI-disable bit and is not part of the index)
    port 0x71  CMOS data    (IN; registers 0 seconds, 2 minutes, 4 hours, BCD, 24-hour)
    port 0xEB  input event  (IN; the next queued event code, 0 when the queue is empty)

The clock does not advance by itself: an emulated run's "time" is whatever its driver says
(one profile window = one emulated hour, say), so runs are reproducible whatever the host does.
"""

from __future__ import annotations

from collections import deque

from codeisland.errors import EmulationError

from .ports import PORT_CMOS_DATA, PORT_CMOS_INDEX, PORT_GUEST_IN, PortBus

DAY_SECONDS = 24 * 3600
CMOS_SECONDS, CMOS_MINUTES, CMOS_HOURS = 0, 2, 4


def bcd(value: int) -> int:
    return ((value // 10) << 4) | (value % 10)


class CmosRtc:
    """The MC146818-style clock behind ports 0x70/0x71, set by the host (default: midnight)."""

    def __init__(self, time_of_day: int = 0) -> None:
        self.time_of_day = 0
        self.selected = 0
        self.set_time(time_of_day)

    def set_time(self, seconds: int) -> None:
        """Set the clock to `seconds` after midnight."""
        if not 0 <= seconds < DAY_SECONDS:
            raise EmulationError(f"RTC time {seconds} s is not within one day [0, {DAY_SECONDS})")
        self.time_of_day = seconds

    def attach(self, ports: PortBus) -> None:
        ports.on_out(PORT_CMOS_INDEX, self._select)
        ports.on_in(PORT_CMOS_DATA, self._read)

    def register(self, index: int) -> int:
        """The value of CMOS register `index` (unemulated registers read 0)."""
        t = self.time_of_day
        fields = {CMOS_SECONDS: t % 60, CMOS_MINUTES: (t // 60) % 60, CMOS_HOURS: t // 3600}
        return bcd(fields[index]) if index in fields else 0

    def _select(self, _port: int, _size: int, value: int) -> None:
        self.selected = value & 0x7F

    def _read(self, _port: int, _size: int) -> int:
        return self.register(self.selected)


class InputEvents:
    """A queue of input-event codes behind port 0xEB: each IN takes one, 0 means none."""

    def __init__(self) -> None:
        self.queue: deque[int] = deque()
        self.delivered = 0  # events the guest took since the last clear()

    def push(self, code: int = 1, count: int = 1) -> None:
        if not 0 < code <= 0xFF:
            raise EmulationError(f"input event code {code} must be 1..255 (0 means no event)")
        if count < 0:
            raise EmulationError(f"cannot queue {count} input events")
        self.queue.extend([code] * count)

    def clear(self) -> None:
        """Drop undelivered events and restart the delivered count."""
        self.queue.clear()
        self.delivered = 0

    @property
    def pending(self) -> int:
        return len(self.queue)

    def attach(self, ports: PortBus) -> None:
        ports.on_in(PORT_GUEST_IN, self._read)

    def _read(self, _port: int, _size: int) -> int:
        if not self.queue:
            return 0
        self.delivered += 1
        return self.queue.popleft()
