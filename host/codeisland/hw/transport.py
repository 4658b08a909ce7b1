"""The hardware Transport: chipsec's HAL, unchanged, over whichever helper chipsec selects.

On a board that is chipsec's Linux helper (its kernel module); here it is our qemuhelper.  Memory
goes through chipsec.hal.physmem, the SW SMI through chipsec.hal.interrupts (0xB3 data, 0xB2
code), and the mailbox is found through the EFI configuration table (discovery.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ..errors import TransportError
from ..transport.base import Transport
from . import qemuhelper
from .discovery import Discovery, discover

log = logging.getLogger(__name__)


def _quiet_chipsec() -> None:
    from chipsec.library.logger import logger

    logger().set_log_level(False, False, False, False)


class ChipsecTransport(Transport):
    """Transport through a chipsec Chipset whose helper is `helper` (an instance or a name)."""

    name = "chipsec"

    def __init__(self, helper: Any, memory_size: int, poll_s: float = 0.002) -> None:
        import chipsec.chipset
        from chipsec.hal.interrupts import Interrupts
        from chipsec.library.exceptions import OsHelperError

        _quiet_chipsec()
        if helper == qemuhelper.NAME:
            qemuhelper.register()  # ours lives outside chipsec's package: add it to the registry
        self.memory_size = memory_size
        self.poll_s = poll_s
        self.cs = chipsec.chipset.Chipset()
        try:
            self.cs.load_helper(helper)
            self.cs.start_helper()
        except OsHelperError as exc:
            raise TransportError(f"chipsec helper did not start: {exc}") from exc
        self.cs.set_hal_objects()  # HAL objects capture the helper when they are built
        self.interrupts = Interrupts(self.cs)
        self.discovery: Discovery | None = None

    @property
    def helper(self) -> Any:
        return self.cs.helper

    def read_phys(self, address: int, size: int) -> bytes:
        try:
            return bytes(self.cs.mem.read_physical_mem(address, size))
        except RuntimeError as exc:  # chipsec's errors are RuntimeErrors
            raise TransportError(f"chipsec: {exc}") from exc

    def write_phys(self, address: int, data: bytes) -> None:
        try:
            self.cs.mem.write_physical_mem(address, len(data), data)
        except RuntimeError as exc:
            raise TransportError(f"chipsec: {exc}") from exc

    def raise_sw_smi(self, value: int, data: int = 0) -> None:
        try:
            self.interrupts.send_SW_SMI(0, value & 0xFF, data & 0xFF, 0, 0, 0, 0, 0, 0)
        except RuntimeError as exc:
            raise TransportError(f"chipsec: SW SMI {value:#x} failed: {exc}") from exc

    def discover(self) -> Discovery:
        if self.discovery is None:
            self.discovery = discover(self.read_phys, self.memory_size)
        return self.discovery

    def locate_mailbox(self) -> int:
        return int(self.discover().config.mailbox_base)

    def wait(self) -> None:
        time.sleep(self.poll_s)  # the SMI runs on the guest's vCPU thread, asynchronously

    def close(self) -> None:
        try:
            self.cs.destroy_helper()
        except RuntimeError as exc:
            log.debug("chipsec helper did not stop cleanly: %s", exc)
