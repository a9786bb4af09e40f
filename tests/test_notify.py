"""Notifications: an alert that appears, worsens or clears reaches the user once.

The diff is pure and tested directly; the scenarios run the real CLI (verify, daemon
--once, store ack) on real FileStores and deliver through a real command hook (a shell
command appending its stdin to a file) and real apprise (`json://` to a local HTTP
receiver thread). Nothing is mocked.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path

import pytest

from dmedia_tui import notify
from dmedia_tui.health import DRIVE_FAILURE, Alert, Health, Severity
from tests.conftest import NOW
from tests.integration.harness import Machine, Mounts, canonical, flip_bit, make_camera_files

HOUR = 3600


def alert(code: str = DRIVE_FAILURE, sev: Severity = Severity.PANIC, files: int = 3, *sids: str):
    return Alert(code, sev, f"{code} msg", "do this", tuple(sids or ("S1",)), files, files * 10)


# --- the diff (pure) ---------------------------------------------------------------------


def test_new_alert_is_announced_once_and_repeats_are_silent():
    changes, state = notify.diff({}, [alert()], NOW)
    assert [c.kind for c in changes] == ["new"]
    assert changes[0].key == "DRIVE_FAILURE:S1"
    again, state2 = notify.diff(state, [alert()], NOW + 60)
    assert again == [] and state2 == state


def test_worse_is_rate_limited_and_not_lost():
    _, state = notify.diff({}, [alert(files=3)], NOW)
    held, state2 = notify.diff(state, [alert(files=9)], NOW + 60, repeat_after=HOUR)
    assert held == [] and state2["DRIVE_FAILURE:S1"].files == 3  # still the old value
    sent, state3 = notify.diff(state2, [alert(files=9)], NOW + HOUR, repeat_after=HOUR)
    assert [c.kind for c in sent] == ["worse"] and sent[0].before.files == 3
    assert state3["DRIVE_FAILURE:S1"].files == 9
    better, _ = notify.diff(state3, [alert(files=1)], NOW + 3 * HOUR)
    assert better == []  # getting better is not news; clearing is


def test_severity_rise_is_worse_and_clearing_is_sent():
    low = alert("SHARED_FILESYSTEM", Severity.WARNING)
    _, state = notify.diff({}, [low], NOW)
    up = Alert(low.code, Severity.PANIC, low.message, low.action, low.store_ids, low.files, 0)
    changes, state = notify.diff(state, [up], NOW + HOUR)
    assert [c.kind for c in changes] == ["worse"]
    cleared, state = notify.diff(state, [], NOW + 2 * HOUR)
    assert [c.kind for c in cleared] == ["cleared"] and state == {}


def test_min_severity_and_store_ids_make_the_key():
    info = alert("LOW_DURABILITY", Severity.INFO)
    changes, state = notify.diff(
        {}, [info, alert(), alert(DRIVE_FAILURE, Severity.PANIC, 1, "S2")], NOW
    )
    assert sorted(c.key for c in changes) == ["DRIVE_FAILURE:S1", "DRIVE_FAILURE:S2"]


def test_quiet_hours_parse_and_wrap(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        q = notify.parse_quiet_hours("22:00-07:00")
        assert q == (22 * 60, 7 * 60)
        day = 1_700_000_000 - 1_700_000_000 % 86400  # a UTC midnight
        assert notify.in_quiet_hours(q, day + 23 * HOUR)
        assert notify.in_quiet_hours(q, day + 6 * HOUR)
        assert not notify.in_quiet_hours(q, day + 12 * HOUR)
        with pytest.raises(notify.NotifyConfigError):
            notify.parse_quiet_hours("25:00-07:00")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_bad_notify_table_is_one_clear_error(tmp_path):
    (tmp_path / "config.toml").write_text('[notify]\nurls = "x"\nmin_severity = "loud"\n')
    with pytest.raises(notify.NotifyConfigError, match="min_severity"):
        notify.NotifySettings.load(tmp_path)
    (tmp_path / "config.toml").write_text("[notify]\nbogus = 1\n")
    with pytest.raises(notify.NotifyConfigError, match="bogus"):
        notify.NotifySettings.load(tmp_path)


def test_a_command_that_runs_the_engine_refuses_a_bad_notify_table(tmp_path, mounts):
    """A typo in [notify] would mean panics that reach nobody: daemon and verify say so in
    one line and exit 1 before doing anything, like any bad setting."""
    m, _, _ = library_with_copies(tmp_path, mounts)
    cfg = m.config_home / "dmedia-tui" / "config.toml"
    for table, needle in (
        ('comand = "cat"', "unknown key(s) in [notify]: comand"),
        ('urls = ["notaservice://x"]', "apprise does not understand notaservice://"),
    ):
        cfg.write_text(f"[notify]\n{table}\n")
        for args in (("daemon", "--once"), ("verify",)):
            r = m.run(*args)
            assert r.exit_code == 1, (args, r.stdout, r.stderr)
            lines = r.stderr.strip().splitlines()
            assert len(lines) == 1 and needle in lines[0], (args, r.stderr)
            assert "Traceback" not in r.stderr and r.stdout == ""


# --- a receiver for apprise's json:// -------------------------------------------------------


class Receiver:
    """A local HTTP server recording every JSON body POSTed to it (apprise's json://)."""

    def __init__(self) -> None:
        received = self.received = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                n = int(self.headers.get("Content-Length", 0))
                received.append(json.loads(self.rfile.read(n)))
                self.send_response(200)
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"json://127.0.0.1:{self.port}/"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def copies_on(store: Path) -> list[str]:
    return sorted(p.parent.name + p.name for p in (store / ".dmedia" / "files").glob("*/*"))


def hook_lines(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def configure(machine: Machine, **notify_keys) -> None:
    cfg = machine.config_home / "dmedia-tui" / "config.toml"
    lines = [f'hostname = "{machine.name}"', "[notify]"]
    for k, v in notify_keys.items():
        lines.append(f"{k} = {json.dumps(v)}")
    cfg.write_text("\n".join(lines) + "\n")


def library_with_copies(tmp_path: Path, mounts: Mounts) -> tuple[Machine, list[Path], list[str]]:
    """4 stores, 5 user files with 3 copies each, verified: a healthy library."""
    m = Machine(tmp_path / "machines", "studio", str(tmp_path / "library.sqlite3"), NOW)
    paths = []
    for name in "abcd":
        p = mounts.new(name, 16)
        m.init_store(p, name, *mounts.same_fs_flag)
        paths.append(p)
    make_camera_files(tmp_path / "photos", 5, max_kb=40)
    r = m.ok("import", str(tmp_path / "photos"), "--store", "a", "--json")
    assert r.json()["files"] == 5
    m.once()
    fids = copies_on(paths[0])
    assert len(fids) == 5
    return m, paths, fids


# --- the scenario ------------------------------------------------------------------------


def test_rotten_copy_reaches_hook_and_apprise_once_then_clearing_once(tmp_path, mounts, receiver):
    m, paths, fids = library_with_copies(tmp_path, mounts)
    hook = tmp_path / "hook.jsonl"
    configure(m, command=f"cat >> {hook}", urls=[receiver.url], min_severity="panic", desktop=False)
    m.once(now=NOW + HOUR)
    assert hook_lines(hook) == [] and receiver.received == []  # healthy: nothing to say

    flip_bit(canonical(paths[0], fids[0]))
    r = m.run("verify", "--all", now=NOW + 2 * HOUR)
    assert r.exit_code == 2  # the corrupt copy was found
    events = hook_lines(hook)
    assert [(e["event"], e["code"]) for e in events] == [("new", DRIVE_FAILURE)]
    assert events[0]["severity"] == "panic" and events[0]["machine"] == "studio"
    assert len(events[0]["store_ids"]) == 1
    assert len(receiver.received) == 1
    body = receiver.received[0]
    assert DRIVE_FAILURE in body["title"] and body["type"] == "failure"

    # Repeated rounds (new processes: the state is on disk) say nothing new.
    for i in range(3):
        m.once(now=NOW + (3 + i) * HOUR)
        m.run("verify", "--all", now=NOW + (3 + i) * HOUR)
    assert len(hook_lines(hook)) == 1 and len(receiver.received) == 1

    # The user acknowledges: the next engine round tells both, once.
    m.ok("store", "ack", "a", now=NOW + 7 * HOUR)
    m.once(now=NOW + 8 * HOUR)
    m.once(now=NOW + 9 * HOUR)
    events = hook_lines(hook)
    assert [(e["event"], e["code"]) for e in events] == [
        ("new", DRIVE_FAILURE),
        ("cleared", DRIVE_FAILURE),
    ]
    assert len(receiver.received) == 2
    assert "cleared" in receiver.received[1]["title"] and receiver.received[1]["type"] == "success"


def test_a_broken_backend_is_logged_and_retried_never_stops_the_engine(
    tmp_path, mounts, receiver, caplog
):
    m, paths, fids = library_with_copies(tmp_path, mounts)
    marker = tmp_path / "hook-works"
    hook = tmp_path / "hook.jsonl"
    # The hook fails until the marker file exists (a mail server that is down, say).
    configure(
        m,
        command=f"test -e {marker} || {{ echo smtp down >&2; exit 3; }}; cat >> {hook}",
        urls=[receiver.url],
        min_severity="panic",
        retry_after=600,
        desktop=False,
    )
    flip_bit(canonical(paths[1], copies_on(paths[1])[0]))
    due = NOW + 16 * 86400  # every copy is due for verification again
    r = m.run("daemon", "--once", "--json", now=due)
    assert r.exit_code == 0, r.stderr  # the engine finished its round
    assert r.json()["corrupt"] == 1 and r.json()["copies"] >= 1  # and healed the library
    assert "notification via command failed" in caplog.text and "smtp down" in caplog.text
    assert len(receiver.received) == 1  # the other backend was not held up
    assert hook_lines(hook) == []

    marker.touch()
    m.once(now=due + 60)  # before retry_after: not retried yet
    assert hook_lines(hook) == []
    m.once(now=due + HOUR)
    assert [e["event"] for e in hook_lines(hook)] == ["new"]
    assert len(receiver.received) == 1  # apprise was told already: not again


def test_unreachable_apprise_target_does_not_stop_the_hook(tmp_path, mounts, caplog):
    m, paths, fids = library_with_copies(tmp_path, mounts)
    hook = tmp_path / "hook.jsonl"
    configure(
        m,
        command=f"cat >> {hook}",
        urls=["json://127.0.0.1:9/"],
        min_severity="panic",
        desktop=False,
    )
    flip_bit(canonical(paths[2], copies_on(paths[2])[0]))
    r = m.run("verify", "--all", now=NOW + HOUR)
    assert r.exit_code == 2
    assert "notification via apprise failed" in caplog.text
    assert [e["event"] for e in hook_lines(hook)] == ["new"]


def test_notify_test_command(tmp_path, receiver):
    m = Machine(tmp_path / "machines", "studio", str(tmp_path / "library.sqlite3"), NOW)
    r = m.run("notify", "test")
    assert r.exit_code == 1 and "no notification backend configured" in r.stderr
    hook = tmp_path / "hook.jsonl"
    configure(m, command=f"cat >> {hook}", urls=[receiver.url], desktop=False)
    r = m.ok("notify", "test")
    assert "command: sent" in r.stdout and "apprise: sent" in r.stdout
    assert hook_lines(hook)[0]["code"] == "TEST" and hook_lines(hook)[0]["test"] is True
    assert "test notification" in receiver.received[0]["message"]
    assert receiver.received[0]["type"] == "info"  # a test is not a warning
    configure(m, command="exit 4")
    r = m.run("notify", "test")
    assert r.exit_code == 1 and "command: failed" in r.stderr


def test_quiet_hours_hold_back_then_one_summary(tmp_path, monkeypatch):
    """Changes during quiet hours wait; the first check after them sends the net result."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        day = 1_700_000_000 - 1_700_000_000 % 86400
        clock = {"t": day + 23 * HOUR}
        alerts: list[Alert] = []
        sent: list[tuple[list[str], bool]] = []

        class Recorder(notify.Backend):
            name = "rec"

            def send(self, changes, context, quiet):
                sent.append(([c.kind + ":" + c.key for c in changes], quiet))

        settings = notify.NotifySettings(quiet_hours=(22 * 60, 7 * 60))
        n = notify.Notifier(
            settings,
            [Recorder()],
            notify.NotifyState(tmp_path / "state.json"),
            lambda: Health(tuple(alerts), (), (), 0, 0),  # type: ignore[arg-type]
            lambda: clock["t"],
        )
        alerts.append(alert(files=2))
        assert n.check().held and sent == []
        alerts.append(alert(DRIVE_FAILURE, Severity.PANIC, 1, "S2"))
        clock["t"] += 2 * HOUR
        assert n.check().held and sent == []
        alerts.append(alert("NO_KNOWN_COPY", Severity.CRITICAL, 4, "S3"))  # critical: at once
        clock["t"] += HOUR
        n.check()
        assert len(sent) == 1 and len(sent[0][0]) == 3
        alerts[:] = alerts[1:]
        clock["t"] = day + 24 * HOUR + 3 * HOUR  # still quiet: the clearing waits
        assert n.check().held and len(sent) == 1
        clock["t"] = day + 24 * HOUR + 8 * HOUR  # morning: one summary
        n.check()
        assert sent[1] == (["cleared:DRIVE_FAILURE:S1"], True)
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()


def test_a_check_before_the_engine_first_looks_sends_no_false_alarm(tmp_path, mounts):
    """Until the engine has looked at which stores are connected, its `connected` is empty
    for want of knowing. Judged from it, all four stores here were offline, and a check at
    that moment notified "only copy on a disconnected drive" for a healthy library."""
    from dmedia_tui.clock import FixedClock
    from dmedia_tui.config import Config
    from dmedia_tui.db import open_library
    from dmedia_tui.engine import Engine
    from dmedia_tui.metastore import MetaStore

    m, paths, _ = library_with_copies(tmp_path, mounts)
    hook = tmp_path / "hook.jsonl"
    configure(m, command=f"cat >> {hook}", min_severity="info", desktop=False)
    cfg = Config.load(m.config_home / "dmedia-tui", m.data_home / "dmedia-tui")
    lib = open_library(m.db_url)
    try:
        ms = MetaStore(lib, cfg, FixedClock(NOW + HOUR))
        engine = Engine(ms, watch_drives=False, watch_folders=False)
        n = notify.attach(engine)
        assert n is not None and engine.connected_ids() is None  # not started: not looked
        n.check()
        assert hook_lines(hook) == []  # healthy, as `status` says
        engine.run_once()  # the engine looks: the same four stores, still nothing to say
        assert engine.connected_ids() == set(ms.connected_filestores()) and len(paths) == 4
        n.check()
        assert hook_lines(hook) == []
    finally:
        lib.close()


def test_attached_to_a_running_engine_notifies_from_its_thread(tmp_path, mounts):
    """The app and `daemon` host a threaded engine: a corrupt copy it finds is notified
    without any CLI round, and the engine keeps running."""
    from dmedia_tui.clock import FixedClock
    from dmedia_tui.config import Config
    from dmedia_tui.db import open_library
    from dmedia_tui.engine import Engine
    from dmedia_tui.metastore import MetaStore

    m, paths, fids = library_with_copies(tmp_path, mounts)
    hook = tmp_path / "hook.jsonl"
    configure(m, command=f"cat >> {hook}", min_severity="panic", desktop=False)
    cfg = Config.load(m.config_home / "dmedia-tui", m.data_home / "dmedia-tui")
    lib = open_library(m.db_url)
    ms = MetaStore(lib, cfg, FixedClock(NOW + HOUR))
    engine = Engine(ms, watch_drives=False, watch_folders=False)
    assert engine.acquire_lock()
    n = notify.attach(engine)
    assert n is not None
    n.settings = notify.NotifySettings(
        command=n.settings.command, min_severity=Severity.PANIC, settle=0.1, interval=30
    )
    engine.start()
    try:
        # The housekeeping thread finds the stores after start(); a verify request made
        # before that names no connected copy and is dropped (an engine race, not ours).
        deadline = time.monotonic() + 30
        while len(engine.connected) < len(paths) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert len(engine.connected) == len(paths)
        fid = copies_on(paths[3])[0]
        flip_bit(canonical(paths[3], fid))
        engine.request_verify(file_id=fid)
        deadline = time.monotonic() + 30
        while not hook_lines(hook) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [(e["event"], e["code"]) for e in hook_lines(hook)] == [("new", DRIVE_FAILURE)]
        assert all(t.is_alive() for t in engine._threads)
    finally:
        n.close()
        engine.stop()
        lib.close()
