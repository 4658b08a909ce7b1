"""The benchmark's recorded workloads (loop/recorded.py): stored emulator profiles of third-party
programs (zlib, bzip2 from Debian's source packages) replayed through the model machine."""

from __future__ import annotations

import gzip
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

from codeisland.bench.runner import BenchConfig, run_workload
from codeisland.errors import InputError
from codeisland.frontend.fetchtrace import library_path
from codeisland.frontend.params import FrontendParams
from codeisland.loop.recorded import PROGRAMS, RECORDED, load_recorded, profile_path
from codeisland.loop.workloads import BLOCK_BYTES, TEXT_BASE, TEXT_SIZE
from codeisland.profile.format import Profile


@pytest.mark.parametrize("program", sorted(PROGRAMS))
def test_stored_profiles_say_what_was_recorded(program: str) -> None:
    p = Profile.load(profile_path(program))
    assert p.source["kind"] == "smmemu" and p.source["workload"] == f"{program}_jobs"
    assert p.source["package"].startswith(f"{program}_")  # Debian source package and version
    assert len(p.windows) >= BenchConfig().windows  # a week of one-hour windows
    assert all(w.exact is not None for w in p.windows)
    assert all(i.fixups is not None and i.movable is not None for i in p.islands)
    assert profile_path(program).stat().st_size < 64 * 1024  # small enough for the repository


@pytest.mark.parametrize("name", RECORDED)
def test_recorded_workload_replays_the_profile(name: str) -> None:
    w = load_recorded(name)
    p = Profile.load(profile_path(name.rpartition("-")[0]))
    kept = [i for i in p.islands if i.movable]
    assert [i.name for i in w.islands] == [i.name for i in kept]
    assert list(w.fixups) == [i.fixups for i in kept]
    spans = sorted((i.start, i.start + i.size) for i in w.islands)
    assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
    if name.endswith("-scattered"):
        pages = [i.start // 4096 for i in w.islands]
        assert len(set(pages)) == len(pages)  # each on its own page
        assert all(s >= TEXT_BASE and e <= TEXT_BASE + TEXT_SIZE for s, e in spans)
        assert all(i.start % 64 == 0 for i in w.islands)
    else:
        assert [i.start for i in w.islands] == [i.start for i in kept]
    t = 5
    assert w.activity(t).window_fields() == p.windows[t].window_fields()
    recorded = np.array([p.windows[t].exact[k] for k, i in enumerate(p.islands) if i.movable])
    nblocks = np.maximum(1, np.array([i.size for i in w.islands]) // BLOCK_BYTES)
    replayed = np.mean([load_recorded(name, seed).executions(t) for seed in range(40)], axis=0)
    busy = recorded > 100 * nblocks
    assert np.allclose(replayed[busy] * nblocks[busy], recorded[busy], rtol=0.02)
    with pytest.raises(InputError, match="windows"):
        w.executions(len(p.windows))


@pytest.mark.skipif(not library_path().is_file(), reason="native library not built")
def test_the_oracle_decides_after_the_last_recorded_window() -> None:
    # the full bench runs every recorded window; the loop decides after the last one too, and
    # the next-window oracle then sees an empty window (it asked for one past the end: the
    # whole `codeisland bench` failed on the recorded workloads)
    from codeisland.frontend.params import FrontendParams
    from codeisland.loop.model_target import ModelTarget, StreamSource

    w = load_recorded("bzip2-linked", 1)
    m = ModelTarget(StreamSource(w), FrontendParams(), 32 * 1024)
    m.t = len(w.windows) - 1
    assert m.peek_next().sum() > 0  # the last window is there
    m.run_window()
    assert not m.peek_next().any()


def test_profile_without_fixups_is_refused(tmp_path: Path) -> None:
    doc = json.loads(gzip.decompress(profile_path("zlib").read_bytes()))
    for island in doc["islands"]:
        island.pop("fixups")
    path = tmp_path / "old.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InputError, match="record it again"):
        load_recorded("zlib-linked", path=path)


@pytest.mark.skipif(not library_path().is_file(), reason="native library not built")
def test_recorded_bench_stays_under_its_bound() -> None:
    """A move changes misses only (the copy keeps its line offset), so the trace's bound holds
    on a compact image too (before, aligned copies straddled fewer lines and beat it 6x)."""
    cfg = BenchConfig(workloads=("zlib-linked",), windows=36, warmup=24)
    r = run_workload("zlib-linked", cfg, FrontendParams())
    assert r.bound is not None and r.bound.gain > 0
    for p, c in r.cells.items():
        assert c.gain <= r.bound.gain * (1 + 1e-9), p
    assert r.cells["static"].gain > 0  # it moved (in warm-up) and its moves pay


@pytest.mark.parametrize(("program", "jobs"), [("zlib", 5), ("bzip2", 1)])
def test_job_ports_run_their_round_trips(program: str, jobs: int) -> None:
    """The programs behind the stored profiles, built from Debian's sources as the recorder
    builds them (fewer jobs), run to the end with every round trip checked."""
    from test_emu_common import ensure_built

    from codeisland.emulator.differential import EmulateConfig, run_baseline
    from codeisland.emulator.ports import PORTS

    ensure_built()
    elf = PORTS[program].build(jobs)
    base = run_baseline(EmulateConfig(workload=str(elf), threads=2, cpus=2))
    assert base.exit_codes == [0, 0]
    for thread, out in enumerate(base.outputs):
        text = out.decode()
        assert f"thread {thread}/2: {jobs} jobs" in text and "FAILED" not in text
