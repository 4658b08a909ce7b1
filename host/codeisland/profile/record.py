"""Record a profile from an emulated run (smmemu): the real driver, a workload, N CPUs.

Per window of `window_instructions` guest instructions:
  - SAMPLE SMIs every `sample_every` instructions (every CPU's saved RIP, as on a board) plus
    the emulator's slice-boundary samples, attributed to original islands through the driver's
    address map (STATS);
  - exact per-island block counts and data accesses from the native hook (fetchtrace), ground
    truth, and the hook's front-end model running on the same fetch stream;
  - context: the emulated RTC's time of day (CMOS ports 0x70/0x71, one window = one emulated
    hour from midnight), input events (port 0xEB, seeded bursts), runnable threads, busy CPUs.
Islands are the workload's functions, where the guest placed them in the driver's arena.
"""

from __future__ import annotations

import random
from typing import Any

from tqdm import tqdm

from ..errors import EmulationError
from ..frontend.params import FrontendParams
from .attribution import IslandIndex, attribute
from .format import DAY_SECONDS, Island, Profile, Window

WINDOW_SECONDS = 3600
RTC_INDEX, RTC_DATA, INPUT_PORT = 0x70, 0x71, 0xEB


def _bcd(v: int) -> int:
    return ((v // 10) << 4) | (v % 10)


class EmulatedInputs:
    """RTC and input-event ports of the emulated board, driven by the recorder's clock."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.time_of_day = 0
        self.selected = 0
        self.pending = 0  # events still to deliver in this window
        self.delivered = 0

    def new_window(self, index: int) -> None:
        self.time_of_day = (index * WINDOW_SECONDS) % DAY_SECONDS
        self.pending = self.rng.randrange(40, 120) if self.rng.random() < 0.2 else 0
        self.delivered = 0

    def rtc_select(self, _port: int, _size: int, value: int) -> None:
        self.selected = value & 0x7F

    def rtc_read(self, _port: int, _size: int) -> int:
        t = self.time_of_day
        fields = {0: t % 60, 2: (t // 60) % 60, 4: t // 3600}
        return _bcd(fields.get(self.selected, 0))

    def input_read(self, _port: int, _size: int) -> int:
        if self.pending:
            self.pending -= 1
            self.delivered += 1
            return 1
        return 0


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
    from smmemu.fetchtrace import FetchModel, FetchModelError
    from smmemu.session import boot
    from smmemu.workload import load_workload

    s = boot(cpus=cpus)
    image = load_workload(workload)
    guest = s.guest(image, threads)
    guest.sample_slices = True
    names = sorted(image.functions, key=lambda n: image.functions[n].offset)
    islands = [
        Island(k + 1, n, guest.address(n), image.functions[n].size)
        for k, n in enumerate(names)
        if image.functions[n].size > 0
    ]
    index = IslandIndex(islands)
    inputs = EmulatedInputs(seed)
    s.machine.ports.on_out(RTC_INDEX, inputs.rtc_select)
    s.machine.ports.on_in(RTC_DATA, inputs.rtc_read)
    s.machine.ports.on_in(INPUT_PORT, inputs.input_read)
    try:
        model = FetchModel((params or FrontendParams()).native())
        model.set_ranges([i.start for i in islands], [i.start + i.size for i in islands],
                         list(range(len(islands))))  # fmt: skip
        model.attach(s.machine.uc, data_accesses=True)
    except FetchModelError as exc:
        raise EmulationError(str(exc)) from None
    jitter = random.Random(seed)
    head = s.client._read_u32("sample_head")
    profile = Profile(islands, [], window_instructions, _source(workload, cpus, threads, seed))
    for w in tqdm(range(windows), desc="profile windows", leave=False):
        if guest.done:
            break
        inputs.new_window(w)
        model.reset_counts()
        guest.samples.clear()
        guest.run(
            instructions=window_instructions,
            every=sample_every,
            on_boundary=lambda g: s.client.sample(),
            jitter=jitter,
        )
        ring, head = s.client.samples_since(head)
        rips = [smp.rip for smp in ring] + [rip for _, rip in guest.samples]
        counts, unattributed = attribute(rips, index, s.client.stats().map_entries)
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


def _source(workload: str, cpus: int, threads: int, seed: int) -> dict[str, Any]:
    return {"kind": "smmemu", "workload": workload, "cpus": cpus, "threads": threads, "seed": seed}


def record_model(workload: str, windows: int, seed: int = 1) -> Profile:
    """A profile from the benchmark's island-level model machine (no relocation)."""
    from ..bench.workloads import make_workload
    from ..loop.modelmachine import ModelMachine, StreamSource

    w = make_workload(workload, seed)
    m = ModelMachine(StreamSource(w), FrontendParams(), hot_capacity=0)
    index = IslandIndex(w.islands)
    profile = Profile(list(w.islands), [], 0, {"kind": "model", "workload": workload, "seed": seed})
    for t in range(windows):
        obs = m.run_window()
        counts, unattributed = attribute(obs.rips, index)
        profile.windows.append(
            Window(
                t, obs.time_of_day, obs.input_events, obs.runnable_threads, obs.busy_cpus,
                obs.cpus, [int(x) for x in counts], [int(x) for x in obs.exact],
                [int(x) for x in obs.mem], unattributed,
            )
        )  # fmt: skip
    return profile


__all__ = ["EmulatedInputs", "record_emulated", "record_model"]
