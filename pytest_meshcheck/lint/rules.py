"""The rule catalog: one :class:`Rule` per code. Codes are stable; a retired code is never reused.

Numbering: MC0xx input problems, MC10x route timing and faults, MC11x retry conditions, MC12x outlier
detection, MC13x connection pools, MC14x fault injection, MC15x idempotency, MC16x duplicates,
MC17x subsets, MC18x hosts, MC19x call chains (topology ``calls``). Every fact in ``why`` is from
``shared/notes/istio-translation.md``.
"""

from __future__ import annotations

from pytest_meshcheck.lint.finding import Rule, Severity

_ISTIO = "https://github.com/istio/istio/issues/"
_SCN = "scenarios/"

_ALL: tuple[Rule, ...] = (
    Rule(
        "MC001",
        "invalid-policy-file",
        Severity.ERROR,
        "A file cannot be read or a document is not a valid VirtualService or DestinationRule.",
        "Istio's admission would reject the document, so none of its policy reaches a sidecar.",
        "Fix the reported field; `meshcheck validate` prints every problem.",
    ),
    Rule(
        "MC002",
        "no-policies",
        Severity.NOTE,
        "No VirtualService or DestinationRule was found in the given paths.",
        "Nothing to lint: the mesh runs on Istio's defaults.",
        "Point lint at the files or directories that hold the policies.",
    ),
    Rule(
        "MC101",
        "fault-with-retries-or-timeout",
        Severity.WARNING,
        "A route injects a fault and also sets retries or a timeout.",
        "Faults are injected by the client sidecar's fault filter before the router: an abort is a local reply "
        "that is never retried, and an injected delay does not count against the route timeout. The retries "
        "and timeout cannot be exercised by this fault.",
        "Inject the fault at the destination (meshcheck chaos) or in a separate route, and test retries and "
        "timeout against real upstream failures.",
        issue=_ISTIO + "13705",
        scenario=_SCN + "test_fault_injection.py::test_client_side_abort_is_never_retried",
    ),
    Rule(
        "MC102",
        "timeout-cuts-retries",
        Severity.WARNING,
        "The route timeout is shorter than perTryTimeout x (attempts + 1): the last tries can never run.",
        "The route timeout covers all tries and back-off; when it fires the request ends with 504 UT and is "
        "never retried. If perTryTimeout >= timeout, Envoy ignores the per-try timeout altogether.",
        "Raise the route timeout to perTryTimeout x (attempts + 1), or lower attempts or perTryTimeout.",
        issue=_ISTIO + "21137",
        scenario=_SCN + "test_platform_policies.py::test_no_request_outlives_the_total_timeout[payment-service-15.0]",
    ),
    Rule(
        "MC103",
        "timeout-never-fires",
        Severity.WARNING,
        "The route timeout can never fire: all tries end on their per-try timeouts first.",
        "perTryTimeout applies to every try including the first; perTryTimeout x (attempts + 1) plus the "
        "maximum back-off is below the route timeout, so slow requests end earlier than the timeout says, "
        "with 504 UT after the last per-try timeout.",
        "Set timeout to perTryTimeout x (attempts + 1), or raise perTryTimeout to timeout / (attempts + 1).",
        issue=_ISTIO + "30611",
        scenario=_SCN + "test_platform_policies.py::test_order_times_out_after_10s_as_written",
    ),
    Rule(
        "MC104",
        "per-try-timeout-not-retried",
        Severity.WARNING,
        "perTryTimeout is set but retryOn has none of 5xx, gateway-error or reset, so a slow try is not retried.",
        "Envoy handles a per-try timeout as a local reset and retries it only when retry_on contains reset, "
        "5xx or gateway-error; otherwise the first per-try timeout ends the request with 504 UT.",
        "Add reset (or 5xx / gateway-error) to retryOn, or drop perTryTimeout.",
        issue="",
        scenario=_SCN + "test_timeouts.py::test_per_try_timeout_is_not_retried_without_5xx_gateway_error_or_reset",
    ),
    Rule(
        "MC110",
        "retry-on-misses-status",
        Severity.WARNING,
        "retryOn retries some status codes but not one the destination returns (e.g. 500 with gateway-error).",
        "gateway-error covers only 502, 503 and 504; retriable-status-codes covers only the listed codes; "
        "5xx covers every 5xx.",
        "Add 5xx, or the missing status code, to retryOn.",
        issue=_ISTIO + "39097",
        scenario=_SCN + "test_retries.py::test_500_is_not_retried_under_retriable_status_codes_503",
    ),
    Rule(
        "MC111",
        "default-retry-skips-503",
        Severity.WARNING,
        "The route relies on Istio's default retry conditions, which no longer retry 503 since Istio 1.24.",
        "Without retryOn, Istio's default retry_on has retriable-status-codes with an empty code list from 1.24 "
        "(503 before), so only connection failures and refused streams are retried.",
        "Set retryOn explicitly, e.g. 503,connect-failure,refused-stream (or 5xx for idempotent routes).",
        versions=">=1.24",
        issue="https://github.com/istio/api/pull/3416",
        scenario=_SCN + "test_retries.py::test_default_retry_policy_follows_the_istio_version",
    ),
    Rule(
        "MC120",
        "outlier-cannot-eject",
        Severity.ERROR,
        "maxEjectionPercent is below 100/N for the N hosts of the cluster: outlier detection can never eject.",
        "Since Envoy 1.28 (Istio >= 1.20) a host is ejected only if (ejected + 1) / N x 100 <= "
        "max_ejection_percent, even for the first ejection; unset means Envoy's 10 %, so fewer than 10 hosts "
        "never eject anything.",
        "Set maxEjectionPercent to at least 100/N (100 is common for small services).",
        versions=">=1.20",
        issue="https://github.com/envoyproxy/envoy/pull/27909",
        scenario=_SCN
        + "test_outlier_detection.py::test_default_max_ejection_percent_ejects_nothing_with_three_replicas",
    ),
    Rule(
        "MC121",
        "outlier-consecutive-errors-ignored",
        Severity.WARNING,
        "outlierDetection uses the deprecated consecutiveErrors, which istiod ignores.",
        "Since Istio 1.7 consecutiveErrors is dropped; Envoy's default consecutive_5xx=5 applies instead, so "
        "the configured number is ignored and every 5xx (including 500) counts.",
        "Use consecutive5xxErrors (any 5xx) or consecutiveGatewayErrors (502/503/504 only).",
        versions=">=1.7",
        issue=_ISTIO + "8846",
        scenario=_SCN + "test_platform_policies.py::test_order_circuit_breaker_ejects_an_instance_after_5_errors",
    ),
    Rule(
        "MC122",
        "outlier-gateway-only-vs-500",
        Severity.WARNING,
        "Outlier detection counts only gateway errors (502/503/504) but the destination fails with 500.",
        "consecutive5xxErrors: 0 disables 5xx ejection; consecutiveGatewayErrors does not count 500.",
        "Set consecutive5xxErrors to the threshold you want, or make the service fail with 503.",
        issue="https://github.com/istio/api/issues/909",
    ),
    Rule(
        "MC123",
        "outlier-panic",
        Severity.WARNING,
        "minHealthPercent is so high that ejecting hosts sends the cluster into panic mode.",
        "When the healthy share of a cluster drops below healthy_panic_threshold (= minHealthPercent), Envoy "
        "balances over all hosts, ejected ones included, so the detector stops protecting callers.",
        "Lower minHealthPercent below 100 x (N - ejectable) / N, or 0 to disable panic mode.",
        issue=_ISTIO + "20135",
    ),
    Rule(
        "MC130",
        "max-connections-without-pending-limit",
        Severity.WARNING,
        "tcp.maxConnections is set without http.http1MaxPendingRequests: excess requests queue, nothing trips.",
        "Istio's default max_pending_requests is 4294967295, so requests beyond maxConnections wait in the "
        "queue (slow) instead of failing fast with 503 UO.",
        "Set http.http1MaxPendingRequests to the queue you accept.",
        issue="https://github.com/imroc/learning-istio/issues/11",
        scenario=_SCN + "test_circuit_breaking.py::test_connection_pool_overflows_beyond_its_capacity",
    ),
    Rule(
        "MC140",
        "fault-without-percentage",
        Severity.ERROR,
        "A fault delay or abort has no percentage, so it is never injected.",
        "istiod translates a missing percentage to 0 %; nothing is delayed or aborted (the istio/api docs "
        "once said 100 %).",
        "Add percentage: {value: 100} (or the share you want).",
        issue=_ISTIO + "36303",
    ),
    Rule(
        "MC150",
        "retries-non-idempotent",
        Severity.WARNING,
        "A route that carries non-idempotent requests (POST/PATCH, payment paths or hosts) retries after the "
        "request was sent.",
        "5xx, gateway-error, reset and retriable status codes retry requests the server may already have "
        "processed, so a payment can be charged twice.",
        "Retry only connect-failure,refused-stream,reset-before-request on such routes, or make the API "
        "idempotent (idempotency keys).",
        issue=_ISTIO + "13851",
    ),
    Rule(
        "MC151",
        "default-retries-non-idempotent",
        Severity.WARNING,
        "Istio's default retry policy (no retries block) retries 503 on a non-idempotent route.",
        "Before Istio 1.24 the default retried 503 twice, including 503s the application returned after "
        "processing the request.",
        "Add retries with retryOn: connect-failure,refused-stream, or attempts: 0.",
        versions="<1.24",
        issue=_ISTIO + "13851",
    ),
    Rule(
        "MC160",
        "duplicate-virtual-service",
        Severity.WARNING,
        "Several VirtualServices bound to sidecars (mesh) route the same host.",
        "For sidecars Istio does not merge them: only the oldest applies and the others are silently ignored.",
        "Merge the routes into one VirtualService per host.",
        issue=_ISTIO + "36621",
    ),
    Rule(
        "MC161",
        "duplicate-destination-rule",
        Severity.WARNING,
        "Several DestinationRules apply to the same host.",
        "Only the first DestinationRule's traffic policy and subsets are used; the other's connection pool "
        "and outlier detection are silently dropped.",
        "Merge them into one DestinationRule per host.",
        issue="",
    ),
    Rule(
        "MC170",
        "subset-selects-no-pods",
        Severity.WARNING,
        "A subset's labels match no pod of the service (error when a route sends traffic to it).",
        "Istio builds an empty cluster for it; every request routed there fails with 503 UH.",
        "Fix the subset labels to match a version of the service, or remove the subset.",
        issue=_ISTIO + "54023",
    ),
    Rule(
        "MC171",
        "route-to-undefined-subset",
        Severity.ERROR,
        "A route sends traffic to a subset that no DestinationRule for the host defines.",
        "The cluster does not exist; Envoy answers 503 NC (no cluster).",
        "Define the subset in the host's DestinationRule or route to an existing subset.",
        issue="",
    ),
    Rule(
        "MC180",
        "unknown-host",
        Severity.NOTE,
        "A host is not a service of the topology, so the topology-dependent rules could not check it.",
        "The policy may target a service outside this topology; pass --topology to describe it.",
        "Check the host name, or add the service to the topology.",
        issue="",
    ),
    Rule(
        "MC190",
        "chained-timeouts",
        Severity.WARNING,
        "A caller's perTryTimeout (or route timeout) is shorter than the budget of a call it makes: the caller gives "
        "up before its dependency may finish.",
        "The caller's sidecar cuts the attempt at its own limit, but the dependency's sidecar keeps trying for up to "
        "its route timeout (or perTryTimeout x tries): that work is wasted, and a retried cut starts it again. Calls "
        "run in order, so their budgets add up.",
        "Give each dependency a budget (route timeout, or perTryTimeout x tries) that fits inside its caller's "
        "per-try limit, or raise the caller's perTryTimeout/timeout to cover the calls it makes.",
        issue=_ISTIO + "6860",
    ),
    Rule(
        "MC191",
        "retry-amplification",
        Severity.WARNING,
        "Retries along a call chain multiply: 9 or more calls can reach a leaf service's application for one user "
        "request.",
        "Each hop's sidecar retries independently; an attempt that reaches a caller makes all its calls again, so "
        "the tries multiply along the chain (attempts: 3 at two hops is 4 x 4 = 16 calls at the leaf). Only "
        "retries of failures after the request was sent (5xx, gateway-error, reset, status codes, per-try "
        "timeouts) multiply; connect-failure and refused-stream retries never reached the caller's application.",
        "Retry at one hop only: keep retries at the edge and set inner hops to retryOn: "
        "connect-failure,refused-stream (or attempts: 0), or the other way round.",
        issue="https://github.com/envoyproxy/envoy/issues/31597",
    ),
)

RULES: dict[str, Rule] = {rule.code: rule for rule in _ALL}
