"""Test doubles: stand-ins for a cluster, a sidecar, Prometheus and an upstream, never shipped in the wheel.

Each module holds one double (or the child script a double starts):

- :mod:`tests.doubles.fake_kube_api`: a Kubernetes API server at the HTTP level.
- :mod:`tests.doubles.fake_sidecar_admin`: the Envoy admin API of a pod's sidecar, fed by the fake API.
- :mod:`tests.doubles.fake_prometheus`: ``/-/ready`` and ``up`` queries, one series per fake pod.
- :mod:`tests.doubles.local_pods`: the fake API's pods as real local processes (echo, agent).
- :mod:`tests.doubles.host_router`: a calling pod's sidecar stand-in that forwards by ``Host``.
- :mod:`tests.doubles.fake_cluster`: all of the above behind one kubeconfig.
- :mod:`tests.doubles.static_envoy`: one real Envoy from a static bootstrap, for the load engine.
- :mod:`tests.doubles.upstream` and :mod:`tests.doubles.upstream_server`: a counting HTTP/1.1 upstream.
- :mod:`tests.doubles.child`: what the process doubles share (stop by PID, one plain GET).

They are importable as ``tests.doubles`` because pytest puts the repository root on ``sys.path`` for
the root ``conftest.py``; the benchmarks put it there themselves.
"""
