"""Every command refuses bad input the same way: exactly one line on stderr, exit 2, no
traceback, no "internal error", and nothing written (no output, no temporary file, inputs
unchanged).

The table covers every command and each kind of option: a missing file, a directory, an empty
file, a truncated one, garbage, the wrong kind of file, numbers out of range, NaN/inf, deep
nesting, `-o` equal to an input and an unwritable `-o`.  The cases run in-process through the
CLI's own entry (tests/cli_entry.py); a few go through the console script as a subprocess.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from cli_entry import invoke

from codeisland.paths import driver_binary, emulation_build_dir

ELF = emulation_build_dir() / "workloads" / "lz.elf"
OVMF = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")  # Debian's ovmf (bootstrap installs it)
PEI_CORE_GUID = "52c05b14-0b98-496c-bc3b-04b50211d680"  # a file of OVMF's PEI volume
DEEP = "[" * 100_000 + "]" * 100_000


def _profile(**edit: object) -> str:
    doc: dict[str, object] = {
        "format": "codeisland-profile",
        "version": 1,
        "source": {"workload": "lz"},
        "window_instructions": 1000,
        "islands": [{"id": 0, "name": "fnv1a", "start": 0x1CB0, "size": 168}],
        "windows": [
            {
                "index": 0,
                "time_of_day": 0,
                "input_events": 0,
                "runnable_threads": 1,
                "busy_cpus": 1,
                "cpus": 1,
                "samples": [3],
            },
        ],
    }
    doc.update(edit)
    return json.dumps({k: v for k, v in doc.items() if v is not None})


def _fixtures(tmp: Path) -> dict[str, Path]:
    """Inputs of every kind, written into `tmp` (the directory checked for stray writes)."""
    files: dict[str, bytes | str] = {
        "empty": b"",
        "garbage": b"\x7fELF\x02\x01\x01" + bytes(range(256)) * 4,
        "binary": b"\x00\xff\xfe\x80" * 64,
        "deep": DEEP,
        "elf": ELF.read_bytes(),
        "trunc_elf": ELF.read_bytes()[:300],
        "profile": _profile(),
        "no_source": _profile(source=None),
        "islands_str": _profile(islands="fnv1a"),
        "nan_counts": '{"fnv1a": [1, NaN]}',
        "nan_prio": '{"fnv1a": NaN}',
        "inf_prio": '{"fnv1a": 1e999}',
        "str_prio": '{"fnv1a": "high"}',
        "deep_toml": "a = " + "[" * 5000 + "]" * 5000 + "\n",
        "trunc_gz": b"\x1f\x8b\x08\x00" + bytes(8),
        "driver": driver_binary().read_bytes(),
        "trunc_pe": driver_binary().read_bytes()[: len(driver_binary().read_bytes()) // 2],
        "json_as_pe": b"MZ" + b"{}" * 200,
        "model_v1": b"CIMODEL1" + bytes(20),
        "big_counts": _profile().replace('"samples": [3]', '"samples": [' + "9" * 400 + "]"),
        "hint_cpus": "[[region]]\nname='h'\nrole='hot'\nbase=0x1000\nsize=0x1000\n"
        "[[hint]]\nkind='core'\ncpus=3\n",
        "region_table": "region = 5\n",
    }
    out = {}
    for name, data in files.items():
        path = tmp / name
        if isinstance(data, str):
            path.write_text(data)
        else:
            path.write_bytes(data)
        out[name] = path
    (tmp / "dir").mkdir()
    out["dir"] = tmp / "dir"
    out["missing"] = tmp / "no-such-file"
    out["out"] = tmp / "out.bin"  # must still not exist afterwards
    out["unwritable"] = tmp / "no-such-dir" / "out.bin"
    out["proc"] = Path("/proc/codeisland-out.bin")  # not creatable even by root
    out["ovmf"] = OVMF
    return out


# (id, argv with {name} placeholders); every case must exit 2 with one line on stderr
CASES: list[tuple[str, str]] = [
    # analyze: image kinds, addresses, co-execution profiles
    ("analyze-missing", "analyze {missing}"),
    ("analyze-dir", "analyze {dir}"),
    ("analyze-empty", "analyze {empty}"),
    ("analyze-truncated", "analyze {trunc_elf}"),
    ("analyze-garbage", "analyze {garbage}"),
    ("analyze-json-as-image", "analyze {profile}"),
    ("analyze-device", "analyze /dev/zero"),
    ("profile-show-device", "profile show /dev/zero"),
    ("analyze-load-base-65-bits", "analyze {elf} --load-base 0x1ffffffffffffffff"),
    ("analyze-load-base-negative", "analyze {elf} --load-base -4096"),
    ("analyze-load-base-text", "analyze {elf} --load-base high"),
    ("analyze-load-base-past-top", "analyze {elf} --load-base 0xfffffffffffff000"),
    ("analyze-profile-65-bit-count", "analyze {elf} --profile {big_counts}"),
    ("analyze-profile-deep", "analyze {elf} --profile {deep}"),
    ("analyze-profile-islands-string", "analyze {elf} --profile {islands_str}"),
    ("analyze-profile-binary", "analyze {elf} --profile {binary}"),
    ("analyze-profile-nan", "analyze {elf} --profile {nan_counts}"),
    ("analyze-profile-gzip-truncated", "analyze {elf} --profile {trunc_gz}"),
    ("analyze-profile-dir", "analyze {elf} --profile {dir}"),
    # verify
    ("verify-delta-65-bits", "verify {elf} --delta 0x10000000000000000"),
    ("verify-delta-negative", "verify {elf} --delta -16"),
    ("verify-delta-zero", "verify {elf} --delta 0"),
    ("verify-delta-noncanonical", "verify {elf} --delta 0x800000000000"),
    ("verify-limit-zero", "verify {elf} --limit 0"),
    ("verify-garbage", "verify {garbage}"),
    ("verify-load-base-past-top", "verify {elf} --load-base 0xffffffffffff0000"),
    # plan build: outputs, platforms, priorities, profiles, numbers
    ("plan-out-is-image", "plan build {elf} --island fnv1a -o {elf}"),
    ("plan-out-is-profile", "plan build {elf} --profile {profile} -o {profile}"),
    (
        "plan-out-is-priorities",
        "plan build {elf} --island fnv1a --priorities {str_prio} -o {str_prio}",
    ),
    ("plan-out-unwritable", "plan build {elf} --island fnv1a -o {unwritable}"),
    ("plan-out-proc", "plan build {elf} --island fnv1a -o {proc}"),
    ("plan-out-dir", "plan build {elf} --island fnv1a -o {dir}"),
    ("plan-no-island", "plan build {elf} -o {out}"),
    ("plan-platform-binary", "plan build {elf} --island fnv1a --platform {binary} -o {out}"),
    ("plan-platform-deep", "plan build {elf} --island fnv1a --platform {deep_toml} -o {out}"),
    ("plan-platform-missing", "plan build {elf} --island fnv1a --platform {missing} -o {out}"),
    ("plan-platform-hint-cpus", "plan build {elf} --island fnv1a --platform {hint_cpus} -o {out}"),
    (
        "plan-platform-region-kind",
        "plan build {elf} --island fnv1a --platform {region_table} -o {out}",
    ),
    (
        "plan-arena-past-top",
        "plan build {elf} --island fnv1a --arena-base 0xffffffffffffffff -o {out}",
    ),
    ("plan-platform-unknown-name", "plan build {elf} --island fnv1a --platform nowhere -o {out}"),
    ("plan-priorities-nan", "plan build {elf} --island fnv1a --priorities {nan_prio} -o {out}"),
    ("plan-priorities-inf", "plan build {elf} --island fnv1a --priorities {inf_prio} -o {out}"),
    ("plan-priorities-string", "plan build {elf} --island fnv1a --priorities {str_prio} -o {out}"),
    ("plan-priorities-deep", "plan build {elf} --island fnv1a --priorities {deep} -o {out}"),
    ("plan-profile-deep", "plan build {elf} --profile {deep} -o {out}"),
    ("plan-profile-no-source", "plan build {elf} --profile {no_source} -o {out}"),
    ("plan-profile-empty", "plan build {elf} --profile {empty} -o {out}"),
    (
        "plan-arena-65-bits",
        "plan build {elf} --island fnv1a --arena-base 0x1ffffffffffffffff -o {out}",
    ),
    ("plan-id-negative", "plan build {elf} --island fnv1a --plan-id -1 -o {out}"),
    ("plan-chunk-zero", "plan build {elf} --island fnv1a --chunk-size 0 -o {out}"),
    ("plan-unknown-island", "plan build {elf} --island no_such_fn -o {out}"),
    # plan show
    ("plan-show-empty", "plan show {empty}"),
    ("plan-show-garbage", "plan show {garbage}"),
    ("plan-show-dir", "plan show {dir}"),
    ("plan-show-missing", "plan show {missing}"),
    # firmware
    ("firmware-list-garbage", "firmware list {garbage}"),
    ("firmware-list-empty", "firmware list {empty}"),
    ("firmware-list-dir", "firmware list {dir}"),
    ("inject-driver-truncated", "firmware inject --image {ovmf} --driver {trunc_pe} -o {out}"),
    ("inject-driver-not-pe", "firmware inject --image {ovmf} --driver {json_as_pe} -o {out}"),
    ("inject-driver-elf", "firmware inject --image {ovmf} --driver {elf} -o {out}"),
    ("inject-driver-missing", "firmware inject --image {ovmf} --driver {missing} -o {out}"),
    ("inject-guid-empty", "firmware inject --image {ovmf} --driver {driver} --guid= -o {out}"),
    (
        "inject-guid-zero",
        "firmware inject --image {ovmf} --driver {driver} "
        "--guid 00000000-0000-0000-0000-000000000000 -o {out}",
    ),
    ("inject-guid-garbage", "firmware inject --image {ovmf} --driver {driver} --guid xyz -o {out}"),
    (
        "inject-guid-present",
        f"firmware inject --image {{ovmf}} --driver {{driver}} --guid {PEI_CORE_GUID} -o {{out}}",
    ),
    ("inject-out-is-driver", "firmware inject --image {ovmf} --driver {driver} -o {driver}"),
    ("inject-out-unwritable", "firmware inject --image {ovmf} --driver {driver} -o {unwritable}"),
    ("inject-image-garbage", "firmware inject --image {garbage} --driver {driver} -o {out}"),
    # profile
    ("record-windows-1e23", "profile record --windows 1e23 -o {out}"),
    ("record-windows-huge", "profile record --windows 99999999999999999999 -o {out}"),
    ("record-windows-zero", "profile record --windows 0 -o {out}"),
    ("record-seed-negative", "profile record --source model --seed -1 -o {out}"),
    ("record-cpus-zero", "profile record --cpus 0 -o {out}"),
    ("record-threads-huge", "profile record --threads 1000 -o {out}"),
    ("record-window-insn-zero", "profile record --window-instructions 0 -o {out}"),
    ("record-workload-empty", "profile record --workload= -o {out}"),
    ("record-model-unknown", "profile record --source model --workload nosuch -o {out}"),
    ("record-out-unwritable", "profile record --source model -o {unwritable}"),
    ("record-out-dir", "profile record --source model -o {dir}"),
    ("profile-show-deep", "profile show {deep}"),
    ("profile-show-islands-string", "profile show {islands_str}"),
    ("profile-show-binary", "profile show {binary}"),
    ("profile-show-no-source", "profile show {no_source}"),
    ("profile-show-empty", "profile show {empty}"),
    ("profile-show-dir", "profile show {dir}"),
    ("profile-show-gzip-truncated", "profile show {trunc_gz}"),
    ("profile-show-65-bit-count", "profile show {big_counts}"),
    ("profile-show-top-zero", "profile show {profile} --top 0"),
    # model
    ("train-out-is-profile", "model train {profile} -o {profile}"),
    ("train-profile-deep", "model train {deep} -o {out}"),
    ("train-profile-garbage", "model train {garbage} -o {out}"),
    ("train-history-small", "model train {profile} --history 2 -o {out}"),
    ("train-too-few-windows", "model train {profile} -o {out}"),
    ("train-out-unwritable", "model train {profile} -o {unwritable}"),
    ("model-show-garbage", "model show {garbage}"),
    ("model-show-empty", "model show {empty}"),
    ("model-show-pickle-v1", "model show {model_v1}"),
    ("model-show-dir", "model show {dir}"),
    # bench
    ("bench-emulated-empty", "bench --emulated="),
    ("bench-emulated-blank", "bench --emulated ' '"),
    ("bench-emulated-unknown", "bench --emulated nosuch --windows 2 --no-plots"),
    ("bench-windows-huge", "bench --emulated lz --windows 99999999999999999999"),
    ("bench-windows-zero", "bench --emulated lz --windows 0"),
    ("bench-windows-float", "bench --emulated lz --windows 1e23"),
    ("bench-windows-without-emulated", "bench --windows 5"),
    ("bench-seed-negative", "bench --quick --seed -1"),
    ("bench-platform-binary", "bench --platform {binary}"),
    ("bench-platform-missing", "bench --platform {missing}"),
    ("bench-platform-deep", "bench --platform {deep_toml}"),
    ("bench-hot-kib-zero", "bench --emulated lz --hot-kib 0"),
    ("bench-unknown-workload", "bench --workload nosuch"),
    ("bench-out-is-file", "bench --quick --out {elf}"),
    # qemu
    ("qemu-timeout-nan", "qemu run --timeout nan"),
    ("qemu-timeout-inf", "qemu run --timeout inf"),
    ("qemu-timeout-negative", "qemu run --timeout -1"),
    ("qemu-timeout-zero", "qemu run --timeout 0"),
    ("qemu-timeout-text", "qemu run --timeout soon"),
    ("qemu-driver-missing", "qemu run --driver {missing}"),
    ("qemu-image-dir", "qemu run --image {dir}"),
    ("qemu-cpus-zero", "qemu run --cpus 0"),
    ("qemu-memory-zero", "qemu run --memory 0"),
    ("e2e-cpus-zero", "qemu e2e --cpus 0"),
    ("e2e-driver-missing", "qemu e2e --driver {missing}"),
    ("e2e-workload-empty", "qemu e2e --workload="),
    # doctor
    ("doctor-no-target", "doctor"),
    ("doctor-two-targets", "doctor --boot --helper qemuhelper"),
    ("doctor-qemu-missing", "doctor --qemu {missing}"),
    ("doctor-qemu-file", "doctor --qemu {elf}"),
    ("doctor-driver-missing", "doctor --boot --driver {missing}"),
    # emulate
    ("emulate-cpus-zero", "emulate --cpus 0"),
    ("emulate-threads-huge", "emulate --threads 99"),
    ("emulate-seed-negative", "emulate --seed -1"),
    ("emulate-seed-huge", "emulate --seed 99999999999999999999"),
    ("emulate-smi-every-small", "emulate --smi-every 5"),
    ("emulate-workload-empty", "emulate --workload="),
    ("emulate-workload-unknown", "emulate --workload nosuch"),
    ("emulate-workload-garbage", "emulate --workload {garbage}"),
    ("emulate-unknown-island", "emulate --workload lz --island no_such_fn"),
    ("emulate-layout", "emulate --layout arm"),
    # the command line itself
    ("unknown-command", "nosuch"),
    ("unknown-option", "analyze {elf} --no-such-option"),
    ("missing-argument", "plan show"),
]


def _snapshot(tmp: Path) -> dict[str, str]:
    return {
        str(p.relative_to(tmp)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else ""
        for p in sorted(tmp.rglob("*"))
    }


@pytest.fixture
def files(tmp_path: Path) -> dict[str, Path]:
    return _fixtures(tmp_path)


def _argv(template: str, files: dict[str, Path]) -> list[str]:
    import shlex

    return [part.format(**{k: str(v) for k, v in files.items()}) for part in shlex.split(template)]


def _assert_refused(code: int, stderr: str, stdout: str) -> None:
    lines = stderr.splitlines()
    assert code == 2, f"exit {code}: {stderr}"
    assert len(lines) == 1, f"expected one stderr line, got:\n{stderr}"
    assert "error" in lines[0]
    if not lines[0].startswith("codeisland: error: "):  # a click usage error: where help is
        assert lines[0].startswith("codeisland") and lines[0].endswith(" --help'."), lines[0]
    assert "Traceback" not in stderr and "internal error" not in stderr
    assert stdout == ""


@pytest.mark.parametrize(("case", "template"), CASES, ids=[c for c, _ in CASES])
def test_bad_input_is_refused_in_one_line(
    case: str,
    template: str,
    files: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import codeisland.emulator.differential as differential

    def no_run(*args: object, **kwargs: object) -> None:
        raise AssertionError("the emulated run started before the bad input was refused")

    # a refusal comes before any long work: no emulated run, no bench
    monkeypatch.setattr(differential, "run_emulation", no_run)
    before = _snapshot(tmp_path)
    result = invoke(_argv(template, files))
    _assert_refused(result.exit_code, result.stderr, result.stdout)
    assert _snapshot(tmp_path) == before, "the command wrote or changed a file"
    assert not files["proc"].exists()


CLI = [sys.executable, "-c", "from codeisland.cli import main; main()"]


@pytest.mark.parametrize(
    "template",
    [
        "plan show {garbage}",
        "profile show {deep}",
        "plan build {elf} --island fnv1a -o {elf}",
        "verify {elf} --delta 0x1ffffffffffffffff",
        "profile record --source model --seed -1 -o {out}",
    ],
)
def test_console_script_refuses_in_one_line(
    template: str, files: dict[str, Path], tmp_path: Path
) -> None:
    before = _snapshot(tmp_path)
    proc = subprocess.run(
        [*CLI, *_argv(template, files)], capture_output=True, text=True, timeout=120
    )
    _assert_refused(proc.returncode, proc.stderr, proc.stdout)
    assert _snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "args",
    [
        ["bench", "--quick", "--no-plots"],
        ["profile", "record", "--windows", "2", "-o", "{out}"],
    ],
)
def test_a_missing_build_says_what_to_build(args: list[str], tmp_path: Path) -> None:
    # a checkout where `make build` has not built the native libraries
    env = {**os.environ, "CODEISLAND_FETCHLIB": str(tmp_path / "build" / "libcifetch.so")}
    out = tmp_path / "p.json"
    proc = subprocess.run(
        [*CLI, *[a.format(out=out) for a in args]],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 6, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert proc.stderr.count("codeisland: error:") == 1 and "internal error" not in line
    assert "libcifetch.so is not built" in line and "make build" in line
    assert not out.exists()


def test_emulate_without_the_built_driver_says_what_to_build(tmp_path: Path) -> None:
    # the default driver (CODEISLAND_DRIVER or smm/build) missing: exit 6 and the make target
    # (a --driver that does not exist is a bad input, exit 2: the table above)
    missing = tmp_path / "CodeIslandSmm.efi"
    env = {**os.environ, "CODEISLAND_DRIVER": str(missing)}
    proc = subprocess.run(
        [*CLI, "emulate", "--workload", "graphsort", "--island", "bfs"],
        capture_output=True, text=True, timeout=300, env=env,
    )  # fmt: skip
    assert proc.returncode == 6, proc.stderr
    line = proc.stderr.strip().splitlines()[-1]
    assert proc.stderr.count("codeisland: error:") == 1 and "internal error" not in line
    assert f"the SMM driver {missing} is not built" in line and "make build" in line


@pytest.mark.parametrize("interrupted", [False, True], ids=["drawn", "ctrl-c-while-drawing"])
def test_bench_plots_replace_the_old_ones_only_once_complete(
    interrupted: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from codeisland.bench import plots, runner

    old = tmp_path / "heat_w.png"
    old.write_bytes(b"the previous plot")

    class Result:
        name = "w"
        plot_png = None  # not rendered by a worker: the CLI draws it

    def draw(r: object, path: Path, **_: object) -> Path:
        path.write_bytes(b"half a plot")
        if interrupted:
            raise KeyboardInterrupt
        path.write_bytes(b"the new plot")
        return path

    monkeypatch.setattr(runner, "run", lambda cfg, params, draw=None: [Result()])
    monkeypatch.setattr(plots, "heat_plot", draw)
    monkeypatch.setattr(plots, "comparison_plot", lambda results, path: path.write_bytes(b"c"))

    class Report:
        def __init__(self, *args: object) -> None:
            self.plots = args[3]

        def to_dict(self) -> dict[str, object]:
            return {"plots": [str(p) for p in self.plots]}  # type: ignore[attr-defined]

    monkeypatch.setattr("codeisland.bench.report.BenchReport", Report)
    result = invoke(["bench", "--quick", "--out", str(tmp_path), "--json"])
    if interrupted:
        assert result.exit_code == 130 and old.read_bytes() == b"the previous plot"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["heat_w.png"]  # no temp left
    else:
        assert result.exit_code == 0, result.output
        assert old.read_bytes() == b"the new plot"
        assert sorted(p.name for p in tmp_path.iterdir()) == ["heat_w.png", "policies.png"]
        assert json.loads(result.stdout)["plots"][0] == str(old)  # the plot's name, not the temp
