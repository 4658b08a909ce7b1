"""The driver's relocation protocol, driven in one place for every host.

    STAGE plan --> STAGING --STAGE ""--> ... --> STAGED --COMMIT--> COMMITTED
                                                   \\--ROLLBACK (of a generation)--> undone

`Relocator` sends every request through the `MailboxClient` of the host's `Transport` and
keeps a per-SMI report (`SmiReport`: command, status, bytes, contexts, handler instructions
where the transport can count them).  One no-progress guard: a STAGE that leaves the plan
STAGING without completing one more chunk is an error, whatever the budget.  One retry
policy (`RetryPolicy`): a commit the host does not accept (e.g. no saved context was inside
the islands) is rolled back with the host's guest quiesced, and the plan (or the host's new
plan, from its `replan` hook) is staged and committed again, up to `attempts` times.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import DriverRejected, EmulationError
from ..plan import layout as L
from ..transport.mailbox import MailboxClient, Reply
from .reclaim import ReclaimReport

WAIT_SAMPLES = 40  # SAMPLE SMIs a commit waits at most for a CPU inside the islands it moves


@dataclass
class SmiReport:
    """What one SMI did, as the driver answered it."""

    smi: int
    command: str
    status: str
    handler_instructions: int | None
    bytes_written: int
    contexts_translated: int
    returns_translated: int = 0


@dataclass
class StageOutcome:
    """A plan staged over one or more SMIs."""

    smis: int = 0
    bytes_written: int = 0
    fixups_applied: int = 0
    chunks_total: int = 0


@dataclass
class CommitOutcome:
    """What the accepted COMMIT did (and how many stage/commit attempts it took)."""

    result: L.Result
    stage: StageOutcome
    attempts: int = 1


def _status_name(status: int) -> str:
    try:
        return L.Status(status).name
    except ValueError:
        return str(status)


@dataclass
class RetryPolicy:
    """Commit again when `accept(result)` says no, at most `attempts` times in all; before the
    rollback `quiesce()` parks the guest (nothing runs in the copies, so no return address
    points into them), after it `resume()` lets it run on.  `replan(attempt)` gives the plan
    for attempt 2, 3, ... (e.g. placed around the copies the rollback retired); without it
    the same plan is staged again.  `before_commit()` runs between STAGED and COMMIT (e.g. wait
    for a sample that finds a thread inside the islands, so that the commit has one to move)."""

    attempts: int = 1
    accept: Callable[[L.Result], bool] = lambda _r: True
    quiesce: Callable[[], None] = lambda: None
    resume: Callable[[], None] = lambda: None
    replan: Callable[[int], bytes] | None = None
    before_commit: Callable[[], None] = lambda: None


@dataclass
class Relocator:
    """STAGE / COMMIT / ROLLBACK / SAMPLE / STATS / RECLAIM through one mailbox, reported per
    SMI."""

    client: MailboxClient
    stage_budget: int = 0  # bytes the driver stages per SMI (0: its default)
    smis: list[SmiReport] = field(default_factory=list)
    sample_head: int = 0
    _chunks_done: int = 0

    def __post_init__(self) -> None:
        self.sample_head = self.client.sample_head()

    # -- one request, one report ---------------------------------------------------------

    def _request(self, name: str, send: Callable[[], Reply]) -> Reply:
        reply = send()
        r = reply.result
        measured = self.client.transport.last_smi_measure()
        number, insns = measured if measured is not None else (int(r.smi), None)
        self.smis.append(
            SmiReport(number, name, _status_name(r.status), insns, int(r.bytes_written),
                      int(r.contexts_translated), int(r.returns_translated))
        )  # fmt: skip
        return reply

    # -- staging -------------------------------------------------------------------------

    def begin_stage(self, plan: bytes) -> L.Result:
        """Hand the driver a plan and stage what one SMI's budget allows."""
        if self.stage_budget:
            self.client.set_stage_budget(self.stage_budget)
        self._chunks_done = 0
        return self._staged(self._request("STAGE", lambda: self.client.stage(plan)).result)

    def continue_stage(self) -> L.Result:
        """Stage the pending plan's next chunks (one SMI)."""
        return self._staged(self._request("STAGE", lambda: self.client.stage(b"")).result)

    def _staged(self, r: L.Result) -> L.Result:
        if r.state not in (L.STATE_STAGED, L.STATE_STAGING):
            raise EmulationError(f"STAGE left the plan in state {r.state}")
        if r.state == L.STATE_STAGING and int(r.chunks_done) <= self._chunks_done:
            raise EmulationError(
                f"staging makes no progress: {r.chunks_done} of {r.chunks_total} chunks "
                "after another SMI"
            )
        self._chunks_done = int(r.chunks_done)
        return r

    def stage(self, plan: bytes) -> StageOutcome:
        """STAGE until the driver reports the plan STAGED."""
        r = self.begin_stage(plan)
        out = StageOutcome(1, int(r.bytes_written), int(r.fixups_applied), int(r.chunks_total))
        while r.state != L.STATE_STAGED:
            r = self.continue_stage()
            out.smis += 1
            out.bytes_written += int(r.bytes_written)
            out.fixups_applied += int(r.fixups_applied)
        return out

    # -- commit, rollback ----------------------------------------------------------------

    def commit(self, plan: bytes = b"") -> L.Result:
        """COMMIT the staged plan (or stage and commit `plan` in one SMI)."""
        return self._request("COMMIT", lambda: self.client.commit(plan)).result

    def apply(self, plan: bytes, retry: RetryPolicy | None = None) -> CommitOutcome:
        """Stage `plan`, commit it, and retry by `retry` until the host accepts the commit."""
        policy = retry or RetryPolicy()
        for attempt in range(1, policy.attempts + 1):
            if attempt > 1 and policy.replan is not None:
                plan = policy.replan(attempt)
            staged = self.stage(plan)
            policy.before_commit()
            result = self.commit()
            if policy.accept(result) or attempt == policy.attempts:
                return CommitOutcome(result, staged, attempt)
            policy.quiesce()
            self.rollback(0)
            policy.resume()
        raise AssertionError("unreachable: the last attempt returns")

    def rollback(self, generation: int = 0) -> L.Result:
        """Undo `generation` and every later one (0: the latest)."""
        return self._request("ROLLBACK", lambda: self.client.rollback(generation)).result

    def reclaim(self) -> ReclaimReport:
        """Free the retired copies nothing refers to any more (relocation.reclaim)."""
        return ReclaimReport.from_reply(self._request("RECLAIM", self.client.reclaim))

    # -- observation ---------------------------------------------------------------------

    def sample(self) -> list[L.Sample]:
        """A SAMPLE SMI; returns the samples written since the last call."""
        self._request("SAMPLE", self.client.sample)
        got, self.sample_head = self.client.samples_since(self.sample_head)
        return got

    def sample_until(self, hit: Callable[[L.Sample], bool], smis: int = WAIT_SAMPLES) -> bool:
        """SAMPLE (at most `smis` SMIs) until a sample satisfies `hit`, e.g. a CPU inside the
        staged islands: the COMMIT sent right after is then likely to find it there and move
        its RIP (a guest's phases last longer than an SMI round trip)."""
        return any(any(hit(s) for s in self.sample()) for _ in range(smis))

    def skip_samples(self) -> None:
        """Forget the samples written so far: the next sample() returns only newer ones."""
        self.sample_head = self.client.sample_head()

    def address_map(self) -> list[L.MapEntry]:
        """The driver's address map (STATS): every copy it holds, by generation."""
        return list(self._request("STATS", self.client.stats).map_entries)

    def query(self) -> Reply:
        return self._request("QUERY", self.client.query)

    def since(self, mark: int) -> list[SmiReport]:
        """The SMIs reported after `mark` = len(self.smis) at some earlier point."""
        return self.smis[mark:]

    def report(self) -> list[dict[str, Any]]:
        return [s.__dict__ for s in self.smis]


def rejected_status(exc: DriverRejected) -> str:
    return _status_name(exc.status)
