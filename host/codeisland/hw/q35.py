"""Q35 (ICH9 MCH) registers that describe SMRAM, read through PCI config space of 0:0.0.

Intel 3 Series / ICH9 datasheet register map, as QEMU's q35 implements it (hw/pci-host/q35.c):
    0x9D SMRAM:   D_OPEN bit 6, D_CLS bit 5, D_LCK bit 4, G_SMRAME bit 3
    0x9E ESMRAMC: H_SMRAME bit 7, TSEG_SZ bits 2:1 (1M, 2M, 8M, 11 = QEMU extended), T_EN bit 0
    0xB0 TOLUD:   bits 15:4 = top of low usable DRAM in MiB units (<< 20)
    0x50 EXT_TSEG_MBYTES (QEMU only): TSEG size in MiB when TSEG_SZ = 11
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

SMRAM, ESMRAMC, TOLUD, EXT_TSEG_MBYTES = 0x9D, 0x9E, 0xB0, 0x50
D_OPEN, D_LCK, G_SMRAME = 0x40, 0x10, 0x08
T_EN, H_SMRAME = 0x01, 0x80
_TSEG_MIB = {0: 1, 1: 2, 2: 8}

PciRead = Callable[[int, int, int, int, int], int]  # (bus, dev, fun, offset, size) -> value


@dataclass
class SmramState:
    smram: int
    esmramc: int
    tolud: int
    tseg_base: int
    tseg_size: int

    @property
    def locked(self) -> bool:
        return bool(self.smram & D_LCK)

    @property
    def open(self) -> bool:
        return bool(self.smram & D_OPEN)

    @property
    def tseg_enabled(self) -> bool:
        return bool(self.esmramc & T_EN)


def read_smram_state(read_pci: PciRead) -> SmramState:
    smram = read_pci(0, 0, 0, SMRAM, 1)
    esmramc = read_pci(0, 0, 0, ESMRAMC, 1)
    tolud = read_pci(0, 0, 0, TOLUD, 2) & 0xFFF0
    tolud <<= 16  # bits 15:4 hold address bits 31:20
    sz = (esmramc >> 1) & 3
    mib = _TSEG_MIB.get(sz) or read_pci(0, 0, 0, EXT_TSEG_MBYTES, 2)
    size = mib << 20 if esmramc & T_EN else 0
    return SmramState(smram, esmramc, tolud, tolud - size, size)
