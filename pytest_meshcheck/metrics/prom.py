"""Prometheus queries bound to a test's time window, for Envoy's own counters.

Counter increases are computed from two instant queries (at the window's start and end), with an
absent series counting as 0: Envoy creates per-code series such as ``upstream_rq{response_code="503"}``
only when the first such response happens (``envoy-ground-truth.md``, surprise 7), so a series absent
at the start and present at the end is a real increase, not missing data.

Label names differ between a real Istio sidecar (``cluster_name``, ``response_code``, Istio's
stats tags) and plain Envoy (``envoy_cluster_name``, ``envoy_response_code``); every helper accepts both.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pytest_meshcheck.errors import PromQueryError

CLUSTER_LABELS = ("cluster_name", "envoy_cluster_name")
# Tags each expression of a batched query (:meth:`Prom.increases`) with its position.
KEY_LABEL = "meshcheck_expr"
# Seconds between two looks for a fresh scrape in :meth:`Prom.wait_scraped_after`.
POLL = 0.05


@dataclass(frozen=True)
class Sample:
    """One series' value at one instant."""

    labels: dict[str, str]
    value: float


@dataclass(frozen=True)
class Series:
    """One series over a range: ``(unix time, value)`` points."""

    labels: dict[str, str]
    points: list[tuple[float, float]]


def series_increase(before: Iterable[Sample], after: Iterable[Sample]) -> float:
    """Summed increase of counter series between two instants, matched by their labels (see ``Prom.increase``)."""
    start = {frozenset(x.labels.items()): x.value for x in before}
    total = 0.0
    for x in after:
        was = start.get(frozenset(x.labels.items()), 0.0)
        total += x.value - was if x.value >= was else x.value
    return total


def _matchers(labels: Mapping[str, str]) -> str:
    def esc(v: str) -> str:
        return v.replace("\\", "\\\\").replace('"', '\\"')

    return ",".join(f'{k}="{esc(v)}"' for k, v in sorted(labels.items()))


def selector(metric: str, labels: Mapping[str, str] | None = None) -> str:
    """``metric{a="b",...}`` with values escaped."""
    return f"{metric}{{{_matchers(labels or {})}}}"


def cluster_selector(metric: str, cluster: str, extra: Mapping[str, str] | None = None) -> str:
    """A selector matching ``cluster`` under either the Istio or the plain Envoy label name."""
    parts = [selector(metric, {label: cluster, **(extra or {})}) for label in CLUSTER_LABELS]
    return " or ".join(parts)


class Prom:
    """Queries one Prometheus server, optionally within a time window.

    Args:
        url: Base URL of the Prometheus HTTP API.
        start: Window start (unix seconds); counters are diffed from here.
        end: Window end; ``None`` means "now" at query time.
        base_labels: Labels added to every counter helper's selector (for example the client proxy's
            target label), so counters of other proxies never leak in.
        timeout: Seconds allowed per HTTP call.
    """

    def __init__(
        self,
        url: str,
        *,
        start: float | None = None,
        end: float | None = None,
        base_labels: Mapping[str, str] | None = None,
        timeout: float = 10.0,
    ) -> None:
        from prometheus_api_client import PrometheusConnect

        self.url = url
        self.start = start
        self.end = end
        self.base_labels = dict(base_labels or {})
        self.timeout = timeout
        self._client = PrometheusConnect(url=url, disable_ssl=True, timeout=timeout)
        self.log: list[dict[str, Any]] = []

    def window(self, start: float, end: float | None = None) -> Prom:
        """A copy of this client bound to another window (shares the query log)."""
        other = Prom.__new__(Prom)
        other.__dict__.update(self.__dict__)
        other.start, other.end = start, end
        return other

    # ------------------------------------------------------------------ raw queries

    def query(self, promql: str, at: float | None = None) -> list[Sample]:
        """Instant query at ``at`` (default: now).

        Raises:
            PromQueryError: Prometheus is unreachable or rejected the query.
        """
        params = {"time": f"{at:.3f}"} if at is not None else None
        try:
            result = self._client.custom_query(promql, params=params)
        except Exception as exc:  # the client raises requests' and its own exception types
            raise PromQueryError(f"Prometheus at {self.url} failed: {exc}", query=promql) from exc
        samples = [Sample(dict(r.get("metric", {})), float(r["value"][1])) for r in result]
        self.log.append({"query": promql, "at": at, "result": [(s.labels, s.value) for s in samples]})
        return samples

    def value(self, promql: str, at: float | None = None) -> float:
        """Sum of an instant query's values; 0.0 when no series matches."""
        return sum(s.value for s in self.query(promql, at))

    def range(self, promql: str, start: float, end: float, step: float = 1.0) -> list[Series]:
        """Range query between two unix times.

        Raises:
            PromQueryError: Prometheus is unreachable or rejected the query.
        """
        try:
            result = self._client.custom_query_range(
                promql,
                start_time=datetime.fromtimestamp(start, UTC),
                end_time=datetime.fromtimestamp(end, UTC),
                step=f"{step:g}s",
            )
        except Exception as exc:
            raise PromQueryError(f"Prometheus at {self.url} failed: {exc}", query=promql) from exc
        return [
            Series(dict(r.get("metric", {})), [(float(t), float(v)) for t, v in r.get("values", [])]) for r in result
        ]

    # ------------------------------------------------------------------ counters

    def _bounds(self) -> tuple[float, float]:
        if self.start is None:
            raise PromQueryError("this Prom is not bound to a time window; use prom.window(start, end)")
        return self.start, self.end if self.end is not None else time.time()

    def increase(self, promql: str) -> float:
        """Increase of a counter expression over the window, summed over its series.

        Series by series, as Prometheus' own ``increase`` treats counters: a series absent at the start
        counts from 0; a series lower at the end than at the start was reset (its cluster was removed and
        added again), so it counts from 0; a series gone by the end (its cluster was removed) adds nothing.
        A difference of sums would count a removed cluster's whole total as a negative increase.
        """
        start, end = self._bounds()
        return series_increase(self.query(promql, start), self.query(promql, end))

    def increases(self, exprs: Mapping[str, str]) -> dict[str, float]:
        """:meth:`increase` of several counter expressions, in one query at each end of the window.

        Each expression's series are tagged with its key (``label_replace``), so ``or`` keeps every one of
        them; each key's increase is counted series by series as in :meth:`increase`.
        """
        if not exprs:
            return {}
        start, end = self._bounds()
        keys = list(exprs)
        query = " or ".join(f'label_replace({exprs[k]}, "{KEY_LABEL}", "{i}", "", "")' for i, k in enumerate(keys))

        def at(t: float) -> dict[str, list[Sample]]:
            samples: dict[str, list[Sample]] = {k: [] for k in keys}
            for sample in self.query(query, t):
                samples[keys[int(sample.labels[KEY_LABEL])]].append(sample)
            return samples

        before, after = at(start), at(end)
        return {k: series_increase(before[k], after[k]) for k in keys}

    def counter_increase(self, metric: str, labels: Mapping[str, str] | None = None) -> float:
        """Increase of ``metric{labels}`` (plus the base labels) over the window."""
        return self.increase(selector(metric, {**self.base_labels, **(labels or {})}))

    def cluster_increase(self, metric: str, cluster: str, labels: Mapping[str, str] | None = None) -> float:
        """Increase of an ``envoy_cluster_*`` counter for one cluster, under either label convention."""
        return self.increase(cluster_selector(metric, cluster, {**self.base_labels, **(labels or {})}))

    def wait_scraped_after(
        self, t: float, target_labels: Mapping[str, str], timeout: float = 10.0, *, latest: bool = False
    ) -> float:
        """Wait until Prometheus holds a sample of every matching target taken after unix time ``t``.

        A counter read "at the end of the window" is only complete once a scrape happened after the
        last request; this waits for that scrape rather than sleeping a guessed interval. Used at the
        start of a window, the returned time is a baseline that precedes all of the window's traffic.

        Args:
            t: Unix time every target's last scrape must follow.
            target_labels: Labels selecting the targets (several, for the sidecars of a service's pods).
            timeout: Seconds to wait.
            latest: Return the newest of the targets' scrapes instead of the oldest: the time to read a
                window's end at, because an instant query there sees every target's scrape after ``t``
                (at the oldest, a target scraped later still shows its sample from before ``t``).

        Returns:
            Unix time of the oldest (or with ``latest``, the newest) of the targets' last scrapes.

        Raises:
            PromQueryError: No such scrape within ``timeout``.
        """
        began = time.monotonic()
        # Only a successful scrape holds the counters: a failed one (a timeout on a busy machine) still
        # writes ``up`` = 0 with its time, and a window ending there would read the sample before ``t``.
        # Multiplying by ``up`` turns such a target's time into 0, so it keeps the wait going.
        up = selector("up", target_labels)
        expr = f"timestamp({up}) * {up}"
        last = 0.0
        while time.monotonic() - began < timeout:
            samples = self.query(expr)
            if samples:
                last = min(s.value for s in samples)
                if last >= t:
                    return max(s.value for s in samples) if latest else last
            # A scrape is visible to queries within milliseconds of being taken; poll often enough that the
            # wait ends close to it (an instant query costs Prometheus about a millisecond).
            time.sleep(POLL)
        raise PromQueryError(
            f"Prometheus at {self.url} has no scrape of {dict(target_labels)} after t={t:.3f} "
            f"(last at {last:.3f}) within {timeout}s; is the target up? See {self.url}/targets",
            query=expr,
        )
