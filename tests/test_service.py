"""The systemd user service, sd_notify from a real daemon, and the logs.

- The unit `service install` writes is checked by the real `systemd-analyze verify --user`
  (skipped, with the reason, only where systemd-analyze is absent).
- This machine's PID 1 is not systemd: `service install` must say so, and still write the
  unit. The systemctl calls of a machine that has systemd are checked against a stand-in
  `systemctl` script (systemctl --user cannot run here).
- READY=1 / WATCHDOG=1 / STOPPING=1 are read from a real unix datagram socket given as
  NOTIFY_SOCKET to a real `dmedia-tui daemon` subprocess.
- The app's log file receives the app's records (a real app in tmux) and rotates.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from dmedia_tui import service
from tests.conftest import NOW, need
from tests.integration.harness import Machine

ROOT = Path(__file__).resolve().parents[1]
ANALYZE = shutil.which("systemd-analyze")


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    return Machine(tmp_path / "machines", "studio", str(tmp_path / "library.sqlite3"), NOW)


def analyze_verify(unit: Path, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    runtime = tmp_path / "runtime"
    runtime.mkdir(mode=0o700, exist_ok=True)
    env = {**os.environ, "XDG_RUNTIME_DIR": str(runtime)}
    return subprocess.run(
        [ANALYZE, "verify", "--user", str(unit)],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )


def test_installed_unit_passes_systemd_analyze_verify(machine, tmp_path):
    need(
        ANALYZE is not None,
        "DMEDIA_REQUIRE_SYSTEMD_ANALYZE",
        "systemd-analyze is not installed (Debian: apt install systemd)",
    )
    db = tmp_path / "my library" / "lib 100%.sqlite3"  # a space and a % to escape
    r = machine.ok("service", "install", "--print", "--db", str(db))
    unit = tmp_path / "dmedia-tui.service"
    unit.write_text(r.stdout)
    text = unit.read_text()
    assert "Type=notify" in text and "WatchdogSec=120" in text and "Restart=on-failure" in text
    assert "daemon" in re.search(r"^ExecStart=(.*)$", text, re.M).group(1)
    assert 'Environment="DMEDIA_DB=' in text and "lib 100%%.sqlite3" in text
    res = analyze_verify(unit, tmp_path)
    assert res.returncode == 0, res.stderr
    assert "dmedia-tui.service" not in res.stderr, res.stderr  # no warning about our unit

    # The check is real: a broken unit is refused.
    bad = tmp_path / "bad.service"
    bad.write_text(re.sub(r"^ExecStart=\S+", "ExecStart=/nonexistent/x", text, flags=re.M))
    assert analyze_verify(bad, tmp_path).returncode != 0


@pytest.mark.skipif(service.systemd_booted(), reason="this test is about a machine without systemd")
def test_install_without_systemd_writes_the_unit_and_says_so(machine, tmp_path):
    unit = machine.config_home / "systemd" / "user" / "dmedia-tui.service"
    r = machine.run("service", "install")
    assert r.exit_code == 1
    assert f"wrote unit {unit}" in r.stdout
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "systemd is not running on this machine" in lines[0]
    assert "PID 1 is" in lines[0] and "not enabled" in lines[0]
    assert unit.exists() and "Type=notify" in unit.read_text()
    assert f"Environment=XDG_CONFIG_HOME={machine.config_home}" in unit.read_text()

    r = machine.run("service", "install")
    assert "is up to date" in r.stdout
    r = machine.run("service", "status")
    assert r.exit_code == 1 and "(installed)" in r.stdout and "systemd is not running" in r.stdout
    assert "engine: none running" in r.stdout
    r = machine.ok("service", "uninstall")
    assert f"removed {unit}" in r.stdout and not unit.exists()


@pytest.mark.skipif(service.systemd_booted(), reason="this test is about a machine without systemd")
def test_a_unit_holding_the_library_password_is_private(machine, tmp_path):
    """DMEDIA_DB goes into the unit: with a CouchDB password in it, no other user may read
    it (~/.config is often world-readable), and the user is told where a login belongs."""
    unit = machine.config_home / "systemd" / "user" / "dmedia-tui.service"
    url = "http://admin:s3cret-pw@127.0.0.1:5984/media"
    r = machine.run("service", "install", "--db", url)
    assert r.exit_code == 1 and f"wrote unit {unit}" in r.stdout
    assert f"Environment=DMEDIA_DB={url}" in unit.read_text()  # the service needs it
    assert stat.S_IMODE(unit.stat().st_mode) == 0o600
    assert "the password in --db is visible to other users" in r.stderr
    assert "the unit holds the library's password" in r.stderr and "~/.netrc" in r.stderr
    assert "s3cret-pw" not in r.stderr + r.stdout
    unit.chmod(0o644)  # a unit written by an earlier version
    r = machine.run("service", "install", "--db", url)
    assert "is up to date" in r.stdout and stat.S_IMODE(unit.stat().st_mode) == 0o600


def stand_in_systemctl(tmp_path: Path, fail_on: str = "") -> tuple[Path, Path]:
    """A `systemctl` that records its arguments (systemctl --user cannot run here)."""
    calls = tmp_path / "systemctl-calls"
    prog = tmp_path / "bin" / "systemctl"
    prog.parent.mkdir(parents=True, exist_ok=True)
    fail = f'case "$*" in *"{fail_on}"*) echo "Failed to {fail_on}: boom" >&2; exit 1;; esac\n'
    prog.write_text(
        "#!/bin/sh\n"
        f'echo "$*" >> {calls}\n'
        + (fail if fail_on else "")
        + 'case "$*" in *is-active*) echo active;; *is-enabled*) echo enabled;; esac\n'
    )
    prog.chmod(0o755)
    return prog, calls


def test_install_where_systemd_runs_reloads_enables_and_starts(tmp_path):
    prog, calls = stand_in_systemctl(tmp_path)
    sc = service.Systemctl(program=str(prog), booted=True)
    units = tmp_path / "units"
    rep = service.install(directory=units, systemctl=sc, environment={"DMEDIA_DB": "/x.db"})
    assert rep.ok, rep.problem
    assert calls.read_text().splitlines() == [
        "--user show-environment",
        "--user daemon-reload",
        "--user enable --now dmedia-tui.service",
    ]
    assert any("journalctl --user -u dmedia-tui.service" in line for line in rep.lines)
    rep = service.status(directory=units, systemctl=sc, engine_pid=4242)
    assert rep.ok and "systemd: enabled, active" in rep.lines and "pid 4242" in rep.lines[-1]
    rep = service.uninstall(directory=units, systemctl=sc)
    assert "--user disable --now dmedia-tui.service" in calls.read_text()
    assert not (units / "dmedia-tui.service").exists()

    prog, calls = stand_in_systemctl(tmp_path / "b", fail_on="enable")
    rep = service.install(directory=units, systemctl=service.Systemctl(str(prog), booted=True))
    assert not rep.ok and "enable --now dmedia-tui.service failed: Failed to enable: boom" in (
        rep.problem or ""
    )


# --- sd_notify from a real daemon --------------------------------------------------------


def test_daemon_sends_ready_watchdog_and_stopping_to_notify_socket(machine, tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    machine.init_store(store, "s", "--same-filesystem")
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(30)
    env = {
        **os.environ,
        **machine.env(),
        "NOTIFY_SOCKET": str(sock_path),
        "WATCHDOG_USEC": "400000",  # ping every 0.2 s
    }
    env.pop("DMEDIA_NOW")
    proc = subprocess.Popen(
        [sys.executable, "-m", "dmedia_tui", "daemon"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        got: list[str] = []
        started = time.monotonic()
        while sum(m == "WATCHDOG=1" for m in got) < 3:
            got.append(sock.recv(4096).decode())
        first = got[0].splitlines()
        assert first[0] == "READY=1" and first[1].startswith("STATUS=engine running on ")
        assert all(m == "WATCHDOG=1" for m in got[1:])
        assert time.monotonic() - started < 25
        proc.send_signal(signal.SIGTERM)
        assert sock.recv(4096).decode() in ("STOPPING=1", "WATCHDOG=1")
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        sock.close()
    # `daemon` logs to stderr with timestamps (journald keeps them).
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} INFO dmedia_tui"
    assert re.search(stamp + r": engine running", err), err
    assert "Traceback" not in err


def test_sd_notify_abstract_socket_and_no_socket():
    name = f"dmedia-tui-test-{uuid.uuid4().hex}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.bind("\0" + name)
        assert service.sd_notify("READY=1", {"NOTIFY_SOCKET": "@" + name})
        assert s.recv(100) == b"READY=1"
    assert not service.sd_notify("READY=1", {})
    assert service.watchdog_interval({"WATCHDOG_USEC": "120000000"}) == 60.0
    assert service.watchdog_interval({"WATCHDOG_USEC": "1", "WATCHDOG_PID": "1"}) is None


# --- logs -----------------------------------------------------------------------------------


def test_app_log_file_rotates(tmp_path):
    from dmedia_tui.cli import app_log_handler

    path = tmp_path / "dmedia-tui.log"
    handler = app_log_handler(path, max_bytes=2000, backups=2)
    logger = logging.getLogger("dmedia_tui.test_rotation")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        for i in range(200):
            logger.info("record %d %s", i, "x" * 40)
    finally:
        logger.removeHandler(handler)
        handler.close()
    assert path.stat().st_size <= 2000
    assert (tmp_path / "dmedia-tui.log.1").exists() and (tmp_path / "dmedia-tui.log.2").exists()
    assert not (tmp_path / "dmedia-tui.log.3").exists()
    last = path.read_text().splitlines()[-1]
    assert re.match(r"\d{4}-\d\d-\d\d .* INFO dmedia_tui.test_rotation: record 199", last)


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
def test_the_app_writes_its_log_file(machine, tmp_path):
    """A real app in a tmux pane: its engine's records reach dmedia-tui.log (they went only
    to Textual's devtools console before, leaving the file at 0 bytes)."""
    store = tmp_path / "store"
    store.mkdir()
    sid = machine.init_store(store, "s", "--same-filesystem")
    logfile = machine.data_home / "dmedia-tui" / "dmedia-tui.log"
    sock = f"dmedia-tui-log-{uuid.uuid4().hex[:8]}"
    envs = " ".join(
        f"{k}={v}" for k, v in machine.env().items() if k != "DMEDIA_NOW"
    )  # a ticking clock, like a user's
    cmd = f"cd {ROOT} && env {envs} {sys.executable} -m dmedia_tui; sleep 30"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMUX")}
    subprocess.run(
        ["tmux", "-L", sock, "new-session", "-d", "-s", "app", "-x", "120", "-y", "40", cmd],
        check=True,
        env=env,
        timeout=30,
    )
    try:
        text = ""
        for _ in range(300):
            text = logfile.read_text() if logfile.exists() else ""
            if f"store {sid} connected" in text:
                break
            time.sleep(0.1)
        assert f"INFO dmedia_tui.engine: store {sid} connected at" in text, text
        subprocess.run(["tmux", "-L", sock, "send-keys", "-t", "app", "q"], timeout=30)
    finally:
        subprocess.run(["tmux", "-L", sock, "kill-server"], capture_output=True, timeout=30)
