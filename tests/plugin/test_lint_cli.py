"""``meshcheck lint`` end to end: exit codes, formats, ``python -m``, and the ``--mesh-lint`` collector.

Until ``meshcheck lint`` and ``--mesh-lint`` are wired into ``cli.py`` and ``plugin.py``, these call the lint
package's own ``main``/``run`` and load the collector through a tiny conftest plugin.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

import pytest_meshcheck.plugin
from pytest_meshcheck.cli import platform_policies_dir
from pytest_meshcheck.lint import cli as lint_cli

REPO = Path(__file__).resolve().parents[2]
SAMPLES = REPO / "tests" / "data" / "istio" / "samples"

BAD_TIMEOUT = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: pay, namespace: platform-core}
spec:
  hosts: [catalog-service]
  http:
  - route:
    - destination: {host: catalog-service}
    retries: {attempts: 3, perTryTimeout: 5s, retryOn: 5xx}
    timeout: 15s
"""
NO_EJECTION = """\
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cb, namespace: platform-core}
spec:
  host: catalog-service
  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 3}}
"""


def test_exit_0_when_findings_are_below_fail_on(capsys: pytest.CaptureFixture[str]) -> None:
    assert lint_cli.main([str(platform_policies_dir())]) == 0
    out = capsys.readouterr().out
    assert "MC102" in out
    assert "retry-timeout.yaml" in out


def test_exit_1_at_or_above_fail_on(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "vs.yaml").write_text(BAD_TIMEOUT)
    assert lint_cli.main([str(tmp_path)]) == 0  # a warning, default --fail-on error
    assert lint_cli.main(["--fail-on", "warning", str(tmp_path)]) == 1
    (tmp_path / "dr.yaml").write_text(NO_EJECTION)
    assert lint_cli.main([str(tmp_path)]) == 1  # MC120 is an error
    capsys.readouterr()


@pytest.mark.parametrize(
    "argv",
    [[], ["--format", "xml", "x"], ["--fail-on", "fatal", "x"], ["--returns", "abc", "x"], ["does/not/exist"]],
)
def test_usage_errors_exit_4(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert lint_cli.main(argv) == 4
    assert capsys.readouterr().err


def test_bad_istio_version_and_topology_exit_4(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert lint_cli.main(["--istio-version", "1.2", str(tmp_path)]) == 4
    assert lint_cli.main(["--topology", str(tmp_path / "none.yaml"), str(tmp_path)]) == 4
    assert capsys.readouterr().err.count("meshcheck lint:") == 2


def test_directory_without_policies_exits_0_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "deploy.yaml").write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\n")
    assert lint_cli.main([str(tmp_path)]) == 0
    assert "MC002" in capsys.readouterr().out


def test_invalid_file_is_an_error_finding_not_a_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.yaml").write_text("apiVersion: networking.istio.io/v1\nkind: VirtualService\nspec: [\n")
    assert lint_cli.main(["--format", "json", str(tmp_path)]) == 1
    doc = json.loads(capsys.readouterr().out)
    assert {f["code"] for f in doc["findings"]} == {"MC001"}
    assert all(f["file"].endswith("bad.yaml") and f["line"] for f in doc["findings"])


def test_output_file_and_sarif(tmp_path: Path) -> None:
    out = tmp_path / "lint.sarif"
    assert lint_cli.main(["--format", "sarif", "-o", str(out), str(platform_policies_dir())]) == 0
    assert json.loads(out.read_text())["version"] == "2.1.0"


def test_list_rules(capsys: pytest.CaptureFixture[str]) -> None:
    assert lint_cli.main(["--list-rules"]) == 0
    out = capsys.readouterr().out
    assert "MC101" in out
    assert "MC191" in out  # the call-graph rules are implemented: nothing is listed as pending any more
    assert "(pending" not in out


def test_add_parser_registers_lint_on_a_subparsers_object(capsys: pytest.CaptureFixture[str]) -> None:
    parser = argparse.ArgumentParser(prog="meshcheck")
    sub = parser.add_subparsers(dest="command", required=True)
    lint_cli.add_parser(sub)
    args = parser.parse_args(["lint", "--format", "json", str(platform_policies_dir())])
    assert lint_cli.run(args) == 0
    assert json.loads(capsys.readouterr().out)["summary"]["warning"] == 9  # docs/reference/lint.md "Precision"


def test_python_dash_m() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest_meshcheck.lint", "--istio-version", "1.30", str(SAMPLES)],
        capture_output=True,
        text=True,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "MC160" in proc.stdout
    assert "Traceback" not in proc.stderr


# -------------------------------------------------------------------------------------- --mesh-lint

_WIRED = hasattr(pytest_meshcheck.plugin, "collect_lint_file") or "mesh_lint" in Path(
    pytest_meshcheck.plugin.__file__
).read_text(encoding="utf-8")
LINT_CONFTEST = """\
from pytest_meshcheck.lint.pytest_items import add_lint_options, collect_lint_file

def pytest_addoption(parser):
    add_lint_options(parser)

def pytest_collect_file(file_path, parent):
    return collect_lint_file(file_path, parent)
"""


@pytest.fixture
def lint_project(pytester: pytest.Pytester) -> pytest.Pytester:
    if not _WIRED:
        pytester.makeconftest(LINT_CONFTEST)
    pytester.makefile(".yaml", bad_timeout=BAD_TIMEOUT, no_ejection=NO_EJECTION)
    pytester.makefile(".yaml", unrelated="kind: ConfigMap\napiVersion: v1\n")
    return pytester


def test_mesh_lint_collects_policy_files_and_fails_on_errors(lint_project: pytest.Pytester) -> None:
    result = lint_project.runpytest_subprocess("--mesh-lint", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1, failed=1)  # unrelated.yaml is not collected
    result.stdout.fnmatch_lines(["*mesh-lint no_ejection.yaml*", "*: error MC120 maxEjectionPercent unset*"])


def test_mesh_lint_fail_on_warning(lint_project: pytest.Pytester) -> None:
    result = lint_project.runpytest_subprocess(
        "--mesh-lint", "--mesh-lint-fail-on", "warning", "-p", "no:cacheprovider"
    )
    result.assert_outcomes(failed=2)


def test_without_mesh_lint_nothing_is_collected(lint_project: pytest.Pytester) -> None:
    result = lint_project.runpytest_subprocess("-p", "no:cacheprovider")
    assert result.ret == pytest.ExitCode.NO_TESTS_COLLECTED
