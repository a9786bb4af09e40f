"""What only the SQLite backend promises: the file itself, other processes, bad files."""

from __future__ import annotations

import multiprocessing
import os
import sqlite3
import stat
import threading
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmedia_tui import durability
from dmedia_tui.db import DatabaseOffline, VerificationStats, open_library
from dmedia_tui.db.sqlite import (
    APPLICATION_ID,
    PAGE_SIZE,
    SCHEMA_VERSION,
    SQLiteLibrary,
    _file_row,
)
from dmedia_tui.protocol import random_id

# --- the file --------------------------------------------------------------------------


def test_new_library_file_is_private_in_a_new_folder(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "library.sqlite3"
    lib = SQLiteLibrary(path)
    try:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
        lib.docs.save({"_id": random_id(), "type": "dmedia/store"})
        wal = Path(f"{path}-wal")
        assert wal.exists()  # SQLite gives its side files the mode of the database
        assert stat.S_IMODE(wal.stat().st_mode) == 0o600
        assert lib.display_url == str(path)
        assert os.path.isabs(lib.display_url)
    finally:
        lib.close()


def test_relative_path_is_shown_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    lib = SQLiteLibrary("lib.sqlite3")
    lib.close()
    assert lib.display_url == str(tmp_path / "lib.sqlite3")


def test_wal_mode_application_id_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "library.sqlite3"
    SQLiteLibrary(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("PRAGMA application_id").fetchone()[0] == APPLICATION_ID
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    finally:
        conn.close()


def test_a_new_library_has_big_pages_and_an_old_one_keeps_its_own(tmp_path: Path) -> None:
    """New libraries get PAGE_SIZE pages; a library made with 4 KiB pages (every one made
    before) opens, is written and keeps them: nothing rewrites a user's file to change it."""
    new = tmp_path / "new.sqlite3"
    SQLiteLibrary(new).close()
    old = tmp_path / "old.sqlite3"
    lib = SQLiteLibrary(old)
    lib.close()
    conn = sqlite3.connect(old)
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("PRAGMA page_size = 4096")
    conn.execute("VACUUM")  # as a library made with 4 KiB pages
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()

    def page_size(path: Path) -> int:
        c = sqlite3.connect(path)
        try:
            return int(c.execute("PRAGMA page_size").fetchone()[0])
        finally:
            c.close()

    assert PAGE_SIZE == 16384 and page_size(new) == PAGE_SIZE
    assert page_size(old) == 4096
    lib = SQLiteLibrary(old, create=False)
    doc = lib.docs.save({"_id": random_id(), "type": "dmedia/store", "x_k": [1]})
    lib.close()
    again = SQLiteLibrary(old, create=False)
    try:
        assert again.docs.get(doc["_id"]) == doc
    finally:
        again.close()
    assert page_size(old) == 4096


def test_data_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "library.sqlite3"
    lib = SQLiteLibrary(path)
    doc = lib.docs.save({"_id": random_id(), "type": "dmedia/store", "x_k": [1]})
    seq = lib.docs.update_seq()
    lib.close()
    again = SQLiteLibrary(path, create=False)
    try:
        assert again.docs.get(doc["_id"]) == doc
        assert again.docs.update_seq() == seq
    finally:
        again.close()


def as_schema_3(conn: sqlite3.Connection) -> None:
    """What the changes feed of a schema-3 file looks like: an index on doc (db, seq)."""
    conn.execute("DROP TABLE change")
    conn.execute("DROP TABLE change_gone")
    conn.execute("CREATE UNIQUE INDEX doc_seq ON doc (db, seq)")


def test_a_schema_1_library_is_migrated(tmp_path: Path) -> None:
    path = tmp_path / "library.sqlite3"
    store = random_id()
    lib = SQLiteLibrary(path)
    lib.docs.save_many(
        [
            {"_id": random_id(30), "type": "dmedia/file", "bytes": 1, "stored": {store: v}}
            for v in ({"copies": 1}, {"copies": 1, "verified": 5}, {"copies": 0, "verified": 9})
        ]
    )
    lib.close()
    conn = sqlite3.connect(path)
    as_schema_3(conn)
    conn.execute("DROP TABLE store_sum")  # what a schema-1 file looks like
    conn.execute("DROP TABLE verify_hour")
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    lib = SQLiteLibrary(path, create=False)
    try:
        assert lib.verification_stats(store) == VerificationStats(3, 1, 5, 5, 9)
    finally:
        lib.close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 4
    assert conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("4",)
    conn.close()


def verify_hours(path: Path) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """verify_hour's rows, and what they must be: copies per (store, hour verified)."""
    conn = sqlite3.connect(path)
    try:
        got = conn.execute("SELECT * FROM verify_hour ORDER BY 1, 2").fetchall()
        want = conn.execute(
            "SELECT store_id, verified / 3600, count(*) FROM copy WHERE verified IS NOT NULL"
            " GROUP BY 1, 2 ORDER BY 1, 2"
        ).fetchall()
    finally:
        conn.close()
    return got, want


def test_a_schema_2_library_gets_its_verification_hours(tmp_path: Path) -> None:
    """The migration fills verify_hour from the copies, so the median is right at once."""
    import random

    rng = random.Random(2)
    path = tmp_path / "library.sqlite3"
    stores = [random_id() for _ in range(3)]
    lib = SQLiteLibrary(path)
    docs = []
    for _ in range(300):
        stored: dict[str, Any] = {}
        for s in rng.sample(stores, rng.randint(1, 3)):
            e: dict[str, Any] = {"copies": 1, "mtime": 1}
            if rng.random() < 0.8:
                e["verified"] = 1_795_608_000 - rng.choice([0, 60, 3600, 86400]) * rng.randint(0, 9)
            stored[s] = e
        docs.append({"_id": random_id(30), "type": "dmedia/file", "bytes": 1, "stored": stored})
    lib.docs.save_many(docs)
    before = [lib.verification_stats(s) for s in stores]
    lib.close()
    got, want = verify_hours(path)
    assert got == want and len(got) > 10
    conn = sqlite3.connect(path)
    as_schema_3(conn)
    conn.execute("DROP TABLE verify_hour")  # what a schema-2 file looks like
    conn.execute("UPDATE meta SET value='2' WHERE key='schema_version'")
    conn.execute("PRAGMA user_version = 2")
    conn.commit()
    conn.close()
    lib = SQLiteLibrary(path, create=False)
    try:
        assert [lib.verification_stats(s) for s in stores] == before
        lib.docs.save(docs[0] | {"stored": {stores[0]: {"copies": 1, "mtime": 1, "verified": 7}}})
    finally:
        lib.close()
    got, want = verify_hours(path)
    assert got == want
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
    conn.close()


def test_a_schema_3_library_gets_its_change_log(tmp_path: Path) -> None:
    """The migration fills the change log from the docs' seqs and drops the seq index:
    the feed is the same before and after, from the start and from any seq, deleted docs
    included, and writes after it extend it."""
    path = tmp_path / "library.sqlite3"
    lib = SQLiteLibrary(path)
    docs = lib.docs.save_many([{"_id": random_id(), "type": "dmedia/store"} for _ in range(9)])
    docs = [d for d in docs if isinstance(d, dict)]
    lib.docs.save(docs[4] | {"label": "again"})  # seq order is no longer save order
    lib.docs.delete(lib.docs.get(docs[1]["_id"]))
    lib.log.save({"_id": random_id(), "type": "dmedia/event"})
    feeds = [lib.docs.changes(s) for s in (None, "3", "9")] + [lib.log.changes()]
    lib.close()
    conn = sqlite3.connect(path)
    as_schema_3(conn)
    conn.execute("UPDATE meta SET value='3' WHERE key='schema_version'")
    conn.execute("PRAGMA user_version = 3")
    conn.commit()
    conn.close()
    lib = SQLiteLibrary(path, create=False)
    try:
        assert [lib.docs.changes(s) for s in (None, "3", "9")] + [lib.log.changes()] == feeds
        assert [c.id for c in feeds[0].results if c.deleted] == [docs[1]["_id"]]
        lib.docs.save(lib.docs.get(docs[0]["_id"]) | {"label": "later"})
        feed = lib.docs.changes()
        assert [c.id for c in feed.results][-1] == docs[0]["_id"]
        assert len({c.id for c in feed.results}) == len(feed.results) == 9
    finally:
        lib.close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 4
        names = {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
        assert "doc_seq" not in names and {"change", "change_gone"} <= names
        # One entry per doc, at its seq: the old ones went as they were superseded.
        assert conn.execute("SELECT db, seq, id FROM change ORDER BY 1, 2").fetchall() == (
            conn.execute("SELECT db, seq, id FROM doc ORDER BY 1, 2").fetchall()
        )
    finally:
        conn.close()


def test_an_empty_file_is_refused_even_with_create(tmp_path: Path) -> None:
    """A library truncated to 0 bytes is a lost library, not a place for a new one."""
    path = tmp_path / "library.sqlite3"
    path.touch()
    _refused(path, "file is empty", create=True)
    assert path.read_bytes() == b""


def test_closed_library_raises_offline(tmp_path: Path) -> None:
    lib = SQLiteLibrary(tmp_path / "library.sqlite3")
    lib.close()
    with pytest.raises(DatabaseOffline, match="closed"):
        lib.docs.count()


# --- refusing what is not ours --------------------------------------------------------


def _refused(path: Path, match: str, create: bool = True) -> str:
    with pytest.raises(DatabaseOffline, match=match) as info:
        open_library(str(path), create=create)
    msg = str(info.value)
    assert "\n" not in msg
    assert str(path) in msg
    return msg


def _assert_untouched(path: Path, before: bytes) -> None:
    assert path.read_bytes() == before
    assert not Path(f"{path}-wal").exists()
    assert not Path(f"{path}-journal").exists()


def test_refuses_a_file_that_is_not_sqlite(tmp_path: Path) -> None:
    path = tmp_path / "notes.txt"
    before = b"my precious notes\n" * 100
    path.write_bytes(before)
    msg = _refused(path, "not a database")
    assert msg == f"cannot open library {path}: file is not a database"
    _assert_untouched(path, before)


def test_refuses_a_corrupt_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "library.sqlite3"
    before = b"SQLite format 3\x00" + os.urandom(8192)
    path.write_bytes(before)
    _refused(path, "cannot open library")
    _assert_untouched(path, before)


def test_refuses_a_truncated_library(tmp_path: Path) -> None:
    path = tmp_path / "library.sqlite3"
    lib = SQLiteLibrary(path)
    lib.docs.save_many([{"_id": random_id(), "type": "dmedia/store"} for _ in range(300)])
    lib.close()
    data = path.read_bytes()
    page = int.from_bytes(data[16:18], "big")  # the header's page size
    assert len(data) > 2 * page
    # The header survives; the rest of page 1 (the schema's b-tree) is mangled.
    before = data[:1000] + os.urandom(page - 1096) + data[page - 96 :]
    path.write_bytes(before)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    _refused(path, "cannot open library")
    assert path.read_bytes() == before


def test_refuses_another_programs_sqlite_file(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE photos (name TEXT)")
    conn.execute("INSERT INTO photos VALUES ('cat.jpg')")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    _refused(path, "not a dmedia-tui library")
    _assert_untouched(path, before)


def test_refuses_an_empty_sqlite_file_of_another_application(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA application_id = 1234")
    conn.close()
    before = path.read_bytes()
    _refused(path, "not a dmedia-tui library")
    _assert_untouched(path, before)


def test_refuses_a_newer_schema(tmp_path: Path) -> None:
    path = tmp_path / "library.sqlite3"
    SQLiteLibrary(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    _refused(path, "newer than this program")


def test_refuses_a_directory(tmp_path: Path) -> None:
    (tmp_path / "dir" / "inside").mkdir(parents=True)
    msg = _refused(tmp_path / "dir", "is a directory")
    assert msg == f"cannot open library {tmp_path / 'dir'}: is a directory"
    assert os.listdir(tmp_path / "dir") == ["inside"]


def test_refuses_a_fifo_without_blocking(tmp_path: Path) -> None:
    path = tmp_path / "library.sqlite3"
    os.mkfifo(path)
    _refused(path, "not a regular file")


def test_missing_file_without_create(tmp_path: Path) -> None:
    path = tmp_path / "nope" / "library.sqlite3"
    _refused(path, "no such file", create=False)
    assert not path.parent.exists()


def test_empty_file_without_create(tmp_path: Path) -> None:
    path = tmp_path / "library.sqlite3"
    path.touch()
    _refused(path, "empty", create=False)
    assert path.read_bytes() == b""


def test_cannot_create_where_a_file_blocks_the_folder(tmp_path: Path) -> None:
    (tmp_path / "blocker").write_text("x")
    _refused(tmp_path / "blocker" / "library.sqlite3", "cannot open library")


def test_cannot_create_in_a_read_only_location() -> None:
    # /proc refuses new entries even to root, unlike a chmod'ed folder.
    _refused(Path("/proc/dmedia-tui-test/library.sqlite3"), "cannot open library")


# --- threads and processes -----------------------------------------------------------------


def _bump(doc: dict[str, Any]) -> dict[str, Any]:
    doc["n"] += 1
    return doc


def test_threads_share_a_library(tmp_path: Path) -> None:
    lib = SQLiteLibrary(tmp_path / "library.sqlite3")
    counter = lib.docs.save({"_id": "counter", "n": 0})
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(25):
                lib.docs.update(counter["_id"], _bump)
                lib.placement_summary()
                lib.docs.update_seq()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == []
        assert lib.docs.get("counter")["n"] == 100
    finally:
        lib.close()


def _writer_process(path: str, name: str, rounds: int) -> None:
    """Runs in a separate process: counter bumps, own docs and log events."""
    lib = SQLiteLibrary(path, create=False)
    try:
        for i in range(rounds):
            lib.docs.update("counter", _bump)
            lib.docs.save({"_id": f"{name}-{i:04d}", "type": "test"})
            if i % 10 == 0:
                lib.log.save({"_id": random_id(), "type": "test", "time": i, "by": name})
    finally:
        lib.close()


def test_two_processes_write_at_once_without_lost_updates(tmp_path: Path) -> None:
    path = str(tmp_path / "library.sqlite3")
    lib = SQLiteLibrary(path)
    lib.docs.save({"_id": "counter", "n": 0})
    ctx = multiprocessing.get_context("spawn")
    rounds = 60
    procs = [ctx.Process(target=_writer_process, args=(path, n, rounds)) for n in ("p1", "p2")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    try:
        assert [p.exitcode for p in procs] == [0, 0]
        assert lib.docs.get("counter")["n"] == 2 * rounds
        assert lib.docs.count() == 1 + 2 * rounds
        assert lib.log.count() == 2 * (rounds // 10)
        changes = lib.docs.changes()
        assert len(changes.results) == 1 + 2 * rounds
        assert lib.docs.update_seq() == changes.last_seq
    finally:
        lib.close()


def _one_write(path: str) -> None:
    lib = SQLiteLibrary(path, create=False)
    lib.docs.save({"_id": random_id(), "type": "dmedia/store"})
    lib.close()


def test_update_seq_sees_another_process_write(tmp_path: Path) -> None:
    path = str(tmp_path / "library.sqlite3")
    lib = SQLiteLibrary(path)
    try:
        seq = lib.docs.update_seq()
        assert lib.docs.count() == 0  # this connection has read the database already
        proc = multiprocessing.get_context("spawn").Process(target=_one_write, args=(path,))
        proc.start()
        got = lib.docs.wait_changes(seq, timeout=120)
        proc.join(60)
        assert proc.exitcode == 0
        assert got != seq
        assert lib.docs.update_seq() == got
        assert len(lib.stores()) == 1
    finally:
        lib.close()


# --- the derived columns are durability.py's numbers ----------------------------------------

_SIDS = [random_id() for _ in range(5)]
_junk = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.floats(), st.text(max_size=3))
_entry = st.one_of(
    st.fixed_dictionaries({"copies": st.one_of(st.integers(-3, 5), _junk)}, optional={"v": _junk}),
    _junk,
)
_stored = st.one_of(
    st.dictionaries(st.one_of(st.sampled_from(_SIDS), st.text(max_size=30)), _entry, max_size=6),
    _junk,
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(stored=_stored, origin=_junk | st.sampled_from(["user", "cache"]), size=_junk)
def test_derived_columns_equal_durability_functions(stored: Any, origin: Any, size: Any) -> None:
    doc = {"_id": "F" * 48, "type": "dmedia/file", "stored": stored, "origin": origin}
    doc["bytes"] = size
    origin_, bytes_, placement, rank, dur, items = _file_row(doc)
    assert origin_ == durability.file_origin(doc)
    assert bytes_ == durability.file_bytes(doc)
    assert placement == durability.placement_key(doc)
    assert rank == durability.rank(doc)
    assert dur == durability.durability(doc)
    assert items == durability.stored_items(doc)
