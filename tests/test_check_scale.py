"""The schema and consistency check at scale: linear (no query that sorts or skips per
page), problems logged in batches, and what is already logged held in 8 bytes a problem."""

from __future__ import annotations

import json
import shutil
import sqlite3
import sys
from pathlib import Path
from typing import Any

import pytest

from dmedia_tui import protocol, schema
from dmedia_tui.checker import LoggedProblems
from dmedia_tui.config import Config
from dmedia_tui.metastore import MetaStore
from dmedia_tui.protocol import random_id
from tests.conftest import NOW


@pytest.fixture
def ms(sqlite_library, tmp_path: Path, clock) -> MetaStore:
    return MetaStore(sqlite_library, Config.load(tmp_path / "config", tmp_path / "data"), clock)


def bad_file(n: int) -> dict[str, Any]:
    # A file doc whose bytes are not a positive int: invalid by the schema.
    return {"_id": random_id(30), "type": "dmedia/file", "time": NOW, "bytes": -n, "stored": {}}


def traced(conn: sqlite3.Connection) -> list[str]:
    out: list[str] = []
    conn.set_trace_callback(out.append)
    return out


def test_logged_problems_are_hashes_found_old_or_new() -> None:
    k = [LoggedProblems.key("t", f"id{i}", ["a", "b"]) for i in range(5)]
    seen = LoggedProblems(k[:3])
    assert all(x in seen for x in k[:3]) and k[3] not in seen
    assert seen.add_new(k[3]) and not seen.add_new(k[3]) and not seen.add_new(k[0])
    assert k[3] in seen and k[4] not in seen and len(seen) == 4
    assert LoggedProblems.key("t", "id0", ["a|b"]) == LoggedProblems.key("t", "id0", ["a", "b"])
    assert LoggedProblems.key("t", "id0", ["a"]) != LoggedProblems.key("u", "id0", ["a"])


def test_check_logs_new_problems_in_batches_and_each_once(ms: MetaStore) -> None:
    ms.lib.docs.save_many([bad_file(i) for i in range(7)])
    ms.checker.CHECK_LOG_BATCH = 3  # type: ignore[misc]
    sql = traced(ms.lib._conn())  # type: ignore[attr-defined]
    report = ms.check(page_size=4)
    assert (report.invalid, report.logged) == (7, 7 + 1)  # + the dmedia/check/result
    # 7 problems in batches of 3 (3 transactions), then the result: 4, not one per problem.
    assert sum(s.startswith("BEGIN IMMEDIATE") for s in sql) == 4
    invalid = ms.lib.events(100, types=[schema.LOG_DOC_INVALID])
    assert len(invalid) == 7
    # A fresh MetaStore (another run of `check`) finds them all logged already.
    again = MetaStore(ms.lib, ms.config, ms.clock).check(page_size=4)
    assert (again.invalid, again.logged) == (7, 0)


def test_workers_reporting_one_problem_at_once_log_it_once(ms: MetaStore, monkeypatch) -> None:
    """The verify and copy workers report a doc they cannot use; the first report reads
    what log-1 already holds. Two workers doing that at once each kept their own copy of
    it: both logged the problem, and the check that followed logged it a third time."""
    import threading
    import time

    bad = bad_file(1)
    ms.lib.docs.save_many([bad])
    real_iter_events = ms.lib.iter_events

    def slow_iter_events(*args, **kwargs):  # a long log-1: both workers are in the load
        time.sleep(0.2)
        yield from real_iter_events(*args, **kwargs)

    monkeypatch.setattr(ms.lib, "iter_events", slow_iter_events)
    start = threading.Barrier(2)

    def worker() -> None:
        start.wait()
        ms.report_invalid(bad["_id"], "bytes: must be a positive int")

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert ms.check(page_size=4).invalid == 1
    assert [e["doc_id"] for e in ms.lib.events(100, types=[schema.LOG_DOC_INVALID])] == [bad["_id"]]


def test_check_never_sorts_or_skips_per_page(ms: MetaStore) -> None:
    """Every query a second check pass runs (docs, problem events of two types, the newest
    result) follows an index: no temp B-tree for ORDER BY, no OFFSET; so a pass over a
    million docs or logged problems is linear, not quadratic."""
    ms.lib.docs.save_many([bad_file(i) for i in range(5)])
    ms.lib.docs.save_many([{"_id": random_id(30), "type": "dmedia/file", "time": NOW, "bytes": 10}])
    ms.check(page_size=2)
    conn = ms.lib._conn()  # type: ignore[attr-defined]
    sql = traced(conn)
    MetaStore(ms.lib, ms.config, ms.clock).check(page_size=2)
    ms.lib.events(2, types=[schema.LOG_DOC_INVALID, schema.LOG_FILE_INCONSISTENT])
    conn.set_trace_callback(None)
    selects = [s for s in sql if s.lstrip().upper().startswith("SELECT")]
    assert any("FROM event" in s for s in selects) and any("FROM doc" in s for s in selects)
    for s in selects:
        plan = " | ".join(r[-1] for r in conn.execute("EXPLAIN QUERY PLAN " + s))
        assert "TEMP B-TREE" not in plan, (s, plan)
        assert " OFFSET " not in s.upper(), s


def good_file(n: int) -> dict[str, Any]:
    data = f"file {n}".encode()
    leaf = protocol.hash_leaf(0, data)
    return {
        "_id": protocol.hash_root(len(data), [leaf]),
        "type": "dmedia/file",
        "time": NOW,
        "atime": NOW,
        "bytes": len(data),
        "origin": "user",
        "leaf_hashes": protocol.encode_leaf_hashes([leaf]),
        "stored": {},
    }


@pytest.fixture
def lib_ms(library, tmp_path: Path, clock) -> MetaStore:
    """A MetaStore on either backend."""
    return MetaStore(library, Config.load(tmp_path / "config", tmp_path / "data"), clock)


def test_an_idle_round_checks_only_what_changed(lib_ms: MetaStore, clock) -> None:
    ms = lib_ms
    files = [good_file(i) for i in range(30)]
    ms.lib.docs.save_many(files)
    first = ms.check_if_due()
    assert (first.docs, first.invalid) == (30, 0)  # no cursor yet: every doc
    # Another process (a new MetaStore) with nothing changed: nothing to read.
    idle = MetaStore(ms.lib, ms.config, clock).check_if_due()
    assert idle.docs == 0
    doc = ms.lib.docs.get(files[3]["_id"])
    doc["atime"] = NOW + 5
    ms.lib.docs.save(doc)
    assert ms.check_if_due().docs == 1  # just the changed doc
    assert ms.check_if_due().docs == 0
    # A changed doc with a problem: a full pass, its totals logged (METADATA_INVALID).
    ms.lib.docs.save(bad_file(1))
    report = ms.check_if_due()
    assert (report.docs, report.invalid) == (32, 1)  # 31 docs and the event it logs
    assert ms.metadata_problems()["invalid"] == 1
    # While problems are known, every round is a full pass (their totals need one).
    assert ms.check_if_due().docs >= 31
    # The full pass comes back when due, even with nothing changed.
    bad_id = ms.lib.events(1, types=[schema.LOG_DOC_INVALID])[0]["doc_id"]
    ms.lib.docs.delete(ms.lib.docs.get(bad_id))
    assert ms.check_if_due().invalid == 0  # full (problems were known): clean again
    assert ms.check_if_due().docs == 1  # the clean result that pass logged, once
    assert ms.check_if_due().docs == 0
    clock.advance(ms.thresholds.schema_check_interval)
    assert ms.check_if_due().docs >= 30


def stored_as(ms: MetaStore, doc_id: str, text: str) -> None:
    """Make the stored row of `doc_id` this exact JSON text (as another writer could)."""
    with ms.lib._conn() as conn:  # type: ignore[attr-defined]
        conn.execute("UPDATE doc SET json=? WHERE db=1 AND id=?", (text, doc_id))


def test_check_reads_every_row_as_the_stdlib_json_does(ms: MetaStore) -> None:
    """The pass decodes with orjson first; where orjson reads a row otherwise than every
    other read of the library (json: integers beyond 64 bits, NaN, lone surrogates), the
    verdicts and messages are still those of the stdlib decode."""
    docs = [good_file(i) for i in range(8)]
    ms.lib.docs.save_many(docs)
    text = json.dumps
    rows = {
        # clean as json reads it: an int time has no upper bound; x_ keys are not ours
        0: text({**docs[0], "time": 2**70, "x_big": 2**80}),
        1: text({**docs[1], "name": "\ud800 not UTF-8"}),  # a lone surrogate, escaped
        2: text({**docs[2], "x_v": float("inf")}),  # JSON text 'Infinity': json reads it
        # invalid: orjson would read 2**64 as a float and name it so
        3: text({**docs[3], "bytes": 2**64}),
        4: text({**docs[4], "time": float("nan")}),
        5: text({**docs[5], "atime": -(2**70)}),
        6: "{damaged",
    }
    for n, t in rows.items():
        stored_as(ms, docs[n]["_id"], t)
    expected = {}
    for n, t in rows.items():
        try:
            problems = schema.check_doc(json.loads(t))
        except ValueError:
            problems = ["doc: damaged"]
        if problems:
            expected[docs[n]["_id"]] = problems
    assert set(expected) == {docs[n]["_id"] for n in (3, 4, 5, 6)}
    report = ms.check()
    # 8 file docs and the 4 events logged before log-1 is walked
    assert (report.docs, report.invalid, report.inconsistent) == (8 + 4, 4, 0)
    logged = {e["doc_id"]: e["errors"] for e in ms.lib.events(100, types=[schema.LOG_DOC_INVALID])}
    assert logged.keys() == expected.keys()
    for doc_id, problems in expected.items():
        if problems != ["doc: damaged"]:
            assert logged[doc_id] == problems
        else:
            assert logged[doc_id][0].startswith("doc: damaged")
    assert logged[docs[3]["_id"]] == [
        "bytes: must be at most 9007199254740991, got 18446744073709551616"
    ]


def test_a_clean_file_doc_takes_the_fast_path(ms: MetaStore, monkeypatch) -> None:
    """The full validators see only what the fast path does not pass: here nothing but
    the first doc naming each store (their IDs are then known valid) and the store docs."""
    stores = [random_id() for _ in range(2)]
    files = []
    for i in range(40):
        doc = good_file(i)
        doc["stored"] = {s: {"copies": 1, "mtime": NOW, "verified": NOW} for s in stores}
        files.append(doc)
    ms.lib.docs.save_many(files)
    seen: list[Any] = []
    check_doc = schema.check_doc
    monkeypatch.setattr(schema, "check_doc", lambda doc: seen.append(doc) or check_doc(doc))
    schema._VALID_STORE_IDS.clear()
    report = ms.check()
    assert (report.docs, report.invalid, report.inconsistent) == (40, 0, 0)
    assert len(seen) <= 1
    # A doc that is not sound still meets the full validators, and is named.
    bad = {**files[7], "bytes": files[7]["bytes"] + 1}
    ms.lib.docs.save(bad)
    report = MetaStore(ms.lib, ms.config, ms.clock).check()
    assert report.inconsistent == 1
    assert files[7]["_id"] in [d["_id"] for d in seen]


def mixed_library(ms: MetaStore) -> None:
    """Clean and bad docs of every kind spread over the ID range: invalid, inconsistent,
    damaged rows, rows orjson reads otherwise than json, a design doc."""
    docs = [good_file(i) for i in range(300)]
    for i in range(0, 300, 7):
        docs[i] = {**docs[i], "bytes": docs[i]["bytes"] + 1}  # inconsistent: root hash
    for i in range(3, 300, 11):
        docs[i] = {**docs[i], "atime": -i}  # invalid
    ms.lib.docs.save_many([*docs, {"_id": "_design/x", "views": {}}])
    stored_as(ms, docs[5]["_id"], "{damaged")
    stored_as(ms, docs[6]["_id"], json.dumps({**docs[6], "bytes": 2**64}))
    stored_as(ms, docs[8]["_id"], json.dumps({**docs[8], "name": "\ud800 lone"}))


def logged_problems(ms: MetaStore) -> list[tuple[Any, ...]]:
    """The problem events in log order, without what differs between two runs (_id)."""
    events = ms.lib.events(10_000, newest_first=False)
    return [
        tuple(e.get(k) for k in ("type", "doc_id", "file_id", "db", "doc_type", "errors"))
        for e in events
    ]


def test_a_check_split_across_processes_logs_what_one_walk_logs(
    tmp_path: Path, clock, monkeypatch
) -> None:
    """A big library is checked in parts by worker processes: the report and every event
    (order included) are those of one walk in one process; problems come back from the
    workers in several batches and the log is written in batches all the same."""
    from dmedia_tui.checker import Checker, _Worker
    from dmedia_tui.db.sqlite import SQLiteLibrary

    one = MetaStore(
        SQLiteLibrary(tmp_path / "one.sqlite3"),
        Config.load(tmp_path / "config", tmp_path / "data"),
        clock,
    )
    mixed_library(one)
    one.lib.close()
    shutil.copy(tmp_path / "one.sqlite3", tmp_path / "split.sqlite3")
    one = MetaStore(SQLiteLibrary(tmp_path / "one.sqlite3"), one.config, clock)
    split = MetaStore(SQLiteLibrary(tmp_path / "split.sqlite3"), one.config, clock)
    monkeypatch.setattr(Checker, "CHECK_LOG_BATCH", 7)
    monkeypatch.setattr(_Worker, "BATCH", 5)
    monkeypatch.setattr(Checker, "CHECK_WORKERS", 1)
    want = one.check(page_size=13)
    started: list[Any] = []
    start = _Worker.start
    monkeypatch.setattr(_Worker, "start", lambda *a: started.append(start(*a)) or started[-1])
    monkeypatch.setattr(Checker, "CHECK_WORKERS", 3)
    monkeypatch.setattr(Checker, "PARALLEL_MIN_DOCS", 100)
    got = split.check(page_size=13)
    # docs: 2 parts of the docs db in workers; log-1 (its events) under 100 docs: here
    assert len(started) == 2 and all(w.proc.returncode == 0 for w in started)
    assert got == want and want.invalid > 20 and want.inconsistent > 20
    assert logged_problems(split) == logged_problems(one)
    # Again, over what is logged: nothing new, the same totals.
    again = MetaStore(split.lib, split.config, clock).check(page_size=13)
    assert (again.invalid, again.inconsistent, again.logged) == (want.invalid, want.inconsistent, 0)


def test_a_worker_that_fails_has_its_part_checked_here(ms: MetaStore, monkeypatch, caplog) -> None:
    from dmedia_tui.checker import Checker

    mixed_library(ms)
    monkeypatch.setattr(Checker, "CHECK_WORKERS", 1)
    want = ms.check(page_size=13)
    want_events = logged_problems(ms)
    # The same library anew (its problems not logged yet), the worker failing at once.
    ms.lib._conn().execute("DELETE FROM doc WHERE db=2")  # type: ignore[attr-defined]
    ms.lib._conn().execute("DELETE FROM event")  # type: ignore[attr-defined]
    monkeypatch.setattr(Checker, "CHECK_WORKERS", 2)
    monkeypatch.setattr(Checker, "PARALLEL_MIN_DOCS", 100)
    monkeypatch.setattr(sys, "executable", "/bin/false")
    with caplog.at_level("WARNING"):
        got = MetaStore(ms.lib, ms.config, ms.clock).check(page_size=13)
    assert "a check worker failed (exit 1" in caplog.text
    assert got == want
    assert logged_problems(ms) == want_events


def test_the_storage_check_runs_beside_the_walk_and_nothing_is_logged_before_it_passed(
    tmp_path: Path, clock
) -> None:
    """check(storage=True): the storage's own check (quick_check, every page) runs in a
    thread while the docs are walked. A damaged page the walk never reads (an index of
    `copy`) stops it as when the storage check ran first: its error, nothing logged."""
    from dmedia_tui.db.base import DatabaseOffline
    from dmedia_tui.db.sqlite import SQLiteLibrary

    path = tmp_path / "lib.sqlite3"
    config = Config.load(tmp_path / "config", tmp_path / "data")
    ms = MetaStore(SQLiteLibrary(path), config, clock)
    mixed_library(ms)
    ms.lib.close()  # the last connection: the WAL goes into the file
    conn = sqlite3.connect(path)
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name='copy_rank'").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    conn.close()
    with open(path, "r+b") as f:
        f.seek((root - 1) * size)
        f.write(b"\x5a" * size)
    ms = MetaStore(SQLiteLibrary(path, quick_check=False), config, clock)
    with pytest.raises(DatabaseOffline, match="damaged"):
        ms.check(storage=True)
    assert ms.lib.events(10) == []
    # The walk alone finds its problems (the damage is nowhere it reads)...
    assert ms.check().invalid > 20
    # ...and on a sound file the storage check changes nothing.
    ms.lib.close()
    fresh = tmp_path / "fresh.sqlite3"
    ms = MetaStore(SQLiteLibrary(fresh), config, clock)
    mixed_library(ms)
    report = ms.check(storage=True)
    assert report.invalid > 20 and len(ms.lib.events(1000)) == report.logged
