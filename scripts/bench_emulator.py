#!/usr/bin/env python3
"""Emulator throughput: the same workload, in the same process, run three ways.

  raw        plain Unicorn: each guest thread run to its end in one emu_start, no hooks beyond
             the port I/O ones every run has (the reference)
  profiled   the sampling profiler: native slices (a C block hook stops each thread after
             `--slice-bytes` of executed code) round-robin over the CPUs, the RIP of every thread
             sampled at every slice end, and a SAMPLE SMI through the real driver every
             `--smi-slices` slices
  counted    instruction-count slices (what `codeisland emulate` uses for SMIs at exact
             instruction counts)

The workload's instruction count comes from the counted run (each thread's last slice counts
whole, so it is exact to within one slice per thread).  Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

from unicorn.x86_const import UC_X86_REG_RIP

from codeisland.emulator.session import boot
from codeisland.errors import CodeIslandError
from smmemu.machine import NO_UNTIL
from smmemu.workload import load_workload


def _raw(workload: str, threads: int) -> float:
    s = boot(cpus=1)
    guest = s.guest(load_workload(workload), threads)
    uc = s.machine.uc
    t0 = time.perf_counter()
    for thread in guest.threads:
        uc.context_restore(thread.context)
        guest.current = thread
        uc.emu_start(int(uc.reg_read(UC_X86_REG_RIP)), NO_UNTIL)
        uc.context_update(thread.context)
        if thread.exit_code != 0:
            sys.exit(f"raw run: thread {thread.index} ended with {thread.exit_code}")
    return time.perf_counter() - t0


def _profiled(workload: str, threads: int, cpus: int, slice_bytes: int, smi_slices: int):  # type: ignore[no-untyped-def]
    s = boot(cpus=cpus)
    guest = s.guest(load_workload(workload), threads)
    guest.sample_slices = True
    smis = 0

    def smi(_g: object) -> None:
        nonlocal smis
        s.client.sample()
        smis += 1

    t0 = time.perf_counter()
    slices = guest.run_sliced(slice_bytes, every=smi_slices, on_boundary=smi)
    elapsed = time.perf_counter() - t0
    return elapsed, slices, len(guest.samples), smis, guest.outputs()


def _counted(workload: str, threads: int, cpus: int, slice_insns: int):  # type: ignore[no-untyped-def]
    s = boot(cpus=cpus)
    guest = s.guest(load_workload(workload), threads, slice_insns)
    t0 = time.perf_counter()
    guest.run()
    return time.perf_counter() - t0, guest.instructions, guest.outputs()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workload", default="lz")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cpus", type=int, default=2)
    ap.add_argument("--slice-bytes", type=int, default=1_000_000)
    ap.add_argument("--smi-slices", type=int, default=10)
    ap.add_argument("--slice-insns", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3, help="best of this many runs per mode")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args()

    # best of --repeat, modes interleaved, so load from other processes hits all alike
    counted_s = raw_s = prof_s = float("inf")
    for _ in range(a.repeat):
        c_s, insns, counted_out = _counted(a.workload, a.threads, a.cpus, a.slice_insns)
        r_s = _raw(a.workload, a.threads)
        p_s, slices, samples, smis, prof_out = _profiled(
            a.workload, a.threads, a.cpus, a.slice_bytes, a.smi_slices
        )
        counted_s, raw_s, prof_s = min(counted_s, c_s), min(raw_s, r_s), min(prof_s, p_s)
    if prof_out != counted_out:
        sys.exit("profiled run's outputs differ from the counted run's")
    fig = {
        "workload": a.workload,
        "threads": a.threads,
        "cpus": a.cpus,
        "guest_instructions": insns,
        "raw_minst_per_s": insns / raw_s / 1e6,
        "profiled_minst_per_s": insns / prof_s / 1e6,
        "profiled_over_raw": raw_s / prof_s,
        "counted_minst_per_s": insns / counted_s / 1e6,
        "counted_over_raw": raw_s / counted_s,
        "profiled_slices": slices,
        "profiled_samples": samples,
        "profiled_sample_smis": smis,
        "slice_bytes": a.slice_bytes,
        "repeat": a.repeat,
    }
    if a.json:
        print(json.dumps(fig, indent=2))
        return
    print(
        f"workload {a.workload}: {insns:,} guest instructions, {a.threads} threads, {a.cpus} CPUs"
    )
    print(f"  raw Unicorn          {fig['raw_minst_per_s']:8.1f} M inst/s")
    print(
        f"  sampling profiler    {fig['profiled_minst_per_s']:8.1f} M inst/s  "
        f"({fig['profiled_over_raw']:.0%} of raw; {slices} slices of {a.slice_bytes:,} code bytes, "
        f"{samples} RIP samples, {smis} SAMPLE SMIs)"
    )
    print(
        f"  count slices         {fig['counted_minst_per_s']:8.1f} M inst/s  "
        f"({fig['counted_over_raw']:.0%} of raw; {a.slice_insns:,}-instruction slices)"
    )


if __name__ == "__main__":
    try:
        main()
    except CodeIslandError as exc:
        sys.exit(f"bench_emulator: error: {exc}")
