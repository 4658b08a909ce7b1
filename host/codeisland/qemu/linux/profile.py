"""Record a profile from a running Linux guest: SAMPLE SMIs while our agent's workload runs.

The guest is one started by `codeisland qemu run --guest linux --workdir DIR`, reached through
chipsec (its machine.json).  The agent's control block says which workload runs and where
(`blob_va`); its islands are the analysis of that workload's ELF at that address.  A window is
`samples` SAMPLE SMIs `interval_s` apart (each SMI samples every CPU); a sample counts for the
workload only when it is user mode (CPL 3) in the workload's address space (CR3, first learned
from a sample inside the arena mapping), and the driver's address map (STATS) folds samples in
relocated copies back onto their islands.  Kernel and other processes' samples are counted as
unattributed.
"""

from __future__ import annotations

import time
from typing import Any

from tqdm import tqdm

from ...analysis import analyze
from ...errors import EmulationError
from ...hw.transport import ChipsecTransport
from ...plan import layout as L
from ...profile.attribution import IslandIndex, attribute
from ...profile.format import Profile, ProfiledIsland, Window
from ...relocation import Relocator
from ...transport.mailbox import MailboxClient
from .. import session
from . import agent


def record_guest(
    t: ChipsecTransport, windows: int = 8, samples: int = 16, interval_s: float = 0.05
) -> Profile:
    d = t.discover()
    ctl = agent.Agent(t, int(d.config.arena_base)).control()
    name = ctl.workload.decode(errors="replace")
    imap = analyze(session.workload_elf(name), load_base=int(ctl.blob_va))
    islands = [ProfiledIsland(k + 1, i.name, i.start, i.size) for k, i in enumerate(imap)]
    index = IslandIndex(islands)
    rel = Relocator(MailboxClient(t, timeout_s=20))
    lo, hi = int(ctl.arena_va), int(ctl.arena_va + ctl.arena_size)
    cr3: int | None = None
    cpus = 0
    profile = Profile(islands, [], 0, _source(name, ctl, d.method))
    for w in tqdm(range(windows), desc="profile windows", leave=False, disable=None):
        taken: list[L.Sample] = []
        for _ in range(samples):
            taken += rel.sample()
            time.sleep(interval_s)
        cpus = max(cpus, len({s.cpu for s in taken}))
        if cr3 is None:
            inside = [s for s in taken if s.cpl == 3 and lo <= s.rip < hi]
            cr3 = int(inside[0].cr3) & L.CR3_ADDR_MASK if inside else None
        ours = [s for s in taken if s.cpl == 3 and cr3 is not None and _space(s) == cr3]
        counts, outside = attribute([s.rip for s in ours], index, rel.address_map())
        profile.windows.append(
            Window(
                index=w,
                time_of_day=int(time.time()) % 86400,
                input_events=0,
                runnable_threads=int(ctl.threads),
                busy_cpus=len({s.cpu for s in ours}),
                cpus=cpus,
                samples=[int(x) for x in counts],
                unattributed=outside + len(taken) - len(ours),
            )
        )
    if cr3 is None:
        raise EmulationError("no sample landed in the agent's workload: is it running?")
    profile.source["cr3"] = cr3
    return profile


def _space(s: L.Sample) -> int:
    return int(s.cr3) & L.CR3_ADDR_MASK


def _source(workload: str, ctl: agent.AgentControl, discovery: str) -> dict[str, Any]:
    return {
        "kind": "qemu-linux",
        "workload": workload,
        "threads": int(ctl.threads),
        "pid": int(ctl.pid),
        "arena_va": int(ctl.arena_va),
        "discovery": discovery,
    }
