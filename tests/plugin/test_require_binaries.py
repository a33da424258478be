"""The repository's ``conftest.py``: a test needing a missing binary is skipped locally, but fails in CI.

Each run gets the real root ``conftest.py``. A binary is made missing or present through the lookups the
tests themselves use: ``$PYTEST_MESHCHECK_PROMETHEUS_BIN`` / ``$PYTEST_MESHCHECK_ENVOY_BIN`` pointing at
no file or at a stand-in executable, and ``PATH`` for Chromium.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT_CONFTEST = Path(__file__).resolve().parents[2] / "conftest.py"

TESTS = """
import pytest

def test_plain():
    pass

@pytest.mark.prometheus
def test_needs_prometheus():
    pass

@pytest.mark.envoy
def test_needs_envoy():
    pass

@pytest.mark.chromium
def test_needs_chromium():
    pass
"""


@pytest.fixture
def stand_in(tmp_path: Path) -> Path:
    """An executable file that the lookups accept as the binary (it is never run)."""
    path = tmp_path / "bin" / "stand-in"
    path.parent.mkdir()
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, stand_in: Path) -> pytest.Pytester:
    """The root conftest and :data:`TESTS`, outside CI, with every binary present."""
    monkeypatch.delenv("CI", raising=False)
    pytester.makeconftest(ROOT_CONFTEST.read_text(encoding="utf-8"))
    pytester.makepyfile(test_needs=TESTS)
    monkeypatch.setenv("PYTEST_MESHCHECK_PROMETHEUS_BIN", str(stand_in))
    monkeypatch.setenv("PYTEST_MESHCHECK_ENVOY_BIN", str(stand_in))
    (stand_in.parent / "chromium").symlink_to(stand_in)
    monkeypatch.setenv("PATH", str(stand_in.parent))
    return pytester


def remove_prometheus(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PYTEST_MESHCHECK_PROMETHEUS_BIN", str(tmp_path / "no-such-prometheus"))


def test_every_binary_present_runs_everything_even_in_ci(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")

    result = suite.runpytest("-rA")

    result.assert_outcomes(passed=4)


def test_missing_binary_skips_with_its_name_and_install_command_outside_ci(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    remove_prometheus(monkeypatch, tmp_path)

    result = suite.runpytest("-rs")

    result.assert_outcomes(passed=3, skipped=1)
    reason = "Prometheus is not installed: *apt-get install -y prometheus*. Or run ./dev setup"
    result.stdout.fnmatch_lines([f"SKIPPED *test_needs.py:*: {reason}"])


@pytest.mark.parametrize("ci", ["true", "TRUE", "1", "yes"])
def test_missing_binary_fails_in_ci(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str
) -> None:
    remove_prometheus(monkeypatch, tmp_path)
    monkeypatch.setenv("CI", ci)

    result = suite.runpytest("-rA")

    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.assert_outcomes(passed=3, errors=1)
    text = " ".join(result.stdout.str().split())
    assert "ERROR at setup of test_needs_prometheus" in text
    assert "Prometheus is not installed" in text
    assert "apt-get install -y prometheus" in text
    assert "Or run ./dev setup" in text
    assert f"failing instead of skipping because CI={ci} is set" in text


@pytest.mark.parametrize("ci", ["", "false", "0", "no"])
def test_ci_values_that_are_not_true_keep_skipping(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, ci: str
) -> None:
    remove_prometheus(monkeypatch, tmp_path)
    monkeypatch.setenv("CI", ci)

    result = suite.runpytest()

    result.assert_outcomes(passed=3, skipped=1)


@pytest.mark.parametrize("given", ["cli", "env", "ini"])
def test_require_binaries_option_fails_outside_ci(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, given: str
) -> None:
    remove_prometheus(monkeypatch, tmp_path)
    args = ["--mesh-require-binaries"] if given == "cli" else []
    if given == "env":
        monkeypatch.setenv("PYTEST_MESHCHECK_REQUIRE_BINARIES", "1")
    if given == "ini":
        suite.makeini("[pytest]\nmesh_require_binaries = true\n")

    result = suite.runpytest(*args)

    result.assert_outcomes(passed=3, errors=1)
    assert "failing instead of skipping because --mesh-require-binaries is set" in result.stdout.str()


def test_explicitly_switching_the_option_off_skips_even_in_ci(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    remove_prometheus(monkeypatch, tmp_path)
    monkeypatch.setenv("CI", "true")
    monkeypatch.setenv("PYTEST_MESHCHECK_REQUIRE_BINARIES", "0")

    result = suite.runpytest()

    result.assert_outcomes(passed=3, skipped=1)


def test_each_missing_binary_is_named_in_its_own_tests(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PYTEST_MESHCHECK_ENVOY_BIN", str(tmp_path / "no-such-envoy"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no chromium

    result = suite.runpytest("--mesh-require-binaries")

    result.assert_outcomes(passed=2, errors=2)
    text = " ".join(result.stdout.str().split())
    envoy = text.split("ERROR at setup of test_needs_envoy", 1)[1].split("ERROR at setup of", 1)[0]
    chromium = text.split("ERROR at setup of test_needs_chromium", 1)[1].split("ERROR at setup of", 1)[0]
    assert "Envoy is not installed" in envoy
    assert "no-such-envoy" in envoy
    assert "Or run ./dev setup" in envoy
    assert "Chromium" not in envoy
    assert "Chromium is not installed: neither chromium nor chromium-browser is on PATH" in chromium
    assert "apt-get install chromium" in chromium


def test_a_modules_own_skipif_cannot_turn_the_failure_back_into_a_skip(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # Like tests/integration/test_translate_validate.py: the module skips itself when Envoy is missing.
    suite.makepyfile(
        test_guarded="""
        import pytest

        pytestmark = [pytest.mark.envoy, pytest.mark.skipif(True, reason="no Envoy binary")]

        def test_translate():
            pass
        """
    )
    monkeypatch.setenv("PYTEST_MESHCHECK_ENVOY_BIN", str(tmp_path / "no-such-envoy"))
    monkeypatch.setenv("CI", "true")

    result = suite.runpytest("test_guarded.py")

    result.assert_outcomes(errors=1)
    assert "Envoy is not installed" in result.stdout.str()


def test_a_deselected_test_needing_a_missing_binary_does_not_fail_the_run(
    suite: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    remove_prometheus(monkeypatch, tmp_path)
    monkeypatch.setenv("CI", "true")

    result = suite.runpytest("-k", "not prometheus")

    result.assert_outcomes(passed=3, deselected=1)
