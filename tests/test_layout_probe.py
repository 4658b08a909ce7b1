"""The Python mirror of plan.h against the header itself, through a compiled probe.

The probe is generated from the mirror's field lists: every field the mirror names must exist
in C at the same offset with the same size, every struct must have the same size, every constant
the same value, and the status table the same numbers and texts.
"""

from __future__ import annotations

import ctypes
import shutil
import subprocess
from pathlib import Path

import pytest

from codeisland.paths import repo_root
from codeisland.plan import layout as L

INCLUDE = repo_root() / "smm" / "include"


def _probe_source() -> str:
    lines = [
        "#include <stdio.h>",
        "#include <stddef.h>",
        '#include "codeisland/plan.h"',
        "#define MEMBER_SIZE(t, f) sizeof(((t *)0)->f)",
        "int main(void) {",
    ]
    for cname, rtype in L.RECORDS.items():
        lines.append(f'  printf("size {cname} %zu\\n", sizeof({cname}));')
        for fname, *_ in rtype._fields_:
            lines.append(
                f'  printf("field {cname}.{fname} %zu %zu\\n", offsetof({cname}, {fname}), '
                f"MEMBER_SIZE({cname}, {fname}));"
            )
    for name in L.CONSTANTS:
        lines.append(f'  printf("const {name} %llu\\n", (unsigned long long)(CI_{name}));')
    lines.append(
        '#define PRINT_STATUS(num, name, text) printf("status %d %s %s\\n", num, #name, text);'
    )
    lines.append("  CI_STATUS_LIST(PRINT_STATUS)")
    lines.append('  printf("guid config %s\\n", CI_CONFIG_TABLE_GUID_STR);')
    lines.append('  printf("guid driver %s\\n", CI_DRIVER_FILE_GUID_STR);')
    lines.append("  return 0;\n}")
    return "\n".join(lines) + "\n"


def _python_view() -> list[str]:
    out = []
    for cname, rtype in L.RECORDS.items():
        out.append(f"size {cname} {ctypes.sizeof(rtype)}")
        for fname, ftype, *_ in rtype._fields_:
            out.append(
                f"field {cname}.{fname} {getattr(rtype, fname).offset} {ctypes.sizeof(ftype)}"
            )
    out += [f"const {name} {value}" for name, value in L.CONSTANTS.items()]
    out += [f"status {s.value} {s.name} {s.text}" for s in L.Status]
    out.append(f"guid config {L.CONFIG_TABLE_GUID}")
    out.append(f"guid driver {L.DRIVER_FILE_GUID}")
    return out


@pytest.fixture(scope="module")
def probe_output(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    cc = shutil.which("cc") or shutil.which("clang") or shutil.which("gcc")
    if cc is None:
        pytest.fail("no C compiler: the layout probe cannot be built (install clang)")
    work: Path = tmp_path_factory.mktemp("probe")
    (work / "probe.c").write_text(_probe_source())
    subprocess.run(
        [cc, "-std=c11", "-Wall", "-Wextra", "-Werror", f"-I{INCLUDE}", "probe.c", "-o", "probe"],
        cwd=work,
        check=True,
    )
    run = subprocess.run([str(work / "probe")], capture_output=True, text=True, check=True)
    return run.stdout.splitlines()


def test_every_size_offset_constant_and_status_matches(probe_output: list[str]) -> None:
    assert probe_output == _python_view()


def test_status_table_has_no_gaps(probe_output: list[str]) -> None:
    numbers = [int(line.split()[1]) for line in probe_output if line.startswith("status ")]
    assert numbers == list(range(len(numbers)))
    assert len(numbers) == len(L.Status)
