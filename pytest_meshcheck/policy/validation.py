"""Istio's admission rules that are shared by VirtualService and DestinationRule validation.

Each rule is a port of istiod's validation webhook (``pkg/config/validation``) or of the CRD schema, with
the istiod function named in a comment. Functions return a message when the value is rejected and
``None`` when it is fine, so callers can attach path, line and fix.
"""

from __future__ import annotations

import ipaddress
import re
import warnings

# net/http.StatusText(i) != "" for exactly these codes (Go 1.22+); retryOn accepts them as tokens.
GO_HTTP_STATUS_CODES = frozenset(
    {
        100, 101, 102, 103, 200, 201, 202, 203, 204, 205, 206, 207, 208, 226, 300, 301, 302, 303, 304, 305, 307,
        308, 400, 401, 402, 403, 404, 405, 406, 407, 408, 409, 410, 411, 412, 413, 414, 415, 416, 417, 418, 421,
        422, 423, 424, 425, 426, 428, 429, 431, 451, 500, 501, 502, 503, 504, 505, 506, 507, 508, 510, 511,
    }
)  # fmt: skip

# validation.go: supportedRetryOnPolicies (x-envoy-retry-on and x-envoy-retry-grpc-on values).
RETRY_ON_POLICIES = frozenset(
    {
        "5xx", "gateway-error", "reset", "reset-before-request", "connect-failure", "retriable-4xx",
        "refused-stream", "retriable-status-codes", "retriable-headers", "envoy-ratelimited",
        "http3-post-connect-failure", "cancelled", "deadline-exceeded", "internal", "resource-exhausted",
        "unavailable",
    }
)  # fmt: skip

# retryOn conditions under which Envoy retries a per-try timeout (retry_state_impl.cc: wouldRetryFromReset).
RETRY_ON_RESET = frozenset({"5xx", "gateway-error", "reset"})

# pkg/util/grpc/codes.go: SupportedGRPCStatus.
GRPC_STATUS_NAMES = frozenset(
    {
        "OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND", "ALREADY_EXISTS",
        "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
        "UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED",
    }
)  # fmt: skip

# pkg/config/labels: Istio's DNS-1123 label allows upper case, unlike Kubernetes'.
_ISTIO_LABEL = "[a-zA-Z0-9](?:[-a-zA-Z0-9]*[a-zA-Z0-9])?"
_ISTIO_LABEL_RE = re.compile(_ISTIO_LABEL)
_WILDCARD_LABEL_RE = re.compile(rf"\*|(?:\*|\*-)?{_ISTIO_LABEL}")
_QUALIFIED_NAME = "(?:[A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]"
_TAG_KEY_RE = re.compile(rf"((?:{_ISTIO_LABEL})(?:\.{_ISTIO_LABEL})*/)?({_QUALIFIED_NAME})")
_TAG_VALUE_RE = re.compile(f"(?:{_QUALIFIED_NAME})?")
# Kubernetes object names (RFC 1123 subdomain) and namespaces (RFC 1123 label): lower case only.
_K8S_LABEL = "[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_K8S_LABEL_RE = re.compile(_K8S_LABEL)
_K8S_SUBDOMAIN_RE = re.compile(rf"{_K8S_LABEL}(?:\.{_K8S_LABEL})*")
# validation.go: validHeaderRegex.
HEADER_NAME_RE = re.compile("[-_A-Za-z0-9]+")
# RFC 7230 token (httpguts.ValidHeaderFieldName): what ValidateHTTPHeaderName admits after one leading ':'.
_HEADER_TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
JWT_CLAIM_PREFIX = "@request.auth.claims."
_GO_INT = re.compile(r"[+-]?[0-9]+")
MAX_REGEX_LENGTH = 1024

# Constructs RE2 (Envoy's and Go's regex engine) rejects although Python's re accepts them.
_RE2_UNSUPPORTED = (
    (re.compile(r"\(\?<?[=!]"), "lookaround assertions"),
    (re.compile(r"(?<!\\)(?:\\\\)*\\[1-9]"), "backreferences"),
    (re.compile(r"\(\?P="), "named backreferences"),
    (re.compile(r"\(\?>"), "atomic groups"),
    (re.compile(r"\(\?\("), "conditional groups"),
)
# RE2 syntax Python's re lacks; rewritten to an equivalent before Python compiles the pattern.
_RE2_ONLY = (
    (re.compile(r"\\[pP](?:\{[^}]*\}|[A-Za-z])"), "."),  # Unicode classes \pL, \p{Greek}
    (re.compile(r"(?<!\\)((?:\\\\)*)\\z"), r"\1\\Z"),  # end of text
    (re.compile(r"\(\?[imsU-]+\)"), ""),  # flag groups, allowed anywhere in RE2
    (re.compile(r"\(\?[imsU-]+:"), "(?:"),
)


def go_atoi(text: str) -> int | None:
    """``strconv.Atoi``: optional sign and ASCII digits only, else ``None``."""
    return int(text) if _GO_INT.fullmatch(text) else None


def retry_on_errors(retry_on: str) -> list[str]:
    """Tokens of ``retryOn`` that istiod's ``validateHTTPRetry`` rejects.

    istiod splits on "," **without trimming**, so ``"5xx, reset"`` yields the bad token ``" reset"``, and a
    trailing comma yields an empty token.
    """
    bad = []
    for token in retry_on.split(","):
        code = go_atoi(token)
        if (code is None or code not in GO_HTTP_STATUS_CODES) and token not in RETRY_ON_POLICIES:
            bad.append(token)
    return bad


def retry_on_conditions(retry_on: str) -> set[str]:
    """The conditions istiod's translator keeps (``parseRetryOn`` trims tokens and drops status codes)."""
    return {t.strip() for t in retry_on.split(",") if t.strip() and go_atoi(t.strip()) is None}


def is_istio_dns_label(value: str) -> bool:
    """``labels.IsDNS1123Label`` (Istio's: upper case allowed, at most 63 characters)."""
    return len(value) <= 63 and _ISTIO_LABEL_RE.fullmatch(value) is not None


def is_k8s_name(value: str) -> bool:
    """A valid Kubernetes object name (RFC 1123 subdomain: lower case, digits, '-', '.'; at most 253)."""
    return len(value) <= 253 and _K8S_SUBDOMAIN_RE.fullmatch(value) is not None


def is_k8s_namespace(value: str) -> bool:
    """A valid Kubernetes namespace (RFC 1123 label: lower case, digits, '-'; at most 63)."""
    return len(value) <= 63 and _K8S_LABEL_RE.fullmatch(value) is not None


def _dns_labels_error(domain: str) -> str | None:
    # agent.ValidateDNS1123Labels
    parts = domain.split(".")
    if go_atoi(parts[-1]) is not None:
        return f"domain name {domain!r} is invalid (top-level domain {parts[-1]!r} cannot be all-numeric)"
    for i, label in enumerate(parts):
        if i == len(parts) - 1 and label == "":
            return None
        if not is_istio_dns_label(label):
            return f"domain name {domain!r} is invalid (label {label!r} is not a DNS-1123 label)"
    return None


def wildcard_domain_error(domain: str) -> str | None:
    """``agent.ValidateWildcardDomain``: a DNS name whose first label may be a wildcard."""
    if not domain:
        return "empty domain name is not allowed"
    if len(domain) > 255:
        return f"domain name {domain[:40]!r}... is too long (max 255)"
    first, _, rest = domain.partition(".")
    if not (len(first) <= 63 and _WILDCARD_LABEL_RE.fullmatch(first)):
        return f"domain name {domain!r} is invalid (label {first!r} is not a DNS-1123 label)"
    return _dns_labels_error(rest) if "." in domain else None


def fqdn_error(domain: str) -> str | None:
    """``agent.ValidateFQDN``."""
    if not domain:
        return "empty domain name is not allowed"
    if len(domain) > 255:
        return "domain name is too long (max 255)"
    return _dns_labels_error(domain)


def is_ip(value: str) -> bool:
    """True for an IPv4 or IPv6 address."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def hosts_overlap(a: str, b: str) -> bool:
    """``host.Name.Matches``: equal, or one wildcard covers the other."""
    if a.startswith("*") and b.startswith("*"):
        shorter, longer = (a, b) if len(a) < len(b) else (b, a)
        return longer[1:].endswith(shorter[1:])
    if a.startswith("*"):
        return b.endswith(a[1:])
    if b.startswith("*"):
        return a.endswith(b[1:])
    return a == b


def label_errors(labels: dict[str, str]) -> list[tuple[str, str]]:
    """``labels.Instance.Validate``: ``(key, message)`` for each bad key or value."""
    out = []
    for key, value in labels.items():
        m = _TAG_KEY_RE.fullmatch(key)
        if m is None:
            out.append((key, f"invalid label key {key!r}"))
        elif m.group(1) and len(m.group(1)) - 1 > 253:
            out.append((key, f"invalid label key {key!r} (DNS prefix is too long)"))
        elif len(m.group(2)) > 63:
            out.append((key, f"invalid label key {key!r} (name is longer than 63 characters)"))
        if _TAG_VALUE_RE.fullmatch(value) is None:
            out.append((key, f"invalid label value {value!r}"))
    return out


def regex_error(pattern: str) -> str | None:
    r"""``validateStringRegexp``: non-empty, at most 1024 characters, and valid RE2 syntax.

    Python's ``re`` stands in for RE2 here. Its syntax is close enough for a syntax check once the few
    constructs that differ are handled: RE2-only syntax (``\pL``, ``\z``, flag groups anywhere) is
    rewritten before compiling, and Python-only constructs RE2 rejects (lookaround, backreferences,
    atomic and conditional groups) are reported. It remains a check of syntax, not of RE2's program size.
    """
    if not pattern:
        return "regex must not be empty"
    if len(pattern) > MAX_REGEX_LENGTH:
        return f"regex is {len(pattern)} characters long; Istio allows at most {MAX_REGEX_LENGTH}"
    for construct, name in _RE2_UNSUPPORTED:
        if construct.search(pattern):
            return f"regex {pattern!r} uses {name}, which RE2 (the engine Istio and Envoy use) does not support"
    translated = pattern
    for construct, replacement in _RE2_ONLY:
        translated = construct.sub(replacement, translated)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            re.compile(translated)
    except (re.error, RecursionError, OverflowError, ValueError) as exc:
        return f"regex {pattern!r} does not compile: {exc}"
    return None


def header_name_error(name: str) -> str | None:
    """``ValidateHTTPHeaderNameOrJwtClaimRoute`` for a header that is not a JWT claim route.

    A token of RFC 7230 characters, optionally after one ``:`` (pseudo-headers such as ``:authority``).
    """
    if not name:
        return "header name cannot be empty"
    token = name[1:] if name.startswith(":") else name
    if _HEADER_TOKEN_RE.fullmatch(token) is None:
        return f"{name!r} is not a valid header name"
    return None


def legacy_gateway_name(gateway: str) -> str | None:
    """``validateGatewayNames``: the ``<namespace>/<name>`` istiod recommends for a legacy ``name.namespace``."""
    parts = gateway.split(".")
    return f"{parts[1]}/{parts[0]}" if "/" not in gateway and len(parts) > 1 else None


def percentage_error(value: float) -> str | None:
    """``validatePercentage``: 0, or within [0.0001, 100]."""
    if value < 0.0 or value > 100.0 or 0.0 < value < 0.0001:
        return f"percentage {value} is neither 0 nor in the range 0.0001..100"
    return None


def port_error(number: int) -> str | None:
    """``agent.ValidatePort``."""
    return None if 1 <= number <= 65535 else f"port number {number} must be in the range 1..65535"
