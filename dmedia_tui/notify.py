"""Tell the user when an alert appears, worsens or clears, wherever they are.

The engine (app or daemon) publishes events; a `Notifier` subscribed to it re-assesses
health at most every few seconds and compares the alerts with what each backend was last
told (by alert key: code + store IDs). Only differences are sent:

- `new`: an alert that backend was not told about (at or above `min_severity`);
- `worse`: its severity rose, or more files/bytes are concerned; at most once per
  `repeat_after` seconds per alert (rate limit: a disconnected drive whose file count
  grows during an import sends one message, not one per file);
- `cleared`: an alert the backend was told about is gone.

What each backend was told is persisted (`notify-<library>.json` in the data dir, under a
file lock), so a daemon restart, `daemon --once` from cron and a `verify` run never resend
what is already known, and two processes never send the same change twice. A backend that
fails keeps its old state (the change is retried after `retry_after`) and is logged; it
never stops the engine. During `quiet_hours` nothing below CRITICAL is sent; the first
check after them sends one summary of the net changes.

Backends: a command hook (one JSON change on stdin per run), any URL apprise supports
(ntfy, e-mail, Matrix, Telegram, Gotify, JSON webhooks...), and the desktop through
`notify-send` where present. Configured in config.toml:

    [notify]
    urls = ["ntfys://ntfy.sh/my-secret-topic"]
    command = "/usr/local/bin/on-dmedia-alert"
    desktop = true             # default: on when notify-send and a session bus exist
    min_severity = "warning"   # info | warning | panic | critical
    repeat_after = 3600
    quiet_hours = "22:00-07:00"
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import subprocess
import threading
import time
import tomllib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmedia_tui.errors import DmediaError
from dmedia_tui.health import Alert, Health, Severity

log = logging.getLogger("dmedia_tui.notify")

NEW, WORSE, CLEARED = "new", "worse", "cleared"


class NotifyConfigError(DmediaError, ValueError):
    """The [notify] table of config.toml makes no sense (one line for the user)."""


# --- settings ------------------------------------------------------------------------


@dataclass(frozen=True)
class NotifySettings:
    urls: tuple[str, ...] = ()
    command: str | None = None
    desktop: bool | None = None  # None: on where notify-send and a session bus exist
    min_severity: Severity = Severity.WARNING
    repeat_after: float = 3600.0
    retry_after: float = 300.0
    quiet_hours: tuple[int, int] | None = None  # minutes after midnight: start, end
    interval: float = 60.0  # a check at least this often while the engine runs
    settle: float = 2.0  # after an engine change, wait this long for more before checking
    command_timeout: float = 30.0

    @classmethod
    def from_mapping(cls, data: Any) -> NotifySettings:
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise NotifyConfigError("[notify] must be a table")
        known = {
            "urls",
            "command",
            "desktop",
            "min_severity",
            "repeat_after",
            "retry_after",
            "quiet_hours",
            "interval",
        }
        unknown = set(data) - known
        if unknown:
            raise NotifyConfigError(f"unknown key(s) in [notify]: {', '.join(sorted(unknown))}")
        urls = data.get("urls", [])
        if isinstance(urls, str):
            urls = [urls]
        if not isinstance(urls, list) or not all(isinstance(u, str) and u for u in urls):
            raise NotifyConfigError("[notify] urls must be a list of apprise URLs (strings)")
        command = data.get("command")
        if command is not None and (not isinstance(command, str) or not command.strip()):
            raise NotifyConfigError("[notify] command must be a non-empty string")
        desktop = data.get("desktop")
        if desktop is not None and not isinstance(desktop, bool):
            raise NotifyConfigError("[notify] desktop must be true or false")
        sev = data.get("min_severity", "warning")
        try:
            min_sev = Severity[str(sev).upper()]
        except KeyError:
            raise NotifyConfigError(
                f"[notify] min_severity must be info, warning, panic or critical, got {sev!r}"
            ) from None
        nums: dict[str, float] = {}
        for key in ("repeat_after", "retry_after", "interval"):
            if key in data:
                v = data[key]
                if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                    raise NotifyConfigError(f"[notify] {key} must be a number of seconds >= 0")
                nums[key] = float(v)
        quiet = parse_quiet_hours(data["quiet_hours"]) if "quiet_hours" in data else None
        return cls(
            urls=tuple(urls),
            command=command,
            desktop=desktop,
            min_severity=min_sev,
            quiet_hours=quiet,
            **nums,
        )

    @classmethod
    def load(cls, config_dir: Path) -> NotifySettings:
        """The [notify] table of config.toml (config.py reads the rest of that file)."""
        path = Path(config_dir) / "config.toml"
        try:
            with open(path, "rb") as f:
                data = tomllib.load(f)
        except FileNotFoundError:
            return cls()
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise NotifyConfigError(f"cannot read {path}: {e}") from None
        try:
            return cls.from_mapping(data.get("notify"))
        except NotifyConfigError as e:
            raise NotifyConfigError(f"{path}: {e}") from None


def parse_quiet_hours(value: Any) -> tuple[int, int]:
    """ "22:00-07:00" -> (1320, 420): minutes after local midnight (may wrap midnight)."""
    if not isinstance(value, str) or value.count("-") != 1:
        raise NotifyConfigError(f'[notify] quiet_hours must look like "22:00-07:00", got {value!r}')
    out = []
    for part in value.split("-"):
        try:
            h, m = part.strip().split(":")
            hh, mm = int(h), int(m)
        except ValueError:
            raise NotifyConfigError(
                f'[notify] quiet_hours must look like "22:00-07:00", got {value!r}'
            ) from None
        if not (0 <= hh <= 23 and 0 <= mm <= 59):
            raise NotifyConfigError(f"[notify] quiet_hours: no such time {part.strip()!r}")
        out.append(hh * 60 + mm)
    return out[0], out[1]


def in_quiet_hours(quiet: tuple[int, int] | None, now: float) -> bool:
    """Whether `now` (unix seconds) falls in the local-time window `quiet`."""
    if quiet is None:
        return False
    t = time.localtime(now)
    minute = t.tm_hour * 60 + t.tm_min
    start, end = quiet
    if start == end:
        return False
    if start < end:
        return start <= minute < end
    return minute >= start or minute < end


# --- the diff (pure) -------------------------------------------------------------------


def alert_key(alert: Alert) -> str:
    """What makes an alert "the same one" across refreshes: its code and its stores."""
    return f"{alert.code}:{','.join(sorted(alert.store_ids))}"


@dataclass(frozen=True)
class Known:
    """What a backend was told about one alert."""

    code: str
    severity: str
    message: str
    action: str
    store_ids: tuple[str, ...]
    files: int
    bytes: int
    notified: float  # when

    @classmethod
    def of(cls, alert: Alert, now: float) -> Known:
        return cls(
            alert.code,
            alert.severity.name.lower(),
            alert.message,
            alert.action,
            tuple(alert.store_ids),
            alert.files,
            alert.bytes,
            now,
        )

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Known:
        return cls(
            str(data["code"]),
            str(data["severity"]),
            str(data.get("message", "")),
            str(data.get("action", "")),
            tuple(data.get("store_ids", ())),
            int(data.get("files", 0)),
            int(data.get("bytes", 0)),
            float(data.get("notified", 0)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity,
            "message": self.message,
            "action": self.action,
            "store_ids": list(self.store_ids),
            "files": self.files,
            "bytes": self.bytes,
            "notified": self.notified,
        }

    @property
    def level(self) -> Severity:
        return Severity[self.severity.upper()]


@dataclass(frozen=True)
class Change:
    kind: str  # new | worse | cleared
    key: str
    now: Known  # the alert as it is (for `cleared`: as it was last told)
    before: Known | None = None

    def to_json(self, context: dict[str, Any] | None = None) -> dict[str, Any]:
        out = {
            "event": self.kind,
            "key": self.key,
            **{k: v for k, v in self.now.to_json().items() if k != "notified"},
        }
        if self.before is not None:
            out["before"] = {
                k: v
                for k, v in self.before.to_json().items()
                if k in ("severity", "files", "bytes")
            }
        if context:
            out.update(context)
        return out

    def line(self) -> str:
        if self.kind == CLEARED:
            return f"CLEARED {self.now.code}: {self.now.message}"
        prefix = "WORSE" if self.kind == WORSE else self.now.severity.upper()
        return f"{prefix} {self.now.code}: {self.now.message}"


def diff(
    known: dict[str, Known],
    alerts: Iterable[Alert],
    now: float,
    min_severity: Severity = Severity.WARNING,
    repeat_after: float = 3600.0,
) -> tuple[list[Change], dict[str, Known]]:
    """The changes to send, and the new "known" state once they are sent.

    An alert below `min_severity` is neither announced nor counted as cleared when it
    drops below (an alert known at a higher severity that falls below it is `cleared`).
    A `worse` change waits until `repeat_after` has passed since that alert was last
    told; until then the backend's state keeps the old values, so it is not lost.
    """
    changes: list[Change] = []
    state: dict[str, Known] = {}
    current: dict[str, Alert] = {}
    for a in alerts:
        if a.severity >= min_severity:
            current.setdefault(alert_key(a), a)
    for key, a in current.items():
        before = known.get(key)
        if before is None:
            k = Known.of(a, now)
            changes.append(Change(NEW, key, k))
            state[key] = k
            continue
        worse = (
            a.severity > before.level
            or a.files > before.files
            or (a.bytes > before.bytes and a.files >= before.files)
        )
        if worse and now - before.notified >= repeat_after:
            k = Known.of(a, now)
            changes.append(Change(WORSE, key, k, before))
            state[key] = k
        else:
            state[key] = before  # unchanged, better, or held back by the rate limit
    for key, before in known.items():
        if key not in current:
            changes.append(Change(CLEARED, key, before))
    order = {NEW: 0, WORSE: 1, CLEARED: 2}
    changes.sort(key=lambda c: (order[c.kind], -c.now.level, c.key))
    return changes, state


def summarize(changes: Sequence[Change], quiet_summary: bool = False) -> tuple[str, str]:
    """(title, body) of one message for a batch of changes."""
    if len(changes) == 1 and not quiet_summary:
        c = changes[0]
        if c.kind == CLEARED:
            title = f"dmedia-tui: cleared {c.now.code}"
            body = f"No longer: {c.now.message}"
        else:
            verb = "worse" if c.kind == WORSE else c.now.severity.upper()
            title = f"dmedia-tui {verb}: {c.now.code}"
            body = f"{c.now.message}\n{c.now.action}"
        return title, body
    counts = {k: sum(1 for c in changes if c.kind == k) for k in (NEW, WORSE, CLEARED)}
    parts = [f"{n} {k}" for k, n in counts.items() if n]
    head = "while quiet" if quiet_summary else "alerts changed"
    title = f"dmedia-tui {head}: " + ", ".join(parts)
    return title, "\n".join(c.line() for c in changes)


def notify_type(changes: Sequence[Change]) -> str:
    """apprise's notify type for a batch: failure if anything panics, warning for a
    warning, info for info only (a test message too), success if all cleared."""
    live = [c for c in changes if c.kind != CLEARED]
    if not live:
        return "success"
    worst = max(c.now.level for c in live)
    if worst >= Severity.PANIC:
        return "failure"
    return "warning" if worst >= Severity.WARNING else "info"


# --- backends --------------------------------------------------------------------------


class Backend:
    """Sends a batch of changes; raises on failure (the notifier logs and retries later)."""

    name = "backend"

    def send(self, changes: Sequence[Change], context: dict[str, Any], quiet: bool) -> None:
        raise NotImplementedError


class CommandBackend(Backend):
    """Runs the user's command once per change, the change as JSON on stdin.

    The command runs through /bin/sh (so `[notify] command = "mail -s alert me@x"` works);
    a non-zero exit or a timeout is a failure."""

    def __init__(self, command: str, timeout: float = 30.0) -> None:
        self.command = command
        self.timeout = timeout
        self.name = "command"

    def send(self, changes: Sequence[Change], context: dict[str, Any], quiet: bool) -> None:
        for c in changes:
            payload = c.to_json({**context, "quiet_summary": quiet})
            env = {
                **os.environ,
                "DMEDIA_EVENT": c.kind,
                "DMEDIA_ALERT_CODE": c.now.code,
                "DMEDIA_SEVERITY": c.now.severity,
            }
            r = subprocess.run(
                self.command,
                shell=True,
                input=json.dumps(payload, sort_keys=True) + "\n",
                text=True,
                capture_output=True,
                timeout=self.timeout,
                env=env,
            )
            if r.returncode != 0:
                err = (r.stderr or r.stdout).strip().splitlines()
                raise RuntimeError(f"exit {r.returncode}" + (f": {err[-1]}" if err else ""))


class AppriseBackend(Backend):
    """Any service apprise knows, from one list of URLs (ntfy, mailto, matrix, tgram...)."""

    def __init__(self, urls: Sequence[str]) -> None:
        import apprise

        self.urls = list(urls)
        self.name = "apprise"
        self._apprise = apprise.Apprise()
        quiet = logging.getLogger("apprise")  # our error names the URL; its own would repeat it
        level = quiet.level
        quiet.setLevel(logging.CRITICAL)
        try:
            bad = [u for u in self.urls if not self._apprise.add(u)]
        finally:
            quiet.setLevel(level)
        if bad:
            raise NotifyConfigError(
                "[notify] urls: apprise does not understand " + ", ".join(mask_url(u) for u in bad)
            )

    def send(self, changes: Sequence[Change], context: dict[str, Any], quiet: bool) -> None:
        title, body = summarize(changes, quiet)
        if context.get("machine"):
            body += f"\n({context['machine']})"
        ok = self._apprise.notify(body=body, title=title, notify_type=notify_type(changes))
        if not ok:
            raise RuntimeError("apprise could not deliver to every URL (see its log lines)")


class DesktopBackend(Backend):
    """A freedesktop notification through `notify-send` (libnotify)."""

    def __init__(self, program: str) -> None:
        self.program = program
        self.name = "desktop"

    @staticmethod
    def available() -> str | None:
        prog = shutil.which("notify-send")
        if prog and (os.environ.get("DBUS_SESSION_BUS_ADDRESS") or os.environ.get("DISPLAY")):
            return prog
        return None

    def send(self, changes: Sequence[Change], context: dict[str, Any], quiet: bool) -> None:
        title, body = summarize(changes, quiet)
        urgency = {"failure": "critical", "warning": "normal", "info": "low", "success": "low"}
        r = subprocess.run(
            [
                self.program,
                "--app-name=dmedia-tui",
                f"--urgency={urgency[notify_type(changes)]}",
                title,
                body,
            ],
            capture_output=True,
            text=True,
            timeout=15,
        )
        if r.returncode != 0:
            raise RuntimeError(f"notify-send exit {r.returncode}: {r.stderr.strip()}")


def mask_url(url: str) -> str:
    """An apprise URL with its secrets hidden (for logs and messages)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "***"
    host = rest.split("/", 1)[0].rsplit("@", 1)[-1]
    return f"{scheme}://{host}/***"


def make_backends(settings: NotifySettings) -> list[Backend]:
    out: list[Backend] = []
    if settings.command:
        out.append(CommandBackend(settings.command, settings.command_timeout))
    if settings.urls:
        out.append(AppriseBackend(settings.urls))
    if settings.desktop is not False:
        prog = DesktopBackend.available()
        if prog:
            out.append(DesktopBackend(prog))
        elif settings.desktop:
            log.warning("[notify] desktop = true but notify-send or a session bus is missing")
    return out


# --- persisted state -----------------------------------------------------------------


class NotifyState:
    """What each backend was told, in a JSON file guarded by a lock file."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @contextlib.contextmanager
    def locked(self) -> Any:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(str(self.path) + ".lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield self
        finally:
            os.close(fd)

    def read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as e:
            log.warning("notification state %s unreadable (%s): starting afresh", self.path, e)
            return {}
        return data if isinstance(data, dict) else {}

    def write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, self.path)

    @staticmethod
    def known(data: dict[str, Any], backend: str) -> dict[str, Known]:
        raw = (data.get("backends") or {}).get(backend, {}).get("alerts") or {}
        out: dict[str, Known] = {}
        for key, v in raw.items():
            try:
                out[key] = Known.from_json(v)
            except (KeyError, TypeError, ValueError):
                continue
        return out


def state_path(data_dir: Path, library_url: str, machine_id: str) -> Path:
    """One state file per library and machine (like the engine lock)."""
    name = hashlib.sha256(f"{library_url}|{machine_id}".encode()).hexdigest()[:16]
    return Path(data_dir) / f"notify-{name}.json"


# --- the notifier ----------------------------------------------------------------------


@dataclass
class CheckResult:
    changes: int = 0  # changes sent by at least one backend
    sent: dict[str, int] = field(default_factory=dict)  # backend -> messages delivered
    failed: dict[str, str] = field(default_factory=dict)  # backend -> error
    held: bool = False  # quiet hours: nothing below critical sent


class Notifier:
    """Diffs successive health assessments and tells every backend what changed.

    `assess` returns the current Health; `now` the (injected) clock. `check()` is
    synchronous (for `daemon --once` and `verify`); `attach(engine)` runs checks on a
    thread of its own after engine changes (debounced by `settle`) and every `interval`.
    """

    def __init__(
        self,
        settings: NotifySettings,
        backends: Sequence[Backend],
        state: NotifyState,
        assess: Callable[[], Health],
        now: Callable[[], float],
        context: dict[str, Any] | None = None,
    ) -> None:
        self.settings = settings
        self.backends = list(backends)
        self.state = state
        self.assess = assess
        self.now = now
        self.context = dict(context or {})
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], Any] | None = None
        self._lock = threading.Lock()

    # --- one check ---------------------------------------------------------------------

    def check(self) -> CheckResult:
        """Assess health now and send every backend what it has not been told."""
        with self._lock:
            health = self.assess()
            return self.check_health(health)

    def check_health(self, health: Health) -> CheckResult:
        res = CheckResult()
        now = self.now()
        s = self.settings
        quiet = in_quiet_hours(s.quiet_hours, now)
        with self.state.locked():
            data = self.state.read()
            backends_state = data.setdefault("backends", {})
            for b in self.backends:
                bstate = backends_state.setdefault(b.name, {})
                if now < float(bstate.get("retry_at", 0) or 0):
                    continue  # failed lately: its changes wait for the retry
                known = NotifyState.known(data, b.name)
                changes, new_known = diff(known, health.alerts, now, s.min_severity, s.repeat_after)
                if not changes:
                    continue
                summary = False
                if quiet:
                    urgent = [
                        c for c in changes if c.kind != CLEARED and c.now.level >= Severity.CRITICAL
                    ]
                    if not urgent:
                        bstate["held"] = True
                        res.held = True
                        continue
                elif bstate.get("held"):
                    summary = True  # the first check after quiet hours: one summary
                try:
                    b.send(changes, {**self.context, "time": now}, summary)
                except Exception as e:  # a backend must never stop the engine
                    log.warning("notification via %s failed: %s", b.name, _one_line(e))
                    bstate["retry_at"] = now + s.retry_after
                    bstate["error"] = _one_line(e)
                    res.failed[b.name] = _one_line(e)
                    continue
                bstate["alerts"] = {k: v.to_json() for k, v in new_known.items()}
                bstate.pop("retry_at", None)
                bstate.pop("error", None)
                bstate.pop("held", None)
                bstate["last_sent"] = now
                res.sent[b.name] = len(changes)
                res.changes = max(res.changes, len(changes))
                for c in changes:
                    log.info("notified %s via %s: %s", c.kind, b.name, c.line())
            self.state.write(data)
        return res

    # --- on an engine --------------------------------------------------------------------

    def attach(self, engine: Any) -> Notifier:
        """Check after the engine's changes (not its progress ticks) and every `interval`.

        The subscriber only sets a flag: the engine's workers never wait for a network."""
        self._unsubscribe = engine.subscribe(self._on_event)
        return self

    def _on_event(self, event: Any) -> None:
        if getattr(event, "kind", None) == "activity":
            return
        if self._thread is None and not self._stop.is_set():
            self._thread = threading.Thread(target=self._loop, name="dmedia-notify", daemon=True)
            self._thread.start()
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.settings.interval or None)
            if self._stop.is_set():
                break
            if self._wake.is_set():
                self._stop.wait(self.settings.settle)  # let a burst of changes settle
                self._wake.clear()
            if self._stop.is_set():
                break
            try:
                self.check()
            except Exception as e:
                log.warning("notification check failed: %s", _one_line(e))

    def close(self, final_check: bool = False) -> None:
        """Stop the thread; with `final_check`, one last synchronous check first."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if final_check:
            try:
                self.check()
            except Exception as e:
                log.warning("notification check failed: %s", _one_line(e))


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}".rstrip(": ")


def for_metastore(
    ms: Any, local: Callable[[], Iterable[str] | None] | None = None
) -> Notifier | None:
    """The notifier configured for this library and machine, or None when no backend is.

    `local`: the stores connected here now (the engine's), so health agrees with the
    engine; it gives None while that is not known yet (the MetaStore then looks). A bad
    [notify] table is logged and means no notifications, never a crash (the commands
    that run an engine refuse one before they start: cli.py).
    """
    try:
        settings = NotifySettings.load(ms.config.config_dir)
        backends = make_backends(settings)
    except NotifyConfigError as e:
        log.error("notifications off: %s", e)
        return None
    if not backends:
        return None
    path = state_path(ms.config.data_dir, ms.lib.display_url, ms.machine_id)

    def assess() -> Health:
        here = local() if local is not None else None
        return ms.health(local=set(here) if here is not None else None)

    context = {"library": ms.lib.display_url, "machine": ms.hostname}
    return Notifier(settings, backends, NotifyState(path), assess, ms.now, context)


def attach(engine: Any) -> Notifier | None:
    """Notifications for an engine's library (None when none are configured)."""
    n = for_metastore(engine.ms, local=engine.connected_ids)
    return n.attach(engine) if n is not None else None


def test_message(settings: NotifySettings, now: float) -> Change:
    """A harmless change to prove a backend delivers (`dmedia-tui notify test`)."""
    k = Known(
        "TEST",
        "info",
        "This is a test notification from dmedia-tui: the backend works.",
        "Nothing to do.",
        (),
        0,
        0,
        now,
    )
    return Change(NEW, "TEST:", k)
