"""tests/conftest.py: with CI=true every kind of skip fails and an empty run fails; without CI
the skips stay skips."""

from __future__ import annotations

from pathlib import Path

import pytest

CONFTEST = (Path(__file__).parent / "conftest.py").read_text()

SKIPPING = {
    "test_call_skip": "import pytest\ndef test_a():\n    pytest.skip('objdump is not installed')\n",
    "test_mark_skipif": "import pytest\n@pytest.mark.skipif(True, reason='no OVMF')\n"
    "def test_b(): pass\n",
    "test_module_mark": "import pytest\npytestmark = pytest.mark.skip(reason='no lib')\n"
    "def test_c(): pass\n",
    "test_module_level": "import pytest\npytest.skip('no qemu', allow_module_level=True)\n",
}
PASSING = {
    "test_ok": "def test_d(): pass\n",
    "test_xfail": "import pytest\n@pytest.mark.xfail(reason='known')\ndef test_e(): assert False\n",
}


@pytest.fixture
def suite(pytester: pytest.Pytester) -> pytest.Pytester:
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(**SKIPPING, **PASSING)
    return pytester


def test_every_skip_fails_in_ci(suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    result = suite.runpytest_inprocess("-p", "no:cacheprovider")
    outcomes = result.parseoutcomes()
    # a skip while running is a failure, one at setup (marks) an error
    assert outcomes["failed"] == 1 and outcomes["errors"] == 2
    assert outcomes["passed"] == 1 and outcomes["xfailed"] == 1
    assert outcomes["skipped"] == 1  # the module that skips at import, listed and failing the run
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*skipped in CI*missing install step*objdump is not installed*"])
    result.stdout.fnmatch_lines(
        ["*modules skipped at collection*", "*test_module_level.py*no qemu*"]
    )


def test_skips_stay_skips_for_developers(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    result = suite.runpytest_inprocess("-p", "no:cacheprovider")
    assert result.parseoutcomes()["skipped"] == 4
    assert result.ret == pytest.ExitCode.OK


def test_empty_run_fails_in_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    pytester.makeconftest(CONFTEST)
    monkeypatch.setenv("CI", "true")
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*collected no tests, which is a failure*"])
