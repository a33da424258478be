"""Has Prometheus scraped the run's pods yet? Asked with ``up``, under either relabelling convention."""

from __future__ import annotations

from collections.abc import Collection

import httpx

from pytest_meshcheck.kube.wait import wait_until

#: Prometheus label names of a pod's namespace and name: the addon's current relabelling, then the older one.
POD_LABELS = (("namespace", "pod"), ("kubernetes_namespace", "kubernetes_pod_name"))


def wait_scraped(
    prometheus_url: str, namespace: str, pods: Collection[str], *, timeout: float
) -> tuple[float, tuple[str, str]]:
    """Wait until every pod of ``pods`` in ``namespace`` has ``up == 1``.

    Returns:
        Seconds waited, and the ``(namespace label, pod label)`` names this Prometheus uses.

    Raises:
        MeshTimeoutError: Some pod was not scraped within ``timeout``.
    """
    found: list[tuple[str, str]] = []

    def check() -> tuple[bool, object]:
        for ns_label, pod_label in POD_LABELS:
            query = f'up{{{ns_label}="{namespace}"}} == 1'
            try:
                resp = httpx.get(prometheus_url + "/api/v1/query", params={"query": query}, timeout=5.0)
                results = resp.json()["data"]["result"]
            except (httpx.HTTPError, ValueError, KeyError) as exc:
                return False, f"query failed: {exc}"
            if results:
                found[:] = [(ns_label, pod_label)]
                missing = sorted(set(pods) - {r["metric"].get(pod_label) for r in results})
                return not missing, f"not yet scraped: {', '.join(missing)}"
        return False, f"no target of namespace {namespace} scraped yet"

    waited = wait_until(
        check,
        timeout=timeout,
        description="Prometheus to scrape the agent and echo pods",
        interval=1.0,
        fix=f"Check the targets page ({prometheus_url}/targets) for pods of {namespace}",
    )
    return waited, found[0]
