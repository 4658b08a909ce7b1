"""Options and output helpers that several commands share (declared once)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

import click

F = TypeVar("F", bound=Callable[..., Any])


class Report(Protocol):
    """What a command returns: text for people, a dict for --json."""

    def __str__(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...


def parse_address(
    ctx: click.Context | None, param: click.Parameter | None, value: str | None
) -> int | None:
    """Addresses on the command line: decimal or 0x-hex."""
    if value is None:
        return None
    try:
        return int(value, 0)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not an address (use 0x... or decimal)") from None


def load_base_option(func: F) -> F:
    """--load-base: where the image is loaded (analysis addresses shift by load - link base)."""
    return click.option(
        "--load-base",
        callback=parse_address,
        default=None,
        help="Address the image is loaded at (default: its link base).",
    )(func)


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


def _jsonable(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    if hasattr(value, "__fspath__"):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")
