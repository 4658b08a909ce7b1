"""Reading JSON and TOML documents a user hands us (profiles, priorities, counts, platforms).

One loader for every such file, so each refuses the same way, with one InputError line:
unreadable or a directory, gzip that does not decompress, bytes that are not UTF-8, syntax
errors, nesting deeper than MAX_DEPTH (the parsers recurse: a deep document used to end in a
RecursionError), and numbers that are not finite (JSON's NaN/Infinity extensions, 1e999).
What the document must contain is the caller's business; this module only guarantees a
plain, shallow, finite tree of dict/list/str/int/float/bool/None whose integers fit in 64 bits.
"""

from __future__ import annotations

import gzip
import json
import math
import tomllib
import zlib
from pathlib import Path
from typing import Any

from .errors import InputError

MAX_DEPTH = 32  # deeper than any document of ours (a profile is 4 levels)
INT_MIN, INT_MAX = -(2**63), 2**64 - 1  # what an address, a count or a C field can hold
GZIP_MAGIC = b"\x1f\x8b"


def read_bytes(path: Path, what: str) -> bytes:
    """The file's bytes, gunzipped when it is gzip."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise InputError(f"{what} {path}: no such file") from None
    except IsADirectoryError:
        raise InputError(f"{what} {path}: is a directory") from None
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot read ({exc.strerror or exc})") from None
    if raw[:2] == GZIP_MAGIC:
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError, zlib.error):
            raise InputError(f"{what} {path}: truncated or corrupt gzip") from None
    return raw


def parse_json(raw: bytes | str, what: str) -> Any:
    """A JSON document from bytes or text; refuses non-finite numbers and deep nesting."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise InputError(f"{what} is not UTF-8 text (a binary file?)") from None
    try:
        doc = json.loads(text, parse_constant=_no_constant, parse_float=_finite_float)
    except RecursionError:
        raise InputError(f"{what} is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise InputError(f"{what} is not valid JSON ({_first_line(exc)})") from None
    check_shape(doc, what)
    return doc


def load_json(path: Path, what: str) -> Any:
    """A JSON (or gzip-compressed JSON) file: see parse_json."""
    return parse_json(read_bytes(path, what), f"{what} {path}")


def parse_toml(raw: bytes | str, what: str) -> dict[str, Any]:
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
    except UnicodeDecodeError:
        raise InputError(f"{what} is not UTF-8 text (a binary file?)") from None
    try:
        doc = tomllib.loads(text)
    except RecursionError:
        raise InputError(f"{what} is nested deeper than {MAX_DEPTH} levels") from None
    except tomllib.TOMLDecodeError as exc:
        raise InputError(f"{what} is not valid TOML ({_first_line(exc)})") from None
    check_shape(doc, what)
    return doc


def load_toml(path: Path, what: str) -> dict[str, Any]:
    return parse_toml(read_bytes(path, what), f"{what} {path}")


def check_shape(doc: Any, what: str) -> None:
    """Refuse nesting deeper than MAX_DEPTH and non-finite floats (iteratively: no recursion)."""
    stack: list[tuple[Any, int]] = [(doc, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict | list):
            if depth > MAX_DEPTH:
                raise InputError(f"{what} is nested deeper than {MAX_DEPTH} levels")
            items = value.values() if isinstance(value, dict) else value
            stack.extend((v, depth + 1) for v in items)
        elif isinstance(value, float) and not math.isfinite(value):
            raise InputError(f"{what} holds a number that is not finite ({value})")
        elif isinstance(value, int) and not INT_MIN <= value <= INT_MAX:
            raise InputError(f"{what} holds an integer that does not fit in 64 bits")


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text} is out of range for a number")
    return value


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
