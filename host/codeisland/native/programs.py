"""Real programs for the native host's benchmark, built as Debian builds them (debian_flags).

    islands  tests/native/islands.c: threads, a jump table, a libc callback (seconds to build)
    minigzip zlib's minigzip from Debian's zlib source (scripts/bootstrap.sh fetch_port_sources
             caches it; CODEISLAND_ZLIB_SRC), zlib linked in, compressing a generated 12 MiB
             text at -9 to stdout (a compressor: small hot code, deflate's match loop)
    lua      Lua 5.4 from Debian's own source package (apt-get source lua5.4, its patches
             applied by dpkg-source), every src/*.c but luac linked into one executable:
             Debian's lua5.4 binary keeps the interpreter in liblua5.4.so, and the agent
             registers the executable's text only, so the benchmark links it in (upstream's
             `make linux` layout); no readline (Debian's linux-readline target), which the
             benchmark's script never reaches.

Both link with -Wl,--emit-relocs, which BOLT's function reordering needs and which changes no
code byte.  BOLT gets its own build besides (`bolt_input`): the same flags plus
-fno-reorder-blocks-and-partition, as BOLT's documentation asks of gcc builds -- BOLT 15 (Debian's
bolt-15) rewrites gcc's hot/cold-split functions (foo.cold) into a binary that crashes (lua's
propagatemark, seen here: a plain `llvm-bolt lua -o out` already segfaults).  codeisland runs
on the binary as Debian's flags leave it.  Builds are cached in
/var/cache/codeisland/native-bench (CODEISLAND_CACHE).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ToolMissing, UsageError
from ..paths import repo_root
from . import debian_flags

LUA_SOURCE_PACKAGE = "lua5.4"
LUA_SCRIPT = Path("scripts/native_bench/mix.lua")


def cache_root() -> Path:
    root = Path(os.environ.get("CODEISLAND_CACHE", "/var/cache/codeisland")) / "native-bench"
    root.mkdir(parents=True, exist_ok=True)
    return root


@dataclass(frozen=True)
class Program:
    """A built program and the command line the benchmark runs it with."""

    name: str
    binary: Path
    args: tuple[str, ...]
    what: str
    bolt_input: Path  # the same sources with -fno-reorder-blocks-and-partition (BOLT's input)

    def argv(self, binary: Path | None = None) -> list[str]:
        return [str(binary or self.binary), *self.args]


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> None:
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        tail = (r.stderr or r.stdout).strip().splitlines()[-3:]
        raise ToolMissing(f"{what} failed: {' / '.join(tail)}")


BOLT_CFLAGS = ["-fno-reorder-blocks-and-partition"]


def _flags(bolt: bool = False) -> tuple[list[str], list[str]]:
    extra = BOLT_CFLAGS if bolt else []
    return [*debian_flags.cflags(), *extra], [*debian_flags.ldflags(), "-Wl,--emit-relocs"]


def _variants(name: str) -> list[tuple[Path, list[str], list[str]]]:
    """(output, cflags, ldflags) of the program as built and of BOLT's input."""
    return [
        (cache_root() / name, *_flags()),
        (cache_root() / f"{name}.bolt-input", *_flags(bolt=True)),
    ]


def _stamped(out: Path, inputs: list[Path], flags: list[str]) -> bool:
    """True if `out` was built from exactly these inputs and flags (a stamp beside it)."""
    h = hashlib.sha256(" ".join(flags).encode())
    for p in sorted(inputs):
        h.update(p.read_bytes())
    stamp = out.parent / f"{out.name}.stamp"  # one per output (foo and foo.bolt-input)
    if out.is_file() and stamp.is_file() and stamp.read_text() == h.hexdigest():
        return True
    stamp.write_text(h.hexdigest())
    return False


def build_islands(threads: int = 2, rounds: int = 400) -> Program:
    src = repo_root() / "tests" / "native" / "islands.c"
    outs = []
    for out, cflags, ldflags in _variants("islands"):
        if not _stamped(out, [src], cflags + ldflags):
            _run(["gcc", *cflags, str(src), "-o", str(out), *ldflags, "-lpthread"], "gcc islands.c")
        outs.append(out)
    what = f"tests/native/islands.c {threads} {rounds}"
    return Program("islands", outs[0], (str(threads), str(rounds)), what, outs[1])


def _lua_source() -> Path:
    """Debian's lua5.4 source, patches applied, unpacked once into the cache."""
    tree = cache_root() / "lua-src"
    if (tree / "src" / "lvm.c").is_file():
        return tree
    if shutil.which("dpkg-source") is None:
        raise ToolMissing("dpkg-source (dpkg-dev) is needed to unpack Debian's lua5.4 source")
    with tempfile.TemporaryDirectory(dir=cache_root()) as tmp:
        _run(
            ["apt-get", "source", "-q", "--download-only", "-o", "APT::Sandbox::User=root",
             LUA_SOURCE_PACKAGE],
            "apt-get source lua5.4 (needs a deb-src entry: scripts/bootstrap.sh adds one)",
            cwd=Path(tmp),
        )  # fmt: skip
        dsc = next(Path(tmp).glob("lua5.4_*.dsc"), None)
        if dsc is None:
            raise ToolMissing("apt-get source lua5.4 fetched no .dsc")
        _run(["dpkg-source", "-x", str(dsc), str(tree)], "dpkg-source -x lua5.4", cwd=Path(tmp))
    return tree


def build_lua(scale: int = 8) -> Program:
    tree = _lua_source()
    src = tree / "src"
    # what debian/rules' configure step writes (the multiarch path patch 0002 includes)
    (src / "lua5.4-deb-multiarch.h").write_text(
        '#ifndef _LUA_DEB_MULTIARCH_\n#define _LUA_DEB_MULTIARCH_\n'
        '#define DEB_HOST_MULTIARCH "x86_64-linux-gnu"\n#endif\n'
    )  # fmt: skip
    sources = sorted(p for p in src.glob("*.c") if p.name != "luac.c")
    outs = []
    for out, cflags, ldflags in _variants("lua"):
        cflags = ["-std=gnu99", *cflags, "-DLUA_COMPAT_5_3", "-DLUA_USE_LINUX"]
        if not _stamped(out, sources + sorted(src.glob("*.h")), cflags + ldflags):
            cmd = ["gcc", *cflags, *map(str, sources), "-o", str(out), *ldflags, "-lm", "-ldl"]
            _run(cmd, "gcc lua5.4")
        outs.append(out)
    script = repo_root() / LUA_SCRIPT
    what = f"lua5.4 (Debian source) {LUA_SCRIPT} {scale}"
    return Program("lua", outs[0], (str(script), str(scale)), what, outs[1])


ZLIB_SOURCES = (
    "adler32", "compress", "crc32", "deflate", "gzclose", "gzlib", "gzread", "gzwrite",
    "infback", "inffast", "inflate", "inftrees", "trees", "uncompr", "zutil",
)  # fmt: skip


def _zlib_source() -> Path:
    tree = Path(os.environ.get("CODEISLAND_ZLIB_SRC", "/var/cache/codeisland/zlib-src"))
    if not (tree / "deflate.c").is_file():
        raise ToolMissing(
            f"zlib's source is not in {tree}: run scripts/bootstrap.sh fetch_port_sources"
        )
    return tree


def _text_input(mib: int) -> Path:
    """A deterministic text of `mib` MiB: words drawn with a fixed seed (compressible, not
    trivially so)."""
    import random

    out = cache_root() / f"text-{mib}mib.txt"
    if out.is_file() and out.stat().st_size == mib << 20:
        return out
    rng = random.Random(15)
    words = [
        "".join(rng.choice("etaoinshrdlucmfwypvbgkqjxz") for _ in range(rng.randint(2, 9)))
        for _ in range(5000)
    ]
    chunks, size = [], 0
    while size < mib << 20:
        line = " ".join(rng.choices(words, k=12)) + "\n"
        chunks.append(line)
        size += len(line)
    out.write_bytes("".join(chunks).encode()[: mib << 20])
    return out


def build_minigzip(mib: int = 12) -> Program:
    tree = _zlib_source()
    sources = [tree / f"{n}.c" for n in ZLIB_SOURCES] + [tree / "test" / "minigzip.c"]
    outs = []
    for out, cflags, ldflags in _variants("minigzip"):
        if not _stamped(out, sources + sorted(tree.glob("*.h")), cflags + ldflags):
            cmd = ["gcc", *cflags, f"-I{tree}", *map(str, sources), "-o", str(out), *ldflags]
            _run(cmd, "gcc minigzip")
        outs.append(out)
    text = _text_input(mib)
    what = f"zlib minigzip -c -9 ({mib} MiB text)"
    return Program("minigzip", outs[0], ("-c", "-9", str(text)), what, outs[1])


# name -> (full-size build, --quick build)
BUILDERS: dict[str, tuple[Callable[[], Program], Callable[[], Program]]] = {
    # rounds for seconds of work on an idle core (0.6 ms a round here), so that the policies get
    # their warm-up windows before the program ends: 150 rounds ended in 0.1 s on a quiet machine
    "islands": (lambda: build_islands(2, 8000), lambda: build_islands(2, 3000)),
    "lua": (lambda: build_lua(8), lambda: build_lua(1)),
    "minigzip": (lambda: build_minigzip(12), lambda: build_minigzip(2)),
}


def build(name: str, quick: bool = False) -> Program:
    if name not in BUILDERS:
        raise UsageError(f"unknown benchmark program {name!r} (known: {', '.join(BUILDERS)})")
    return BUILDERS[name][1 if quick else 0]()
