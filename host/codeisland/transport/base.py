"""The one interface between everything above and a machine with the driver in it.

The emulator (smmemu) and the hardware path (chipsec: a board, or QEMU through our helper) both
implement it, so planning, the closed loop and the CLI run unchanged on either.
"""

from __future__ import annotations

from abc import ABC, abstractmethod


class Transport(ABC):
    """Physical memory, the SW SMI port, and discovery of the driver's mailbox."""

    name: str = "transport"

    @abstractmethod
    def read_phys(self, address: int, size: int) -> bytes:
        """Read guest/board physical memory."""

    @abstractmethod
    def write_phys(self, address: int, data: bytes) -> None:
        """Write guest/board physical memory."""

    @abstractmethod
    def raise_sw_smi(self, value: int, data: int = 0) -> None:
        """Write `data` to port 0xB3 and `value` to APM_CNT (0xB2).

        Returns once the SMI has been delivered; the caller polls the mailbox for completion.
        """

    @abstractmethod
    def locate_mailbox(self) -> int:
        """Physical address of the driver's mailbox (from its EFI configuration table)."""

    def last_smi_measure(self) -> tuple[int, int] | None:
        """(SMI number, handler instructions) of the SMI just raised, where the transport can
        count instructions (an emulator); None on hardware, where the driver's own SMI count
        is all there is."""
        return None

    def wait(self) -> None:  # noqa: B027 - optional hook
        """Let the machine run while the caller polls (no-op where SMIs are synchronous)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release what the transport holds."""

    def __enter__(self) -> Transport:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
