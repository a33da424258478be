"""The chaos state of one replica: which faults it injects, and the JSON document that sets them.

``PUT /chaos`` replaces the whole state, so an error and a latency fault combine and clearing one leaves
the other. Both ends use these types: the workload validates with :func:`decode_chaos_body`, and the test
process reads ``GET /chaos`` back with :func:`parse_chaos`.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from typing import Any

#: The longest delay the workload sleeps, by chaos latency or by ``?delay=``.
MAX_DELAY_S = 3600.0


@dataclass(frozen=True)
class ErrorFault:
    """Answer with ``status`` instead of serving, with the given probability.

    ``limit`` ends the fault after that many errors (the instance then serves): a threshold such as
    ``consecutive5xxErrors: 3`` is then exact whenever Envoy ejects, since an attempt that reaches the
    instance while the ejection is still on its way to Envoy's worker is served, not failed.
    """

    status: int
    probability: float = 1.0
    limit: int | None = None


@dataclass(frozen=True)
class LatencyFault:
    """Sleep ``delay_ms`` milliseconds before answering, with the given probability."""

    delay_ms: float
    probability: float = 1.0


@dataclass(frozen=True)
class ResetFault:
    """Reset the TCP connection (RST) instead of answering, with the given probability."""

    probability: float = 1.0


@dataclass(frozen=True)
class Chaos:
    """The whole chaos state of one replica; a section that is ``None`` is off."""

    error: ErrorFault | None = None
    latency: LatencyFault | None = None
    reset: ResetFault | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON document ``PUT /chaos`` accepts and ``GET /chaos`` returns (absent sections omitted)."""
        doc: dict[str, Any] = {}
        if self.error is not None:
            doc["error"] = {"status": self.error.status, "probability": self.error.probability}
            if self.error.limit is not None:
                doc["error"]["limit"] = self.error.limit
        if self.latency is not None:
            doc["latency"] = {"delay_ms": self.latency.delay_ms, "probability": self.latency.probability}
        if self.reset is not None:
            doc["reset"] = {"probability": self.reset.probability}
        return doc

    def active(self) -> dict[str, float]:
        """Probability per fault name (``error``, ``delay``, ``reset``); 0 when the section is off."""
        return {
            "error": self.error.probability if self.error else 0.0,
            "delay": self.latency.probability if self.latency else 0.0,
            "reset": self.reset.probability if self.reset else 0.0,
        }


_SECTION_FIELDS = {
    "error": ("status", "probability", "limit"),
    "latency": ("delay_ms", "probability"),
    "reset": ("probability",),
}


def _number(section: dict[str, Any], key: str, where: str, low: float, high: float) -> float:
    value = section[key]
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"chaos field '{where}.{key}': must be a number, got {json.dumps(value)}")
    if not low <= value <= high:
        raise ValueError(f"chaos field '{where}.{key}': must be between {low:g} and {high:g}, got {value}")
    return value


def parse_chaos(doc: object) -> Chaos:
    """Validate a decoded ``PUT /chaos`` document.

    Args:
        doc: The decoded JSON body.

    Returns:
        The chaos state it describes.

    Raises:
        ValueError: The document is invalid; the message names the field (such as ``error.status``).
    """
    if not isinstance(doc, dict):
        raise ValueError("chaos body must be a JSON object with any of the fields error, latency, reset")
    for key in doc:
        if key not in _SECTION_FIELDS:
            raise ValueError(f"chaos field '{key}': unknown field; allowed: error, latency, reset")
    sections: dict[str, dict[str, Any]] = {}
    for name, fields in _SECTION_FIELDS.items():
        if name not in doc:
            continue
        section = doc[name]
        if not isinstance(section, dict):
            raise ValueError(f"chaos field '{name}': must be an object with fields {', '.join(fields)}")
        for key in section:
            if key not in fields:
                raise ValueError(f"chaos field '{name}.{key}': unknown field; allowed: {', '.join(fields)}")
        for key in fields:
            if key not in ("probability", "limit") and key not in section:
                raise ValueError(f"chaos field '{name}.{key}': required")
        sections[name] = section
    error = latency = reset = None
    if "error" in sections:
        section = sections["error"]
        status = section["status"]
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError(
                f"chaos field 'error.status': must be an integer HTTP status in 400-599, got {json.dumps(status)}"
            )
        limit = section.get("limit")
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(
                f"chaos field 'error.limit': must be a whole number of errors, at least 1, got {json.dumps(limit)}"
            )
        error = ErrorFault(status, _probability(section, "error"), limit)
    if "latency" in sections:
        section = sections["latency"]
        delay_ms = _number(section, "delay_ms", "latency", 0.0, MAX_DELAY_S * 1000.0)
        latency = LatencyFault(delay_ms, _probability(section, "latency"))
    if "reset" in sections:
        reset = ResetFault(_probability(sections["reset"], "reset"))
    return Chaos(error=error, latency=latency, reset=reset)


def _probability(section: dict[str, Any], where: str) -> float:
    if "probability" not in section:
        return 1.0
    return _number(section, "probability", where, 0.0, 1.0)


def decode_chaos_body(body: bytes) -> Chaos:
    """Decode and validate a ``PUT /chaos`` body; NaN and Infinity are rejected."""

    def no_constants(name: str) -> Any:
        raise ValueError(f"chaos body: {name} is not allowed; use a finite number")

    try:
        doc = json.loads(body.decode("utf-8"), parse_constant=no_constants)
    except UnicodeDecodeError:
        raise ValueError("chaos body must be UTF-8 JSON") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"chaos body is not valid JSON: {exc}") from None
    return parse_chaos(doc)


def roll(rng: random.Random, probability: float) -> bool:
    """Draw whether a fault with ``probability`` fires for this request."""
    # Certain outcomes draw nothing, which keeps the hot path cheap and the seeded stream unaffected by them.
    return probability >= 1.0 or (probability > 0.0 and rng.random() < probability)
