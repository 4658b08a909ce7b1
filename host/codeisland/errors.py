"""The one error root of the toolkit.

Every failure the CLI reports is a CodeIslandError; library errors (lief, pyelftools, unicorn,
chipsec, OS errors) are converted at the boundary where they happen.  Each class carries the
exit code the CLI uses for it, so `main` is the only place that exits.
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
