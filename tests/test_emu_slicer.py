"""The native slicer (fast profiling mode): threads stopped by the C block hook resume exactly,
so outputs equal the instruction-counted run's, with samples and SAMPLE SMIs in between."""

from __future__ import annotations

from test_emu_common import baseline, ensure_built

from codeisland.emulator.session import boot
from smmemu.workload import load_workload


def test_native_slices_resume_exactly_with_sample_smis() -> None:
    ensure_built()
    s = boot(cpus=2, layout="amd64")
    guest = s.guest(load_workload("graphsort"), threads=3)
    guest.sample_slices = True
    heads: list[int] = []

    def sample(_g: object) -> None:
        s.client.sample()
        heads.append(s.client.sample_head())

    slices = guest.run_sliced(slice_bytes=60_000, every=4, on_boundary=sample)
    assert guest.outputs() == baseline("graphsort", 3).outputs
    assert [t.exit_code for t in guest.threads] == [0, 0, 0]
    assert len(guest.samples) == slices > 20
    assert heads == [2 * (i + 1) for i in range(len(heads))] and len(heads) >= slices // 4 - 1
    # slices end near their budget (a block at most past it), so the count is about right
    assert guest.code_bytes >= 60_000 * (slices - 3)
