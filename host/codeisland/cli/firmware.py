"""`codeisland firmware`: list a firmware image, inject the SMM driver into it."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import click

from ..errors import BuildMissing, InputError
from ..firmware.image import file_guid
from ..firmware.inject import inject, read_input
from ..firmware.listing import list_image
from ..paths import driver_binary
from .options import INPUT_FILE, OUTPUT_FILE, emit, json_option
from .outputs import OutputFile


class Guid(click.ParamType):
    """An FFS file name GUID: registry format, not empty, not all zeros."""

    name = "guid"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> uuid.UUID:
        if isinstance(value, uuid.UUID):
            return value
        try:
            guid = file_guid(str(value))
        except InputError as exc:
            self.fail(str(exc), param, ctx)
        if guid.int == 0:
            self.fail("the all-zero GUID cannot name an FFS file", param, ctx)
        return guid


GUID = Guid()


@click.group("firmware")
def command() -> None:
    """UEFI firmware images: list volumes and files, inject the codeisland SMM driver."""


@command.command("list")
@click.argument("image", type=INPUT_FILE)
@json_option
def list_cmd(image: Path, as_json: bool) -> None:
    """Firmware volumes, files (GUID, type, name, size), compressed sections, free space."""
    emit(list_image(read_input(image, "image"), str(image)), as_json)


@command.command("inject")
@click.option("--image", "image", required=True, type=INPUT_FILE)
@click.option(
    "--driver",
    type=INPUT_FILE,
    default=None,
    help="SMM driver (PE32+); default smm/build/CodeIslandSmm.efi.",
)
@click.option(
    "--depex",
    type=INPUT_FILE,
    default=None,
    help="MM_DEPEX body; default <driver>.depex if present, else PUSH SmmCpu END.",
)
@click.option(
    "--guid", type=GUID, default=None, help="FFS file name GUID (default the driver's own)."
)
@click.option("-o", "--output", required=True, type=OUTPUT_FILE)
@json_option
def inject_cmd(
    image: Path,
    driver: Path | None,
    depex: Path | None,
    guid: uuid.UUID | None,
    output: Path,
    as_json: bool,
) -> None:
    """Add the driver to the DXE volume (depex, PE32, UI sections), recompress, write OUTPUT."""
    if driver is None:
        driver = driver_binary()
        if not driver.is_file():
            raise BuildMissing(f"the SMM driver {driver}")
    with OutputFile(output, inputs=(image, driver, depex), what="image") as tmp:
        report = inject(image, driver, tmp, depex=depex, guid=guid)
    report.output = str(output)
    emit(report, as_json)
