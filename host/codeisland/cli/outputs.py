"""The one way a command writes an output file (-o): checked first, committed last.

    with OutputFile(out, inputs=[image, profile], what="plan") as tmp:
        ...long work...
        tmp.write_bytes(data)            # or a library call that writes to `tmp`

* Before any work: refuses an output that is one of the inputs (same file, however named:
  `plan build -o IN` turned an ELF into a plan) and an output that cannot be written (the
  temporary file is created next to it at once, so an unwritable directory fails in the first
  millisecond, not after a long run).
* The data goes to that temporary file, renamed over OUTPUT only when the block ends without an
  exception and no interrupt was received; otherwise it is removed.  An existing OUTPUT is
  therefore never half-written or lost.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING

from .. import interrupts
from ..errors import InputError, UsageError

if TYPE_CHECKING:
    from ..bench.runner import WorkloadResult


class OutputFile:
    def __init__(self, path: Path, inputs: Iterable[Path | None] = (), what: str = "output"):
        self.path = path
        self.inputs = [p for p in inputs if p is not None]
        self.what = what
        self.tmp: Path | None = None

    def __enter__(self) -> Path:
        for source in self.inputs:
            if _same_file(self.path, source):
                raise UsageError(
                    f"refusing to overwrite the input {source} with the {self.what}: "
                    "choose another -o"
                )
        if self.path.is_dir():
            raise UsageError(f"{self.what} {self.path} is a directory")
        directory = self.path.parent
        try:
            fd, name = tempfile.mkstemp(
                dir=directory, prefix=f".{self.path.name}.", suffix=f".tmp{self.path.suffix}"
            )
        except OSError as exc:
            raise InputError(f"cannot write {self.what} {self.path}: {exc.strerror}") from None
        os.close(fd)
        self.tmp = Path(name)
        return self.tmp

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        tmp, self.tmp = self.tmp, None
        if tmp is None:
            return
        if kind is not None or interrupts.received():
            tmp.unlink(missing_ok=True)
            if kind is None:
                raise KeyboardInterrupt  # a swallowed interrupt: still nothing written
            return
        try:
            os.chmod(tmp, 0o666 & ~_umask())
            os.replace(tmp, self.path)
        except OSError as err:
            tmp.unlink(missing_ok=True)
            raise InputError(f"cannot write {self.what} {self.path}: {err.strerror}") from None


def _same_file(a: Path, b: Path) -> bool:
    with contextlib.suppress(OSError):
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def plot_dir(out: Path, no_plots: bool) -> None:
    """Create --out before a long run (an unwritable directory must not cost one)."""
    if no_plots:
        return
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {out}: {exc.strerror}") from None


def write_heat_plot(
    path: Path,
    result: WorkloadResult,
    plots: list[str],
    *,
    warmup: int,
    policy: str,
    note: str,
    window: str,
) -> None:
    """A live loop's heat plot (bench/plots.heat_plot) written to `path`, which the report's
    `plots` then lists."""
    from ..bench.plots import heat_plot

    with OutputFile(path, what="plot") as tmp_png:
        heat_plot(result, tmp_png, warmup=warmup, policy=policy, note=note, window=window)
    plots.append(str(path))
