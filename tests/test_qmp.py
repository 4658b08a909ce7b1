"""The QMP client against a fake QEMU on a UNIX socket: a monitor that goes away while a
command is sent (QEMU exiting as the guest powers off) is a TransportError, never a bare
BrokenPipeError (click turns that into a silent exit 1)."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest

from codeisland.errors import TransportError
from codeisland.hw.qmp import Qmp


def _fake_qemu(path: Path, ready: threading.Event) -> threading.Thread:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)
    ready.set()

    def serve() -> None:
        conn, _ = server.accept()
        conn.sendall(b'{"QMP": {"version": {}}}\n')
        conn.recv(4096)  # qmp_capabilities
        conn.sendall(b'{"return": {}}\n')
        conn.close()  # QEMU exits
        server.close()

    t = threading.Thread(target=serve)
    t.start()
    return t


def test_a_monitor_that_exited_is_a_transport_error(tmp_path: Path) -> None:
    ready = threading.Event()
    t = _fake_qemu(tmp_path / "qmp.sock", ready)
    ready.wait(5)
    q = Qmp(str(tmp_path / "qmp.sock"), timeout_s=5)
    t.join(5)
    with pytest.raises(TransportError, match="QMP connection"):
        for _ in range(50):  # the first send may still be buffered; a later one gets EPIPE
            q.execute("query-status")
    q.close()


def test_a_broken_pipe_inside_a_command_is_one_error_line(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys
    import types

    import click

    from codeisland import cli

    @click.command()
    def broken() -> None:
        raise BrokenPipeError(32, "Broken pipe")

    module = types.ModuleType("codeisland.cli.broken")
    module.command = broken  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "codeisland.cli.broken", module)
    monkeypatch.setitem(cli.COMMANDS, "broken", ("broken", "raises EPIPE"))
    monkeypatch.setattr(cli, "_stdout_closed", lambda: False)
    assert cli.run(["broken"]) == 1
    assert capsys.readouterr().err.strip() == (
        "codeisland: error: a connection was lost: [Errno 32] Broken pipe"
    )
