"""`codeisland loop --guest native`: the closed loop on a live native process.

The same start as `native run` (native/run.py: the program analysed, started with the agent,
its engine locked and a plan aimed at the engine's own buffers refused with nothing written),
then the closed loop of `bench` (loop/controller.py) with the chosen policy on loop/native.py's
target: windows of the agent's SIGPROF samples attributed to the program's islands, the policy's
heat, plans into the agent's arena through the planner, stage/commit/rollback through the
relocation layer (keep-or-roll-back by the controller's modeled test), until the program exits
or the window limit.  Before it, the same program on the same input without the agent: the
reference its output must equal.

Measured: the output (exit status, size, sha256), wall time and CPU time (user + system, the
kernel's rusage of the child) with the loop and without the agent, codeisland's own CPU time,
the signal rendezvous (the native SMIs) by command, bytes written, contexts translated and call
sites re-pointed as the engine answered.  Modeled and labelled so: the front-end cycles, and
with them every keep-or-roll-back decision.
"""

from __future__ import annotations

import hashlib
import os
import resource
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import numpy as np

from ..analysis import IslandMap
from ..errors import PlanError, TransportError
from ..frontend.params import FrontendParams
from ..loop.controller import ClosedLoop
from ..loop.native import NativeTarget
from ..native.process import NativeProcess, check_program
from ..native.run import NativeReport, NativeRun, window_context
from ..plan import layout as L
from ..planning.passes import Options
from ..predict.policies import make_policy
from ..predict.priority import CostModel
from ..qemu.linux.process import output_line
from ..relocation import Relocator, live_originals, plan_relocation
from . import live
from .live import LiveLoopFields, run_windows
from .runner import WorkloadResult

MODELED_NOTE = (
    "modeled: front-end cycles and the keep-or-roll-back test (cost model fed with the fetch "
    "stream the SIGPROF samples stand for); measured: output, wall and CPU time, signal "
    "rendezvous (SMIs), bytes written; handler instructions: not counted natively"
)


@dataclass
class NativeLoopReport(LiveLoopFields):
    argv: list[str] = field(default_factory=list)
    host: NativeReport = field(default_factory=NativeReport)  # the start, as `native run`'s
    islands_analysed: int = 0
    output: dict[str, Any] = field(default_factory=dict)
    reference: dict[str, Any] = field(default_factory=dict)
    output_matches: bool = False
    cpu_seconds: float = 0.0  # the program's user + system time, with the loop
    reference_seconds: float = 0.0  # wall, without the agent
    reference_cpu_seconds: float = 0.0
    host_cpu_seconds: float = 0.0  # codeisland's own (sampling reads, model, policy, planner)
    note: str = MODELED_NOTE

    @property
    def ok(self) -> bool:
        """The loop ran on the program (or the program ended before its first window, as
        `native run` allows: ended_in_request), the start's checks held, and the program
        printed what it prints without the agent."""
        ran = self.windows > 0 or self.host.ended_in_request
        return self.host.ok and ran and self.output_matches

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["host"] = dict(self.host.__dict__, ok=self.host.ok)
        d["ok"] = self.ok
        d["handler_instructions"] = "not counted natively"
        return d

    def __str__(self) -> str:
        h = self.host
        lines = [
            f"loop ({self.policy}) on {' '.join(self.argv)} natively (the agent's signals as "
            f"SMIs), exit status {h.exit_status}",
            f"arena {h.arena_base:#x} (executable at {h.load_base:#x}): {h.arena}; "
            f"{self.islands_in_loop} islands in the loop of {self.islands_analysed} analysed",
            f"{self.windows} windows, ended by {self.ended_by}; samples {self.samples}",
            *self.loop_lines(),
            "signal rendezvous (SMIs): "
            + ", ".join(f"{k} {v}" for k, v in sorted(self.smi_counts.items()))
            + "; handler instructions: not counted natively",
            f"plan aimed at the engine's buffers: {h.bad_plan_status} "
            f"(refused with nothing written: {h.bad_plan_rejected})",
            output_line(self.output, self.reference, self.output_matches, None),
            f"measured: wall {h.wall_seconds:.3f} s (without the agent {self.reference_seconds:.3f}"
            f" s), program CPU {self.cpu_seconds:.3f} s (without {self.reference_cpu_seconds:.3f}"
            f" s); codeisland's own CPU {self.host_cpu_seconds:.3f} s",
            f"note: {self.note}",
            *(f"plot: {p}" for p in self.plots),
            "OK" if self.ok else "FAILED",
        ]
        return "\n".join(lines)


def _children_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_CHILDREN)
    return u.ru_utime + u.ru_stime


def _self_cpu() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


def _digest(path: Path, status: int) -> dict[str, Any]:
    data = path.read_bytes()
    return {"status": status, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


class NativeLoop(NativeRun):
    """`native run`'s start, then the closed loop instead of its own windows."""

    def __init__(
        self,
        argv: list[str],
        *,
        policy: str = "predictive",
        windows: int = 200,
        warmup: int = 2,
        window_samples: int = 40,
        sample_hz: int = 1000,
        params: FrontendParams | None = None,
        stdout: IO[bytes] | int | None = None,
        stdin: IO[bytes] | int | None = None,
    ) -> None:
        super().__init__(argv, policy=policy, warmup=warmup, sample_hz=sample_hz,
                         stdout=stdout, stdin=stdin)  # fmt: skip
        self.max_windows, self.window_samples = windows, window_samples
        self.params = params or FrontendParams()
        self.loop_report = NativeLoopReport(policy=policy, argv=list(argv), host=self.report)
        self.heat: np.ndarray = np.zeros((0, 0))

    def _windows(self, proc: NativeProcess, rel: Relocator, t: Any, imap: IslandMap) -> None:
        r = self.loop_report
        hot = self.platform.region("hot")
        zone = (self.report.arena_base + hot.arena_offset, hot.size,
                self.report.arena_huge_kib * 1024 >= hot.size)  # fmt: skip
        holder: list[NativeTarget] = []

        def plan(names, plan_id, taken, prio, counts):  # type: ignore[no-untyped-def]
            names = as_built(imap, t.read_phys, names)
            if not names:
                raise PlanError("every island asked for holds code an earlier commit patched")
            opts = Options(
                names=tuple(names), plan_id=plan_id, callsites=True, keep_copies=True,
                keep_order=True, parked_threads=True, arena_base=self.report.arena_base,
                frozen=live_originals(holder[0].address_map()), priorities=prio,
            )  # fmt: skip
            return plan_relocation(imap, self.platform, opts, counts=counts, taken=taken,
                                   read_bytes=t.read_phys, only=("hot",))  # fmt: skip

        target = NativeTarget(
            rel, imap, zone, plan, proc.alive, read=t.read_phys, params=self.params,
            cpus=os.cpu_count() or 1, window_samples=self.window_samples,
            running=lambda: int(window_context(proc.pid)["runnable_threads"]),
        )  # fmt: skip
        holder.append(target)
        r.islands_analysed, r.islands_in_loop = len(imap.islands), len(target.islands)
        # the engine's default budget (`native run`'s): each request stops every thread
        cost = CostModel.from_params(self.params, L.STAGE_BUDGET_DEFAULT, 4)
        policy = make_policy(self.policy_name, len(target.islands))
        loop = ClosedLoop(target, policy, cost, warmup=self.warmup, params=self.params)
        try:
            r.ended_by = run_windows(loop, self.max_windows, "native loop")
        except TransportError:
            if not proc.exited.wait(2.0):
                raise
            r.ended_by = "program exit (during a request)"  # what was committed stays
        self.heat = r.record(loop, target)
        r.smi_counts = dict(Counter(s.command for s in rel.smis))
        h = self.report  # what `native run` reports of its commits, for its checks
        h.commits = target.copies_checked
        h.relocations = sum(len(c["islands"]) for c in target.commits)  # type: ignore[misc,arg-type]
        h.dest_bytes_match = target.copies_ok  # of those read back before the exit


def as_built(imap: IslandMap, read: Callable[[int, int], bytes], names: list[str]) -> list[str]:
    """The islands of `names` whose bytes in the process are still the executable's.  One
    that holds a call site an active generation re-pointed reads differently, and the planner,
    which plans from live bytes, refuses it (its fix-up check finds the call resolving into a
    copy): the whole plan would fail with it, window after window."""
    return [
        n
        for n in names
        if read(imap[n].start, imap[n].size) == imap.read(imap[n].start, imap[n].size)
    ]


def run_loop(
    argv: list[str], out: Path, stdin: Path | None = None, **kw: Any
) -> tuple[NativeLoopReport, np.ndarray]:
    """The reference run without the agent, then the loop; the program's stdout goes to `out`
    (the loop's run's), stdin from `stdin` (default /dev/null) in both."""
    program = check_program(argv[0])  # one line before anything runs
    ref_out = out.with_name(out.name + ".unrelocated")
    with ExitStack() as stack:
        src = stack.enter_context(stdin.open("rb")) if stdin else subprocess.DEVNULL
        sink = stack.enter_context(ref_out.open("wb"))
        cpu0, t0 = _children_cpu(), time.monotonic()
        code = subprocess.run([str(program), *argv[1:]], stdin=src, stdout=sink,
                              stderr=subprocess.DEVNULL).returncode  # fmt: skip
        ref_seconds, ref_cpu = time.monotonic() - t0, _children_cpu() - cpu0
    reference = _digest(ref_out, code)
    ref_out.unlink()
    with ExitStack() as stack:
        src = stack.enter_context(stdin.open("rb")) if stdin else subprocess.DEVNULL
        sink = stack.enter_context(out.open("wb"))
        cpu0, host0 = _children_cpu(), _self_cpu()
        driver = NativeLoop(argv, stdout=sink, stdin=src, **kw)
        driver.run()
        cpu, host_cpu = _children_cpu() - cpu0, _self_cpu() - host0
    r = driver.loop_report
    if not r.ended_by:  # the program ended while the host was still starting the loop
        r.ended_by = "program exit before the loop's first window"
    r.reference, r.reference_seconds, r.reference_cpu_seconds = reference, ref_seconds, ref_cpu
    r.cpu_seconds, r.host_cpu_seconds = cpu, host_cpu
    r.output = _digest(out, -1 if r.host.exit_status is None else r.host.exit_status)
    r.output_matches = r.output == reference and code == 0
    return r, driver.heat


def as_bench_result(report: NativeLoopReport, heat: np.ndarray) -> WorkloadResult:
    """This run as one bench workload (for bench/plots.heat_plot)."""
    return live.as_bench_result(
        report, heat, Path(report.argv[0]).name,
        f"{' '.join(report.argv)} natively, {report.policy} policy, signals as SMIs",
    )  # fmt: skip
