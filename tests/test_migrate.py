"""`dmedia-tui migrate --to URL`: an embedded library moves to CouchDB without losing history.

Real SQLite library built through the CLI (stores, imports, copies, a corrupt copy found),
migrated into a real PouchDB Server; then the two libraries must tell the same story.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from dmedia_tui.db import open_library
from dmedia_tui.migrate import MigrateError, migrate
from tests.conftest import NOW
from tests.integration.harness import Machine, Mounts, canonical, flip_bit, make_camera_files


def _no_rev(docs: list[dict]) -> list[dict]:
    return [{k: v for k, v in d.items() if k != "_rev"} for d in docs]


@pytest.fixture
def sqlite_machine(tmp_path: Path, mounts: Mounts) -> Machine:
    """A lived-in SQLite library: 3 stores, 10 files settled at 3 copies, one corrupt copy."""
    m = Machine(tmp_path / "machines", "studio", str(tmp_path / "library.sqlite3"), NOW)
    paths = []
    for i in range(3):
        p = mounts.new(f"store{i}")
        m.init_store(p, f"store{i}", *mounts.same_fs_flag)
        paths.append(p)
    make_camera_files(tmp_path / "DCIM", 10, max_kb=64)
    ids = m.ok("import", str(tmp_path / "DCIM"), "--store", "store0", "--json").json()["file_ids"]
    m.once()
    flip_bit(canonical(paths[1], ids[0]))
    assert m.run("verify", "--all", "--store", "store1", now=NOW + 60).exit_code == 2
    m.now = NOW + 120
    return m


def _counts(url: str) -> tuple[int, int]:
    lib = open_library(url, create=False)
    try:
        return lib.docs.count(), lib.log.count()
    finally:
        lib.close()


def test_migrate_sqlite_to_couch_keeps_status_and_history(sqlite_machine, couch_server):
    m = sqlite_machine
    url = couch_server.fresh_url()
    docs, logs = _counts(m.db_url)
    assert logs >= 2  # the corrupt copy and the store downgrade were logged
    r = m.ok("migrate", "--to", url, "--json").json()
    assert r["copied"] == docs + logs and r["differing"] == 0 and r["failed"] == 0
    assert r["databases"]["dmedia-1"]["copied"] == docs
    assert r["databases"]["log-1"]["copied"] == logs
    assert _counts(url) == (docs, logs)

    # The same machine, now pointed at CouchDB, sees exactly the same library.
    on_couch = Machine(m.config_home.parent.parent, m.name, url, m.now)
    code_sql, st_sql = m.status()
    code_couch, st_couch = on_couch.status()
    assert code_couch == code_sql == 2  # the failing drive is a panic
    assert st_couch == st_sql
    assert {a["code"] for a in st_couch["alerts"]} >= {"DRIVE_FAILURE"}
    assert _no_rev(on_couch.events()) == _no_rev(m.events())
    assert len(on_couch.events("file/corrupt")) == 1

    # Idempotent: the second run copies nothing.
    again = m.ok("migrate", "--to", url, "--json").json()
    assert again["copied"] == 0
    assert again["databases"]["dmedia-1"]["same"] == docs
    assert again["databases"]["log-1"]["same"] == logs

    # And the library works on CouchDB: the daemon settles it as it would have on SQLite.
    assert on_couch.once()["corrupt"] == 0
    assert on_couch.status()[1]["histogram"] == st_sql["histogram"]


def test_migrate_is_resumable_after_an_interruption(sqlite_machine, couch_server):
    url = couch_server.fresh_url()
    source = open_library(sqlite_machine.db_url, create=False)
    target = open_library(url)
    batches = []

    def cut(db: str, n: int) -> None:
        batches.append((db, n))
        if len(batches) == 2:
            raise KeyboardInterrupt  # Ctrl-C after two batches were saved

    try:
        with pytest.raises(KeyboardInterrupt):
            migrate(source, target, batch=4, progress=cut)
        partial = target.docs.count()
        assert 0 < partial < source.docs.count() and target.log.count() == 0
        report = migrate(source, target, batch=4)
        assert report.dbs[0].same == 8 and report.dbs[0].copied == source.docs.count() - 8
        assert target.docs.count() == source.docs.count()
        assert target.log.count() == source.log.count()
        assert _no_rev(list(target.docs.iter_docs())) == _no_rev(list(source.docs.iter_docs()))
        assert _no_rev(list(target.log.iter_docs())) == _no_rev(list(source.log.iter_docs()))
    finally:
        source.close()
        target.close()


def test_differing_docs_are_kept_unless_overwrite(sqlite_machine, couch_server):
    m = sqlite_machine
    url = couch_server.fresh_url()
    m.ok("migrate", "--to", url)
    lib = open_library(url)
    try:
        store = lib.stores()[0]
        lib.docs.save({**store, "label": "renamed-on-couch"})
    finally:
        lib.close()
    r = m.run("migrate", "--to", url, "--json")
    assert r.exit_code == 1
    assert r.json()["differing"] == 1 and r.json()["copied"] == 0
    assert "--overwrite" in r.stderr and store["_id"] in r.stderr
    assert "Traceback" not in r.stderr
    lib = open_library(url)
    try:
        assert lib.docs.get(store["_id"])["label"] == "renamed-on-couch"  # kept
    finally:
        lib.close()
    r = m.ok("migrate", "--to", url, "--overwrite", "--json").json()
    assert r["databases"]["dmedia-1"]["overwritten"] == 1 and r["differing"] == 0
    lib = open_library(url)
    try:
        assert lib.docs.get(store["_id"])["label"] == store["label"]
    finally:
        lib.close()


def test_migrate_text_output_and_same_library_refused(sqlite_machine, couch_server):
    m = sqlite_machine
    url = couch_server.fresh_url()
    r = m.ok("migrate", "--to", url)
    assert r.stdout.startswith("migrated ") and "log-1:" in r.stdout and "copied" in r.stdout
    same = m.run("migrate", "--to", m.db_url)
    assert same.exit_code == 1
    assert same.stderr.count("\n") == 1 and "same library" in same.stderr


def test_migrate_api_refuses_the_same_library(tmp_path: Path):
    lib = open_library(str(tmp_path / "a.sqlite3"))
    try:
        with pytest.raises(MigrateError):
            migrate(lib, lib)
    finally:
        lib.close()


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # closed again when this returns: nobody listens


def test_unreachable_server_status_exit_3_one_line_password_masked(tmp_path: Path):
    url = f"http://admin:s3cret-pw@127.0.0.1:{_closed_port()}/?prefix=lib-"
    m = Machine(tmp_path / "machines", "studio", url, NOW)
    r = m.run("status", "--json")
    assert r.exit_code == 3
    assert r.stdout == ""
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("dmedia-tui: ")
    assert "connection refused" in r.stderr and "***" in r.stderr
    assert "s3cret-pw" not in r.stderr and "Traceback" not in r.stderr


def test_migrate_to_unreachable_server_is_one_line(tmp_path: Path, sqlite_machine):
    url = f"http://admin:s3cret-pw@127.0.0.1:{_closed_port()}/"
    r = sqlite_machine.run("migrate", "--to", url)
    assert r.exit_code == 1
    warning, error = r.stderr.splitlines()  # the password on the command line is warned about
    assert warning.startswith("dmedia-tui: warning: the password in --to is visible")
    assert error.startswith("dmedia-tui: target: ")
    assert "s3cret-pw" not in r.stderr and "Traceback" not in r.stderr
