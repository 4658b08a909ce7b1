"""Record a profile from an emulated run (smmemu): the real driver, a workload, N CPUs.

Per window of `window_instructions` guest instructions:
  - SAMPLE SMIs every `sample_every` instructions (every CPU's saved RIP, as on a board) plus
    the emulator's slice-boundary samples, attributed to original islands through the driver's
    address map (STATS);
  - exact per-island block counts and data accesses from the native hook (fetchtrace), ground
    truth, and the hook's front-end model running on the same fetch stream;
  - context: the emulated RTC's time of day (smmemu.devices.CmosRtc, one window = one emulated
    hour from midnight), input events (smmemu.devices.InputEvents, seeded bursts), runnable
    threads, busy CPUs.
Islands are the workload's functions, where the guest placed them in the driver's arena.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from tqdm import tqdm

from ..errors import EmulationError
from ..frontend.params import FrontendParams
from ..plan import layout as L
from ..profile.attribution import IslandIndex, attribute
from ..profile.format import DAY_SECONDS, Profile, ProfiledIsland, Window

WINDOW_SECONDS = 3600
MIN_MOVABLE_SIZE = 16  # smaller functions are not worth an entry jump (loop/emulated.py too)

if TYPE_CHECKING:
    from smmemu.devices import CmosRtc, InputEvents


class EmulatedInputs:
    """Drives the emulated board's RTC and input-event devices (smmemu.devices) per window:
    the clock reads one emulated hour per window from midnight, and a window gets a seeded
    burst of input events with probability 0.2 (undelivered ones are dropped at the next)."""

    def __init__(
        self, seed: int, rtc: CmosRtc | None = None, events: InputEvents | None = None
    ) -> None:
        from smmemu.devices import CmosRtc, InputEvents

        self.rng = random.Random(seed)
        self.rtc = rtc if rtc is not None else CmosRtc()
        self.events = events if events is not None else InputEvents()

    @classmethod
    def on(cls, machine: Any, seed: int) -> EmulatedInputs:
        """Drive the devices of an smmemu Machine."""
        return cls(seed, machine.rtc, machine.input_events)

    @property
    def time_of_day(self) -> int:
        return self.rtc.time_of_day

    @property
    def delivered(self) -> int:
        return self.events.delivered

    @property
    def pending(self) -> int:
        return self.events.pending

    def new_window(self, index: int) -> None:
        self.rtc.set_time((index * WINDOW_SECONDS) % DAY_SECONDS)
        burst = self.rng.randrange(40, 120) if self.rng.random() < 0.2 else 0
        self.events.clear()
        self.events.push(1, burst)


def record_emulated(
    workload: str,
    *,
    cpus: int = 2,
    threads: int = 2,
    windows: int = 8,
    window_instructions: int = 400_000,
    sample_every: int = 20_000,
    seed: int = 1,
    params: FrontendParams | None = None,
) -> Profile:
    from smmemu.workload import load_workload

    from ..frontend.fetchtrace import FetchLibraryMissing, FetchModel, FetchModelError
    from .session import boot

    s = boot(cpus=cpus)
    image = load_workload(workload)
    guest = s.guest(image, threads)
    guest.sample_slices = True
    islands = _islands(image, guest)
    index = IslandIndex(islands)
    inputs = EmulatedInputs.on(s.machine, seed)
    try:
        model = FetchModel((params or FrontendParams()).native())
        model.set_ranges([i.start for i in islands], [i.start + i.size for i in islands],
                         list(range(len(islands))))  # fmt: skip
        model.attach(s.machine.uc, data_accesses=True)
    except FetchLibraryMissing:
        raise  # not an emulation stop: a missing build, said as such
    except FetchModelError as exc:
        raise EmulationError(str(exc)) from None
    jitter = random.Random(seed)
    rel = s.relocator
    ring: list[L.Sample] = []  # the driver's samples of the current window
    profile = Profile(islands, [], window_instructions, _source(workload, cpus, threads, seed))
    for w in tqdm(range(windows), desc="profile windows", leave=False, disable=None):
        if guest.done:
            break
        inputs.new_window(w)
        model.reset_counts()
        guest.samples.clear()
        ring.clear()
        guest.run(
            instructions=window_instructions,
            every=sample_every,
            on_boundary=lambda g: ring.extend(rel.sample()),
            jitter=jitter,
        )
        rips = [smp.rip for smp in ring] + [rip for _, rip in guest.samples]
        counts, unattributed = attribute(rips, index, rel.address_map())
        c = model.island_counts(len(islands))
        profile.windows.append(
            Window(
                index=w,
                time_of_day=inputs.time_of_day,
                input_events=inputs.delivered,
                runnable_threads=guest.runnable_threads,
                busy_cpus=guest.busy_cpus,
                cpus=cpus,
                samples=[int(x) for x in counts],
                exact=[int(x) for x in c["blocks"]],
                mem=[int(x) for x in c["mem_accesses"]],
                unattributed=unattributed,
            )
        )
    model.detach()
    profile.source["frontend"] = model.totals()
    return profile


def _islands(image: Any, guest: Any) -> list[ProfiledIsland]:
    """The workload's functions where the guest placed them, with what the analysis says about
    moving each (fix-ups, movable: the planner's own criterion), so the profile can be replayed
    as a benchmark workload."""
    from ..analysis import analyze
    from ..relocation import movable

    imap = analyze(image.path, load_base=guest.base)
    can_move = {i.start: i for i in movable(imap) if i.size >= MIN_MOVABLE_SIZE}
    names = sorted(image.functions, key=lambda n: image.functions[n].offset)
    out = []
    for k, n in enumerate(names):
        if image.functions[n].size <= 0:
            continue
        start = guest.address(n)
        isl = can_move.get(start)
        out.append(
            ProfiledIsland(k + 1, n, start, image.functions[n].size,
                           fixups=len(isl.fixups) if isl else 0, movable=isl is not None)
        )  # fmt: skip
    return out


def _source(workload: str, cpus: int, threads: int, seed: int) -> dict[str, Any]:
    return {"kind": "smmemu", "workload": workload, "cpus": cpus, "threads": threads, "seed": seed}


__all__ = ["EmulatedInputs", "record_emulated"]
