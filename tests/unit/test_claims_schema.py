"""Claims files without a mesh: what the schema accepts, every error it reports, and what a claim compiles to."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from pytest_meshcheck import ClosedLoop, Fault, OpenLoop
from pytest_meshcheck.claims.compile import (
    ClaimNotSupported,
    CompiledClaim,
    compile_file,
    overlay,
)
from pytest_meshcheck.claims.schema import CALL_GRAPH_MESSAGE, ClaimsError
from pytest_meshcheck.cli import platform_policies_dir
from pytest_meshcheck.policy import PolicySet, load_policies, load_policy_text

EXAMPLE = platform_policies_dir() / "claims.meshcheck.yaml"
SERVICES = frozenset({"catalog-service", "order-service", "payment-service", "inventory-service"})
HEADER = "apiVersion: meshcheck/v1alpha1\nkind: Claims\n"
RETRY_VS = """\
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


def write(tmp_path: Path, body: str, *, header: bool = True, name: str = "c.meshcheck.yaml") -> Path:
    (tmp_path / "retry.yaml").write_text(RETRY_VS)
    path = tmp_path / name
    path.write_text((HEADER if header else "") + textwrap.dedent(body))
    return path


def compile_text(tmp_path: Path, body: str, *, header: bool = True) -> list[CompiledClaim]:
    return compile_file(write(tmp_path, body, header=header), display="c.meshcheck.yaml", services=SERVICES)


def errors(tmp_path: Path, body: str, *, header: bool = True) -> list[str]:
    with pytest.raises(ClaimsError) as info:
        compile_text(tmp_path, body, header=header)
    return [str(i) for i in info.value.issues]


def calls(claim: CompiledClaim) -> list[tuple[str, tuple[Any, ...], dict[str, Any]]]:
    return [(c.method, c.args, dict(c.kwargs)) for c in claim.calls]


MINIMAL = """\
claims:
  - name: retries-hide-errors
    title: Two retries hide most 503s.
    service: catalog-service
    fault: {kind: error, rate: 0.5}
    expect:
      success_ratio: {at_least: 0.875, delta: 0.125}
"""


# ---------------------------------------------------------------------------------------------- the example file


@pytest.fixture(scope="module")
def example() -> dict[str, CompiledClaim]:
    return {c.name: c for c in compile_file(EXAMPLE, display="claims.meshcheck.yaml", services=SERVICES)}


def test_example_states_every_platform_claim_once(example: dict[str, CompiledClaim]) -> None:
    assert list(example) == [
        "order-retries-turn-30-percent-errors-into-99-percent",
        "catalog-retries-give-87.5-percent-as-written",
        "catalog-retries-give-87.5-percent-corrected",
        "inventory-times-out-after-8s-not-20s",
        "order-times-out-after-10s-as-written",
        "order-times-out-after-10s-corrected",
        "catalog-no-request-outlives-5s",
        "order-no-request-outlives-10s",
        "payment-no-request-outlives-15s",
        "inventory-no-request-outlives-8s",
        "order-circuit-breaker-ejects-a-failing-instance",
        "payment-circuit-breaker-opens-as-written",
        "payment-circuit-breaker-opens-corrected",
    ]
    strict = {name for name, c in example.items() if c.xfail is not None and c.xfail.strict}
    assert strict == {
        "catalog-retries-give-87.5-percent-as-written",
        "order-times-out-after-10s-as-written",
        "payment-circuit-breaker-opens-as-written",
    }


def test_example_retry_claim_makes_the_python_scenarios_calls(example: dict[str, CompiledClaim]) -> None:
    """The same calls as check_success_claim(mesh_scenario, platform(), "order-service", 0.3, ...)."""
    claim = example["order-retries-turn-30-percent-errors-into-99-percent"]
    got = calls(claim)
    platform = load_policies(platform_policies_dir())

    assert [m for m, _, _ in got] == ["apply", "inject", "drive", "expect_success_ratio", "expect_model_consistency"]
    applied = got[0][1][0]
    assert isinstance(applied, PolicySet)
    assert [vs.name for vs in applied.virtual_services] == [vs.name for vs in platform.virtual_services]
    assert [dr.name for dr in applied.destination_rules] == [dr.name for dr in platform.destination_rules]
    assert got[0][2] == {"time_scale": 0.2}
    assert got[1][1] == ("order-service", Fault.error(rate=0.3, status=500))
    assert got[2][1] == ("order-service", ClosedLoop(concurrency=4))
    assert got[3][2] == {"at_least": 0.99, "delta": 0.017}
    assert got[4][2] == {}
    assert claim.doc.startswith('README "Retry Policy": 30 % errors on order-service')


def test_example_corrected_policy_replaces_the_base_object_like_with_vs(example: dict[str, CompiledClaim]) -> None:
    applied = example["catalog-retries-give-87.5-percent-corrected"].calls[0].args[0]
    catalog = [vs for vs in applied.virtual_services if vs.name == "catalog-service-retry"]

    assert len(catalog) == 1
    assert catalog[0].http[0].retries.attempts == 2
    # The inline object keeps the claims file's lines, so reports and errors point into the claims file.
    src = catalog[0].source
    lines = EXAMPLE.read_text().splitlines()
    assert src.file == "claims.meshcheck.yaml"
    assert "retries: {attempts: 2" in lines[src.field_lines["spec.http[0].retries.attempts"] - 1]
    assert "kind: VirtualService" in src.text
    assert "# Replaces" not in src.text  # the comment above the object is not part of it


def test_example_timeout_claims_scale_delay_and_bounds_but_not_slack(example: dict[str, CompiledClaim]) -> None:
    """README seconds x time_scale, as check_timeout_claim does: 20 s delay -> 4 s, 8 s timeout -> 1.6 s."""
    got = calls(example["inventory-times-out-after-8s-not-20s"])

    assert got[1][1] == ("inventory-service", Fault.latency(4.0))
    assert got[2][1] == ("inventory-service", ClosedLoop(concurrency=8, requests=16))
    assert got[3] == ("expect_every_request", (), {"status": 504})
    assert got[4][0] == "expect_latency"
    assert got[4][2] == pytest.approx({"at_least": 1.6, "at_most": 1.6, "slack": 0.15})


def test_example_breaker_claims_use_their_own_time_scale(example: dict[str, CompiledClaim]) -> None:
    order = calls(example["order-circuit-breaker-ejects-a-failing-instance"])
    payment = calls(example["payment-circuit-breaker-opens-corrected"])

    assert order[0][2] == {"time_scale": 0.1}
    assert order[1][1] == ("order-service", Fault.error(rate=1.0, status=500, instances=1, limit=5))
    assert order[2][1] == ("order-service", OpenLoop(rate=60.0, duration=2.0))
    assert payment[0][2] == {"time_scale": 0.1}
    assert "payment-service-circuit-breaker" in [dr.name for dr in payment[0][1][0].destination_rules]


def test_policy_loader_skips_the_claims_file_next_to_the_policies() -> None:
    policies = load_policies(platform_policies_dir())

    assert len(policies) == 5
    assert any("claims.meshcheck.yaml" in note and "skipped Claims" in note for note in policies.skipped)


# ---------------------------------------------------------------------------------------------- accepted forms


def test_minimal_claim_defaults(tmp_path: Path) -> None:
    (claim,) = compile_text(tmp_path, MINIMAL)

    assert calls(claim) == [
        ("inject", ("catalog-service", Fault.error(rate=0.5, status=503)), {}),
        ("drive", ("catalog-service", ClosedLoop(concurrency=4, requests=None)), {}),
        ("expect_success_ratio", (), {"at_least": 0.875, "delta": 0.125}),
    ]
    assert claim.doc == "Two retries hide most 503s."
    assert claim.spec.where.line == 4
    assert claim.python().splitlines()[-1] == "mesh_scenario.verify()"


def test_defaults_apply_and_claims_override_them_expect_merged_key_by_key(tmp_path: Path) -> None:
    first, second = compile_text(
        tmp_path,
        """\
        defaults:
          policies: [retry.yaml]
          service: catalog-service
          time_scale: 0.5
          load: {concurrency: 2}
          expect: {model_consistency: {delta: 0.1}, success_ratio: {at_least: 0.8}}
        claims:
          - name: a
            title: Defaults only.
          - name: b
            title: Overrides.
            service: order-service
            load: {rate: 20, duration: 500ms, path: /api/orders, headers: {x-version: v2}}
            expect: {model_consistency: false, status_share: [{status: 503, about: 0.5}, {status: 504, at_most: 0.1}]}
        """,
    )

    assert [m for m, _, _ in calls(first)] == ["apply", "drive", "expect_success_ratio", "expect_model_consistency"]
    assert calls(first)[-1][2] == {"delta": 0.1}
    assert calls(first)[1][1] == ("catalog-service", ClosedLoop(concurrency=2))
    got = calls(second)
    assert got[1] == (
        "drive",
        ("order-service", OpenLoop(rate=20.0, duration=0.5)),
        {"headers": {"x-version": "v2"}, "path": "/api/orders"},
    )
    assert got[2:] == [
        ("expect_success_ratio", (), {"at_least": 0.8}),
        ("expect_status_share", (503,), {"about": 0.5}),
        ("expect_status_share", (504,), {"at_most": 0.1}),
    ]


def test_every_expectation_compiles_to_its_scenario_method(tmp_path: Path) -> None:
    (claim,) = compile_text(
        tmp_path,
        """\
        claims:
          - name: all
            title: Everything.
            service: inventory-service
            time_scale: 0.5
            fault:
              - {kind: latency, delay: 2s, rate: 0.5, instances: 1}
              - {kind: reset, rate: 0.25, service: order-service}
            load: {concurrency: 3, requests: 30}
            expect:
              counters:
                - {metric: upstream_rq_retry, equals: client_retries}
                - {metric: upstream_rq_timeout, at_least: 1, at_most: 30, role: claim}
              every_request: {status: 504, max_attempts: 3, attempts: 2}
              latency: {at_most: 1s, percentile: 99, slack: 0.1}
              overflow: {equals: 0}
              ejection: {after_errors: 5, within: 3s, instances: 1}
        """,
    )

    assert calls(claim) == [
        ("inject", ("inventory-service", Fault.latency(1.0, probability=0.5, instances=1)), {}),
        ("inject", ("order-service", Fault.reset(0.25)), {}),
        ("drive", ("inventory-service", ClosedLoop(concurrency=3, requests=30)), {}),
        ("expect_counter", ("upstream_rq_retry",), {"equals": "client_retries"}),
        ("expect_counter", ("upstream_rq_timeout",), {"at_least": 1.0, "at_most": 30.0, "role": "claim"}),
        ("expect_every_request", (), {"status": 504, "max_attempts": 3, "attempts": 2}),
        ("expect_latency", (), {"at_most": 0.5, "percentile": 99.0, "slack": 0.1}),
        ("expect_overflow", (), {"equals": 0}),
        ("expect_ejection", (), {"after_errors": 5, "instances": 1, "within": 3.0}),  # within is not time-scaled
    ]


def test_yaml_anchors_work(tmp_path: Path) -> None:
    first, second = compile_text(
        tmp_path,
        """\
        claims:
          - name: one
            title: First.
            service: catalog-service
            fault: &half {kind: error, rate: 0.5, status: 500}
            expect: &claim {success_ratio: {at_least: 0.5}}
          - name: two
            title: Second.
            service: order-service
            fault: *half
            expect: *claim
        """,
    )

    assert calls(first)[0][1][1] == calls(second)[0][1][1] == Fault.error(rate=0.5, status=500)
    assert calls(first)[-1] == calls(second)[-1]


# ---------------------------------------------------------------------------------------------- running


class Recorder:
    """Stands in for a Scenario: records the calls a claim makes."""

    def __init__(self, *, without: tuple[str, ...] = ()) -> None:
        self.calls: list[str] = []
        self.without = without

    def __getattr__(self, name: str) -> Any:
        if name in self.without or not (name.startswith("expect_") or name in ("apply", "inject", "drive", "verify")):
            raise AttributeError(name)
        return lambda *a, **k: self.calls.append(name)


def test_run_declares_then_verifies_once(tmp_path: Path) -> None:
    (claim,) = compile_text(tmp_path, MINIMAL)
    scenario = Recorder()

    claim.run(scenario)  # type: ignore[arg-type]

    assert scenario.calls == ["inject", "drive", "expect_success_ratio", "verify"]


def test_a_key_whose_scenario_method_is_missing_fails_clearly_before_anything_runs(tmp_path: Path) -> None:
    (claim,) = compile_text(
        tmp_path, MINIMAL.replace("success_ratio: {at_least: 0.875, delta: 0.125}", "ejection: {after_errors: 5}")
    )
    scenario = Recorder(without=("expect_ejection",))

    with pytest.raises(ClaimNotSupported) as info:
        claim.run(scenario)  # type: ignore[arg-type]

    assert scenario.calls == []
    assert str(info.value).startswith(
        "c.meshcheck.yaml:9 claims[0].expect.ejection: compiles to Scenario.expect_ejection(), which this version"
    )
    assert "fix: remove the key" in str(info.value)


# ---------------------------------------------------------------------------------------------- errors


def test_error_names_file_line_key_and_fix(tmp_path: Path) -> None:
    assert errors(tmp_path, MINIMAL.replace("rate: 0.5", "rate: 1.5")) == [
        "c.meshcheck.yaml:7 claims[0].fault.rate: 1.5 is not a rate above 0 and at most 1; fix: use e.g. 0.5"
    ]


def test_unknown_keys_suggest_the_key_meant(tmp_path: Path) -> None:
    body = MINIMAL.replace("success_ratio:", "sucess_ratio:").replace("service: catalog", "servic: catalog")

    assert errors(tmp_path, body) == [
        # A missing key has no line of its own: the claim's line.
        "c.meshcheck.yaml:4 claims[0].service: service is missing; fix: name the service the load calls, e.g. "
        "service: catalog-service",
        "c.meshcheck.yaml:6 claims[0].servic: unknown key 'servic' in a claim; fix: did you mean 'service'?",
        "c.meshcheck.yaml:9 claims[0].expect.sucess_ratio: unknown key 'sucess_ratio' in expect; fix: did you mean "
        "'success_ratio'?",
    ]


def test_unknown_key_without_a_close_match_lists_the_keys(tmp_path: Path) -> None:
    (message,) = errors(tmp_path, MINIMAL.replace("fault: {kind: error, rate: 0.5}", "fault: {kind: error, zzz: 1}"))

    assert message == (
        "c.meshcheck.yaml:7 claims[0].fault.zzz: unknown key 'zzz' in a fault; fix: remove it; a fault takes kind, "
        "service, rate, status, delay, instances, limit"
    )


def test_header_is_required(tmp_path: Path) -> None:
    assert errors(tmp_path, MINIMAL, header=False) == [
        "c.meshcheck.yaml:1 apiVersion: apiVersion is missing; fix: write apiVersion: meshcheck/v1alpha1; the "
        "header also makes the policy loader skip this file next to policies",
        "c.meshcheck.yaml:1 kind: kind is missing; fix: write kind: Claims; the header also makes the policy loader "
        "skip this file next to policies",
    ]


def test_call_graph_claims_are_rejected_until_issue_9(tmp_path: Path) -> None:
    body = MINIMAL.replace(
        "      success_ratio:",
        "      no_duplicate_execution: true\n      calls_per_request: {at_most: 1}\n      success_ratio:",
    ).replace(
        "    service: catalog-service\n",
        "    service: catalog-service\n    call_path: [order-service, payment-service]\n",
    )

    got = errors(tmp_path, body)

    assert got == [
        f"c.meshcheck.yaml:7 claims[0].call_path: a call path through several services {CALL_GRAPH_MESSAGE}; "
        "fix: name the service the client calls with service: (its sidecar applies the policies)",
        f"c.meshcheck.yaml:10 claims[0].expect.no_duplicate_execution: no_duplicate_execution {CALL_GRAPH_MESSAGE}; "
        "fix: remove it; what the caller's sidecar sees is claimable now: "
        "every_request.max_attempts bounds the upstream tries of each request",
        f"c.meshcheck.yaml:11 claims[0].expect.calls_per_request: calls_per_request {CALL_GRAPH_MESSAGE}; "
        "fix: remove it; what the caller's sidecar sees is claimable now: "
        "every_request.max_attempts bounds the upstream tries of each request",
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        pytest.param(
            "service: catalog-service",
            "service: catalog-servce",
            "c.meshcheck.yaml:6 claims[0].service: unknown service 'catalog-servce' (not in the topology); "
            "fix: did you mean 'catalog-service'?",
            id="unknown-service",
        ),
        pytest.param(
            "fault: {kind: error, rate: 0.5}",
            "fault: {kind: eror}",
            "c.meshcheck.yaml:7 claims[0].fault.kind: 'eror' is not a fault kind; fix: did you mean 'error'?",
            id="fault-kind",
        ),
        pytest.param(
            "fault: {kind: error, rate: 0.5}",
            "fault: {kind: latency, delay: 2s, status: 500}",
            "c.meshcheck.yaml:7 claims[0].fault.status: status applies to kind: error, not latency; "
            "fix: remove status:",
            id="status-on-latency",
        ),
        pytest.param(
            "fault: {kind: error, rate: 0.5}",
            "fault: {kind: latency, delay: 2s, limit: 3}",
            "c.meshcheck.yaml:7 claims[0].fault.limit: limit applies to kind: error, not latency; fix: remove limit:",
            id="limit-on-latency",
        ),
        pytest.param(
            "fault: {kind: error, rate: 0.5}",
            "fault: {kind: error, rate: 0.5, limit: 3}",
            "c.meshcheck.yaml:7 claims[0].fault.limit: limit fails the first requests of each instance, so it needs "
            "rate: 1.0, not 0.5; fix: remove rate: or limit:",
            id="limit-with-rate",
        ),
        pytest.param(
            "fault: {kind: error, rate: 0.5}",
            "fault: {kind: error, limit: 0}",
            "c.meshcheck.yaml:7 claims[0].fault.limit: 0 is not a positive integer; fix: use e.g. 3",
            id="limit-zero",
        ),
        pytest.param(
            "fault: {kind: error, rate: 0.5}",
            "fault: {kind: latency}",
            "c.meshcheck.yaml:7 claims[0].fault.delay: a latency fault needs delay; fix: add delay: e.g. 20s "
            "(scaled by time_scale)",
            id="latency-without-delay",
        ),
        pytest.param(
            "fault: {kind: error, rate: 0.5}",
            "fault: {kind: latency, delay: 2 seconds}",
            "c.meshcheck.yaml:7 claims[0].fault.delay: '2 seconds' is not a duration above 0; fix: write seconds or a "
            "duration, e.g. 20s",
            id="bad-duration",
        ),
        pytest.param(
            "fault: {kind: error, rate: 0.5}",
            "fault: {kind: refused}",
            "c.meshcheck.yaml:7 claims[0].fault.kind: 'refused' is modelled only: no chaos state makes a listening "
            "instance refuse connections; fix: use one of error, latency, reset",
            id="refused",
        ),
        pytest.param(
            "fault: {kind: error, rate: 0.5}",
            "load: {concurrency: 2, rate: 10, duration: 1s}",
            "c.meshcheck.yaml:7 claims[0].load.concurrency: concurrency is a closed-loop key, but rate makes this an "
            "open loop; fix: give concurrency (and requests) for a closed loop, or rate and duration for an open loop",
            id="open-and-closed",
        ),
        pytest.param(
            "fault: {kind: error, rate: 0.5}",
            "load: {rate: 10}",
            "c.meshcheck.yaml:7 claims[0].load.duration: an open loop needs duration; fix: add duration: e.g. 2s "
            "(not time-scaled)",
            id="open-without-duration",
        ),
        pytest.param(
            "success_ratio: {at_least: 0.875, delta: 0.125}",
            "success_ratio: {at_least: 0.875, about: 0.9}",
            "c.meshcheck.yaml:9 claims[0].expect.success_ratio: give exactly one of at_least, at_most or about (got "
            "at_least, about); fix: e.g. at_least: 0.99 (a rate between 0 and 1)",
            id="two-bounds",
        ),
        pytest.param(
            "delta: 0.125",
            "delta: 1",
            "c.meshcheck.yaml:9 claims[0].expect.success_ratio.delta: 1 is not a delta between 0 and 1 (exclusive); "
            "fix: use e.g. 0.05: the smallest violation the check must catch",
            id="delta",
        ),
        pytest.param(
            "success_ratio: {at_least: 0.875, delta: 0.125}",
            "latency: {percentile: 99}",
            "c.meshcheck.yaml:9 claims[0].expect.latency: latency needs at_most and/or at_least; fix: e.g. "
            "{at_most: 8s} (scaled by time_scale)",
            id="latency-without-bound",
        ),
        pytest.param(
            "success_ratio: {at_least: 0.875, delta: 0.125}",
            "counters: [{metric: upstream_rq_retry, equals: client_retry}]",
            "c.meshcheck.yaml:9 claims[0].expect.counters[0].equals: 'client_retry' is not a number or a client-side "
            "count; fix: did you mean 'client_retries'?",
            id="counter-count",
        ),
        pytest.param(
            "success_ratio: {at_least: 0.875, delta: 0.125}",
            "every_request: {status: '504'}",
            "c.meshcheck.yaml:9 claims[0].expect.every_request.status: '504' is not an HTTP status; fix: use e.g. 504",
            id="quoted-status",
        ),
        pytest.param(
            "    title: Two retries hide most 503s.\n",
            "    title: Two retries hide most 503s.\n    xfail: {strict: true}\n",
            "c.meshcheck.yaml:6 claims[0].xfail.reason: xfail needs a reason; fix: add reason: why the claim cannot "
            "hold as written",
            id="xfail-reason",
        ),
        pytest.param(
            "name: retries-hide-errors",
            "name: retries hide errors",
            "c.meshcheck.yaml:4 claims[0].name: 'retries hide errors' is not a valid claim name; fix: use letters, "
            "digits, '_', '-' and '.' (at most 100), e.g. catalog-retries-hide-errors",
            id="name",
        ),
    ],
)
def test_each_mistake_is_named_with_its_fix(tmp_path: Path, old: str, new: str, expected: str) -> None:
    assert old in MINIMAL
    assert errors(tmp_path, MINIMAL.replace(old, new)) == [expected]


def test_duplicate_names_are_rejected(tmp_path: Path) -> None:
    body = MINIMAL + MINIMAL.replace("claims:\n", "")

    assert errors(tmp_path, body) == [
        "c.meshcheck.yaml:10 claims[1].name: name 'retries-hide-errors' is also the name of claims[0]; fix: give "
        "every claim its own name (it is the test's node id)"
    ]


def test_a_mistake_in_defaults_is_reported_once(tmp_path: Path) -> None:
    body = "defaults: {time_scale: -1}\n" + MINIMAL + MINIMAL.replace("claims:\n", "").replace("retries-", "other-")

    assert errors(tmp_path, body) == [
        "c.meshcheck.yaml:3 defaults.time_scale: -1 is not a number above 0; fix: use e.g. 0.2 (every policy "
        "duration x 0.2)"
    ]


def test_yaml_syntax_error_has_its_line(tmp_path: Path) -> None:
    (message,) = errors(tmp_path, MINIMAL.replace("expect:\n", "expect: [\n"))

    assert message.startswith("c.meshcheck.yaml:")
    assert "invalid YAML" in message
    assert message.endswith("fix: fix the YAML syntax (check indentation and quoting)")


def test_duplicate_yaml_keys_are_rejected(tmp_path: Path) -> None:
    (message,) = errors(tmp_path, MINIMAL.replace("    fault:", "    service: order-service\n    fault:"))

    assert message.startswith("c.meshcheck.yaml:7 claims[0].service: duplicate key 'service'")


def test_one_document_only(tmp_path: Path) -> None:
    assert errors(tmp_path, MINIMAL + "---\n" + HEADER + MINIMAL) == [
        "c.meshcheck.yaml:11: a claims file holds one YAML document; fix: put every claim in one claims: list"
    ]


def test_missing_policy_file(tmp_path: Path) -> None:
    (message,) = errors(tmp_path, MINIMAL.replace("    service:", "    policies: [nope.yaml]\n    service:"))

    assert message.startswith("c.meshcheck.yaml:6 claims[0].policies[0]: policy path 'nope.yaml' does not exist")
    assert message.endswith("fix: give a file or directory relative to the claims file")


def test_a_bad_policy_file_is_named_with_the_claim_that_uses_it(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text(RETRY_VS.replace("attempts: 2", "attempts: -1"))

    (message,) = errors(tmp_path, MINIMAL.replace("    service:", "    policies: [bad.yaml]\n    service:"))

    assert message.startswith(
        f"c.meshcheck.yaml:6 claims[0].policies[0]: policy {tmp_path / 'bad.yaml'}:9 (document 0)"
    )
    assert "spec.http[0].retries.attempts" in message


def test_a_bad_inline_policy_points_into_the_claims_file(tmp_path: Path) -> None:
    inline = textwrap.indent(RETRY_VS.replace("attempts: 2", "attempts: -1"), "        ").replace(
        "        apiVersion", "      - apiVersion", 1
    )
    body = MINIMAL.replace("    service:", "    policies:\n" + inline + "    service:")

    (message,) = errors(tmp_path, body)

    assert message.startswith("c.meshcheck.yaml:15 claims[0].policies[0].spec.http[0].retries.attempts: ")
    lines = (tmp_path / "c.meshcheck.yaml").read_text().splitlines()
    assert "attempts: -1" in lines[15 - 1]


def test_an_inline_object_of_another_kind_is_rejected(tmp_path: Path) -> None:
    body = MINIMAL.replace(
        "    service:", "    policies:\n      - {apiVersion: v1, kind: Service, metadata: {name: x}}\n    service:"
    )

    assert errors(tmp_path, body) == [
        "c.meshcheck.yaml:7 claims[0].policies[0]: an inline policy must be a VirtualService or DestinationRule of "
        "networking.istio.io; fix: write apiVersion: networking.istio.io/v1 and kind: VirtualService or "
        "DestinationRule"
    ]


def test_every_problem_of_the_file_is_reported_together(tmp_path: Path) -> None:
    body = MINIMAL.replace("rate: 0.5", "rate: 2") + MINIMAL.replace("claims:\n", "").replace(
        "retries-hide-errors", "other"
    ).replace("at_least: 0.875", "at_least: 8")

    with pytest.raises(ClaimsError) as info:
        compile_text(tmp_path, body)

    assert str(info.value).splitlines()[0] == "2 problems in the claims file:"
    assert [i.where.path for i in info.value.issues] == [
        "claims[0].fault.rate",
        "claims[1].expect.success_ratio.at_least",
    ]


# ---------------------------------------------------------------------------------------------- policies


def test_overlay_replaces_same_named_objects_and_drops_their_warnings() -> None:
    base = load_policies(platform_policies_dir())
    assert base.warnings, "circuit-breaker.yaml's consecutiveErrors warning is what this test drops"
    corrected = load_policy_text(
        """
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: order-service-circuit-breaker, namespace: platform-core}
spec:
  host: order-service.platform-core.svc.cluster.local
  trafficPolicy: {outlierDetection: {consecutive5xxErrors: 5}}
""",
        source="<corrected>",
    )

    merged = overlay(base, corrected)

    assert [dr.source.file for dr in merged.destination_rules] == ["<corrected>"]
    assert len(merged.virtual_services) == 4
    assert merged.warnings == ()


def test_inline_policy_followed_by_a_comment_keeps_its_lines(tmp_path: Path) -> None:
    inline = textwrap.indent(RETRY_VS, "        ").replace("        apiVersion", "      - apiVersion", 1)
    body = MINIMAL.replace("    service:", "    policies:\n" + inline + "    # the service under test\n    service:")

    (claim,) = compile_text(tmp_path, body)

    (vs,) = claim.calls[0].args[0].virtual_services
    assert vs.source.file == "c.meshcheck.yaml"
    assert vs.source.line == 7
    assert vs.source.field_lines["spec.http[0].retries.attempts"] == 15
