"""Co-execution weights from profiles, and `analyze --profile` / `analyze --json` output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_analysis_support import build_elf

from codeisland.analysis.coexec import coexecution, counts_from_document, load_counts
from codeisland.cli import main
from codeisland.errors import InputError


def test_weights_are_sums_of_window_minima() -> None:
    counts = {"a": [5, 0, 2], "b": [3, 4, 2], "c": [0, 0, 0], "d": [0, 9, 0]}
    assert coexecution(counts) == {("a", "b"): 5.0, ("b", "d"): 4.0}
    assert coexecution(counts, min_weight=4.0) == {("a", "b"): 5.0}
    with pytest.raises(InputError, match="window counts"):
        coexecution({"a": [1, 2], "b": [1]})


def test_profile_documents() -> None:
    # a codeisland-profile is validated as a whole (profile.format) before its counts are used
    context = {"time_of_day": 0, "input_events": 0, "runnable_threads": 1, "busy_cpus": 1,
               "cpus": 1}  # fmt: skip
    doc = {
        "format": "codeisland-profile",
        "version": 1,
        "source": {"workload": "test"},
        "window_instructions": 1000,
        "islands": [
            {"id": 0, "name": "f", "start": 0, "size": 8},
            {"id": 1, "name": "g", "start": 8, "size": 8},
        ],
        "windows": [
            {"index": 0, "samples": [3, 1], "exact": None, **context},
            {"index": 1, "samples": [0, 2], "exact": [1, 7], **context},
        ],
    }
    assert counts_from_document(doc) == {"f": [3.0, 1.0], "g": [1.0, 7.0]}
    assert counts_from_document({"f": [1, 2]}) == {"f": [1.0, 2.0]}
    for bad in (
        [1, 2],
        {"f": "x"},
        {
            "format": "codeisland-profile",
            "islands": [{"name": "f"}],
            "windows": [{"samples": [1, 2]}],
        },
        {**doc, "islands": "f"},  # islands as a string used to end in an AttributeError
        {k: v for k, v in doc.items() if k != "source"},
        {"f": [1, True]},
    ):
        with pytest.raises(InputError):
            counts_from_document(bad)


def test_load_counts_errors(tmp_path: Path) -> None:
    p = tmp_path / "p.json"
    p.write_text("{not json")
    with pytest.raises(InputError, match="not valid JSON"):
        load_counts(p)


def test_analyze_cli_json_with_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    elf = build_elf(tmp_path)
    prof = tmp_path / "p.json"
    prof.write_text(json.dumps({"middle": [4, 4, 0], "leaf": [3, 5, 1], "top": [0, 1, 0]}))
    with pytest.raises(SystemExit) as exited:
        main(["analyze", str(elf), "--profile", str(prof), "--islands", "--json"])
    assert exited.value.code == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["call_graph"] == {
        "_start": ["top"],
        "chooser": ["leaf", "middle"],
        "middle": ["leaf"],
        "top": ["chooser", "middle"],
    }
    assert doc["coexecution"][0] == {"a": "leaf", "b": "middle", "weight": 7.0}
    assert [i["name"] for i in doc["island_list"]] == ["leaf", "middle", "chooser", "top", "_start"]
    with pytest.raises(SystemExit):
        main(["analyze", str(elf), "--islands"])
    text = capsys.readouterr().out
    assert "islands      5 (4 relocatable)" in text
    assert "indirect jump (jump table or computed goto)" in text
