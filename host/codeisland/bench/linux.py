"""`codeisland loop --guest linux`: the closed loop on an unmodified program in a Linux guest.

The same start as `qemu process` (process.py: the program under our landing library, its CR3
found by SAMPLE, the host's ELF analysed at its load base and checked against memory; jump-table
functions included, IslandMap.allowing_indirect_jumps), then the closed loop of `bench`
(loop/controller.py) with the chosen policy, on loop/linux.py's target: windows of SAMPLE SMIs
attributed to the process's islands, the policy's heat, plans into the landing zone through the
planner, stage/commit/rollback through the relocation layer, until the program exits (what is
committed then stays: the engine refuses to write into an exited process's pages) or the
window limit.  Then the program's output against the same pipeline on the host, unrelocated.

Measured: the output (byte for byte, by size + sha256), the program's run time in the guest
(TCG: not a front-end figure), the SMIs by command, bytes written, contexts translated and
call sites re-pointed as the driver answered.  Modeled and labelled so: the front-end cycles.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DriverRejected
from ..frontend.params import FrontendParams
from ..hw.vaspace import VirtualSpace
from ..loop.controller import ClosedLoop
from ..loop.linux import LinuxTarget
from ..plan import layout as L
from ..predict.policies import make_policy
from ..predict.priority import CostModel
from ..qemu import session
from ..qemu.linux import program
from ..qemu.linux.process import (
    STAGE_BUDGET,
    Firmware,
    ProcessRelocation,
    ProcessReport,
    attached_line,
    output_line,
    plan_in_zone,
)
from ..qemu.machine import QemuVm
from ..relocation import Relocator
from ..transport.mailbox import MailboxClient, Reply
from . import live
from .live import LiveLoopFields, run_windows
from .runner import WorkloadResult

MODELED_NOTE = (
    "modeled: front-end cycles (cost model fed with the fetch stream the SAMPLEs stand for); "
    "measured: output, run time (TCG), SMIs, bytes written; handler instructions: not measured"
)


@dataclass
class LoopReport(LiveLoopFields, ProcessReport):
    smi_round_trip_ms: dict[str, float] = field(default_factory=dict)  # longest, per command
    note: str = MODELED_NOTE

    @property
    def ok(self) -> bool:
        """The loop ran on the program and it finished with its unrelocated output; on
        restricted firmware: the first plan refused with nothing written."""
        if self.refused:
            return self.refused_untouched and self.output_matches
        return self.windows > 0 and self.output_matches

    def to_dict(self) -> dict[str, Any]:
        d = dict(self.__dict__)
        d["ok"] = self.ok
        d["handler_instructions"] = "not measurable under QEMU"
        return d

    def __str__(self) -> str:
        z = self.landing
        lines = [
            f"loop ({self.policy}) on {self.program} {' '.join(self.args)} in a Linux guest "
            f"({self.firmware})",
            f"pid {z.get('pid')} cr3 {self.cr3:#x}; landing zone {z.get('zone', 0):#x} "
            f"({z.get('size', 0) >> 10} KiB, {'2 MiB pages' if z.get('huge') else '4 KiB pages'})"
            f"; {self.islands_in_loop} islands in the loop of {self.islands_analysed} analysed",
        ]
        if self.attached:
            lines.append(attached_line(self.attached, z))
        lines.append(f"{self.windows} windows, ended by {self.ended_by}; samples {self.samples}")
        lines += [f"  warning: {w}" for w in self.landing_warnings]
        if self.refused:
            lines.append(f"plan refused: {self.refused}; nothing written: {self.refused_untouched}")
        lines += self.loop_lines()
        lines.append(
            "SMIs: " + ", ".join(f"{k} {v}" for k, v in sorted(self.smi_counts.items()))
            + "; handler instructions: not measurable under QEMU"
        )  # fmt: skip
        if self.smi_round_trip_ms:
            lines.append(
                "longest SMI round trip (host wall time under TCG): "
                + ", ".join(f"{k} {v:.1f} ms" for k, v in sorted(self.smi_round_trip_ms.items()))
            )
        lines.append(output_line(
            self.output, self.reference, self.output_matches, self.program_seconds, " (TCG)"
        ))  # fmt: skip
        lines.append(f"note: {self.note}")
        lines += [f"plot: {p}" for p in self.plots]
        lines.append("OK" if self.ok else "FAILED")
        return "\n".join(lines)


@dataclass
class TimedRelocator(Relocator):
    """The layer's Relocator, each request's round trip timed on the host (raise the SMI ->
    the driver's answer read back): under TCG the nearest measurable thing to "the longest
    handler run", which QEMU cannot count in instructions."""

    round_trips: list[tuple[str, float]] = field(default_factory=list)

    def _request(self, name: str, send: Callable[[], Reply]) -> Reply:
        start = time.perf_counter()
        try:
            return super()._request(name, send)
        finally:
            self.round_trips.append((name, time.perf_counter() - start))

    def longest_ms(self) -> dict[str, float]:
        """The longest round trip per command, in ms."""
        out: dict[str, float] = {}
        for name, seconds in self.round_trips:
            out[name] = max(out.get(name, 0.0), round(seconds * 1000, 1))
        return out


class LinuxLoop(ProcessRelocation):
    def __init__(
        self,
        run: program.ProgramRun,
        workdir: Path,
        firmware: Firmware,
        *,
        cpus: int = 1,
        policy: str = "predictive",
        windows: int = 200,
        warmup: int = 2,
        window_samples: int = 40,
        params: FrontendParams | None = None,
    ) -> None:
        super().__init__(run, workdir, firmware, cpus)
        self.report = LoopReport(
            str(run.exe), list(run.args), attached=run.attach or "", policy=policy
        )
        self.policy, self.max_windows, self.warmup = policy, windows, warmup
        self.window_samples = window_samples
        self.params = params or FrontendParams()
        self.heat: np.ndarray = np.zeros((0, 0))

    def _drive(self, m: QemuVm, ref: program.Output) -> None:
        r = self.report
        assert isinstance(r, LoopReport)
        z = self._landing(m)
        with session.transport_for(m) as t:
            t.discover()
            rel = TimedRelocator(MailboxClient(t, timeout_s=20), stage_budget=STAGE_BUDGET)
            r.cr3 = self._address_space(rel, z)
            space = VirtualSpace(t.read_phys, r.cr3)
            imap = self._analysis(space, z)
            self._mark("analysis")
            size = z.size if z.huge else 4096

            def plan(names, plan_id, taken, prio, counts):  # type: ignore[no-untyped-def]
                p = plan_in_zone(imap, space, z, names, plan_id, taken, prio, counts)
                p.plan.place_in_address_space(L.SPACE_USER, r.cr3)
                return p

            target = LinuxTarget(
                rel, imap, r.cr3, (z.zone, size, z.huge), plan,
                alive=lambda: not program.exited(m.serial(), z.pid),
                contiguous=space.contiguous, read=space.read, params=self.params, cpus=self.cpus,
                window_samples=self.window_samples,
            )  # fmt: skip
            r.islands_in_loop = len(target.islands)
            self._loop(target)
            out = self._output(m)
            r.smis = rel.report()
            r.smi_round_trip_ms = rel.longest_ms()
        m.wait_exit(60)
        r.output, r.program_seconds = out.__dict__, out.seconds
        r.output_matches = out.status == ref.status == 0 and (out.size, out.sha256) == (
            ref.size,
            ref.sha256,
        )
        r.smi_counts = dict(Counter(s["command"] for s in r.smis))

    def _loop(self, target: LinuxTarget) -> None:
        r = self.report
        assert isinstance(r, LoopReport)
        cost = CostModel.from_params(self.params, STAGE_BUDGET, 4)
        policy = make_policy(self.policy, len(target.islands))
        loop = ClosedLoop(target, policy, cost, warmup=self.warmup, params=self.params)
        try:
            r.ended_by = run_windows(loop, self.max_windows, "linux loop")
        except DriverRejected as exc:
            if target.first_refusal is not exc:
                raise
            if not target.alive():  # refused because the process is gone, not the firmware
                r.ended_by = f"program exit (its first plan refused: {L.Status(exc.status).name})"
            else:
                r.refused = L.Status(exc.status).name
                r.refused_untouched = target.first_refusal_untouched
                r.ended_by = "refused plan"
        self._mark("loop")
        self.heat = r.record(loop, target)


def run_loop(
    run: program.ProgramRun, workdir: Path, firmware: Firmware, **kw: Any
) -> tuple[LoopReport, np.ndarray]:
    driver = LinuxLoop(run, workdir, firmware, **kw)
    report = driver.execute()
    assert isinstance(report, LoopReport)
    return report, driver.heat


def as_bench_result(report: LoopReport, heat: np.ndarray) -> WorkloadResult:
    """This run as one bench workload (for bench/plots.heat_plot)."""
    return live.as_bench_result(
        report, heat, Path(report.program).name,
        f"{report.program} in a Linux guest, {report.policy} policy, real SMIs",
    )  # fmt: skip
