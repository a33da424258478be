"""Every lint rule fires on a minimal mistake (positive) and stays quiet on its correction (negative).

Policies are written to files so findings carry real file:line locations. The default topology is the
platform (every service 3 x v1; order-service also 1 x v2), which the subset and ejection rules rely on.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import pytest

from pytest_meshcheck.cli import platform_policies_dir
from pytest_meshcheck.lint import RULES, LintOptions, Severity, lint_paths
from pytest_meshcheck.lint.finding import Finding
from pytest_meshcheck.lint.run import LintUsageError

NS = "platform-core"


def vs(route: str, host: str = "catalog-service", name: str = "vs", extra: str = "") -> str:
    body = textwrap.indent(textwrap.dedent(route).strip("\n"), "    ")
    return (
        f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {name}, namespace: {NS}}}\n"
        f"spec:\n  hosts: [{host}]\n{extra}  http:\n  - route:\n    - destination: {{host: {host}}}\n{body}\n"
    )


def dr(policy: str, host: str = "catalog-service", name: str = "dr") -> str:
    body = textwrap.indent(textwrap.dedent(policy).strip("\n"), "  ")
    return (
        f"apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {{name: {name}, namespace: {NS}}}\n"
        f"spec:\n  host: {host}\n{body}\n"
    )


def lint(tmp_path: Path, *docs: str, **opts: object) -> list[Finding]:
    for i, doc in enumerate(docs):
        (tmp_path / f"p{i}.yaml").write_text(doc)
    return lint_paths([tmp_path], LintOptions(**opts)).findings  # type: ignore[arg-type]


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


GATEWAY_ONLY = (
    "trafficPolicy: {outlierDetection: {consecutive5xxErrors: 0, consecutiveGatewayErrors: 3, maxEjectionPercent: 100}}"
)
RETRY_OK = "retries: {attempts: 3, perTryTimeout: 1s, retryOn: '5xx,reset'}\ntimeout: 4s"

# (rule, positive documents, negative documents, lint options)
CASES: list[tuple[str, tuple[str, ...], tuple[str, ...], dict[str, object]]] = [
    (
        "MC101",
        (vs("fault: {abort: {httpStatus: 503, percentage: {value: 50}}}\n" + RETRY_OK),),
        (vs("fault: {abort: {httpStatus: 503, percentage: {value: 50}}}\nretries: {attempts: 0}"),),
        {},
    ),
    ("MC102", (vs("retries: {attempts: 3, perTryTimeout: 5s, retryOn: 5xx}\ntimeout: 15s"),), (vs(RETRY_OK),), {}),
    ("MC102", (vs("retries: {attempts: 2, perTryTimeout: 5s, retryOn: 5xx}\ntimeout: 5s"),), (vs(RETRY_OK),), {}),
    ("MC103", (vs("retries: {attempts: 3, perTryTimeout: 1s, retryOn: 5xx}\ntimeout: 5s"),), (vs(RETRY_OK),), {}),
    (
        "MC104",
        (vs("retries: {attempts: 3, perTryTimeout: 1s, retryOn: 'connect-failure,503'}\ntimeout: 4s"),),
        (vs(RETRY_OK),),
        {},
    ),
    (
        "MC110",
        (vs("retries: {attempts: 2, retryOn: gateway-error}"),),
        (
            vs("retries: {attempts: 2, retryOn: 'gateway-error,500'}"),
            vs("retries: {attempts: 2, retryOn: 5xx}", host="order-service", name="o"),
        ),
        {},
    ),
    (
        "MC111",
        (vs("retries: {attempts: 2}"),),
        (vs("retries: {attempts: 2, retryOn: '503,connect-failure'}"),),
        {},
    ),
    ("MC111", (vs("retries: {attempts: 2}"),), (vs("retries: {attempts: 2}"),), {"istio": "1.23"}),
    (
        "MC120",
        (dr("trafficPolicy: {outlierDetection: {consecutive5xxErrors: 3}}"),),
        (dr("trafficPolicy: {outlierDetection: {consecutive5xxErrors: 3, maxEjectionPercent: 34}}"),),
        {},
    ),
    (
        "MC121",
        (dr("trafficPolicy: {outlierDetection: {consecutiveErrors: 3, maxEjectionPercent: 100}}"),),
        (dr("trafficPolicy: {outlierDetection: {consecutive5xxErrors: 3, maxEjectionPercent: 100}}"),),
        {},
    ),
    (
        "MC122",
        (dr(GATEWAY_ONLY),),
        (dr(GATEWAY_ONLY),),
        {"returns": (503,)},
    ),
    (
        "MC123",
        (dr("trafficPolicy: {outlierDetection: {maxEjectionPercent: 100, minHealthPercent: 70}}"),),
        (dr("trafficPolicy: {outlierDetection: {maxEjectionPercent: 100, minHealthPercent: 0}}"),),
        {},
    ),
    (
        "MC130",
        (dr("trafficPolicy: {connectionPool: {tcp: {maxConnections: 10}}}"),),
        (dr("trafficPolicy: {connectionPool: {tcp: {maxConnections: 10}, http: {http1MaxPendingRequests: 5}}}"),),
        {},
    ),
    (
        "MC140",
        (vs("fault: {delay: {fixedDelay: 2s}}"),),
        (vs("fault: {delay: {fixedDelay: 2s, percentage: {value: 100}}}"),),
        {},
    ),
    (
        "MC150",
        (vs("retries: {attempts: 3, retryOn: '5xx,reset'}", host="payment-service"),),
        (vs("retries: {attempts: 3, retryOn: 'connect-failure,refused-stream'}", host="payment-service"),),
        {},
    ),
    (
        "MC150",
        (
            vs("retries: {attempts: 3, retryOn: 5xx}", extra="").replace(
                "  - route:", "  - match: [{method: {exact: POST}}]\n    route:"
            ),
        ),
        (
            vs("retries: {attempts: 3, retryOn: 5xx}").replace(
                "  - route:", "  - match: [{method: {exact: GET}}]\n    route:"
            ),
        ),
        {},
    ),
    (
        "MC151",
        (vs("timeout: 5s", host="payment-service"),),
        (vs("timeout: 5s", host="payment-service"),),
        {"istio": "1.23"},
    ),
    (
        "MC160",
        (vs(RETRY_OK, name="a"), vs(RETRY_OK, name="b")),
        (vs(RETRY_OK, name="a"), vs(RETRY_OK, host="order-service", name="b")),
        {},
    ),
    (
        "MC161",
        (
            dr("trafficPolicy: {loadBalancer: {simple: RANDOM}}", name="a"),
            dr("trafficPolicy: {loadBalancer: {simple: RANDOM}}", name="b"),
        ),
        (dr("trafficPolicy: {loadBalancer: {simple: RANDOM}}", name="a"),),
        {},
    ),
    (
        "MC170",
        (dr("subsets: [{name: v9, labels: {version: v9}}]"),),
        (dr("subsets: [{name: v1, labels: {version: v1}}]"),),
        {},
    ),
    (
        "MC171",
        (
            vs(RETRY_OK).replace("{host: catalog-service}", "{host: catalog-service, subset: v2}"),
            dr("subsets: [{name: v1, labels: {version: v1}}]"),
        ),
        (
            vs(RETRY_OK).replace("{host: catalog-service}", "{host: catalog-service, subset: v1}"),
            dr("subsets: [{name: v1, labels: {version: v1}}]"),
        ),
        {},
    ),
    ("MC180", (dr("subsets: []", host="nowhere-service"),), (dr("subsets: []"),), {}),
    (
        "MC001",
        ("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: x}\nspec: {hosts: 3}\n",),
        (vs(RETRY_OK),),
        {},
    ),
]


@pytest.mark.parametrize(
    ("code", "positive", "negative", "opts"), CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)]
)
def test_rule_positive_and_negative(
    tmp_path: Path, code: str, positive: tuple[str, ...], negative: tuple[str, ...], opts: dict[str, object]
) -> None:
    pos, neg = tmp_path / "pos", tmp_path / "neg"
    pos.mkdir()
    neg.mkdir()
    neg_opts = dict(opts)
    if code == "MC111" and opts.get("istio") == "1.23":
        # Before 1.24 the default retried 503: the positive is the same policy on 1.30.
        pos_found = codes(lint(pos, *positive))
        neg_found = codes(lint(neg, *negative, **neg_opts))
    elif code == "MC151":
        pos_found = codes(lint(pos, *positive, **opts))
        neg_found = codes(lint(neg, *negative))  # on 1.30 the default retries nothing after the request was sent
    elif code == "MC122":
        pos_found = codes(lint(pos, *positive))  # default --returns 500,503: 500 never counts
        neg_found = codes(lint(neg, *negative, **neg_opts))
    else:
        pos_found = codes(lint(pos, *positive, **opts))
        neg_found = codes(lint(neg, *negative, **neg_opts))
    assert code in pos_found
    assert code not in neg_found


# Rules on the call graph need a topology with calls: their positive and negative cases are in test_lint_chains.py.
TESTED_ELSEWHERE = {"MC002", "MC190", "MC191"}


def test_every_rule_has_a_test_and_a_complete_description() -> None:
    tested = {c[0] for c in CASES} | TESTED_ELSEWHERE
    assert tested == set(RULES)
    for rule in RULES.values():
        assert rule.summary
        assert rule.why
        assert rule.fix
        assert rule.versions
        assert not rule.issue or rule.issue.startswith("https://github.com/")
        assert not rule.scenario or Path(rule.scenario.split("::")[0]).exists()


def test_findings_carry_file_and_line(tmp_path: Path) -> None:
    found = lint(tmp_path, vs("retries: {attempts: 3, perTryTimeout: 5s, retryOn: 5xx}\ntimeout: 15s"))
    (f,) = [f for f in found if f.code == "MC102"]
    assert f.file.endswith("p0.yaml")
    assert f.line == 10  # the `timeout:` line
    assert f.path == "spec.http[0].timeout"
    assert f.resource == f"VirtualService {NS}/vs"


def test_routed_empty_subset_is_an_error(tmp_path: Path) -> None:
    route = vs(RETRY_OK).replace("{host: catalog-service}", "{host: catalog-service, subset: v9}")
    found = lint(tmp_path, route, dr("subsets: [{name: v9, labels: {version: v9}}]"))
    (f,) = [f for f in found if f.code == "MC170"]
    assert f.level is Severity.ERROR


def test_unrouted_empty_subset_is_a_warning_not_a_load_error(tmp_path: Path) -> None:
    (f,) = [f for f in lint(tmp_path, dr("subsets: [{name: v9, labels: {version: v9}}]")) if f.code == "MC170"]
    assert f.level is Severity.WARNING


def test_small_topology_makes_default_max_ejection_fail(tmp_path: Path) -> None:
    topo = tmp_path / "topo.yaml"
    topo.write_text(
        "namespace: platform-core\nservices:\n"
        "- {name: catalog-service, port: 8080, versions: [{name: v1, replicas: 12}]}\n"
    )
    pol = tmp_path / "pol"
    pol.mkdir()
    doc = dr("trafficPolicy: {outlierDetection: {consecutive5xxErrors: 3}}")
    assert "MC120" in codes(lint(pol, doc))
    assert "MC120" not in codes(lint(pol, doc, topology=topo))  # 12 hosts: 10 % ejects one


def test_broken_files_are_findings_not_tracebacks(tmp_path: Path) -> None:
    (tmp_path / "bad.yaml").write_text("apiVersion: networking.istio.io/v1\nkind: VirtualService\n  oops: [\n")
    (tmp_path / "latin1.yaml").write_bytes(b"kind: VirtualService\n# caf\xe9\n")
    (tmp_path / "good.yaml").write_text(vs("retries: {attempts: 3, perTryTimeout: 5s, retryOn: 5xx}\ntimeout: 15s"))
    found = lint_paths([tmp_path]).findings
    bad = [f for f in found if f.code == "MC001"]
    assert {Path(f.file).name for f in bad} == {"bad.yaml", "latin1.yaml"}
    assert any(f.line for f in bad if f.file.endswith("bad.yaml"))
    assert "MC102" in codes(found)  # the valid file is still linted


def test_empty_directory_gives_a_note(tmp_path: Path) -> None:
    result = lint_paths([tmp_path])
    assert not result.findings
    assert result.notes
    assert "MC002" in result.notes[0]


def test_missing_path_and_bad_version_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(LintUsageError):
        lint_paths([tmp_path / "nope"])
    with pytest.raises(LintUsageError):
        lint_paths([tmp_path], LintOptions(istio="banana"))


# ------------------------------------------------------------------------------------------- precision

EXPECTED_PLATFORM = [
    ("circuit-breaker.yaml", 20, "MC121"),  # consecutiveErrors ignored since 1.7
    # order's 2 s per try cuts inventory's 8 s route timeout (which starts only after payment's 15 s)...
    ("retry-timeout.yaml", 22, "MC190"),
    # ...and payment's 15 s route timeout (5 s x 4 tries would be 20 s: the 15 s binds)
    ("retry-timeout.yaml", 22, "MC190"),
    ("retry-timeout.yaml", 24, "MC103"),  # order: 10s vs 2s x 4 tries: the route timeout never fires
    ("retry-timeout.yaml", 42, "MC103"),  # catalog: 5s vs 1s x 4 tries
    # payment: order's 4 tries x payment's 4 (5xx,reset retry after the request was sent) = 16 calls; tied with
    # order, so the hop nearest the leaf is reported
    ("retry-timeout.yaml", 57, "MC191"),
    ("retry-timeout.yaml", 59, "MC150"),  # payment retries 5xx,reset after the request was sent
    ("retry-timeout.yaml", 60, "MC102"),  # payment: 15s < 5s x 4 tries: the last try never runs
    ("retry-timeout.yaml", 75, "MC191"),  # inventory: order's 4 tries x inventory's 4 = 16 calls
]


def test_platform_policies_as_written_give_exactly_the_expected_findings() -> None:
    found = lint_paths([platform_policies_dir()]).findings
    assert [(Path(f.file).name, f.line, f.code) for f in found] == EXPECTED_PLATFORM
    assert all(f.level is Severity.WARNING for f in found)
    chain = [f.message for f in found if f.code in ("MC190", "MC191")]
    assert "before inventory-service (GET /check)" in chain[0]
    assert "its own budget is 8s" in chain[0]
    assert "after the earlier calls' 15s" in chain[0]
    assert "before payment-service (POST /pay)" in chain[1]
    assert "its own budget is 15s" in chain[1]
    assert chain[2].startswith("up to 16 calls reach payment-service's application")
    assert chain[3].startswith("up to 16 calls reach inventory-service's application")


def corrected_platform(tmp_path: Path) -> Path:
    """The platform's policies with the smallest edits that give zero findings (docs/reference/lint.md "Precision").

    Order-service calls payment-service, then inventory-service, for every request (the default topology), so
    the corrections must hold along that chain too.
    """
    for src in platform_policies_dir().glob("*.yaml"):
        if not src.name.endswith(".meshcheck.yaml"):
            shutil.copy(src, tmp_path / src.name)
    cb = tmp_path / "circuit-breaker.yaml"
    cb.write_text(cb.read_text().replace("consecutiveErrors: 5           #", "consecutive5xxErrors: 5        #"))
    rt = tmp_path / "retry-timeout.yaml"
    docs = rt.read_text().split("---\n")
    # Order: one attempt waits on payment and then inventory, so no per-try limit shorter than their budgets
    # can hold (MC190), and 10 s / 4 tries leaves 2.5 s at most. Drop the per-try timeout: the 10 s route
    # timeout, the user's budget, bounds the request (and MC103 no longer applies).
    docs[0] = docs[0].replace("      perTryTimeout: 2s              # Each attempt timeout\n", "")
    docs[1] = docs[1].replace("perTryTimeout: 1s", "perTryTimeout: 1.25s")  # catalog: 4 x 1.25 s = 5 s (MC103)
    # Payment: retry only failures before the request was sent (MC150; it also ends 4 x 4 = 16 calls, MC191),
    # without a per-try timeout, which would not be retried then (MC104). Its single real attempt gets the
    # README's per-attempt 5 s as its route timeout, so that it fits in order's 10 s with inventory (MC190).
    docs[2] = (
        docs[2]
        .replace("retryOn: 5xx,reset,connect-failure,refused-stream", "retryOn: connect-failure,refused-stream")
        .replace("      perTryTimeout: 5s\n", "")
        .replace("timeout: 15s", "timeout: 5s")
    )
    # Inventory: 2 tries of the README's 2 s instead of 4: order's 4 tries x 2 = 8 calls stay under 9 (MC191), and
    # they take 4 s, so 5 s + 4 s fit in order's 10 s with 1 s for order's own work (MC190). The route timeout
    # follows the tries' 4 s (MC103).
    docs[3] = docs[3].replace("attempts: 3", "attempts: 1").replace("timeout: 8s", "timeout: 4s")
    rt.write_text("---\n".join(docs))
    return tmp_path


def test_corrected_platform_policies_give_zero_findings(tmp_path: Path) -> None:
    assert lint_paths([corrected_platform(tmp_path)]).findings == []


INVENTORY = (
    "attempts: 1\n      perTryTimeout: 2s\n      retryOn: 5xx,reset,connect-failure,refused-stream\n    timeout: 4s"
)


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("consecutive5xxErrors: 5 ", "consecutiveErrors: 5 ", {"MC121"}),
        ("perTryTimeout: 1.25s", "perTryTimeout: 1s", {"MC103"}),
        # order's per-try timeout back: 2 s cannot hold payment's 5 s, nor payment's 5 s + inventory's 4 s
        (
            "      retryOn: 5xx,reset,connect-failure,refused-stream\n    timeout: 10s",
            "      perTryTimeout: 2s\n      retryOn: 5xx,reset,connect-failure,refused-stream\n    timeout: 10s",
            {"MC103", "MC190"},
        ),
        (
            "retryOn: connect-failure,refused-stream\n    timeout: 5s",
            "retryOn: 5xx,reset\n    timeout: 5s",
            {"MC150", "MC191"},  # payment retries after the request was sent: order's 4 tries x 4 = 16 calls
        ),
        (
            "retryOn: connect-failure,refused-stream\n    timeout: 5s",
            "retryOn: connect-failure,refused-stream\n    timeout: 15s",
            {"MC190"},  # payment's 15 s alone outlasts order's 10 s
        ),
        ("attempts: 1\n", "attempts: 3\n", {"MC102", "MC191"}),  # 4 x 4 = 16 inventory calls; 4 s < 4 x 2 s
        ("timeout: 4s", "timeout: 8s", {"MC103"}),  # 2 tries x 2 s end by 4.03 s: 8 s never fires
        (INVENTORY, INVENTORY.replace("1", "3").replace("4s", "8s"), {"MC190", "MC191"}),  # inventory as written
    ],
)
def test_each_correction_matters(tmp_path: Path, old: str, new: str, expected: set[str]) -> None:
    fixed = corrected_platform(tmp_path)
    file = fixed / ("circuit-breaker.yaml" if "consecutive" in old else "retry-timeout.yaml")
    text = file.read_text()
    assert text.count(old) == 1, f"{old!r} must name exactly one place in {file.name}"
    file.write_text(text.replace(old, new))
    assert {f.code for f in lint_paths([fixed]).findings} == expected
