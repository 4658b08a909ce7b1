"""The emulator host: smmemu (the board) booted with the real driver, driven through the
relocation layer.  `boot()` gives a Session; `differential` is `codeisland emulate`."""

from .session import Session, boot

__all__ = ["Session", "boot"]
