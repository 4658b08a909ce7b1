"""Firmware images: parse UEFI firmware volumes, list them, inject the codeisland SMM driver.

Layers: `volume` (FV and FFS structures, checksums), `sections` (section streams, LZMA),
`ffs` (building a new FFS file), `image` (the OVMF layout: compressed FVMAIN_COMPACT holding
PEIFV and DXEFV), `inject` and `listing` on top.
"""
