"""In CI (CI=true) a skipped test is a failed test, and a run that collects nothing fails.

Test files skip themselves when OVMF, objdump, QEMU or the native libraries are missing, which is
convenient on a developer's machine.  CI installs all of them (scripts/bootstrap.sh), so a skip
there means an install step is broken.  A skip that is deliberate even in CI is listed in
CI_ALLOWED_SKIPS by node id, with its reason.

The emulator's driver tests run once per driver build: a test module opts in with
`DRIVER_BUILDS = (...)` (ids of edk2_common.DRIVER_BUILDS); each of its tests then runs with
CODEISLAND_DRIVER pointing at that build's PE, module-scoped so the module's own fixtures (booted
machines, plans) are made again for every build.
"""

from __future__ import annotations

import os
from collections.abc import Generator, Iterator

import pytest

pytest_plugins = ["pytester"]  # tests/test_ci_strict.py runs this file's hooks on small suites

# node id -> why it may skip in CI as well.  Empty: every skip in CI is a failure.
CI_ALLOWED_SKIPS: dict[str, str] = {}


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def _as_failure(report: pytest.TestReport) -> None:
    if not (report.skipped and _in_ci()) or hasattr(report, "wasxfail"):
        return
    if report.nodeid in CI_ALLOWED_SKIPS:
        return
    report.outcome = "failed"
    report.longrepr = (
        f"skipped in CI (CI=true), which means a missing install step: {_reason(report)}"
    )


def _reason(report: pytest.CollectReport | pytest.TestReport) -> str:
    return report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport() -> Generator[None, pytest.TestReport, None]:
    outcome = yield
    _as_failure(outcome.get_result())


# A module that skips itself at import cannot become a failed test without stopping the whole
# collection; it is remembered and fails the session at the end instead.
_ci_skipped_modules: list[str] = []


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report() -> Generator[None, pytest.CollectReport, None]:
    outcome = yield
    report = outcome.get_result()
    if report.skipped and _in_ci() and report.nodeid not in CI_ALLOWED_SKIPS:
        _ci_skipped_modules.append(f"{report.nodeid}: {_reason(report)}")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    empty = exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED
    if _ci_skipped_modules or (_in_ci() and empty):
        # exit 5 (nothing collected) is easily taken for "nothing to do": in CI it is a failure
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, exitstatus: int) -> None:
    if _ci_skipped_modules:
        terminalreporter.write_line("CI: modules skipped at collection (a missing install step):")
        for line in _ci_skipped_modules:
            terminalreporter.write_line(f"  {line}")
    elif _in_ci() and exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED:
        terminalreporter.write_line("CI: pytest collected no tests, which is a failure")


# -- driver builds ------------------------------------------------------------------------------


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    builds = getattr(metafunc.module, "DRIVER_BUILDS", None)
    if builds and "driver_build" in metafunc.fixturenames:
        metafunc.parametrize("driver_build", builds, indirect=True, scope="module")


@pytest.fixture(scope="module", autouse=True)
def driver_build(request: pytest.FixtureRequest) -> Iterator[str]:
    build = getattr(request, "param", "clang")
    if build == "clang":
        yield build
        return
    from edk2_common import DRIVER_BUILDS  # here: tests/test_ci_strict.py copies this file alone

    pe = DRIVER_BUILDS[build]()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CODEISLAND_DRIVER", str(pe))
        yield build
