"""CodeIslandPkg built by EDK2 itself: the README's platform edits, the package alone with GCC5
and CLANGPDB, OVMF with the driver in its DSC/FDF (both variants), and the failure lines."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import lief
import pytest
from edk2_common import edk2_driver, edk2_firmware, require_edk2

from codeisland.errors import InputError
from codeisland.firmware import build_platform as P
from codeisland.firmware.build import PLATFORMS, RESTRICTED_PCD
from codeisland.firmware.build_source import Edk2Source, find_source, host_python
from codeisland.firmware.image import MACHINE_X64, find_compressed_dxe, sec_core_machine
from codeisland.paths import cache_dir, repo_root
from codeisland.plan import layout as L
from codeisland.qemu.machine import VmConfig

DSC_SAMPLE = "\r\n".join(
    [
        "[Components.X64]",
        "!if $(SMM_REQUIRE) == TRUE",
        "  UefiCpuPkg/PiSmmCpuDxeSmm/PiSmmCpuDxeSmm.inf {",
        "    <LibraryClasses>",
        "      SmmCpuFeaturesLib|OvmfPkg/Library/SmmCpuFeaturesLib/SmmCpuFeaturesLib.inf",
        "  }",
        "  OvmfPkg/Next.inf",
        "!endif",
        "",
    ]
)
FDF_SAMPLE = "\n".join(
    ["[FV.DXEFV]", "INF  UefiCpuPkg/PiSmmCpuDxeSmm/PiSmmCpuDxeSmm.inf", "INF  Next.inf", ""]
)


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from codeisland.cli import main; main()", *args],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, **(env or {})},
    )


# -- the README's edits, on text ----------------------------------------------------------------


def test_dsc_edit_goes_after_the_smm_cpu_block_keeping_crlf_and_is_idempotent() -> None:
    out = P.add_to_dsc(DSC_SAMPLE)
    lines = out.split("\r\n")
    assert lines[lines.index("  }") + 1] == f"  {P.DRIVER_INF}"
    assert lines[-3:] == ["  OvmfPkg/Next.inf", "!endif", ""]
    assert "\n" not in out.replace("\r\n", "")
    assert P.add_to_dsc(out) == out


def test_fdf_edit_goes_after_the_smm_cpu_driver() -> None:
    out = P.add_to_fdf(FDF_SAMPLE)
    assert out.splitlines()[2] == f"INF  {P.DRIVER_INF}"
    assert P.add_to_fdf(out) == out


def test_platform_without_the_smm_cpu_driver_is_refused() -> None:
    with pytest.raises(InputError, match="PiSmmCpuDxeSmm"):
        P.add_to_dsc("[Components]\r\n  MdeModulePkg/Foo.inf\r\n")
    with pytest.raises(InputError, match="PiSmmCpuDxeSmm"):
        P.add_to_fdf("[FV.DXEFV]\nINF  Foo.inf\n")


# -- the README's edits, on Debian's OvmfPkgX64 and OvmfPkgIa32X64 --------------------------------


@pytest.mark.parametrize(
    "dsc, archs",
    [("OvmfPkg/OvmfPkgIa32X64.dsc", ("IA32", "X64")), ("OvmfPkg/OvmfPkgX64.dsc", ("X64",))],
)
def test_readme_edits_put_the_driver_in_both_ovmf_platforms(
    dsc: str, archs: tuple[str, ...], tmp_path: Path
) -> None:
    """With SMM_REQUIRE the driver is a component and a DXEFV file; without it, neither."""
    require_edk2()
    source = find_source(cache_dir())
    assert source is not None
    for smm, expect in (("TRUE", True), ("FALSE", False)):
        pb = P.PlatformBuild(
            source, tmp_path / smm, repo_root() / "edk2-pkg", dsc, archs, "GCC5", "RELEASE",
            ["-DSECURE_BOOT_ENABLE=TRUE", "-DFD_SIZE_4MB", f"-DSMM_REQUIRE={smm}"],
        )  # fmt: skip
        P.prepare_workspace(pb)
        if expect:
            P.check_platform(pb)
        else:
            with pytest.raises(InputError, match="does not"):
                P.check_platform(pb)


def test_build_python_parses_x64_before_ia32(tmp_path: Path) -> None:
    """BaseTools order -a IA32 -a X64 through a set of names and check --pcd against the first
    arch only; PcdCpuSmmRestrictedMemoryAccess is declared for X64 alone, so an IA32-first run
    fails with "not found in the DEC file" (it did, in CI, with a random hash seed).  The build
    environment fixes the seed as edksetup.sh does; this is the order that seed must give."""
    pb = P.PlatformBuild(
        find_source(cache_dir()) or Edk2Source(tmp_path, "none"), tmp_path, tmp_path,
        PLATFORMS["Ia32X64"].dsc, ("IA32", "X64"), "GCC5", "RELEASE", [],
    )  # fmt: skip
    order = subprocess.run(
        [host_python(), "-c", "print(*tuple(set(('IA32', 'X64'))))"],
        env=pb.environment(), capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    assert order == ["X64", "IA32"]


def test_a_build_holding_the_workspace_keeps_readers_out(tmp_path: Path) -> None:
    """While a build holds the package workspace, an up-to-date `build-driver` waits instead
    of copying a PE that may be half rewritten; it copies once the build lets go."""
    edk2_driver("GCC5")
    out = tmp_path / "d.efi"
    with P.workspace_lock(cache_dir() / "edk2" / "ws" / "package"):
        proc = subprocess.Popen(
            [sys.executable, "-c", "from codeisland.cli import main; main()",
             "firmware", "build-driver", "-o", str(out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        time.sleep(8)  # the up-to-date path takes a few seconds when nobody holds the lock
        assert proc.poll() is None and not out.exists()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    assert out.read_bytes() == edk2_driver("GCC5").read_bytes()


# -- the package alone: GCC5 and CLANGPDB -------------------------------------------------------


@pytest.mark.parametrize("toolchain", ["GCC5", "CLANGPDB"])
def test_package_builds_with_edk2_as_an_smm_driver_pe(toolchain: str) -> None:
    pe = lief.PE.parse(str(edk2_driver(toolchain)))
    assert pe is not None
    assert pe.header.machine == lief.PE.Header.MACHINE_TYPES.AMD64
    assert pe.optional_header.magic == lief.PE.PE_TYPE.PE32_PLUS
    assert int(pe.optional_header.subsystem) == 11  # EFI_BOOT_SERVICE_DRIVER (DXE_SMM_DRIVER)
    assert not pe.has_imports  # freestanding: nothing to bind at load time
    text = pe.get_section(".text")
    entry = pe.optional_header.addressof_entrypoint
    assert text.virtual_address <= entry < text.virtual_address + text.virtual_size


def test_package_rebuild_with_nothing_changed_is_a_copy(tmp_path: Path) -> None:
    edk2_driver("GCC5")  # built (or up to date) once
    r = cli("firmware", "build-driver", "--json", "-o", str(tmp_path / "d.efi"))
    assert r.returncode == 0, r.stderr
    assert '"up_to_date": true' in r.stdout
    assert (tmp_path / "d.efi").read_bytes() == edk2_driver("GCC5").read_bytes()


def test_build_error_is_one_line_quoting_the_compiler(tmp_path: Path) -> None:
    """A copy of the repository's package and smm/ with a syntax error: exit 7, one line.
    Built in a cache of its own (the same edk2 tree), so the shared package workspace keeps
    its stamp and objects."""
    require_edk2()
    source = find_source(cache_dir())
    assert source is not None
    cache = tmp_path / "cache"
    (cache / "edk2" / "src").mkdir(parents=True)
    (cache / "edk2" / "src" / source.root.name).symlink_to(source.root)
    root = tmp_path / "repo"
    shutil.copytree(repo_root() / "edk2-pkg", root / "edk2-pkg", symlinks=True)
    shutil.copytree(repo_root() / "smm", root / "smm", ignore=shutil.ignore_patterns("build"))
    log_c = root / "smm" / "driver" / "log.c"
    log_c.write_text(log_c.read_text() + "\nthis is not C\n")
    r = cli(
        "firmware",
        "build-driver",
        "-o",
        str(tmp_path / "x.efi"),
        env={"CODEISLAND_ROOT": str(root), "CODEISLAND_CACHE": str(cache)},
    )
    assert r.returncode == 7
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("codeisland: error: EDK2 build failed: ")
    assert "log.c" in last and "error" in last
    assert "Traceback" not in r.stderr and not (tmp_path / "x.efi").exists()


def test_missing_tool_is_one_line() -> None:
    r = cli("firmware", "build", env={"PATH": "/nonexistent"})
    assert r.returncode == 6
    assert r.stderr.strip().splitlines() == [
        "codeisland: error: gcc is not installed (apt-get install build-essential)"
    ]


def test_unknown_variant_is_a_usage_error() -> None:
    r = cli("firmware", "build", "--variant", "prod")
    assert r.returncode == 2 and "prod" in r.stderr


# -- OVMF with the driver built in --------------------------------------------------------------


@pytest.mark.parametrize(
    "variant, platform", [("stock", "Ia32X64"), ("unrestricted", "Ia32X64"), ("stock", "X64")]
)
def test_firmware_image_carries_the_driver_in_dxefv(variant: str, platform: str) -> None:
    fw = edk2_firmware(variant, platform)
    assert fw.dsc == PLATFORMS[platform].dsc and fw.platform == platform
    assert fw.code.stat().st_size == 0x37C000 and fw.vars.stat().st_size == 0x84000  # = Debian's
    driver = find_compressed_dxe(fw.code.read_bytes()).dxe.find(uuid.UUID(L.DRIVER_FILE_GUID))
    assert driver is not None and driver.type == 0x0A  # EFI_FV_FILETYPE_SMM
    assert fw.restricted_memory_access is (variant == "stock")
    assert fw.flags == [
        "-DNETWORK_HTTP_BOOT_ENABLE=TRUE", "-DNETWORK_IP6_ENABLE=TRUE", "-DNETWORK_TLS_ENABLE",
        "-DSECURE_BOOT_ENABLE=TRUE", "-DTPM2_ENABLE=TRUE", "-DFD_SIZE_4MB", "-DSMM_REQUIRE=TRUE",
    ]  # fmt: skip


def test_unrestricted_variant_is_named_so_nobody_flashes_it() -> None:
    fw = edk2_firmware("unrestricted")
    assert fw.pcds == {RESTRICTED_PCD: "FALSE"}
    for path in fw.outputs.values():
        assert Path(path).name.startswith("INSECURE-TEST-BOARD.")
    assert "TEST BOARD ONLY" in str(fw)
    stock = edk2_firmware("stock")
    assert not any(Path(p).name.startswith("INSECURE") for p in stock.outputs.values())


def test_firmware_rebuild_with_nothing_changed_takes_seconds(tmp_path: Path) -> None:
    edk2_firmware("stock")
    r = cli("firmware", "build", "--json", "-o", str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert '"up_to_date": true' in r.stdout
    assert (tmp_path / "OVMF_CODE_4M.secboot.codeisland.fd").read_bytes() == (
        edk2_firmware("stock").code.read_bytes()
    )


def test_x64_platform_is_x64_pei_and_boots_with_s3_off(tmp_path: Path) -> None:
    """OvmfPkgX64: an X64 SEC core (its PEI arch), files named apart from Debian's platform,
    and QEMU runs turn S3 off for it (PlatformPei stops silently otherwise)."""
    fw = edk2_firmware("stock", "X64")
    assert Path(fw.outputs["code"]).name == "OVMF_X64_CODE_4M.secboot.codeisland.fd"
    assert Path(fw.outputs["code"]).parent.name == "x64-stock"
    assert "S3 off" in str(fw)
    assert sec_core_machine(fw.code.read_bytes()) == MACHINE_X64
    assert VmConfig(fw.code, tmp_path).firmware_args() == ["-global", "ICH9-LPC.disable_s3=1"]
    ia32x64 = edk2_firmware("stock")
    assert VmConfig(ia32x64.code, tmp_path).firmware_args() == []
