"""The wheel a user installs carries the styles and the console script."""

from __future__ import annotations

import shutil
import subprocess
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv is not installed")
def test_wheel_ships_styles_and_entry_point(tmp_path):
    r = subprocess.run(
        ["uv", "build", "--wheel", "--out-dir", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stderr
    (wheel,) = tmp_path.glob("dmedia_tui-*.whl")
    with zipfile.ZipFile(wheel) as z:
        names = set(z.namelist())
        entry_points = next(n for n in names if n.endswith("entry_points.txt"))
        scripts = z.read(entry_points).decode()
    tcss = {p.name for p in (ROOT / "dmedia_tui" / "tui" / "styles").glob("*.tcss")}
    assert tcss and {f"dmedia_tui/tui/styles/{n}" for n in tcss} <= names
    assert "dmedia-tui = dmedia_tui.__main__:run" in scripts
    assert "dmedia_tui/protocol.py" in names
    assert not any("tests/" in n or "node_modules" in n for n in names)
