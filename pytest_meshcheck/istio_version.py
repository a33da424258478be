"""Istio releases whose resilience behaviour differs, and what differs.

Facts come from ``shared/notes/istio-translation.md`` §0.1 (istiod source, by tag). Only behaviour that
changes a translated config or an expectation is modelled.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import total_ordering

from pytest_meshcheck.errors import MeshcheckError

DEFAULT_ISTIO_VERSION = "1.30"
OLDEST_SUPPORTED = (1, 20)


@total_ordering
@dataclass(frozen=True)
class IstioVersion:
    """A minor Istio release, such as ``1.30``, with the behaviour switches that matter here."""

    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> IstioVersion:
        """Parse ``1.30``, ``1.30.3`` or ``v1.24.0``.

        Raises:
            MeshcheckError: Not a version, or older than the oldest supported release.
        """
        m = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.\d+)?(?:[-+].*)?", text.strip())
        if not m:
            raise MeshcheckError(
                f"Istio version {text!r} is not of the form 1.30 or 1.30.3; pass e.g. --mesh-istio-version 1.30"
            )
        v = cls(int(m.group(1)), int(m.group(2)))
        if (v.major, v.minor) < OLDEST_SUPPORTED:
            raise MeshcheckError(
                f"Istio {v} is older than the oldest release pytest-meshcheck models "
                f"({OLDEST_SUPPORTED[0]}.{OLDEST_SUPPORTED[1]}, the first on Envoy >= 1.28); pass a newer version"
            )
        return v

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, IstioVersion):
            return NotImplemented
        return (self.major, self.minor) < (other.major, other.minor)

    def at_least(self, minor: int) -> bool:
        """True when this is Istio 1.``minor`` or newer."""
        return (self.major, self.minor) >= (1, minor)

    @property
    def default_retries_503(self) -> bool:
        """Before 1.24 the default retry policy retried 503 (``retriable_status_codes: [503]``)."""
        return not self.at_least(24)

    @property
    def honours_retry_backoff(self) -> bool:
        """``retries.backoff`` and ``retryIgnorePreviousHosts`` are translated from 1.26."""
        return self.at_least(26)

    @property
    def stat_prefix_delimiter(self) -> bool:
        """From 1.24 each cluster's ``alt_stat_name`` is ``<cluster name>;``."""
        return self.at_least(24)

    @property
    def track_remaining(self) -> bool:
        """``circuit_breakers.thresholds[].track_remaining`` is on up to 1.28, off from 1.29."""
        return not self.at_least(29)

    @property
    def sends_unhealthy_endpoints(self) -> bool:
        """From 1.31 (``PILOT_AUTO_SEND_UNHEALTHY_ENDPOINTS``) every cluster gets ``healthy_panic_threshold: 0``.

        Unless the DestinationRule sets ``minHealthPercent``; with or without outlierDetection.
        """
        return self.at_least(31)

    @property
    def panic_threshold_zero_without_outlier(self) -> bool:
        """Alias of :attr:`sends_unhealthy_endpoints`, for callers asking about clusters without outlierDetection."""
        return self.sends_unhealthy_endpoints

    @property
    def consistent_hash_keeps_previous_hosts(self) -> bool:
        """Up to 1.22 single-destination consistent-hash routes kept the ``previous_hosts`` retry predicate."""
        return not self.at_least(23)


def parse_istio_version(text: str | None) -> IstioVersion:
    """Parse ``text``, or return the default current release when ``None``."""
    return IstioVersion.parse(text or DEFAULT_ISTIO_VERSION)
