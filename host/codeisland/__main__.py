"""The `codeisland` console script and `python -m codeisland`.

Ctrl-C is handled from the first import on: the handlers are installed before the CLI's
imports (click, then per command numpy, scikit-learn, lief, unicorn: a second or more), so an
interrupt there ends as `aborted`, exit 130, like one anywhere else.
"""

from __future__ import annotations

import sys

from . import interrupts


def main() -> None:
    interrupts.install()
    try:
        from .cli import main as run_cli
    except KeyboardInterrupt:
        print("codeisland: aborted", file=sys.stderr)
        sys.exit(interrupts.exit_status())
    run_cli()


if __name__ == "__main__":
    main()
