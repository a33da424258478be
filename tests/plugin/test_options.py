"""Options: ``--help``, precedence (CLI > env > ini > default), and a usage error for every bad value."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from pytest_meshcheck.plugin import SETTINGS_KEY
from pytest_meshcheck.settings import OPTIONS, MeshSettings, Option

# Pinned on purpose (not derived from OPTIONS): renaming or dropping an option must break this test.
HELP_LINES = [
    "service-mesh resilience checks (pytest-meshcheck):",
    "  --mesh-context=MESH_CONTEXT",
    "  --mesh-policies=MESH_POLICIES",
    "  --mesh-istio-version=MESH_ISTIO_VERSION",
    "  --mesh-confidence=MESH_CONFIDENCE",
    "  --mesh-alpha=MESH_ALPHA",
    "  --mesh-beta=MESH_BETA",
    "  --mesh-profile=MESH_PROFILE",
    "  --mesh-report-dir=MESH_REPORT_DIR",
    "  --mesh-keep *",
    "  --mesh-sequential *",
    "  --mesh-seed=MESH_SEED",
    "  --mesh-topology=MESH_TOPOLOGY",
    "  --mesh-envoy-bin=MESH_ENVOY_BIN",
    "  --mesh-baseline=MESH_BASELINE",
    "  --mesh-kind-cluster=MESH_KIND_CLUSTER",
    "  --mesh-kubeconfig=MESH_KUBECONFIG",
    "  --mesh-prometheus-url=MESH_PROMETHEUS_URL",
    "  --mesh-echo-image=MESH_ECHO_IMAGE",
    "  --mesh-create *",
    "  --mesh-dry-run *",
    "  --mesh-require-binaries",
]


def option(name: str) -> Option:
    return next(o for o in OPTIONS if o.name == name)


def settings_of(config: pytest.Config) -> MeshSettings:
    return config.stash[SETTINGS_KEY]


def option_help_blocks(help_text: str) -> dict[str, str]:
    """Each ``--mesh-*`` option's help text, with argparse's line wrapping undone."""
    blocks: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in help_text.splitlines():
        header = re.match(r"^  (--mesh-[a-z-]+)(=[A-Z_]+)?(.*)$", line)
        if header:
            current = blocks.setdefault(header.group(1), [])
            current.append(header.group(3))
        elif current is not None and line.startswith("   "):
            current.append(line)
        else:
            current = None
    return {cli: " ".join(" ".join(parts).split()) for cli, parts in blocks.items()}


def test_help_lists_every_option_with_env_ini_and_default(pytester: pytest.Pytester) -> None:
    result = pytester.runpytest("--help")

    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(HELP_LINES)
    blocks = option_help_blocks(result.stdout.str())
    # --mesh-lint and --mesh-lint-fail-on are collection switches of the lint module (lint/options.py),
    # command-line only; every other option comes from the settings table with its env and ini spellings.
    lint = {"--mesh-lint", "--mesh-lint-fail-on"}
    assert lint <= set(blocks)
    assert sorted(set(blocks) - lint) == sorted(o.cli for o in OPTIONS)
    for opt in OPTIONS:
        block = blocks[opt.cli]
        assert f"(env {opt.env}, ini {opt.ini})" in block, block
        if opt.default is not None:
            assert f"Default: {opt.default} (env" in block, block
    # The ini section lists every key too.
    result.stdout.fnmatch_lines([f"  {opt.ini} (*" for opt in OPTIONS], consecutive=False)


def test_defaults_when_nothing_is_given(pytester: pytest.Pytester) -> None:
    settings = settings_of(pytester.parseconfigure())

    assert settings == MeshSettings(seed=20261125)
    assert settings.given == frozenset()


@pytest.mark.parametrize(
    ("name", "cli", "env", "ini", "expected"),
    [
        ("profile", "smoke", "nightly", "ci", ("smoke", "nightly", "ci", "ci")),
        ("confidence", "0.9", "0.95", "0.999", (0.9, 0.95, 0.999, 0.99)),
        ("alpha", "0.01", "0.005", "0.0001", (0.01, 0.005, 0.0001, 2e-05)),
        ("beta", "0.1", "0.2", "0.01", (0.1, 0.2, 0.01, 0.05)),
        ("seed", "1", "2", "3", (1, 2, 3, 20261125)),
        ("report_dir", "cli-reports", "env-reports", "ini-reports",
         (Path("cli-reports"), Path("env-reports"), Path("ini-reports"), Path("reports"))),
    ],
)  # fmt: skip
def test_precedence_cli_over_env_over_ini_over_default(
    pytester: pytest.Pytester,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    cli: str,
    env: str,
    ini: str,
    expected: tuple[object, object, object, object],
) -> None:
    opt = option(name)
    pytester.makeini(f"[pytest]\n{opt.ini} = {ini}\n")
    monkeypatch.setenv(opt.env, env)

    with_all = settings_of(pytester.parseconfigure(f"{opt.cli}={cli}"))
    env_and_ini = settings_of(pytester.parseconfigure())
    monkeypatch.delenv(opt.env)
    ini_only = settings_of(pytester.parseconfigure())
    pytester.makeini("[pytest]\n")
    nothing = settings_of(pytester.parseconfigure())

    seen = tuple(getattr(s, name) for s in (with_all, env_and_ini, ini_only, nothing))
    assert seen == expected
    assert [name in s.given for s in (with_all, env_and_ini, ini_only, nothing)] == [True, True, True, False]


def test_require_binaries_flag_in_all_three_spellings(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert settings_of(pytester.parseconfigure()).require_binaries is False
    assert settings_of(pytester.parseconfigure("--mesh-require-binaries")).require_binaries is True
    monkeypatch.setenv("PYTEST_MESHCHECK_REQUIRE_BINARIES", "true")
    assert settings_of(pytester.parseconfigure()).require_binaries is True
    monkeypatch.delenv("PYTEST_MESHCHECK_REQUIRE_BINARIES")
    pytester.makeini("[pytest]\nmesh_require_binaries = true\n")
    settings = settings_of(pytester.parseconfigure())
    assert settings.require_binaries is True
    assert "require_binaries" in settings.given


def test_flag_precedence_env_can_switch_off_an_ini_flag(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytester.makeini("[pytest]\nmesh_keep = true\n")
    assert settings_of(pytester.parseconfigure()).keep is True

    monkeypatch.setenv("PYTEST_MESHCHECK_KEEP", "0")
    assert settings_of(pytester.parseconfigure()).keep is False
    assert settings_of(pytester.parseconfigure("--mesh-keep")).keep is True


# The header is printed once a collected test uses the plugin; --collect-only keeps the mesh unstarted.
USES_MESH = "def test_uses_mesh(mesh):\n    pass\n"


def test_header_shows_the_resolved_settings(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mesh=USES_MESH)

    result = pytester.runpytest(
        "--collect-only",
        "--mesh-profile=smoke",
        "--mesh-seed=7",
        "--mesh-confidence=0.95",
        "--mesh-alpha=0.01",
        "--mesh-beta=0.1",
    )

    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(
        ["meshcheck: context=local istio=1.30 profile=smoke confidence=0.95 alpha=0.01 beta=0.1 seed=7 *"]
    )


def test_header_shows_the_default_error_rates(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_mesh=USES_MESH)

    result = pytester.runpytest("--collect-only")

    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["meshcheck: * confidence=0.99 alpha=2e-05 beta=0.05 seed=20261125 *"])


# (option, how it is given, bad value, words of the fix)
BAD_VALUES = [
    ("context", "cli", "bad name", "Use local, kind, or a context from your kubeconfig"),
    ("context", "env", "-x", "Use local, kind, or a context from your kubeconfig"),
    ("confidence", "cli", "high", "'high' is not a number. Use a level such as 0.99"),
    ("confidence", "cli", "1.5", "1.5 is outside 0.5-0.9999. Use a level such as 0.95 or 0.99"),
    ("confidence", "ini", "0.1", "0.1 is outside 0.5-0.9999"),
    ("alpha", "cli", "tiny", "'tiny' is not a number. Use a rate such as 0.00002"),
    ("alpha", "cli", "0", "0.0 is outside (0, 0.5). Use a rate above 0 and below 0.5, such as 0.00002"),
    ("alpha", "env", "0.5", "0.5 is outside (0, 0.5). Use a rate above 0 and below 0.5, such as 0.00002"),
    ("alpha", "ini", "-0.01", "-0.01 is outside (0, 0.5)"),
    ("alpha", "cli", "nan", "nan is outside (0, 0.5)"),
    ("beta", "cli", "5%", "'5%' is not a number. Use a rate such as 0.05"),
    ("beta", "env", "0.75", "0.75 is outside (0, 0.5). Use a rate above 0 and below 0.5, such as 0.05"),
    ("beta", "ini", "0", "0.0 is outside (0, 0.5)"),
    ("profile", "cli", "fast", "unknown profile 'fast'. Use one of smoke, ci, nightly"),
    ("profile", "env", "soak", "unknown profile 'soak'. Use one of smoke, ci, nightly"),
    ("seed", "cli", "1.5", "'1.5' is not an integer. Use a whole number such as 1234"),
    ("seed", "ini", "abc", "'abc' is not an integer"),
    ("policies", "cli", "no/such/policies", "does not exist. Point it at an existing file or directory"),
    ("topology", "env", "no-such-topology.yaml", "does not exist. Point it at an existing file or directory"),
    ("istio_version", "cli", "latest", "is not of the form 1.30 or 1.30.3; pass e.g. --mesh-istio-version 1.30"),
    ("istio_version", "cli", "1.19", "older than the oldest release pytest-meshcheck models"),
    ("prometheus_url", "cli", "ftp://127.0.0.1:9090", "is not an http(s) URL. Use e.g. http://127.0.0.1:9090"),
    ("prometheus_url", "ini", "127.0.0.1:9090", "is not an http(s) URL"),
]


@pytest.mark.parametrize(("name", "given", "value", "fix"), BAD_VALUES)
def test_bad_value_is_a_usage_error_naming_option_env_ini_and_fix(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, name: str, given: str, value: str, fix: str
) -> None:
    opt = option(name)
    args: list[str] = []
    if given == "cli":
        args.append(f"{opt.cli}={value}")
    elif given == "env":
        monkeypatch.setenv(opt.env, value)
    else:
        pytester.makeini(f"[pytest]\n{opt.ini} = {value}\n")
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")

    result = pytester.runpytest(*args)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    error = " ".join(result.stderr.str().split())
    where = {"cli": opt.cli, "env": f"${opt.env}", "ini": f"ini {opt.ini}"}[given]
    assert f"ERROR: meshcheck: {where}: " in error
    assert fix in error
    assert f"({opt.cli} / ${opt.env} / ini {opt.ini})" in error
    assert "passed" not in result.stdout.str()


@pytest.mark.parametrize("given", ["cli", "env"])
def test_create_with_the_local_context_is_a_usage_error(
    pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, given: str
) -> None:
    args = ["--mesh-create"] if given == "cli" else []
    if given == "env":
        monkeypatch.setenv("PYTEST_MESHCHECK_CREATE", "1")

    result = pytester.runpytest(*args)

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    error = " ".join(result.stderr.str().split())
    assert "--mesh-create creates a Kind cluster, but the context is local" in error
    assert "Add --mesh-context kind, or drop --mesh-create" in error
    assert "(--mesh-create / $PYTEST_MESHCHECK_CREATE / ini mesh_create)" in error


def test_defaults_are_not_validated_as_given_values(pytester: pytest.Pytester) -> None:
    # Only what the user gave is checked: an empty env var or ini key counts as not given.
    pytester.makeini("[pytest]\nmesh_profile =\n")
    pytester.makepyfile(test_plain="def test_plain():\n    pass\n")

    result = pytester.runpytest()

    result.assert_outcomes(passed=1)


def test_kube_context_without_kubeconfig_is_a_usage_error(pytester: pytest.Pytester, tmp_path: Path) -> None:
    result = pytester.runpytest("--mesh-context=kind", f"--mesh-kubeconfig={tmp_path}")

    assert result.ret == pytest.ExitCode.USAGE_ERROR
    error = " ".join(result.stderr.str().split())
    assert f"meshcheck: --mesh-context 'kind': no kubeconfig found at {tmp_path}" in error
    assert "Point --mesh-kubeconfig (or KUBECONFIG) at your kubeconfig" in error
