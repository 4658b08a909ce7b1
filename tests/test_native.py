"""The native host: the engine inside a live process (smm/native agent, codeisland.native).

A test program built with Debian's flags (PIE, endbr64, a jump table, a libc callback, threads)
runs with the agent; every relocated run must print exactly what the unrelocated run prints.
Commits land while threads run (the relocation layer's retry policy commits again until one
found a thread inside a moved island), threads blocked in read(2) take SMIs, threads appear and
exit during rendezvous, a fork's child and an exec'd program start clean, bad input is one line.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
from cli_entry import invoke

from codeisland.analysis import analyze
from codeisland.errors import TransportError
from codeisland.native import debian_flags, programs
from codeisland.native.process import NativeProcess
from codeisland.native.run import NativeRun
from codeisland.paths import repo_root
from codeisland.plan.apply import copies_as_planned
from codeisland.planning.build import build_plan
from codeisland.planning.passes import Options
from codeisland.planning.platform import load_platform
from codeisland.planning.redirect import outside_callsites
from codeisland.relocation import Relocator, RetryPolicy, occupied, plan_relocation
from codeisland.transport.mailbox import MailboxClient

SOURCE = Path(__file__).parent / "native" / "islands.c"


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    r = subprocess.run(["make", "-s", "-C", str(repo_root() / "smm"), "agent"], capture_output=True)
    assert r.returncode == 0, r.stderr.decode()
    out = tmp_path_factory.mktemp("native") / "islands"
    cmd = ["gcc", *debian_flags.cflags(), str(SOURCE), "-o", str(out), *debian_flags.ldflags()]
    subprocess.run([*cmd, "-lpthread"], check=True)
    return out


def _baseline(argv: list[str], stdin: bytes | None = None) -> bytes:
    return subprocess.run(argv, input=stdin, capture_output=True, check=True).stdout


def _output(p: NativeProcess) -> bytes:
    """The rest of what the program printed, once it exited 0."""
    assert p.popen.stdout is not None
    got = p.popen.stdout.read()
    assert p.wait() == 0
    return got


def test_built_as_debian_builds(program: Path) -> None:
    imap = analyze(program)
    assert imap.image.format.startswith("elf")
    assert any(i.endbr for i in imap), "no endbr64 island: -fcf-protection missing"
    dis = subprocess.run(["objdump", "-d", str(program)], capture_output=True, text=True).stdout
    assert "notrack jmp" in dis  # the switch became a jump table (an indirect jump)


def test_native_run_relocates_and_output_is_unchanged(program: Path, tmp_path: Path) -> None:
    # seconds of work on an idle core (600 rounds ended before the copies ran on a quiet one)
    argv = [str(program), "2", "5000"]
    want = _baseline(argv)
    out = tmp_path / "out"
    with out.open("wb") as f:
        report = NativeRun(argv, policy="reactive", window_s=0.1, warmup=2, stdout=f).run()
    assert out.read_bytes() == want
    assert report.exit_status == 0
    assert report.booted and report.bad_plan_rejected, report.bad_plan_status
    assert report.bad_plan_status == "TOUCHES_SMRAM"
    assert report.relocations > 0 and report.dest_bytes_match
    assert report.samples_total > 0 and report.samples_attributed > 0
    assert report.samples_in_copies > 0  # the copies ran
    assert "2 MiB pages" in report.arena or "4 KiB pages" in report.arena
    assert report.ok, str(report)


def test_commit_translates_threads_inside_the_island(program: Path) -> None:
    """Threads run in `fold` (the hottest function); the layer's retry commits again (after a
    rollback, copies kept) until a COMMIT found a thread's RIP inside it."""
    argv = [str(program), "4", "100000"]
    want = _baseline([str(program), "4", "1"])  # the program is deterministic per round count
    assert want
    p = NativeProcess(argv, sample_hz=0, stdout=subprocess.DEVNULL)
    try:
        t = p.wait_ready()
        imap = analyze(p.program).rebased(p.load_base())
        rel = Relocator(MailboxClient(t))
        arena = int(rel.client.header.arena_base)
        attempts = 0
        result = None
        for attempt in range(40):
            opts = Options(names=("fold",), plan_id=attempt + 1, arena_base=arena)
            plan = plan_relocation(
                imap, load_platform("native"), opts, read_bytes=t.read_phys,
                taken=occupied(rel.address_map()), all_or_nothing=True, only=("hot",),
            )  # fmt: skip
            out = rel.apply(plan.to_bytes(), RetryPolicy(attempts=1))
            attempts += 1
            assert copies_as_planned(plan.plan, imap.read, t.read_phys)
            result = out.result
            if result.contexts_translated > 0:
                break
            rel.rollback(0)
            time.sleep(0.01)
        assert result is not None and result.contexts_translated > 0, f"{attempts} commits"
        assert result.cpus == 5  # main thread + 4 workers stopped
        time.sleep(0.2)  # the translated threads run on in the copy
        assert p.alive()
    finally:
        p.kill()


def test_threads_blocked_in_read_take_smis(program: Path) -> None:
    argv = [str(program), "3", "50", "read"]
    want = _baseline(argv, b"xyz")
    p = NativeProcess(argv, sample_hz=200, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        rel = Relocator(MailboxClient(p.wait_ready()))
        time.sleep(0.2)  # the workers are in read(2) now
        for _ in range(20):
            reply = rel.query()
            assert reply.ok and reply.result.cpus == 4
        assert p.popen.stdin is not None and p.popen.stdout is not None
        p.popen.stdin.write(b"xyz")  # each worker's read() returns its byte (SA_RESTART)
        p.popen.stdin.close()
        got = p.popen.stdout.read()
        assert p.wait() == 0
    finally:
        p.kill()
    assert got == want


def test_waits_that_never_restart_are_not_cut_short(tmp_path: Path) -> None:
    """nanosleep, poll, select, epoll_wait, sigtimedwait... return EINTR after any handler,
    SA_RESTART or not: under a stream of SMIs and samples each must still wait its full time
    and return what it returns without the agent, and the program's own signal must still
    interrupt its select (tests/native/waits.c)."""
    out = tmp_path / "waits"
    cmd = ["gcc", *debian_flags.cflags(), str(SOURCE.parent / "waits.c"), "-o", str(out)]
    subprocess.run([*cmd, *debian_flags.ldflags(), "-lpthread"], check=True)
    argv = [str(out), "600"]
    want = _baseline(argv)
    assert want.count(b"waited its time") == 8 and b"Interrupted system call" in want
    p = NativeProcess(argv, sample_hz=1000, stdout=subprocess.PIPE)
    try:
        rel = Relocator(MailboxClient(p.wait_ready()))
        answered = 0
        while p.alive():
            try:
                assert rel.query().ok
                answered += 1
            except TransportError:  # it exited while the host was asking
                if not p.exited.wait(2.0):
                    raise
                break
        got = _output(p)
    finally:
        p.kill()
    assert got == want, got.decode()
    # SMIs arrived during the run.  A rendezvous completes only when the waiting thread leaves
    # its wait (the agent's signals are blocked in there), so about one QUERY per wait is
    # answered: 8 on a quiet machine, 4 in a loaded CI run
    assert answered >= 2


def test_threads_created_and_exiting_during_rendezvous(program: Path) -> None:
    argv = [str(program), "2", "40", "churn"]
    want = _baseline(argv)
    p = NativeProcess(argv, sample_hz=500, stdout=subprocess.PIPE)
    try:
        rel = Relocator(MailboxClient(p.wait_ready()))
        answered = 0
        seen = set()
        while p.alive() and answered < 200:
            try:
                reply = rel.query()
            except TransportError:
                if not p.alive():
                    break
                raise
            answered += 1
            seen.add(int(reply.result.cpus))
        got = _output(p)
    finally:
        p.kill()
    assert got == want
    assert answered >= 20 and len(seen) > 1  # thread counts changed between SMIs


@pytest.mark.parametrize("mode", ["fork", "exec"])
def test_fork_and_exec_children_start_clean(program: Path, tmp_path: Path, mode: str) -> None:
    argv = [str(program), "2", "300", mode]
    want = _baseline(argv)
    out = tmp_path / "out"
    with out.open("wb") as f:
        report = NativeRun(argv, policy="reactive", window_s=0.1, warmup=1, stdout=f).run()
    assert report.exit_status == 0
    assert out.read_bytes() == want
    if mode == "exec":
        assert b"child LD_PRELOAD=[]" in want


def test_cli_reports(program: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = ["--policy", "none", "--window-ms", "50", "--program-output", str(out), "--json"]
    r = invoke(["native", "run", *args, "--", str(program), "1", "100"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["ok"] and data["relocations"] == 0 and data["exit_status"] == 0
    assert out.read_bytes() == _baseline([str(program), "1", "100"])


def _one_line_error(args: list[str], code: int, text: str) -> None:
    r = invoke(["native", "run", "--", *args])
    assert r.exit_code == code, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and text in lines[0], r.stderr
    assert "Traceback" not in r.output


def test_bad_input_missing_program(tmp_path: Path) -> None:
    _one_line_error([str(tmp_path / "nothing-here")], 2, "no such program")


def test_bad_input_not_an_elf(tmp_path: Path) -> None:
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    _one_line_error([str(script)], 2, "not an x86-64 ELF program")


def test_bad_input_static_binary(tmp_path: Path) -> None:
    exe = tmp_path / "static"
    src = tmp_path / "s.c"
    src.write_text("int main(void){return 0;}\n")
    subprocess.run(["gcc", "-static", str(src), "-o", str(exe)], check=True)
    _one_line_error([str(exe)], 2, "statically linked")


def test_agent_inactive_without_the_host(program: Path) -> None:
    """Preloaded without CODEISLAND_NATIVE=1 the agent does nothing (no mailbox)."""
    agent = repo_root() / "smm/build/native/libcodeisland-agent.so"
    env = dict(os.environ, LD_PRELOAD=str(agent))
    # "read": the worker waits on stdin, so the process is alive, agent loaded, however fast
    # the machine (a timed sleep read the maps of a process that had already ended)
    p = subprocess.Popen(
        [str(program), "1", "1", "read"], env=env, stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    maps = ""
    deadline = time.monotonic() + 30
    while agent.name not in maps and time.monotonic() < deadline and p.poll() is None:
        time.sleep(0.05)
        maps = Path(f"/proc/{p.pid}/maps").read_text()
    assert p.stdin is not None
    p.stdin.write(b"\n")
    p.stdin.close()
    assert p.wait(timeout=60) == 0
    assert agent.name in maps and "codeisland-mailbox" not in maps


def test_jump_table_function_moves_and_escapes_to_its_original(program: Path) -> None:
    """`mix` switches through a jump table: the analysis refuses it for hosts that may reclaim
    originals, the native host allows it (IslandMap.allowing_indirect_jumps).  Its copy runs
    up to the table's indirect jump, which lands in the original (intact): the samples show
    both, and the output does not change."""
    argv = [str(program), "2", "6000"]
    want = _baseline(argv)
    assert analyze(program)["mix"].reason == "indirect jump (jump table or computed goto)"
    p = NativeProcess(argv, sample_hz=1000, stdout=subprocess.PIPE)
    try:
        t = p.wait_ready()
        imap = analyze(p.program).allowing_indirect_jumps().rebased(p.load_base())
        mix = imap["mix"]
        assert mix.relocatable and mix.indirect_jumps > 0
        rel = Relocator(MailboxClient(t))
        arena = int(rel.client.header.arena_base)
        opts = Options(names=("mix",), plan_id=1, callsites=True, keep_copies=True,
                       parked_threads=True, arena_base=arena)  # fmt: skip
        plan = plan_relocation(
            imap, load_platform("native"), opts, read_bytes=t.read_phys, all_or_nothing=True,
            only=("hot",),
        )  # fmt: skip
        assert len(plan.plan.callsites) > 0  # fold's and fill's calls re-pointed
        rel.apply(plan.to_bytes())
        head = rel.client.sample_head()  # samples from here on: every call of mix is re-pointed
        dst = int(plan.plan.islands[0].dst)
        in_copy = in_original = 0
        while p.alive() and (in_copy == 0 or in_original == 0):
            time.sleep(0.2)
            try:
                samples, head = rel.client.samples_since(head)
            except TransportError:
                break
            rips = [int(x.rip) for x in samples]
            in_copy += sum(dst <= r < dst + mix.size for r in rips)
            in_original += sum(mix.start <= r < mix.end for r in rips)
        got = _output(p)
    finally:
        p.kill()
    assert got == want
    assert in_copy > 0 and in_original > 0, (in_copy, in_original)


def test_no_call_site_re_pointed_inside_a_live_original(program: Path) -> None:
    """A later generation's plan leaves call sites in islands an earlier one moved alone (the
    engine refuses them, CALLSITE_IN_ISLAND): Options.frozen from the live map's originals."""
    imap = analyze(program)
    fold = imap["fold"]
    callers = {isl.name for a, _ in outside_callsites(imap, fold) if (isl := imap.island_at(a))}
    assert callers
    dst = 0x10000000
    free = build_plan(imap, [(fold, dst)], callsites=True)
    frozen = [(imap[n].start, imap[n].end) for n in callers]
    held = build_plan(imap, [(fold, dst)], callsites=True, frozen=frozen)
    assert len(free.callsites) > 0 and len(held.callsites) == 0


def test_a_real_program_relocated_prints_the_same_bytes(tmp_path: Path) -> None:
    """zlib's minigzip (Debian's zlib source, Debian's flags) compressing 12 MiB under the
    native host: the compressed bytes equal the unrelocated run's, byte for byte.  (The 2 MiB
    quick input ran about 0.1 s, one window: in a loaded CI run it ended before the host's
    first window, and no sample was read.)"""
    prog = programs.build("minigzip")
    want = _baseline(prog.argv())
    out = tmp_path / "out.gz"
    with out.open("wb") as f:
        report = NativeRun(prog.argv(), policy="reactive", window_s=0.05, warmup=1, stdout=f).run()
    assert report.ok, str(report)
    assert report.samples_attributed > 0
    assert out.read_bytes() == want and len(want) > 100_000
