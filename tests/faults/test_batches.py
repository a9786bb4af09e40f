"""A batched set operation killed mid-batch (SIGKILL inside the transaction, or between
batches) leaves every doc either before or after the transition, never half, and every
derived index (placement summary, per-store lists) agrees with the docs."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from dmedia_tui import durability
from dmedia_tui.db.sqlite import SQLiteLibrary
from dmedia_tui.protocol import random_id
from tests.conftest import NOW

SCRIPT = """
import sys
from dmedia_tui.db.sqlite import SQLiteLibrary

def zero(doc, store_id):
    doc["stored"][store_id]["copies"] = 0
    return doc

lib = SQLiteLibrary(sys.argv[1], create=False)
ids = [i for _, i in lib.file_ids_by_store(sys.argv[2], limit=1000)]
for batch in lib.docs.update_many(ids, zero, sys.argv[2], batch_size=10):
    print("batch", len(batch.saved), flush=True)
"""


def _library(path: Path) -> tuple[str, str, list[str]]:
    a, b = sorted(random_id() for _ in range(2))
    lib = SQLiteLibrary(path)
    docs = [
        {
            "_id": random_id(30),
            "type": "dmedia/file",
            "time": NOW,
            "atime": NOW,
            "bytes": 1000 + i,
            "origin": "user",
            "leaf_hashes": "A" * 40,
            "stored": {a: {"copies": 1, "mtime": NOW}, b: {"copies": 1, "mtime": NOW}},
        }
        for i in range(35)
    ]
    lib.docs.save_many(docs)
    lib.close()
    return a, b, [d["_id"] for d in docs]


def _run(path: Path, store: str, fault: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DMEDIA_FAULT": fault}
    return subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path), store],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize(
    ("fault", "batches_done"), [("db.batch_written@1", 0), ("db.batch_written@3", 2)]
)
def test_killed_inside_a_batch_rolls_that_batch_back_whole(
    tmp_path: Path, fault: str, batches_done: int
) -> None:
    path = tmp_path / "library.sqlite3"
    a, b, ids = _library(path)
    r = _run(path, a, fault)
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert r.stdout.count("batch 10") == batches_done

    lib = SQLiteLibrary(path, create=False)
    docs = list(lib.docs.iter_docs())
    zeroed = [d for d in docs if d["stored"][a]["copies"] == 0]
    assert len(zeroed) == 10 * batches_done  # whole batches only
    assert all(d["_rev"].startswith("2-") for d in zeroed)
    assert all(d["_rev"].startswith("1-") for d in docs if d not in zeroed)
    want: dict[str, list[int]] = {}
    for d in docs:
        g = want.setdefault(durability.placement_key(d), [0, 0])
        g[0] += 1
        g[1] += d["bytes"]
    assert {r.placement: [r.count, r.bytes] for r in lib.placement_summary()} == want
    assert len(lib.file_ids_by_store(a)) == len(ids)
    # The pass run again finishes the job.
    lib.close()
    r = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(path), a], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    lib = SQLiteLibrary(path, create=False)
    assert all(d["stored"][a]["copies"] == 0 for d in lib.docs.iter_docs())
    assert [(r.placement, r.count) for r in lib.placement_summary()] == [
        (durability.placement_key(next(lib.docs.iter_docs())), len(ids))
    ]
    lib.close()


PASS_SCRIPT = """
import sys
from dmedia_tui import transitions
from dmedia_tui.db.sqlite import SQLiteLibrary

lib = SQLiteLibrary(sys.argv[1], create=False)
ids = [i for _, i in lib.file_ids_by_store(sys.argv[2], limit=1000)]
fn = transitions.downgrade_store_in_file
for batch in lib.docs.update_store_entries(ids, sys.argv[2], "downgrade", fn, batch_size=10):
    print("batch", len(batch.saved), flush=True)
"""


def test_a_set_pass_killed_between_batches_never_reports_a_change_twice(tmp_path: Path) -> None:
    """The SQL pass notes its docs' old seqs for a sweep at its end; killed before that,
    the feed still reports each doc once, at its current seq, and the next pass sweeps
    what the dead one left."""
    path = tmp_path / "library.sqlite3"
    a, b, ids = _library(path)
    env = {**os.environ, "DMEDIA_FAULT": "db.batch_written@3"}
    r = subprocess.run(
        [sys.executable, "-c", PASS_SCRIPT, str(path), a],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == -signal.SIGKILL, r.stderr
    assert r.stdout.count("batch 10") == 2

    def feed_is_each_doc_once() -> int:
        lib = SQLiteLibrary(path, create=False)
        try:
            seqs = {d["_id"]: d for d in lib.docs.iter_docs()}
            feed = lib.docs.changes().results
        finally:
            lib.close()
        assert sorted(c.id for c in feed) == sorted(seqs)
        assert [int(c.seq) for c in feed] == sorted(int(c.seq) for c in feed)
        conn = sqlite3.connect(path)
        try:
            assert conn.execute(
                "SELECT seq, id FROM change WHERE db = 1 AND seq IN"
                " (SELECT seq FROM doc WHERE db = 1) ORDER BY 1"
            ).fetchall() == [(int(c.seq), c.id) for c in feed]
            return conn.execute("SELECT count(*) FROM change_gone").fetchone()[0]
        finally:
            conn.close()

    assert feed_is_each_doc_once() == 20  # the two committed batches' old seqs
    r = subprocess.run(
        [sys.executable, "-c", PASS_SCRIPT, str(path), b],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    assert feed_is_each_doc_once() == 0
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("SELECT count(*) FROM change").fetchone()[0] == len(ids)
    finally:
        conn.close()
