"""The app in a real terminal: a detached tmux pane at 120x40, banners read back."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


def tmux(sock: str, *args: str) -> str:
    out = subprocess.run(
        ["tmux", "-L", sock, *args], capture_output=True, text=True, check=False, timeout=30
    )
    return out.stdout


def wait_for_pane(sock: str, needle: str, polls: int = 200) -> str:
    """Capture the pane until `needle` shows (polls * 50 ms at most)."""
    screen = ""
    for _ in range(polls):
        screen = tmux(sock, "capture-pane", "-p", "-t", "app")
        if needle in screen:
            return screen
        time.sleep(0.05)
    return screen


def test_app_renders_banners_in_tmux_and_quits_on_q(tmp_path: Path):
    sock = f"dmedia-tui-test-{uuid.uuid4().hex[:8]}"
    rc_file = tmp_path / "rc"
    # Textual draws on stderr: it must stay on the pane (no 2> redirection).
    cmd = (
        f"cd {ROOT} && HOME={tmp_path} TZ=UTC {sys.executable} -m tests.tui.runner {tmp_path}; "
        f"echo $? > {rc_file}; sleep 30"
    )
    # COLUMNS/LINES (set by some pytest setups) would override the pane's real size.
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("TMUX") and k not in ("COLUMNS", "LINES")
    }
    subprocess.run(
        ["tmux", "-L", sock, "new-session", "-d", "-s", "app", "-x", "120", "-y", "40", "sleep 60"],
        check=True,
        env=env,
        timeout=30,
    )
    try:
        # Start the app only once the pane has its final size.
        tmux(sock, "respawn-pane", "-k", "-t", "app", cmd)
        screen = wait_for_pane(sock, "DRIVE FAILURE")
        assert "DRIVE FAILURE" in screen, screen
        assert "usb-backup-2" in screen and "[a] acknowledge" in screen
        assert "ONLY COPY OFFLINE" in screen and "Boot kestrel" in screen
        assert "SIMULATED TIME" in screen
        lines = screen.splitlines()
        assert len(lines) == 40 and max(len(line) for line in lines) <= 120
        tmux(sock, "send-keys", "-t", "app", "q")
        for _ in range(200):
            if rc_file.exists() and rc_file.read_text().strip():
                break
            time.sleep(0.05)
        assert rc_file.read_text().strip() == "0"
    finally:
        tmux(sock, "kill-server")
