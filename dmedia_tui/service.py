"""Run the engine as a systemd user service, and talk sd_notify from the daemon.

- `unit_text()` is the unit `dmedia-tui service install` writes to
  `~/.config/systemd/user/dmedia-tui.service`: Type=notify (the daemon says READY=1 once
  its workers run), WatchdogSec (the daemon pings WATCHDOG=1 while its threads live; a
  hung engine is killed and restarted), Restart=on-failure. stderr goes to the journal.
- `install()/uninstall()/status()` write or remove the unit and drive `systemctl --user`
  when a systemd user manager runs; without one they say so and change nothing else.
- `SdNotifier` is the daemon's side: a few lines of stdlib socket code (the protocol is a
  datagram of `KEY=VALUE` lines to $NOTIFY_SOCKET), so no new dependency is needed.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import shutil
import socket
import subprocess
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger("dmedia_tui.service")

UNIT_NAME = "dmedia-tui.service"
WATCHDOG_SEC = 120


# --- sd_notify (the daemon's side) -----------------------------------------------------


def sd_notify(state: str, environ: dict[str, str] | None = None) -> bool:
    """Send `state` ("READY=1", "WATCHDOG=1", ...) to $NOTIFY_SOCKET; False when unset.

    An address starting with "@" is in the abstract namespace (systemd's own convention).
    """
    env = os.environ if environ is None else environ
    addr = env.get("NOTIFY_SOCKET")
    if not addr:
        return False
    if addr.startswith("@"):
        addr = "\0" + addr[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as s:
        s.connect(addr)
        s.sendall(state.encode())
    return True


def watchdog_interval(environ: dict[str, str] | None = None) -> float | None:
    """Seconds between watchdog pings (half of WATCHDOG_USEC), None when not asked for."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC")
    pid = env.get("WATCHDOG_PID")
    if not usec or (pid and pid.isdigit() and int(pid) != os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 2e6 if value > 0 else None


class SdNotifier:
    """READY=1 once, then WATCHDOG=1 every half watchdog period while `alive()` holds.

    When the engine's threads die or hang the pings stop and systemd restarts the service
    (WatchdogSec); sending errors are logged once and never stop the daemon.
    """

    def __init__(self, alive: Callable[[], bool] = lambda: True) -> None:
        self.alive = alive
        self.enabled = bool(os.environ.get("NOTIFY_SOCKET"))
        self.interval = watchdog_interval()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warned = False

    def _send(self, state: str) -> None:
        if not self.enabled:
            return
        try:
            sd_notify(state)
        except OSError as e:
            if not self._warned:
                log.warning("cannot notify systemd (%s): %s", state.split("=")[0], e)
                self._warned = True

    def ready(self, status: str = "") -> None:
        self._send("READY=1" + (f"\nSTATUS={status}" if status else ""))
        if self.enabled and self.interval and self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="dmedia-sd-watchdog")
            self._thread.daemon = True
            self._thread.start()

    def _loop(self) -> None:
        assert self.interval is not None
        while not self._stop.wait(self.interval):
            if self.alive():
                self._send("WATCHDOG=1")
            else:
                log.error("engine threads are not alive: no watchdog ping (systemd restarts)")

    def stopping(self) -> None:
        self._stop.set()
        self._send("STOPPING=1")
        if self._thread is not None:
            self._thread.join(2)


# --- the unit ----------------------------------------------------------------------------


def exec_command(extra_env: dict[str, str] | None = None) -> list[str]:
    """How systemd should start `dmedia-tui daemon`: the installed script, else this Python."""
    script = shutil.which("dmedia-tui")
    if script and os.path.isabs(script):
        return [os.path.realpath(script), "daemon"]
    return [os.path.realpath(sys.executable), "-m", "dmedia_tui", "daemon"]


def _systemd_quote(arg: str) -> str:
    """Quote one ExecStart word the way systemd reads it (also escapes % specifiers)."""
    arg = arg.replace("%", "%%")
    if arg and all(c.isalnum() or c in "/._-+=:,@" for c in arg):
        return arg
    return '"' + arg.replace("\\", "\\\\").replace('"', '\\"') + '"'


def unit_text(
    command: Sequence[str] | None = None,
    environment: dict[str, str] | None = None,
    watchdog_sec: int = WATCHDOG_SEC,
) -> str:
    """The systemd user unit for the daemon."""
    cmd = list(command or exec_command())
    env = sorted((environment or {}).items())
    env_lines = "".join(f"Environment={_systemd_quote(f'{k}={v}')}\n" for k, v in env)
    return (
        "# Written by `dmedia-tui service install`; remove with `dmedia-tui service uninstall`.\n"
        "[Unit]\n"
        "Description=dmedia-tui engine: verify, copy and watch the media library\n"
        "Documentation=https://pypi.org/project/dmedia-tui/\n"
        "\n"
        "[Service]\n"
        "Type=notify\n"
        "NotifyAccess=main\n"
        f"ExecStart={' '.join(_systemd_quote(a) for a in cmd)}\n"
        f"{env_lines}"
        "Environment=PYTHONUNBUFFERED=1\n"
        "Restart=on-failure\n"
        "RestartSec=30\n"
        f"WatchdogSec={watchdog_sec}\n"
        "TimeoutStartSec=300\n"
        "TimeoutStopSec=60\n"
        "KillMode=mixed\n"
        "Nice=5\n"
        "IOSchedulingClass=best-effort\n"
        "IOSchedulingPriority=7\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def unit_dir(environ: dict[str, str] | None = None) -> Path:
    """~/.config/systemd/user (XDG_CONFIG_HOME honoured), where systemd looks for user units."""
    env = os.environ if environ is None else environ
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    return Path(base) / "systemd" / "user"


def pid1_name() -> str:
    try:
        return Path("/proc/1/comm").read_text().strip() or "?"
    except OSError:
        return "?"


def systemd_booted() -> bool:
    """sd_booted(): systemd is the init system of this machine."""
    return os.path.isdir("/run/systemd/system")


@dataclass
class Report:
    """What a service command did, line by line, and whether it fully worked."""

    lines: list[str] = field(default_factory=list)
    ok: bool = True
    problem: str | None = None  # one line for stderr when not ok


class Systemctl:
    """`systemctl --user`, or the reason it cannot be used here."""

    def __init__(self, program: str | None = None, booted: bool | None = None) -> None:
        self.program = program if program is not None else shutil.which("systemctl")
        self.booted = systemd_booted() if booted is None else booted

    def unavailable(self) -> str | None:
        if not self.booted:
            return f"systemd is not running on this machine (PID 1 is {pid1_name()!r})"
        if not self.program:
            return "systemctl is not installed"
        r = self.run("show-environment")
        if r.returncode != 0:
            err = (r.stderr or "").strip().splitlines()
            return "no systemd user manager: " + (err[-1] if err else f"exit {r.returncode}")
        return None

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.program
        try:
            return subprocess.run(
                [self.program, "--user", *args], capture_output=True, text=True, timeout=60
            )
        except (OSError, subprocess.TimeoutExpired) as e:
            return subprocess.CompletedProcess([self.program], 1, "", str(e))


def install(
    *,
    directory: Path | None = None,
    environment: dict[str, str] | None = None,
    command: Sequence[str] | None = None,
    systemctl: Systemctl | None = None,
    start: bool = True,
) -> Report:
    """Write the unit, then daemon-reload and enable (--now) it where systemd runs."""
    rep = Report()
    path = (directory or unit_dir()) / UNIT_NAME
    text = unit_text(command, environment)
    path.parent.mkdir(parents=True, exist_ok=True)
    old = path.read_text(encoding="utf-8") if path.exists() else None
    if old == text:
        os.chmod(path, 0o600)  # as a unit written before units were private
        rep.lines.append(f"unit {path} is up to date")
    else:
        # Readable by its owner only: its Environment= may hold the library's password.
        tmp = path.with_name(f".{path.name}.tmp")
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
        rep.lines.append(f"{'updated' if old else 'wrote'} unit {path}")
    sc = systemctl or Systemctl()
    why = sc.unavailable()
    if why:
        rep.ok = False
        rep.problem = (
            f"{why}: the unit was written but not enabled; start `dmedia-tui daemon` another "
            "way (your init system, a login script) or on a machine with systemd"
        )
        return rep
    steps = [("daemon-reload",), ("enable", "--now", UNIT_NAME) if start else ("enable", UNIT_NAME)]
    if start and old is not None:
        steps.append(("restart", UNIT_NAME))  # a changed unit takes effect now
    for args in steps:
        r = sc.run(*args)
        if r.returncode != 0:
            rep.ok = False
            err = (r.stderr or r.stdout).strip().splitlines()
            rep.problem = f"systemctl --user {' '.join(args)} failed: " + (
                err[-1] if err else f"exit {r.returncode}"
            )
            return rep
        rep.lines.append(f"systemctl --user {' '.join(args)}")
    rep.lines.append(f"the engine runs as {UNIT_NAME}; its log: journalctl --user -u {UNIT_NAME}")
    rep.lines.append(
        "to keep it running while you are logged out: loginctl enable-linger " + _user()
    )
    return rep


def uninstall(*, directory: Path | None = None, systemctl: Systemctl | None = None) -> Report:
    """Disable and stop the unit where systemd runs, then remove the unit file."""
    rep = Report()
    path = (directory or unit_dir()) / UNIT_NAME
    sc = systemctl or Systemctl()
    why = sc.unavailable()
    if why is None:
        r = sc.run("disable", "--now", UNIT_NAME)
        if r.returncode == 0:
            rep.lines.append(f"systemctl --user disable --now {UNIT_NAME}")
        else:
            err = (r.stderr or r.stdout).strip().splitlines()
            rep.lines.append(f"(disable: {err[-1] if err else 'failed'})")
    if path.exists():
        path.unlink()
        rep.lines.append(f"removed {path}")
        if why is None:
            sc.run("daemon-reload")
            rep.lines.append("systemctl --user daemon-reload")
    else:
        rep.lines.append(f"no unit at {path}")
    if why:
        rep.lines.append(f"({why}: nothing to stop)")
    return rep


def status(
    *,
    directory: Path | None = None,
    systemctl: Systemctl | None = None,
    engine_pid: int | None = None,
) -> Report:
    """Is the unit installed, enabled, active; is an engine running for this library?"""
    rep = Report()
    path = (directory or unit_dir()) / UNIT_NAME
    rep.lines.append(f"unit: {path} ({'installed' if path.exists() else 'not installed'})")
    sc = systemctl or Systemctl()
    why = sc.unavailable()
    if why:
        rep.lines.append(f"systemd: {why}")
    else:
        enabled = sc.run("is-enabled", UNIT_NAME).stdout.strip() or "unknown"
        active = sc.run("is-active", UNIT_NAME).stdout.strip() or "unknown"
        rep.lines.append(f"systemd: {enabled}, {active}")
        rep.ok = active == "active"
    if engine_pid:
        rep.lines.append(f"engine: running for this library here (pid {engine_pid})")
    else:
        rep.lines.append("engine: none running for this library here")
        rep.ok = False
    return rep


def engine_lock_holder(lock_path: str) -> int | None:
    """The PID in an engine lock file that is held now (None when free or absent)."""
    import fcntl

    try:
        fd = os.open(lock_path, os.O_RDONLY)
    except OSError:
        return None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            with contextlib.suppress(OSError, ValueError):
                return int(os.pread(fd, 32, 0).decode().strip() or 0) or -1
            return -1
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def _user() -> str:
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_name
    except (KeyError, ImportError):
        return "$USER"


def command_line(cmd: Sequence[str]) -> str:
    return shlex.join(cmd)
