"""Planning: build_plan records, passes (merge/split/order/place), platform TOML, plan show."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_analysis_support import build_elf

from codeisland.analysis import analyze
from codeisland.cli import main
from codeisland.errors import PlanError, UsageError
from codeisland.plan import layout as L
from codeisland.plan.apply import relocated_bytes
from codeisland.plan.digest import digest64
from codeisland.plan.document import Plan
from codeisland.planning import build_plan, entry_kind
from codeisland.planning.passes import Options
from codeisland.planning.planner import run_passes
from codeisland.planning.platform import load_platform, parse_platform

BASE = 0x10000000  # emulated arena base; the workload sits at its start (code region)


@pytest.fixture(scope="module")
def workload_elf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_elf(tmp_path_factory.mktemp("elf"))


@pytest.fixture(scope="module")
def imap(workload_elf: Path):  # type: ignore[no-untyped-def]
    return analyze(workload_elf, load_base=BASE)


def test_build_plan_records(imap) -> None:  # type: ignore[no-untyped-def]
    # entry jumps on islands that are not preemption-safe: only with no thread parked
    moves = [("middle", BASE + 0x400000), ("top", BASE + 0x400100)]
    plan = Plan.from_bytes(
        build_plan(
            imap, moves, plan_id=9, chunk_size=32, callsites=True, parked_threads=False
        ).to_bytes()
    )
    assert plan.plan_id == 9 and len(plan.islands) == 2
    assert [(i.src, i.dst, i.size) for i in plan.islands] == [
        (imap["middle"].start, BASE + 0x400000, imap["middle"].size),
        (imap["top"].start, BASE + 0x400100, imap["top"].size),
    ]
    assert all(i.flags == L.ISLAND_ENTRY_REL32 for i in plan.islands)
    keys = [(f.island, f.offset) for f in plan.fixups]
    assert keys == sorted(keys) and len(keys) == len(set(keys))
    for n, (name, dst) in enumerate(moves):
        isl = imap[name]
        final = relocated_bytes(
            imap.read(isl.start, isl.size), isl.start, dst, isl.fixup_records(n)
        )
        chunks = [c for c in plan.chunks if c.island == n]
        assert [c.offset for c in chunks] == list(range(0, isl.size, 32))
        assert sum(c.length for c in chunks) == isl.size
        for c in chunks:
            assert c.digest == digest64(final[c.offset : c.offset + c.length])
        assert sorted(t.offset for t in plan.targets if t.island == n) == list(isl.targets)
    # call sites: top's call of middle lies in a moved island (its fix-up handles it);
    # chooser's tail jumps to middle and _start's tail jump to top are re-pointed
    sites = {(c.insn, c.island, c.opcode) for c in plan.callsites}
    chooser, start = imap["chooser"], imap["_start"]
    assert {s for s, i, _ in sites if i == 0} == {
        s for s, _ in imap.callsites[imap["middle"].start] if s in chooser
    }
    assert [s for s, i, _ in sites if i == 1] == [s for s, _ in imap.callsites[imap["top"].start]]
    assert all(s in start for s, i, _ in sites if i == 1)
    assert {op for _, _, op in sites} == {0xE9}
    assert all(r.flags == L.RULE_TRANSLATE_RIP for r in plan.rules)


def test_far_destination_uses_abs64_or_is_rejected(imap) -> None:  # type: ignore[no-untyped-def]
    leaf = imap["leaf"]
    assert leaf.size < L.ENTRY_ABS64_LEN + 4
    far = BASE + (3 << 31)
    with pytest.raises(PlanError, match="rel32"):  # its rip-relative operand would overflow
        build_plan(imap, [("leaf", far)])
    # the entry patch: rel32 when the jump reaches, abs64 beyond +-2 GiB, none on request
    top = imap["top"]
    assert entry_kind(top, BASE + 0x400000) == L.ISLAND_ENTRY_REL32
    assert entry_kind(top, far) == L.ISLAND_ENTRY_ABS64
    assert entry_kind(top, BASE + 0x400000, "abs64") == L.ISLAND_ENTRY_ABS64
    assert entry_kind(top, BASE + 0x400000, "none") == L.ISLAND_ENTRY_NONE
    with pytest.raises(PlanError, match="cannot reach"):
        entry_kind(top, far, "rel32")
    with pytest.raises(PlanError, match="no entry patch fits"):
        entry_kind(imap["_start"], far)  # 10 bytes: too small for the 14-byte abs64 jump


def test_not_relocatable_and_overlaps_rejected(imap) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(PlanError, match="chooser cannot move: indirect jump"):
        build_plan(imap, [("chooser", BASE + 0x400000)])
    with pytest.raises(PlanError, match="overlaps"):
        build_plan(imap, [("middle", BASE + 0x400000), ("top", BASE + 0x400010)])
    with pytest.raises(PlanError, match="overlaps live code top"):
        build_plan(imap, [("middle", imap["top"].start)])


def _counts(**kw: list[float]) -> dict[str, list[float]]:
    return dict(kw)


def test_passes_merge_neighbours_and_order(imap) -> None:  # type: ignore[no-untyped-def]
    counts = _counts(leaf=[9, 8, 0, 7], middle=[9, 8, 0, 6], top=[1, 1, 0, 1])
    result = run_passes(imap, load_platform("emulated"), counts)
    names = {c.name: c for c in result.ctx.candidates}
    assert "leaf+middle" in names  # adjacent and co-executed
    merged = names["leaf+middle"]
    assert merged.island.members == ("leaf", "middle")
    assert merged.island.start == imap["leaf"].start and merged.island.end == imap["middle"].end
    assert not any(f.target == imap["leaf"].start for f in merged.island.fixups)  # now internal
    assert merged.frequency == 47 and merged.environment == "hot"
    # one C3 cluster, caller first: top calls middle (now inside leaf+middle)
    assert result.ctx.order == ["top", "leaf+middle"]
    top = names["top"]
    assert top.dst == BASE + 0x400000 and merged.dst == top.dst + ((top.island.size + 63) & ~63)
    d = result.to_dict()
    assert {h["kind"] for h in d["hints"]} == {"dedicated_core", "vm", "cpu_affinity"}
    hot = d["environments"]["hot"]
    assert hot["start"] == BASE + 0x400000 and hot["page_size"] == 0x200000
    assert hot["islands"] == len(d["islands"]) and hot["preferred_cpus"] == [0, 1]
    assert "environment hot: 0x10400000 +0x200000, page 0x200000" in str(result)
    assert any(line.startswith("merge:") for line in d["passes"])


def test_passes_split_conflicting_members(imap) -> None:  # type: ignore[no-untyped-def]
    # co-executed in one window, but middle is 40x hotter: they want different regions, so
    # Merge does not join them, and Split takes apart such a block when it gets one (e.g. the
    # islands of an earlier plan, planned again under a new profile)
    from codeisland.analysis.merge import merge
    from codeisland.planning import passes as P

    counts = _counts(leaf=[1, 0, 0, 0], middle=[40, 30, 50, 40])
    result = run_passes(imap, load_platform("emulated"), counts, Options(merge_ratio=0.01))
    assert sorted(c.name for c in result.ctx.candidates) == ["leaf", "middle"]
    assert not any(line.startswith("merge:") for line in result.ctx.log)
    ctx = P.PlanContext(imap, load_platform("emulated"), counts, Options())
    block = merge(imap, [imap["leaf"], imap["middle"]])
    ctx.candidates = [P.Candidate(block, 161.0, member_freq={"leaf": 1.0, "middle": 160.0})]
    P.Split().run(ctx)
    P.Split().verify(ctx)
    assert [(c.name, c.frequency) for c in ctx.candidates] == [("leaf", 1.0), ("middle", 160.0)]
    assert ctx.log == ["split: leaf+middle (member frequencies [1.0, 160.0])"]


def test_place_respects_capacity(imap, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    doc = {
        "name": "tiny",
        "arena_size": 0x1000000,
        "arena_base": BASE,
        "region": [
            {"name": "hot", "role": "hot", "arena_offset": 0x400000, "size": 0x100},
            {"name": "warm", "role": "warm", "arena_offset": 0x800000, "size": 0x1000},
        ],
        "frontend": {"l1i_bytes": 32768},
    }
    plat = parse_platform(doc)
    assert plat.tables == {"frontend": {"l1i_bytes": 32768}}
    counts = _counts(middle=[5, 5], top=[9, 9])
    result = run_passes(imap, plat, counts, Options(merge_ratio=1e9))
    env = {c.name: c.environment for c in result.ctx.candidates}
    assert env == {"top": "warm", "middle": "hot"} or env == {"top": "hot", "middle": "warm"}
    for c in result.ctx.candidates:
        region = plat.region(c.environment or "")
        assert (
            region.start(BASE) <= (c.dst or 0) <= region.start(BASE) + region.size - c.island.size
        )


@pytest.mark.parametrize(
    "bad, msg",
    [
        ({"region": [{"name": "x", "role": "hot", "size": 16}]}, "exactly one of base"),
        (
            {"region": [{"name": "x", "role": "hot", "base": 0, "size": 16, "page_size": 8192}]},
            "page_size",
        ),
        ({"region": [{"name": "x", "role": "cold", "base": 0, "size": 16}]}, "role"),
        ({"region": [{"name": "x", "role": "source", "base": 0, "size": 16}]}, "no destination"),
        (
            {
                "arena_size": 16,
                "region": [{"name": "x", "role": "hot", "arena_offset": 8, "size": 16}],
            },
            "exceeds the arena",
        ),
    ],
)
def test_platform_errors(bad: dict, msg: str) -> None:  # type: ignore[type-arg]
    with pytest.raises(UsageError, match=msg):
        parse_platform(bad)


def test_cli_plan_build_and_show(
    workload_elf: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps({"middle": [4, 4], "top": [2, 2], "chooser": [1, 1]}))
    out = tmp_path / "x.plan"
    with pytest.raises(SystemExit) as exited:
        main(
            [
                "plan",
                "build",
                str(workload_elf),
                "--profile",
                str(prof),
                "-o",
                str(out),
                "--load-base",
                hex(BASE),
                "--json",
            ]
        )
    assert exited.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["rejected"] == {"chooser": "indirect jump (jump table or computed goto) (at +0x1a)"}
    with pytest.raises(SystemExit) as exited:
        main(["plan", "show", str(out), "--json"])
    shown = json.loads(capsys.readouterr().out)
    assert shown["digest"] == doc["digest"] and len(shown["islands"]) == len(doc["islands"])
    raw = bytearray(out.read_bytes())
    raw[-1] ^= 0xFF
    (tmp_path / "bad.plan").write_bytes(raw)
    with pytest.raises(SystemExit) as exited:
        main(["plan", "show", str(tmp_path / "bad.plan")])
    err = capsys.readouterr().err.strip().splitlines()
    assert exited.value.code == 2 and err == [
        "codeisland: error: plan digest does not match its bytes (corrupt or edited plan)"
    ]


def test_predictor_priorities_order_and_budget(
    imap,
    tmp_path: Path,  # type: ignore[no-untyped-def]
    capsys: pytest.CaptureFixture[str],
) -> None:
    # leaf and top never run in the same window and do not call each other: two clusters
    counts = _counts(leaf=[50, 0], top=[0, 1])
    plat = load_platform("emulated")
    hot = plat.region("hot").start(BASE)
    by_density = run_passes(imap, plat, counts, Options(merge_ratio=1e9))
    assert by_density.ctx.order == ["leaf", "top"]
    assert {c.name: c.dst for c in by_density.ctx.candidates}["leaf"] == hot
    opts = Options(merge_ratio=1e9, priorities={"top": 100.0, "leaf": 1.0})
    by_predictor = run_passes(imap, plat, counts, opts)
    assert by_predictor.ctx.order == ["top", "leaf"]
    assert {c.name: c.dst for c in by_predictor.ctx.candidates}["top"] == hot
    opts = Options(merge_ratio=1e9, priorities={"top": 100.0, "leaf": 1.0}, max_islands=1)
    budget = run_passes(imap, plat, counts, opts)
    assert [c.name for c in budget.ctx.candidates] == ["top"]
    assert budget.ctx.rejected == {"leaf": "below the plan's island budget"}
    bad = tmp_path / "prio.json"
    bad.write_text('["top"]')
    with pytest.raises(SystemExit) as exited:
        main(
            [
                "plan",
                "build",
                str(imap.image.path),
                "--island",
                "top",
                "-o",
                str(tmp_path / "o.plan"),
                "--priorities",
                str(bad),
            ]
        )
    assert exited.value.code == 2
    assert "must be a JSON object" in capsys.readouterr().err


def test_order_keeps_call_chains_adjacent_caller_first(imap) -> None:  # type: ignore[no-untyped-def]
    counts = _counts(leaf=[1, 1], middle=[1, 1], top=[1, 1])
    result = run_passes(imap, load_platform("emulated"), counts, Options(merge_ratio=1e9))
    assert result.ctx.order == ["top", "middle", "leaf"]  # one C3 cluster: top->middle->leaf
    dst = {c.name: c.dst or 0 for c in result.ctx.candidates}
    assert dst["top"] < dst["middle"] < dst["leaf"]
    assert dst["leaf"] - dst["top"] < 0x200  # packed (64-byte alignment only)


def test_place_splits_a_merge_that_fits_nowhere(imap) -> None:  # type: ignore[no-untyped-def]
    # a 0x60-byte region: leaf+middle (107 B) does not fit; split, leaf (17 B) does, and
    # middle (75 B) after it at 64-byte alignment would need 0x40 + 75 = 139 B
    doc = {
        "name": "small",
        "arena_base": BASE,
        "arena_size": 0x1000000,
        "region": [
            {"name": "hot", "role": "hot", "arena_offset": 0x400000, "size": 0x60, "alignment": 64}
        ],
    }
    plat = parse_platform(doc)
    counts = _counts(leaf=[9, 8], middle=[9, 8])
    # skip Environment's capacity estimate to reach Place with the merged block
    from codeisland.planning import passes as P

    ctx = P.PlanContext(imap, plat, counts, Options())
    for p in (P.Select(), P.Merge()):
        p.run(ctx)
    assert [c.name for c in ctx.candidates] == ["leaf+middle"]
    ctx.candidates[0].environment = "hot"
    ctx.order = ["leaf+middle"]
    P.Place().run(ctx)
    P.Place().verify(ctx)
    assert "split at place: leaf+middle" in ctx.log
    assert [(c.name, c.dst) for c in ctx.candidates] == [("leaf", BASE + 0x400000)]
    assert ctx.rejected == {"middle": "no region in rel32 reach of every fix-up has room"}


def test_profile_names_not_in_the_image(imap) -> None:  # type: ignore[no-untyped-def]
    counts = _counts(top=[3, 3], ghost=[5, 5], other=[1, 1])
    result = run_passes(imap, load_platform("emulated"), counts)
    assert [c.name for c in result.ctx.candidates] == ["top"]
    assert (
        result.ctx.log[0] == "select: 2 profile islands are not in the image (first: ghost, other)"
    )
    with pytest.raises(PlanError, match="no island to move"):
        run_passes(imap, load_platform("emulated"), _counts(ghost=[1]))
