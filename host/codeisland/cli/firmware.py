"""`codeisland firmware`: list an image, inject the SMM driver, build OVMF with it from source."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import click

from ..errors import InputError
from ..firmware.image import file_guid
from ..firmware.inject import inject, read_input
from ..firmware.listing import list_image
from ..paths import built_driver
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
    """UEFI firmware images: list, inject the SMM driver, build OVMF with it from source."""


@command.command("list")
@click.argument("image", type=INPUT_FILE)
@json_option
def list_cmd(image: Path, as_json: bool) -> None:
    """Firmware volumes, files (GUID, type, name, size), compressed sections, free space."""
    emit(list_image(read_input(image, "image"), str(image)), as_json)


@command.command("inject")
@click.option(
    "--image", "image", required=True, type=INPUT_FILE, help="The UEFI image (e.g. OVMF_CODE)."
)
@click.option(
    "--driver",
    type=INPUT_FILE,
    default=None,
    help="SMM driver (PE32+) (default: smm/build/CodeIslandSmm.efi).",
)
@click.option(
    "--depex",
    type=INPUT_FILE,
    default=None,
    help="MM_DEPEX body (default: <driver>.depex if present, else PUSH SmmCpu END).",
)
@click.option(
    "--guid", type=GUID, default=None, help="FFS file name GUID (default: the driver's own)."
)
@click.option(
    "-o", "--output", required=True, type=OUTPUT_FILE, help="Where to write the injected image."
)
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
        driver = built_driver()
    with OutputFile(output, inputs=(image, driver, depex), what="image") as tmp:
        report = inject(image, driver, tmp, depex=depex, guid=guid)
    report.output = str(output)
    emit(report, as_json)


@command.command("build")
@click.option(
    "--variant",
    type=click.Choice(["stock", "unrestricted"]),
    default="stock",
    show_default=True,
    help="stock: Debian's image + the driver.  unrestricted: TEST BOARDS ONLY, "
    "PcdCpuSmmRestrictedMemoryAccess=FALSE; its files are named INSECURE-TEST-BOARD.*",
)
@click.option(
    "--platform",
    type=click.Choice(["Ia32X64", "X64"], case_sensitive=False),
    default="Ia32X64",
    show_default=True,
    help="Ia32X64: OvmfPkgIa32X64.dsc, as Debian builds its image.  X64: OvmfPkgX64.dsc "
    "(X64 PEI; boots only with S3 off, which codeisland's QEMU runs do for it).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Directory for the CODE/VARS images and the driver PE (default: build/firmware/VARIANT, "
    "build/firmware/x64-VARIANT for X64).",
)
@json_option
def build_cmd(variant: str, platform: str, output: Path | None, as_json: bool) -> None:
    """OVMF from Debian's edk2 source (apt-get source, cached outside the repository) with
    CodeIslandPkg added to the platform's DSC and FDF as edk2-pkg/README.md says, built by
    EDK2 with Debian's own flags.  Progress on stderr; nothing changed = seconds."""
    from ..firmware.build import build_firmware

    emit(build_firmware(variant, output, platform=platform), as_json)


@command.command("build-driver")
@click.option(
    "--toolchain", type=click.Choice(["GCC5", "CLANGPDB"]), default="GCC5", show_default=True,
    help="EDK2 tool chain tag.",
)  # fmt: skip
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="Where to write the PE (default: build/edk2/CodeIslandSmm.TOOLCHAIN.efi).",
)
@json_option
def build_driver_cmd(toolchain: str, output: Path | None, as_json: bool) -> None:
    """CodeIslandSmm.efi built by EDK2 from CodeIslandPkg.dsc alone (no platform)."""
    from ..firmware.build import build_driver

    emit(build_driver(toolchain, output), as_json)
