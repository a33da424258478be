"""pytest glue for pytest-meshcheck (loaded through the ``pytest11`` entry point ``meshcheck``).

The plugin is inert until a test asks for one of its fixtures: at import and configure time it only
registers options and resolves settings (no Envoy, no cluster, no heavy imports), so ``pytest --help``
and unrelated test runs pay nothing. Under pytest-xdist every worker builds its own mesh (the ``mesh``
fixture is session-scoped, and each worker is its own session); the controller alone writes the index.

Fixtures (see ``docs/reference/fixtures.md``):

========================  ========  ============================================================
``mesh_settings``         session   resolved :class:`~pytest_meshcheck.settings.MeshSettings`
``mesh``                  session   the running mesh (:class:`~pytest_meshcheck.backend.MeshBackend`)
``mesh_policies``         function  apply policies for one test; restored afterwards
``mesh_chaos``            function  destination faults and Istio fault injection; always reverted
``mesh_load``             function  bounded open/closed-loop load through the caller's sidecar
``mesh_prom``             function  Prometheus client bound to the test's time window
``mesh_scenario``         function  a resilience claim: declare, verify, and its HTML report
========================  ========  ============================================================

Every fixture name starts with ``mesh``, so a project's own ``load`` or ``chaos`` fixture never
replaces one of ours. A scenario whose declarations are still pending when the test function returns
is verified right then, inside the test's call phase (``pytest_pyfunc_call``), so a failed claim is a
test failure pointing at the test, not a teardown error.
"""

from __future__ import annotations

import inspect
import time
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from pytest_meshcheck import settings as _settings

if TYPE_CHECKING:
    from pytest_meshcheck.backend import MeshBackend
    from pytest_meshcheck.harness.chaos import Chaos
    from pytest_meshcheck.harness.load import LoadDriver
    from pytest_meshcheck.harness.policies import MeshPolicies
    from pytest_meshcheck.harness.scenario import Scenario
    from pytest_meshcheck.metrics.prom import Prom

SETTINGS_KEY = pytest.StashKey[_settings.MeshSettings]()
RUN_ID_KEY = pytest.StashKey[str]()
MESHES_KEY = pytest.StashKey[list[Any]]()
CALL_REPORT_KEY = pytest.StashKey[pytest.TestReport]()
CALL_EXC_KEY = pytest.StashKey[BaseException | None]()
TRACKER_KEY = pytest.StashKey["ScenarioTracker"]()
OUR_FIXTURES = frozenset({"mesh", "mesh_policies", "mesh_chaos", "mesh_load", "mesh_prom", "mesh_scenario"})
TRACKER_NAME = "meshcheck-scenario-tracker"


class ScenarioTracker:
    """Notices that a test of this run produced a scenario record (on the xdist controller too).

    Only then does the session end read the report directory and write the index: an unrelated run in a
    directory that happens to hold ``reports/`` must not import the report machinery or touch the files.
    """

    def __init__(self) -> None:
        self.seen = False

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        """Scenario tests carry ``meshcheck*`` user properties (workers' reports bring them along)."""
        if not self.seen:
            self.seen = any(str(name).startswith("meshcheck") for name, _ in report.user_properties)


def pytest_addoption(parser: pytest.Parser) -> None:
    """Register the ``--mesh-*`` options and ``mesh_*`` ini keys."""
    _settings.add_options(parser)
    from pytest_meshcheck.lint.options import add_lint_options

    add_lint_options(parser)


def pytest_addhooks(pluginmanager: pytest.PytestPluginManager) -> None:
    """Hooks other plugins implement to extend meshcheck (see :mod:`pytest_meshcheck.hooks`)."""
    from pytest_meshcheck import hooks

    pluginmanager.add_hookspecs(hooks)


def pytest_unconfigure(config: pytest.Config) -> None:
    """Unregister what :func:`pytest_configure` registered."""
    tracker = config.stash.get(TRACKER_KEY, None)
    if tracker is not None and config.pluginmanager.is_registered(tracker):
        config.pluginmanager.unregister(tracker)


def pytest_configure(config: pytest.Config) -> None:
    """Resolve settings (UsageError on bad values), register markers, pick the run id."""
    settings = _settings.resolve(config)
    config.stash[SETTINGS_KEY] = settings
    config.stash[MESHES_KEY] = []
    tracker = ScenarioTracker()
    config.stash[TRACKER_KEY] = tracker
    config.pluginmanager.register(tracker, TRACKER_NAME)
    workerinput = getattr(config, "workerinput", None)
    config.stash[RUN_ID_KEY] = (workerinput.get("meshcheck_run_id", "") if workerinput else "") or uuid.uuid4().hex[:10]
    config.addinivalue_line("markers", "meshcheck: test uses pytest-meshcheck fixtures (applied automatically)")
    if not settings.is_local and not settings.dry_run and not settings.create:
        from pytest_meshcheck.contexts import check_kube_context

        problem = check_kube_context(settings)
        if problem:
            raise pytest.UsageError(f"meshcheck: --mesh-context {settings.context!r}: {problem}")


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """On the xdist controller, hand the run id to every worker, so all records belong to one run."""
    node.workerinput["meshcheck_run_id"] = node.config.stash[RUN_ID_KEY]


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    """Collect ``*.meshcheck.yaml`` claims files (see ``docs/reference/claims.md``).

    The claims code is imported only when such a file is found, so unrelated runs stay light. With
    ``--mesh-lint`` every policy file is also a test item that fails on lint findings.
    """
    if parent.config.getoption("mesh_lint", False):
        from pytest_meshcheck.lint.pytest_items import collect_lint_file

        lint_file = collect_lint_file(file_path, parent)
        if lint_file is not None:
            return lint_file
    if not file_path.name.endswith((".meshcheck.yaml", ".meshcheck.yml")):
        return None
    from pytest_meshcheck.claims.collect import pytest_collect_file as collect_claims

    return collect_claims(file_path, parent)


def pytest_collection_finish(session: pytest.Session) -> None:
    """``--mesh-dry-run``: print what a run would create and check, then exit 0 before anything starts."""
    settings = session.config.stash[SETTINGS_KEY]
    if not settings.dry_run:
        return
    from pytest_meshcheck.contexts import dry_run_plan

    scenarios = [item.nodeid for item in session.items if "mesh_scenario" in getattr(item, "fixturenames", ())]
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    plan = dry_run_plan(settings, scenarios)
    if reporter is not None:
        reporter.write_line(plan)
    else:
        print(plan)
    pytest.exit("meshcheck: dry run complete; nothing was created", returncode=0)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test that uses a meshcheck fixture (so ``-m "not meshcheck"`` works); print our header.

    The header line (context, Istio version, profile, error rates, seed, reports) is printed only when
    a collected test uses the plugin, unlike ``pytest_report_header``, which runs before collection.
    """
    used = False
    for item in items:
        if OUR_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker("meshcheck")
            used = True
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if used and reporter is not None and getattr(config, "workerinput", None) is None:
        reporter.write_line(config.stash[SETTINGS_KEY].header())


@pytest.hookimpl(wrapper=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> Generator[None, Any, Any]:
    """Verify a scenario whose declarations are still pending when the test function returns."""
    result = yield
    scenario = pyfuncitem.funcargs.get("mesh_scenario")
    declared = getattr(scenario, "declared", None)
    if declared is not None and declared.pending:
        __tracebackhide__ = True
        scenario.verify()  # type: ignore[attr-defined]
    return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, Any]:
    """Keep the call-phase report for the scenario fixture; report setup failures of scenarios."""
    report: pytest.TestReport = yield
    if report.when == "call":
        item.stash[CALL_REPORT_KEY] = report
        # The exception object itself (kept off the report, which xdist serialises), so the scenario can
        # tell a failed claim from a broken run.
        item.stash[CALL_EXC_KEY] = call.excinfo.value if call.excinfo is not None else None
    elif report.when == "setup" and report.failed and "mesh_scenario" in getattr(item, "fixturenames", ()):
        from pytest_meshcheck.harness.errors import write_setup_error_record

        path = write_setup_error_record(item, call, item.config.stash[SETTINGS_KEY], item.config.stash[RUN_ID_KEY])
        item.user_properties.append(("meshcheck_report", str(path)))
    return report


# ---------------------------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def mesh_settings(pytestconfig: pytest.Config) -> _settings.MeshSettings:
    """Resolved meshcheck settings (``--mesh-*`` options, environment, ini)."""
    return pytestconfig.stash[SETTINGS_KEY]


@pytest.fixture(scope="session")
def mesh(pytestconfig: pytest.Config, mesh_settings: _settings.MeshSettings) -> Iterator[MeshBackend]:
    """The mesh of the selected context, started once per session (once per xdist worker)."""
    from pytest_meshcheck.contexts import make_backend

    reporter = pytestconfig.pluginmanager.get_plugin("terminalreporter")

    def log(message: str) -> None:
        if reporter is not None and pytestconfig.get_verbosity() >= 0:
            reporter.write_line(f"meshcheck: {message}")

    backend = make_backend(mesh_settings, log=log)
    pytestconfig.stash[MESHES_KEY].append(backend)
    try:
        backend.start()
        backend.wait_for_metrics()
        yield backend
    finally:
        # Each backend honours --mesh-keep itself: the local mesh keeps its work directory (configs, logs;
        # its processes cannot outlive pytest), a cluster keeps its namespace.
        facts = backend.describe()
        backend.stop()
        if mesh_settings.keep and reporter is not None:
            reporter.write_line(f"meshcheck: --mesh-keep: kept {facts}")


@pytest.fixture
def mesh_policies(
    mesh: MeshBackend, mesh_settings: _settings.MeshSettings, request: pytest.FixtureRequest
) -> Iterator[MeshPolicies]:
    """Apply policies for one test; the mesh's previous policies are restored at teardown."""
    from pytest_meshcheck.harness.policies import MeshPolicies

    user = None
    if mesh_settings.policies is not None:
        from pytest_meshcheck.policy import load_policies

        user = load_policies(mesh_settings.policies)
    fixture = MeshPolicies(mesh, user, source=f"{request.node.nodeid} (inline YAML)")
    try:
        yield fixture
    finally:
        fixture.restore()


@pytest.fixture
def mesh_chaos(mesh: MeshBackend, mesh_policies: MeshPolicies) -> Iterator[Chaos]:
    """Faults at the destination (``error``, ``latency``, ``reset``) and Istio fault injection (``istio_*``).

    Every fault still active is reverted at teardown, also when the test failed or was interrupted.
    """
    from pytest_meshcheck.harness.chaos import Chaos

    fixture = Chaos(mesh, mesh_policies)
    try:
        yield fixture
    finally:
        fixture.revert_all()


@pytest.fixture
def mesh_load(mesh: MeshBackend, request: pytest.FixtureRequest) -> Iterator[LoadDriver]:
    """Bounded open- and closed-loop load through the caller's sidecar; one record per request.

    Long runs show a live progress line (phase, requests sent, success ratio) on a terminal, one summary
    line in non-TTY logs, and nothing with ``-q`` or on xdist workers.
    """
    from pytest_meshcheck.harness.load import LoadDriver
    from pytest_meshcheck.report.progress import progress_for

    progress = progress_for(request.config, request.node.name)
    driver = LoadDriver(mesh, progress)
    try:
        yield driver
    finally:
        progress.close()


@pytest.fixture
def mesh_prom(mesh: MeshBackend, request: pytest.FixtureRequest) -> Prom:
    """Prometheus client bound to this test's window (start of the test until each query)."""
    from pytest_meshcheck.metrics.prom import Prom

    return Prom(mesh.prometheus_url, start=time.time(), base_labels=mesh.client_proxy_labels)


@pytest.fixture
def mesh_scenario(
    request: pytest.FixtureRequest,
    mesh: MeshBackend,
    mesh_settings: _settings.MeshSettings,
    mesh_policies: MeshPolicies,
    mesh_chaos: Chaos,
    mesh_load: LoadDriver,
) -> Iterator[Scenario]:
    """One resilience claim (the test's docstring): declare, verify, evidence and its report."""
    from pytest_meshcheck.harness.scenario import Scenario, outcome_of

    doc = inspect.getdoc(getattr(request, "function", None)) or request.node.name
    title, _, description = doc.partition("\n")
    sc = Scenario(
        nodeid=request.node.nodeid,
        title=title.strip(),
        description=description.strip(),
        mesh=mesh,
        settings=mesh_settings,
        policies=mesh_policies,
        chaos=mesh_chaos,
        load=mesh_load,
        report_dir=mesh_settings.report_dir,
        run_id=request.config.stash[RUN_ID_KEY],
    )
    mesh_load.listeners.append(sc.on_load)
    try:
        yield sc
    finally:
        mesh_chaos.revert_all()
        outcome, error, xfail_reason = outcome_of(
            request.node.stash.get(CALL_REPORT_KEY, None), request.node.stash.get(CALL_EXC_KEY, None)
        )
        record = sc.finish(outcome, error=error, xfail_reason=xfail_reason)
        request.config.hook.pytest_meshcheck_scenario_finished(record=record, item=request.node)
        from pytest_meshcheck.report import junit_properties

        request.node.user_properties.extend(junit_properties(record, mesh_settings.report_dir))


# ---------------------------------------------------------------------------------------------- session end


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Safety net (stop meshes a crash left behind); on the controller, write the index."""
    config = session.config
    for backend in config.stash.get(MESHES_KEY, []):
        backend.stop()
    if getattr(config, "workerinput", None) is not None:
        return
    settings = config.stash.get(SETTINGS_KEY, None)
    tracker = config.stash.get(TRACKER_KEY, None)
    if settings is None or tracker is None or not tracker.seen or not Path(settings.report_dir).is_dir():
        return
    from pytest_meshcheck.harness.session import write_run_index

    write_run_index(config, settings, config.stash[RUN_ID_KEY])


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    """The scenario table and the index path."""
    tracker = config.stash.get(TRACKER_KEY, None)
    if tracker is None or not tracker.seen:
        return
    from pytest_meshcheck.harness.session import SUMMARY_KEY

    lines = config.stash.get(SUMMARY_KEY, None)
    if lines:
        terminalreporter.section("meshcheck")
        for line in lines:
            terminalreporter.write_line(line)
