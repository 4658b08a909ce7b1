"""Options and output helpers that several commands share (declared once)."""

from __future__ import annotations

import json
import math
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

import click

from ..errors import CheckFailed

F = TypeVar("F", bound=Callable[..., Any])


class Report(Protocol):
    """What a command returns: text for people, a dict for --json."""

    def __str__(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


class Address(click.ParamType):
    """An address or offset: decimal or 0x-hex, in minimum .. maximum (by default what a
    64-bit register or plan field holds)."""

    name = "address"

    def __init__(self, minimum: int = 0, maximum: int = 2**64 - 1) -> None:
        self.minimum, self.maximum = minimum, maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            number = value
        else:
            try:
                number = int(str(value), 0)
            except ValueError:
                self.fail(f"{value!r} is not an address (use 0x... or decimal)", param, ctx)
        if not self.minimum <= number <= self.maximum:
            self.fail(f"{value!r} is not in {self.minimum:#x}..{self.maximum:#x}", param, ctx)
        return number


class Seconds(click.ParamType):
    """A finite duration in seconds, 0 < s <= MAX (click's FloatRange lets NaN through)."""

    name = "seconds"

    def __init__(self, maximum: float) -> None:
        self.maximum = maximum

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        if not (math.isfinite(seconds) and 0 < seconds <= self.maximum):
            self.fail(f"{value!r} is not in 0 < seconds <= {self.maximum:g}", param, ctx)
        return seconds


class NonEmpty(click.ParamType):
    """A name that must not be empty or blank (an empty --emulated used to mean "not given")."""

    name = "name"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str:
        text = str(value)
        if not text.strip():
            self.fail("must not be empty", param, ctx)
        return text


ADDRESS = Address()
# how far `verify` moves copies: a destination must stay a canonical lower-half address
DISTANCE = Address(minimum=1, maximum=2**47 - 1)
NAME = NonEmpty()
SEED = click.IntRange(0, 2**32 - 1)  # numpy and random both take it; negative seeds crashed
CPUS = click.IntRange(1, 64)  # the emulated board's and the q35 guest's limit
THREADS = click.IntRange(1, 16)
CPUS_HELP = "Emulated CPUs (every one enters SMM at each SMI)."
THREADS_HELP = "Guest threads running the workload."
ISLAND_HELP = "Move this island (a function name; repeatable)."
KEEP_COPIES_HELP = (
    "On ROLLBACK leave the copies in place (retired until proven unreachable) so return "
    "addresses into them stay valid, or restore every byte (unsafe while threads run)."
)
WINDOWS = click.IntRange(1, 10_000)  # profile and loop windows: bounded work per run
INSTRUCTIONS = click.IntRange(1, 10**9)  # guest instructions per window / per sample
TIMEOUT = Seconds(maximum=24 * 3600.0)


class InputFile(click.Path):
    """A file read whole: it exists, is not a directory (click says so in one line), and is
    not a device (/dev/zero would be read forever).  Pipes are fine."""

    def __init__(self) -> None:
        super().__init__(exists=True, dir_okay=False, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        path = super().convert(value, param, ctx)
        mode = os.stat(path).st_mode
        if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
            self.fail(f"{str(path)!r} is a device, not a file", param, ctx)
        return path


INPUT_FILE = InputFile()
# files written: through outputs.OutputFile (temp + rename, never over an input)
OUTPUT_FILE = click.Path(dir_okay=False, path_type=Path)


def parse_address(
    ctx: click.Context | None, param: click.Parameter | None, value: str | None
) -> int | None:
    """Addresses given as text outside an option (e.g. in a test): see Address."""
    return None if value is None else ADDRESS.convert(value, param, ctx)


def load_base_option(func: F) -> F:
    """--load-base: where the image is loaded (analysis addresses shift by load - link base)."""
    return click.option(
        "--load-base",
        type=ADDRESS,
        default=None,
        help="Address the image is loaded at (default: its link base).",
    )(func)


def seed_option(help_text: str) -> Callable[[F], F]:
    def decorate(func: F) -> F:
        return click.option(
            "--seed", type=SEED, default=1, show_default=True, help=f"{help_text}."
        )(func)

    return decorate


def cost_model_option(func: F) -> F:
    """--platform: the platform profile whose [frontend] table sets the front-end cost model."""
    return click.option(
        "--platform",
        type=INPUT_FILE,
        help="Platform profile (TOML) whose [frontend] table sets the cost model (default: the "
        "shipped emulated.toml).",
    )(func)


def plots_options(default_dir: Path, what: str) -> Callable[[F], F]:
    """--out DIR for the PNG plot(s) `what`, and --no-plots."""

    def decorate(func: F) -> F:
        func = click.option("--no-plots", is_flag=True, help=f"Skip the {what}.")(func)
        return click.option(
            "--out",
            type=click.Path(file_okay=False, path_type=Path),
            default=default_dir,
            show_default=True,
            help=f"Directory for the {what}.",
        )(func)

    return decorate


def json_option(func: F) -> F:
    """--json: print the report as JSON on stdout instead of text."""
    return click.option("--json", "as_json", is_flag=True, help="Print data as JSON on stdout.")(
        func
    )


def emit(report: Report, as_json: bool) -> None:
    """Print a report: JSON on stdout for --json, otherwise its text."""
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2, sort_keys=True, default=_jsonable))
    else:
        click.echo(str(report))


def emit_check(report: Report, as_json: bool, ok: bool, verdict: str) -> None:
    """Print the report of a command that compares or checks; when the check failed, exit 1
    with `verdict` as the one stderr line (with and without --json)."""
    emit(report, as_json)
    if not ok:
        raise CheckFailed(verdict)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
