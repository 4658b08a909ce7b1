"""Every closed-loop target implements the whole LoopTarget protocol (loop/target.py) with the
protocol's parameters: the loop calls them all, and a target that missed a method added later
would fail only when the loop first needs it (a rollback, a RECLAIM), deep into a run."""

from __future__ import annotations

import inspect

import pytest

from codeisland.loop.emulated import EmulatedTarget
from codeisland.loop.linux import LinuxTarget
from codeisland.loop.model_target import ModelTarget
from codeisland.loop.native import NativeTarget
from codeisland.loop.target import LoopTarget

METHODS = [
    name
    for name, member in vars(LoopTarget).items()
    if callable(member) and not name.startswith("_")
]


def test_the_protocol_has_the_loops_verbs() -> None:
    assert {"run_window", "commit", "rollback", "address_map", "reclaim"} <= set(METHODS)


@pytest.mark.parametrize("target", [EmulatedTarget, ModelTarget, LinuxTarget, NativeTarget])
def test_target_implements_every_method_with_its_parameters(target: type) -> None:
    assert isinstance(getattr(target, "max_generations", None), int)
    for name in METHODS:
        mine = getattr(target, name, None)
        assert callable(mine), f"{target.__name__} lacks {name}()"
        want = list(inspect.signature(getattr(LoopTarget, name)).parameters)
        assert list(inspect.signature(mine).parameters) == want, f"{target.__name__}.{name}"
