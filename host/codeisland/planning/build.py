"""Turn chosen moves (island -> destination) into a `Plan` the engine accepts.

This is the last, mechanical step of planning: every record is derived from the analysed island
and the engine semantics in codeisland.plan.apply, so a plan built here passes the engine's
validation by construction (and `relocated_bytes` already raises the PlanError the engine would
answer with FIXUP_RANGE / FIXUP_MISMATCH).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import pairwise

from ..analysis import Island, IslandMap
from ..errors import PlanError
from ..plan import layout as L
from ..plan.apply import make_chunks, relocated_bytes
from ..plan.document import Plan
from .redirect import CALL_SITES, outside_callsites, redirect

ReadBytes = Callable[[int, int], bytes]
_S32 = (-(1 << 31), (1 << 31) - 1)
ENTRY_KINDS = {"auto", "rel32", "abs64", "none"}


def _fits_rel32(value: int) -> bool:
    return _S32[0] <= value <= _S32[1]


def entry_kind(island: Island, dst: int, requested: str = "auto") -> int:
    """The entry patch for moving `island` to `dst`: REL32 when it reaches, else ABS64.

    The patch must not cover an internal branch target (offset 0 is the entry itself)."""
    if requested not in ENTRY_KINDS:
        raise PlanError(f"entry kind {requested!r} is not one of {sorted(ENTRY_KINDS)}")
    if requested == "none":
        return L.ISLAND_ENTRY_NONE
    rel_ok = _fits_rel32(dst - (island.start + L.ENTRY_REL32_LEN))
    if requested in ("auto", "rel32") and rel_ok and _window_clear(island, L.ENTRY_REL32_LEN):
        return L.ISLAND_ENTRY_REL32
    if requested == "rel32":
        raise PlanError(f"island {island.name}: a rel32 entry jump cannot reach {dst:#x}")
    if _window_clear(island, L.ENTRY_ABS64_LEN):
        return L.ISLAND_ENTRY_ABS64
    raise PlanError(
        f"island {island.name}: no entry patch fits (size {island.size}, "
        f"targets {[hex(t) for t in island.targets if t < L.ENTRY_ABS64_LEN]})"
    )


def _window_clear(island: Island, length: int) -> bool:
    return island.size >= length and not any(0 < t < length for t in island.targets)


def _check_ranges(moves: list[tuple[Island, int]]) -> None:
    spans = sorted(
        [(i.start, i.end, f"source of {i.name}") for i, _ in moves]
        + [(d, d + i.size, f"destination of {i.name}") for i, d in moves]
    )
    for (s0, e0, w0), (s1, _e1, w1) in pairwise(spans):
        if s1 < e0:
            raise PlanError(f"{w0} [{s0:#x}, {e0:#x}) overlaps {w1} at {s1:#x}")


def build_plan(
    imap: IslandMap,
    moves: Sequence[tuple[Island | str, int]],
    *,
    plan_id: int = 1,
    chunk_size: int = 1024,
    entry: str = "auto",
    stack_slots: int = 0,
    callsites: bool = False,
    read_bytes: ReadBytes | None = None,
    keep_copies: bool = True,
    parked_threads: bool = True,
    frozen: Sequence[tuple[int, int]] = (),
) -> Plan:
    """Build a plan moving each island to its destination (addresses in imap's space).

    read_bytes(addr, size) gives the island's current bytes (default: the image as a loader at
    imap.load_base leaves it); pass the live memory reader of the target when it may differ.
    stack_slots > 0 adds return-address translation over that many 8-byte stack slots.
    callsites=True also re-points direct E8/E9 calls from code outside the moved islands.
    keep_copies (the default) sets PLAN_KEEP_COPIES: a ROLLBACK leaves the copies in place
    (retired) so return addresses into them stay valid; False restores every byte.
    parked_threads (the default) assumes threads may be parked by a scheduler, off every CPU,
    during the SMI: an island then gets an entry jump only where it replaces exactly one
    instruction, else its direct call sites are re-pointed (planning.redirect), and an island
    with neither is refused (PlanError naming it).
    frozen: [start, end) ranges no call site in them is re-pointed -- the originals of islands
    a live generation moved, whose bytes the engine keeps as its undo log has them (it refuses
    such a site: CALLSITE_IN_ISLAND).
    """
    if not moves:
        raise PlanError("nothing to move: the plan would be empty")
    if len(moves) > L.MAX_ISLANDS:
        raise PlanError(f"{len(moves)} islands to move, a plan holds at most {L.MAX_ISLANDS}")
    if not 0 <= stack_slots <= L.MAX_STACK_SLOTS:
        raise PlanError(f"stack window {stack_slots} is outside 0..{L.MAX_STACK_SLOTS}")
    resolved = [(imap[m] if isinstance(m, str) else m, int(dst)) for m, dst in moves]
    for isl, _ in resolved:
        if not isl.relocatable:
            raise PlanError(f"island {isl.name} cannot move: {isl.reason} ({isl.detail})")
    _check_ranges(resolved)
    for isl, dst in resolved:
        live = imap.island_at(dst) or imap.island_at(dst + isl.size - 1)
        if live is not None:
            raise PlanError(f"destination of {isl.name} at {dst:#x} overlaps live code {live.name}")
    read = read_bytes or imap.read
    ids = {isl.start: n for n, isl in enumerate(imap.islands)}
    plan = Plan(plan_id=plan_id)
    plan.keep_copies = keep_copies
    by_callsites: set[int] = set()
    for index, (isl, dst) in enumerate(resolved):
        kind = entry_kind(isl, dst, entry)
        patch = {L.ISLAND_ENTRY_REL32: L.ENTRY_REL32_LEN, L.ISLAND_ENTRY_ABS64: L.ENTRY_ABS64_LEN}
        if kind != L.ISLAND_ENTRY_NONE:
            how = redirect(imap, isl, parked_threads=parked_threads, patch=patch[kind])
            if not how.moves:
                raise PlanError(f"island {isl.name} {how.describe()}")
            if how.method == CALL_SITES:
                kind = L.ISLAND_ENTRY_NONE
                by_callsites.add(index)
        _add_island(plan, index, isl, dst, ids.get(isl.start, index), read, chunk_size, kind)
        rule = L.Rule()
        rule.island = index
        rule.flags = L.RULE_TRANSLATE_RIP | (L.RULE_TRANSLATE_RETURN if stack_slots else 0)
        rule.stack_slots = stack_slots
        plan.rules.append(rule)
    _add_targets(plan, resolved)
    _add_callsites(plan, imap, resolved, None if callsites else by_callsites, frozen)
    plan.to_bytes()  # raises PlanError past a fixed maximum, before anyone sends it
    return plan


def _add_island(
    plan: Plan,
    index: int,
    isl: Island,
    dst: int,
    host_id: int,
    read: ReadBytes,
    chunk_size: int,
    kind: int,
) -> None:
    original = read(isl.start, isl.size)
    if len(original) != isl.size:
        raise PlanError(f"island {isl.name}: read {len(original)} bytes, expected {isl.size}")
    fixups = isl.fixup_records(index)
    final = relocated_bytes(original, isl.start, dst, fixups)
    rec = L.Island()
    rec.src = isl.start
    rec.dst = dst
    rec.size = isl.size
    rec.id = host_id
    rec.flags = kind
    plan.islands.append(rec)
    plan.fixups.extend(fixups)
    plan.chunks.extend(make_chunks(index, final, chunk_size))


def _add_targets(plan: Plan, moves: list[tuple[Island, int]]) -> None:
    """All internal targets when they fit the table, else those under the largest entry patch
    (the ones the engine's ENTRY_COVERS_TARGET check needs)."""
    total = sum(len(isl.targets) for isl, _ in moves)
    for index, (isl, _) in enumerate(moves):
        for off in isl.targets:
            if total <= L.MAX_TARGETS or off < L.ENTRY_ABS64_LEN:
                rec = L.Target()
                rec.island = index
                rec.offset = off
                plan.targets.append(rec)


def _add_callsites(
    plan: Plan,
    imap: IslandMap,
    moves: list[tuple[Island, int]],
    only: set[int] | None,
    frozen: Sequence[tuple[int, int]] = (),
) -> None:
    """Re-point direct calls into the moved islands (only those indexed by `only`, if given),
    none inside a `frozen` range."""
    for index, (isl, dst) in enumerate(moves):
        if only is not None and index not in only:
            continue
        for site, opcode in sorted(outside_callsites(imap, isl)):
            if any(site < i.end and i.start < site + 5 for i, _ in moves):
                continue  # inside a moved island: the copy's own fix-up handles it
            if any(site < hi and lo < site + 5 for lo, hi in frozen):
                continue  # in a live generation's original: its bytes stay as undo has them
            if not _fits_rel32(dst - (site + 5)) or len(plan.callsites) >= L.MAX_CALLSITES:
                continue
            rec = L.Callsite()
            rec.insn = site
            rec.island = index
            rec.opcode = opcode
            plan.callsites.append(rec)
