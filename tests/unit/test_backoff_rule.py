"""One back-off rule in the model and in the linter: retry n waits U(0, base x 2^(n-1)), capped at 10 x base.

Envoy's ``JitteredExponentialBackOffStrategy::nextBackOffMs`` returns ``random() % next_interval``, where
``next_interval`` starts at the base and doubles after each retry up to ``max_interval`` (10 x base unless set):
25, 50, 100, 200, 250 ms. The ``(2^n - 1) x base`` rule (25, 75, 175 ms) of Envoy's router docs is the old code;
``scenarios/test_readme_claims.py`` measures which one Envoy 1.40 follows.
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from pytest_meshcheck.expect import backoff_ranges
from pytest_meshcheck.expect.model import DEFAULT_BACKOFF_BASE, EffectiveRetry
from pytest_meshcheck.lint import LintOptions, lint_paths

NS = "platform-core"


def _vs(retries: str, timeout: str) -> str:
    route = textwrap.indent(f"retries: {retries}\ntimeout: {timeout}", "    ")
    return (
        f"apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {{name: vs, namespace: {NS}}}\n"
        "spec:\n  hosts: [catalog-service]\n  http:\n  - route:\n    - destination: {host: catalog-service}\n"
        f"{route}\n"
    )


def _codes(tmp_path: Path, doc: str) -> set[str]:
    (tmp_path / "p.yaml").write_text(doc)
    return {f.code for f in lint_paths([tmp_path], LintOptions()).findings}


@pytest.mark.parametrize("retries", [1, 2, 3, 4, 5, 8])
def test_model_caps_double_from_the_base(retries: int) -> None:
    ranges = backoff_ranges(EffectiveRetry(num_retries=retries, retry_on=("5xx",)))
    caps = [25, 50, 100, 200, 250, 250, 250, 250][:retries]
    assert [round(hi * 1000, 9) for _, hi in ranges] == caps
    assert all(lo == 0.0 for lo, _ in ranges)


@pytest.mark.parametrize(
    ("timeout", "fires"),
    [
        # 4 tries x 1 s end by 4 s + (25 + 50 + 100) ms of back-off = 4.175 s: a 4.2 s timeout never fires.
        # (Under the (2^n - 1) rule the tries could last until 4.275 s, and 4.2 s would not be flagged.)
        ("4.2s", True),
        # 4.17 s can still cut the last try when the back-offs are long.
        ("4.17s", False),
    ],
)
def test_lint_never_fires_bound_uses_the_same_backoff(tmp_path: Path, timeout: str, fires: bool) -> None:
    codes = _codes(tmp_path, _vs("{attempts: 3, perTryTimeout: 1s, retryOn: 5xx}", timeout))
    assert ("MC103" in codes) is fires, codes


def test_lint_and_model_agree_on_the_longest_total_backoff(tmp_path: Path) -> None:
    total = sum(hi for _, hi in backoff_ranges(EffectiveRetry(num_retries=5, retry_on=("5xx",))))
    assert total == pytest.approx(DEFAULT_BACKOFF_BASE * (1 + 2 + 4 + 8 + 10))
    # 6 tries x 1 s + the model's total back-off, just above and just below: MC103 flips exactly there.
    above, below = 6 + total + 0.002, 6 + total - 0.002
    assert "MC103" in _codes(tmp_path, _vs("{attempts: 5, perTryTimeout: 1s, retryOn: 5xx}", f"{above:.3f}s"))
    assert "MC103" not in _codes(tmp_path, _vs("{attempts: 5, perTryTimeout: 1s, retryOn: 5xx}", f"{below:.3f}s"))
