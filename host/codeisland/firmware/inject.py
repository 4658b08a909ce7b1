"""Inject the codeisland SMM driver into a firmware image (never writing the input)."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InputError
from ..plan import layout as L
from . import ffs
from .image import find_compressed_dxe, rebuild
from .listing import list_image

DRIVER_UI_NAME = "CodeIslandSmm"


@dataclass
class InjectReport:
    image: str
    output: str
    driver: str
    file_guid: str
    file_size: int
    volume_offset: int  # where the file went inside the DXE volume
    free_before: int
    free_after: int
    compressed_before: int
    compressed_after: int
    seconds: float
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def __str__(self) -> str:
        return (
            f"injected {self.driver} as FFS file {self.file_guid} ({self.file_size} bytes) "
            f"at DXE volume offset {self.volume_offset:#x}\n"
            f"DXE free space {self.free_before:#x} -> {self.free_after:#x}; compressed volume "
            f"{self.compressed_before:#x} -> {self.compressed_after:#x} bytes\n"
            f"wrote {self.output} in {self.seconds:.1f} s"
        )


def read_input(path: Path, what: str) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read {what} {path}: {exc.strerror}") from exc


def check_driver_image(pe: bytes, driver: Path) -> None:
    """The whole PE parsed as `analyze` parses it: headers that look right are not enough
    (a truncated or corrupt driver used to be injected)."""
    from ..formats import open_image

    try:
        open_image(pe)
    except InputError as exc:
        raise InputError(f"driver {driver}: {exc}") from None


def driver_depex(driver: Path, depex: Path | None) -> bytes:
    """The depex given, else the one built next to the driver, else PUSH SmmCpu END."""
    if depex is None and driver.with_suffix(".depex").exists():
        depex = driver.with_suffix(".depex")
    blob = ffs.default_depex() if depex is None else read_input(depex, "depex")
    ffs.check_depex(blob, str(depex or "default depex"))
    return blob


def inject(
    image: Path,
    driver: Path,
    output: Path,
    *,
    depex: Path | None = None,
    guid: uuid.UUID | None = None,
    name: str = DRIVER_UI_NAME,
) -> InjectReport:
    """Add the driver to the image's DXE volume and write the result to `output`."""
    t0 = time.monotonic()
    if output.resolve() == image.resolve():
        raise InputError("refusing to overwrite the input image; choose another -o")
    raw = read_input(image, "image")
    pe = read_input(driver, "driver")
    ffs.check_driver(pe, str(driver))
    check_driver_image(pe, driver)
    guid = guid or uuid.UUID(L.DRIVER_FILE_GUID)
    if guid.int == 0:
        raise InputError("the all-zero GUID cannot name an FFS file")
    where = find_compressed_dxe(raw)
    dxe = where.dxe
    present = {f.guid for v in list_image(raw, str(image)).volumes for f in v.files}
    if dxe.find(guid) is not None or str(guid) in present:
        raise InputError(f"the image already holds a file {guid} (already injected?)")
    new_file = ffs.build_smm_file(guid, pe, driver_depex(driver, depex), name)
    at = dxe.free_offset
    if at + len(new_file) > dxe.length:
        raise InputError(
            f"the driver file needs {len(new_file):#x} bytes, the DXE volume has "
            f"{dxe.free_bytes:#x} free"
        )
    new_dxe = bytearray(dxe.data)
    new_dxe[at : at + len(new_file)] = new_file
    out = rebuild(raw, where, bytes(new_dxe))
    try:
        output.write_bytes(out)
    except OSError as exc:
        raise InputError(f"cannot write {output}: {exc.strerror}") from exc
    return InjectReport(
        image=str(image),
        output=str(output),
        driver=str(driver),
        file_guid=str(guid),
        file_size=len(new_file),
        volume_offset=at,
        free_before=dxe.free_bytes,
        free_after=dxe.length - (at + len(new_file)),
        compressed_before=where.fv_file.size,
        compressed_after=_compressed_size(out, where.outer_offset, where.fv_file.offset),
        seconds=time.monotonic() - t0,
    )


def _compressed_size(out: bytes, outer_offset: int, file_offset: int) -> int:
    at = outer_offset + file_offset + 20
    return int.from_bytes(out[at : at + 3], "little")
