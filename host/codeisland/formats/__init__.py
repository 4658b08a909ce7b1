"""Executable formats: `open_image(path or bytes)` returns a lazy typed `Image` (ELF64 or PE32+).

Anything that is not an x86-64 ELF64 or PE32+ image, or is truncated or corrupt, raises
`InputError` with one line saying why.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import InputError
from .image import Image, Section, Symbol

__all__ = ["Image", "Section", "Symbol", "open_image"]


def open_image(source: str | os.PathLike[str] | bytes | bytearray | memoryview) -> Image:
    """Open an image from a path or from its bytes."""
    if isinstance(source, bytes | bytearray | memoryview):
        data, path = bytes(source), None
    else:
        path = str(source)
        try:
            data = Path(path).read_bytes()
        except OSError as exc:
            raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    image = _dispatch(data, path)
    image.check_sections()
    if not image.code_sections:
        raise InputError("image has no executable code")
    return image


def _dispatch(data: bytes, path: str | None) -> Image:
    if data[:4] == b"\x7fELF":
        from .elf import ElfImage

        return ElfImage(data, path)
    if data[:2] == b"MZ":
        from .pe import PeImage

        return PeImage(data, path)
    if len(data) < 4:
        raise InputError(f"image is truncated: {len(data)} bytes")
    raise InputError("unsupported image format (expected ELF64 or PE32+ for x86-64)")
