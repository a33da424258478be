"""MC190 (chained timeouts) and MC191 (retry amplification): positive and negative cases.

The default topology is the platform: order-service calls payment-service, then inventory-service. The platform's
findings as written and its corrected set are pinned in test_lint_rules.py with the other rules'.
"""

from __future__ import annotations

from pathlib import Path

from pytest_meshcheck.cli import platform_policies_dir
from pytest_meshcheck.expect.chain import predict_chain
from pytest_meshcheck.lint import RULES, LintOptions, lint_paths
from pytest_meshcheck.lint.finding import Finding
from pytest_meshcheck.policy.loader import load_policies
from pytest_meshcheck.policy.model import PolicySet
from pytest_meshcheck.topology import load_topology

NS = "platform-core"


def vs(host: str, body: str) -> str:
    return (
        f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: {host}, namespace: {NS}}}\n"
        f"spec:\n  hosts: [{host}]\n  http:\n  - route:\n    - destination: {{host: {host}}}\n{body}"
    )


SAFE = "    retries: {attempts: 2, retryOn: 'connect-failure,refused-stream'}\n"


def lint(tmp_path: Path, *docs: str, **opts: object) -> list[Finding]:
    for i, doc in enumerate(docs):
        (tmp_path / f"p{i}.yaml").write_text(doc)
    return lint_paths([tmp_path], LintOptions(**opts)).findings  # type: ignore[arg-type]


def of(findings: list[Finding], code: str) -> list[Finding]:
    return [f for f in findings if f.code == code]


def test_chained_timeout_positive(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        vs(
            "order-service",
            "    retries: {attempts: 1, perTryTimeout: 2s, retryOn: 'connect-failure'}\n    timeout: 4s\n",
        ),
        vs("payment-service", SAFE + "    timeout: 3s\n"),
    )
    (f,) = of(found, "MC190")
    assert f.file.endswith("p0.yaml")
    assert f.line == 9  # order's perTryTimeout: the limit that cuts payment's 3 s budget
    assert f.path == "spec.http[0].retries.perTryTimeout"
    assert "payment-service" in f.message
    assert "its own budget is 3s" in f.message
    assert "p1.yaml:10" in f.message  # payment's timeout line


def test_chained_timeout_budgets_add_up_in_call_order(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        vs("order-service", "    retries: {attempts: 0}\n    timeout: 4s\n"),
        vs("payment-service", SAFE + "    timeout: 3s\n"),
        vs("inventory-service", SAFE + "    timeout: 2s\n"),
    )
    (f,) = of(found, "MC190")  # each fits alone; 3 s + 2 s does not fit in 4 s
    assert "inventory-service" in f.message
    assert "after the earlier calls' 3s" in f.message
    assert f.path == "spec.http[0].timeout"


def test_chained_timeout_negative(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        vs("order-service", "    retries: {attempts: 0}\n    timeout: 5s\n"),
        vs("payment-service", SAFE + "    timeout: 3s\n"),
        vs("inventory-service", SAFE + "    timeout: 2s\n"),
    )
    assert not of(found, "MC190")


def test_unbounded_dependency_is_not_a_conflicting_budget(tmp_path: Path) -> None:
    assert not of(lint(tmp_path, vs("order-service", "    retries: {attempts: 0}\n    timeout: 5s\n")), "MC190")


def test_retry_amplification_positive(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        vs("order-service", "    retries: {attempts: 2, retryOn: 5xx}\n"),
        vs("payment-service", "    retries: {attempts: 2, retryOn: gateway-error}\n"),
    )
    (f,) = of(found, "MC191")  # 3 x 3 = 9 at payment; inventory has 1.30's default (3 x 1)
    assert "up to 9 calls reach payment-service" in f.message
    assert f.file.endswith("p1.yaml")
    assert f.line == 9
    assert f.path == "spec.http[0].retries.attempts"


def test_retry_amplification_negative(tmp_path: Path) -> None:
    found = lint(
        tmp_path,
        vs("order-service", "    retries: {attempts: 3, retryOn: 5xx}\n"),
        vs("payment-service", SAFE),  # retries only failures that never reached payment's application
        vs("inventory-service", "    retries: {attempts: 1, retryOn: 5xx}\n"),  # 4 x 2 = 8 < 9
    )
    assert not of(found, "MC191")


def test_istio_123_default_retries_amplify(tmp_path: Path) -> None:
    doc = vs("order-service", "    retries: {attempts: 2, retryOn: 5xx}\n")
    old = of(lint(tmp_path, doc, istio="1.23"), "MC191")  # the default retried 503: 3 x 3 at each leaf
    assert [f.line for f in old] == [9, 9]  # reported at order's attempts: the leaves' defaults have no line
    assert "order-service 3 x payment-service 3" in old[1].message
    assert "order-service's 3 tries contribute most of those a file sets" in old[1].message
    assert "payment-service's 3 come from Istio's default retry policy" in old[1].message
    assert not of(lint(tmp_path, doc, istio="1.30"), "MC191")


def chain_topology(tmp_path: Path, calls: str) -> Path:
    """A topology of edge-service, mid-service and leaf-service with the given ``calls`` lines."""
    topo = tmp_path / "topo.yaml"
    topo.write_text(
        f"namespace: {NS}\nservices:\n- name: edge-service\n- name: mid-service\n- name: leaf-service\n"
        "- name: other-service\n"
    )
    text = topo.read_text()
    for line in calls.strip().splitlines():
        name, callee = line.split(" -> ")
        text = text.replace(f"- name: {name}\n", f"- name: {name}\n  calls: [{{service: {callee}}}]\n", 1)
    topo.write_text(text)
    pol = tmp_path / "pol"
    pol.mkdir()
    return topo


def test_amplification_is_reported_at_the_hop_that_contributes_most(tmp_path: Path) -> None:
    topo = chain_topology(tmp_path, "edge-service -> mid-service\nmid-service -> leaf-service")
    found = of(
        lint(
            tmp_path / "pol",
            vs("edge-service", "    retries: {attempts: 8, retryOn: 5xx}\n"),
            vs("mid-service", "    retries: {attempts: 1, retryOn: 5xx}\n"),
            topology=topo,
        ),
        "MC191",
    )
    (f,) = found  # one finding for the one leaf; leaf-service's own hop (1.30's default) adds no tries
    assert f.file.endswith("p0.yaml")  # edge's 9 tries, not mid's 2, which are merely nearer the leaf
    assert f.line == 9
    assert "up to 18 calls reach leaf-service's application" in f.message
    assert "edge-service 9 x mid-service 2 x leaf-service 1" in f.message
    assert "edge-service's 9 tries contribute most" in f.message


def test_a_leaf_under_nine_calls_is_not_reported_whatever_its_hops_retry(tmp_path: Path) -> None:
    topo = chain_topology(tmp_path, "edge-service -> mid-service\nmid-service -> leaf-service")
    found = lint(
        tmp_path / "pol",
        vs("edge-service", "    retries: {attempts: 3, retryOn: 5xx}\n"),  # 4 tries
        vs("mid-service", "    retries: {attempts: 1, retryOn: 5xx}\n"),  # 4 x 2 = 8 at mid: not a leaf anyway
        vs("leaf-service", "    retries: {attempts: 3, retryOn: connect-failure}\n"),  # never reached the app
        topology=topo,
    )
    assert not of(found, "MC191")  # 4 x 2 x 1 = 8 calls at the leaf


def test_calls_to_one_leaf_add_up_over_its_paths(tmp_path: Path) -> None:
    topo = chain_topology(tmp_path, "edge-service -> leaf-service")
    topo.write_text(
        topo.read_text().replace(
            "calls: [{service: leaf-service}]",
            "calls: [{service: leaf-service}, {service: leaf-service, method: POST, path: /again}]",
        )
    )
    found = of(
        lint(
            tmp_path / "pol",
            vs("edge-service", "    retries: {attempts: 2, retryOn: 5xx}\n"),
            vs("leaf-service", "    retries: {attempts: 1, retryOn: 5xx}\n"),
            topology=topo,
        ),
        "MC191",
    )
    (f,) = found  # each path has 3 x 2 = 6 calls; the leaf gets both: 12
    assert "up to 12 calls reach leaf-service's application" in f.message
    assert "edge-service 3 x leaf-service 2 + edge-service 3 x leaf-service 2" in f.message
    assert f.file.endswith("p0.yaml")  # edge's 3 tries contribute most


def test_calls_agree_with_the_chain_model() -> None:
    found = of(lint_paths([platform_policies_dir()]).findings, "MC191")
    policies = PolicySet()
    for file in sorted(platform_policies_dir().glob("*.yaml")):
        if not file.name.endswith(".meshcheck.yaml"):
            policies = policies.merged(load_policies(file))
    pred = predict_chain(load_topology(None), policies, "1.30", "order-service")
    for f in found:
        leaf = f.message.split(" calls reach ")[1].split("'s application")[0]
        assert f.message.startswith(f"up to {pred.calls[leaf].worst} calls reach {leaf}")
    assert len(found) == 2


def test_no_call_graph_no_findings(tmp_path: Path) -> None:
    topo = tmp_path / "topo.yaml"
    topo.write_text(f"namespace: {NS}\nservices:\n- {{name: order-service}}\n- {{name: payment-service}}\n")
    pol = tmp_path / "pol"
    pol.mkdir()
    docs = (
        vs("order-service", "    retries: {attempts: 3, perTryTimeout: 1s, retryOn: 5xx}\n    timeout: 4s\n"),
        vs("payment-service", "    retries: {attempts: 3, retryOn: 5xx}\n    timeout: 20s\n"),
    )
    assert not {"MC190", "MC191"} & {f.code for f in lint(pol, *docs, topology=topo)}
    assert {"MC190", "MC191"} <= {f.code for f in lint(pol, *docs)}


def test_rules_are_documented() -> None:
    for code in ("MC190", "MC191"):
        rule = RULES[code]
        assert rule.summary
        assert rule.why
        assert rule.fix
        assert rule.versions == "all"
        assert rule.issue.startswith("https://github.com/")
