"""Reports in a real browser (Debian's headless Chromium): charts drawn, links resolve, failure shown.

Each page is loaded from ``file://`` with networking off. The DOM Chromium builds (``--dump-dom``) must
hold every chart as SVG with its data line, and the screenshots must show the chart lines and, for the
failing scenario, the failure section. Screenshots of a passing and a failing report are kept under
``test-artifacts/`` (git-ignored) for people to look at.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import signal
import struct
import subprocess
import zlib
from pathlib import Path
from types import ModuleType

import numpy as np
import numpy.typing as npt
import pytest

from pytest_meshcheck.report.index import write_index
from pytest_meshcheck.report.render import write_scenario_report


def _samples() -> ModuleType:
    spec = importlib.util.spec_from_file_location(
        "report_samples_for_browser", Path(__file__).parents[1] / "unit" / "test_report_samples.py"
    )
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


samples = _samples()
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(__file__).parents[2] / "test-artifacts"
LINE_RGB = (0x1F, 0x6F, 0xB2)  # first data series colour of every chart (charts._PALETTE[0])
FAILURE_BG = (0xFD, 0xF0, 0xEF)  # background of the failure section and failing rows
INCONCLUSIVE_BG = (0xF3, 0xEE, 0xFA)  # style.css --inc-bg: inconclusive section and rows
INCONCLUSIVE = (0x6A, 0x3D, 0x9A)  # style.css --inc: the inconclusive badge and verdict border
PASS_GREEN = (0x1E, 0x7B, 0x34)  # style.css --ok

# The root conftest skips these without Chromium, or fails them under CI=true / --mesh-require-binaries.
pytestmark = pytest.mark.chromium


def _chromium(profile: Path, *args: str, timeout: float = 60) -> str:
    """Run headless Chromium once; stop its whole process group (and only it) if it hangs."""
    assert CHROMIUM is not None
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *args,
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-2000:]
    return out


def dump_dom(profile: Path, page: Path) -> str:
    return _chromium(profile, "--dump-dom", page.as_uri())


def screenshot(profile: Path, page: Path, png: Path, size: str = "1280,3000") -> npt.NDArray[np.uint8]:
    png.unlink(missing_ok=True)
    _chromium(profile, f"--screenshot={png}", f"--window-size={size}", page.as_uri())
    return decode_png(png.read_bytes())


def decode_png(data: bytes) -> npt.NDArray[np.uint8]:
    """Pixels (height, width, channels) of an 8-bit, non-interlaced PNG, as Chromium writes them."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, []
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert (depth, interlace) == (8, 0), "only 8-bit, non-interlaced PNGs are read"
            channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
        elif kind == b"IDAT":
            idat.append(body)
        pos += 12 + length
    raw = np.frombuffer(zlib.decompress(b"".join(idat)), dtype=np.uint8).reshape(height, 1 + width * channels)
    out = np.zeros((height, width * channels), dtype=np.int64)
    prev = np.zeros(width * channels, dtype=np.int64)
    for y in range(height):
        row_filter, line = int(raw[y, 0]), raw[y, 1:].astype(np.int64)
        if row_filter == 0:
            cur = line
        elif row_filter == 1:  # Sub: a running sum along the row, per channel
            cur = np.cumsum(line.reshape(width, channels), axis=0).reshape(-1) % 256
        elif row_filter == 2:  # Up
            cur = (line + prev) % 256
        else:  # Average and Paeth depend on the reconstructed left byte: byte by byte
            values, up = line.tolist(), prev.tolist()
            for x in range(len(values)):
                a = values[x - channels] if x >= channels else 0
                b = up[x]
                if row_filter == 3:
                    values[x] = (values[x] + (a + b) // 2) & 255
                else:
                    c = up[x - channels] if x >= channels else 0
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    values[x] = (values[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
            cur = np.array(values, dtype=np.int64)
        out[y] = cur
        prev = cur
    return out.reshape(height, width, channels)[:, :, :3].astype(np.uint8)


def _encode_png(pixels: npt.NDArray[np.uint8], filters: list[int]) -> bytes:
    """A minimal RGB PNG encoder using the given filter per row (to check the decoder)."""
    height, width, _ = pixels.shape
    flat = pixels.reshape(height, width * 3).astype(np.int64)
    rows = []
    for y in range(height):
        cur, up = flat[y], flat[y - 1] if y else np.zeros(width * 3, dtype=np.int64)
        left = np.concatenate([np.zeros(3, dtype=np.int64), cur[:-3]])
        upleft = np.concatenate([np.zeros(3, dtype=np.int64), up[:-3]])
        kind = filters[y % len(filters)]
        if kind == 0:
            enc = cur
        elif kind == 1:
            enc = cur - left
        elif kind == 2:
            enc = cur - up
        elif kind == 3:
            enc = cur - (left + up) // 2
        else:
            p = left + up - upleft
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - upleft)
            enc = cur - np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, up, upleft))
        rows.append(bytes([kind]) + bytes((enc % 256).astype(np.uint8)))

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


def test_png_decoder_reads_every_filter_type() -> None:
    rng = np.random.default_rng(3)
    pixels = rng.integers(0, 256, size=(10, 7, 3), dtype=np.uint8)
    assert np.array_equal(decode_png(_encode_png(pixels, [0, 1, 2, 3, 4])), pixels)


def _pixels_of(image: npt.NDArray[np.uint8], rgb: tuple[int, int, int]) -> int:
    return int(np.all(image == np.array(rgb, dtype=np.uint8), axis=2).sum())


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("reports")
    records = [samples.passing_record(), samples.failing_record(), samples.error_record()]
    for rec in records:
        write_scenario_report(rec, directory)
    write_index(directory, records, run_info={"mesh_context": "local"})
    return directory


@pytest.fixture
def profile(tmp_path: Path) -> Path:
    return tmp_path / "chromium-profile"


def _report(run_dir: Path, nodeid_part: str) -> Path:
    (page,) = [p for p in run_dir.glob("*.html") if nodeid_part in p.name]
    return page


def _charts_in_dom(dom: str) -> dict[str, tuple[int, list[int]]]:
    """chart key -> (data-points, vertices of each data line) as the browser parsed them."""
    charts = {}
    for key, points, body in re.findall(
        r'<figure class="chart" id="chart-\w+" data-chart="(\w+)" data-points="(\d+)">(.*?)</figure>',
        dom,
        re.S,
    ):
        lines = re.findall(r'<path d="M([^"]+)" class="line reactive nofill"', body)
        charts[key] = (int(points), [len(re.findall(r"-?\d+(?:\.\d+)? -?\d+(?:\.\d+)?", d)) for d in lines])
    return charts


@pytest.mark.parametrize("which", ["5xx_50", "broken-retry-on"])
def test_every_chart_is_drawn_in_the_browser(run_dir: Path, profile: Path, which: str) -> None:
    dom = dump_dom(profile, _report(run_dir, which))
    charts = _charts_in_dom(dom)
    rec = samples.passing_record()
    assert set(charts) == {
        "success_ratio",
        "latency",
        "requests",
        "retries",
        "ejections_active",
        "overflow",
        "upstream_requests",
    }
    for key, (points, lines) in charts.items():
        assert points > 0, key
        assert sum(lines) >= points, (key, points, lines)  # every data point is a vertex of a drawn line
    seconds = len(rec.timeseries["t"])
    assert seconds in charts["success_ratio"][1]
    assert "<script" not in dom


def test_failing_report_shows_the_failure_section(run_dir: Path, profile: Path) -> None:
    page = _report(run_dir, "broken-retry-on")
    dom = dump_dom(profile, page)
    section = re.search(r'<section id="failure" class="failure failed">(.*?)</section>', dom, re.S)
    assert section is not None
    assert "Why it failed" in section.group(1)
    ARTIFACTS.mkdir(exist_ok=True)
    image = screenshot(profile, page, ARTIFACTS / "report-failing.png")
    # The failure section is painted, near the top where a reader looks first.
    assert _pixels_of(image[:900], FAILURE_BG) > 20_000
    assert image.reshape(-1, 3).std(axis=0).min() > 5  # not a blank page


def test_passing_report_renders_without_a_failure_section(run_dir: Path, profile: Path) -> None:
    page = _report(run_dir, "5xx_50")
    assert 'id="failure"' not in dump_dom(profile, page)
    ARTIFACTS.mkdir(exist_ok=True)
    image = screenshot(profile, page, ARTIFACTS / "report-passing.png")
    assert _pixels_of(image, FAILURE_BG) == 0
    assert image.reshape(-1, 3).std(axis=0).min() > 5
    assert _pixels_of(image, LINE_RGB) > 500  # the chart lines are on screen


def test_charts_are_not_blank_on_screen(run_dir: Path, profile: Path, tmp_path: Path) -> None:
    """Every chart, cut out of the report into a box of its own, paints its data line."""
    html = _report(run_dir, "5xx_50").read_text()
    svgs = re.findall(
        r'<figure class="chart" id="chart-(\w+)"[^>]*>\s*<figcaption>[^<]*</figcaption>\s*(<svg.*?</svg>)',
        html,
        re.S,
    )
    assert len(svgs) == 7
    box_h = 320
    boxes = "".join(f'<div style="width:960px;height:{box_h}px;overflow:hidden">{svg}</div>' for _, svg in svgs)
    page = tmp_path / "charts.html"
    page.write_text(f'<!DOCTYPE html><html><body style="margin:0;background:#fff">{boxes}</body></html>')
    image = screenshot(profile, page, tmp_path / "charts.png", size=f"960,{box_h * len(svgs)}")
    for i, (key, _) in enumerate(svgs):
        band = image[i * box_h : (i + 1) * box_h]
        assert _pixels_of(band, LINE_RGB) > 100, f"chart {key} shows no data line"
        assert band.reshape(-1, 3).std(axis=0).min() > 3, f"chart {key} is blank"


def test_index_links_resolve_and_list_every_scenario(run_dir: Path, profile: Path) -> None:
    dom = dump_dom(profile, run_dir / "index.html")
    hrefs = re.findall(r'<a href="([^"]+)"', dom)
    assert len([h for h in hrefs if h.endswith(".html")]) == 3
    anchors = 0
    for href in hrefs:
        path, _, anchor = href.partition("#")
        target = run_dir / path
        assert target.is_file(), f"index links to missing {href}"
        if anchor:  # a failed check links to its explanation on the scenario page, as the browser reads it
            assert f'id="{anchor}"' in dump_dom(profile, target), href
            anchors += 1
    assert anchors == 1  # the failing scenario's one failed check
    assert re.findall(r'data-outcome="(\w+)"', dom) == ["passed", "failed", "error"]
    assert "2 of 3 scenarios did not hold." in dom


def test_inconclusive_report_is_painted_as_neither_a_pass_nor_a_plain_failure(tmp_path: Path, profile: Path) -> None:
    directory = tmp_path / "reports"
    page = write_scenario_report(samples.inconclusive_record(), directory)
    dom = dump_dom(profile, page)
    assert 'class="badge inconclusive"' in dom
    assert re.search(r'<section id="failure" class="failure inconclusive">', dom)
    ARTIFACTS.mkdir(exist_ok=True)
    image = screenshot(profile, page, ARTIFACTS / "report-inconclusive.png")
    top = image[:400]
    assert _pixels_of(top, INCONCLUSIVE) > 300  # the badge and the verdict's border
    assert _pixels_of(top, PASS_GREEN) == 0  # nothing green where the verdict is
    assert _pixels_of(image[:1200], INCONCLUSIVE_BG) > 20_000  # the "did not pass" section, near the top
    assert _pixels_of(image, FAILURE_BG) == 0  # and not the failure red
