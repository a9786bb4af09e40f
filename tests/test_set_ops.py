"""Downgrade and purge of a whole store as set operations (issue 13 pt 2).

The SQLite backend does them in SQL (update_store_entries); these tests prove that the
docs, the derived indexes (placement summary, per-store copy index and counts) and the
events are the ones the per-file path (transitions.downgrade_store_in_file /
purge_store_in_file on each doc) gives, on a library of mixed copies, on both backends.
"""

from __future__ import annotations

import copy
import random
import sqlite3
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from dmedia_tui import protocol, schema, transitions
from dmedia_tui.clock import FixedClock
from dmedia_tui.config import Config
from dmedia_tui.db import Library, VerificationStats, open_library
from dmedia_tui.durability import file_bytes, file_origin, placement_key, rank, stored_items
from dmedia_tui.metastore import MetaStore
from tests.conftest import NOW

DAY = 86400


def mixed_library(lib: Library, n: int = 120, seed: int = 7) -> tuple[list[str], dict[str, Any]]:
    """Store docs and `n` file docs: copies 0/1/2, verified or not, pinned, x_ keys, files
    with no entry on the busiest store, and a few whose entry there only fn can clean."""
    rng = random.Random(seed)
    stores = sorted(protocol.random_id() for _ in range(4))
    lib.docs.save_many(
        [{"_id": s, "type": "dmedia/store", "time": NOW, "copies": 1, "atime": NOW} for s in stores]
    )
    busy = stores[0]
    docs = []
    for i in range(n):
        data = i.to_bytes(4, "big") + b"mixed"
        leaf = protocol.hash_leaf(0, data)
        where = set(rng.sample(stores, rng.randint(1, 4)))
        if i % 3 == 0:
            where.add(busy)
        stored: dict[str, Any] = {}
        for s in sorted(where):
            e: dict[str, Any] = {"copies": rng.choice([0, 1, 1, 2]), "mtime": NOW - i}
            if rng.random() < 0.6:
                e["verified"] = NOW - rng.randint(0, 20 * DAY)  # none due for the 30-day rule
            if rng.random() < 0.1:
                e["pinned"] = True
            stored[s] = e
        if i % 11 == 0:
            stored["x_note"] = {"kept": i}
        if busy in stored and i % 17 == 0:  # only fn knows what to make of these
            stored[busy] = rng.choice(
                [{"copies": 2.0, "mtime": 5}, {"copies": 1}, {"copies": 1, "mtime": -3}, 7]
            )
        docs.append(
            {
                "_id": protocol.hash_root(len(data), [leaf]),
                "type": "dmedia/file",
                "time": NOW - i,
                "atime": NOW - i,
                "bytes": len(data) + i,
                "origin": rng.choice(["user", "user", "cache"]),
                "name": f"f{i}.jpg",
                "ext": "jpg",
                "leaf_hashes": protocol.encode_leaf_hashes([leaf]),
                "stored": stored,
            }
        )
    for r in lib.docs.save_many(docs):
        assert isinstance(r, dict)
    return stores, {d["_id"]: d for d in docs}


def all_files(lib: Library) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    after = None
    while page := lib.docs.page(500, after):
        out.update((d["_id"], d) for d in page if d.get("type") == "dmedia/file")
        after = page[-1]["_id"]
    return out


def bare(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "_rev"}


def expected_after(before: dict[str, Any], fn: Any, sid: str) -> dict[str, Any]:
    out = {}
    for fid, doc in before.items():
        new = fn(copy.deepcopy(doc), sid)
        out[fid] = bare(new if new is not None else doc)
    return out


def assert_indexes_match(lib: Library, docs: dict[str, Any], stores: list[str]) -> None:
    """What the backend's named queries say equals what the docs say."""
    want: Counter = Counter()
    size: Counter = Counter()
    for d in docs.values():
        key = (file_origin(d), placement_key(d))
        want[key] += 1
        size[key] += file_bytes(d)
    got = {(r.origin, r.placement): (r.count, r.bytes) for r in lib.placement_summary()}
    assert got == {k: (want[k], size[k]) for k in want}
    for sid in stores:
        on = sorted((rank(d), fid) for fid, d in docs.items() if sid in dict(stored_items(d)))
        assert lib.file_ids_by_store(sid, limit=10_000) == on
        times = sorted(
            e["verified"]
            for d in docs.values()
            if isinstance(e := d["stored"].get(sid), dict)
            and sid in dict(stored_items(d))
            and isinstance(e.get("verified"), int)
        )
        mid = times[(len(times) - 1) // 2] if times else None
        assert lib.verification_stats(sid) == VerificationStats(
            len(on), len(on) - len(times), min(times, default=None), mid, max(times, default=None)
        )


def sqlite_tables(path: str) -> dict[str, list[tuple]]:
    c = sqlite3.connect(path)
    try:
        return {
            t: c.execute(f"SELECT * FROM {t} ORDER BY 1, 2").fetchall()
            for t in ("file", "copy", "placement_sum", "store_sum", "verify_hour")
        }
    finally:
        c.close()


def assert_sqlite_reindexed(lib: Library, docs: dict[str, Any], tmp_path: Path) -> None:
    """SQLite: the derived tables are row for row those of a library the same docs were
    saved into afresh (by the per-doc indexer)."""
    path = getattr(lib, "path", None)
    if path is None:
        return
    fresh_path = str(tmp_path / "fresh.sqlite3")
    fresh = open_library(fresh_path)
    fresh.docs.save_many([dict(d) for d in lib.stores()] + [bare(d) for d in docs.values()])
    fresh.close()
    got, want = sqlite_tables(path), sqlite_tables(fresh_path)
    assert got == want


@pytest.fixture
def ms(library: Library, tmp_path: Path) -> MetaStore:
    return MetaStore(library, Config.load(tmp_path / "config", tmp_path / "data"), FixedClock(NOW))


def _count_calls(monkeypatch: pytest.MonkeyPatch, name: str) -> list[str]:
    """The IDs of the docs the per-file transition `name` is called on, from now on."""
    calls: list[str] = []
    orig = getattr(transitions, name)

    def counted(doc: dict[str, Any], sid: str) -> dict[str, Any] | None:
        calls.append(doc["_id"])
        return orig(doc, sid)

    monkeypatch.setattr(transitions, name, counted)
    return calls


def test_downgrade_gives_the_docs_and_indexes_of_the_per_file_path(
    ms: MetaStore, tmp_path: Path
) -> None:
    stores, _ = mixed_library(ms.lib)
    busy = stores[0]
    before = all_files(ms.lib)
    want = expected_after(before, transitions.downgrade_store_in_file, busy)
    changed = sum(want[f] != bare(before[f]) for f in before)
    assert changed > 20  # the library is worth the name

    ev = ms.downgrade_store(busy)

    after = all_files(ms.lib)
    assert {f: bare(d) for f, d in after.items()} == want
    for fid, doc in after.items():  # a new revision exactly where the doc changed
        assert (doc["_rev"] != before[fid]["_rev"]) == (want[fid] != bare(before[fid]))
    assert ev["count"] == changed
    assert ms.store_doc(busy)["downgraded"].get("pending") is None
    assert_indexes_match(ms.lib, after, stores)
    assert_sqlite_reindexed(ms.lib, after, tmp_path)
    # The changes feed lists every changed doc once (no seq reused).
    seqs = ms.lib.docs.changes().results
    assert len({c.id for c in seqs}) == len(seqs)


def test_purge_gives_the_docs_and_indexes_of_the_per_file_path(
    ms: MetaStore, tmp_path: Path
) -> None:
    stores, _ = mixed_library(ms.lib)
    busy = stores[0]
    before = all_files(ms.lib)
    want = expected_after(before, transitions.purge_store_in_file, busy)
    entries = sum(busy in d["stored"] for d in before.values())

    ev = ms.purge_store(busy)

    after = all_files(ms.lib)
    assert {f: bare(d) for f, d in after.items()} == want
    assert ev["count"] == entries
    assert ms.store_doc(busy) is None
    assert_indexes_match(ms.lib, after, stores[1:])
    assert ms.lib.verification_stats(busy).copies == 0
    assert_sqlite_reindexed(ms.lib, after, tmp_path)


def test_a_second_downgrade_changes_no_doc(ms: MetaStore) -> None:
    stores, _ = mixed_library(ms.lib)
    ms.downgrade_store(stores[0])
    revs = {f: d["_rev"] for f, d in all_files(ms.lib).items()}
    ev = ms.downgrade_store(stores[0])
    assert ev["count"] == 0
    assert {f: d["_rev"] for f, d in all_files(ms.lib).items()} == revs


def test_other_entries_are_left_as_they_are(sqlite_library: Library, tmp_path: Path) -> None:
    """The SQL path writes only the store's entry: a junk entry of another store (which
    the per-file path would also have cleaned) stays, and the indexes stay right."""
    lib = sqlite_library
    stores, docs = mixed_library(lib, n=30)
    busy, other = stores[0], stores[1]
    fid = next(
        f
        for f, d in docs.items()
        if isinstance(e := d["stored"].get(busy), dict)
        and type(e.get("copies")) is int
        and e["copies"] > 0
        and type(e.get("mtime")) is int
        and e["mtime"] >= 0
    )
    doc = lib.docs.get(fid)
    doc["stored"][other] = {"copies": "two", "mtime": 1}
    lib.docs.save(doc)
    ms = MetaStore(lib, Config.load(tmp_path / "config", tmp_path / "data"), FixedClock(NOW))
    ms.downgrade_store(busy)
    got = lib.docs.get(fid)
    assert got["stored"][busy]["copies"] == 0
    assert got["stored"][other] == {"copies": "two", "mtime": 1}
    after = all_files(lib)
    assert_indexes_match(lib, after, stores)
    assert_sqlite_reindexed(lib, after, tmp_path)


@pytest.mark.parametrize(
    ("unseen", "action"),
    [
        (3 * DAY - 1, None),
        (3 * DAY, schema.LOG_STORE_DOWNGRADE),
        (8 * DAY - 1, schema.LOG_STORE_DOWNGRADE),
        (8 * DAY, schema.LOG_STORE_PURGE),
    ],
)
def test_time_policies_take_the_set_path_at_their_boundaries(
    library: Library, tmp_path: Path, unseen: int, action: str | None
) -> None:
    stores, _ = mixed_library(library, n=40)
    busy = stores[0]
    before = all_files(library)
    store = library.docs.get(busy)
    store["atime"] = NOW - unseen
    library.docs.save(store)
    ms = MetaStore(library, Config.load(tmp_path / "config", tmp_path / "data"), FixedClock(NOW))
    events = ms.run_time_policies(online=set(stores[1:]))
    acted = [e for e in events if e.get("store_id") == busy]
    after = {f: bare(d) for f, d in all_files(library).items()}
    if action is None:
        assert acted == [] and after == {f: bare(d) for f, d in before.items()}
        return
    assert [e["type"] for e in acted] == [action]
    fn = (
        transitions.downgrade_store_in_file
        if action == schema.LOG_STORE_DOWNGRADE
        else transitions.purge_store_in_file
    )
    assert after == expected_after(before, fn, busy)


def test_sqlite_runs_the_per_file_transition_only_for_docs_sql_cannot_do(
    sqlite_library: Library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The point of the set path: clean docs never reach Python's per-doc transition."""
    stores, docs = mixed_library(sqlite_library)
    busy = stores[0]
    calls = _count_calls(monkeypatch, "downgrade_store_in_file")
    ms = MetaStore(
        sqlite_library, Config.load(tmp_path / "config", tmp_path / "data"), FixedClock(NOW)
    )
    ms.downgrade_store(busy)
    dirty = {
        f
        for f, d in docs.items()
        if busy in d["stored"]
        and not (
            isinstance(e := d["stored"][busy], dict)
            and type(e.get("copies")) is int
            and type(e.get("mtime")) is int
            and e["mtime"] >= 0
        )
    }
    assert dirty and set(calls) == dirty


def test_sqlite_a_pass_in_many_batches_numbers_each_change_once(
    sqlite_library: Library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batches of 7 (each its own temp rows, numbered afresh): every changed doc gets
    its own new update seq, above the old ones, and update_seq is the last of them."""
    lib = sqlite_library
    stores, _ = mixed_library(lib)
    busy = stores[0]
    entries = type(lib.docs).update_store_entries
    monkeypatch.setattr(
        type(lib.docs),
        "update_store_entries",
        lambda self, ids, sid, op, fn: entries(self, ids, sid, op, fn, batch_size=7),
    )
    ms = MetaStore(lib, Config.load(tmp_path / "config", tmp_path / "data"), FixedClock(NOW))
    for op, fn in (
        (ms.downgrade_store, transitions.downgrade_store_in_file),
        (ms.purge_store, transitions.purge_store_in_file),
    ):
        fresh = tmp_path / fn.__name__
        fresh.mkdir()
        before = all_files(lib)
        want = expected_after(before, fn, busy)
        since = lib.docs.update_seq()
        op(busy)
        after = all_files(lib)
        assert {f: bare(d) for f, d in after.items()} == want
        changed = {f for f in before if want[f] != bare(before[f])}
        feed = lib.docs.changes(since)
        seqs = [int(c.seq) for c in feed.results]
        assert len(set(seqs)) == len(seqs) and min(seqs) > int(since)
        assert changed <= {c.id for c in feed.results}
        assert feed.last_seq == lib.docs.update_seq() == str(max(seqs))
        assert_indexes_match(lib, after, [s for s in stores if op != ms.purge_store or s != busy])
        assert_sqlite_reindexed(lib, after, fresh)


def test_sqlite_a_pass_keeps_its_temp_data_in_memory_and_gives_the_connection_back(
    sqlite_library: Library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While the pass runs, temp tables, statement journals and sorts stay in memory (they
    wrote ~4.5 KB a copy to temp files) and the page cache holds a batch's pages; after
    it, the connection has its everyday settings again."""
    from dmedia_tui.db import sqlite as backend

    lib = sqlite_library
    stores, _ = mixed_library(lib)
    seen: list[tuple[int, int]] = []
    orig = transitions.downgrade_store_in_file

    def spy(doc: dict[str, Any], sid: str) -> dict[str, Any] | None:
        conn = lib._conn()  # type: ignore[attr-defined]  # fn runs inside the pass
        seen.append(
            (
                conn.execute("PRAGMA temp_store").fetchone()[0],
                conn.execute("PRAGMA cache_size").fetchone()[0],
            )
        )
        return orig(doc, sid)

    monkeypatch.setattr(transitions, "downgrade_store_in_file", spy)
    ms = MetaStore(lib, Config.load(tmp_path / "config", tmp_path / "data"), FixedClock(NOW))
    ms.downgrade_store(stores[0])
    assert seen and set(seen) == {(2, -backend.BULK_CACHE_KIB)}  # 2: MEMORY
    conn = lib._conn()  # type: ignore[attr-defined]
    assert conn.execute("PRAGMA temp_store").fetchone()[0] == 0
    assert conn.execute("PRAGMA cache_size").fetchone()[0] == -backend.CACHE_KIB


def test_sqlite_a_pass_leaves_one_change_log_entry_per_doc(
    sqlite_library: Library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Schema 4: a pass appends its new seqs to the change log and sweeps the old ones at
    its end, so the log holds exactly each doc's current seq, and the feed from the start
    gives every doc once, in seq order."""
    lib = sqlite_library
    stores, _ = mixed_library(lib)
    entries = type(lib.docs).update_store_entries
    monkeypatch.setattr(
        type(lib.docs),
        "update_store_entries",
        lambda self, ids, sid, op, fn: entries(self, ids, sid, op, fn, batch_size=7),
    )
    ms = MetaStore(lib, Config.load(tmp_path / "config", tmp_path / "data"), FixedClock(NOW))
    ms.downgrade_store(stores[0])
    ms.purge_store(stores[1])
    conn = sqlite3.connect(lib.path)  # type: ignore[attr-defined]
    try:
        assert conn.execute("SELECT db, seq, id FROM change ORDER BY 1, 2").fetchall() == (
            conn.execute("SELECT db, seq, id FROM doc ORDER BY 1, 2").fetchall()
        )
        assert conn.execute("SELECT count(*) FROM change_gone").fetchone() == (0,)
        current = dict(conn.execute("SELECT id, seq FROM doc WHERE db = 1"))
    finally:
        conn.close()
    feed = lib.docs.changes()
    assert [(c.id, int(c.seq)) for c in feed.results] == sorted(
        current.items(), key=lambda kv: kv[1]
    )


def test_sqlite_purge_removes_entries_only_fn_could_clean_in_sql(
    sqlite_library: Library, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A purge drops the store's entry whatever it holds (not an object, copies 2.0, no
    mtime, a negative mtime, copies beyond what counts): the same doc fn gives, without
    fn, and the indexes stay right; only a doc whose text is not JSON reaches fn."""
    lib = sqlite_library
    stores, docs = mixed_library(lib)
    busy = stores[0]
    odd = [
        7,
        {"copies": 2.0, "mtime": 5},
        {"copies": 1},
        {"copies": 1, "mtime": -3},
        {"copies": 50, "mtime": 1, "verified": "x", "pinned": 1},
    ]
    with_entry = [f for f, d in docs.items() if busy in d["stored"]]
    for fid, entry in zip(with_entry, odd, strict=False):
        doc = lib.docs.get(fid)
        doc["stored"][busy] = entry
        lib.docs.save(doc)
    damaged = with_entry[len(odd)]
    conn = sqlite3.connect(lib.path)  # type: ignore[attr-defined]
    with conn:
        conn.execute("UPDATE doc SET json = '{not json' WHERE id = ?", (damaged,))
    conn.close()
    before = {f: d for f, d in all_files(lib).items() if f != damaged}
    want = expected_after(before, transitions.purge_store_in_file, busy)
    calls = _count_calls(monkeypatch, "purge_store_in_file")
    ms = MetaStore(lib, Config.load(tmp_path / "config", tmp_path / "data"), FixedClock(NOW))
    ms.purge_store(busy)
    assert calls == []  # the damaged doc fails to decode before fn: reported, left
    after = {f: d for f, d in all_files(lib).items() if f != damaged}
    assert {f: bare(d) for f, d in after.items()} == want
    for fid in with_entry[: len(odd)]:
        assert busy not in after[fid]["stored"]


@pytest.mark.parametrize("verb", ["downgrade", "purge"])
def test_a_store_wide_action_reports_its_progress_batch_by_batch(
    ms: MetaStore, monkeypatch: pytest.MonkeyPatch, verb: str
) -> None:
    """A downgrade or purge at a million files takes most of a minute: the CLI's bar and
    the app's activity panel follow it through `progress(done, total)`, called once a
    batch (7 here) and once at the end, counting up to the files on the store."""
    stores, docs = mixed_library(ms.lib)
    busy = stores[0]
    entries = sum(busy in d["stored"] for d in docs.values())
    assert ms.files_on(busy) == entries
    update = type(ms.lib.docs).update_store_entries
    monkeypatch.setattr(
        type(ms.lib.docs),
        "update_store_entries",
        lambda self, ids, sid, op, fn: update(self, ids, sid, op, fn, batch_size=7),
    )
    calls: list[tuple[int, int]] = []
    ms.run_action(verb, busy, progress=lambda done, total: calls.append((done, total)))
    done = [d for d, _ in calls]
    assert done[0] == 7 and done == sorted(done) and done[-1] == entries
    assert {t for _, t in calls} == {entries}
    assert len(calls) == -(-entries // 7) + 1  # a batch each, then the end
    # The same result as without a listener: the action's own tests hold for it.
    after = all_files(ms.lib)
    assert all(busy not in d["stored"] for d in after.values()) == (verb == "purge")


def test_progress_is_for_store_wide_actions_only(ms: MetaStore) -> None:
    stores, _ = mixed_library(ms.lib)
    calls: list[tuple[int, int]] = []
    ms.run_action("trust", stores[0], progress=lambda d, t: calls.append((d, t)))
    ms.run_action("downgrade", stores[1])  # and a store-wide one runs without a listener
    assert calls == []
    assert ms.store_doc(stores[1])["downgraded"]


def test_an_engine_shows_every_store_wide_pass_as_an_activity(ms: MetaStore) -> None:
    """A pass nobody follows (a policy's purge, a downgrade after corrupt data) shows in
    the app's activity panel too: an engine hooks MetaStore.store_pass, and the activity
    counts up to the store's files, then goes."""
    from dmedia_tui.engine import Engine

    stores, docs = mixed_library(ms.lib)
    engine = Engine(ms, watch_drives=False, watch_folders=False)
    seen: list[tuple[str, str, int, int]] = []
    engine.subscribe(
        lambda ev: (
            seen.append((ev.data.kind, ev.data.label, ev.data.done, ev.data.total))
            if ev.kind == "activity" and ev.data is not None
            else None
        )
    )
    for verb, sid in (("downgrade", stores[1]), ("purge", stores[2])):
        entries = sum(sid in d["stored"] for d in docs.values())
        seen.clear()
        if verb == "purge":
            ms.purge_store(sid, reason="atime")
        else:
            ms.downgrade_store(sid, reason="corrupt")
        assert seen[0] == (verb, sid[:8], 0, 0)
        assert seen[-1] == (verb, sid[:8], entries, entries)
        assert not engine.activity_snapshot()[0]  # gone once done


def test_the_unverified_pass_shows_the_copies_it_downgrades_not_the_whole_store(
    library: Library, tmp_path: Path
) -> None:
    """Copies unverified for 30 days count 0: with an engine, each store's pass shows as
    an activity counting those copies (not every file on the store) up to the end."""
    from dmedia_tui.engine import Engine

    stores, docs = mixed_library(library)
    later = MetaStore(
        library, Config.load(tmp_path / "config", tmp_path / "data"), FixedClock(NOW + 40 * DAY)
    )
    engine = Engine(later, watch_drives=False, watch_folders=False)
    shown: dict[str, list[tuple[int, int]]] = {}
    engine.subscribe(
        lambda ev: (
            shown.setdefault(ev.data.label, []).append((ev.data.done, ev.data.total))
            if ev.kind == "activity" and ev.data is not None
            else None
        )
    )
    events = later.downgrade_unverified(online=set())
    assert events
    for ev in events:
        sid = ev["store_id"]
        due = sum(
            isinstance(d["stored"].get(sid), dict) and "verified" in d["stored"][sid]
            for d in docs.values()
        )
        assert shown[sid[:8]][0] == (0, 0) and shown[sid[:8]][-1] == (due, due)
        assert {t for _, t in shown[sid[:8]][1:]} == {due}  # its copies, not the store's files
        assert due < later.files_on(sid)
