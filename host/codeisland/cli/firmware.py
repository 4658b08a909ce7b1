"""`codeisland firmware`: list a firmware image, inject the SMM driver into it."""

from __future__ import annotations

from pathlib import Path

import click

from ..firmware.image import file_guid
from ..firmware.inject import inject, read_input
from ..firmware.listing import list_image
from ..paths import driver_binary
from .options import emit, json_option


@click.group("firmware")
def command() -> None:
    """UEFI firmware images: list volumes and files, inject the codeisland SMM driver."""


@command.command("list")
@click.argument("image", type=click.Path(dir_okay=False, path_type=Path))
@json_option
def list_cmd(image: Path, as_json: bool) -> None:
    """Firmware volumes, files (GUID, type, name, size), compressed sections, free space."""
    emit(list_image(read_input(image, "image"), str(image)), as_json)


@command.command("inject")
@click.option("--image", "image", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--driver",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="SMM driver (PE32+); default smm/build/CodeIslandSmm.efi.",
)
@click.option(
    "--depex",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="MM_DEPEX body; default <driver>.depex if present, else PUSH SmmCpu END.",
)
@click.option("--guid", default=None, help="FFS file name GUID (default the driver's own).")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False, path_type=Path))
@json_option
def inject_cmd(
    image: Path,
    driver: Path | None,
    depex: Path | None,
    guid: str | None,
    output: Path,
    as_json: bool,
) -> None:
    """Add the driver to the DXE volume (depex, PE32, UI sections), recompress, write OUTPUT."""
    report = inject(
        image,
        driver or driver_binary(),
        output,
        depex=depex,
        guid=file_guid(guid) if guid else None,
    )
    emit(report, as_json)
