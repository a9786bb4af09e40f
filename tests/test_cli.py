"""The CLI as users and scripts meet it: one-line errors that change nothing, JSON shapes,
exit codes, confirmations, DMEDIA_NOW, help, and the console script itself.

Commands run through the real CLI in-process (tests.integration.harness.Machine: its own
XDG dirs, DMEDIA_DB and DMEDIA_NOW) on a real SQLite library and real FileStores; a few run
as real subprocesses to prove the entry points and that no traceback reaches stderr.
"""

from __future__ import annotations

import json
import os
import pty
import re
import select
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import NOW
from tests.integration.harness import (
    Machine,
    Mounts,
    Result,
    canonical,
    codes,
    flip_bit,
    make_camera_files,
)

REPO = Path(__file__).resolve().parent.parent
HOUR = 3600


# --- fixtures and helpers ----------------------------------------------------------------


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "library.sqlite3"


@pytest.fixture
def machine(tmp_path: Path, db_path: Path) -> Machine:
    return Machine(tmp_path / "machines", "studio", str(db_path), NOW)


def start_library(machine: Machine) -> None:
    """An empty library and this machine's identity (only `store init` creates a library
    from the CLI, and it adds a store)."""
    from dmedia_tui.db import open_library

    open_library(machine.db_url).close()
    machine.ok("store", "list")


def one_line_error(r: Result, code: int = 1, *words: str) -> str:
    """The error contract: exit `code`, one stderr line prefixed dmedia-tui:, no traceback."""
    assert r.exit_code == code, f"exit {r.exit_code} != {code}\nstdout={r.stdout}\n{r.stderr}"
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("dmedia-tui: "), r.stderr
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def snapshot(*roots: Path) -> dict[str, bytes]:
    """Every byte under the roots (the SQLite file, its WAL, store folders, config dirs)."""
    out: dict[str, bytes] = {}
    for root in roots:
        paths = [root] if root.is_file() else sorted(root.rglob("*")) if root.exists() else []
        for p in paths:
            if p.name.endswith("-shm"):  # SQLite's shared-memory index, rewritten by readers
                continue
            out[str(p)] = p.read_bytes() if p.is_file() else b"<dir>"
    return out


def stores(machine: Machine, mounts: Mounts, n: int, size_mb: int = 16) -> list[Path]:
    paths = []
    for i in range(n):
        p = mounts.new(f"store{i}", size_mb)
        machine.init_store(p, f"store{i}", *mounts.same_fs_flag)
        paths.append(p)
    return paths


def jsonl(r: Result) -> list[dict]:
    return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]


# --- errors: one line, non-zero, nothing changed ---------------------------------------------


def test_store_init_errors_are_one_line_and_change_nothing(machine, tmp_path, db_path):
    start_library(machine)
    afile = tmp_path / "afile"
    afile.write_bytes(b"x")
    s1 = tmp_path / "s1"
    s1.mkdir()
    machine.init_store(s1, "s1")
    s2 = tmp_path / "s2"
    s2.mkdir()
    before = snapshot(db_path.parent)
    one_line_error(machine.run("store", "init", str(tmp_path / "nope")), 1, "no such folder")
    one_line_error(machine.run("store", "init", str(afile)), 1, "not a folder")
    # A second store on the same filesystem: refused without --same-filesystem.
    one_line_error(machine.run("store", "init", str(s2)), 1, "same filesystem", "s1")
    assert snapshot(db_path.parent) == before
    assert not (s2 / ".dmedia").exists()
    # With it: created, and the label clash then makes names ambiguous.
    machine.init_store(s2, "s1", "--same-filesystem")
    before = snapshot(db_path.parent, s1, s2)
    for action in ("downgrade", "purge", "ack", "trust"):
        one_line_error(machine.run("store", action, "s1", "--yes"), 1, "2 stores", "store ID")
    assert snapshot(db_path.parent, s1, s2) == before


@pytest.mark.parametrize(
    "args",
    [
        ("store", "downgrade", "nosuch", "--yes"),
        ("store", "purge", "nosuch", "--yes"),
        ("store", "ack", "nosuch"),
        ("store", "trust", "nosuch"),
        ("store", "purge", "nosuch", "--dry-run"),
        ("import", "{file}", "--store", "nosuch"),
        ("verify", "--store", "nosuch"),
        ("events", "--store", "nosuch"),
    ],
)
def test_unknown_store_name(machine, tmp_path, db_path, args):
    s = tmp_path / "s"
    s.mkdir()
    machine.init_store(s, "real")
    f = tmp_path / "f.jpg"
    f.write_bytes(b"jpeg")
    before = snapshot(db_path.parent, s)
    argv = [a.replace("{file}", str(f)) for a in args]
    one_line_error(machine.run(*argv), 1, "unknown store 'nosuch'")
    assert snapshot(db_path.parent, s) == before


def test_events_of_a_purged_store_still_list(machine, tmp_path):
    s = tmp_path / "gone"
    s.mkdir()
    sid = machine.init_store(s, "gone")
    machine.ok("store", "purge", "gone", "--yes")
    for name in (sid, "gone", sid[:6]):
        evs = jsonl(machine.ok("events", "--json", "--store", name))
        assert [e["type"] for e in evs] == ["dmedia/store/purge"], name
        assert evs[0]["store_id"] == sid
    one_line_error(machine.run("events", "--store", "never"), 1, "unknown store")


def bad_libraries(tmp_path: Path) -> dict[str, tuple[str, str]]:
    corrupt = tmp_path / "corrupt.sqlite3"
    corrupt.write_bytes(os.urandom(3) + bytes(range(256)) * 32)
    other = tmp_path / "other.sqlite3"
    with sqlite3.connect(other) as c:
        c.execute("create table photos(name text)")
    c.close()
    return {
        "corrupt": (str(corrupt), "not a database"),
        "foreign": (str(other), "not a dmedia-tui library"),
        "unreadable": ("/proc/nope/x.sqlite3", "/proc/nope/x.sqlite3"),
    }


EVERY_COMMAND = [
    ("status",),
    ("status", "--json"),
    ("store", "list"),
    ("store", "list", "--json"),
    ("store", "init", "{dir}"),
    ("store", "downgrade", "x", "--yes"),
    ("store", "purge", "x", "--dry-run"),
    ("store", "ack", "x"),
    ("store", "trust", "x"),
    ("import", "{file}"),
    ("verify",),
    ("check",),
    ("daemon", "--once"),
    ("events",),
    ("events", "--json"),
]


@pytest.mark.parametrize("kind", ["corrupt", "foreign", "unreadable"])
def test_bad_library_every_command(machine, tmp_path, kind):
    url, words = bad_libraries(tmp_path)[kind]
    d = tmp_path / "d"
    d.mkdir()
    f = tmp_path / "f.jpg"
    f.write_bytes(b"jpeg")
    watched = [tmp_path / "corrupt.sqlite3", tmp_path / "other.sqlite3", d]
    before = snapshot(*watched)
    for args in EVERY_COMMAND:
        argv = ["--db", url, *(a.replace("{dir}", str(d)).replace("{file}", str(f)) for a in args)]
        line = one_line_error(machine.run(*argv), 3, words)
        assert "cannot open library" in line, args
    assert snapshot(*watched) == before
    assert sorted(tmp_path.glob("*.sqlite3*")) == sorted(
        tmp_path / n for n in ("corrupt.sqlite3", "other.sqlite3")
    )


def test_status_exits_3_on_every_failure(machine, db_path):
    """Exit 1 or 2 from status would read as a health verdict: any failure is 3."""
    start_library(machine)
    one_line_error(machine.run("status", "--db", str(db_path.parent / "absent.sqlite3")), 3)
    assert not (db_path.parent / "absent.sqlite3").exists()
    r = Machine.run(machine, "status")  # sanity: the real library is fine
    assert r.exit_code == 0
    toml = machine.config_home / "dmedia-tui" / "config.toml"
    toml.write_text("hostname = \n")
    one_line_error(machine.run("status"), 3, "config.toml")
    toml.write_text('hostname = "studio"\n')
    runner_env = machine.env()
    runner_env["DMEDIA_NOW"] = "abc"
    from click.testing import CliRunner

    from dmedia_tui.cli import cli

    r2 = CliRunner().invoke(cli, ["status"], env=runner_env)
    one_line_error(Result(r2.exit_code, r2.stdout, r2.stderr), 3, "DMEDIA_NOW", "'abc'")


HUNG_COMMANDS = [
    ("status",),
    ("status", "--json"),
    ("store", "init", "{dir}"),
    ("store", "list"),
    ("store", "list", "--json"),
    ("events",),
    ("events", "--json"),
    (),  # the app: it opens the library before it takes the terminal
]


@pytest.mark.parametrize("args", HUNG_COMMANDS, ids=lambda a: " ".join(a) or "app")
def test_a_server_that_never_answers_fails_in_bounded_time(tmp_path, black_hole, monkeypatch, args):
    """A CouchDB that accepts connections and sends nothing: one line, exit 3, within the
    configured timeout (DMEDIA_DB_TIMEOUT here; 30 s by default), never a hang."""
    monkeypatch.setenv("DMEDIA_DB_TIMEOUT", "0.5")
    m = Machine(tmp_path / "machines", "studio", black_hole.url, NOW)
    d = tmp_path / "d"
    d.mkdir()
    start = time.monotonic()
    r = m.run(*(a.replace("{dir}", str(d)) for a in args))
    took = time.monotonic() - start
    one_line_error(r, 3, "cannot use CouchDB at", "timed out")
    assert black_hole.accepted >= 1  # it really connected and waited
    assert took < 10, took
    assert not (d / ".dmedia").exists()


def test_the_database_timeout_comes_from_config_toml(tmp_path, black_hole, monkeypatch):
    monkeypatch.delenv("DMEDIA_DB_TIMEOUT", raising=False)
    m = Machine(tmp_path / "machines", "studio", black_hole.url, NOW)
    (m.config_home / "dmedia-tui" / "config.toml").write_text(
        'hostname = "studio"\n[database]\ntimeout = 0.5\n'
    )
    start = time.monotonic()
    one_line_error(m.run("store", "list"), 3, "timed out")
    assert time.monotonic() - start < 10


@pytest.mark.parametrize(
    "where, value",
    [("env", "soon"), ("env", "0"), ("toml", "-1"), ("toml", "'x'"), ("toml", "nan")],
)
def test_a_bad_database_timeout_is_one_line(machine, monkeypatch, where, value):
    if where == "env":
        monkeypatch.setenv("DMEDIA_DB_TIMEOUT", value)
        words = ("DMEDIA_DB_TIMEOUT", "seconds > 0")
    else:
        (machine.config_home / "dmedia-tui" / "config.toml").write_text(
            f"[database]\ntimeout = {value}\n"
        )
        words = ("[database] timeout", "seconds > 0")
    one_line_error(machine.run("store", "list"), 1, *words)
    one_line_error(machine.run("status"), 3, *words)


@pytest.mark.parametrize(
    "toml, words",
    [
        ("hostname = \n", ("config.toml", "line 1")),
        ("[thresholds]\nbogus = 3\n", ("unknown threshold 'bogus'",)),
        ("[thresholds]\ntarget_copies = 'x'\n", ("target_copies",)),
        ("thresholds = 3\n", ("[thresholds] must be a table",)),
        (b"\xff\xfe = 1\n", ("config.toml",)),
        ("db = 5\n", ("db must be a string",)),
    ],
    ids=["syntax", "unknown-threshold", "bad-value", "not-a-table", "not-utf8", "db-type"],
)
def test_bad_config_toml(machine, db_path, toml, words):
    start_library(machine)
    path = machine.config_home / "dmedia-tui" / "config.toml"
    if isinstance(toml, bytes):
        path.write_bytes(toml)
    else:
        path.write_text(toml)
    before = snapshot(db_path.parent, machine.config_home)
    for args in (("store", "list"), ("events",), ("check",), ("store", "trust", "x")):
        one_line_error(machine.run(*args), 1, *words)
    one_line_error(machine.run("status"), 3, *words)
    assert snapshot(db_path.parent, machine.config_home) == before


def test_dmedia_now_garbage_every_command(machine, db_path):
    start_library(machine)
    before = snapshot(db_path.parent)
    for args in (("store", "list"), ("events",), ("check",), ("verify",), ("daemon", "--once")):
        one_line_error(_run_now(machine, "abc", args), 1, "DMEDIA_NOW must be unix seconds")
    assert snapshot(db_path.parent) == before


def _run_now(machine: Machine, now: str, args: tuple[str, ...]) -> Result:
    from click.testing import CliRunner

    from dmedia_tui.cli import cli

    env = {**machine.env(), "DMEDIA_NOW": now}
    r = CliRunner().invoke(cli, list(args), env=env)
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return Result(r.exit_code, r.stdout, r.stderr)


def test_bad_arguments(machine, tmp_path, db_path):
    s = tmp_path / "s"
    s.mkdir()
    machine.init_store(s, "s")
    before = snapshot(db_path.parent, s)
    r = machine.run("status", "--bogus")
    assert r.exit_code == 2 and "No such option" in r.stderr and "Traceback" not in r.stderr
    r = machine.run("nosuchcommand")
    assert r.exit_code == 2 and "Traceback" not in r.stderr
    one_line_error(machine.run("import", str(tmp_path / "missing.mov")), 1, "no such file")
    one_line_error(machine.run("events", "--type", "bogus"), 1, "unknown event type 'bogus'")
    one_line_error(machine.run("events", "--since", "garbage"), 1, "--since", "'garbage'")
    assert snapshot(db_path.parent, s) == before


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a small tmpfs")
def test_full_disk_during_import(machine, mounts, tmp_path, db_path):
    small = mounts.new("small", size_mb=1)
    if not mounts.real:
        pytest.skip("cannot mount tmpfs here")
    sid = machine.init_store(small, "small")
    big = tmp_path / "big.mov"
    big.write_bytes(os.urandom(3 * 1024 * 1024))
    for args in (("--json",), ()):
        r = machine.run("import", str(big), *args)
        line = one_line_error(r, 1, "No space left on device", str(big))
        assert "Traceback" not in line
        if args:
            assert r.json()["errors"] == [line.removeprefix("dmedia-tui: ")]
            assert r.json()["new"] == 0 and r.json()["file_ids"] == []
        leftovers = [p for d in ("files", "tmp") for p in (small / ".dmedia" / d).rglob("*")]
        assert [p for p in leftovers if p.is_file()] == []
    _, st = machine.status()
    assert st["files"] == 0
    assert all(s["files"] == 0 for s in st["stores"] if s["_id"] == sid)


# --- JSON shapes ------------------------------------------------------------------------------


def test_json_outputs_have_the_documented_shape(machine, mounts, tmp_path):
    paths = stores(machine, mounts, 3)
    r = machine.ok("store", "init", str(paths[0]), "--json").json()
    assert r["created"] is False and r["path"] == str(paths[0])
    assert r["store"]["label"] == "store0" and r["store"]["time"] == NOW
    rows = machine.ok("store", "list", "--json").json()
    assert sorted(row["label"] for row in rows) == ["store0", "store1", "store2"]
    assert {row["path"] for row in rows} == {str(p) for p in paths}
    assert all({"_id", "label", "state", "online", "copies"} <= set(row) for row in rows)

    files = make_camera_files(tmp_path / "DCIM", 5, max_kb=40)
    (tmp_path / "DCIM" / "empty.txt").write_bytes(b"")
    imp = machine.ok("import", str(tmp_path / "DCIM"), "--store", "store0", "--json").json()
    assert imp["files"] == 5 and imp["new"] == 5 and imp["duplicates"] == 0
    assert imp["empty"] == 1 and imp["errors"] == []
    assert imp["bytes"] == sum(f.stat().st_size for f in files)
    assert len(imp["file_ids"]) == 5 and all(len(i) == 48 for i in imp["file_ids"])
    assert imp["store_id"] == next(row["_id"] for row in rows if row["label"] == "store0")

    code, st = machine.status()
    assert {"alerts", "histogram", "stores", "files", "bytes"} <= set(st)
    assert st["files"] == 5 and st["bytes"] == imp["bytes"] and st["time"] == NOW
    assert st["histogram"] == {"0": 0, "1": 5, "2": 0, "3": 0}
    for a in st["alerts"]:
        assert set(a) >= {"code", "severity", "message", "action", "store_ids", "files", "bytes"}
    assert "LOW_DURABILITY" in codes(st)

    once = machine.once(now=NOW + 60)
    assert set(once) >= {"verified", "corrupt", "missing", "unreadable", "copies", "purged"}
    assert once["copies"] > 0 and once["corrupt"] == 0
    assert machine.status()[1]["histogram"]["3"] == 5
    v = machine.ok("verify", "--all", "--json", now=NOW + 120).json()
    assert set(v) >= {"verified", "corrupt", "missing", "unreadable"}
    assert v["verified"] == 15 and v["corrupt"] == 0
    chk = machine.ok("check", "--json").json()
    assert set(chk) >= {"docs", "invalid", "inconsistent", "logged"} and chk["invalid"] == 0


def test_events_json_lines_since_type_limit_and_now(machine, tmp_path):
    paths = [tmp_path / n for n in ("a", "b", "c")]
    for p in paths:
        p.mkdir()
    ids = [machine.init_store(p, p.name, "--same-filesystem") for p in paths]
    f = tmp_path / "clip.mov"
    f.write_bytes(os.urandom(5000))
    fid = machine.ok("import", str(f), "--store", "a", "--json").json()["file_ids"][0]
    machine.ok("store", "downgrade", "b", "--yes", now=NOW + 1 * HOUR)
    machine.ok("store", "trust", "b", "--yes", now=NOW + 2 * HOUR)
    flip_bit(canonical(paths[0], fid))
    r = machine.run("verify", "--all", "--json", now=NOW + 3 * HOUR)
    assert r.exit_code == 2 and r.json()["corrupt"] == 1
    machine.ok("store", "ack", "a", now=NOW + 4 * HOUR)
    machine.ok("store", "purge", "c", "--yes", now=NOW + 5 * HOUR)

    at = NOW + 6 * HOUR
    evs = jsonl(machine.ok("events", "--json", now=at))
    times = [e["time"] for e in evs]
    assert times == sorted(times)  # oldest first
    by_type: dict[str, dict] = {}
    for e in evs:  # the first of each type
        by_type.setdefault(e["type"].removeprefix("dmedia/"), e)
    assert by_type["store/downgrade"]["time"] == NOW + 1 * HOUR  # DMEDIA_NOW honoured
    assert by_type["store/trust"]["time"] == NOW + 2 * HOUR
    assert by_type["file/corrupt"]["time"] == NOW + 3 * HOUR
    assert by_type["file/corrupt"]["file_id"] == fid
    assert by_type["store/failing"]["time"] == NOW + 3 * HOUR
    assert by_type["store/ack"]["time"] == NOW + 4 * HOUR
    assert by_type["store/purge"]["time"] == NOW + 5 * HOUR
    assert by_type["store/purge"]["store_id"] == ids[2]

    recent = jsonl(machine.ok("events", "--json", "--since", "1.5h", now=at))
    assert recent and all(e["time"] >= at - 1.5 * HOUR for e in recent)
    assert [e["type"] for e in recent][-1] == "dmedia/store/purge"
    assert len(recent) < len(evs)
    iso = jsonl(machine.ok("events", "--json", "--since", "2026-11-25T16:30:00", now=at))
    assert iso == jsonl(machine.ok("events", "--json", "--since", str(NOW + 4.5 * HOUR), now=at))
    assert [e["type"] for e in iso] == ["dmedia/store/purge"]
    corrupt = jsonl(machine.ok("events", "--json", "--type", "file/corrupt"))
    assert [e["file_id"] for e in corrupt] == [fid]
    both = jsonl(
        machine.ok("events", "--json", "--type", "dmedia/store/ack", "--type", "store/trust")
    )
    assert [e["type"] for e in both] == ["dmedia/store/trust", "dmedia/store/ack"]
    last2 = jsonl(machine.ok("events", "--json", "--limit", "2"))
    assert last2 == evs[-2:]
    text = machine.ok("events", "--type", "store/purge").stdout
    assert "2026-11-25 17:00:00" in text and "store/purge" in text  # NOW + 5 h in UTC
    r = machine.run("events", "--limit", "0")
    assert r.exit_code == 2 and "Traceback" not in r.stderr


# --- status exit codes --------------------------------------------------------------------------


def test_status_exit_codes_healthy_low_panic(machine, mounts, tmp_path):
    paths = stores(machine, mounts, 3)
    make_camera_files(tmp_path / "DCIM", 4, max_kb=30)
    fids = machine.ok("import", str(tmp_path / "DCIM"), "--store", "store0", "--json").json()[
        "file_ids"
    ]
    code, st = machine.status()
    assert code == 1 and "LOW_DURABILITY" in codes(st)
    if mounts.real:
        assert codes(st) == {"LOW_DURABILITY"}
    machine.once()
    code, st = machine.status()
    assert st["histogram"]["3"] == 4
    if mounts.real:  # separate filesystems: nothing to warn about
        assert (code, st["alerts"]) == (0, [])
        assert "OK: every user file" in machine.run("status").stdout
    flip_bit(canonical(paths[1], fids[0]))
    r = machine.run("verify", "--store", "store1", "--all")
    assert r.exit_code == 2 and "corrupt 1" in r.stdout
    code, st = machine.status()
    assert code == 2 and "DRIVE_FAILURE" in codes(st)
    text = machine.run("status")
    assert text.exit_code == 2 and "DRIVE_FAILURE" in text.stdout


# --- confirmations ------------------------------------------------------------------------------


def test_purge_and_downgrade_need_yes_off_a_terminal(machine, tmp_path, db_path):
    s = tmp_path / "s"
    s.mkdir()
    machine.init_store(s, "s")
    make_camera_files(tmp_path / "DCIM", 3, max_kb=10)
    machine.ok("import", str(tmp_path / "DCIM"))
    before = snapshot(db_path.parent, s, machine.config_home)
    for action in ("purge", "downgrade"):
        r = machine.run("store", action, "s", input="y\n")
        assert r.exit_code == 1 and "Traceback" not in r.stderr
        assert "refusing without --yes" in r.stderr and "3 files" in r.stderr
        dry = machine.ok("store", action, "s", "--dry-run")
        assert "3 files" in dry.stdout and "durability lost: 3" in dry.stdout
    purge_dry = machine.ok("store", "purge", "s", "--dry-run").stdout
    assert "3 user files have no other known copy" in purge_dry
    assert snapshot(db_path.parent, s, machine.config_home) == before
    assert machine.ok("store", "downgrade", "s", "-y").stdout.startswith("downgrade: s (")
    _, st = machine.status()
    assert st["histogram"]["0"] == 3


def _pty_run(argv: list[str], env: dict[str, str], answer: bytes) -> tuple[int, str]:
    """Run argv on a pseudo-terminal, answer the first prompt, return (exit, output)."""
    pid, fd = pty.fork()
    if pid == 0:  # pragma: no cover - the child
        os.environ.update(env)
        os.execv(argv[0], argv)
    out = b""
    answered = False
    while True:
        ready, _, _ = select.select([fd], [], [], 20)
        if not ready:
            os.kill(pid, 9)
            break
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
        if not answered and b"Proceed?" in out:
            os.write(fd, answer)
            answered = True
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status), out.decode(errors="replace")


def test_interactive_confirm_defaults_to_no(machine, tmp_path, db_path):
    s = tmp_path / "s"
    s.mkdir()
    machine.init_store(s, "s")
    make_camera_files(tmp_path / "DCIM", 2, max_kb=10)
    machine.ok("import", str(tmp_path / "DCIM"))
    before = snapshot(db_path.parent, s, machine.config_home)
    env = {**machine.env(), "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "dmedia_tui", "store", "purge", "s"]
    code, out = _pty_run(argv, env, b"\r")  # just Enter: the default
    assert code == 1 and "Proceed? [y/N]" in out and "nothing changed" in out, out
    assert "Traceback" not in out
    assert snapshot(db_path.parent, s, machine.config_home) == before
    code, out = _pty_run(argv, env, b"y\r")
    assert code == 0 and "purge: s (" in out, out
    assert machine.ok("store", "list", "--json").json() == []


def test_a_store_wide_action_shows_a_bar_on_a_terminal(machine, tmp_path):
    """Downgrade and purge go through every file on the store (most of a minute at a
    million files): on a terminal they draw a bar on stderr; off one, no bar."""
    s = tmp_path / "s"
    s.mkdir()
    machine.init_store(s, "s")
    make_camera_files(tmp_path / "DCIM", 3, max_kb=10)
    machine.ok("import", str(tmp_path / "DCIM"))
    env = {**machine.env(), "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "dmedia_tui", "store", "downgrade", "s", "--yes"]
    code, out = _pty_run(argv, env, b"")
    assert code == 0 and "downgrade: s (" in out, out
    lines = re.sub(r"\x1b\[\?25[lh]", "", out).replace("\r", "\n").splitlines()
    bar = [ln for ln in lines if ln.startswith("downgrade s ")]
    assert bar and bar[-1].rstrip().endswith("100%"), out  # ended before the event's line
    assert any(ln.startswith("WARNING dmedia_tui: dmedia/store/downgrade") for ln in lines)
    r = machine.ok("store", "purge", "s", "--yes")  # not a terminal
    assert r.stdout.startswith("purge: s (") and "%" not in r.stdout + r.stderr


def test_trust_asks_first_like_downgrade_and_purge(machine, tmp_path, db_path):
    """Trusting a store again lets new copies go to it: on a terminal it shows what
    changes and defaults to No; off a terminal it needs --yes."""
    s = tmp_path / "s"
    s.mkdir()
    machine.init_store(s, "s")
    make_camera_files(tmp_path / "DCIM", 2, max_kb=10)
    machine.ok("import", str(tmp_path / "DCIM"))
    machine.ok("store", "downgrade", "s", "--yes")
    before = snapshot(db_path.parent, s, machine.config_home)
    r = machine.run("store", "trust", "s")
    assert r.exit_code == 1 and "Traceback" not in r.stderr
    assert "refusing without --yes" in r.stderr and "2 files" in r.stderr
    env = {**machine.env(), "PYTHONPATH": str(REPO)}
    argv = [sys.executable, "-m", "dmedia_tui", "store", "trust", "s"]
    code, out = _pty_run(argv, env, b"\r")  # just Enter: the default
    assert code == 1 and "Proceed? [y/N]" in out and "nothing changed" in out, out
    assert "trust s: 2 files would allow new copies again" in out
    assert snapshot(db_path.parent, s, machine.config_home) == before
    code, out = _pty_run(argv, env, b"y\r")
    assert code == 0 and "trust: s (" in out, out
    assert not machine.ok("store", "list", "--json").json()[0].get("downgraded")


# --- help, version, the console script ---------------------------------------------------------


def _all_commands() -> list[list[str]]:
    from dmedia_tui.cli import cli

    out = [[]]
    for name, cmd in cli.commands.items():
        out.append([name])
        for sub in getattr(cmd, "commands", {}):
            out.append([name, sub])
    return out


def test_help_for_every_command(machine):
    cmds = _all_commands()
    assert ["store", "purge"] in cmds and ["events"] in cmds and len(cmds) >= 14
    for cmd in cmds:
        for flag in ("--help", "-h"):
            r = machine.run(*cmd, flag)
            assert r.exit_code == 0, (cmd, r.stderr)
            assert r.stdout.startswith("Usage: ") and r.stderr == "", cmd
    r = machine.ok("--version")
    assert r.stdout.strip() == "dmedia-tui, version " + __import__("dmedia_tui").__version__


def _subprocess_env(machine: Machine) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DMEDIA_", "XDG_"))}
    return {**env, **machine.env(), "PYTHONPATH": str(REPO)}


def test_real_processes_entry_points_and_no_traceback(machine, tmp_path):
    start_library(machine)
    env = _subprocess_env(machine)
    script = Path(sys.executable).with_name("dmedia-tui")
    for argv in ([sys.executable, "-m", "dmedia_tui"], [str(script)]):
        r = subprocess.run([*argv, "--version"], env=env, capture_output=True, text=True)
        assert r.returncode == 0 and r.stdout.startswith("dmedia-tui, version"), r.stderr
    url, _ = bad_libraries(tmp_path)["corrupt"]
    base = [sys.executable, "-m", "dmedia_tui", "--db", url]
    for args, code in (([], 3), (["status"], 3), (["store", "list"], 3), (["events"], 3)):
        r = subprocess.run([*base, *args], env=env, capture_output=True, text=True)
        assert r.returncode == code, (args, r.stderr)
        assert r.stderr.count("\n") == 1 and r.stderr.startswith("dmedia-tui: "), r.stderr
        assert r.stdout == ""
    env_bad = {**env, "DMEDIA_NOW": "soon"}
    r = subprocess.run([*argv, "status"], env=env_bad, capture_output=True, text=True)
    assert (
        r.returncode == 3
        and r.stderr == "dmedia-tui: DMEDIA_NOW must be unix seconds, got 'soon'\n"
    )


def _cli_in_a_process(machine: Machine, args: list[str], report: str) -> list[str]:
    """Run the CLI through its console entry point in a fresh process, then print
    `report` (a Python expression; `gc` and `sys` are imported) as the last line. The
    command must exit 0; returns stdout's lines."""
    probe = (
        "import gc, sys\n"
        f"sys.argv = ['dmedia-tui', *{args!r}]\n"
        "from dmedia_tui.__main__ import run\n"
        "try:\n    run()\n"
        "except SystemExit as e:\n    assert not e.code, e.code\n"
        f"print({report})"
    )
    r = subprocess.run(
        [sys.executable, "-c", probe], env=_subprocess_env(machine), capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def test_single_machine_daemon_once_never_loads_the_peer_server(machine, tmp_path):
    """A library with one machine opens no port, so `daemon --once` (cron's job) must not
    pay for aiohttp either: ~0.3 s of every run's start-up when it imported the server."""
    start_library(machine)
    (tmp_path / "store").mkdir()
    machine.ok("store", "init", str(tmp_path / "store"), "--same-filesystem")
    out = _cli_in_a_process(machine, ["daemon", "--once"], "'aiohttp' in sys.modules")
    assert out[-1] == "False", out


def test_an_import_starts_without_what_it_does_not_use(machine, tmp_path):
    """The console entry point imports the CLI with the collector off and freezes what
    the imports made (__main__.py), and an import never loads the health policy or the
    liveness judge: each was ms of every start."""
    start_library(machine)
    (tmp_path / "store").mkdir()
    machine.ok("store", "init", str(tmp_path / "store"), "--same-filesystem")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "a.jpg").write_bytes(b"a photo" * 1000)
    lazy = ("dmedia_tui.health", "dmedia_tui.liveness")
    out = _cli_in_a_process(
        machine,
        ["import", str(tmp_path / "src")],
        "gc.isenabled(), gc.get_freeze_count() > 10_000,"
        f" [m for m in {lazy!r} if m in sys.modules]",
    )
    assert "1 new" in out[0], out
    assert out[-1] == "True True []", out


@pytest.mark.skipif(shutil.which("uv") is None, reason="uv not installed")
def test_uv_run_console_script(machine):
    """The README's `uv run dmedia-tui ...` (no PYTHONPATH: the installed package only)."""
    start_library(machine)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DMEDIA_", "XDG_"))}
    env.update(machine.env())
    env["UV_OFFLINE"] = "1"
    env["UV_NO_SYNC"] = "1"
    r = subprocess.run(
        ["uv", "run", "--no-sync", "dmedia-tui", "status", "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
    )
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == 0 and json.loads(r.stdout)["files"] == 0


def test_import_refuses_a_store_flagged_after_corrupt_data(machine, tmp_path, db_path):
    s = tmp_path / "s"
    s.mkdir()
    machine.init_store(s, "s")
    a = tmp_path / "a.bin"
    a.write_bytes(os.urandom(2000))
    fid = machine.ok("import", str(a), "--json").json()["file_ids"][0]
    flip_bit(canonical(s, fid))
    assert machine.run("verify", "--all").exit_code == 2
    b = tmp_path / "b.bin"
    b.write_bytes(os.urandom(2000))
    before = snapshot(db_path.parent, s)
    one_line_error(machine.run("import", str(b), "--store", "s"), 1, "no new copies", "trust s")
    one_line_error(machine.run("import", str(b)), 1, "no connected store takes new copies", "s:")
    assert snapshot(db_path.parent, s) == before
    machine.ok("store", "trust", "s", "--yes")
    assert machine.ok("import", str(b), "--json").json()["new"] == 1


def test_status_of_a_library_that_does_not_exist_yet_says_how_to_start(machine, db_path):
    r = machine.run("status")
    one_line_error(r, 3, "no such file", "dmedia-tui store init PATH")
    assert not db_path.exists()  # status never creates a library
    for args in (("store", "list"), ("check",), ("events",), ("verify",), ("daemon", "--once")):
        one_line_error(machine.run(*args), 3, "no such file", "dmedia-tui store init PATH")
        assert not db_path.exists()  # nor does any command but store init
    start_library(machine)
    r = machine.run("status")
    assert r.exit_code == 0 and "no stores yet" in r.stdout
