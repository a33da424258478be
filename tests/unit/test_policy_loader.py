"""The policy loader: files, directories, documents, source references and error collection."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from pytest_meshcheck.errors import PolicyError
from pytest_meshcheck.policy import (
    Policy,
    PolicySet,
    load_policies,
    load_policy_text,
    parse_policy_documents,
)

DATA = Path(__file__).parent.parent / "data" / "policies"
# Vendored from Istio's samples/bookinfo/networking (tests/data/istio/README.md).
SAMPLES = Path(__file__).resolve().parents[1] / "data" / "istio" / "samples"
# Named, not globbed: a sample missing from the checkout must fail its test, not drop out of the list.
SAMPLE_NAMES = (
    "bookinfo-destination-rule-all.yaml",
    "bookinfo-virtual-service-ratings-test-abort.yaml",
    "bookinfo-virtual-service-ratings-test-delay.yaml",
    "bookinfo-virtual-service-reviews-80-20.yaml",
)

VS = """\
apiVersion: networking.istio.io/{version}
kind: VirtualService
metadata:
  name: {name}
  namespace: platform-core
spec:
  hosts: [order-service]
  http:
  - route:
    - destination: {{host: order-service}}
"""


def vs_text(name: str = "orders", version: str = "v1") -> str:
    return VS.format(name=name, version=version)


def load_error(text: str, source: str = "t.yaml") -> PolicyError:
    with pytest.raises(PolicyError) as err:
        load_policy_text(text, source=source)
    return err.value


# --- the user's policies ---------------------------------------------------------------------------------


def test_user_circuit_breaker_loads_with_consecutive_errors_warning() -> None:
    policies = load_policies(DATA / "user" / "circuit-breaker.yaml")
    (dr,) = policies.destination_rules
    assert (dr.name, dr.namespace, dr.host) == (
        "order-service-circuit-breaker",
        "platform-core",
        "order-service.platform-core.svc.cluster.local",
    )
    assert dr.api_version == "networking.istio.io/v1beta1"
    assert dr.traffic_policy is not None
    pool, outlier = dr.traffic_policy.connection_pool, dr.traffic_policy.outlier_detection
    assert pool is not None
    assert pool.tcp is not None
    assert pool.http is not None
    assert pool.tcp.max_connections == 100
    assert (pool.http.http1_max_pending_requests, pool.http.http2_max_requests) == (50, 100)
    assert pool.http.max_requests_per_connection == 2
    assert outlier is not None
    assert (outlier.consecutive_errors, outlier.consecutive_5xx_errors) == (5, None)
    assert (outlier.interval, outlier.base_ejection_time) == (30.0, 30.0)
    assert (outlier.max_ejection_percent, outlier.min_health_percent) == (50, 50)

    (warning,) = policies.warnings
    assert warning.path == "spec.trafficPolicy.outlierDetection.consecutiveErrors"
    assert warning.file.endswith("circuit-breaker.yaml")
    for fact in (
        "ignored by istiod since Istio 1.7",
        "consecutive_5xx=5",
        "including 500",
        "consecutive5xxErrors",
        "consecutiveGatewayErrors",
        "line 19",
    ):
        assert fact in warning.message


def test_user_retry_timeout_loads_without_warnings() -> None:
    policies = load_policies(DATA / "user" / "retry-timeout.yaml")
    (vs,) = policies.virtual_services
    assert policies.warnings == ()
    assert vs.hosts == ("order-service.platform-core.svc.cluster.local",)
    (route,) = vs.http
    assert route.timeout == 10.0
    assert route.retries is not None
    assert (route.retries.attempts, route.retries.per_try_timeout) == (3, 2.0)
    assert route.retries.retry_on == "5xx,reset,connect-failure,refused-stream"
    (dest,) = route.route
    assert (dest.destination.host, dest.destination.port, dest.destination.subset) == (
        "order-service.platform-core.svc.cluster.local",
        8084,
        None,
    )


def test_source_ref_carries_field_lines_and_document_text() -> None:
    policies = load_policies(DATA / "user" / "retry-timeout.yaml")
    src = policies.virtual_services[0].source
    assert src.file.endswith("retry-timeout.yaml")
    assert (src.document, src.line) == (0, 3)  # the document starts after two comment lines
    assert src.field_lines["spec.http[0].retries.attempts"] == 18
    assert src.field_lines["spec.http[0].retries.retryOn"] == 20
    assert src.field_lines["spec.http[0].route[0].destination.port.number"] == 16
    text_lines = src.text.splitlines()
    assert text_lines[0] == "apiVersion: networking.istio.io/v1beta1"
    # field_lines index the file; the document text starts at src.line.
    assert text_lines[18 - src.line].strip().startswith("attempts: 3")


def test_every_modelled_field_is_read() -> None:
    policies = load_policies(DATA / "full")
    assert policies.warnings == ()
    (dr,) = policies.destination_rules
    (vs,) = policies.virtual_services
    canary, default = vs.http
    assert vs.gateways == ("mesh",)
    assert (canary.name, canary.index, default.index) == ("canary", 0, 1)
    (match,) = canary.match
    assert match.name == "canary-header"
    assert match.ignore_uri_case is True
    assert (match.uri.kind, match.uri.value) == ("prefix", "/api/orders")  # type: ignore[union-attr]
    assert (match.method.kind, match.method.value) == ("exact", "GET")  # type: ignore[union-attr]
    assert match.headers["x-version"].value == "v2"
    assert match.without_headers["x-debug"].kind == "prefix"
    assert match.query_params["tenant"].kind == "regex"
    r = canary.retries
    assert r is not None
    assert (r.attempts, r.per_try_timeout, r.retry_on, r.backoff) == (2, 0.5, "gateway-error,reset,503", 0.05)
    assert (r.retry_remote_localities, r.retry_ignore_previous_hosts) == (False, True)
    assert canary.fault is not None
    assert canary.fault.delay is not None
    assert canary.fault.abort is not None
    assert (canary.fault.delay.fixed_delay, canary.fault.delay.percentage) == (0.1, 10.5)
    assert (canary.fault.abort.http_status, canary.fault.abort.percentage) == (503, 0.5)
    assert [d.weight for d in default.route] == [90, 10]
    assert default.timeout == 90.0

    tp = dr.traffic_policy
    assert tp is not None
    assert tp.connection_pool is not None
    assert tp.load_balancer is not None
    tcp, http = tp.connection_pool.tcp, tp.connection_pool.http
    assert tcp is not None
    assert http is not None
    assert (tcp.connect_timeout, tcp.max_connection_duration, tcp.idle_timeout) == (0.25, 3600.0, 300.0)
    assert (tcp.tcp_keepalive_time, tcp.tcp_keepalive_interval, tcp.tcp_keepalive_probes) == (7200.0, 75.0, 9)
    assert (http.max_retries, http.idle_timeout, http.h2_upgrade_policy) == (3, 30.0, "DO_NOT_UPGRADE")
    assert (http.use_client_protocol, http.max_concurrent_streams) == (False, 128)
    od = tp.outlier_detection
    assert od is not None
    assert (od.consecutive_5xx_errors, od.consecutive_gateway_errors, od.consecutive_local_origin_failures) == (3, 2, 4)
    assert (od.split_external_local_origin_errors, od.min_health_percent) == (True, 0)
    assert (tp.load_balancer.simple, tp.load_balancer.warmup_duration) == ("ROUND_ROBIN", 10.0)
    v1, v2 = dr.subsets
    assert (v1.name, v1.labels, v1.traffic_policy) == ("v1", {"version": "v1"}, None)
    assert v2.traffic_policy is not None
    assert v2.traffic_policy.load_balancer is not None
    ch = v2.traffic_policy.load_balancer.consistent_hash
    assert ch is not None
    assert (ch.http_cookie_name, ch.http_cookie_path, ch.http_cookie_ttl, ch.minimum_ring_size) == (
        "session",
        "/",
        0.0,
        2048,
    )


# --- files, directories, documents -----------------------------------------------------------------------


def test_directory_is_searched_recursively_for_yaml_and_yml_only() -> None:
    policies = load_policies(DATA / "tree")
    assert [vs.name for vs in policies.virtual_services] == ["catalog"]
    assert [dr.name for dr in policies.destination_rules] == ["catalog"]
    assert policies.destination_rules[0].source.file.endswith("b-rule.yml")
    # notes.txt holds 'kind: VirtualService' but is not a YAML file, so it is not read.
    assert len(policies) == 2


def test_other_kinds_are_skipped_with_a_note_and_empty_documents_ignored() -> None:
    policies = load_policies(DATA / "tree")
    gateway_file = str(DATA / "tree" / "a-gateway-and-vs.yaml")
    service_file = str(DATA / "tree" / "c-service.yaml")
    assert policies.skipped == (
        f"{gateway_file} (document 0): skipped Gateway networking.istio.io/v1: not a resilience policy",
        f"{service_file} (document 0): skipped Service v1: not a resilience policy",
    )
    # Documents count as they appear between '---' markers, empty ones included.
    assert policies.virtual_services[0].source.document == 3


def test_files_load_in_sorted_order_and_duplicates_once(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(vs_text("b"))
    (tmp_path / "a.yaml").write_text(vs_text("a").replace("order-service", "catalog-service"))
    policies = load_policies(tmp_path, tmp_path / "a.yaml")
    assert [vs.name for vs in policies.virtual_services] == ["a", "b"]


@pytest.mark.parametrize("version", ["v1alpha3", "v1beta1", "v1"])
def test_all_three_api_versions_load(version: str) -> None:
    (vs,) = load_policy_text(vs_text(version=version)).virtual_services
    assert vs.api_version == f"networking.istio.io/{version}"


def test_unknown_api_version_is_an_error() -> None:
    (issue,) = load_error(vs_text(version="v2")).issues
    assert issue.path == "apiVersion"
    assert "networking.istio.io/v2" in issue.message
    assert "networking.istio.io/v1" in issue.fix


def test_policy_kind_in_another_api_group_is_skipped() -> None:
    text = vs_text().replace("networking.istio.io/v1", "networking.example.com/v1")
    policies = load_policy_text(text, source="x.yaml")
    assert len(policies) == 0
    assert policies.skipped == (
        "x.yaml (document 0): skipped VirtualService networking.example.com/v1: not in API group networking.istio.io",
    )


def test_envoy_filter_skip_note_warns_about_patches() -> None:
    text = "apiVersion: networking.istio.io/v1alpha3\nkind: EnvoyFilter\nmetadata: {name: f}\nspec: {}\n"
    (note,) = load_policy_text(text).skipped
    assert "EnvoyFilter" in note
    assert "patch retries" in note


def test_empty_text_gives_an_empty_set() -> None:
    assert load_policy_text("") == PolicySet()
    assert load_policy_text("---\n# nothing\n---\n") == PolicySet()


def test_parse_policy_documents_accepts_parsed_data() -> None:
    docs = [None, *yaml.safe_load_all(vs_text())]
    policies = parse_policy_documents(docs, source="api")
    (vs,) = policies.virtual_services
    assert (vs.source.file, vs.source.document) == ("api", 1)
    assert "kind: VirtualService" in vs.source.text


def test_parse_policy_documents_reports_non_string_keys() -> None:
    doc = yaml.safe_load(vs_text())
    doc["spec"][1] = "x"
    with pytest.raises(PolicyError) as err:
        parse_policy_documents([doc])
    (issue,) = err.value.issues
    assert issue.path == "spec"
    assert "not a string" in issue.message


# --- collecting every problem ----------------------------------------------------------------------------


def test_all_problems_of_all_files_are_raised_together() -> None:
    with pytest.raises(PolicyError) as err:
        load_policies(DATA / "invalid", DATA / "user", DATA / "missing.yaml")
    issues = err.value.issues
    bad_file = str(DATA / "invalid" / "two-bad-documents.yaml")
    got = {(i.file, i.document, i.path, i.line) for i in issues}
    assert got == {
        (str(DATA / "missing.yaml"), 0, "(file)", None),
        (bad_file, 0, "spec.http[0].retries.attempts", 12),
        (bad_file, 0, "spec.http[0].retries.retryOn", 13),
        (bad_file, 1, "spec.trafficPolicy.outlierDetection.interval", 23),
    }
    assert all(i.fix for i in issues)
    text = str(err.value)
    assert text.startswith("4 policy error(s):")
    assert f"{bad_file}:13 (document 0): spec.http[0].retries.retryOn: ' reset'" in text
    assert "Fix: use comma-separated conditions without spaces" in text


def test_yaml_syntax_error_names_the_line_and_keeps_earlier_documents_checked() -> None:
    text = vs_text("first").replace("attempts", "x") + "---\n" + vs_text("second") + "  bad: [unclosed\n"
    err = load_error(text.replace("name: first", "name: Not_Valid"))
    paths = [(i.document, i.path) for i in err.issues]
    assert (0, "metadata.name") in paths
    syntax = [i for i in err.issues if i.document == 1]
    assert len(syntax) == 1
    assert syntax[0].message.startswith("invalid YAML: while parsing a flow sequence (started on line 22)")
    assert syntax[0].line == 23  # where the parser gave up: the end of the text


def test_empty_directory_and_unreadable_file_are_errors(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "latin1.yaml").write_bytes(b"name: caf\xe9\n")
    with pytest.raises(PolicyError) as err:
        load_policies(tmp_path / "empty", tmp_path / "latin1.yaml")
    messages = [i.message for i in err.value.issues]
    assert any("without any *.yaml" in m for m in messages)
    assert any("not UTF-8" in m for m in messages)


def test_not_a_mapping_document() -> None:
    (issue,) = load_error("- just\n- a list\n").issues
    assert issue.path == "(document)"
    assert "must be a mapping" in issue.message


@pytest.mark.parametrize(
    ("text", "path", "needle"),
    [
        ("kind: VirtualService\nmetadata: {name: a}\n", "apiVersion", "missing"),
        ("apiVersion: networking.istio.io/v1\nmetadata: {name: a}\n", "kind", "missing"),
        (vs_text().replace("  name: orders\n", ""), "metadata.name", "required"),
        (vs_text().replace("  name: orders\n", "  generateName: orders-\n"), "metadata.name", "generateName"),
        (vs_text("Orders"), "metadata.name", "not a valid Kubernetes name"),
        (vs_text("a_b"), "metadata.name", "not a valid Kubernetes name"),
        (vs_text().replace("namespace: platform-core", "namespace: platform.core"), "metadata.namespace", "RFC 1123"),
        (vs_text().replace("spec:\n", "specs:\n"), "specs", "unknown field"),
        (
            vs_text().replace("kind: VirtualService", "kind: Virtualservice"),
            "kind",
            "did you mean kind: VirtualService?",
        ),
        (vs_text().replace("networking.istio.io/v1", "networking.istio.io"), "apiVersion", "has no version"),
        (vs_text().replace("metadata:\n", "metadata:\n  lables: {a: b}\n"), "metadata.lables", "did you mean 'labels'"),
        (vs_text().replace("metadata:\n", "metadata:\n  labels: {a: 1}\n"), "metadata.labels.a", "expected a string"),
    ],
)
def test_document_envelope_rules(text: str, path: str, needle: str) -> None:
    (issue,) = [i for i in load_error(text).issues if i.path == path]
    assert needle in str(issue)


def test_status_and_standard_metadata_are_accepted() -> None:
    text = vs_text().replace("metadata:\n", "metadata:\n  uid: abc\n  resourceVersion: '12'\n") + "status: {}\n"
    assert len(load_policy_text(text)) == 1


def test_missing_spec() -> None:
    (issue,) = load_error("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\n").issues
    assert issue.path == "spec"
    assert "required" in issue.message


def test_policy_inside_a_list_is_an_error() -> None:
    text = "apiVersion: v1\nkind: List\nitems:\n- " + vs_text().replace("\n", "\n  ")
    (issue,) = load_error(text).issues
    assert issue.path == "items[0]"
    assert "inside a List" in issue.message


def test_duplicate_resource_is_an_error_and_duplicate_host_a_warning() -> None:
    err = load_error(vs_text("same") + "---\n" + vs_text("same"))
    (issue,) = err.issues
    assert (issue.document, issue.path, issue.line) == (1, "metadata.name", 15)
    assert "duplicate VirtualService platform-core/same" in issue.message
    policies = load_policy_text(vs_text("one") + "---\n" + vs_text("two"))
    (warning,) = policies.warnings
    assert warning.document == 1
    assert "another VirtualService for host order-service" in warning.message


# --- YAML-level checks -----------------------------------------------------------------------------------


def test_duplicate_yaml_key_is_an_error() -> None:
    text = vs_text().replace("  hosts: [order-service]\n", "  hosts: [order-service]\n  hosts: [catalog-service]\n")
    (issue,) = load_error(text).issues
    assert (issue.path, issue.message, issue.line) == ("spec.hosts", "duplicate key 'hosts'", 8)


def test_non_string_yaml_key_is_an_error_with_a_quoting_fix() -> None:
    text = vs_text().replace("metadata:\n", "metadata:\n  labels:\n    on: x\n")
    (issue,) = load_error(text).issues
    assert issue.path == "metadata.labels"
    assert "a boolean" in issue.message
    assert "quote the key" in issue.fix


def test_merge_keys_are_resolved() -> None:
    text = (
        "apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata: {name: a}\nspec:\n"
        "  host: order-service\n  trafficPolicy:\n    outlierDetection:\n      <<: &od {interval: 1s}\n"
        "      consecutive5xxErrors: 2\n"
    )
    (dr,) = load_policy_text(text).destination_rules
    od = dr.traffic_policy.outlier_detection  # type: ignore[union-attr]
    assert od is not None
    assert (od.interval, od.consecutive_5xx_errors) == (1.0, 2)


def test_recursive_alias_is_an_error_not_a_hang() -> None:
    text = vs_text().replace("spec:\n", "spec: &spec\n  loop: *spec\n")
    (issue,) = [i for i in load_error(text).issues if "recursive" in i.message]
    assert (issue.path, issue.line) == ("spec.loop", 7)


def test_alias_bomb_is_refused() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, 9)]
    err = load_error("\n".join(lines) + "\n")
    assert any("more than 200000 YAML nodes" in i.message for i in err.issues)


def test_explicit_tags_are_refused() -> None:
    text = vs_text().replace("  hosts: [order-service]", "  hosts: !!set {order-service}")
    err = load_error(text)
    assert any("YAML tag" in i.message for i in err.issues)


def test_null_field_warns_and_counts_as_absent() -> None:
    text = vs_text().replace(
        "    - destination: {host: order-service}\n", "    - destination: {host: order-service}\n    timeout:\n"
    )
    policies = load_policy_text(text)
    assert policies.virtual_services[0].http[0].timeout is None
    (warning,) = policies.warnings
    assert warning.path == "spec.http[0].timeout"
    assert "null" in warning.message


# --- Istio's own samples ---------------------------------------------------------------------------------


def test_every_vendored_sample_is_checked() -> None:
    # A sample added to the directory but not to SAMPLE_NAMES would otherwise go unchecked.
    assert sorted(p.name for p in SAMPLES.glob("*.yaml")) == sorted(SAMPLE_NAMES)


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_istio_samples_pass(name: str, tmp_path: Path) -> None:
    sample = SAMPLES / name
    # Each sample is an alternative to apply on its own (two define VirtualService 'ratings'), so load one
    # at a time, through a temporary copy to prove the loader does not depend on the reference path.
    copy = tmp_path / sample.name
    shutil.copyfile(sample, copy)
    policies = load_policies(copy)
    expected = [d["kind"] for d in yaml.safe_load_all(sample.read_text()) if d]
    assert expected, f"{name} holds no document"
    loaded: list[Policy] = [*policies.virtual_services, *policies.destination_rules]
    assert [p.kind for p in loaded] == sorted(expected, key=lambda k: k != "VirtualService")
    assert {p.source.file for p in loaded} == {str(copy)}


def test_istio_sample_semantics() -> None:
    delay = load_policies(SAMPLES / "bookinfo-virtual-service-ratings-test-delay.yaml").virtual_services[0]
    fault = delay.http[0].fault
    assert fault is not None
    assert fault.delay is not None
    assert (fault.delay.fixed_delay, fault.delay.percentage) == (7.0, 100.0)
    assert delay.http[0].match[0].headers["end-user"].value == "jason"
    shift = load_policies(SAMPLES / "bookinfo-virtual-service-reviews-80-20.yaml").virtual_services[0]
    assert [(d.destination.subset, d.weight) for d in shift.http[0].route] == [("v1", 80), ("v2", 20)]
