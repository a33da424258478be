"""Every shipped rate claim meets its error rates at its planned sample size: exact binomial sums, no mesh.

Each declarative scenario in ``scenarios/`` is run against a planning stand-in that keeps policies in
memory (pure plumbing: no Envoy, no traffic). Its declarations go through the same :func:`plan` the real
run uses, and for every rate check at the planned ``n`` this computes, independently of the planner:

* alpha: the chance a policy at exactly the claimed rate fails (at most 0.001);
* beta: the chance a rate ``delta`` away passes (at most 0.05);
* for a claim the model says cannot hold (a strict xfail), the chance it passes anyway at the model's
  rate (at most 0.001), under every profile.

Run with ``-s`` to print the table the closing note quotes.
"""

from __future__ import annotations

import ast
import inspect
import sys
import textwrap
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from scipy.stats import binom

from pytest_meshcheck.errors import MeshcheckError
from pytest_meshcheck.harness.declare import ClosedLoop, Fault
from pytest_meshcheck.harness.plan import PlannedRate
from pytest_meshcheck.harness.policies import as_policy_set
from pytest_meshcheck.harness.scenario import Scenario
from pytest_meshcheck.harness.verify import Declarations
from pytest_meshcheck.istio_version import parse_istio_version
from pytest_meshcheck.policy import PolicySet
from pytest_meshcheck.policy.scale import scale_durations
from pytest_meshcheck.settings import PROFILES, MeshSettings
from pytest_meshcheck.topology import load_topology
from pytest_meshcheck.verdict.power import acceptance_region

SCENARIOS = Path(__file__).resolve().parents[2] / "scenarios"
ALPHA, BETA = MeshSettings().alpha, MeshSettings().beta


class PlanningMesh:
    """The parts of a mesh backend that planning reads: topology, policies in force, Istio version."""

    def __init__(self) -> None:
        self.topology = load_topology()
        self.policies = PolicySet()
        self.istio_version = parse_istio_version(None)


class PlanningPolicies:
    """Applies policies to the planning mesh in memory, replacing same-named objects as the mesh does."""

    def __init__(self, mesh: PlanningMesh) -> None:
        self.mesh = mesh

    def apply(self, policies: Any, *, builtin: bool = True, time_scale: float | None = None) -> PolicySet:
        ps = as_policy_set(policies)
        if time_scale is not None:
            ps = scale_durations(ps, time_scale)
        new = {(p.kind, p.namespace, p.name) for p in (*ps.virtual_services, *ps.destination_rules)}
        old = self.mesh.policies
        self.mesh.policies = PolicySet(
            tuple(v for v in old.virtual_services if (v.kind, v.namespace, v.name) not in new) + ps.virtual_services,
            tuple(d for d in old.destination_rules if (d.kind, d.namespace, d.name) not in new) + ps.destination_rules,
        )
        return ps


def planning_scenario(profile: str) -> Scenario:
    sc = Scenario.__new__(Scenario)
    mesh = PlanningMesh()
    sc.mesh = mesh  # type: ignore[assignment]
    sc.settings = MeshSettings(profile=profile, alpha=ALPHA, beta=BETA)
    sc.policies = PlanningPolicies(mesh)  # type: ignore[assignment]
    sc.services = []
    sc._reasons = []
    sc.declared = Declarations()
    return sc


def scenario_modules() -> list[ModuleType]:
    sys.path.insert(0, str(SCENARIOS))
    try:
        return [__import__(p.stem) for p in sorted(SCENARIOS.glob("test_*.py"))]
    finally:
        sys.path.remove(str(SCENARIOS))


def declarative_scenarios() -> list[tuple[str, Callable[..., None], dict[str, Any], bool]]:
    """(id, function, kwargs, strict xfail?) for every shipped test that takes ``mesh_scenario``."""
    out = []
    for module in scenario_modules():
        for name, fn in inspect.getmembers(module, inspect.isfunction):
            if not name.startswith("test_") or "mesh_scenario" not in inspect.signature(fn).parameters:
                continue
            marks = getattr(fn, "pytestmark", [])
            xfail = any(m.name == "xfail" and m.kwargs.get("strict") for m in marks)
            params = [m for m in marks if m.name == "parametrize"]
            if params:
                names, values = params[0].args[0], params[0].args[1]
                keys = [k.strip() for k in names.split(",")] if isinstance(names, str) else list(names)
                for v in values:
                    out.append((f"{module.__name__}::{name}{list(v)}", fn, dict(zip(keys, v, strict=True)), xfail))
            else:
                out.append((f"{module.__name__}::{name}", fn, {}, xfail))
    return out


def planned_rates(fn: Callable[..., None], kwargs: dict[str, Any], profile: str) -> tuple[list[PlannedRate], int]:
    sc = planning_scenario(profile)
    try:
        fn(sc, **kwargs)
    except (AttributeError, pytest.skip.Exception):
        # A timeline scenario (ejections, timeouts, call chains) drives the mesh itself. A rate it decides
        # must be sized by the planner (requests_for), which test_imperative_rate_checks_meet_alpha_and_beta
        # checks for the rates it names.
        source = inspect.getsource(fn)
        assert "check_rate" not in source or imperative_rates(fn), f"{fn.__name__} decides a rate outside the planner"
        return [], 0
    plan = sc.plan()
    return list(plan.rates), plan.n or 0


def _scan_requests_for(tree: ast.AST, env: dict[str, Any]) -> list[tuple[float, str, float | None]]:
    """``(expected, alternative, delta)`` of each ``requests_for(...)`` call whose arguments evaluate in ``env``."""
    out = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        if node.func.attr != "requests_for" or not node.args:
            continue
        try:
            expected = float(_evaluate(node.args[0], env))
            kw = {k.arg: _evaluate(k.value, env) for k in node.keywords if k.arg}
        except Exception:  # a value only known at run time (a model prediction): not a planned claim
            continue
        delta = kw.get("delta")
        out.append((expected, str(kw.get("alternative", "two-sided")), None if delta is None else float(delta)))
    return out


def _evaluate(node: ast.expr, env: dict[str, Any]) -> Any:
    # Evaluates expressions of our own scenario files (constants, 1 / 3, LB_DELTA), never outside input.
    return eval(compile(ast.Expression(body=node), "<scenario>", "eval"), dict(env))


def imperative_rates(fn: Callable[..., None]) -> list[tuple[float, str, float | None]]:
    """The rates ``fn`` sizes with ``requests_for``, in its body or in a same-module helper it calls.

    A helper's parameters are bound from the test's call (``run_one_slow_replica(sc, policy, 1 / 3, "two-sided")``),
    so a claim sized inside the helper is found with the values the test passes.
    """
    module = sys.modules[fn.__module__]
    env = dict(vars(module))
    tree = ast.parse(textwrap.dedent(inspect.getsource(fn)))
    out = _scan_requests_for(tree, env)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
            continue
        helper = getattr(module, node.func.id, None)
        if not inspect.isfunction(helper) or helper.__module__ != module.__name__:
            continue
        bound: dict[str, Any] = {}
        names = list(inspect.signature(helper).parameters)
        for name, arg in [*zip(names, node.args, strict=False), *((k.arg, k.value) for k in node.keywords)]:
            try:
                bound[str(name)] = _evaluate(arg, env)
            except Exception:  # the scenario fixture, or a run-time value
                continue
        out += _scan_requests_for(ast.parse(textwrap.dedent(inspect.getsource(helper))), {**env, **bound})
    return out


def pass_probability(n: int, region: tuple[int, int], p: float) -> float:
    low, high = region
    return float(sum(binom.pmf(k, n, p) for k in range(low, high + 1)))


SCENARIO_CASES = declarative_scenarios()


def test_every_shipped_rate_scenario_is_found() -> None:
    ids = [c[0] for c in SCENARIO_CASES]
    assert any("test_two_retries_hide_most_503s" in i for i in ids)
    assert any("test_catalog_retries_give_87_5_percent_as_written" in i for i in ids)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize(("case", "fn", "kwargs", "xfail"), SCENARIO_CASES, ids=[c[0] for c in SCENARIO_CASES])
def test_rate_checks_meet_alpha_and_beta(
    case: str, fn: Callable[..., None], kwargs: dict[str, Any], xfail: bool, profile: str
) -> None:
    rates, n = planned_rates(fn, kwargs, profile)
    rows = []
    for r in rates:
        # A check that counts only a share of the requests sees (at worst, but for alpha) this many of them.
        n_eff = n if r.expectation.of_requests >= 1 else int(binom.ppf(ALPHA, n, r.expectation.of_requests))
        region = acceptance_region(n_eff, r.rule.expected, r.rule.alternative, r.rule.alpha)
        alpha = 1 - pass_probability(n_eff, region, r.rule.expected)
        beta = max(pass_probability(n_eff, region, p) for p in r.rule.alternates())
        rows.append((case, r.expectation.name, f"{r.rule.delta:.4g}", n_eff, f"{alpha:.2g}", f"{beta:.3g}"))
        assert alpha <= ALPHA, (case, r.expectation.name, alpha)
        assert not r.note, r.note
        if r.refutation is not None:
            # The model says this claim cannot hold: it must fail at the model's rate with 1 - alpha.
            assert r.model_value is not None
            xpass = pass_probability(n_eff, region, r.model_value)
            assert xpass <= ALPHA, (case, r.expectation.name, xpass)
            rows[-1] += (f"P(pass at model {r.model_value:.4f}) = {xpass:.2g}",)
        elif profile != "smoke":
            # smoke trades power for time on purpose (delta x 1.41); its reports say what it could catch.
            assert beta <= BETA, (case, r.expectation.name, beta)
    if xfail and rates:  # a timeline xfail (exact timing checks) fails deterministically instead
        assert any(r.refutation is not None for r in rates), f"{case}: a strict xfail must be planned to fail"
    if profile == "ci":
        for row in rows:
            print(" | ".join(str(x) for x in row))


IMPERATIVE_CASES = sorted(
    {(case, rate) for case, fn, _, _ in SCENARIO_CASES for rate in imperative_rates(fn)}, key=lambda c: c[0]
)


def test_imperative_rate_scenarios_are_found() -> None:
    assert any("test_scenario_1_corrected" in case for case, _ in IMPERATIVE_CASES)
    # Sized inside a helper, with the values the test passes it.
    assert any("round_robin_as_written" in case and rate[:2] == (1 / 3, "two-sided") for case, rate in IMPERATIVE_CASES)


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize(("case", "rate"), IMPERATIVE_CASES, ids=[f"{c}{r}" for c, r in IMPERATIVE_CASES])
def test_imperative_rate_checks_meet_alpha_and_beta(
    case: str, rate: tuple[float, str, float | None], profile: str
) -> None:
    """A scenario that drives the chain itself sizes its rate checks with requests_for and decides them with
    check_rate, both under the run's rule: at the planned n the rule meets alpha (and beta, but for smoke)."""
    expected, alternative, delta = rate
    sc = planning_scenario(profile)
    n = sc.requests_for(expected, alternative=alternative, delta=delta)
    from pytest_meshcheck.harness.declare import RateExpectation, success
    from pytest_meshcheck.harness.plan import plan_rate

    e = RateExpectation("rate", "claim", alternative, expected, delta, "custom", success)  # type: ignore[arg-type]
    rule = plan_rate(e, expected, None, alpha=ALPHA, beta=BETA, delta_scale=sc.delta_scale).rule
    region = acceptance_region(n, rule.expected, rule.alternative, rule.alpha)
    alpha = 1 - pass_probability(n, region, rule.expected)
    beta = max(pass_probability(n, region, p) for p in rule.alternates())
    assert alpha <= ALPHA, (case, alpha)
    if profile != "smoke":
        assert beta <= BETA, (case, beta)


def test_a_claim_the_model_refutes_is_planned_to_fail() -> None:
    """The planner's refutation is what keeps strict xfails from XPASSing; prove it changes n."""
    fn = next(c[1] for c in SCENARIO_CASES if "as_written" in c[0] and "87_5" in c[0])
    rates, n = planned_rates(fn, {}, "smoke")
    claim = next(r for r in rates if r.expectation.role == "claim")
    assert claim.refutation is not None
    without = replace(claim, refutation=None)
    assert n >= claim.n_needed > without.rule.plan().n


def test_a_limited_fault_next_to_a_rate_claim_is_refused_before_any_request() -> None:
    sc = planning_scenario("ci")
    sc.inject("catalog-service", Fault.error(rate=1.0, status=500, instances=1, limit=3))
    sc.drive("catalog-service", ClosedLoop(concurrency=2))
    sc.expect_success_ratio(at_least=0.9)
    with pytest.raises(MeshcheckError, match=r"limit=3\) ends after 3 errors per instance.*success"):
        sc.plan()
