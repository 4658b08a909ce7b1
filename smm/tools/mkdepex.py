#!/usr/bin/env python3
"""Write an MM_DEPEX section body: PUSH <guid> for each GUID, AND between them, END.

PI spec vol. 2 (dependency expressions): PUSH 0x02 + 16-byte GUID, AND 0x03, END 0x08.
Usage: mkdepex.py OUTPUT GUID [GUID...]
"""

from __future__ import annotations

import sys
import uuid

PUSH, AND, END = 0x02, 0x03, 0x08


def depex(guids: list[str]) -> bytes:
    out = bytearray()
    for i, text in enumerate(guids):
        out.append(PUSH)
        out += uuid.UUID(text).bytes_le  # EFI_GUID layout: Data1..3 little-endian
        if i:
            out.append(AND)
    out.append(END)
    return bytes(out)


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        print("usage: mkdepex.py OUTPUT GUID [GUID...]", file=sys.stderr)
        return 2
    try:
        body = depex(argv[2:])
    except ValueError as exc:
        print(f"mkdepex: bad GUID: {exc}", file=sys.stderr)
        return 2
    with open(argv[1], "wb") as f:
        f.write(body)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
