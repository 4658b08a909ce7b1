"""`firmware list` / `firmware inject` on Debian's real OVMF image, refusals, and a boot."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import uefi_firmware

from codeisland.firmware import sections as S
from codeisland.firmware.image import find_compressed_dxe, sec_core_machine
from codeisland.firmware.listing import list_image
from codeisland.firmware.volume import checksum16
from codeisland.plan import layout as L
from codeisland.qemu.machine import VmConfig

OVMF = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
ROOT = Path(__file__).resolve().parents[1]
DRIVER_GUID = uuid.UUID(L.DRIVER_FILE_GUID)

pytestmark = pytest.mark.skipif(not OVMF.is_file(), reason="Debian's ovmf package is not installed")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "from codeisland.cli import main; main()", *args],
        capture_output=True,
        text=True,
    )


@pytest.fixture(scope="module")
def driver() -> Path:
    subprocess.run(["make", "-s", "-C", str(ROOT / "smm")], check=True)
    return ROOT / "smm" / "build" / "CodeIslandSmm.efi"


@pytest.fixture(scope="module")
def injected(driver: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("fw") / "codeisland.fd"
    before = hashlib.sha256(OVMF.read_bytes()).hexdigest()
    r = cli("firmware", "inject", "--image", str(OVMF), "--driver", str(driver), "-o", str(out))
    assert r.returncode == 0, r.stderr
    assert hashlib.sha256(OVMF.read_bytes()).hexdigest() == before  # input untouched
    return out


def test_list_agrees_with_uefi_firmware_parser() -> None:
    raw = OVMF.read_bytes()
    ours = list_image(raw, str(OVMF))
    assert [v.where.split("/")[-1] for v in ours.volumes] == ["0x0", "0x80", "0xe0090", "0x348000"]
    dxe = ours.volumes[2]
    assert dxe.size == 0xC00000 and len(dxe.files) == 120
    assert ours.volumes[0].compressed[0]["unpacked"] == 0xCE0090
    # differential: every file GUID we list is the set the uefi-firmware library finds
    theirs: set[str] = set()
    stack = [uefi_firmware.AutoParser(raw).parse()]
    while stack:
        obj = stack.pop()
        if type(obj).__name__ == "FirmwareFile":
            theirs.add(obj.guid_label)
        stack.extend(o for o in getattr(obj, "objects", []) if o is not None)
    mine = {f.guid for v in ours.volumes for f in v.files}
    assert mine == theirs


def test_debian_image_has_ia32_pei_and_boots_with_s3_on(tmp_path: Path) -> None:
    """Debian's image is OvmfPkgIa32X64 (IA32 SEC/PEI): QEMU keeps S3; an X64-PEI image
    (tests/test_edk2_build.py builds one) gets S3 off."""
    raw = OVMF.read_bytes()
    assert sec_core_machine(raw) == 0x014C  # IMAGE_FILE_MACHINE_I386
    assert VmConfig(OVMF, tmp_path).firmware_args() == []


def test_list_json_via_cli() -> None:
    r = cli("firmware", "list", str(OVMF), "--json")
    assert r.returncode == 0, r.stderr
    data = json.loads(r.stdout)
    names = {f["name"] for v in data["volumes"] for f in v["files"]}
    assert {"PiSmmCore", "PiSmmCpuDxeSmm", "DxeCore"} <= names


def test_inject_adds_one_wellformed_smm_file(injected: Path, driver: Path) -> None:
    raw_in, raw_out = OVMF.read_bytes(), injected.read_bytes()
    assert len(raw_out) == len(raw_in)
    assert raw_out[0x348000:] == raw_in[0x348000:]  # SECFV untouched
    before, after = find_compressed_dxe(raw_in).dxe, find_compressed_dxe(raw_out).dxe
    assert after.length == before.length == 0xC00000
    assert len(after.files) == len(before.files) + 1
    new = after.find(DRIVER_GUID)
    assert new is not None and new.type == 0x0A and new.offset % 8 == 0
    header = after.data[new.offset : new.offset + 24]
    assert sum(header[:17] + b"\0" + header[18:23]) % 256 == 0  # file sum, State count as 0
    assert header[17] == 0xAA and header[23] == 0xF8
    body = new.body(after.data)
    secs = S.parse_sections(body, "driver file")
    assert [s.type for s in secs] == [S.SECTION_MM_DEPEX, S.SECTION_PE32, S.SECTION_USER_INTERFACE]
    assert secs[0].body(body) == driver.with_suffix(".depex").read_bytes()
    assert secs[1].body(body) == driver.read_bytes()
    assert secs[2].body(body).decode("utf-16-le").rstrip("\0") == "CodeIslandSmm"
    # outer volume header still valid and every original file kept byte for byte
    assert checksum16(raw_out[:0x48]) == 0
    for f in before.files:
        g = after.find(f.guid)
        assert g is not None and g.offset == f.offset
        assert after.data[g.offset : g.offset + g.size] == before.data[f.offset : f.offset + f.size]


def test_independent_parser_sees_the_injected_driver(injected: Path) -> None:
    fw = uefi_firmware.AutoParser(injected.read_bytes()).parse()
    stack, found = [fw], []
    while stack:
        obj = stack.pop()
        if type(obj).__name__ == "FirmwareFile" and obj.guid_label == str(DRIVER_GUID):
            found.append(obj)
        stack.extend(o for o in getattr(obj, "objects", []) if o is not None)
    assert len(found) == 1 and found[0].type == 0x0A


def _refused(tmp_path: Path, image: Path, drv: Path, out: Path | None = None) -> str:
    out = out or tmp_path / "out.fd"
    r = cli("firmware", "inject", "--image", str(image), "--driver", str(drv), "-o", str(out))
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("codeisland: error: "), r.stderr
    if out != image:
        assert not out.exists()
    return lines[0]


def test_refuses_truncated_corrupt_and_foreign_images(tmp_path: Path, driver: Path) -> None:
    raw = OVMF.read_bytes()
    cases = {
        "trunc.fd": raw[:0x100000],
        "zero.fd": bytes(0x10000),
        "hdrsum.fd": raw[:0x32] + bytes([raw[0x32] ^ 1]) + raw[0x33:],
        "lzma.fd": raw[:0x200] + bytes(0x1000) + raw[0x1200:],
    }
    messages = {}
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
        messages[name] = _refused(tmp_path, tmp_path / name, driver)
    assert "only 0x100000 present" in messages["trunc.fd"]
    assert "no firmware volume" in messages["zero.fd"]
    assert "checksum" in messages["hdrsum.fd"]
    assert "LZMA" in messages["lzma.fd"]
    r = cli("firmware", "list", str(tmp_path / "zero.fd"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_refuses_bad_drivers_reinjection_and_overwriting(
    tmp_path: Path, driver: Path, injected: Path
) -> None:
    not_pe = tmp_path / "x.efi"
    not_pe.write_bytes(b"MZ" + bytes(200))
    assert "PE" in _refused(tmp_path, OVMF, not_pe)
    assert "already" in _refused(tmp_path, injected, driver)
    copy = tmp_path / "copy.fd"
    copy.write_bytes(OVMF.read_bytes())
    assert "overwrite" in _refused(tmp_path, copy, driver, out=copy)


def test_refuses_injects_that_do_not_fit(tmp_path: Path, driver: Path) -> None:
    pe = driver.read_bytes()
    huge = tmp_path / "huge.efi"  # more than DXEFV's ~6.7 MiB of free space
    huge.write_bytes(pe + bytes(7 << 20))
    assert "DXE volume has" in _refused(tmp_path, OVMF, huge)
    noisy = tmp_path / "noisy.efi"  # fits DXEFV but does not compress into FVMAIN_COMPACT
    noisy.write_bytes(pe + os.urandom(3 << 20))
    assert "outer volume" in _refused(tmp_path, OVMF, noisy)


def test_injected_image_boots_and_the_driver_logs(injected: Path, tmp_path: Path) -> None:
    from codeisland.qemu.machine import QemuVm, VmConfig
    from codeisland.qemu.session import DRIVER_BOOT_LINE

    with QemuVm(VmConfig(image=injected, workdir=tmp_path / "vm")) as m:
        match = m.wait_for("debugcon", DRIVER_BOOT_LINE, 60)
        assert int(match.group(1), 16) % 0x1000 == 0  # the mailbox is page-aligned
    assert "codeisland: sw-smi path=root" in m.debugcon()  # Debian's OVMF: no SwDispatch2
