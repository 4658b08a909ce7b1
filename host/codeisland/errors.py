"""The one error root of the toolkit.

Every failure the CLI reports is a CodeIslandError; library errors (lief, pyelftools, unicorn,
chipsec, OS errors) are converted at the boundary where they happen.  Each class carries the
exit code the CLI uses for it, so `main` is the only place that exits:

    1  a check failed (CheckFailed: outputs differ, mismatches, not ready)
    2  bad input: command line, input file, plan (UsageError, InputError, PlanError)
    3  the SMM driver cannot be reached (TransportError)
    4  the SMM driver rejected a request (DriverRejected)
    5  the emulated machine stopped (EmulationError)
    6  a tool or a part of the build is missing (ToolMissing, BuildMissing)
  130  interrupted (Ctrl-C; 143 for SIGTERM): nothing written
"""

from __future__ import annotations


class CodeIslandError(Exception):
    """Base of every error the toolkit reports to a user."""

    exit_code = 1


class UsageError(CodeIslandError):
    """The command line or a configuration file asks for something impossible."""

    exit_code = 2


class InputError(CodeIslandError):
    """An input file is truncated, corrupt, of the wrong kind or unsupported."""

    exit_code = 2


class PlanError(CodeIslandError):
    """A plan could not be built or decoded."""

    exit_code = 2


class TransportError(CodeIslandError):
    """The SMM driver could not be reached or did not answer."""

    exit_code = 3


class DriverRejected(CodeIslandError):
    """The SMM driver answered with a status other than OK."""

    exit_code = 4

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class EmulationError(CodeIslandError):
    """The emulated machine stopped: an unimplemented service, a fault, a guest error."""

    exit_code = 5


class ToolMissing(CodeIslandError):
    """An external tool (clang, lld-link, qemu) that this command needs is not installed."""

    exit_code = 6


class BuildMissing(ToolMissing):
    """A part of this checkout that `make build` produces (native library, driver, app,
    workloads) has not been built."""

    HOW = "run `make build` (or ./scripts/bootstrap.sh on a fresh machine)"

    def __init__(self, what: str) -> None:
        super().__init__(f"{what} is not built: {self.HOW}")


class CheckFailed(CodeIslandError):
    """A command that compares or checks (emulate, verify, qemu e2e, doctor) found a failure;
    the report has been printed, this is its one-line verdict."""

    exit_code = 1


class BuildFailed(CodeIslandError):
    """An external build (EDK2's `build`, make) ran and failed; the message quotes its error."""

    exit_code = 7
