"""Real scenario runs through pytester-style subprocess runs on the real local mesh (Envoy, echo, Prometheus).

Each run costs a mesh start (Prometheus's first scrape comes about 5.5 s after it starts), so there are
only two runs, each shared by the tests of this module: the scenario file below run serially, and the same
file under ``-n 2``. The file holds one scenario of each kind the plugin must report:

- a claim that holds (retries hide 50 % 503s: 87.5 % success), which passes;
- a claim that cannot hold, which fails with expected vs observed, interval, n, policy lines, report path;
- a fault injected on a service the load never calls, which is an error: "chaos not effective";
- a test that raises inside ``with scenario.chaos.error(...)``, and one that fails with faults applied
  without ``with``: neither may leave a fault behind;
- a last test that reads ``GET /chaos`` of every workload instance through the ``mesh`` fixture.

A session fixture of the run's conftest records which mesh each worker used and, at session end (before
the mesh stops, whose own clean-up would hide a leak), the chaos state of every instance again.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from pytest_meshcheck.report.record import report_stem
from pytest_meshcheck.settings import MeshSettings

pytestmark = [
    pytest.mark.envoy,
    pytest.mark.prometheus,
    pytest.mark.skipif(shutil.which("prometheus") is None, reason="Prometheus not installed: run ./dev setup"),
]

RUN_TIMEOUT = 300.0

CONFTEST = """
import json
import os
from pathlib import Path

import httpx
import pytest

OUT = Path(os.environ["MESHCHECK_TEST_OUT"])
WHO = os.environ.get("PYTEST_XDIST_WORKER", "controller")


def chaos_state(mesh):
    return {i.name: httpx.get(f"{i.admin_url}/chaos", timeout=5.0).json() for i in mesh.instances()}


@pytest.fixture(scope="session", autouse=True)
def mesh_audit(mesh):
    facts = {"worker": WHO, "pid": os.getpid(), "envoy_admin": mesh.envoy_admin_url, "prometheus": mesh.prometheus_url}
    (OUT / f"mesh-{WHO}.json").write_text(json.dumps(facts))
    yield
    (OUT / f"chaos-at-session-end-{WHO}.json").write_text(json.dumps(chaos_state(mesh)))


def pytest_meshcheck_scenario_finished(record, item):
    facts = {"outcome": record.outcome, "checks": len(record.checks), "nodeid": item.nodeid}
    (OUT / f"hook-{item.name}.json").write_text(json.dumps(facts))


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session):
    index = Path(session.config.getoption("mesh_report_dir")) / "index.html"
    (OUT / f"index-at-sessionfinish-{WHO}.json").write_text(json.dumps({"exists": index.exists()}))
"""

SCENARIOS = '''
import json
import os
from pathlib import Path

from conftest import OUT, WHO, chaos_state
from pytest_meshcheck import ClosedLoop, Fault

SERVICE = "catalog-service"
IDLE = "inventory-service"  # the load never calls it
RETRY = """
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


def declare_retry_run(mesh_scenario):
    mesh_scenario.apply(RETRY)
    mesh_scenario.inject(SERVICE, Fault.error(rate=0.5, status=503))
    mesh_scenario.drive(SERVICE, ClosedLoop(concurrency=2))


def test_retries_hide_half_the_errors(mesh_scenario):
    """attempts: 2, retryOn: 5xx turns 50 % 503s at the destination into 87.5 % success."""
    declare_retry_run(mesh_scenario)
    mesh_scenario.expect_success_ratio(at_least=0.875, delta=0.125)
    mesh_scenario.expect_model_consistency(delta=0.1)


def test_claim_that_cannot_hold(mesh_scenario):
    """A wrong claim: attempts: 2 would hide every 503 (it hides 87.5 % of them)."""
    declare_retry_run(mesh_scenario)
    mesh_scenario.expect_success_ratio(at_least=0.999, delta=0.05)


def test_fault_nobody_calls(mesh_scenario):
    """Chaos on inventory-service while the load calls catalog-service proves nothing about retries."""
    mesh_scenario.apply(RETRY)
    mesh_scenario.inject(IDLE, Fault.error(rate=0.5))
    mesh_scenario.drive(SERVICE, ClosedLoop(concurrency=2, requests=40))
    mesh_scenario.expect_success_ratio(at_least=1.0, delta=0.1)


def test_raises_inside_a_fault(mesh_scenario):
    """A test that breaks while a fault is active leaves no fault behind."""
    with mesh_scenario.chaos.error(SERVICE, rate=1.0, status=500):
        mesh_scenario.load.closed(SERVICE, concurrency=1, requests=5)
        (OUT / f"chaos-during-fault-{WHO}.json").write_text(json.dumps(chaos_state(mesh_scenario.mesh)))
        raise RuntimeError("broke in the middle of the fault")


def test_fails_with_faults_applied_without_with(mesh_chaos, mesh_load):
    mesh_chaos.latency(SERVICE, 0.01)
    mesh_chaos.reset(IDLE, 0.5, instances=1)
    mesh_load.closed(SERVICE, concurrency=1, requests=5)
    assert False, "failing with two faults still applied"


def test_no_fault_outlives_its_test(mesh):
    state = chaos_state(mesh)
    (OUT / f"chaos-after-tests-{WHO}-{os.getpid()}.json").write_text(json.dumps(state))
    assert state and all(s["chaos"] == {} for s in state.values()), state
'''

SCENARIO_NAMES = ("test_retries_hide_half_the_errors", "test_claim_that_cannot_hold", "test_fault_nobody_calls",
                  "test_raises_inside_a_fault")  # fmt: skip
# As junit reports them: a failure in the test itself, never an error in set-up or teardown.
EXPECTED_PYTEST = {
    "test_retries_hide_half_the_errors": "passed",
    "test_claim_that_cannot_hold": "failure",
    "test_fault_nobody_calls": "failure",
    "test_raises_inside_a_fault": "failure",
    "test_fails_with_faults_applied_without_with": "failure",
    "test_no_fault_outlives_its_test": "passed",
}
EXPECTED_RECORD = {
    "test_retries_hide_half_the_errors": "passed",
    "test_claim_that_cannot_hold": "failed",
    "test_fault_nobody_calls": "error",
    "test_raises_inside_a_fault": "error",
}


@dataclass
class Run:
    """One finished pytest run of the scenario file."""

    ret: int
    stdout: str
    stderr: str
    out: Path
    report_dir: Path
    junit: Path

    @property
    def lines(self) -> pytest.LineMatcher:
        return pytest.LineMatcher(self.stdout.splitlines())

    def json(self, name: str) -> object:
        return json.loads((self.out / name).read_text())

    def record(self, test: str) -> dict[str, object]:
        data: dict[str, object] = json.loads(
            (self.report_dir / f"{report_stem(f'test_scenarios.py::{test}')}.json").read_text()
        )
        return data

    def junit_cases(self) -> dict[str, ET.Element]:
        root = ET.parse(self.junit).getroot()
        return {case.attrib["name"]: case for case in root.iter("testcase")}

    def pytest_outcomes(self) -> dict[str, str]:
        """Per test: ``passed``, or the junit elements it got (``failure``, ``error``, ``failure+error``...)."""
        outcomes = {}
        for name, case in self.junit_cases().items():
            tags = sorted({child.tag for child in case} & {"failure", "error", "skipped"})
            outcomes[name] = "+".join(tags) or "passed"
        return outcomes


def run_scenarios(base: Path, *extra: str) -> Run:
    """Write the scenario file and conftest in ``base``, run pytest in a subprocess, collect the results."""
    out = base / "out"
    out.mkdir()
    (base / "conftest.py").write_text(CONFTEST)
    (base / "test_scenarios.py").write_text(SCENARIOS)
    report_dir, junit = base / "reports", base / "junit.xml"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_MESHCHECK_", "PYTEST_XDIST_"))}
    env.pop("PYTEST_ADDOPTS", None)
    env["MESHCHECK_TEST_OUT"] = str(out)
    argv = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", f"--mesh-report-dir={report_dir}",
            f"--junit-xml={junit}", "-o", "junit_family=xunit2", *extra]  # fmt: skip
    # Its own process group, so a timeout ends pytest and its xdist workers by that group's id; the mesh
    # processes they started die with their parent (parent-death signal).
    proc = subprocess.Popen(argv, cwd=base, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)  # fmt: skip
    try:
        stdout, stderr = proc.communicate(timeout=RUN_TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        stdout, stderr = proc.communicate()
        pytest.fail(
            f"the scenario run took over {RUN_TIMEOUT:.0f} s and was killed:\n{stdout[-4000:]}\n{stderr[-4000:]}"
        )
    return Run(proc.returncode, stdout, stderr, out, report_dir, junit)


@pytest.fixture(scope="module")
def serial(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_scenarios(tmp_path_factory.mktemp("serial"))


@pytest.fixture(scope="module")
def distributed(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run_scenarios(tmp_path_factory.mktemp("xdist"), "-n", "2")


def test_run_exits_1_with_the_expected_pytest_outcomes(serial: Run) -> None:
    assert serial.ret == pytest.ExitCode.TESTS_FAILED, serial.stdout + serial.stderr
    assert serial.pytest_outcomes() == EXPECTED_PYTEST, serial.stdout


def test_records_and_html_reports_are_written(serial: Run) -> None:
    for test, outcome in EXPECTED_RECORD.items():
        record = serial.record(test)
        assert record["outcome"] == outcome, (test, record["message"])
        assert (serial.report_dir / str(record["report_path"])).is_file()
        html = (serial.report_dir / str(record["report_path"])).read_text()
        assert test in html
    assert (serial.report_dir / "index.html").is_file()
    passing = serial.record("test_retries_hide_half_the_errors")
    checks = passing["checks"]
    assert isinstance(checks, list)
    success = next(c for c in checks if c["name"] == "claim: success ratio at least 87.50%")
    assert success["passed"] is True
    assert success["expected"] == pytest.approx(0.875)
    assert success["n"] >= 100
    assert success["confidence"] == pytest.approx(1 - MeshSettings().alpha)
    assert success["alpha"] <= MeshSettings().alpha
    assert success["beta"] <= 0.05
    assert "would have caught a success ratio below" in success["detects"]
    low, high = success["interval"]
    assert low <= success["observed"] <= high
    assert any(c["name"].startswith("chaos live: error on catalog-service") for c in checks)
    # The plain-fixture test is no scenario: it writes no record.
    assert not list(serial.report_dir.glob("*faults_applied_without_with*"))


def test_terminal_summary_shows_the_table_and_the_index(serial: Run) -> None:
    serial.lines.fnmatch_lines(
        [
            "*= meshcheck =*",
            "scenario*verdict*expected*observed*interval*requests*duration*",
            "*test_retries_hide_half_the_errors*PASSED*claim: success ratio at least 87.50%*0.8750*@99.998%*",
            "*test_claim_that_cannot_hold*0.9990*",
            "*test_fault_nobody_calls*ERROR*",
            "*test_raises_inside_a_fault*ERROR*",
            f"meshcheck: 4 scenario reports -> {(serial.report_dir / 'index.html').resolve().as_uri()}",
        ]
    )


def test_failed_claim_message_has_expected_observed_interval_n_power_policy_and_report(serial: Run) -> None:
    report = (serial.report_dir / f"{report_stem('test_scenarios.py::test_claim_that_cannot_hold')}.html").resolve()
    checks = serial.record("test_claim_that_cannot_hold")["checks"]
    assert isinstance(checks, list)
    claim = next(c for c in checks if c["name"] == "claim: success ratio at least 99.90%")
    # 87.5 % against a claim of 99.9 %: failed, or inconclusive when the sample also fits 94.9 % (never a pass).
    assert claim["role"] == "claim"
    assert claim["outcome"] in ("failed", "inconclusive")
    assert claim["alpha"] <= MeshSettings().alpha
    n = claim["n"]
    serial.lines.fnmatch_lines(
        [
            "*ScenarioFailed: A wrong claim: attempts: 2 would hide every 503*",
            f"* claim: success ratio at least 99.90%: success ratio: claimed at least 99.9 % (delta 0.05), "
            f"observed * (*/{n}), 99.998 % interval * -> *declared at *test_scenarios.py:*would have caught a "
            "success ratio below * with 95 % probability*",
            "*policy lines and defaults involved:*",
            "*retries.attempts*",
            f"*report: {report}",
        ]
    )


def test_every_scenario_calls_the_verdict_hook_with_its_record(serial: Run) -> None:
    for name in SCENARIO_NAMES:
        facts = serial.json(f"hook-{name}.json")
        assert isinstance(facts, dict)
        assert facts["outcome"] == serial.record(name)["outcome"], name
        assert facts["nodeid"].endswith(f"::{name}")


def test_fault_that_never_reached_the_destination_is_chaos_not_effective(serial: Run) -> None:
    record = serial.record("test_fault_nobody_calls")

    assert record["outcome"] == "error"
    assert "chaos not effective" in str(record["message"])
    assert "inventory-service" in str(record["message"])
    serial.lines.fnmatch_lines(["*ChaosNotEffective: chaos not effective: error fault*on inventory-service*"])


def test_junit_xml_carries_expected_observed_interval_and_report_path(serial: Run) -> None:
    case = serial.junit_cases()["test_retries_hide_half_the_errors"]
    props = {p.attrib["name"]: p.attrib["value"] for p in case.iter("property")}
    record = serial.record("test_retries_hide_half_the_errors")

    assert props["meshcheck.verdict"] == "passed"
    claim = "meshcheck.claim_success_ratio_at_least_87_50"
    assert float(props[f"{claim}.expected"]) == pytest.approx(0.875)
    assert 0.0 < float(props[f"{claim}.observed"]) <= 1.0
    low, high = (float(v) for v in props[f"{claim}.interval"].split(","))
    assert low <= float(props[f"{claim}.observed"]) <= high
    assert props[f"{claim}.role"] == "claim"
    assert float(props[f"{claim}.alpha"]) <= 0.001
    assert "would have caught" in props[f"{claim}.detects"]
    assert props["meshcheck.report"] == str(serial.report_dir / str(record["report_path"]))
    not_effective = serial.junit_cases()["test_fault_nobody_calls"]
    assert {p.attrib["name"]: p.attrib["value"] for p in not_effective.iter("property")}["meshcheck.verdict"] == "error"


def test_fault_was_live_during_the_test(serial: Run) -> None:
    during = serial.json("chaos-during-fault-controller.json")

    assert isinstance(during, dict)
    catalog = {k: v for k, v in during.items() if k.startswith("catalog-service")}
    assert len(catalog) == 3
    assert all(v["chaos"] == {"error": {"status": 500, "probability": 1.0}} for v in catalog.values()), during


def test_no_fault_outlives_its_test_or_the_session(serial: Run) -> None:
    after_tests = serial.json(next(p.name for p in serial.out.glob("chaos-after-tests-controller-*.json")))
    at_end = serial.json("chaos-at-session-end-controller.json")

    assert serial.pytest_outcomes()["test_no_fault_outlives_its_test"] == "passed"
    for state in (after_tests, at_end):
        assert isinstance(state, dict)
        assert len(state) == 13  # every instance of the default topology
        assert all(v["chaos"] == {} for v in state.values()), state


def test_xdist_gives_the_same_verdicts(serial: Run, distributed: Run) -> None:
    assert distributed.ret == serial.ret, distributed.stdout + distributed.stderr
    assert distributed.pytest_outcomes() == serial.pytest_outcomes()
    for test in EXPECTED_RECORD:
        assert distributed.record(test)["outcome"] == serial.record(test)["outcome"]


def test_xdist_runs_one_mesh_per_worker(distributed: Run) -> None:
    meshes = {p.name: distributed.json(p.name) for p in distributed.out.glob("mesh-*.json")}

    assert sorted(meshes) == ["mesh-gw0.json", "mesh-gw1.json"]
    facts = list(meshes.values())
    assert all(isinstance(f, dict) for f in facts)
    assert len({f["pid"] for f in facts}) == 2  # type: ignore[index]
    assert len({f["envoy_admin"] for f in facts}) == 2  # type: ignore[index]
    assert len({f["prometheus"] for f in facts}) == 2  # type: ignore[index]
    for worker in ("gw0", "gw1"):
        state = distributed.json(f"chaos-at-session-end-{worker}.json")
        assert isinstance(state, dict)
        assert len(state) == 13
        assert all(v["chaos"] == {} for v in state.values()), state


def test_xdist_index_is_written_once_by_the_controller(distributed: Run) -> None:
    seen = {p.name: distributed.json(p.name) for p in distributed.out.glob("index-at-sessionfinish-*.json")}
    index = json.loads((distributed.report_dir / "index.json").read_text())

    assert seen == {
        "index-at-sessionfinish-gw0.json": {"exists": False},
        "index-at-sessionfinish-gw1.json": {"exists": False},
        "index-at-sessionfinish-controller.json": {"exists": True},
    }
    assert sorted(s["nodeid"].split("::")[1] for s in index["scenarios"]) == sorted(SCENARIO_NAMES)
    assert len({s["context"]["run_id"] for s in index["scenarios"]}) == 1
    distributed.lines.fnmatch_lines(
        [f"meshcheck: 4 scenario reports -> {(distributed.report_dir / 'index.html').resolve().as_uri()}"]
    )
    assert distributed.stdout.count("scenario reports -> ") == 1
