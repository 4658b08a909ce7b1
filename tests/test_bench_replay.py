"""bench --emulated: the recorded `none` run is replayed to the clairvoyant policies, window by
window, and gives them the whole profile."""

from __future__ import annotations

from typing import Any

import numpy as np

from codeisland.bench.runner import _Replay
from codeisland.predict import make_policy


class Counting:
    def __init__(self) -> None:
        self.windows = 0
        self.islands: list[Any] = []

    def run_window(self) -> int:
        self.windows += 1
        return self.windows


def test_next_window_comes_from_the_recording() -> None:
    recorded = np.array([[1.0, 0.0], [2.0, 5.0], [3.0, 1.0]])
    m = _Replay(Counting(), recorded)
    assert m.peek_next().tolist() == [1.0, 0.0]  # before any window: window 0
    m.run_window()
    assert m.peek_next().tolist() == [2.0, 5.0]  # after window 0: window 1, as the loop asks
    m.run_window()
    m.run_window()
    assert m.peek_next().tolist() == [0.0, 0.0]  # past the recording: a window never run
    assert m.machine.windows == 3 and m.islands == []  # everything else is the machine's


def test_static_layout_takes_the_recorded_mean() -> None:
    recorded = np.array([[1.0, 0.0], [3.0, 4.0]])
    policy = make_policy("static", 2, recorded.mean(axis=0))
    assert policy.predict(0, None).tolist() == [2.0, 2.0]
