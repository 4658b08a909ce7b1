"""The `codeisland` command line.

Commands live one per module in this package and are imported only when used (scikit-learn,
unicorn and lief are slow to import).  To add one: create `cli/<name>.py` exposing a click command
or group called `command`, and add a line to COMMANDS below.  `main` is the only place that exits:
a CodeIslandError becomes one line on stderr and its class's exit code (errors.py lists them), a
click usage error one line and 2, a failed check the code the command raised, an interrupt
`aborted` and 130 (interrupts.py).
"""

from __future__ import annotations

import importlib
import os
import sys

import click

from .. import __version__, interrupts
from ..errors import CodeIslandError

# command name -> (module under codeisland.cli, one-line help shown in `codeisland --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "analyze": ("analyze", "Islands, fix-ups, limits, call graph and coverage of an ELF/PE image."),
    "verify": ("verify", "Move every island in Python, re-decode, check all targets resolve."),
    "plan": ("plan", "Build a relocation plan (sample + platform profile) or decode a plan."),
    "firmware": ("firmware", "List a UEFI image; inject the SMM driver; build OVMF with it."),
    "profile": ("profile", "Record a sample profile (emulator, model, QEMU); validate, show one."),
    "model": ("model", "Train the heat model on a sample profile; show a model's importances."),
    "bench": ("bench", "Compare relocation policies on phase workloads (modeled cycles)."),
    "qemu": ("qemu", "Run the injected firmware under QEMU; the end-to-end scenario."),
    "doctor": ("doctor", "Check through chipsec what a relocation needs, with verdicts."),
    "emulate": ("emulate", "Run the real SMM driver on the emulated board; differential run."),
    "loop": ("loop", "The closed loop on an unmodified program in a Linux guest (real SMIs)."),
    "native": ("native", "Relocate a live Linux program's code with the same engine (LD_PRELOAD)."),
}


class LazyGroup(click.Group):
    """A group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        entry = COMMANDS.get(cmd_name)
        if entry is None:
            return None
        module = importlib.import_module(f"{__name__}.{entry[0]}")
        command: click.Command = module.command
        return command

    def invoke(self, ctx: click.Context) -> object:
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            raise interrupts.Interrupted from None
        except BrokenPipeError as exc:
            # click takes every EPIPE for a closed stdout (`| head`) and exits 1 in silence;
            # one from a socket or a child's pipe is an error to report
            if _stdout_closed():
                raise
            raise CodeIslandError(f"a connection was lost: {exc}") from exc

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, COMMANDS[name][1]) for name in self.list_commands(ctx)]
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="codeisland")
def cli() -> None:
    """codeisland: profile code islands, predict which need a better place, and relocate them
    at run time through a System Management Interrupt."""


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script; the only place that exits."""
    interrupts.install()
    try:
        status = run(argv)
    except BaseException:
        interrupts.uninstall()
        raise
    if not interrupts.received():  # aborted: stay quiet about the aftermath until we exit
        interrupts.uninstall()
    sys.exit(status)


def run(argv: list[str] | None = None) -> int:
    """Run one command line; returns the exit status (what `main` exits with)."""
    if interrupts.received():  # during the console script's imports: held until now
        return _aborted()
    try:
        # without standalone mode click *returns* the code of an Exit raised by a command
        # (a failed check) instead of exiting: it is the status, never dropped
        returned = cli.main(args=argv, prog_name="codeisland", standalone_mode=False)
        status = returned if isinstance(returned, int) else 0
    except (KeyboardInterrupt, interrupts.Interrupted, click.exceptions.Abort):
        return _aborted()
    except click.exceptions.Exit as exc:
        status = exc.exit_code
    except click.UsageError as exc:  # one line, not click's three-line usage block
        if interrupts.received():
            return _aborted()
        where = exc.ctx.command_path if exc.ctx else "codeisland"
        message = _one_line(exc.format_message())
        if not message.endswith((".", "?", "!")):
            message += "."
        click.echo(f"{where}: error: {message} Try '{where} --help'.", err=True)
        return 2
    except click.ClickException as exc:
        if interrupts.received():
            return _aborted()
        _error(exc.format_message())
        return 2 if isinstance(exc, click.FileError) else exc.exit_code
    except CodeIslandError as exc:
        if interrupts.received():
            return _aborted()  # e.g. an emulation cut short by Ctrl-C inside a Unicorn hook
        _error(str(exc))
        return exc.exit_code
    except BrokenPipeError:
        return 0
    except RecursionError:
        if interrupts.received():
            return _aborted()
        _error("input is nested too deeply")
        return 2
    except Exception as exc:  # a bug of ours: one line, the traceback on request
        if interrupts.received():
            return _aborted()
        if os.environ.get("CODEISLAND_DEBUG"):
            raise
        _error(
            f"internal error: {type(exc).__name__}: {exc} "
            "(set CODEISLAND_DEBUG=1 for the traceback)"
        )
        return 70
    # an interrupt some library swallowed still ends the run as an abort
    return _aborted() if interrupts.received() else status


def _stdout_closed() -> bool:
    """True when whoever reads our stdout has gone (a pipe whose reader closed polls POLLERR)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return True


def _error(message: str) -> None:
    click.echo(f"codeisland: error: {_one_line(message)}", err=True)


def _aborted() -> int:
    status = interrupts.exit_status()  # first: no interrupt raised again while we print
    click.echo("codeisland: aborted", err=True)
    return status


def _one_line(text: str) -> str:
    return " ".join(part.strip() for part in text.splitlines() if part.strip())
