"""Run OVMF with the codeisland driver under QEMU (real SMM, real SW SMIs) and drive it end to end.

`qmp` is the monitor client, `machine` starts and stops one guest (shared-RAM backend, debugcon,
serial log, FAT drive with the target app), `e2e` is the whole CI scenario.
"""
