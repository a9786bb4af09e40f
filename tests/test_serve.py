"""`dmedia-tui serve`: the real app behind textual-serve, in a real headless Chromium.

Chromium is Debian's (`apt install chromium`, .ci/run does it), driven by Playwright's
Python package with `executable_path` (Playwright's own browser download cannot work
here). The test reads what the app sent to the page (the websocket frames the browser
received, ANSI stripped), presses keys in the page, and checks a screenshot by structure:
a coarse grid of colours compared with tolerance to a baseline, plus the red band of the
panic banner. `DMEDIA_UPDATE_BROWSER_BASELINE=1` rewrites the baseline (look at the
screenshot, kept next to it, before committing it).
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import time
import urllib.request
import zlib
from pathlib import Path

import pytest

from tests.conftest import NOW, need
from tests.integration.harness import Machine, canonical, flip_bit, make_camera_files

CHROMIUM = "/usr/bin/chromium"
BASELINE = Path(__file__).parent / "browser_baseline"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-dev-shm-usage",
    "--disable-extensions",
    "--no-first-run",
]
WIDTH, HEIGHT = 1280, 800
ANSI = re.compile(
    r"\x1b\[[0-9;?<>=]*[A-Za-z]|\x1b\][^\x07\x1b]*(\x07|\x1b\\)|\x1b[()][A-Z0-9]|\x1b."
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def panic_library(tmp_path: Path, mounts) -> Machine:
    """3 stores, 4 user files at 3 copies, one rotten copy found: DRIVE_FAILURE."""
    m = Machine(tmp_path / "machines", "studio", str(tmp_path / "library.sqlite3"), NOW)
    paths = []
    for name in ("studio-int", "usb-backup", "nas", "spare"):
        p = mounts.new(name, 16)
        m.init_store(p, name, *mounts.same_fs_flag)
        paths.append(p)
    make_camera_files(tmp_path / "photos", 4, max_kb=40)
    m.ok("import", str(tmp_path / "photos"), "--store", "studio-int")
    m.once()
    f = next((paths[1] / ".dmedia" / "files").glob("*/*"))
    flip_bit(canonical(paths[1], f.parent.name + f.name))
    assert m.run("verify", "--all").exit_code == 2
    return m


@pytest.fixture
def chromium() -> str:
    """Debian's Chromium (.ci/run installs it; DMEDIA_REQUIRE_BROWSER=1 there)."""
    need(
        os.path.exists(CHROMIUM),
        "DMEDIA_REQUIRE_BROWSER",
        "Debian's chromium is not installed (apt install chromium)",
    )
    return CHROMIUM


@pytest.fixture
def server(tmp_path, mounts):
    m = panic_library(tmp_path, mounts)
    port = free_port()
    env = {**os.environ, **m.env()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dmedia_tui", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5) as r:
                if r.status == 200:
                    break
        except OSError:
            time.sleep(0.2)
    else:
        proc.kill()
        raise AssertionError("serve did not answer: " + (proc.communicate()[1] or ""))
    yield url
    proc.send_signal(signal.SIGTERM)
    try:
        proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()


def screen_text(frames: list[bytes | str]) -> str:
    """What the app wrote to the page: the binary frames (terminal output), ANSI stripped.
    Text frames are the server's JSON messages (pong, meta), not screen content."""
    data = b"".join(f for f in frames if isinstance(f, bytes))
    return ANSI.sub(" ", data.decode("utf-8", "replace"))


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Decode an 8-bit RGB/RGBA non-interlaced PNG (what Chromium's screenshots are)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    i, idat, width = 8, b"", 0
    while i < len(data):
        n = struct.unpack(">I", data[i : i + 4])[0]
        tag, body = data[i + 4 : i + 8], data[i + 8 : i + 8 + n]
        if tag == b"IHDR":
            width, height, depth, ctype, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and ctype in (2, 6) and interlace == 0
            bpp = 3 if ctype == 2 else 4
        elif tag == b"IDAT":
            idat += body
        i += 12 + n
    raw = zlib.decompress(idat)
    stride = width * bpp
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        ftype, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b, c = prev[x], prev[x - bpp] if x >= bpp else 0
            if ftype == 1:
                line[x] = (line[x] + a) & 0xFF
            elif ftype == 2:
                line[x] = (line[x] + b) & 0xFF
            elif ftype == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line if bpp == 3 else bytes(v for k, v in enumerate(line) if k % 4 != 3)))
        prev = line
    return width, height, rows


def grid(png: bytes, cols: int = 32, rows: int = 20) -> list[list[list[int]]]:
    """Mean RGB of each cell of a cols x rows grid: the screenshot's structure."""
    w, h, px = png_pixels(png)
    out = []
    for gy in range(rows):
        line = []
        for gx in range(cols):
            acc = [0, 0, 0]
            n = 0
            for y in range(gy * h // rows, (gy + 1) * h // rows, 4):
                row = px[y]
                for x in range(gx * w // cols, (gx + 1) * w // cols, 4):
                    for k in range(3):
                        acc[k] += row[3 * x + k]
                    n += 1
            line.append([v // max(1, n) for v in acc])
        out.append(line)
    return out


def test_app_in_headless_chromium(chromium, server, tmp_path):
    from playwright.sync_api import sync_playwright

    frames: list[bytes | str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
            page.on(
                "websocket",
                lambda ws: ws.on("framereceived", lambda payload: frames.append(payload)),
            )
            page.goto(server)
            page.wait_for_selector("body.-first-byte", timeout=60_000)

            def wait_text(needle: str, timeout: float = 60) -> str:
                deadline = time.monotonic() + timeout
                while time.monotonic() < deadline:
                    text = screen_text(frames)
                    if needle in text:
                        return text
                    page.wait_for_timeout(200)
                raise AssertionError(f"{needle!r} never reached the page:\n{screen_text(frames)}")

            text = wait_text("DRIVE FAILURE")
            assert "usb-backup" in text
            assert "Durability" in text and "3+" in text  # the histogram panel
            assert "READ-ONLY" in text.upper() or "read-only" in text
            page.wait_for_timeout(1500)  # let the last frame paint
            shot = page.screenshot()
            (tmp_path / "dashboard.png").write_bytes(shot)

            seen = len(frames)
            page.focus(".xterm-helper-textarea")  # keys go to the terminal
            page.keyboard.press("?")  # the help screen
            deadline = time.monotonic() + 30
            while "escape closes" not in screen_text(frames[seen:]):
                assert time.monotonic() < deadline, screen_text(frames[seen:])
                page.wait_for_timeout(200)
            help_text = screen_text(frames[seen:])
            assert "Keys" in help_text
            page.wait_for_timeout(1000)
            (tmp_path / "help.png").write_bytes(page.screenshot())
        finally:
            browser.close()

    w, h, px = png_pixels(shot)

    def reddish(row: bytes) -> float:
        pix = [row[3 * x : 3 * x + 3] for x in range(0, w, 8)]
        return sum(1 for r, g, b in pix if r > 100 and r > 2 * g and r > 1.5 * b) / len(pix)

    # The panic banner: a full-width red band right under the header line.
    band = [y for y in range(0, 80) if reddish(px[y]) > 0.4]  # text covers the rest
    assert len(band) >= 10, "no panic banner band at the top of the page"
    g = grid(shot)
    assert len({tuple(c) for row in g for c in row}) > 40  # not a blank page
    compare_to_baseline(g, shot)


def compare_to_baseline(g: list[list[list[int]]], shot: bytes) -> None:
    """Tolerant: the mean cell difference stays small, and 95 % of cells are near equal."""
    base_json = BASELINE / "dashboard-grid.json"
    if os.environ.get("DMEDIA_UPDATE_BROWSER_BASELINE") or not base_json.exists():
        BASELINE.mkdir(exist_ok=True)
        base_json.write_text(json.dumps(g))
        (BASELINE / "dashboard.png").write_bytes(shot)
        if not os.environ.get("DMEDIA_UPDATE_BROWSER_BASELINE"):
            pytest.fail(f"no baseline yet: wrote {base_json}; look at dashboard.png and commit")
        return
    base = json.loads(base_json.read_text())
    diffs = [
        sum(abs(a - b) for a, b in zip(c1, c2, strict=True)) / 3
        for r1, r2 in zip(g, base, strict=True)
        for c1, c2 in zip(r1, r2, strict=True)
    ]
    mean = sum(diffs) / len(diffs)
    near = sum(1 for d in diffs if d < 24) / len(diffs)
    assert mean < 12 and near > 0.9, (
        f"screenshot structure changed: mean {mean:.1f}, near {near:.0%}"
    )


def test_serve_refuses_a_busy_port_and_warns_beyond_localhost(tmp_path):
    m = Machine(tmp_path / "machines", "studio", str(tmp_path / "library.sqlite3"), NOW)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        r = subprocess.run(
            [sys.executable, "-m", "dmedia_tui", "serve", "--port", str(port)],
            env={**os.environ, **m.env()},
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert (
        r.stderr.strip()
        .splitlines()[-1]
        .startswith(f"dmedia-tui: cannot listen on 127.0.0.1:{port}")
    )
    from dmedia_tui import serve

    w = serve.warnings("0.0.0.0", allow_actions=True)
    assert "beyond this machine" in w[0] and "can act on it" in w[0]
    assert serve.warnings("127.0.0.1", allow_actions=False) == []
    assert serve.app_command("/x.db", allow_actions=False).endswith("--db /x.db --read-only")
    assert not serve.app_command(None, allow_actions=True).endswith("--read-only")
