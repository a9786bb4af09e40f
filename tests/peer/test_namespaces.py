"""Issue 12, end to end as two real machines would run it: each machine its own process,
config dir and identity, one library (SQLite file or CouchDB URL), and machine B's drive
mounted in B's own mount namespace (`unshare -m`), so machine A cannot see B's store at
all. B imports to its only store and runs `dmedia-tui daemon`; A's `daemon --once` brings
every file to 3 copies, byte-exact, over mutual TLS. Everything goes through the CLI.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dmedia_tui.protocol import hash_bytes

REPO = Path(__file__).resolve().parents[2]
PEER_TOML = '[peer]\nlisten = "127.0.0.1:0"\ndiscovery = false\n'


def _env(root: Path, name: str, db_url: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DMEDIA_", "XDG_"))}
    env.update(
        XDG_CONFIG_HOME=str(root / name / "config"),
        XDG_DATA_HOME=str(root / name / "data"),
        XDG_STATE_HOME=str(root / name / "state"),
        XDG_CACHE_HOME=str(root / name / "cache"),
        DMEDIA_DB=db_url,
        PYTHONUNBUFFERED="1",
    )
    cdir = root / name / "config" / "dmedia-tui"
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / "config.toml").write_text(f'hostname = "{name}"\n' + PEER_TOML)
    return env


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dmedia_tui", *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.skipif(os.geteuid() != 0, reason="mount namespaces need root")
def test_b_in_its_own_mount_namespace_feeds_a_to_three_copies(tmp_path: Path, db_url: str):
    if shutil.which("unshare") is None:
        pytest.fail("unshare (util-linux) is required for this test")
    files = {f"IMG_{i:04}.JPG": os.urandom(50_000 + 7919 * i) for i in range(6)}
    files["MVI_0100.MOV"] = os.urandom(2 * 8 * 1024 * 1024 + 333)  # three leaves
    card = tmp_path / "card"
    card.mkdir()
    for name, data in files.items():
        (card / name).write_bytes(data)
    ids = {hash_bytes(data).id for data in files.values()}

    a = _env(tmp_path, "studio", db_url)
    b = _env(tmp_path, "laptop", db_url)
    for label in ("studio-1", "studio-2", "studio-3"):
        (tmp_path / label).mkdir()
        r = _cli(a, "store", "init", str(tmp_path / label), "--label", label, "--same-filesystem")
        assert r.returncode == 0, r.stderr
    r = _cli(a, "daemon", "--once")  # A's machine doc (and certificate) is published
    assert r.returncode in (0, 1, 2), r.stderr

    # B: a tmpfs "drive" that exists only in B's namespace, its store, the import, and
    # the daemon (which serves A once it has seen A's machine doc).
    drive = tmp_path / "laptop-drive"
    drive.mkdir()
    me = f"{sys.executable} -m dmedia_tui"
    script = (
        f"mount -t tmpfs -o size=256m laptop-drive {drive}\n"
        f"mkdir {drive}/store\n"
        f"{me} store init {drive}/store --label laptop-ssd\n"
        f"{me} import {card}\n"
        "echo IMPORTED\n"
        f"exec {me} daemon\n"
    )
    proc = subprocess.Popen(
        ["unshare", "-m", "--propagation", "private", "sh", "-euc", script],
        env=b,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None
        said = []
        for line in iter(proc.stdout.readline, ""):  # store init and import, then IMPORTED
            if "IMPORTED" in line:
                said.append(line)
                break
        assert said and proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        assert os.listdir(drive) == []  # A's namespace does not see B's drive

        copies: dict[str, int] = {}
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            r = _cli(a, "daemon", "--once")
            assert r.returncode in (0, 1, 2), r.stderr
            status = json.loads(_cli(a, "status", "--json").stdout)
            if status["histogram"]["3"] == len(ids):
                break
            time.sleep(1)
        assert status["histogram"]["3"] == len(ids), status["histogram"]
        # B's one copy plus two pulled to A's stores (A never saw B's drive).
        for fid in ids:
            copies[fid] = sum(
                (tmp_path / label / ".dmedia" / "files" / fid[:2] / fid[2:]).is_file()
                for label in ("studio-1", "studio-2", "studio-3")
            )
        assert set(copies.values()) == {2}, copies
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    # Every copy A holds is byte-exact.
    for label in ("studio-1", "studio-2", "studio-3"):
        for p in (tmp_path / label / ".dmedia" / "files").glob("*/*"):
            assert hash_bytes(p.read_bytes()).id == p.parent.name + p.name
