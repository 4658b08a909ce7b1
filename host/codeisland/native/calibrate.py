"""The front-end model's prediction for the runs the native benchmark measured.

The model (frontend/, emulation/native/fetchmodel.c) is an L1i + iTLB cost model fed with a fetch
stream.  A native process gives no fetch stream, so the same binary runs again on the same input
under QEMU's user-mode emulator with a plugin (emulation/native/qtrace.c) that feeds the model
with every translation block the program executes -- once per layout, in one run:

    layout 0                 the binary as built (the reference)
    one layout per native run  its copies, each generation from the point of the run at which it
                             was committed (the share of the run's SIGPROF samples taken before
                             the commit, applied to the executed-block count), its copies at
                             their arena offsets (2 MiB pages when the run's arena had them), and
                             exactly its re-pointed call sites / entry jumps deciding which
                             executions reach a copy (qtrace.c says how)
    BOLT's binaries          each traced on its own, layout 0 only

Predicted saving = (modeled cycles of the reference - of the layout) / the host's clock, beside
the measured CPU-time difference.  The model's parameters are the platform profile's [frontend]
as every other host uses them: nothing here is fitted to a program.  What the model cannot see:
the agent's own handlers (SIGPROF samples, SMIs), the data side, branch prediction, and anything
that differs between QEMU's run and the native one (lua's string hash seed moves a few blocks).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import BuildMissing, CheckFailed, ToolMissing
from ..frontend import FrontendParams, load_frontend_params
from ..paths import emulation_build_dir

QEMU = "qemu-x86_64"
PARAM_ORDER = (
    "l1i_size", "l1i_ways", "l1i_line", "itlb4k_entries", "itlb4k_ways", "itlb2m_entries",
    "itlb2m_ways", "fetch_cycles", "l1i_miss_cycles", "itlb4k_miss_cycles", "itlb2m_miss_cycles",
)  # fmt: skip
TOTALS = ("counted", "blocks", "bytes", "lines", "l1i_misses", "itlb4k_misses", "itlb2m_misses",
          "cycles", "in_copies")  # fmt: skip
ARENA_BYTES = 8 << 20


def plugin_path() -> Path:
    env = os.environ.get("CODEISLAND_QTRACE")
    return Path(env) if env else emulation_build_dir() / "native" / "libciqtrace.so"


@dataclass
class Modeled:
    """One layout's modeled totals, scaled from the sampled windows to the whole run."""

    blocks_total: int
    totals: dict[str, int]

    @property
    def scale(self) -> float:
        counted = self.totals.get("counted", 0)
        return self.blocks_total / counted if counted else 0.0

    @property
    def cycles(self) -> float:
        return self.totals["cycles"] * self.scale

    def miss_cycles(self, p: FrontendParams) -> float:
        t = self.totals
        raw = (t["l1i_misses"] * p.l1i_miss_cycles + t["itlb4k_misses"] * p.itlb4k_miss_cycles
               + t["itlb2m_misses"] * p.itlb2m_miss_cycles)  # fmt: skip
        return raw * self.scale

    def to_dict(self) -> dict[str, Any]:
        return {"blocks_total": self.blocks_total, "scale": self.scale, **self.totals}


@dataclass
class NativeLayout:
    """What one native run committed, as offsets from its load base and arena."""

    huge: bool
    at: list[float] = field(default_factory=list)  # each generation: share of the run before it
    islands: list[list[list[int]]] = field(default_factory=list)  # [src_off, size, dst_off, entry]
    calls: list[list[list[int]]] = field(default_factory=list)  # [island src_off, insn end_off]

    @classmethod
    def of_report(cls, report: Any) -> NativeLayout:
        base, arena = report.load_base, report.arena_base
        total = max(report.samples_total, 1)
        out = cls(huge=report.arena_huge_kib * 1024 >= ARENA_BYTES)
        for g in report.generations:
            out.at.append(min(g["samples_before"] / total, 1.0))
            out.islands.append([[s - base, n, d - arena, e] for s, n, d, e in g["islands"]])
            out.calls.append([[s - base, end - base] for s, end in g["calls"]])
        return out


def spec(exe: Path, layouts: list[NativeLayout], blocks: int, p: FrontendParams) -> str:
    lines = [f"exe {exe}", f"layouts {1 + len(layouts)}",
             "params " + " ".join(str(getattr(p, k)) for k in PARAM_ORDER)]  # fmt: skip
    for k, lay in enumerate(layouts, start=1):
        if lay.huge:
            lines.append(f"huge {k} 0 {ARENA_BYTES}")
        for at, isl, calls in zip(lay.at, lay.islands, lay.calls, strict=True):
            lines.append(f"gen {k} {int(at * blocks)}")
            lines += [f"island {s} {n} {d} {int(e != 0)}" for s, n, d, e in isl]
            lines += [f"call {s} {end}" for s, end in calls]
    return "\n".join(lines) + "\n"


def _qemu(
    argv: list[str], spec_text: str, sample: int, work: Path, ranges: list[dict] | None = None
) -> tuple[int, list[dict]]:
    if shutil.which(QEMU) is None:
        raise ToolMissing(f"{QEMU} is not installed (Debian package qemu-user)")
    if not plugin_path().is_file():
        raise BuildMissing(f"the QEMU plugin {plugin_path()}")
    fd, name = tempfile.mkstemp(dir=work, suffix=".spec")
    os.write(fd, spec_text.encode())
    os.close(fd)
    out = Path(name).with_suffix(".out")
    plugin = f"{plugin_path()},spec={name},out={out},sample={sample}"
    r = subprocess.run([QEMU, "-plugin", plugin, *argv], stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, text=True)  # fmt: skip
    if r.returncode != 0 or not out.is_file():
        tail = r.stderr.strip().splitlines()[-1:] or [f"exit {r.returncode}"]
        raise CheckFailed(f"{QEMU} with the model plugin on {argv[0]} failed: {tail[0]}")
    blocks, layouts = 0, []
    for line in out.read_text().splitlines():
        words = line.split()
        if words[0] == "blocks":
            blocks = int(words[1])
        elif words[0] == "range" and ranges is not None:
            off, blocks, l1i, itlb, cycles = map(int, words[1:6])
            ranges.append({"offset": off, "blocks": blocks, "l1i_misses": l1i,
                           "itlb_misses": itlb, "cycles": cycles})  # fmt: skip
        elif words[0] == "layout":
            if len(words) != 2 + len(TOTALS):
                raise BuildMissing(f"{plugin_path()} is older than this host (rebuild it)")
            layouts.append(dict(zip(TOTALS, map(int, words[2:]), strict=True)))
    return blocks, layouts


def model_binary(
    argv: list[str], layouts: list[NativeLayout], work: Path, sample: int,
    params: FrontendParams | None = None,
) -> list[Modeled]:  # fmt: skip
    """Layout 0 (the binary as built), then one per native layout, modeled on `argv`'s run.
    With native layouts a first run counts the blocks their commit points are shares of."""
    p = params or load_frontend_params()
    exe = Path(argv[0]).resolve()
    blocks, first = _qemu(argv, spec(exe, [], 0, p), sample, work)
    if not layouts:
        return [Modeled(blocks, first[0])]
    blocks2, rest = _qemu(argv, spec(exe, layouts, blocks, p), sample, work)
    return [Modeled(blocks2, t) for t in rest]


def miss_ranking(
    argv: list[str], islands: list[tuple[int, int]], work: Path, sample: int,
    params: FrontendParams | None = None,
) -> list[dict[str, int]]:  # fmt: skip
    """Where the binary as built misses: per island [offset, size) from its load base, the
    modeled blocks, L1i and iTLB misses and cycles over the modeled windows (warm-up
    included), islands that ran only, most miss cycles first."""
    p = params or load_frontend_params()
    text = spec(Path(argv[0]).resolve(), [], 0, p) + "".join(f"range {o} {n}\n" for o, n in islands)
    got: list[dict[str, int]] = []
    _qemu(argv, text, sample, work, got)
    cost = {"l1i_misses": p.l1i_miss_cycles, "itlb_misses": p.itlb4k_miss_cycles}
    return sorted(got, key=lambda r: -sum(r[k] * c for k, c in cost.items()))


def clock_hz() -> float:
    """The host CPU's clock as the kernel reports it (cpu MHz of the first CPU)."""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1]) * 1e6
    raise ToolMissing("/proc/cpuinfo gives no cpu MHz")
