"""Profile files: round trip, corrupt files rejected with one line, attribution via the map."""

from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from codeisland.errors import InputError
from codeisland.plan import layout as L
from codeisland.profile import IslandIndex, Profile, ProfiledIsland, Window
from codeisland.profile.attribution import attribute


def sample_profile() -> Profile:
    islands = [ProfiledIsland(1, "a", 0x1000, 0x100), ProfiledIsland(2, "b", 0x3000, 0x80)]
    windows = [
        Window(0, 0, 3, 4, 2, 2, [5, 0], exact=[500, 0], mem=[7, 0]),
        Window(1, 3600, 0, 1, 1, 2, [1, 9], exact=None, mem=None, unattributed=2),
    ]
    return Profile(islands, windows, 1000, {"kind": "test"})


@pytest.mark.parametrize("name", ["p.json", "p.json.gz"])
def test_round_trip(tmp_path: Path, name: str) -> None:
    p = sample_profile()
    path = tmp_path / name
    p.save(path)
    q = Profile.load(path)
    assert q.to_dict() == p.to_dict()
    assert q.counts("samples").tolist() == [[5, 0], [1, 9]]
    assert q.counts("exact").tolist() == [[500, 0], [0, 0]]
    assert q.context()["time_of_day"].tolist() == [0, 3600]


def corrupt(doc: dict, path: list, value: object) -> dict:
    d = json.loads(json.dumps(doc))
    target = d
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return d


CASES = [
    (["version"], 2, "version 2 is not supported"),
    (["format"], "x", "not a codeisland profile"),
    (["windows", 0, "samples"], [1], "one non-negative count per island"),
    (["windows", 0, "samples"], [1, -1], "one non-negative count per island"),
    (["windows", 1, "index"], 5, "windows must be in order"),
    (["windows", 0, "time_of_day"], 86400, "past midnight"),
    (["windows", 0, "busy_cpus"], 3, "more busy CPUs than CPUs"),
    (["islands", 1, "start"], 0x1080, "overlap"),
    (["islands", 1, "id"], 1, "not unique"),
    (["islands", 0, "size"], 0, "size must be positive"),
    (["islands"], {}, "islands must be a list"),
]


@pytest.mark.parametrize(("path", "value", "message"), CASES)
def test_corrupt_profiles_rejected(tmp_path: Path, path: list, value: object, message: str) -> None:
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(corrupt(sample_profile().to_dict(), path, value)))
    with pytest.raises(InputError, match=message):
        Profile.load(f)


def test_not_json_and_truncated_gzip(tmp_path: Path) -> None:
    (tmp_path / "a.json").write_text("{nope")
    with pytest.raises(InputError, match="not a profile file"):
        Profile.load(tmp_path / "a.json")
    (tmp_path / "b.gz").write_bytes(gzip.compress(b'{"format": 1}')[:12])
    with pytest.raises(InputError, match="truncated or corrupt gzip"):
        Profile.load(tmp_path / "b.gz")
    with pytest.raises(InputError, match="no such file"):
        Profile.load(tmp_path / "missing.json")


def test_cli_rejects_corrupt_profile_with_one_line(tmp_path: Path) -> None:
    f = tmp_path / "bad.json"
    f.write_text(json.dumps(corrupt(sample_profile().to_dict(), ["version"], 9)))
    r = subprocess.run(
        [
            sys.executable,
            "-c",
            "from codeisland.cli import main; main()",
            "profile",
            "show",
            str(f),
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.strip().splitlines() == [
        f"codeisland: error: {f}: profile version 9 is not supported"
    ]


def test_attribution_through_the_address_map() -> None:
    islands = [ProfiledIsland(1, "a", 0x1000, 0x100), ProfiledIsland(2, "b", 0x3000, 0x80)]
    index = IslandIndex(islands)
    moved = L.MapEntry(orig=0x1000, cur=0x9000, size=0x100, island_id=1, generation=1,
                       flags=L.MAP_ACTIVE)  # fmt: skip
    undone = L.MapEntry(orig=0x3000, cur=0xA000, size=0x80, island_id=2, generation=2,
                        flags=L.MAP_ROLLED_BACK)  # fmt: skip
    rips = [0x1000, 0x10FF, 0x9010, 0x90FF, 0x9100, 0x3000, 0x307F, 0xA000, 0x2000]
    counts, outside = attribute(rips, index, [moved, undone])
    # copy addresses of island a count for a; a rolled-back entry translates nothing
    assert counts.tolist() == [4, 2]
    assert outside == 3  # 0x9100 (past the copy), 0xA000 (rolled back), 0x2000
    assert index.lookup(np.array([0x0FFF, 0x1000, 0x30A0])).tolist() == [-1, 0, -1]
