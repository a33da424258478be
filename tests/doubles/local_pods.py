"""The fake API server's pods as real local processes, started from the files their ConfigMaps ship.

:class:`LocalPods` watches a :class:`~tests.doubles.fake_kube_api.FakeKubeAPI`: when a Deployment is
created, it starts a real process for each of its pods from the files of the ConfigMap that the
Deployment mounts (what the code under test shipped): the echo workload for echo pods, the agent for
the agent pod. Port-forwards to the agent reach the local agent process, and the agent's
``--resolve`` entries send its load and chaos to the local echo processes.

Container arguments are expanded as the kubelet expands them (``$(VAR)`` from the container's env, ``$$``
is one ``$``). A pod of a service with ``--calls`` sends its calls to a :class:`HostRouter` (its sidecar's
stand-in, by ``--outbound``), and port-forwards to its Envoy admin port reach a :class:`FakeSidecarAdmin`
of its own, ``caller_lag`` seconds behind the API server.

Processes are stopped by PID on :meth:`LocalPods.close`; echo processes also exit with this process.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from pytest_meshcheck.errors import MeshSetupError
from pytest_meshcheck.kube.callers import ENVOY_ADMIN_PORT
from pytest_meshcheck.kube.manifests import AGENT_NAME, AGENT_PORT, ECHO_ADMIN_PORT
from tests.doubles.fake_kube_api import FakeKubeAPI, selector_matches
from tests.doubles.fake_sidecar_admin import FakeSidecarAdmin
from tests.doubles.host_router import HostRouter

_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand(arg: str, env: dict[str, str]) -> str:
    """``arg`` as the kubelet runs it: ``$(NAME)`` of a defined variable replaced, ``$$`` made one ``$``.

    An undefined ``$(NAME)`` stays as written, as in Kubernetes.
    """

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR.sub(one, arg)


def _read_ready(proc: subprocess.Popen[bytes], prefix: bytes, timeout: float = 10.0) -> dict[str, Any]:
    assert proc.stdout is not None
    deadline = time.monotonic() + timeout
    line = b""
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if line.startswith(prefix):
            return dict(json.loads(line[len(prefix) :]))
        if not line and proc.poll() is not None:
            break
    raise MeshSetupError(f"local pod process {proc.args!r} did not print {prefix!r} (last line {line!r})")


class LocalPods:
    """Runs the fake API server's pods as local processes (see the module docstring).

    Args:
        api: The fake API server to watch.
        envoy_admin: URL the agent uses as its sidecar's admin API (a :class:`FakeSidecarAdmin`).
        caller_lag: :class:`FakeSidecarAdmin` lag of the sidecar of each pod with calls.
    """

    def __init__(self, api: FakeKubeAPI, envoy_admin: str, *, caller_lag: float = 0.0) -> None:
        self.api = api
        self.envoy_admin = envoy_admin
        self.caller_lag = caller_lag
        self.work = Path(tempfile.mkdtemp(prefix="meshcheck-localpods-"))
        self.procs: list[subprocess.Popen[bytes]] = []
        self.resolve: dict[str, str] = {}
        self.agent_port = 0
        #: Service name -> the local serving addresses of its pods.
        self.services: dict[str, list[tuple[str, int]]] = {}
        #: Pod name -> the fake admin API of its sidecar (pods with calls only).
        self.caller_admins: dict[str, FakeSidecarAdmin] = {}
        self.router = HostRouter(lambda service: list(self.services.get(service, ())))
        api.on_created.append(self._created)

    def __enter__(self) -> LocalPods:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _files(self, ns: str, template: dict[str, Any], pod: str) -> Path:
        volume = next(v for v in template["spec"]["volumes"] if "configMap" in v)
        cm_name = volume["configMap"]["name"]
        cm = next(c for c in self.api.namespaced("configmaps", ns) if c["metadata"]["name"] == cm_name)
        root = self.work / pod
        for item in volume["configMap"]["items"]:
            target = root / item["path"]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(cm["data"][item["key"]], encoding="utf-8")
        return root

    def _start(self, argv: list[str], prefix: bytes) -> tuple[subprocess.Popen[bytes], dict[str, Any]]:
        # -I -S: the pod's interpreter has no site-packages either, so the shipped files must be enough.
        proc = subprocess.Popen([sys.executable, "-I", "-S", *argv], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc, _read_ready(proc, prefix)

    def _created(self, obj: dict[str, Any]) -> None:
        if obj.get("kind") != "Deployment":
            return
        ns = obj["metadata"]["namespace"]
        template = obj["spec"]["template"]
        labels = template["metadata"].get("labels", {})
        container = template["spec"]["containers"][0]
        pods = [
            p
            for p in self.api.namespaced("pods", ns)
            if selector_matches(",".join(f"{k}={v}" for k, v in obj["spec"]["selector"]["matchLabels"].items()),
                                p["metadata"].get("labels", {}))
        ]  # fmt: skip
        for pod in pods:
            name, ip = pod["metadata"]["name"], pod["status"]["podIP"]
            root = self._files(ns, template, name)
            if labels.get("app") == AGENT_NAME:
                argv = [str(root / "agent.py"), "--port", "0", "--envoy-admin", self.envoy_admin,
                        "--workload-admin-port", str(ECHO_ADMIN_PORT)]  # fmt: skip
                for source, target in self.resolve.items():
                    argv += ["--resolve", f"{source}={target}"]
                _, ready = self._start(argv, b"MESHCHECK_AGENT_READY ")
                self.agent_port = int(ready["port"])
                self.api.forward_to(AGENT_NAME, AGENT_PORT, ("127.0.0.1", self.agent_port))
                continue
            env = {"POD_NAME": name, "POD_NAMESPACE": ns}
            env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
            args = [expand(a, env) for a in container["command"][3:]]
            port = args[args.index("--port") + 1]
            args[args.index("--port") + 1] = "0"
            args[args.index("--admin-port") + 1] = "0"
            args[args.index("--host") + 1] = "127.0.0.1"
            args[args.index("--admin-host") + 1] = "127.0.0.1"
            args[0] = str(root / "echo.py")
            if "--calls" in args:
                # Istio's iptables send the pod's calls to its sidecar; here the router stands in for it.
                args += ["--outbound", f"{self.router.address[0]}:{self.router.address[1]}"]
                admin = self.caller_admins[name] = FakeSidecarAdmin(self.api, lag=self.caller_lag)
                self.api.forward_pod(name, ENVOY_ADMIN_PORT, admin.address)
            _, ready = self._start([*args, "--parent-pid", str(os.getpid())], b"MESHCHECK_READY ")
            self.services.setdefault(labels["app"], []).append(("127.0.0.1", int(ready["port"])))
            self.resolve[f"{ip}:{port}"] = f"127.0.0.1:{ready['port']}"
            self.resolve[f"{ip}:{ECHO_ADMIN_PORT}"] = f"127.0.0.1:{ready['admin_port']}"
            self.resolve.setdefault(f"{labels['app']}:{port}", f"127.0.0.1:{ready['port']}")

    def close(self) -> None:
        """Stop every process by PID, the router and the callers' fake sidecars, and remove the files."""
        self.router.close()
        for admin in self.caller_admins.values():
            admin.close()
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
            if proc.stdout is not None:
                proc.stdout.close()
        shutil.rmtree(self.work, ignore_errors=True)
