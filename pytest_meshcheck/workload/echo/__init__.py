"""Echo workload: one process per replica of a service in a meshcheck test mesh.

Standard library only (plus :mod:`pytest_meshcheck.durations`, :mod:`pytest_meshcheck.errors` and
:mod:`pytest_meshcheck.procfs`, which are standard library only too), Python 3.11+. The same files run
locally behind Envoy and in a Kubernetes pod from a ConfigMap, laid out by
:mod:`pytest_meshcheck.workload.bundle` and started as
``python3 -I -S echo.py --service reviews --version v1 --instance reviews-v1-0 --namespace default``.

Serving port (HTTP/1.1, keep-alive, any method and path):
    Answers ``200`` with ``x-meshcheck-service/-version/-instance`` headers and a small JSON body naming the
    replica, the method, the path and the request's ``x-envoy-attempt-count``. Request bodies are read and
    discarded (``Content-Length`` or chunked). Query overrides, as in Istio's echo app:
    ``?codes=503:1,200:3`` (weighted status), ``?delay=250ms`` (Go duration), ``?headers=name:value,...``.
    An invalid override gets ``400`` with a message naming the parameter.

Calls (``--calls JSON``): for every request, the instance calls each dependency in order (through
    ``--outbound HOST:PORT``, its pod's sidecar, or the dependency's own authority in a pod), propagating
    ``x-request-id``; a failed call (non-2xx, or no answer: 502) makes the answer that status with
    ``x-meshcheck-failed-hop``, unless its ``on_error`` says ``ignore`` or another status.

Admin port (separate listener, loopback by default):
    ``GET /healthz``; ``GET|PUT|DELETE /chaos``; ``GET /stats`` (JSON); ``GET /metrics`` (Prometheus text);
    ``GET /ledger`` (attempts and executions per ``x-request-id``). A workload host (``--host-spec FILE``,
    many instances in one process) serves each instance's admin API below ``/instances/<name>``, and at the
    root ``GET /metrics`` for all, ``GET /instances``, ``GET /ledger?service=S`` and ``PUT /outbound``.
    The chaos document is ``{"error": {"status": 503, "probability": 0.5}, "latency": {"delay_ms": 200,
    "probability": 1.0}, "reset": {"probability": 0.3}}``; any subset, ``probability`` defaults to 1.0, and a
    PUT replaces the whole state.

Per request, in this order: chaos reset (TCP RST before any response byte), else chaos latency, then chaos
error (its status), else the query overrides, else 200. Every random draw comes from one ``random.Random``
seeded by ``--seed``, so a run with the same seed, chaos and traffic order repeats exactly.

Lifetime: prints ``MESHCHECK_READY {"port": P, "admin_port": A, "pid": N}`` once both ports listen; from then
on it exits 0 on SIGTERM/SIGINT, and within about 0.25 s after the process named by ``--parent-pid`` is gone
(a SIGTERM during the ~0.1 s start-up ends it by the signal's default action).

Modules, one concept each:

- :mod:`.overrides`: the query overrides (``codes``, ``delay``, ``headers``).
- :mod:`.chaos`: the chaos state and its JSON document.
- :mod:`.replica`: who the replica is and what it counts.
- :mod:`.metrics`: the counters in the Prometheus text format.
- :mod:`.connection`: the HTTP/1.1 server connection both ports use.
- :mod:`.calls`: the dependency calls and the HTTP/1.1 client that makes them.
- :mod:`.ledger`: attempts and executions per logical request.
- :mod:`.host_spec`: the instance list of a workload host.
- :mod:`.app` and :mod:`.admin`: the serving-port and admin-port handlers.
- :mod:`.ready`: the ready line, printed here and parsed by whoever started the process.
- :mod:`.parent`: exiting when the parent process is gone.
- :mod:`.cli` and :mod:`.server`: the command line, and the process that ties it all together.
- :mod:`.__main__`: the entry point, ``echo.py`` in the shipped tree.

This package imports nothing at import time, so a test process can use :mod:`.ready` or :mod:`.chaos`
without loading the server.
"""
