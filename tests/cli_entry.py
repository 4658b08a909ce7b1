"""Run a codeisland command line in-process through the CLI's own entry (`cli.run`: the exit
codes, one-line errors and aborts of the console script) with click's CliRunner."""

from __future__ import annotations

from click.testing import CliRunner, Result

from codeisland.cli import run


class _Entry:
    """CliRunner calls `.main(args=...)`; this routes it through codeisland's entry."""

    name = "codeisland"

    def main(self, args: list[str], **_: object) -> None:
        raise SystemExit(run(list(args)))


def invoke(args: list[str], stdin: str | None = None) -> Result:
    return CliRunner().invoke(_Entry(), args, input=stdin)  # type: ignore[arg-type]
