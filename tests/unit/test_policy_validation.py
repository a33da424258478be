"""Every admission rule, with an accepted and a rejected example, and the deprecation warnings."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from pytest_meshcheck.errors import PolicyError, PolicyIssue
from pytest_meshcheck.policy import PolicySet, PolicyWarning, load_policy_text, parse_policy_documents, schema

# Vendored (tests/data/istio/README.md) so the field tables are checked on every checkout.
CRD = Path(__file__).resolve().parents[1] / "data" / "istio" / "crd-networking.1.30.3.yaml"
DEST = {"destination": {"host": "order-service"}}


def vs(route: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """A valid VirtualService whose first http route is extended by ``route`` and spec by ``spec``."""
    body: dict[str, Any] = {"hosts": ["order-service"], "http": [{"route": [DEST], **(route or {})}]}
    body.update(spec)
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "vs", "namespace": "platform-core"},
        "spec": body,
    }


def dr(traffic_policy: dict[str, Any] | None = None, **spec: Any) -> dict[str, Any]:
    """A valid DestinationRule with ``traffic_policy`` and extra ``spec`` fields."""
    body: dict[str, Any] = {"host": "order-service"}
    if traffic_policy is not None:
        body["trafficPolicy"] = traffic_policy
    body.update(spec)
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "DestinationRule",
        "metadata": {"name": "dr", "namespace": "platform-core"},
        "spec": body,
    }


def retries(**fields: Any) -> dict[str, Any]:
    return vs({"retries": fields})


def fault(**fields: Any) -> dict[str, Any]:
    return vs({"fault": fields})


def outlier(**fields: Any) -> dict[str, Any]:
    return dr({"outlierDetection": fields})


def lb(**fields: Any) -> dict[str, Any]:
    return dr({"loadBalancer": fields})


def pool(**fields: Any) -> dict[str, Any]:
    return dr({"connectionPool": fields})


def load(doc: dict[str, Any]) -> PolicySet:
    return load_policy_text(yaml.safe_dump(doc, sort_keys=False), source="p.yaml")


def issues(doc: dict[str, Any]) -> list[PolicyIssue]:
    with pytest.raises(PolicyError) as err:
        load(doc)
    return err.value.issues


def the_issue(doc: dict[str, Any], path: str) -> PolicyIssue:
    """The only issue of ``doc``, which must be at ``path``."""
    found = issues(doc)
    assert [i.path for i in found] == [path], [str(i) for i in found]
    assert found[0].fix, "every issue says how to fix it"
    return found[0]


def the_warning(policies: PolicySet, path: str) -> PolicyWarning:
    found = [w for w in policies.warnings if w.path == path]
    assert len(found) == 1, [str(w) for w in policies.warnings]
    return found[0]


R0 = "spec.http[0]"
RETRY = f"{R0}.retries"
TP = "spec.trafficPolicy"
OD = f"{TP}.outlierDetection"
LB = f"{TP}.loadBalancer"


# --- accepted ------------------------------------------------------------------------------------------

GOOD = {
    "minimal VS": vs(),
    "retries": retries(attempts=3, perTryTimeout="2s", retryOn="5xx,reset,connect-failure,refused-stream"),
    "retryOn with grpc and codes": retries(attempts=1, retryOn="unavailable,cancelled,503,+504,0429,retriable-4xx"),
    "attempts 0 alone": retries(attempts=0),
    "attempts 0 with empty retryOn": retries(attempts=0, retryOn=""),
    "timeout Go syntax": vs({"timeout": "1h2m3.5s"}),
    "timeout 1ms": vs({"timeout": "1ms"}),
    "weights not summing to 100": vs({"route": [{**DEST, "weight": 1}, {**DEST, "weight": 1}]}),
    "single destination weight 0": vs({"route": [{**DEST, "weight": 0}]}),
    "weights with a zero": vs({"route": [{**DEST, "weight": 0}, {**DEST, "weight": 5}]}),
    "fault percentage 0.0001": fault(abort={"httpStatus": 503, "percentage": {"value": 0.0001}}),
    "fault percentage 100": fault(delay={"fixedDelay": "1s", "percentage": {"value": 100}}),
    "abort 200": fault(abort={"httpStatus": 200, "percentage": {"value": 1}}),
    "abort 599": fault(abort={"httpStatus": 599, "percentage": {"value": 1}}),
    "abort grpc": fault(abort={"grpcStatus": "UNAVAILABLE", "percentage": {"value": 1}}),
    "regex RE2 unicode class": vs({"match": [{"uri": {"regex": r"^/\pL+$"}}]}),
    "regex inline flag": vs({"match": [{"uri": {"regex": "/api(?i)/orders"}}]}),
    "empty exact": vs({"match": [{"uri": {"exact": ""}}]}),
    "header match": vs({"match": [{"headers": {"x-user_id": {"exact": "a"}}}]}),
    "gateway and mesh": vs(gateways=["mesh", "istio-system/public"]),
    "wildcard host with gateway": vs(hosts=["*"], gateways=["istio-system/public"]),
    "IP host": vs(hosts=["10.0.0.1"]),
    "FQDN hosts": vs(hosts=["order-service.platform-core.svc.cluster.local", "*.example.com"]),
    "DR subsets": dr(subsets=[{"name": "v1", "labels": {"version": "v1", "app.kubernetes.io/name": "x"}}]),
    "split local origin": outlier(consecutiveLocalOriginFailures=3, splitExternalLocalOriginErrors=True),
    "percentages 0 and 100": outlier(maxEjectionPercent=100, minHealthPercent=0),
    "tcp pool only": pool(tcp={"maxConnections": 1}),
    "http pool only": pool(http={"http1MaxPendingRequests": 1}),
    "simple LB": lb(simple="LEAST_REQUEST"),
    "hash header": lb(consistentHash={"httpHeaderName": "x-user"}),
    "hash source ip": lb(consistentHash={"useSourceIp": True}),
    "hash query + maglev": lb(consistentHash={"httpQueryParameterName": "u", "maglev": {"tableSize": 65537}}),
    "only warmup": lb(warmup={"duration": "30s"}),
    "uint32 outlier": outlier(consecutive5xxErrors=4294967295),
    "h2 upgrade": pool(http={"h2UpgradePolicy": "UPGRADE", "useClientProtocol": False}),
}


@pytest.mark.parametrize("doc", list(GOOD.values()), ids=list(GOOD))
def test_accepted(doc: dict[str, Any]) -> None:
    assert len(load(doc)) == 1


def test_weights_are_kept() -> None:
    route = load(vs({"route": [{**DEST, "weight": 0}, {**DEST, "weight": 5}]})).virtual_services[0].http[0]
    assert [d.weight for d in route.route] == [0, 5]


# --- rejected ------------------------------------------------------------------------------------------

BAD: dict[str, tuple[dict[str, Any], str, str]] = {
    # types (the CRD's structural schema)
    "attempts string": (retries(attempts="3"), f"{RETRY}.attempts", "expected an integer, got a string ('3')"),
    "attempts float": (retries(attempts=3.5), f"{RETRY}.attempts", "expected an integer"),
    "attempts bool": (retries(attempts=True), f"{RETRY}.attempts", "expected an integer, got a boolean"),
    "attempts int32 overflow": (retries(attempts=2**31), f"{RETRY}.attempts", "out of range for int32"),
    "timeout number": (vs({"timeout": 10}), f"{R0}.timeout", "expected a duration string"),
    "host number": (
        vs({"route": [{"destination": {"host": 123}}]}),
        f"{R0}.route[0].destination.host",
        "expected a string",
    ),
    "hosts string": (vs(hosts="order-service"), "spec.hosts", "expected a list of strings"),
    "http mapping": (vs(http={"route": []}), "spec.http", "expected a list of HTTPRoute"),
    "label value int": (
        dr(subsets=[{"name": "v1", "labels": {"version": 1}}]),
        "spec.subsets[0].labels.version",
        'quote the value: version: "1"',
    ),
    "ignoreUriCase string": (
        vs({"match": [{"ignoreUriCase": "yes"}]}),
        f"{R0}.match[0].ignoreUriCase",
        "expected a boolean",
    ),
    "percentage string": (
        fault(abort={"httpStatus": 503, "percentage": {"value": "50"}}),
        f"{R0}.fault.abort.percentage.value",
        "expected a number",
    ),
    "percentage huge": (
        fault(abort={"httpStatus": 503, "percentage": {"value": 10**400}}),
        f"{R0}.fault.abort.percentage.value",
        "not a finite number",
    ),
    "percentage nan": (
        fault(abort={"httpStatus": 503, "percentage": {"value": float("nan")}}),
        f"{R0}.fault.abort.percentage.value",
        "not a finite number",
    ),
    "route element null": (
        vs({"route": [DEST, None]}),
        f"{R0}.route[1]",
        "expected a mapping (HTTPRouteDestination), got null",
    ),
    "enum": (lb(simple="FASTEST"), f"{LB}.simple", "'FASTEST' is not one of"),
    "h2 enum": (pool(http={"h2UpgradePolicy": "yes"}), f"{TP}.connectionPool.http.h2UpgradePolicy", "is not one of"),
    # durations
    "duration unit": (vs({"timeout": "1d"}), f"{R0}.timeout", "unknown unit 'd'"),
    "duration no unit": (vs({"timeout": "10"}), f"{R0}.timeout", "missing unit"),
    "duration below 1ms": (retries(attempts=1, perTryTimeout="1.5us"), f"{RETRY}.perTryTimeout", "below 1ms"),
    "duration sub-ms": (vs({"timeout": "1.0005s"}), f"{R0}.timeout", "finer than a millisecond"),
    "timeout 0s": (vs({"timeout": "0s"}), f"{R0}.timeout", "below 1ms"),
    "negative duration": (outlier(interval="-1s"), f"{OD}.interval", "below 1ms"),
    "cookie ttl negative": (
        lb(consistentHash={"httpCookie": {"name": "c", "ttl": "-1s"}}),
        f"{LB}.consistentHash.httpCookie.ttl",
        "negative",
    ),
    # negatives and zeros
    "attempts negative": (retries(attempts=-1), f"{RETRY}.attempts", "cannot be negative"),
    "weight negative": (vs({"route": [{**DEST, "weight": -1}]}), f"{R0}.route[0].weight", "weight -1 < 0"),
    "max connections negative": (
        pool(tcp={"maxConnections": -1}),
        f"{TP}.connectionPool.tcp.maxConnections",
        "non-negative",
    ),
    "pending negative": (
        pool(http={"http1MaxPendingRequests": -5}),
        f"{TP}.connectionPool.http.http1MaxPendingRequests",
        "non-negative",
    ),
    "max retries negative": (pool(http={"maxRetries": -1}), f"{TP}.connectionPool.http.maxRetries", "non-negative"),
    "attempts 0 + perTryTimeout": (
        retries(attempts=0, perTryTimeout="1s"),
        f"{RETRY}.attempts",
        "attempts are set to 0",
    ),
    "attempts 0 + retryOn": (retries(attempts=0, retryOn="5xx"), f"{RETRY}.attempts", "attempts are set to 0"),
    "attempts 0 + remote false": (
        retries(attempts=0, retryRemoteLocalities=False),
        f"{RETRY}.attempts",
        "attempts are set to 0",
    ),
    "attempts unset + perTryTimeout": (
        retries(perTryTimeout="5s"),
        f"{RETRY}.attempts",
        "attempts is not set, so it is 0",
    ),
    "port 0": (
        vs({"route": [{"destination": {"host": "a", "port": {"number": 0}}}]}),
        f"{R0}.route[0].destination.port.number",
        "1..65535",
    ),
    "port 70000": (
        vs({"route": [{"destination": {"host": "a", "port": {"number": 70000}}}]}),
        f"{R0}.route[0].destination.port.number",
        "1..65535",
    ),
    # retryOn
    "retryOn space": (
        retries(attempts=1, retryOn="5xx, reset"),
        f"{RETRY}.retryOn",
        "' reset' (istiod splits on ',' without trimming",
    ),
    "retryOn trailing comma": (
        retries(attempts=1, retryOn="5xx,"),
        f"{RETRY}.retryOn",
        "'' is not a valid retryOn policy",
    ),
    "retryOn unknown": (retries(attempts=1, retryOn="5xx,timeout"), f"{RETRY}.retryOn", "'timeout' is not a valid"),
    "retryOn unknown code": (retries(attempts=1, retryOn="999"), f"{RETRY}.retryOn", "'999' is not a valid"),
    "retryOn 306": (retries(attempts=1, retryOn="306"), f"{RETRY}.retryOn", "'306' is not a valid"),
    # weights
    "total weight 0": (
        vs({"route": [{**DEST, "weight": 0}, {**DEST, "weight": 0}]}),
        f"{R0}.route",
        "total destination weight = 0",
    ),
    "two unweighted": (vs({"route": [DEST, DEST]}), f"{R0}.route", "total destination weight = 0"),
    # percentages
    "delay percentage > 100": (
        fault(delay={"fixedDelay": "1s", "percentage": {"value": 100.5}}),
        f"{R0}.fault.delay.percentage.value",
        "0.0001..100",
    ),
    "abort percentage < 0": (
        fault(abort={"httpStatus": 503, "percentage": {"value": -1}}),
        f"{R0}.fault.abort.percentage.value",
        "0.0001..100",
    ),
    "percentage too small": (
        fault(abort={"httpStatus": 503, "percentage": {"value": 0.00001}}),
        f"{R0}.fault.abort.percentage.value",
        "0.0001..100",
    ),
    "delay percent 101": (
        fault(delay={"fixedDelay": "1s", "percent": 101}),
        f"{R0}.fault.delay.percent",
        "not in range 0..100",
    ),
    "maxEjectionPercent 101": (outlier(maxEjectionPercent=101), f"{OD}.maxEjectionPercent", "not in range 0..100"),
    "maxEjectionPercent -1": (outlier(maxEjectionPercent=-1), f"{OD}.maxEjectionPercent", "not in range 0..100"),
    "minHealthPercent 101": (outlier(minHealthPercent=101), f"{OD}.minHealthPercent", "not in range 0..100"),
    # fault
    "abort 199": (
        fault(abort={"httpStatus": 199, "percentage": {"value": 1}}),
        f"{R0}.fault.abort.httpStatus",
        "200-599",
    ),
    "abort 600": (
        fault(abort={"httpStatus": 600, "percentage": {"value": 1}}),
        f"{R0}.fault.abort.httpStatus",
        "200-599",
    ),
    "exponentialDelay": (
        fault(delay={"exponentialDelay": "1s", "percentage": {"value": 1}}),
        f"{R0}.fault.delay.exponentialDelay",
        "rejected by Istio",
    ),
    "http2Error": (
        fault(abort={"http2Error": "x", "percentage": {"value": 1}}),
        f"{R0}.fault.abort.http2Error",
        "Istio rejects http2Error",
    ),
    "abort both": (
        fault(abort={"httpStatus": 503, "grpcStatus": "UNAVAILABLE", "percentage": {"value": 1}}),
        f"{R0}.fault.abort",
        "exactly one",
    ),
    "grpc unknown": (
        fault(abort={"grpcStatus": "BROKEN", "percentage": {"value": 1}}),
        f"{R0}.fault.abort.grpcStatus",
        "'BROKEN' is not supported",
    ),
    "fault empty": (fault(), f"{R0}.fault", "must have an abort and/or a delay"),
    "delay without fixedDelay": (
        fault(delay={"percentage": {"value": 1}}),
        f"{R0}.fault.delay.fixedDelay",
        "delay needs fixedDelay",
    ),
    "abort.percent unknown": (
        fault(abort={"httpStatus": 503, "percent": 5, "percentage": {"value": 1}}),
        f"{R0}.fault.abort.percent",
        "unknown field 'percent'",
    ),
    # hosts
    "no hosts": (vs(hosts=[]), "spec.hosts", "delegate"),
    "hosts missing": ({**vs(), "spec": {"http": vs()["spec"]["http"]}}, "spec.hosts", "hosts is missing"),
    "DR host missing": ({**dr(), "spec": {"subsets": []}}, "spec.host", "host is required"),
    "mesh wildcard host": (vs(hosts=["*"]), "spec.hosts[0]", "wildcard host * is not allowed"),
    "bad host": (vs(hosts=["order_service"]), "spec.hosts[0]", "is not a DNS-1123 label"),
    "duplicate hosts": (vs(hosts=["a.example.com", "*.example.com"]), "spec.hosts", "duplicate hosts"),
    "destination *": (
        vs({"route": [{"destination": {"host": "*"}}]}),
        f"{R0}.route[0].destination.host",
        "invalid destination host *",
    ),
    "numeric TLD": (
        vs({"route": [{"destination": {"host": "10.0.0.1"}}]}),
        f"{R0}.route[0].destination.host",
        "all-numeric",
    ),
    "destination string": (
        vs({"route": [{"destination": "order-service"}]}),
        f"{R0}.route[0].destination",
        "expected a mapping (Destination)",
    ),
    "destination missing": (vs({"route": [{"weight": 1}]}), f"{R0}.route[0].destination", "destination is required"),
    "destination host missing": (
        vs({"route": [{"destination": {"subset": "v1"}}]}),
        f"{R0}.route[0].destination.host",
        "host is required",
    ),
    "bad gateway": (vs(gateways=["a/b/c"]), "spec.gateways[0]", "invalid gateway reference"),
    "http missing": (vs(http=[]), "spec.http", "http routes are missing"),
    "route missing": (
        {**vs(), "spec": {"hosts": ["a"], "http": [{"timeout": "1s"}]}},
        f"{R0}.route",
        "route is missing",
    ),
    # subsets
    "duplicate subsets": (
        dr(subsets=[{"name": "v1", "labels": {"a": "b"}}, {"name": "v1", "labels": {"a": "c"}}]),
        "spec.subsets[1].name",
        "duplicate subset names: v1",
    ),
    "subset without name": (dr(subsets=[{"labels": {"a": "b"}}]), "spec.subsets[0].name", "name is required"),
    "subset bad name": (
        dr(subsets=[{"name": "v1.0", "labels": {"a": "b"}}]),
        "spec.subsets[0].name",
        "not a DNS-1123 label",
    ),
    "label key": (
        dr(subsets=[{"name": "v1", "labels": {"-bad": "b"}}]),
        'spec.subsets[0].labels["-bad"]',
        "invalid label key",
    ),
    "label value": (
        dr(subsets=[{"name": "v1", "labels": {"a": "b c"}}]),
        "spec.subsets[0].labels.a",
        "invalid label value",
    ),
    "destination subset name": (
        vs({"route": [{"destination": {"host": "a", "subset": "v_1"}}]}),
        f"{R0}.route[0].destination.subset",
        "not a DNS-1123",
    ),
    # outlier detection, pool, load balancer
    "local origin without split": (
        outlier(consecutiveLocalOriginFailures=3),
        f"{OD}.consecutiveLocalOriginFailures",
        "splitExternalLocalOriginErrors",
    ),
    "local origin split false": (
        outlier(consecutiveLocalOriginFailures=3, splitExternalLocalOriginErrors=False),
        f"{OD}.consecutiveLocalOriginFailures",
        "is not true",
    ),
    "uint32 negative": (outlier(consecutive5xxErrors=-1), f"{OD}.consecutive5xxErrors", "out of range for uint32"),
    "empty pool": (pool(), f"{TP}.connectionPool", "at least one field (tcp or http)"),
    "empty traffic policy": (dr({}), TP, "traffic policy must have at least one field"),
    "upgrade + client protocol": (
        pool(http={"h2UpgradePolicy": "UPGRADE", "useClientProtocol": True}),
        f"{TP}.connectionPool.http.useClientProtocol",
        "must not be true",
    ),
    "simple and hash": (
        lb(simple="RANDOM", consistentHash={"useSourceIp": True}),
        LB,
        "both simple and consistentHash",
    ),
    "hash two keys": (
        lb(consistentHash={"httpHeaderName": "a", "httpQueryParameterName": "b"}),
        f"{LB}.consistentHash",
        "exactly one hash key",
    ),
    "cookie without name": (
        lb(consistentHash={"httpCookie": {"ttl": "1s"}}),
        f"{LB}.consistentHash.httpCookie.name",
        "name required",
    ),
    "ring and maglev": (
        lb(consistentHash={"useSourceIp": True, "ringHash": {}, "maglev": {"tableSize": 7}}),
        f"{LB}.consistentHash",
        "both ringHash and maglev",
    ),
    "legacy ring + ringHash": (
        lb(consistentHash={"useSourceIp": True, "minimumRingSize": 8, "ringHash": {"minimumRingSize": 8}}),
        f"{LB}.consistentHash.minimumRingSize",
        "only one of minimumRingSize",
    ),
    "maglev not prime": (
        lb(consistentHash={"useSourceIp": True, "maglev": {"tableSize": 65536}}),
        f"{LB}.consistentHash.maglev.tableSize",
        "must be a prime",
    ),
    "maglev too big": (
        lb(consistentHash={"useSourceIp": True, "maglev": {"tableSize": 5000011}}),
        f"{LB}.consistentHash.maglev.tableSize",
        "below 5000011",
    ),
    "warmup without duration": (lb(warmup={}), f"{LB}.warmup.duration", "duration is required"),
    # string matches
    "match two kinds": (vs({"match": [{"uri": {"exact": "/a", "prefix": "/"}}]}), f"{R0}.match[0].uri", "exactly one"),
    "match no kind": (vs({"match": [{"method": {}}]}), f"{R0}.match[0].method", "sets none of exact, prefix, regex"),
    "header presence": (vs({"match": [{"headers": {"x-a": {}}}]}), f"{R0}.match[0].headers.x-a", "present"),
    "regex syntax": (vs({"match": [{"uri": {"regex": "/a("}}]}), f"{R0}.match[0].uri.regex", "does not compile"),
    "regex lookahead": (vs({"match": [{"uri": {"regex": "/a(?=b)"}}]}), f"{R0}.match[0].uri.regex", "lookaround"),
    "regex backreference": (
        vs({"match": [{"queryParams": {"q": {"regex": r"(a)\1"}}}]}),
        f"{R0}.match[0].queryParams.q.regex",
        "backreferences",
    ),
    "regex empty": (vs({"match": [{"uri": {"regex": ""}}]}), f"{R0}.match[0].uri.regex", "must not be empty"),
    "regex too long": (vs({"match": [{"uri": {"regex": "a" * 1025}}]}), f"{R0}.match[0].uri.regex", "at most 1024"),
    "header name": (
        vs({"match": [{"headers": {"bad header": {"exact": "a"}}}]}),
        f'{R0}.match[0].headers["bad header"]',
        "not a valid header name",
    ),
    # unknown, unsupported and master-only fields
    "unknown retry field": (retries(attempts=1, attemps=2), f"{RETRY}.attemps", "unknown field 'attemps'"),
    "unknown spec field": (vs(timeout="1s"), "spec.timeout", "unknown field 'timeout'"),
    "unknown DR field": (outlier(consecutive5xxErrors=1, ejectionTime="1s"), f"{OD}.ejectionTime", "unknown field"),
    "mirror": (vs({"mirror": {"host": "shadow"}}), f"{R0}.mirror", "not supported by pytest-meshcheck"),
    "corsPolicy": (
        vs({"corsPolicy": {"allowOrigins": [{"exact": "x"}]}}),
        f"{R0}.corsPolicy",
        "not supported by pytest-meshcheck",
    ),
    "delegate": (vs({"delegate": {"name": "x"}, "route": None}), f"{R0}.delegate", "not supported by pytest-meshcheck"),
    "redirect": (vs({"redirect": {"uri": "/x"}, "route": None}), f"{R0}.redirect", "not supported by pytest-meshcheck"),
    "tcp routes": (vs(tcp=[{"route": [DEST]}]), "spec.tcp", "TCP routes are not modelled"),
    "tls routes": (vs(tls=[{"match": [{"sniHosts": ["a"]}], "route": [DEST]}]), "spec.tls", "TLS (SNI) routes"),
    "match sourceLabels": (
        vs({"match": [{"sourceLabels": {"app": "x"}}]}),
        f"{R0}.match[0].sourceLabels",
        "not supported",
    ),
    "portLevelSettings": (
        dr({"portLevelSettings": [{"port": {"number": 80}}]}),
        f"{TP}.portLevelSettings",
        "not supported",
    ),
    "retryBudget": (dr({"retryBudget": {"percent": 20}}), f"{TP}.retryBudget", "not supported"),
    "warmup aggression": (lb(warmup={"duration": "1s", "aggression": 2}), f"{LB}.warmup.aggression", "not supported"),
    "master only": (
        outlier(outlierDetectionHttpErrorCodes=[500]),
        f"{OD}.outlierDetectionHttpErrorCodes",
        "unreleased Istio (master)",
    ),
    "ignored field wrong type": (vs(exportTo="."), "spec.exportTo", "expected a list"),
    "ignored object wrong type": (
        dr(workloadSelector=["x"]),
        "spec.workloadSelector",
        "expected a mapping, got a list",
    ),
}


@pytest.mark.parametrize(("doc", "path", "needle"), list(BAD.values()), ids=list(BAD))
def test_rejected(doc: dict[str, Any], path: str, needle: str) -> None:
    issue = the_issue(doc, path)
    assert needle in f"{issue.message} Fix: {issue.fix}"


def test_integers_too_long_for_str_are_reported_not_crashed_on() -> None:
    # CPython refuses str() of ints over 4300 digits; such a value can only arrive as parsed data.
    with pytest.raises(PolicyError) as err:
        parse_policy_documents([retries(attempts=10**5000), dr(subsets=[{"name": "v1", "labels": {"a": 10**5000}}])])
    assert [(i.document, i.path) for i in err.value.issues] == [
        (0, f"{RETRY}.attempts"),
        (1, "spec.subsets[0].labels.a"),
    ]
    assert all("thousands of digits" in f"{i.message} {i.fix}" for i in err.value.issues)


def test_issue_names_file_document_path_line_and_fix() -> None:
    text = yaml.safe_dump(dr({"outlierDetection": {"interval": "1d"}}), sort_keys=False)
    with pytest.raises(PolicyError) as err:
        load_policy_text("---\n" + text.replace("dr\n", "dr-two\n") + "---\n" + text, source="rules.yaml")
    issues_ = err.value.issues
    assert [(i.document, i.line) for i in issues_] == [(0, 11), (1, 22)]
    assert str(issues_[1]).startswith(
        "rules.yaml:22 (document 1): spec.trafficPolicy.outlierDetection.interval: invalid duration '1d'"
    )
    assert "Fix: use Go duration syntax" in str(issues_[1])


def test_nothing_is_returned_when_one_document_of_many_is_bad() -> None:
    good = yaml.safe_dump(vs(), sort_keys=False)
    bad = yaml.safe_dump(retries(attempts=-1), sort_keys=False).replace("name: vs", "name: bad")
    with pytest.raises(PolicyError) as err:
        load_policy_text(good + "---\n" + bad)
    assert len(err.value.issues) == 1


def test_unknown_field_suggests_the_close_name_and_lists_fields() -> None:
    issue = the_issue(retries(attempts=1, retryon="5xx"), f"{RETRY}.retryon")
    assert "did you mean 'retryOn'?" in issue.fix
    assert "attempts, backoff, perTryTimeout" in issue.fix


@pytest.mark.parametrize(
    ("doc", "path"),
    [
        (vs(exportTo=["."]), "spec.exportTo"),
        (vs({"headers": {"request": {"set": {"a": "b"}}}}), f"{R0}.headers"),
        (vs({"route": [{**DEST, "headers": {"response": {"remove": ["x"]}}}]}), f"{R0}.route[0].headers"),
        (vs({"match": [{"statPrefix": "x", "uri": {"prefix": "/"}}]}), f"{R0}.match[0].statPrefix"),
        (dr(workloadSelector={"matchLabels": {"app": "x"}}), "spec.workloadSelector"),
        (dr({"tls": {"mode": "ISTIO_MUTUAL"}}), f"{TP}.tls"),
        (lb(localityLbSetting={"enabled": True}), f"{LB}.localityLbSetting"),
        (
            lb(consistentHash={"httpCookie": {"name": "c", "attributes": [{"name": "SameSite"}]}}),
            f"{LB}.consistentHash.httpCookie.attributes",
        ),
    ],
)
def test_fields_that_cannot_change_resilience_only_warn(doc: dict[str, Any], path: str) -> None:
    warning = the_warning(load(doc), path)
    assert "ignored" in warning.message


# --- warnings that state what Istio really does --------------------------------------------------------


def test_consecutive_errors_warning_says_what_istio_does() -> None:
    warning = the_warning(load(outlier(consecutiveErrors=1, interval="1s")), f"{OD}.consecutiveErrors")
    assert warning.message.startswith("consecutiveErrors: 1 is deprecated and ignored by istiod since Istio 1.7;")
    assert "Envoy's default consecutive_5xx=5 applies, so any 5xx including 500 counts" in warning.message
    assert "use consecutive5xxErrors or consecutiveGatewayErrors" in warning.message
    with_5xx = the_warning(load(outlier(consecutiveErrors=1, consecutive5xxErrors=2)), f"{OD}.consecutiveErrors")
    assert "consecutive5xxErrors: 2 applies instead" in with_5xx.message


@pytest.mark.parametrize(
    ("doc", "path", "needle"),
    [
        (lb(simple="LEAST_CONN"), f"{LB}.simple", "LEAST_REQUEST"),
        (fault(delay={"fixedDelay": "1s", "percent": 50}), f"{R0}.fault.delay.percent", "still delays 50%"),
        (
            fault(delay={"fixedDelay": "1s", "percent": 5, "percentage": {"value": 1}}),
            f"{R0}.fault.delay.percent",
            "ignored because percentage",
        ),
        (
            lb(consistentHash={"useSourceIp": True, "minimumRingSize": 1024}),
            f"{LB}.consistentHash.minimumRingSize",
            "deprecated (Istio still honours it)",
        ),
        (lb(warmupDurationSecs="10s"), f"{LB}.warmupDurationSecs", "superseded by warmup.duration"),
        (fault(abort={"httpStatus": 503}), f"{R0}.fault.abort", "0% of requests"),
        (fault(delay={"fixedDelay": "1s", "percentage": {"value": 0}}), f"{R0}.fault.delay", "0% of requests"),
        (retries(), RETRY, "no retry policy at all"),
        (retries(attempts=2, perTryTimeout="1s", retryOn="connect-failure"), f"{RETRY}.perTryTimeout", "504"),
        (retries(attempts=2, perTryTimeout="1s"), f"{RETRY}.perTryTimeout", "504"),
        (
            vs({"retries": {"attempts": 2, "perTryTimeout": "3s", "retryOn": "5xx"}, "timeout": "2s"}),
            f"{RETRY}.perTryTimeout",
            "ignores it",
        ),
        (pool(tcp={"maxConnections": 0}), f"{TP}.connectionPool.tcp.maxConnections", "0 means unset"),
        (outlier(maxEjectionPercent=0), f"{OD}.maxEjectionPercent", "10%"),
        (dr(subsets=[{"name": "all"}]), "spec.subsets[0]", "every instance"),
        (vs(gateways=["istio-system/public"]), "spec.gateways", "only to gateways"),
        # Istio admits these with a warning (tests/conformance holds its own cases).
        (fault(abort={"percentage": {"value": 1}}), f"{R0}.fault.abort", "neither httpStatus nor grpcStatus"),
        (lb(consistentHash={"ringHash": {"minimumRingSize": 1024}}), f"{LB}.consistentHash", "no hash key"),
        (lb(consistentHash={"useSourceIp": False}), f"{LB}.consistentHash", "no hash key"),
    ],
)
def test_warnings(doc: dict[str, Any], path: str, needle: str) -> None:
    assert needle in the_warning(load(doc), path).message


def test_no_per_try_warning_when_retry_on_retries_resets() -> None:
    for retry_on in ("5xx", "gateway-error,503", "reset"):
        assert load(retries(attempts=2, perTryTimeout="1s", retryOn=retry_on)).warnings == ()


def test_unreachable_route_after_catch_all_warns() -> None:
    doc = vs()
    doc["spec"]["http"].append({"match": [{"uri": {"prefix": "/a"}}], "route": [DEST]})
    warning = the_warning(load(doc), "spec.http[1]")
    assert "http[0] has no match" in warning.message


# --- the CRD field tables ------------------------------------------------------------------------------

# Where each object of schema.CRD_FIELDS sits in the CRD's OpenAPI schema of spec.
CRD_PATHS = {
    "VirtualService": ("VirtualService", []),
    "HTTPRoute": ("VirtualService", ["http", "[]"]),
    "HTTPMatchRequest": ("VirtualService", ["http", "[]", "match", "[]"]),
    "StringMatch": ("VirtualService", ["http", "[]", "match", "[]", "uri"]),
    "HTTPRouteDestination": ("VirtualService", ["http", "[]", "route", "[]"]),
    "Destination": ("VirtualService", ["http", "[]", "route", "[]", "destination"]),
    "PortSelector": ("VirtualService", ["http", "[]", "route", "[]", "destination", "port"]),
    "HTTPRetry": ("VirtualService", ["http", "[]", "retries"]),
    "HTTPFaultInjection": ("VirtualService", ["http", "[]", "fault"]),
    "Delay": ("VirtualService", ["http", "[]", "fault", "delay"]),
    "Abort": ("VirtualService", ["http", "[]", "fault", "abort"]),
    "Percent": ("VirtualService", ["http", "[]", "fault", "abort", "percentage"]),
    "DestinationRule": ("DestinationRule", []),
    "Subset": ("DestinationRule", ["subsets", "[]"]),
    "TrafficPolicy": ("DestinationRule", ["trafficPolicy"]),
    "ConnectionPoolSettings": ("DestinationRule", ["trafficPolicy", "connectionPool"]),
    "TCPSettings": ("DestinationRule", ["trafficPolicy", "connectionPool", "tcp"]),
    "TcpKeepalive": ("DestinationRule", ["trafficPolicy", "connectionPool", "tcp", "tcpKeepalive"]),
    "HTTPSettings": ("DestinationRule", ["trafficPolicy", "connectionPool", "http"]),
    "OutlierDetection": ("DestinationRule", ["trafficPolicy", "outlierDetection"]),
    "LoadBalancerSettings": ("DestinationRule", ["trafficPolicy", "loadBalancer"]),
    "ConsistentHashLB": ("DestinationRule", ["trafficPolicy", "loadBalancer", "consistentHash"]),
    "HTTPCookie": ("DestinationRule", ["trafficPolicy", "loadBalancer", "consistentHash", "httpCookie"]),
    "RingHash": ("DestinationRule", ["trafficPolicy", "loadBalancer", "consistentHash", "ringHash"]),
    "MagLev": ("DestinationRule", ["trafficPolicy", "loadBalancer", "consistentHash", "maglev"]),
    "Warmup": ("DestinationRule", ["trafficPolicy", "loadBalancer", "warmup"]),
}


@pytest.fixture(scope="module")
def crd_specs() -> dict[str, dict[str, Any]]:
    specs = {}
    for doc in yaml.safe_load_all(CRD.read_text()):
        if doc and doc["spec"]["names"]["kind"] in ("VirtualService", "DestinationRule"):
            versions = {
                v["name"]: v["schema"]["openAPIV3Schema"]["properties"]["spec"] for v in doc["spec"]["versions"]
            }
            assert versions["v1"] == versions["v1alpha3"] == versions["v1beta1"]
            specs[doc["spec"]["names"]["kind"]] = versions["v1"]
    assert set(specs) == {"VirtualService", "DestinationRule"}, f"{CRD} lacks a CRD: found {sorted(specs)}"
    return specs


@pytest.mark.parametrize("obj", sorted(CRD_PATHS))
def test_field_tables_match_the_istio_crd(obj: str, crd_specs: dict[str, dict[str, Any]]) -> None:
    kind, steps = CRD_PATHS[obj]
    node = crd_specs[kind]
    for step in steps:
        node = node["items"] if step == "[]" else node["properties"][step]
    assert set(node["properties"]) == schema.CRD_FIELDS[obj]


def test_every_crd_object_has_a_path() -> None:
    assert set(CRD_PATHS) == set(schema.CRD_FIELDS)


def test_unsupported_and_ignored_fields_are_crd_fields() -> None:
    for table in (schema.UNSUPPORTED, schema.IGNORED):
        for obj, fields in table.items():
            assert set(fields) <= schema.CRD_FIELDS[obj], obj


# --- every object rejects unknown fields ---------------------------------------------------------------


def _objects(node: Any, path: list[str | int]) -> list[list[str | int]]:
    out: list[list[str | int]] = []
    if isinstance(node, dict):
        out.append(path)
        for k, v in node.items():
            if k not in ("labels", "headers", "withoutHeaders", "queryParams"):  # maps with user keys
                out.extend(_objects(v, [*path, k]))
            elif k != "labels":
                for hk, hv in v.items():
                    out.extend(_objects(hv, [*path, k, hk]))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out.extend(_objects(v, [*path, i]))
    return out


FULL = Path(__file__).parent.parent / "data" / "policies" / "full"
FULL_DOCS = [yaml.safe_load(p.read_text()) for p in sorted(FULL.glob("*.yaml"))]
OBJECT_PATHS = [(i, p) for i, d in enumerate(FULL_DOCS) for p in _objects(d, []) if p and p[0] == "spec"]


@pytest.mark.parametrize(("doc_index", "obj_path"), OBJECT_PATHS, ids=[".".join(map(str, p)) for _, p in OBJECT_PATHS])
def test_every_object_rejects_an_unknown_field(doc_index: int, obj_path: list[str | int]) -> None:
    doc = copy.deepcopy(FULL_DOCS[doc_index])
    node = doc
    for step in obj_path:
        node = node[step]
    node["bogusField"] = 1
    issue = the_issue(doc, _dotted(obj_path) + ".bogusField")
    assert "unknown field 'bogusField'" in issue.message


def _dotted(path: list[str | int]) -> str:
    out = ""
    for step in path:
        if isinstance(step, int):
            out += f"[{step}]"
        else:
            out += f".{step}" if out else step
    return out
