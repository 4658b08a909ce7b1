"""`codeisland bench --quick --json`: the keys, the cells and the plots (about a minute here)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from codeisland.frontend.fetchtrace import library_path

DESIGNED = ["daily", "interactive", "pipeline", "mixed"]
RECORDED = ["zlib-linked", "zlib-scattered", "bzip2-linked", "bzip2-scattered"]
POLICIES = {"none", "reactive", "ewma", "predictive", "next_window", "static", "hot_once"}
CELL_KEYS = {
    "modeled_cycles",
    "share_of_oracle_gain",
    "share_of_upper_bound",
    "relocations",
    "rollbacks",
    "bytes_staged",
    "handler_insns_max",
    "gain",
}


@pytest.mark.skipif(not library_path().is_file(), reason="native library not built")
def test_bench_quick_json(tmp_path: Path) -> None:
    out = tmp_path / "plots"
    r = subprocess.run(
        [sys.executable, "-c", "from codeisland.cli import main; main()",
         "bench", "--quick", "--json", "--out", str(out)],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    d = json.loads(r.stdout)
    assert isinstance(d["predictive_share_of_oracle_gain"], float)
    assert isinstance(d["predictive_over_reactive_gain"], float)
    assert isinstance(d["predictive_share_of_upper_bound"], float)
    assert isinstance(d["predictive_over_static_gain"], float)
    assert "model" in d["note"]
    assert [w["name"] for w in d["workloads"]] == DESIGNED + RECORDED
    assert [w["kind"] for w in d["workloads"]] == ["designed"] * 4 + ["recorded"] * 4
    assert d["headline_over"] == "recorded"
    assert d["recorded"]["workloads"] == RECORDED and d["designed"]["workloads"] == DESIGNED
    for key in ("predictive_share_of_upper_bound", "predictive_over_static_gain"):
        assert d[key] == d["recorded"][key]  # the headline is over the recorded workloads
    for part in ("designed", "recorded"):  # each set's ratios are of its own totals
        p = d[part]
        assert p["predictive_share_of_upper_bound"] == pytest.approx(
            p["gains"]["predictive"] / p["upper_bound_gain"]
        )
        lost = {
            f"{w['name']}/{b}"
            for w in d["workloads"]
            if w["name"] in p["workloads"]
            for b in ("static", "hot_once")
            if w["cells"]["predictive"]["gain"] <= w["cells"][b]["gain"]
        }
        assert set(p["predictive_not_above"]) == lost
    for w in d["workloads"]:
        assert set(w["cells"]) == POLICIES
        for policy, cell in w["cells"].items():
            assert set(cell) >= CELL_KEYS
            if policy == "none":
                assert cell["relocations"] == 0 and cell["gain"] == 0
        assert w["cells"]["next_window"]["share_of_oracle_gain"] == pytest.approx(1.0)
        bound = w["upper_bound"]
        assert bound["method"] in ("exact", "milp-dual", "lp")
        assert 0 < bound["gain"] <= bound["all_misses_cycles"]
        for policy, cell in w["cells"].items():  # no policy beats the bound, or it is reported
            over = cell["gain"] > bound["gain"]
            assert over == (f"{w['name']}/{policy}" in d["bound_violations"])
            assert cell["share_of_upper_bound"] == pytest.approx(cell["gain"] / bound["gain"])
        assert w["retrains"] > 0
    gains = d["gains"]
    assert d["predictive_share_of_oracle_gain"] == pytest.approx(
        gains["predictive"] / gains["next_window"]
    )
    assert d["predictive_share_of_upper_bound"] == pytest.approx(
        gains["predictive"] / d["upper_bound_gain"]
    )
    assert d["predictive_over_static_gain"] == pytest.approx(gains["predictive"] / gains["static"])
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted([f"heat_{w}.png" for w in DESIGNED + RECORDED] + ["policies.png"])
    for p in out.iterdir():
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
