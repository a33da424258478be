"""The service graph (report/graph.py) renders in headless Chromium in a scenario report and in the index.

A call-graph scenario's graph (client -> order-service -> payment-service, inventory-service), as
the scenario record keeps it, is drawn into a real scenario report and the index; Chromium must build every
node and edge as SVG, and the screenshot must show the edges' colours (green: clean hop, red: a hop with
errors, ejections or an open breaker), so the graph is not blank; a service whose DestinationRule configures a
circuit breaker carries Kiali's "CB" badge.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

from pytest_meshcheck.report.index import write_index
from pytest_meshcheck.report.render import write_scenario_report


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


browser = _load("report_browser_for_graph", Path(__file__).parent / "test_report_browser.py")
samples = _load("report_samples_for_graph", Path(__file__).parents[1] / "unit" / "test_report_samples.py")
pytestmark = pytest.mark.chromium

OK_RGB = (0x2E, 0x7D, 0x32)
BAD_RGB = (0xC0, 0x39, 0x2B)
GRAPH = {
    "available": True,
    "note": "",
    "edges": [
        {"source": "client", "target": "order-service", "requests": 120, "errors": 3, "retries": 152,
         "timeouts": 0, "ejected": 2, "breaker": 0},
        {"source": "order-service", "target": "payment-service", "requests": 272, "errors": 0, "retries": 653,
         "timeouts": 0, "ejected": 0, "breaker": 0},
        {"source": "order-service", "target": "inventory-service", "requests": 101, "errors": 0, "retries": 0,
         "timeouts": 0, "ejected": 0, "breaker": 0},
    ],
    "nodes": [{"name": "order-service", "circuit_breaker": True}, {"name": "payment-service", "circuit_breaker": False},
              {"name": "inventory-service", "circuit_breaker": False}],
}  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("graph-reports")
    record = samples.passing_record()
    record.graph = GRAPH
    write_scenario_report(record, directory)
    write_index(directory, [record], run_info={"mesh_context": "local"})
    return directory


@pytest.mark.parametrize("which", ["scenario", "index"])
def test_graph_renders_with_every_node_and_edge(run_dir: Path, tmp_path: Path, which: str) -> None:
    page = (
        run_dir / "index.html"
        if which == "index"
        else next(p for p in run_dir.glob("*.html") if p.name != "index.html")
    )
    dom = browser.dump_dom(tmp_path / "profile", page)
    assert dom.count('class="service-graph"') == 1
    for node in ("client", "order-service", "payment-service", "inventory-service"):
        assert f'data-node="{node}"' in dom
    assert dom.count('class="edge edge-') == 3
    assert "120 req · 3 err · 152 retry · 0 timeout" in dom
    assert "2 ejected · 0 breaker-open" in dom
    # Kiali's "CB" badge (a circuit breaker configured) on order-service only, next to the edges' own counts.
    assert dom.count('class="badge-cb"') == 1
    assert "Circuit breaker configured (CB): order-service." in dom
    # The graph is drawn, not blank: the clean hops' green and the failing hop's red are on screen.
    image = browser.screenshot(tmp_path / "profile", page, tmp_path / "graph.png", size="1280,4000")
    assert browser._pixels_of(image, OK_RGB) > 50
    assert browser._pixels_of(image, BAD_RGB) > 25
