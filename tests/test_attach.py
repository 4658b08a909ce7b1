"""The attacher of `--pid` (guest/linux/attach.c) on this host, without a VM: it is an ordinary
Linux program, so attaching to this machine's Debian programs while they run shows what it does
in the guest — the process keeps running and writes exactly what it writes unattached, a system
call it was blocked in is restarted, its text becomes its own and a landing zone appears in its
maps — and its refusals are one line before it touches anything.  Also the host's side of a
refusal (qemu/linux/process.py): one line, nothing written, the guest's program still checked."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest

from codeisland.errors import EmulationError, InputError
from codeisland.paths import repo_root
from codeisland.qemu.linux import process, program

ROOT = repo_root()
MAWK = "/usr/bin/mawk"
AWK = '{ s += $1 * 3; c[$1 % 97]++; w = sprintf("%x", $1); h[substr(w, 1, 2)]++ } END { print s }'
BUSYBOX = Path("/var/cache/codeisland/linux/busybox")


@pytest.fixture(scope="module")
def attacher() -> Path:
    subprocess.run(["make", "-s", "-C", str(ROOT / "guest/linux"), "attach"], check=True)
    return ROOT / "guest" / "build" / "linux" / "codeisland-attach"


def attach(attacher: Path, target: str | int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(attacher), str(target)], capture_output=True, text=True,
                          timeout=60)  # fmt: skip


def landing_of(out: str) -> program.Landing:
    m = program.LANDING_LINE.search(out)
    assert m is not None, out
    return program.Landing.parse(m)


def maps(pid: int) -> str:
    return Path(f"/proc/{pid}/maps").read_text()


def test_a_running_program_gets_text_and_zone_and_runs_on_identically(
    attacher: Path, tmp_path: Path
) -> None:
    feed = "".join(f"{i}\n" for i in range(1, 400_001))
    want = subprocess.run([MAWK, AWK], input=feed, capture_output=True, text=True, check=True)
    reader, writer = os.pipe()
    out = tmp_path / "out"
    with out.open("w") as sink:
        job = subprocess.Popen([MAWK, AWK], stdin=reader, stdout=sink)
    os.close(reader)
    half = len(feed) // 2
    os.write(writer, feed[:half].encode())  # mawk works on half, then blocks in read()
    time.sleep(0.3)
    a = subprocess.Popen([str(attacher), str(job.pid)], stdout=subprocess.PIPE, text=True)
    assert a.stdout is not None
    first = a.stdout.readline()  # the landing line: printed once the process runs again
    after = maps(job.pid)  # still blocked in the read(): the attacher's work, nothing else
    with os.fdopen(writer, "w") as w:
        w.write(feed[half:])  # the read() it was blocked in runs on (restarted)
    assert job.wait(60) == 0
    rest = a.stdout.read()  # the watcher's exit line
    assert a.wait(30) == 0
    z = landing_of(first)
    assert z.pid == job.pid and z.exe == MAWK and z.private
    assert z.base <= z.text[0] < z.text[1] and z.zone + z.size <= z.base
    assert z.text[1] - z.zone < 1 << 31  # within rel32 reach
    zone_line = next(ln for ln in after.splitlines() if ln.startswith(f"{z.zone:08x}-"))
    assert "rwxp" in zone_line
    text_line = next(ln for ln in after.splitlines() if ln.startswith(f"{z.text[0]:08x}-"))
    assert "r-xp" in text_line
    if z.text_via == "remap":  # the text is the process's own anonymous copy
        assert MAWK not in text_line
    assert f"codeisland-landing: pid {job.pid} exit" in rest
    assert out.read_text() == want.stdout  # byte for byte the unattached run's output


def test_a_sleeping_program_wakes_on_time(attacher: Path) -> None:
    """nanosleep interrupted by the attach is restarted (restart_syscall), not cut short."""
    job = subprocess.Popen(["/usr/bin/sleep", "2"])
    time.sleep(0.3)
    t0 = time.monotonic()
    r = attach(attacher, job.pid)
    assert r.returncode == 0 and landing_of(r.stdout).exe == "/usr/bin/sleep", r.stdout
    assert job.wait(10) == 0
    assert 1.2 < time.monotonic() - t0 < 5


def test_every_thread_of_a_threaded_program_is_stopped_and_let_go(attacher: Path) -> None:
    """python3: two threads; text larger than 2 MiB (no huge-page remap: written page by page)."""
    code = "import threading,time\nt=threading.Thread(target=time.sleep,args=(2,))\nt.start()\n" \
        "time.sleep(0.5)\nt.join()\nprint('done')"  # fmt: skip
    job = subprocess.Popen(["/usr/bin/python3", "-c", code], stdout=subprocess.PIPE, text=True)
    time.sleep(0.4)
    tids = sorted(int(t) for t in os.listdir(f"/proc/{job.pid}/task"))
    assert len(tids) == 2
    r = attach(attacher, tids[1])  # a thread is not a process: refused
    assert r.returncode == 1 and f"is a thread of process {job.pid}" in r.stdout
    r = attach(attacher, job.pid)
    assert r.returncode == 0, r.stdout
    z = landing_of(r.stdout)
    assert z.private and z.exe.startswith("/usr/bin/python3")
    stdout, _ = job.communicate(timeout=20)
    assert job.returncode == 0 and stdout == "done\n"


def test_a_fork_child_inherits_zone_and_text(attacher: Path) -> None:
    """Zone and text are private mappings: a child forked after the attach has both, at the
    same addresses (copy-on-write: the same physical pages until one of them writes)."""
    code = "import os,sys,time\ntime.sleep(1)\np=os.fork()\nif p==0:\n" \
        " sys.stdout.write(open('/proc/self/maps').read()); sys.stdout.flush(); os._exit(0)\n" \
        "os.waitpid(p,0)"  # fmt: skip
    job = subprocess.Popen(["/usr/bin/python3", "-c", code], stdout=subprocess.PIPE, text=True)
    time.sleep(0.3)
    r = attach(attacher, job.pid)
    assert r.returncode == 0, r.stdout
    z = landing_of(r.stdout)
    child_maps, _ = job.communicate(timeout=20)
    assert job.returncode == 0
    lines = child_maps.splitlines()
    zone = [ln for ln in lines if ln.startswith(f"{z.zone:08x}-")]
    assert zone and "rwxp" in zone[0]
    assert any(ln.startswith(f"{z.text[0]:08x}-") and "r-xp" in ln for ln in lines)


def free_pid() -> int:
    used = {int(p) for p in os.listdir("/proc") if p.isdigit()}
    return next(p for p in range(4_000_000, 4_100_000) if p not in used)


def test_refusals_are_one_line_and_touch_nothing(attacher: Path, tmp_path: Path) -> None:
    r = attach(attacher, free_pid())
    assert r.returncode == 1 and r.stdout.count("\n") == 1
    assert "no process" in r.stdout and "ps or pidof" in r.stdout
    stat = Path("/proc/2/stat")
    if stat.is_file() and "kthreadd" in stat.read_text():
        r = attach(attacher, 2)
        assert r.returncode == 1 and "is a kernel thread" in r.stdout
    # a name several processes have: give one PID
    twin = tmp_path / "ci13-twin"
    shutil.copy("/usr/bin/sleep", twin)
    jobs = [subprocess.Popen([str(twin), "3"]) for _ in range(2)]
    time.sleep(0.3)
    r = attach(attacher, "ci13-twin")
    assert r.returncode == 1 and "2 processes are named ci13-twin" in r.stdout
    for j in jobs:
        j.kill()
        j.wait()
    r = subprocess.run([str(attacher)], capture_output=True, text=True)
    assert r.returncode == 2 and "usage" in r.stdout


def test_a_program_with_no_room_for_a_zone_runs_on_with_its_text_as_it_was(
    attacher: Path,
) -> None:
    """busybox-static is not PIE: loaded at 0x400000, below it there are 2 MiB, not 64."""
    if not BUSYBOX.is_file():
        pytest.skip("busybox-static not fetched")
    job = subprocess.Popen([str(BUSYBOX), "sleep", "2"])
    time.sleep(0.3)
    before = maps(job.pid)
    r = subprocess.run([str(attacher), str(job.pid)], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "CODEISLAND_LANDING_SIZE": str(64 << 20)})  # fmt: skip
    assert r.returncode == 1 and r.stdout.count("\n") == 1
    assert "no landing zone of 0x4000000 bytes" in r.stdout and "0x400000" in r.stdout
    assert maps(job.pid) == before  # nothing mapped, text as it was
    assert job.wait(10) == 0


class FakeVm:
    """The serial console of a guest: one text, or the texts of successive reads (the last
    one stays)."""

    def __init__(self, *serial: str) -> None:
        self._serial = list(serial)
        self.running = True
        self.started_at = time.monotonic()

    def serial(self) -> str:
        return self._serial.pop(0) if len(self._serial) > 1 else self._serial[0]


def relocation(attach: str) -> process.ProcessRelocation:
    run = program.ProgramRun(Path(MAWK), (AWK,), "seq 1 10", attach=attach)
    pr = process.ProcessRelocation(run, Path("/nonexistent"), process.Firmware())
    pr.report.reference = {"status": 0, "size": 26, "sha256": "ab" * 32}
    return pr


def test_the_host_reports_a_refused_attach_as_one_line_with_the_program_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    done = "codeisland-program: status 0 bytes 26 sha256 " + "ab" * 32 + " seconds 1.0 2.0\n"
    refused = "codeisland-attach: error: no process 4000 in the guest (look it up there ...)\n"
    pr = relocation("4000")
    with pytest.raises(InputError) as e:
        pr._landing(FakeVm("codeisland-init: userspace up\n" + refused + done))  # type: ignore[arg-type]
    msg = str(e.value)
    assert msg.startswith("--pid 4000: no process 4000 in the guest")
    assert "nothing written" in msg and "ran on unharmed (output identical" in msg
    assert "\n" not in msg
    monkeypatch.setattr(process, "REFUSED_WAIT_S", 0.2)  # a job that runs on: not waited for
    with pytest.raises(InputError, match=r"was not touched \(it did not finish within 0 s\)"):
        relocation("4000")._landing(FakeVm(refused))  # type: ignore[arg-type]
    # attached, but the host cannot analyse what it runs (the guest's busybox applets)
    busy = ("codeisland-landing: pid 85 exe /bin/busybox base 0x400000 text 0x401000-0x585000 "
            "private 1 zone 0x200000 size 0x200000 page 2M via hugetlb text_breaks 0 "
            "text_via remap\n")  # fmt: skip
    with pytest.raises(InputError) as e:
        relocation("seq")._landing(FakeVm(busy + done))  # type: ignore[arg-type]
    assert str(e.value).startswith("--pid seq: guest process 85 runs /bin/busybox, which this")
    assert "ran on unharmed" in str(e.value)
    differs = done.replace("bytes 26", "bytes 25")
    with pytest.raises(InputError, match="output DIFFERS"):
        relocation("4000")._landing(FakeVm(refused + differs))  # type: ignore[arg-type]


def test_an_attached_process_runs_a_program_this_host_cannot_analyse() -> None:
    z = program.Landing(93, "/bin/busybox-not-here", 0x400000, (0x401000, 0x500000), True,
                        0x200000, 0x200000, True, "thp", 0, "remap")  # fmt: skip
    run = relocation("93").run
    with pytest.raises(InputError, match="no copy of to analyse"):
        process.analysed_program(run, z)
    with pytest.raises(InputError, match="not an ELF program"):
        process.analysed_program(run, replace(z, exe="/etc/hostname"))
    assert process.analysed_program(run, replace(z, exe=MAWK)) == Path(MAWK)
    gzip = Path("/usr/bin/gzip")  # another program than the board's job: the host's file
    assert process.analysed_program(run, replace(z, exe=str(gzip))) == gzip


LANDING = (
    "codeisland-landing: pid 86 exe /usr/bin/mawk base 0x561a8b00b000 text "
    "0x561a8b00f000-0x561a8b028000 private 1 zone 0x561a8ae00000 size 0x200000 page 4K via thp "
    "text_breaks 0 text_via remap\n"
)


def test_a_warning_or_error_line_before_the_landing_line_is_not_the_end() -> None:
    """The attacher and the landing library print a warning (no huge pages) or a non-final error
    (text left shared) before their landing line: the host reads on, and keeps them."""
    warn = "codeisland-landing: pid 86 warning: huge pages not given (hugetlb: -; THP: 0 kB)\n"
    err = "codeisland-landing: pid 86 error: could not privatise the text pages (EPERM)\n"
    pr = relocation("mawk")
    z = pr._landing(FakeVm(warn, warn + err, warn + err + LANDING))  # type: ignore[arg-type]
    assert z.pid == 86 and not z.huge
    assert len(pr.report.landing_warnings) == 2


def test_an_error_line_with_no_landing_line_after_it_is_one_line() -> None:
    err = "codeisland-landing: pid 86 error: no landing zone of 0x200000 bytes (ENOMEM)\n"
    ended = "codeisland-init: program exited with 0\n"
    with pytest.raises(EmulationError, match="the landing library failed: no landing zone"):
        relocation("mawk")._landing(FakeVm(err, err + ended))  # type: ignore[arg-type]
