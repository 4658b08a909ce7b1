"""The bench report carries the loop's merges and splits (text and JSON) and the machine's
environment warnings."""

from __future__ import annotations

import numpy as np

from codeisland.bench.report import BenchReport
from codeisland.bench.runner import BenchConfig, Cell, WorkloadResult
from codeisland.frontend.params import FrontendParams


def test_report_names_merged_and_split_islands_per_policy() -> None:
    events = {
        "reactive": [
            {"window": 0, "kind": "commit", "islands": [2, 3]},
            {"window": 0, "kind": "merge", "islands": [2, 3]},
            {"window": 10, "kind": "split", "islands": [2, 3]},
        ],
        "none": [],
    }
    stats = {"modeled_cycles": 1.0, "relocations": 2, "rollbacks": 1, "bytes_staged": 0,
             "handler_insns_max": 0, "merges": 1, "splits": 1}  # fmt: skip
    cells = {p: Cell("hashtab", p, dict(stats)) for p in events}
    r = WorkloadResult("hashtab", "d", cells, np.zeros((0, 0)), events, [],
                       island_names=["a", "b", "insert", "lookup"],
                       warnings=["region hot declares 0x200000 pages but ..."])  # fmt: skip
    report = BenchReport(BenchConfig(workloads=("hashtab",)), FrontendParams(), [r], [], 1.0)
    d = report.to_dict()["workloads"][0]
    assert d["regroups"] == {
        "reactive": [
            {"window": 0, "kind": "merge", "islands": ["insert", "lookup"]},
            {"window": 10, "kind": "split", "islands": ["insert", "lookup"]},
        ],
        "none": [],
    }
    assert d["cells"]["reactive"]["merges"] == 1 and d["cells"]["reactive"]["splits"] == 1
    assert d["warnings"] == ["region hot declares 0x200000 pages but ..."]
    text = str(report)
    assert "  reactive: merge insert+lookup at window 0; split insert+lookup at window 10" in text
    assert "  warning: region hot declares 0x200000 pages but ..." in text
    assert "  none:" not in text
