"""The HTML report renders its per-station charts in a real headless Chromium.

The report is built from a real audit (pipeline-anchored data, one window tampered so
that both verdict colours appear), written to a file, and opened by Debian's chromium:
the DOM after rendering must contain one chart per station with its band and mean paths
and verdict-coloured windows, and a screenshot must show the chart's colours.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path
from typing import Any

import pytest

from storage import layout
from streamnotary.report import VERDICT_COLOURS, render_html, validate_report
from tasks.window import WindowKey
from tests.audit_env import anchored_env, audit_report
from tests.pipeline_env import PipelineEnv

__all__ = ["anchored_env"]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
TAMPERED = "00427_20190907T000000Z_86400s"


def _chromium(args: list[str], profile: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--no-first-run",
            f"--user-data-dir={profile}",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA non-interlaced PNG (what Chromium writes) into rows."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, width = 8, b"", 0
    height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            width, height, depth, colour, _c, _f, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and interlace == 0 and colour in (2, 6)
            channels = 3 if colour == 2 else 4
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        ftype, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - channels] if i >= channels else 0
            b, c = prev[i], prev[i - channels] if i >= channels else 0
            if ftype == 1:
                line[i] = (line[i] + a) & 0xFF
            elif ftype == 2:
                line[i] = (line[i] + b) & 0xFF
            elif ftype == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, channels, rows


@pytest.fixture(scope="module")
def report(anchored_env: PipelineEnv) -> dict[str, Any]:
    store = anchored_env.store()
    key = layout.payload_key(anchored_env.topic, WindowKey.parse(TAMPERED), 0)
    original = store.get(key)
    store.delete(key)
    try:
        doc = audit_report(anchored_env)
    finally:
        store.put(key, original)
    validate_report(doc)
    return doc


def test_html_chart_renders_in_headless_chromium(report: dict[str, Any], tmp_path: Path) -> None:
    page = tmp_path / "audit.html"
    page.write_text(render_html(report))
    html = page.read_text()
    assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "")  # self-contained
    assert "https://" not in html and "<script" not in html

    dom = _chromium(["--dump-dom", page.as_uri()], tmp_path / "profile-dom")
    assert dom.returncode == 0, dom.stderr[-2000:]
    charts = re.findall(r'<svg class="chart" data-station="(\d{5})"', dom.stdout)
    assert charts == ["00427", "00433"]
    bands = re.findall(r'<path class="band" d="M[0-9.,L]+Z"', dom.stdout)
    means = re.findall(r'<path class="mean" d="M[0-9.,L]+"', dom.stdout)
    assert len(bands) == 2 and len(means) == 2
    assert len(re.findall(r'class="verdict verdict-pass"', dom.stdout)) == 5
    assert len(re.findall(r'class="verdict verdict-fail"', dom.stdout)) == 1
    assert TAMPERED in dom.stdout and "payload_missing" not in dom.stdout  # message, not code
    assert "missing from the object store" in dom.stdout

    shot = tmp_path / "shot.png"
    out = _chromium(
        [f"--screenshot={shot}", "--window-size=1000,1400", "--hide-scrollbars", page.as_uri()],
        tmp_path / "profile-shot",
    )
    assert out.returncode == 0 and shot.is_file(), out.stderr[-2000:]
    width, channels, rows = _png_pixels(shot.read_bytes())
    colours: dict[tuple[int, int, int], int] = {}
    for row in rows:
        for x in range(0, width * channels, channels):
            px = (row[x], row[x + 1], row[x + 2])
            colours[px] = colours.get(px, 0) + 1

    def near(hex_colour: str) -> int:
        r, g, b = (int(hex_colour[i : i + 2], 16) for i in (1, 3, 5))
        return sum(
            n for (pr, pg, pb), n in colours.items() if abs(pr - r) + abs(pg - g) + abs(pb - b) < 30
        )

    assert near(VERDICT_COLOURS["pass"]) > 500  # green verdict strips and badges
    assert near(VERDICT_COLOURS["fail"]) > 100  # the tampered window in red
    assert near("#90caf9") + near("#b5daf5") > 1000  # the translucent blue temperature band
    assert len(colours) > 20
