from __future__ import annotations

import pytest

from pytest_meshcheck.istio_version import IstioVersion
from pytest_meshcheck.policy.model import HTTPRetry
from pytest_meshcheck.translate import convert_retry_policy, default_retry_policy, parse_retry_on
from pytest_meshcheck.translate.retries import DEFAULT_RETRY_ON

V = IstioVersion.parse
PREVIOUS_HOSTS = [
    {
        "name": "envoy.retry_host_predicates.previous_hosts",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
        },
    }
]


@pytest.mark.parametrize(
    ("text", "retry_on", "codes"),
    [
        # Cases from istio retry_test.go.
        ("gateway-error,retriable-status-codes,503", "gateway-error,retriable-status-codes", [503]),
        ("some,fake,5xx,404,conditions,503", "some,fake,5xx,conditions", [404, 503]),
        ("5xx,1000", "5xx,1000", []),  # 1000 is no HTTP status Go knows
        (" 5xx , reset ,, connect-failure ", "5xx,reset,connect-failure", []),
        ("+503,418", "", [503, 418]),  # Go's Atoi takes a sign
        ("306,509,599", "306,509,599", []),  # numbers net/http.StatusText does not name
        ("425,511,226", "", [425, 511, 226]),
    ],
)
def test_parse_retry_on(text: str, retry_on: str, codes: list[int]) -> None:
    assert parse_retry_on(text) == (retry_on, codes)


@pytest.mark.parametrize(
    ("version", "codes"),
    [("1.20", [503]), ("1.23", [503]), ("1.24", None), ("1.30", None)],
)
def test_default_policy_503_until_1_23(version: str, codes: list[int] | None) -> None:
    policy = default_retry_policy(V(version))
    assert policy.get("retriable_status_codes") == codes
    assert policy["retry_on"] == "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
    assert policy["num_retries"] == 2
    assert policy["host_selection_retry_max_attempts"] == 5
    assert policy["retry_host_predicate"] == PREVIOUS_HOSTS
    assert "per_try_timeout" not in policy
    assert "retry_back_off" not in policy


@pytest.mark.parametrize(("version", "has_predicate"), [("1.22", True), ("1.23", False), ("1.30", False)])
def test_consistent_hash_drops_previous_hosts_from_1_23(version: str, has_predicate: bool) -> None:
    policy = default_retry_policy(V(version), consistent_hash=True)
    assert ("retry_host_predicate" in policy) is has_predicate


def test_absent_retries_give_default_policy() -> None:
    assert convert_retry_policy(None, V("1.30"), consistent_hash=False) == default_retry_policy(V("1.30"))


@pytest.mark.parametrize("attempts", [0, -1])
def test_zero_attempts_disable_retries(attempts: int) -> None:
    assert convert_retry_policy(HTTPRetry(attempts), V("1.30"), consistent_hash=False) is None


@pytest.mark.parametrize(("version", "codes"), [("1.23", [503]), ("1.24", None)])
def test_attempts_without_retry_on_keep_default_conditions(version: str, codes: list[int] | None) -> None:
    policy = convert_retry_policy(HTTPRetry(5), V(version), consistent_hash=False)
    assert policy is not None
    assert policy["num_retries"] == 5
    assert policy["retry_on"] == DEFAULT_RETRY_ON
    assert policy.get("retriable_status_codes") == codes


@pytest.mark.parametrize(
    ("retry_on", "want_on", "want_codes"),
    [
        ("5xx", "5xx", None),  # replaces the default, including 1.23's [503]
        # istiod appends ",retriable-status-codes" to an empty string; Envoy skips the empty token
        # (the integration test proves 503s are retried with exactly this policy).
        ("503", ",retriable-status-codes", [503]),
        ("gateway-error,503,504", "gateway-error,retriable-status-codes", [503, 504]),
        ("retriable-status-codes,500", "retriable-status-codes", [500]),
        ("", DEFAULT_RETRY_ON, [503]),  # empty is "unset" to istiod
    ],
)
def test_retry_on_replaces_default(retry_on: str, want_on: str, want_codes: list[int] | None) -> None:
    policy = convert_retry_policy(HTTPRetry(3, retry_on=retry_on), V("1.23"), consistent_hash=False)
    assert policy is not None
    assert policy["retry_on"] == want_on
    assert policy.get("retriable_status_codes") == want_codes


def test_readme_retry_policy() -> None:
    policy = convert_retry_policy(
        HTTPRetry(3, per_try_timeout=2, retry_on="5xx,reset,connect-failure,refused-stream"),
        V("1.30"),
        consistent_hash=False,
    )
    assert policy == {
        "retry_on": "5xx,reset,connect-failure,refused-stream",
        "num_retries": 3,
        "retry_host_predicate": PREVIOUS_HOSTS,
        "host_selection_retry_max_attempts": 5,
        "per_try_timeout": "2s",
    }


def test_remote_localities_set_previous_priorities() -> None:
    policy = convert_retry_policy(HTTPRetry(1, retry_remote_localities=True), V("1.20"), consistent_hash=False)
    assert policy is not None
    assert policy["retry_priority"] == {
        "name": "envoy.retry_priorities.previous_priorities",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.retry.priority.previous_priorities.v3."
            "PreviousPrioritiesConfig",
            "update_frequency": 2,
        },
    }
    off = convert_retry_policy(HTTPRetry(1, retry_remote_localities=False), V("1.20"), consistent_hash=False)
    assert off is not None
    assert "retry_priority" not in off


@pytest.mark.parametrize(("version", "honoured"), [("1.25", False), ("1.26", True)])
def test_backoff_only_from_1_26(version: str, honoured: bool) -> None:
    policy = convert_retry_policy(HTTPRetry(2, backoff=0.1), V(version), consistent_hash=False)
    assert policy is not None
    assert policy.get("retry_back_off") == ({"base_interval": "0.1s"} if honoured else None)


@pytest.mark.parametrize(
    ("version", "ignore", "consistent_hash", "has_predicate"),
    [
        ("1.25", False, False, True),  # not honoured: default predicate stays
        ("1.26", False, False, False),  # explicit false removes it
        ("1.26", True, True, True),  # explicit true adds it even when hashing
        ("1.25", True, True, False),  # not honoured: hashing route keeps no predicate
        ("1.26", None, True, False),
    ],
)
def test_retry_ignore_previous_hosts(
    version: str, ignore: bool | None, consistent_hash: bool, has_predicate: bool
) -> None:
    policy = convert_retry_policy(
        HTTPRetry(2, retry_ignore_previous_hosts=ignore), V(version), consistent_hash=consistent_hash
    )
    assert policy is not None
    assert policy.get("retry_host_predicate") == (PREVIOUS_HOSTS if has_predicate else None)


def test_per_try_timeout_is_passed_through_even_zero() -> None:
    policy = convert_retry_policy(HTTPRetry(2, per_try_timeout=0.0), V("1.30"), consistent_hash=False)
    assert policy is not None
    assert policy["per_try_timeout"] == "0s"
