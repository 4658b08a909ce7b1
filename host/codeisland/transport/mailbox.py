"""Talk to the SMM driver through its mailbox (layout in smm/include/codeisland/plan.h)."""

from __future__ import annotations

import ctypes
import struct
import time
from dataclasses import dataclass, field
from typing import Any

from ..errors import DriverRejected, TransportError
from ..plan import layout as L
from .base import Transport

_RESULT_SIZE = ctypes.sizeof(L.Result)
_FIELD = {name: getattr(L.Mailbox, name) for name, *_ in L.Mailbox._fields_}


def smm_memory_mode(firmware_flags: int) -> str:
    """What the driver says about PcdCpuSmmRestrictedMemoryAccess: 'restricted', 'unrestricted'
    (a test board's firmware) or 'unknown' (the driver was not built with the platform)."""
    if not firmware_flags & L.FIRMWARE_BUILD_KNOWN:
        return "unknown"
    return "unrestricted" if firmware_flags & L.FIRMWARE_SMM_UNRESTRICTED else "restricted"


@dataclass
class Reply:
    """One answered request: the common result plus the command's tail."""

    result: L.Result
    info: L.QueryInfo | None = None
    regions: list[L.RegionInfo] = field(default_factory=list)
    map_entries: list[L.MapEntry] = field(default_factory=list)
    reclaim: L.ReclaimInfo | None = None  # RECLAIM: totals, then one verdict per retired copy
    reclaim_entries: list[L.ReclaimEntry] = field(default_factory=list)

    @property
    def status(self) -> L.Status | int:
        try:
            return L.Status(self.result.status)
        except ValueError:
            return int(self.result.status)

    @property
    def ok(self) -> bool:
        return self.result.status == L.Status.OK

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"result": self.result.as_dict()}
        out["result"]["status_text"] = L.status_text(self.result.status)
        if self.info is not None:
            out["info"] = self.info.as_dict()
        if self.regions:
            out["regions"] = [r.as_dict() for r in self.regions]
        if self.map_entries:
            out["map"] = [m.as_dict() for m in self.map_entries]
        if self.reclaim is not None:
            out["reclaim"] = self.reclaim.as_dict()
            out["reclaim_entries"] = [e.as_dict() for e in self.reclaim_entries]
        return out


class MailboxClient:
    """Requests to the driver: QUERY, STAGE, COMMIT, ROLLBACK, SAMPLE, STATS, RECLAIM."""

    def __init__(self, transport: Transport, timeout_s: float = 30.0) -> None:
        self.transport = transport
        self.timeout_s = timeout_s
        self.base = transport.locate_mailbox()
        self.header = L.Mailbox.from_bytes(transport.read_phys(self.base, ctypes.sizeof(L.Mailbox)))
        if self.header.signature != L.MAILBOX_SIGNATURE:
            raise TransportError(
                f"no codeisland mailbox at {self.base:#x} (signature {self.header.signature:#x})"
            )
        if self.header.version != L.MAILBOX_VERSION:
            raise TransportError(f"mailbox version {self.header.version} is not supported")

    # -- low level ------------------------------------------------------------------

    def _read_u32(self, name: str) -> int:
        f = _FIELD[name]
        return int.from_bytes(self.transport.read_phys(self.base + f.offset, 4), "little")

    def _write_u32(self, name: str, value: int) -> None:
        f = _FIELD[name]
        self.transport.write_phys(self.base + f.offset, struct.pack("<I", value & 0xFFFFFFFF))

    def request(self, command: int, payload: bytes = b"", *, check: bool = True) -> Reply:
        """Send one request and wait for its answer; DriverRejected on a non-OK status."""
        if len(payload) > self.header.request_max:
            raise TransportError(
                f"request of {len(payload)} bytes exceeds the mailbox's {self.header.request_max}"
            )
        if payload:
            self.transport.write_phys(self.base + self.header.request_offset, payload)
        sequence = (self._read_u32("sequence") + 1) & 0xFFFFFFFF
        self._write_u32("command", command)
        self._write_u32("request_size", len(payload))
        self._write_u32("sequence", sequence)
        self.transport.raise_sw_smi(self.header.sw_smi_value, command & 0xFF)
        deadline = time.monotonic() + self.timeout_s
        while self._read_u32("done_sequence") != sequence:
            if time.monotonic() > deadline:
                raise TransportError(
                    f"the driver did not answer command {command} within {self.timeout_s:.0f} s"
                )
            self.transport.wait()
        reply = self._read_reply()
        if check and not reply.ok:
            raise DriverRejected(
                reply.result.status,
                f"driver rejected {L.Command(command).name}: {L.status_text(reply.result.status)}"
                + (
                    f" (record {reply.result.failed_index})"
                    if reply.result.failed_index != L.NO_INDEX
                    else ""
                ),
            )
        return reply

    def _read_reply(self) -> Reply:
        size = self._read_u32("response_size")
        if not _RESULT_SIZE <= size <= self.header.response_max:
            raise TransportError(f"driver wrote a response of {size} bytes")
        raw = self.transport.read_phys(self.base + self.header.response_offset, size)
        reply = Reply(result=L.Result.from_bytes(raw))
        tail = raw[_RESULT_SIZE:]
        if reply.result.command == L.Command.QUERY and len(tail) >= ctypes.sizeof(L.QueryInfo):
            reply.info = L.QueryInfo.from_bytes(tail)
            reply.regions = _records(
                tail[ctypes.sizeof(L.QueryInfo) :], L.RegionInfo, reply.info.region_count
            )
        elif reply.result.command == L.Command.STATS:
            reply.map_entries = _records(tail, L.MapEntry, reply.result.map_count)
        elif reply.result.command == L.Command.RECLAIM and len(tail) >= ctypes.sizeof(
            L.ReclaimInfo
        ):
            reply.reclaim = L.ReclaimInfo.from_bytes(tail)
            reply.reclaim_entries = _records(
                tail[ctypes.sizeof(L.ReclaimInfo) :], L.ReclaimEntry, reply.reclaim.considered
            )
        return reply

    # -- commands -------------------------------------------------------------------

    def query(self) -> Reply:
        return self.request(L.Command.QUERY)

    def stage(self, plan: bytes = b"", *, check: bool = True) -> Reply:
        return self.request(L.Command.STAGE, plan, check=check)

    def commit(self, plan: bytes = b"", *, check: bool = True) -> Reply:
        return self.request(L.Command.COMMIT, plan, check=check)

    def rollback(self, generation: int = 0, *, check: bool = True) -> Reply:
        return self.request(L.Command.ROLLBACK, struct.pack("<I", generation), check=check)

    def sample(self) -> Reply:
        return self.request(L.Command.SAMPLE)

    def stats(self) -> Reply:
        return self.request(L.Command.STATS)

    def reclaim(self, *, check: bool = True) -> Reply:
        return self.request(L.Command.RECLAIM, check=check)

    def set_stage_budget(self, budget: int) -> None:
        self._write_u32("stage_budget", budget)

    def sample_head(self) -> int:
        """Samples the driver has ever written (ring position; pass it to samples_since)."""
        return self._read_u32("sample_head")

    def smi_count(self) -> int:
        """SMIs the driver has handled since boot."""
        return self._read_u32("smi_count")

    def samples_since(self, head: int) -> tuple[list[L.Sample], int]:
        """Samples written after ring position `head`; returns them and the new head."""
        new_head = self.sample_head()
        cap = self.header.sample_capacity
        count = min((new_head - head) & 0xFFFFFFFF, cap)
        size = ctypes.sizeof(L.Sample)
        out = []
        for i in range(new_head - count, new_head):
            slot = i % cap
            raw = self.transport.read_phys(
                self.base + self.header.sample_offset + slot * size, size
            )
            out.append(L.Sample.from_bytes(raw))
        return out, new_head


def _records(raw: bytes, rtype: type, count: int) -> list:  # type: ignore[type-arg]
    size = ctypes.sizeof(rtype)
    if count * size > len(raw):
        raise TransportError(f"driver response is truncated: {count} records do not fit")
    return [rtype.from_bytes(raw, i * size) for i in range(count)]
