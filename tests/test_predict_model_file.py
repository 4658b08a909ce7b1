"""Model files cannot run code when loaded: crafted files are refused with one line and the
payload they carry never runs (a marker file it would create stays absent)."""

from __future__ import annotations

import json
import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import skops.io
from cli_entry import invoke

from codeisland.errors import InputError
from codeisland.predict.model import MODEL_MAGIC, PICKLE_MAGIC, HeatModel


class Payload:
    """What an attacker ships: building it (unpickling or skops' object loader) touches a file."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (_touch, (self.marker, "pickle"))

    def __setstate__(self, state: dict[str, str]) -> None:
        _touch(state["marker"], "skops")


def _touch(marker: str, how: str) -> None:
    Path(marker).write_text(how)


@pytest.fixture(scope="module")
def good(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(3)
    t, n = 40, 6
    counts = rng.poisson(5, size=(t, n)).astype(float)
    ctx = {
        "time_of_day": np.arange(t) * 600.0,
        "input_events": rng.poisson(2, t).astype(float),
        "runnable_threads": np.full(t, 2.0),
        "busy_cpus": np.full(t, 2.0),
        "cpus": np.full(t, 2.0),
    }
    model = HeatModel(history_windows=40)
    model.retrain(counts, None, ctx)
    path = tmp_path_factory.mktemp("model") / "good.cim"
    model.save(path)
    return path


def _with_body(good: Path, body: bytes, out: Path) -> Path:
    raw = good.read_bytes()
    (n,) = struct.unpack_from("<I", raw, 8)
    out.write_bytes(raw[: 12 + n] + body)
    return out


def _refused(path: Path, marker: Path, match: str) -> None:
    with pytest.raises(InputError, match=match):
        HeatModel.load(path)
    assert not marker.exists(), "loading the file ran its payload"


def test_good_file_round_trips_through_the_safe_loader(good: Path) -> None:
    assert good.read_bytes()[:8] == MODEL_MAGIC
    model = HeatModel.load(good)
    assert model.estimator is not None and model.relations is not None


def test_version_1_pickle_is_never_unpickled(good: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    head = json.dumps({"format": "codeisland-model", "version": 1}).encode()
    body = pickle.dumps(Payload(str(marker)))
    bad = tmp_path / "v1.cim"
    bad.write_bytes(PICKLE_MAGIC + struct.pack("<I", len(head)) + head + body)
    _refused(bad, marker, "version 1")
    pickle.loads(body)  # the payload is real: unpickling it does run it
    assert marker.read_text() == "pickle"


def test_pickle_behind_the_new_magic_is_refused(good: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    bad = _with_body(good, pickle.dumps(Payload(str(marker))), tmp_path / "p.cim")
    _refused(bad, marker, "not a skops archive")


def test_skops_archive_with_an_untrusted_object_is_refused(good: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    body = skops.io.dumps({"estimator": Payload(str(marker)), "relations": None})
    _refused(_with_body(good, body, tmp_path / "o.cim"), marker, "not trusted: .*Payload")
    # skops without our trusted list would build it: the payload is real
    skops.io.loads(body, trusted=skops.io.get_untrusted_types(data=body))
    assert marker.read_text() == "skops"


def test_skops_archive_naming_a_function_is_refused(good: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    body = skops.io.dumps({"estimator": os.system, "relations": None})
    _refused(_with_body(good, body, tmp_path / "f.cim"), marker, "not trusted: .*system")


def test_trusted_archive_of_the_wrong_shape_is_refused(good: Path, tmp_path: Path) -> None:
    for name, doc in {
        "no estimator": {"estimator": None, "relations": None},
        "relations": {"estimator": HeatModel.load(good).estimator, "relations": {"x": 1}},
        "list": [1, 2],
    }.items():
        bad = _with_body(good, skops.io.dumps(doc), tmp_path / f"{name}.cim")
        with pytest.raises(InputError):
            HeatModel.load(bad)


def _header(good: Path, tmp_path: Path, name: str, edit: object) -> Path:
    raw = good.read_bytes()
    (n,) = struct.unpack_from("<I", raw, 8)
    head = json.loads(raw[12 : 12 + n])
    head = edit(head) if callable(edit) else edit
    text = head if isinstance(head, bytes) else json.dumps(head).encode()
    out = tmp_path / f"{name}.cim"
    out.write_bytes(MODEL_MAGIC + struct.pack("<I", len(text)) + text + raw[12 + n :])
    return out


@pytest.mark.parametrize(
    ("name", "edit"),
    [
        ("list", [1, 2]),
        ("deep", b"[" * 100_000 + b"]" * 100_000),
        ("nan", lambda h: {**h, "summary": {"train_mae": float("nan")}}),
        ("summary string", lambda h: {**h, "summary": "x"}),
        ("importance string", lambda h: {**h, "feature_importances": {"a": "b"}}),
        ("no estimator", lambda h: {k: v for k, v in h.items() if k != "estimator"}),
        ("params", lambda h: {**h, "params": {"max_iter": "20"}}),
        ("binary", b"\xff\xfe\x00garbage"),
    ],
)
def test_model_show_refuses_malformed_headers_in_one_line(
    good: Path, tmp_path: Path, name: str, edit: object
) -> None:
    bad = _header(good, tmp_path, name, edit)
    result = invoke(["model", "show", str(bad)])
    assert result.exit_code == 2, result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("codeisland: error: "), result.stderr
    assert "internal error" not in result.stderr
