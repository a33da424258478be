"""The capacity check: a topology too large for the machine is refused before anything starts."""

from __future__ import annotations

import pytest

from pytest_meshcheck.errors import MeshSetupError
from pytest_meshcheck.local import capacity as cap
from pytest_meshcheck.local.capacity import check_capacity, estimate, mem_available_mb
from pytest_meshcheck.topology import Topology, load_topology, parse_topology

PLENTY = "MemTotal: 67108864 kB\nMemFree: 1000 kB\nMemAvailable: 33554432 kB\n"  # 32 GB available


def topology(services: int, replicas: int, *, callers_every: int = 0) -> Topology:
    raw = []
    for i in range(services):
        svc: dict[str, object] = {"name": f"s{i}", "port": 8080, "versions": [{"name": "v1", "replicas": replicas}]}
        if callers_every and i % callers_every == 0 and i + 1 < services:
            svc["calls"] = [{"service": f"s{i + 1}"}]
        raw.append(svc)
    return parse_topology({"services": raw}, source="big.yaml")


def meminfo(mb: float) -> str:
    return f"MemTotal: 99999999 kB\nMemAvailable: {int(mb * 1024)} kB\n"


def test_mem_available_is_read_from_meminfo_text() -> None:
    assert mem_available_mb(PLENTY) == 32768
    assert mem_available_mb("MemTotal: 1 kB\n") is None


def test_the_seed_topology_fits_a_small_runner() -> None:
    result = check_capacity(load_topology(), hosts=2, meminfo=meminfo(2048), nofile=(1024, 4096))
    assert result.memory_mb < 2048
    assert result.max_fds < 1024
    assert result.memory_available_mb == 2048
    assert result.nofile_soft == 1024


def test_memory_estimate_adds_hosts_instances_envoys_clusters_and_prometheus() -> None:
    t = topology(10, 3, callers_every=5)  # 2 callers x 3 replicas: 6 pod sidecars + the client's
    got = estimate(t, hosts=2, prometheus=False).memory_mb
    clusters = 10  # one per service: each has a single version, so no subsets
    want = (
        2 * cap.HOST_MB
        + 30 * cap.INSTANCE_MB
        + cap.ENVOY_SHARED_MB
        + 7 * (cap.ENVOY_PRIVATE_MB + clusters * cap.ENVOY_PER_CLUSTER_MB)
    )
    assert got == pytest.approx(want, abs=0.1)
    assert estimate(t, hosts=2, prometheus=True).memory_mb > got + cap.PROMETHEUS_MB


def test_more_hosts_spread_the_instances_so_each_needs_fewer_fds() -> None:
    t = topology(100, 20)
    one = estimate(t, hosts=1, prometheus=False)
    four = estimate(t, hosts=4, prometheus=False)
    assert (one.host_instances, four.host_instances) == (2000, 500)
    assert one.host_fds - four.host_fds == cap.FDS_PER_INSTANCE * (2000 - 500)
    assert one.envoy_fds == four.envoy_fds
    assert "2000 instances" in one.fds_process
    assert four.fds_process == "the client's Envoy"


def test_too_little_memory_names_the_file_both_needs_and_the_fix() -> None:
    t = topology(200, 3, callers_every=2)  # 300 pod sidecars
    need = estimate(t, hosts=2).memory_mb
    with pytest.raises(MeshSetupError) as info:
        check_capacity(t, hosts=2, meminfo=meminfo(need - 1), nofile=(1_000_000, 1_000_000))
    msg = str(info.value)
    assert msg.startswith("big.yaml: this topology is too large for this machine")
    assert f"about {need:,.0f} MB of memory" in msg
    assert f"{need - 1:,.0f} MB is available (MemAvailable)" in msg
    assert "file descriptors per process" in msg
    assert "fewer services or replicas" in msg
    assert "ulimit" not in msg  # the descriptors fit: no advice about them
    check_capacity(t, hosts=2, meminfo=meminfo(need + 1), nofile=(1_000_000, 1_000_000))


def test_too_few_file_descriptors_says_how_many_and_how_to_raise_the_limit() -> None:
    t = topology(2000, 20)
    need = estimate(t, hosts=2, prometheus=False).max_fds
    with pytest.raises(MeshSetupError) as info:
        check_capacity(t, hosts=2, prometheus=False, meminfo=PLENTY, nofile=(need - 1, need + 100))
    msg = str(info.value)
    assert f"needs about {need:,} and the limit is {need - 1:,}" in msg
    assert f"ulimit -n {need}" in msg
    assert "hard limit" not in msg
    assert "memory:" not in msg
    check_capacity(t, hosts=2, prometheus=False, meminfo=PLENTY, nofile=(need, need))


def test_a_need_above_the_hard_limit_says_to_raise_that_first() -> None:
    t = topology(2000, 20)
    with pytest.raises(MeshSetupError, match=r"above the hard limit 4096: raise it first"):
        check_capacity(t, hosts=2, prometheus=False, meminfo=PLENTY, nofile=(1024, 4096))


def test_unknown_memory_and_unlimited_descriptors_are_not_refused() -> None:
    result = check_capacity(topology(2000, 20), hosts=2, meminfo="", nofile=(None, None))
    assert result.memory_available_mb is None
    assert result.nofile_soft is None
