"""edk2-pkg/CodeIslandPkg parses with edk2-pytool-library and builds exactly the smm/ sources."""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from edk2toollib.uefi.edk2.parsers.dec_parser import DecParser
from edk2toollib.uefi.edk2.parsers.dsc_parser import DscParser
from edk2toollib.uefi.edk2.parsers.inf_parser import InfParser

from codeisland.plan import layout as L

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "edk2-pkg" / "CodeIslandPkg"


@pytest.fixture(scope="module")
def inf() -> InfParser:
    p = InfParser()
    p.ParseFile(str(PKG / "CodeIslandSmm.inf"))
    return p


def smm_sources() -> set[str]:
    """What `make -C smm` compiles (CORE_SRC + DRV_SRC) plus the headers those directories hold."""
    found = set()
    for sub in ("core", "driver"):
        for f in (ROOT / "smm" / sub).iterdir():
            if f.suffix in (".c", ".h"):
                found.add(f"Source/{sub}/{f.name}")
    return found


def test_source_symlink_points_at_smm() -> None:
    assert (PKG / "Source").is_symlink()
    assert (PKG / "Source").resolve() == (ROOT / "smm").resolve()


def test_inf_sources_are_exactly_the_smm_driver_sources(inf: InfParser) -> None:
    listed = set(inf.Sources)
    assert len(listed) == len(inf.Sources), "a source is listed twice"
    missing_on_disk = {s for s in listed if not (PKG / s).is_file()}
    assert not missing_on_disk
    assert listed == smm_sources(), (
        f"not in the INF: {sorted(smm_sources() - listed)}; "
        f"not on disk: {sorted(listed - smm_sources())}"
    )


def test_inf_defines_match_the_driver_contract(inf: InfParser) -> None:
    assert inf.Dict["MODULE_TYPE"] == "DXE_SMM_DRIVER"
    assert inf.Dict["ENTRY_POINT"] == "CodeIslandSmmEntry"
    assert uuid.UUID(inf.Dict["FILE_GUID"]) == uuid.UUID(L.DRIVER_FILE_GUID)
    assert "CodeIslandPkg/CodeIslandPkg.dec" in inf.PackagesUsed
    assert "gEfiSmmCpuProtocolGuid" in inf.ProtocolsUsed
    depex = re.search(r"\[Depex\]\s*(\S+)", (PKG / "CodeIslandSmm.inf").read_text())
    assert depex is not None and depex.group(1) == "gEfiSmmCpuProtocolGuid"
    # the driver's entry point really is this symbol
    assert "CodeIslandSmmEntry" in (ROOT / "smm" / "driver" / "driver.c").read_text()


def test_dec_guid_is_the_config_table_guid_of_plan_h() -> None:
    dec = DecParser()
    dec.ParseFile(str(PKG / "CodeIslandPkg.dec"))
    guids = {g.name: g.guid for g in dec.Guids}
    assert guids["gCodeIslandConfigTableGuid"] == uuid.UUID(L.CONFIG_TABLE_GUID)
    header = (ROOT / "smm" / "include" / "codeisland" / "plan.h").read_text()
    assert f'CI_CONFIG_TABLE_GUID_STR "{L.CONFIG_TABLE_GUID}"' in header
    include_dirs = [str(p) for p in dec.IncludePaths]
    assert include_dirs == ["Source/include"]
    assert (PKG / "Source" / "include" / "codeisland" / "plan.h").is_file()


def test_dsc_lists_the_driver_and_resolves_its_entry_library() -> None:
    dsc = DscParser()
    dsc.SetNoFailMode()
    dsc.ParseFile(str(PKG / "CodeIslandPkg.dsc"))
    assert dsc.LocalVars["PLATFORM_NAME"] == "CodeIslandPkg"
    assert "X64" in dsc.LocalVars["SUPPORTED_ARCHITECTURES"]
    # MdePkg paths do not resolve without an EDK2 tree (no-fail mode); our own must
    assert [c[0] for c in dsc.Components] == ["CodeIslandPkg/CodeIslandSmm.inf"]
    assert (PKG.parent / dsc.Components[0][0]).is_file()
    entry = dsc.ScopedLibraryDict["common.uefidriverentrypoint"]
    assert entry == ["MdePkg/Library/UefiDriverEntryPoint/UefiDriverEntryPoint.inf"]
