"""The guest ABI real code fits: the freestanding libc (emulation/workloads/libc) and the
loaders' R_X86_64_RELATIVE relocations.

The libc is checked differentially: the same program is built as a workload (our libc, run in
the emulator) and natively against the host's glibc, and both outputs must match byte for byte.
Its data holds pointer tables (strings, a const struct of function pointers) that only load right
when the loader applies their R_X86_64_RELATIVE relocations.  An image with any other dynamic
relocation is refused by both loaders with one line naming it, and reported by analyze/verify.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_emu_common import ensure_built

from codeisland.analysis import analyze
from codeisland.cli import cli, main
from codeisland.emulator.differential import EmulateConfig, run_baseline
from codeisland.errors import InputError
from codeisland.paths import repo_root
from smmemu.workload import build_port, load_workload

PROGRAM = r"""
#include <assert.h>
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const words[] = {"kiwi", "apple", "fig", "banana", "cherry", "date"};
static int add(int a, int b) { return a + b; }
static int mul(int a, int b) { return a * b; }
static int xor_(int a, int b) { return a ^ b; }
static const struct op { const char *name; int (*fn)(int, int); } ops[] = {
    {"add", add}, {"mul", mul}, {"xor", xor_}};

static int by_string(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}
static int by_int(const void *a, const void *b) {
  int x = *(const int *)a, y = *(const int *)b;
  return (x > y) - (x < y);
}

__attribute__((noinline)) static int classify(int v) {
  switch (v % 11) {
  case 0: return 3; case 1: return 14; case 2: return 15; case 3: return 92; case 4: return 65;
  case 5: return 35; case 6: return 89; case 7: return 79; case 8: return 32; default: return 38;
  }
}

void workload_thread(unsigned thread, unsigned nthreads) {
  char buf[128];
  printf("thread %u of %u\n", thread, nthreads);
  printf("[%d] [%5d] [%-5d] [%05d] [%+d] [% d] [%i]\n", -42, 42, 42, 42, 42, 42, 0);
  printf("[%u] [%x] [%X] [%#x] [%o] [%#o] [%08lx] [%llu]\n", 4000000000u, 0xbeefu, 0xbeefu,
         255u, 8u, 8u, 0xabcdefUL, 18446744073709551615ULL);
  printf("[%s] [%8s] [%-8s] [%.3s] [%c] [%%] [%zu] [%hhd] [%hu]\n", "str", "right", "left",
         "truncate", 'c', sizeof(long), (signed char)-3, (unsigned short)65535);
  printf("[%*d] [%-*d] [%.*s] [%.0d] [%.4d]\n", 6, 7, 6, 7, 2, "abc", 0, 12);
  int n = snprintf(buf, 8, "%s-%d", "overflowing", 12345);
  printf("snprintf %d '%s'\n", n, buf);
  sprintf(buf, "%ld|%lld", -123456789L, -9000000000LL);
  puts(buf);

  const char *sorted[6];
  memcpy(sorted, words, sizeof words);
  qsort(sorted, 6, sizeof sorted[0], by_string);
  for (int i = 0; i < 6; i++)
    printf("%s%c", sorted[i], i == 5 ? '\n' : ' ');
  int nums[40];
  unsigned seed = 7 + thread;
  for (int i = 0; i < 40; i++)
    nums[i] = (int)((seed = seed * 1103515245u + 12345u) >> 8) % 1000 - 500;
  qsort(nums, 40, sizeof nums[0], by_int);
  for (int i = 0; i < 40; i += 8)
    printf("%d ", nums[i]);
  int key = nums[17];
  int *hit = bsearch(&key, nums, 40, sizeof nums[0], by_int);
  printf("bsearch %d\n", hit ? *hit : -1);

  printf("strlen %zu strcmp %d %d strncmp %d memcmp %d\n", strlen("hello"),
         strcmp("abc", "abd") < 0, strcmp("b", "a") > 0, strncmp("abcx", "abcy", 3),
         memcmp("\x01\x02", "\x01\x03", 2) < 0);
  strcpy(buf, "con");
  strcat(buf, "catenate");
  printf("%s %s %s %s\n", buf, strchr(buf, 'a'), strrchr(buf, 'a'), strstr(buf, "ten"));
  memmove(buf + 2, buf, 6);
  printf("memmove %.8s memchr %s\n", buf, (char *)memchr(buf, 't', 8));
  char *end;
  unsigned long parsed = strtoul("12345xyz", &end, 10);
  printf("strtol %ld %ld %lu %d %ld end '%s'\n", strtol("  -0x1f", NULL, 0),
         strtol("0755", NULL, 0), parsed, atoi("-17"), strtol("zz", NULL, 36), end);
  printf("ctype %d%d%d%d%d %c%c abs %d %ld\n", !!isdigit('7'), !!isalpha('q'), !!isspace('\t'),
         !!isupper('a'), !!isxdigit('F'), toupper('m'), tolower('Q'), abs(-5), labs(-6L));

  int acc = 1;
  for (int i = 0; i < 300; i++)
    acc = ops[i % 3].fn(acc, classify(i + (int)thread)) & 0xffffff;
  printf("ops %s/%s/%s acc %d\n", ops[0].name, ops[1].name, ops[2].name, acc);

  char *blocks[16];
  for (int i = 0; i < 16; i++) {
    blocks[i] = malloc(32 + (size_t)i * 40);
    assert(blocks[i] != NULL);
    memset(blocks[i], 'a' + i, 31);
    blocks[i][31] = 0;
  }
  for (int i = 0; i < 16; i += 2)
    free(blocks[i]);
  char *big = calloc(200, 4);
  int zero = 1;
  for (int i = 0; i < 800; i++)
    zero &= big[i] == 0;
  big = realloc(big, 4000);
  printf("heap %s %s zero %d\n", blocks[1], blocks[15], zero && big != NULL);
  for (int i = 1; i < 16; i += 2)
    free(blocks[i]);
  free(big);
}
"""

NATIVE_MAIN = (
    "void workload_thread(unsigned, unsigned);\nint main(void) { workload_thread(0, 1); }\n"
)


@pytest.fixture(scope="module")
def program(tmp_path_factory: pytest.TempPathFactory) -> Path:
    ensure_built()
    src = tmp_path_factory.mktemp("libc") / "exercise.c"
    src.write_text(PROGRAM)
    return src


def _native_output(src: Path) -> bytes:
    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc is not None, "a host C compiler (build-essential) is needed"
    main = src.with_name("main.c")
    main.write_text(NATIVE_MAIN)
    exe = src.with_name("native")
    subprocess.run([cc, "-O2", "-w", "-o", str(exe), str(src), str(main)], check=True)
    return subprocess.run([str(exe)], check=True, capture_output=True).stdout


def test_libc_matches_glibc_and_pointer_tables_are_relocated(program: Path) -> None:
    elf = build_port("libc_exercise", [program], ["-fjump-tables"])
    image = load_workload(str(elf))
    assert len(image.relocations) >= 6 + 6  # words[] and ops[] alone hold 12 pointers
    base = run_baseline(EmulateConfig(workload=str(elf), threads=1, cpus=1))
    assert base.exit_codes == [0]
    assert base.outputs[0].decode() == _native_output(program).decode()


def test_threads_run_the_port_independently(program: Path) -> None:
    elf = build_port("libc_exercise", [program], ["-fjump-tables"])
    base = run_baseline(EmulateConfig(workload=str(elf), threads=3, cpus=2, smi_every=30_000))
    assert base.exit_codes == [0, 0, 0]
    assert [o.splitlines()[0] for o in base.outputs] == [
        f"thread {t} of 3".encode() for t in range(3)
    ]


def _unsupported(tmp: Path) -> Path:
    """A shared object whose data points at an undefined symbol: R_X86_64_64 + GLOB_DAT."""
    src = tmp / "so.c"
    src.write_text(
        "extern int shared_counter;\nint *counter_ptr = &shared_counter;\n"
        "__attribute__((noinline)) int get(void) { return *counter_ptr + 1; }\n"
        "void workload_thread(unsigned t, unsigned n) { (void)t; (void)n; get(); }\n"
    )
    out = tmp / "so.elf"
    subprocess.run(
        ["clang", "-O2", "-fPIC", "-ffreestanding", "-nostdlib", "-shared", "-fuse-ld=lld",
         "-o", str(out), str(src)],
        check=True,
    )  # fmt: skip
    return out


def test_other_relocations_refused_by_both_loaders_and_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    elf = _unsupported(tmp_path)
    with pytest.raises(InputError, match=r"R_X86_64_64 at 0x[0-9a-f]+ against shared_counter"):
        load_workload(str(elf))
    with pytest.raises(SystemExit) as exited:
        main(["emulate", "--workload", str(elf)])
    err = capsys.readouterr().err
    assert exited.value.code != 0 and err.count("\n") == 1 and "against shared_counter" in err
    runner = CliRunner()
    mkblob = repo_root() / "smm" / "app" / "mkblob.py"
    proc = subprocess.run(
        [sys.executable, str(mkblob), str(elf), "workload_thread", "1", str(tmp_path / "b.bin"),
         str(tmp_path / "b.h")],
        capture_output=True, text=True,
    )  # fmt: skip
    assert proc.returncode == 1
    assert proc.stderr.count("\n") == 1 and "R_X86_64_64" in proc.stderr
    assert not (tmp_path / "b.h").exists()

    rel = analyze(elf).to_dict()["relocations"]
    assert rel["not_applied"] == 2 and rel["applied_by_loaders"] == 0
    assert any("GLOB_DAT" in r for r in rel["not_applied_list"])
    shown = runner.invoke(cli, ["analyze", str(elf)])
    assert "would not be applied" in shown.output
    checked = json.loads(runner.invoke(cli, ["verify", str(elf), "--json"]).output)
    assert "R_X86_64_64" in checked["relocation_warning"]


def test_relative_only_images_have_no_warning(program: Path) -> None:
    elf = build_port("libc_exercise", [program], ["-fjump-tables"])
    imap = analyze(elf)
    assert imap.relocation_warning() is None
    assert imap.relocations()["applied_by_loaders"] >= 12
