"""Ctrl-C (SIGINT) and SIGTERM for the CLI: every interrupt ends the run as `aborted`.

Installed by the console script before anything else is imported (codeisland/__main__.py),
so an interrupt during the slow imports (click, numpy, lief, unicorn) is an abort too.

Python raises KeyboardInterrupt where the signal lands, and some places lose it:

* an import of a C extension (lief's initialisation swallows it: the run went on, exit 0);
* a ctypes callback (Unicorn hooks): the exception is printed as "ignored" or stored by the
  binding, the emulation stops early and a later check fails with a misleading message.

So the handler also records the signal.  While a module is being imported, the interrupt is
held and raised once the import is done (polled with a short timer).  An interrupt that a
callback swallowed is raised again shortly after.  `main` reports any error that follows a
recorded signal as `aborted`, and an output is never committed after one
(`outputs.OutputFile`).
"""

from __future__ import annotations

import _signal as signal  # the C module: `signal` imports enum, too slow to come first
import sys

TYPE_CHECKING = False  # typing itself takes ~20 ms to import: not before the handlers
if TYPE_CHECKING:
    from types import FrameType
    from typing import Any

POLL_S = 0.05  # how soon a held or swallowed interrupt is raised again

_received: int | None = None  # the first signal number since install()
_previous_unraisable = sys.unraisablehook


def received() -> int | None:
    """The signal that interrupted this run, if one did."""
    return _received


def exit_status() -> int:
    """Shell convention: 128 + signal number (130 for SIGINT).  Called by `main` once it has
    the interrupt: stops raising it again."""
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, signal.SIG_IGN)
    return 128 + (_received or signal.SIGINT)


class Interrupted(BaseException):
    """The KeyboardInterrupt of a running command, carried past click (which would print a
    blank line for it) to `main`."""


def install() -> None:
    """Route SIGINT/SIGTERM through this module (main thread only; called by `main`).  A
    signal the parent told us to ignore (`cmd &` in a script, nohup) stays ignored, as
    Python itself does for SIGINT."""
    if signal.getsignal(signal.SIGALRM) == _on_retry:
        return  # already installed (by the console script): keep what was received
    for signum in (signal.SIGINT, signal.SIGTERM):
        if signal.getsignal(signum) != signal.SIG_IGN:
            signal.signal(signum, _on_signal)
    signal.signal(signal.SIGALRM, _on_retry)
    sys.unraisablehook = _on_unraisable


def uninstall() -> None:
    global _received
    _received = None
    signal.setitimer(signal.ITIMER_REAL, 0)
    if signal.getsignal(signal.SIGINT) == _on_signal:
        signal.signal(signal.SIGINT, signal.default_int_handler)
    if signal.getsignal(signal.SIGTERM) == _on_signal:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGALRM, signal.SIG_DFL)
    sys.unraisablehook = _previous_unraisable


def _importing() -> bool:
    """True while some module's top level is still running (an import in progress)."""
    for name, module in list(sys.modules.items()):
        spec = getattr(module, "__spec__", None)
        if name != "__main__" and getattr(spec, "_initializing", False):
            return True
    return False


def _on_signal(signum: int, frame: FrameType | None) -> None:
    global _received
    if _received is None:
        _received = signum
    _raise_when_safe()


def _on_retry(signum: int, frame: FrameType | None) -> None:
    # not again while the first one is still unwinding (finally blocks, __exit__ cleanups)
    if _received is not None and not isinstance(sys.exc_info()[1], KeyboardInterrupt | Interrupted):
        _raise_when_safe()


def _raise_when_safe() -> None:
    if _importing():
        signal.setitimer(signal.ITIMER_REAL, POLL_S)
        return
    raise KeyboardInterrupt


def _on_unraisable(info: Any) -> None:
    """A KeyboardInterrupt no caller can see (raised inside a ctypes callback): raise it
    again soon, in ordinary Python code.  Once interrupted, say nothing about these: the
    other "Exception ignored" reports are its aftermath (e.g. a __del__ of an object whose
    __init__ the interrupt cut short), and the run ends as `aborted` anyway."""
    if _received is None:
        _previous_unraisable(info)
    elif isinstance(info.exc_value, KeyboardInterrupt):
        signal.setitimer(signal.ITIMER_REAL, POLL_S)
