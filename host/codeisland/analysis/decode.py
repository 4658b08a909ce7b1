"""One decoder pass per island with iced-x86: fix-up sites, internal targets, limits.

Speed matters (a 6 MB .text must analyse faster than `objdump -d` prints it): one `Decoder` per
code section is created once and repositioned for each island, one `Instruction` is reused
(`decode_out`), and the costly calls (constant offsets, mnemonic) run only for the few
instructions that branch or address memory relative to RIP.
"""

from __future__ import annotations

from bisect import bisect_left
from dataclasses import dataclass, field, replace

import iced_x86

from ..formats import Image, Section
from ..plan import layout as L
from . import model as M

FC = iced_x86.FlowControl
assert FC.NEXT == 0  # scan() tests `not fc`
_UNCOND = FC.UNCONDITIONAL_BRANCH
_COND = FC.CONDITIONAL_BRANCH
_CALL = FC.CALL
_XBEGIN = FC.XBEGIN_XABORT_XEND
_INDIRECT = FC.INDIRECT_BRANCH
_STOPS = {FC.RETURN, FC.INDIRECT_BRANCH, FC.INTERRUPT, FC.EXCEPTION}
_DIRECT = {_UNCOND, _COND, _CALL, _XBEGIN}
_LEA = iced_x86.Mnemonic.LEA
_OP_REGISTER = iced_x86.OpKind.REGISTER
_REG_NONE = iced_x86.Register.NONE
_INVALID = iced_x86.Code.INVALID
_EXCEPTION = FC.EXCEPTION
_NO_MORE_BYTES = iced_x86.DecoderError.NO_MORE_BYTES
# FixupSite(...) runs a Python-level __new__; tuple.__new__ builds the same named tuple in C
_site = tuple.__new__
_FX = M.FixupSite


@dataclass
class ScanExtras:
    """What one island's scan found that concerns other islands."""

    callsites: list[tuple[int, int, int]] = field(default_factory=list)  # (opcode addr, op, target)
    code_refs: list[int] = field(default_factory=list)  # lea rip-relative targets


class Scanner:
    """Decodes islands of one image; reuses one decoder per code section."""

    def __init__(self, image: Image, bias: int = 0) -> None:
        self.image = image
        self.bias = bias
        self._decoders: dict[int, tuple[iced_x86.Decoder, bytes, Section]] = {}
        self._ins = iced_x86.Instruction()
        self._last: tuple[iced_x86.Decoder, bytes, Section] | None = None
        self._code_end: dict[int, int] = {}
        self._sites = image.abs_pointer_sites
        # every reference of real code lands inside the image (sections, .bss included)
        self._lo = min(sec.addr for sec in image.sections)
        self._hi = max(sec.end for sec in image.sections)

    def _decoder(self, addr: int) -> tuple[iced_x86.Decoder, bytes, Section] | None:
        last = self._last
        if last is not None and addr in last[2]:
            return last
        for sec in self.image.code_sections:
            if addr in sec:
                got = self._decoders.get(sec.addr)
                if got is None:
                    data = bytes(self.image.section_bytes(sec))
                    got = (iced_x86.Decoder(64, data, ip=sec.addr), data, sec)
                    self._decoders[sec.addr] = got
                self._last = got
                return got
        return None

    def section_of(self, addr: int) -> Section | None:
        got = self._decoder(addr)
        return got[2] if got else None

    # -- recursive descent: bounds of a function nobody described ------------------------

    def descend(self, start: int, limit: int) -> int:
        """End of the code reachable from `start` by direct flow, staying below `limit`."""
        got = self._decoder(start)
        if got is None:
            return start
        dec, data, sec = got
        # never past the section's last non-zero byte: the zero fill that pads a section to
        # the file alignment decodes as `add [rax], al` and would swallow it whole
        code_end = self._code_end.get(sec.addr)
        if code_end is None:
            code_end = self._code_end[sec.addr] = sec.addr + len(data.rstrip(b"\0"))
        limit = min(limit, code_end, start + L.MAX_ISLAND_SIZE)
        ins, seen, todo, end = self._ins, set(), [start], start
        callees: list[int] = []
        while todo:
            addr = todo.pop()
            while start <= addr < limit and addr not in seen:
                seen.add(addr)
                dec.position, dec.ip = addr - sec.addr, addr
                dec.decode_out(ins)
                if ins.code == _INVALID or ins.next_ip > limit:
                    break
                end = max(end, ins.next_ip)
                fc = ins.flow_control
                if fc in (_COND, _XBEGIN, _UNCOND):
                    target = ins.near_branch_target
                    if start <= target < limit:
                        todo.append(target)
                    if fc == _UNCOND:
                        break
                elif fc in _STOPS:
                    break
                elif fc == _CALL:
                    callees.append(ins.near_branch_target)
                addr = ins.next_ip
        # a call into our own range is another function that linear flow ran into (after a
        # call that does not return, or padding that decodes): the function ends there
        inner = [t for t in callees if start < t < end]
        return min(inner) if inner else end

    # -- the island scan ----------------------------------------------------------------

    def scan(self, name: str, start: int, end: int, source: str) -> tuple[M.Island, ScanExtras]:
        """Decode [start, end) linearly (link addresses) and describe it as an island."""
        extras = ScanExtras()
        got = self._decoder(start)
        if got is None or end > got[2].end:
            return self._bad(name, start, end, source, M.PAST_END, "outside a code section"), extras
        _, data, sec = got
        # a decoder over exactly the island's bytes: iterating it is about twice as fast as
        # repositioning one big decoder, and an instruction running past the end shows up as
        # invalid with NO_MORE_BYTES
        dec = iced_x86.Decoder(64, data[start - sec.addr : end - sec.addr], ip=start)
        fixups: list[M.FixupSite] = []
        targets: set[int] = set()
        calls: set[int] = set()
        jumps: set[int] = set()
        reason, detail, count = None, "", 0
        indirect: list[int] = []  # offsets of indirect jumps (weighed after every other reason)
        for ins in dec:
            count += 1
            if ins.is_ip_rel_memory_operand:
                ip, target = ins.ip, ins.ip_rel_memory_address
                if not start <= target < end:
                    disp = dec.get_constant_offsets(ins).displacement_offset
                    fixups.append(
                        _site(_FX, (L.FIXUP_RIPREL32, ip - start + disp, ins.len - disp, target))
                    )
                if ins.mnemonic == _LEA:
                    extras.code_refs.append(target)
            fc = ins.flow_control
            if not fc:  # FlowControl.NEXT, four instructions in five
                continue
            if fc in _DIRECT:
                target = ins.near_branch_target
                if start <= target < end:
                    targets.add(target - start)
                    continue
                ip = ins.ip
                if target:
                    co = dec.get_constant_offsets(ins)
                    if co.immediate_size != 4:
                        reason = reason or M.SHORT_BRANCH_OUT
                        detail = detail or f"at +{ip - start:#x}"
                    else:
                        field_at = ip + co.immediate_offset
                        bias = ins.len - co.immediate_offset
                        fixups.append(_site(_FX, (L.FIXUP_REL32, field_at - start, bias, target)))
                        (calls if fc == _CALL else jumps).add(target)
                        opcode = data[field_at - 1 - sec.addr]
                        if opcode in (0xE8, 0xE9):
                            extras.callsites.append((field_at - 1, opcode, target))
            elif fc == _INDIRECT:
                ip = ins.ip
                if not ins.is_ip_rel_memory_operand and (
                    ins.op0_kind == _OP_REGISTER or ins.memory_index != _REG_NONE
                ):
                    indirect.append(ip - start)
            elif fc == _EXCEPTION and ins.code == _INVALID:
                ip = ins.ip
                past = dec.last_error == _NO_MORE_BYTES
                reason = M.PAST_END if past else M.UNDECODABLE
                detail = f"{'instruction ' if past else ''}at +{ip - start:#x}"
                break
        if reason is None:
            stray = next((f for f in fixups if not self._lo <= f.target < self._hi), None)
            if stray is not None:
                reason, detail = M.OUTSIDE_IMAGE, f"field at +{stray.offset:#x}"
        if reason is None and indirect:
            reason, detail = M.INDIRECT_JUMP, f"at +{indirect[0]:#x}"
        absolute = self._abs_fixups(start, end)
        if absolute:  # the decoded fix-ups are already in offset order
            fixups.extend(absolute)
            fixups.sort(key=lambda f: f.offset)
        isl = M.Island(
            name=name,
            start=start,
            size=end - start,
            source=source,
            instructions=count,
            fixups=tuple(fixups),
            targets=tuple(sorted(targets)),
            calls=tuple(sorted(calls)),
            jumps_out=tuple(sorted(jumps)),
            reason=reason,
            detail=detail,
            members=(name,),
            indirect_jumps=len(indirect),
            entry_insn_len=_first_insn_len(data, start - sec.addr, end - start, start),
            entry_nops=_leading_nops(data, start - sec.addr, end - start),
        )
        return _entry_limits(isl), extras

    def after_endbr(self, isl: M.Island) -> M.Island:
        """The island without the endbr64 it starts with, if it does.

        The marker stays where it is, outside the island: indirect calls still land on it and
        fall into the entry patch, and the patch goes where the body (or clang's patchable NOP
        after the endbr64) starts, so it can replace exactly one instruction."""
        if isl.size < M.ENDBR64_LEN + L.ENTRY_REL32_LEN:
            return isl
        got = self._decoder(isl.start)
        if got is None or got[1][isl.start - got[2].addr :][: M.ENDBR64_LEN] != M.ENDBR64:
            return isl
        body, _ = self.scan(isl.name, isl.start + M.ENDBR64_LEN, isl.end, isl.source)
        return replace(body, endbr=True, members=isl.members)

    def _abs_fixups(self, start: int, end: int) -> list[M.FixupSite]:
        """ABS64 fix-ups: relocated 8-byte pointers inside the island that point into it."""
        out = []
        values = self.image.abs_pointers
        sites = self._sites
        for i in range(bisect_left(sites, start), len(sites)):
            site = sites[i]
            if site + 8 > end:
                break
            value = values[site]
            if start <= value < end:
                out.append(M.FixupSite(L.FIXUP_ABS64, site - start, 0, value))
        return out

    @staticmethod
    def _bad(name: str, start: int, end: int, source: str, reason: str, detail: str) -> M.Island:
        return M.Island(
            name, start, end - start, source, reason=reason, detail=detail, members=(name,)
        )


def _first_insn_len(data: bytes, offset: int, size: int, ip: int) -> int:
    """Length of the island's first instruction (0 when it does not decode inside the island)."""
    ins = iced_x86.Decoder(64, data[offset : offset + min(size, 15)], ip=ip).decode()
    return 0 if ins.code == _INVALID else ins.len


def _leading_nops(data: bytes, offset: int, size: int) -> int:
    """One-byte NOPs (0x90) at the island start, up to the entry patch's length."""
    n = 0
    while n < min(size, L.ENTRY_ABS64_LEN) and data[offset + n] == 0x90:
        n += 1
    return n


def _entry_limits(isl: M.Island) -> M.Island:
    """Limits that depend on the whole island: size and the entry patch window."""
    if isl.reason is not None:
        return isl
    if isl.size < L.ENTRY_REL32_LEN:
        return replace(isl, reason=M.TOO_SMALL, detail=f"{isl.size} bytes")
    if isl.size > L.MAX_ISLAND_SIZE:
        return replace(isl, reason=M.TOO_LARGE, detail=f"{isl.size} bytes")
    inside = [t for t in isl.targets if 0 < t < L.ENTRY_REL32_LEN]
    if inside:
        return replace(isl, reason=M.TARGET_IN_ENTRY, detail=f"target at +{inside[0]:#x}")
    return isl
