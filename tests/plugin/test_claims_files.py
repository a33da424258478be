"""Claims files under pytest: collection, node ids, selection, fixtures, xfail, errors, JUnit and xdist.

Most runs here replace ``mesh_scenario`` with a recorder (a conftest fixture of the same name), so they
prove the pytest side without a mesh: the claim's calls reach the fixture, the docstring is the title, and
the outcome is pytest's. The last test runs the example claims file and the Python scenarios it mirrors on
the real mesh, in one pytest run, and compares their verdicts claim by claim.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import pytest_meshcheck.plugin
from pytest_meshcheck.claims.compile import compile_file
from pytest_meshcheck.claims.schema import CALL_GRAPH_MESSAGE
from pytest_meshcheck.cli import platform_policies_dir

# Imported here, before any in-process pytester run: pytester forgets the modules a run imported, and numpy
# (which the scenario engine imports) cannot be imported twice in one process.
from pytest_meshcheck.harness import scenario as _scenario  # noqa: F401

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = platform_policies_dir() / "claims.meshcheck.yaml"
# Until plugin.py registers the hook, load it as its own plugin (never both: every claim would be collected twice).
CLAIMS_PLUGIN = (
    [] if hasattr(pytest_meshcheck.plugin, "pytest_collect_file") else ["-p", "pytest_meshcheck.claims.collect"]
)

RETRY = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: catalog-retry, namespace: platform-core}
spec:
  hosts: [catalog-service]
  http:
  - route:
    - destination: {host: catalog-service}
    retries: {attempts: 2, retryOn: 5xx}
"""

CLAIMS = """\
apiVersion: meshcheck/v1alpha1
kind: Claims
defaults:
  policies: [retry.yaml]
  service: catalog-service
claims:
  - name: retries-hide-errors
    title: Two retries hide most 503s.
    description: attempts 2, retryOn 5xx.
    fault: {kind: error, rate: 0.5}
    expect: {success_ratio: {at_least: 0.875, delta: 0.125}}
  - name: claim-that-fails
    title: A claim the recorder fails.
    expect: {success_ratio: {at_least: 0.999}}
  - name: expected-to-fail
    title: A claim the recorder fails, expected.
    xfail: {reason: the recorder fails it}
    expect: {success_ratio: {at_least: 0.999}}
  - name: unexpectedly-passes
    title: A strict xfail that passes.
    xfail: {reason: it should not pass, strict: true}
    expect: {success_ratio: {at_least: 0.5}}
  - name: ejection-claim
    title: An ejection claim.
    expect: {ejection: {after_errors: 5}}
"""

# A stand-in for the Scenario: records each call (and the title the real fixture would read) to a JSON file,
# and fails a claim whose title says so, as verify() would.
RECORDER = """
import inspect
import json
import os
from pathlib import Path

import pytest

from pytest_meshcheck.harness.scenario import ScenarioFailed

OUT = Path(os.environ["CLAIMS_TEST_OUT"])


class Recorder:
    def __init__(self, title):
        self.title = title
        self.calls = []

    def _record(self, method, *args, **kwargs):
        self.calls.append([method, [repr(a) for a in args], {k: repr(v) for k, v in kwargs.items()}])

    def apply(self, *a, **k): self._record("apply", *a, **k)
    def inject(self, *a, **k): self._record("inject", *a, **k)
    def drive(self, *a, **k): self._record("drive", *a, **k)
    def expect_success_ratio(self, *a, **k): self._record("expect_success_ratio", *a, **k)

    def verify(self):
        self._record("verify")
        if "fails" in self.title:
            raise ScenarioFailed(f"{self.title}\\n  claim: success ratio at least 99.90%: observed 0.875")


@pytest.fixture
def mesh_scenario(request):
    title = inspect.getdoc(request.function).splitlines()[0]
    sc = Recorder(title)
    yield sc
    (OUT / f"{request.node.name}.json").write_text(json.dumps({"title": title, "calls": sc.calls}))
"""


def glob(text: str) -> str:
    """``text`` as a literal fnmatch pattern (``claims[4]`` would otherwise be a character class)."""
    return re.sub(r"([\[\]*?])", r"[\1]", text)


@pytest.fixture
def claims_dir(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Path:
    pytester.makefile(".yaml", retry=RETRY)
    (pytester.path / "c.meshcheck.yaml").write_text(CLAIMS)
    pytester.makeconftest(RECORDER)
    out = pytester.mkdir("out")
    monkeypatch.setenv("CLAIMS_TEST_OUT", str(out))
    return out


def test_each_claim_is_an_item_with_its_own_node_id(pytester: pytest.Pytester, claims_dir: Path) -> None:
    result = pytester.runpytest(*CLAIMS_PLUGIN, "--collect-only", "-q")

    result.stdout.fnmatch_lines(
        [
            "c.meshcheck.yaml::retries-hide-errors",
            "c.meshcheck.yaml::claim-that-fails",
            "c.meshcheck.yaml::expected-to-fail",
            "c.meshcheck.yaml::unexpectedly-passes",
            "c.meshcheck.yaml::ejection-claim",
            "5 tests collected*",
        ]
    )


def test_k_and_the_meshcheck_marker_select_claims(pytester: pytest.Pytester, claims_dir: Path) -> None:
    by_name = pytester.runpytest(*CLAIMS_PLUGIN, "-k", "retries-hide or expected-to-fail", "--collect-only", "-q")
    not_meshcheck = pytester.runpytest(*CLAIMS_PLUGIN, "-m", "not meshcheck", "--collect-only", "-q")

    by_name.stdout.fnmatch_lines(["c.meshcheck.yaml::retries-hide-errors", "c.meshcheck.yaml::expected-to-fail"])
    by_name.stdout.fnmatch_lines(["2/5 tests collected (3 deselected)*"])
    # Every claim uses mesh_scenario, so the plugin marks it meshcheck.
    not_meshcheck.stdout.fnmatch_lines(["no tests collected (5 deselected)*"])


def test_claims_run_through_the_mesh_scenario_fixture(pytester: pytest.Pytester, claims_dir: Path) -> None:
    result = pytester.runpytest(*CLAIMS_PLUGIN, "-rA")

    result.assert_outcomes(passed=1, failed=3, xfailed=1)
    passed = json.loads((claims_dir / "retries-hide-errors.json").read_text())
    assert passed["title"] == "Two retries hide most 503s."
    assert [c[0] for c in passed["calls"]] == ["apply", "inject", "drive", "expect_success_ratio", "verify"]
    assert passed["calls"][1][1] == [
        "'catalog-service'",
        "Fault(kind='error', rate=0.5, status=503, delay=0.0, instances=None, limit=None)",
    ]
    assert passed["calls"][2][1] == ["'catalog-service'", "ClosedLoop(concurrency=4, requests=None)"]
    assert passed["calls"][3][2] == {"at_least": "0.875", "delta": "0.125"}


def test_a_failed_claim_names_its_line_and_the_failed_check(pytester: pytest.Pytester, claims_dir: Path) -> None:
    result = pytester.runpytest(*CLAIMS_PLUGIN, "-rA")

    result.stdout.fnmatch_lines(
        [
            "*_ claim claim-that-fails _*",
            "c.meshcheck.yaml:12 claims[1] (claim-that-fails): ScenarioFailed: A claim the recorder fails.",
            "  claim: success ratio at least 99.90%: observed 0.875",
        ]
    )
    # Only the message: no frames of the collector or the compiled claim.
    assert "compile.py" not in result.stdout.str()
    assert "collect.py" not in result.stdout.str()


def test_xfail_is_strict_and_only_for_a_failed_claim(pytester: pytest.Pytester, claims_dir: Path) -> None:
    result = pytester.runpytest(*CLAIMS_PLUGIN, "-rA")

    result.stdout.fnmatch_lines(
        [
            "XFAIL c.meshcheck.yaml::expected-to-fail - the recorder fails it",
            "FAILED c.meshcheck.yaml::unexpectedly-passes - *XPASS(strict)*it should not*",
        ]
    )


def test_a_key_the_scenario_cannot_run_yet_fails_clearly_without_running(
    pytester: pytest.Pytester, claims_dir: Path
) -> None:
    result = pytester.runpytest(*CLAIMS_PLUGIN, "-rA", "-k", "ejection")

    result.assert_outcomes(failed=1, deselected=4)
    result.stdout.fnmatch_lines(
        [
            glob(
                "c.meshcheck.yaml:23 claims[4] (ejection-claim): ClaimNotSupported: c.meshcheck.yaml:25 "
                "claims[4].expect.ejection: compiles to Scenario.expect_ejection(), which this version of "
                "pytest-meshcheck does not have yet"
            )
            + "*",
            "fix: remove the key to run the rest of the claim; nothing was injected or sent",
        ]
    )
    assert json.loads((claims_dir / "ejection-claim.json").read_text())["calls"] == []


def test_junit_names_each_claim_at_its_file_and_line(pytester: pytest.Pytester, claims_dir: Path) -> None:
    junit = pytester.path / "junit.xml"

    pytester.runpytest(*CLAIMS_PLUGIN, f"--junit-xml={junit}", "-o", "junit_family=xunit1")

    cases = {c.attrib["name"]: c for c in ET.parse(junit).getroot().iter("testcase")}
    assert sorted(cases) == sorted(
        ["retries-hide-errors", "claim-that-fails", "expected-to-fail", "unexpectedly-passes", "ejection-claim"]
    )
    ok = cases["retries-hide-errors"]
    assert ok.attrib["file"] == "c.meshcheck.yaml"
    assert ok.attrib["line"] == "6"  # 0-based, as pytest reports every location: the claim starts on line 7
    assert ok.attrib["classname"] == "c.meshcheck.yaml"
    assert [child.tag for child in cases["claim-that-fails"]] == ["failure"]


def test_xdist_runs_the_same_claims_with_the_same_outcomes(pytester: pytest.Pytester, claims_dir: Path) -> None:
    result = pytester.runpytest_subprocess(*CLAIMS_PLUGIN, "-n", "2", "-p", "no:cacheprovider", timeout=120)

    result.assert_outcomes(passed=1, failed=3, xfailed=1)
    assert sorted(p.name for p in claims_dir.iterdir()) == sorted(
        f"{n}.json"
        for n in (
            "retries-hide-errors",
            "claim-that-fails",
            "expected-to-fail",
            "unexpectedly-passes",
            "ejection-claim",
        )
    )


def test_dry_run_lists_the_claims_as_scenarios(pytester: pytest.Pytester, claims_dir: Path) -> None:
    result = pytester.runpytest(*CLAIMS_PLUGIN, "--mesh-dry-run")

    assert result.ret == 0
    result.stdout.fnmatch_lines(
        ["scenario: c.meshcheck.yaml::retries-hide-errors", "scenario: c.meshcheck.yaml::ejection-claim"]
    )


def test_a_schema_error_is_a_collection_error_naming_file_line_key_and_fix(
    pytester: pytest.Pytester, claims_dir: Path
) -> None:
    text = CLAIMS.replace("fault: {kind: error, rate: 0.5}", "fault: {kind: error, rate: 1.5}").replace(
        "expect: {ejection", "expect: {no_duplicate_execution: true, ejection"
    )
    (pytester.path / "c.meshcheck.yaml").write_text(text)

    result = pytester.runpytest(*CLAIMS_PLUGIN)

    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(
        [
            "*ERROR collecting c.meshcheck.yaml*",
            "2 problems in the claims file:",
            "  c.meshcheck.yaml:10 claims[0].fault.rate: 1.5 is not a rate above 0 and at most 1; fix: use e.g. 0.5",
            glob(
                "  c.meshcheck.yaml:25 claims[4].expect.no_duplicate_execution: no_duplicate_execution "
                f"{CALL_GRAPH_MESSAGE}; fix: "
            )
            + "*",
        ]
    )
    assert "Traceback" not in result.stdout.str()


def test_unrelated_yaml_files_are_not_collected(pytester: pytest.Pytester, claims_dir: Path) -> None:
    result = pytester.runpytest(*CLAIMS_PLUGIN, "--collect-only", "-q", "retry.yaml")

    assert "retry.yaml::" not in result.stdout.str()
    result.stdout.fnmatch_lines(["no tests collected*"])


def test_the_example_claims_file_collects(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest(*CLAIMS_PLUGIN, "--collect-only", "-q", str(EXAMPLE))

    assert result.ret == 0, result.stdout.str()
    result.stdout.fnmatch_lines(
        ["*claims.meshcheck.yaml::order-retries-turn-30-percent-errors-into-99-percent", "13 tests collected*"]
    )


# ---------------------------------------------------------------------------------------------- real mesh

# Claim -> the Python scenario it mirrors. The default run takes one claim of each kind (a planned rate, an
# exact latency claim that is a strict xfail, an open-loop breaker) to stay near a minute on two cores;
# MESHCHECK_CLAIMS_ALL=1 compares every claim of the example file (about 2.5 minutes).
MIRRORS = {
    "order-retries-turn-30-percent-errors-into-99-percent": "test_order_retries_turn_30_percent_errors_into_99_percent",
    "catalog-retries-give-87.5-percent-as-written": "test_catalog_retries_give_87_5_percent_as_written",
    "catalog-retries-give-87.5-percent-corrected": "test_catalog_retries_give_87_5_percent_corrected",
    "inventory-times-out-after-8s-not-20s": "test_inventory_times_out_after_8s_not_20s",
    "order-times-out-after-10s-as-written": "test_order_times_out_after_10s_as_written",
    "order-times-out-after-10s-corrected": "test_order_times_out_after_10s_corrected",
    "catalog-no-request-outlives-5s": "test_no_request_outlives_the_total_timeout[catalog-service-5.0]",
    "order-no-request-outlives-10s": "test_no_request_outlives_the_total_timeout[order-service-10.0]",
    "payment-no-request-outlives-15s": "test_no_request_outlives_the_total_timeout[payment-service-15.0]",
    "inventory-no-request-outlives-8s": "test_no_request_outlives_the_total_timeout[inventory-service-8.0]",
    "order-circuit-breaker-ejects-a-failing-instance": "test_order_circuit_breaker_ejects_an_instance_after_5_errors",
    "payment-circuit-breaker-opens-as-written": "test_payment_circuit_breaker_opens_after_3_errors_as_written",
    "payment-circuit-breaker-opens-corrected": "test_payment_circuit_breaker_opens_after_3_errors_corrected",
}
QUICK = (
    "order-retries-turn-30-percent-errors-into-99-percent",
    "order-times-out-after-10s-as-written",
    "payment-circuit-breaker-opens-corrected",
)
RUN_TIMEOUT = 600.0


def test_every_example_claim_has_a_mirror() -> None:
    names = [c.name for c in compile_file(EXAMPLE, display="claims.meshcheck.yaml")]
    assert names == list(MIRRORS)
    python = (REPO / "scenarios" / "test_platform_policies.py").read_text()
    assert all(test.split("[")[0] in python for test in MIRRORS.values())


@pytest.mark.envoy
@pytest.mark.prometheus
def test_example_claims_reach_the_verdicts_of_the_python_scenarios(tmp_path: Path) -> None:
    chosen = list(MIRRORS) if os.environ.get("MESHCHECK_CLAIMS_ALL", "") == "1" else list(QUICK)
    example = EXAMPLE.relative_to(REPO)
    ids = [f"{example}::{c}" for c in chosen] + [f"scenarios/test_platform_policies.py::{MIRRORS[c]}" for c in chosen]
    report_dir = tmp_path / "reports"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_MESHCHECK_", "PYTEST_XDIST_"))}
    env.pop("PYTEST_ADDOPTS", None)
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", *CLAIMS_PLUGIN,
            f"--mesh-report-dir={report_dir}", *ids]  # fmt: skip
    # Its own process group, so a timeout ends pytest by that group's id; the mesh dies with its parent.
    proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        output, _ = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"the run took over {RUN_TIMEOUT:.0f} s and was killed:\n{output[-4000:]}")

    records = [json.loads(p.read_text()) for p in report_dir.glob("*.json") if p.name != "index.json"]
    outcomes = {r["nodeid"].split("::", 1)[1]: r["outcome"] for r in records}
    claims = {c: outcomes.get(c) for c in chosen}
    python = {c: outcomes.get(MIRRORS[c]) for c in chosen}
    assert claims == python, output[-6000:]
    assert set(claims.values()) <= {"passed", "xfailed"}, output[-6000:]
    assert proc.returncode == 0, output[-6000:]
