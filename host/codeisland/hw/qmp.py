"""A small QMP client (QEMU Machine Protocol, JSON over a UNIX socket).

Only what the toolkit needs: capabilities negotiation, `execute`, and HMP commands through
`human-monitor-command` (I/O port access: `o`/`i`, which QMP itself does not offer).
"""

from __future__ import annotations

import contextlib
import json
import re
import socket
import time
from typing import Any

from ..errors import TransportError

_PORT_VALUE = re.compile(r"=\s*(0x[0-9a-fA-F]+)")
_WIDTH = {1: "b", 2: "h", 4: "w"}  # HMP sizes: byte, halfword, word


class Qmp:
    def __init__(self, path: str, timeout_s: float = 10.0) -> None:
        self.path = path
        self.sock = _connect(path, timeout_s)
        self.sock.settimeout(timeout_s)
        self._buf = b""
        greeting = self._read()
        if "QMP" not in greeting:
            raise TransportError(f"{path} does not speak QMP")
        self.execute("qmp_capabilities")
        self.events: list[dict[str, Any]] = []

    def _read(self) -> dict[str, Any]:
        while b"\n" not in self._buf:
            try:
                chunk = self.sock.recv(65536)
            except OSError as exc:
                raise TransportError(f"QMP connection lost: {exc}") from exc
            if not chunk:
                raise TransportError("QMP connection closed (QEMU exited?)")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        msg: dict[str, Any] = json.loads(line)
        return msg

    def execute(self, command: str, **arguments: Any) -> Any:
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        try:
            self.sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as exc:
            # EPIPE when QEMU has just exited (the guest powered off): a lost connection like
            # any other.  Left as a BrokenPipeError, click would take it for a closed stdout
            # and exit 1 without a word.
            raise TransportError(f"QMP connection lost: {exc}") from exc
        while True:
            reply = self._read()
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise TransportError(f"QMP {command}: {reply['error'].get('desc', reply)}")
            return reply.get("return")

    def hmp(self, command_line: str) -> str:
        out: str = self.execute("human-monitor-command", **{"command-line": command_line})
        return out

    def outb(self, port: int, value: int, size: int = 1) -> None:
        """Write an I/O port from the monitor (QEMU's HMP `o`)."""
        text = self.hmp(f"o /{_WIDTH[size]} {port:#x} {value:#x}")
        if text.strip():
            raise TransportError(f"port write {port:#x} refused: {text.strip()}")

    def inb(self, port: int, size: int = 1) -> int:
        """Read an I/O port from the monitor (QEMU's HMP `i`)."""
        text = self.hmp(f"i /{_WIDTH[size]} {port:#x}")
        match = _PORT_VALUE.search(text)
        if match is None:
            raise TransportError(f"port read {port:#x}: unexpected monitor answer {text!r}")
        return int(match.group(1), 16)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


def _connect(path: str, timeout_s: float) -> socket.socket:
    deadline = time.monotonic() + timeout_s
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError as exc:
            sock.close()
            if time.monotonic() > deadline:
                raise TransportError(f"cannot connect to QMP socket {path}: {exc}") from exc
            time.sleep(0.05)
