"""The landing library (guest/linux/landing.c) and the program bundle (qemu/linux/program.py)
on the host itself, without a VM: the library is an ordinary LD_PRELOAD object, so its report,
its private text pages, its zone, fork and bad settings can be checked on this machine's Debian
programs; the bundle holds exactly the program's runtime files."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from codeisland.paths import repo_root
from codeisland.qemu.linux import cpio, program

ROOT = repo_root()
GZIP = Path("/usr/bin/gzip")
CLI = [sys.executable, "-c", "from codeisland.cli import main; main()"]


@pytest.fixture(scope="module")
def landing() -> Path:
    subprocess.run(["make", "-s", "-C", str(ROOT / "guest/linux"), "landing"], check=True)
    return ROOT / "guest" / "build" / "linux" / "codeisland-landing.so"


def preload(landing: Path, log: Path, **env: str) -> dict[str, str]:
    return {**os.environ, "LD_PRELOAD": str(landing), "CODEISLAND_LANDING_LOG": str(log), **env}


def test_report_line_names_text_and_a_zone_within_rel32_reach(
    landing: Path, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    data = os.urandom(1 << 16) * 4
    plain = subprocess.run([str(GZIP), "-9n"], input=data, capture_output=True, check=True)
    ours = subprocess.run(
        [str(GZIP), "-9n"], input=data, capture_output=True, check=True, env=preload(landing, log)
    )
    assert ours.stdout == plain.stdout and ours.stderr == b""  # the program's output untouched
    m = program.LANDING_LINE.search(log.read_text())
    assert m is not None, log.read_text()
    z = program.Landing.parse(m)
    assert z.exe == str(GZIP) and z.private
    thp = Path("/sys/kernel/mm/transparent_hugepage/enabled").read_text()
    if "[never]" not in thp:  # one huge page's adjacent frames under the text
        assert (z.text_via, z.text_breaks) == ("remap", 0)
    assert z.base <= z.text[0] < z.text[1]
    assert z.zone % (2 << 20) == 0 and z.size == 2 << 20
    assert z.zone + z.size <= z.base and z.text[1] - z.zone < 1 << 31  # below, within reach
    assert re.search(rf"pid {z.pid} exit", log.read_text())


def test_text_pages_are_the_process_own_and_the_zone_is_locked(
    landing: Path, tmp_path: Path
) -> None:
    log = tmp_path / "log"
    p = subprocess.Popen(["/usr/bin/sleep", "30"], env=preload(landing, log))
    try:
        for _ in range(100):
            if program.LANDING_LINE.search(log.read_text() if log.exists() else ""):
                break
            time.sleep(0.05)
        m = program.LANDING_LINE.search(log.read_text())
        assert m is not None
        z = program.Landing.parse(m)
        smaps = Path(f"/proc/{p.pid}/smaps").read_text()
        blocks = re.split(r"\n(?=[0-9a-f]+-[0-9a-f]+ )", smaps)
        text = next(b for b in blocks if b.startswith(f"{z.text[0]:x}-"))
        size = (z.text[1] - z.text[0]) >> 10
        # every page of the text is an anonymous (private) copy, no longer the page cache's
        assert re.search(rf"\nAnonymous:\s+{size} kB", text), text
        assert re.search(rf"\nLocked:\s+{size} kB", text), text
        zone = next(b for b in blocks if b.startswith(f"{z.zone:x}-"))
        assert " rwxp " in zone.splitlines()[0]
        assert re.search(rf"\nLocked:\s+{z.size >> 10} kB", zone), zone
        if z.huge and z.via == "thp":
            assert re.search(rf"\nAnonHugePages:\s+{z.size >> 10} kB", zone), zone
    finally:
        p.kill()
        p.wait()


def test_a_fork_child_reports_itself(landing: Path, tmp_path: Path) -> None:
    log = tmp_path / "log"
    subprocess.run(["/bin/sh", "-c", "/bin/true & wait"], env=preload(landing, log), check=True)
    text = log.read_text()
    parent = int(re.search(r"pid (\d+) exe /usr/bin/dash", text).group(1))  # type: ignore[union-attr]
    assert re.search(rf"forked from {parent} \(zone and text inherited", text), text


def test_a_bad_zone_size_is_one_line_and_the_program_runs_on(landing: Path, tmp_path: Path) -> None:
    log = tmp_path / "log"
    r = subprocess.run(
        [str(GZIP), "-c"], input=b"x" * 1000, capture_output=True,
        env=preload(landing, log, CODEISLAND_LANDING_SIZE="12345"),
    )  # fmt: skip
    assert (
        r.returncode == 0
        and r.stdout
        == subprocess.run([str(GZIP), "-c"], input=b"x" * 1000, capture_output=True).stdout
    )
    assert "error: CODEISLAND_LANDING_SIZE must be a multiple of 2 MiB" in log.read_text()
    assert program.LANDING_LINE.search(log.read_text()) is None


def test_runtime_files_are_the_program_its_interpreter_and_libraries() -> None:
    files = program.runtime_files(GZIP)
    assert files["usr/bin/gzip"] == GZIP
    assert "lib64/ld-linux-x86-64.so.2" in files
    assert "lib/x86_64-linux-gnu/libc.so.6" in files
    mawk = program.runtime_files(Path("/usr/bin/mawk"))
    assert "lib/x86_64-linux-gnu/libm.so.6" in mawk  # DT_NEEDED followed


def test_initramfs_holds_the_bundle_and_the_run_script(landing: Path, tmp_path: Path) -> None:
    busybox = Path("/var/cache/codeisland/linux/busybox")
    if not busybox.is_file():
        pytest.skip("busybox-static not fetched (scripts/bootstrap.sh fetch_linux_guest)")
    run = program.ProgramRun(GZIP, ("-9n",), "seq 1 1000")
    out = program.build_initramfs(run, busybox, landing, tmp_path)
    listing = subprocess.run(
        f"zcat {out} | {busybox} cpio -t", shell=True, capture_output=True, text=True, check=True
    ).stdout.split()
    for name in ("init", "run", "usr/bin/gzip", "lib/codeisland-landing.so", "bin/sha256sum",
                 "lib/x86_64-linux-gnu/libc.so.6", "lib64/ld-linux-x86-64.so.2"):  # fmt: skip
        assert name in listing
    assert program.build_initramfs(run, busybox, landing, tmp_path) == out  # cached by content
    assert "seq 1 1000 | LD_PRELOAD=/lib/codeisland-landing.so /usr/bin/gzip -9n" in (
        run.pipeline("/lib/codeisland-landing.so")
    )


def test_reference_is_the_same_pipeline_unrelocated(landing: Path) -> None:
    busybox = Path("/var/cache/codeisland/linux/busybox")
    if not busybox.is_file():
        pytest.skip("busybox-static not fetched (scripts/bootstrap.sh fetch_linux_guest)")
    ref = program.ProgramRun(GZIP, ("-9n",), "seq 1 5000").reference(busybox, landing)
    seq = "".join(f"{i}\n" for i in range(1, 5001)).encode()
    want = subprocess.run([str(GZIP), "-9n"], input=seq, capture_output=True, check=True).stdout
    assert (ref.status, ref.size, ref.sha256) == (0, len(want), hashlib.sha256(want).hexdigest())


def test_exit_is_seen_from_the_landing_line_before_the_output_line() -> None:
    start = "codeisland-landing: pid 93 exe /usr/bin/mawk base 0x1000 ...\n"
    assert not program.exited(start, 93)
    assert program.exited(start + "codeisland-landing: pid 93 exit\n", 93)
    assert not program.exited(start + "codeisland-landing: pid 930 exit\n", 93)
    line = "codeisland-program: status 0 bytes 1 sha256 " + "ab" * 32 + " seconds 1.0 2.0\n"
    assert program.exited(line, 93)


def test_serial_output_line_parses() -> None:
    line = "codeisland-program: status 0 bytes 12 sha256 " + "ab" * 32 + " seconds 10.50 44.75\n"
    out = program.parse_output("noise\n" + line)
    assert out is not None and (out.status, out.size, out.seconds) == (0, 12, 34.25)
    assert program.parse_output("codeisland-program: start\n") is None


PROCESS = ("qemu", "process", "--exec")
LOOP = ("loop", "--guest", "linux", "--no-plots", "--exec")


@pytest.mark.parametrize(
    "command, exe, message",
    [
        (PROCESS, "/nonexistent", "is not an ELF program"),
        (PROCESS, "/etc/hostname", "is not an ELF program"),
        (PROCESS, "usr/bin/gzip", "absolute path"),
        (PROCESS, "/var/cache/codeisland/linux/busybox", "statically linked"),
        # the loop checks the program the same way (ProgramRun.check) before it boots
        (LOOP, "/etc/hostname", "is not an ELF program"),
        (LOOP, "/var/cache/codeisland/linux/busybox", "statically linked"),
    ],
)
def test_cli_refuses_programs_it_cannot_run(
    command: tuple[str, ...], exe: str, message: str
) -> None:
    if "busybox" in exe and not Path(exe).is_file():
        pytest.skip("busybox-static not fetched")
    r = subprocess.run([*CLI, *command, exe], capture_output=True, text=True)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr


@pytest.mark.parametrize(
    "command, pid, message",
    [
        (PROCESS, "0", "no guest process can have PID 0"),
        (PROCESS, "4194305", "Linux PIDs are 1..4194304"),
        (LOOP, "99999999999", "Linux PIDs are 1..4194304"),
        (PROCESS, "mawk; reboot", "give a guest PID or a process name"),
        (LOOP, "a-name-of-16-chr", "at most 15"),
    ],
)
def test_a_pid_no_guest_can_have_is_one_line_before_any_boot(
    command: tuple[str, ...], pid: str, message: str, tmp_path: Path
) -> None:
    r = subprocess.run([*CLI, *command, "/usr/bin/mawk", "--pid", pid, "--workdir",
                        str(tmp_path / "w")], capture_output=True, text=True)  # fmt: skip
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr
    assert not (tmp_path / "w" / "vm").exists()  # nothing booted


def test_attached_run_is_started_by_the_guest_itself(landing: Path, tmp_path: Path) -> None:
    """--pid: /init starts the pipeline as the board's own job, without the landing library,
    and then the attacher on the process the kernel command line names."""
    busybox = Path("/var/cache/codeisland/linux/busybox")
    if not busybox.is_file():
        pytest.skip("busybox-static not fetched (scripts/bootstrap.sh fetch_linux_guest)")
    subprocess.run(["make", "-s", "-C", str(ROOT / "guest/linux"), "attach"], check=True)
    attacher = ROOT / "guest" / "build" / "linux" / "codeisland-attach"
    run = program.ProgramRun(GZIP, ("-9n",), "seq 1 1000", attach="gzip")
    assert run.pipeline("/lib/codeisland-landing.so") == "seq 1 1000 | /usr/bin/gzip -9n"
    assert run.kernel_args() == " codeisland.attach=gzip"
    out = program.build_initramfs(run, busybox, landing, tmp_path, attacher)
    listing = subprocess.run(
        f"zcat {out} | {busybox} cpio -t", shell=True, capture_output=True, text=True, check=True
    ).stdout.split()
    assert "bin/codeisland-attach" in listing and "usr/bin/gzip" in listing
    assert "lib/codeisland-landing.so" not in listing
    init = subprocess.run(f"zcat {out} | {busybox} cpio -i --to-stdout init", shell=True,
                          capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert "/run &" in init and '/bin/codeisland-attach "$target"  #' in init
    assert "codeisland.attach=*" in init
    # one initramfs for every PID: the name is on the kernel command line only
    other = program.ProgramRun(GZIP, ("-9n",), "seq 1 1000", attach="93")
    assert program.build_initramfs(other, busybox, landing, tmp_path, attacher) == out


@pytest.mark.parametrize(
    "extra, message",
    [
        (("--cpus", "9"), "--cpus must be 1..8"),
        (("--platform", "/nonexistent.toml"), "does not exist"),
        (("--window-samples", "0"), "--window-samples"),
        (("--policy", "oracle"), "--policy"),
    ],
)
def test_loop_refuses_bad_options(extra: tuple[str, ...], message: str) -> None:
    r = subprocess.run([*CLI, *LOOP, str(GZIP), *extra], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert message in r.stderr and "Traceback" not in r.stderr


def test_cpio_members_are_regular_files(tmp_path: Path) -> None:
    m = cpio.file("x", b"1", 0o755)
    assert m.mode & 0o777 == 0o755
