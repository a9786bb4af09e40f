"""The database contract: every backend answers these exactly alike.

Written only against `Library`/`Database` (the `library` fixture runs each test on SQLite
and on CouchDB), with hand-built docs, so the named queries are proved equal on both.
"""

from __future__ import annotations

import itertools
import random
import threading
from typing import Any

import pytest

from dmedia_tui import durability
from dmedia_tui.db import (
    Conflict,
    CopyDue,
    Database,
    DatabaseError,
    Library,
    NotFound,
    PlacementRow,
    VerificationStats,
)
from dmedia_tui.protocol import log_id, random_id
from tests.conftest import NOW

# --- small doc builders (schema.py is someone else's; these are just dicts) -----------


def sid() -> str:
    return random_id()


def fid() -> str:
    return random_id(30)


def file_doc(
    stored: Any = None, *, size: int = 1000, origin: str | None = "user", **extra: Any
) -> dict[str, Any]:
    """A dmedia/file doc; `stored` maps store ID -> copies (int) or a full entry dict."""
    if isinstance(stored, dict):
        stored = {
            k: ({"copies": v, "mtime": NOW - 100} if isinstance(v, int) else v)
            for k, v in stored.items()
        }
    doc: dict[str, Any] = {
        "_id": extra.pop("_id", None) or fid(),
        "type": "dmedia/file",
        "time": NOW - 1000,
        "atime": NOW - 1000,
        "bytes": size,
        "stored": {} if stored is None else stored,
        "leaf_hashes": "A" * 40,
    }
    if origin is not None:
        doc["origin"] = origin
    doc.update(extra)
    return doc


def entry(copies: Any = 1, verified: Any = None) -> dict[str, Any]:
    e: dict[str, Any] = {"copies": copies, "mtime": NOW - 100}
    if verified is not None:
        e["verified"] = verified
    return e


def store_doc(label: str, **extra: Any) -> dict[str, Any]:
    return {"_id": sid(), "type": "dmedia/store", "time": NOW, "copies": 1, "label": label, **extra}


def machine_doc(hostname: str) -> dict[str, Any]:
    return {"_id": sid(), "type": "dmedia/machine", "time": NOW, "hostname": hostname, "stores": []}


def log_doc(typ: str, t: int, **extra: Any) -> dict[str, Any]:
    return {"_id": log_id(t), "type": typ, "time": t, "machine_id": "M" * 24, **extra}


def key(*pairs: tuple[str, int]) -> str:
    return ",".join(f"{s}:{c}" for s, c in sorted(pairs))


def ids(docs: list[dict[str, Any]]) -> list[str]:
    return [d["_id"] for d in docs]


def summary(library: Library) -> dict[tuple[str, str], tuple[int, int]]:
    rows = library.placement_summary()
    assert all(isinstance(r, PlacementRow) for r in rows)
    out = {(r.origin, r.placement): (r.count, r.bytes) for r in rows}
    assert len(out) == len(rows), "one row per (origin, placement)"
    return {k: v for k, v in out.items() if v[0]}


def save_all(library: Library, docs: list[dict[str, Any]]) -> None:
    results = library.docs.save_many(docs)
    assert not [r for r in results if isinstance(r, DatabaseError)]


# --- docs: get / save / conflict ------------------------------------------------------


def test_get_missing_raises_not_found(library: Library) -> None:
    with pytest.raises(NotFound):
        library.docs.get(fid())
    assert library.docs.get_or_none(fid()) is None


def test_save_sets_rev_and_get_returns_the_doc(library: Library) -> None:
    doc = store_doc("a")
    saved = library.docs.save(doc)
    assert saved["_rev"] == doc["_rev"]
    assert doc["_rev"].startswith("1-")
    got = library.docs.get(doc["_id"])
    assert got == doc


def test_update_with_current_rev_bumps_generation(library: Library) -> None:
    doc = library.docs.save(store_doc("a"))
    doc["label"] = "b"
    library.docs.save(doc)
    assert doc["_rev"].startswith("2-")
    assert library.docs.get(doc["_id"])["label"] == "b"


def test_stale_rev_conflicts_and_changes_nothing(library: Library) -> None:
    doc = library.docs.save(store_doc("a"))
    stale = dict(doc)
    doc["label"] = "new"
    library.docs.save(doc)
    stale["label"] = "stale"
    with pytest.raises(Conflict):
        library.docs.save(stale)
    assert library.docs.get(doc["_id"])["label"] == "new"


def test_creating_over_an_existing_id_conflicts(library: Library) -> None:
    doc = library.docs.save(store_doc("a"))
    with pytest.raises(Conflict):
        library.docs.save({"_id": doc["_id"], "type": "dmedia/store", "label": "dup"})
    assert library.docs.get(doc["_id"])["label"] == "a"


def test_rev_for_a_missing_doc_conflicts(library: Library) -> None:
    with pytest.raises(Conflict):
        library.docs.save({"_id": sid(), "_rev": "1-abc", "type": "dmedia/store"})


def test_unknown_and_x_keys_round_trip_untouched(library: Library) -> None:
    doc = file_doc(
        {sid(): entry(1, NOW)},
        x_note={"nested": [1, 2.5, None, True, "é ✓"]},
        x_empty={},
        future_field=[{"a": [{}]}],
        name="Clip ünïcode 🎞.MOV",
        big=2**53,
        neg=-7,
        frac=0.125,
    )
    library.docs.save(doc)
    got = library.docs.get(doc["_id"])
    assert got == doc
    got["x_note"]["nested"].append("more")
    library.docs.save(got)
    again = library.docs.get(doc["_id"])
    assert again["x_note"]["nested"][-1] == "more"
    assert again["future_field"] == [{"a": [{}]}]


def test_get_many_keeps_order_with_none_for_missing(library: Library) -> None:
    a = library.docs.save(store_doc("a"))
    b = library.docs.save(store_doc("b"))
    gone = library.docs.save(store_doc("gone"))
    library.docs.delete(gone)
    missing = sid()
    got = library.docs.get_many([b["_id"], missing, a["_id"], gone["_id"], b["_id"]])
    assert [g["_id"] if g else None for g in got] == [b["_id"], None, a["_id"], None, b["_id"]]
    assert library.docs.get_many([]) == []


# --- bulk ----------------------------------------------------------------------------


def test_save_many_reports_each_doc(library: Library) -> None:
    existing = library.docs.save(store_doc("existing"))
    stale = dict(existing)
    existing["label"] = "moved on"
    library.docs.save(existing)
    fresh = [store_doc(f"new{i}") for i in range(3)]
    update = dict(existing, label="updated")
    results = library.docs.save_many([fresh[0], stale, fresh[1], update, fresh[2]])
    assert len(results) == 5
    assert isinstance(results[1], Conflict)
    for i in (0, 2, 3, 4):
        assert isinstance(results[i], dict), results[i]
        assert results[i]["_rev"]
    assert results[3]["_rev"].startswith("3-")
    assert library.docs.get(existing["_id"])["label"] == "updated"
    assert library.docs.count() == 4


def test_save_many_conflict_on_duplicate_create(library: Library) -> None:
    doc = library.docs.save(store_doc("a"))
    results = library.docs.save_many([{"_id": doc["_id"], "type": "x"}, store_doc("b")])
    assert isinstance(results[0], Conflict)
    assert isinstance(results[1], dict)
    assert library.docs.get(doc["_id"])["type"] == "dmedia/store"


def test_save_many_of_nothing(library: Library) -> None:
    seq = library.docs.update_seq()
    assert library.docs.save_many([]) == []
    assert library.docs.update_seq() == seq


# --- delete, tombstones, changes -----------------------------------------------------


def test_delete_hides_doc_and_leaves_a_tombstone_in_changes(library: Library) -> None:
    doc = library.docs.save(store_doc("a"))
    keep = library.docs.save(store_doc("b"))
    before = library.docs.changes().last_seq
    library.docs.delete(doc)
    with pytest.raises(NotFound):
        library.docs.get(doc["_id"])
    assert library.docs.count() == 1
    assert ids(library.docs.page()) == [keep["_id"]]
    ch = library.docs.changes(before)
    assert [(c.id, c.deleted) for c in ch.results] == [(doc["_id"], True)]
    everything = {c.id: c.deleted for c in library.docs.changes().results}
    assert everything == {doc["_id"]: True, keep["_id"]: False}


def test_delete_with_stale_rev_conflicts(library: Library) -> None:
    doc = library.docs.save(store_doc("a"))
    stale = dict(doc)
    doc["label"] = "b"
    library.docs.save(doc)
    with pytest.raises(Conflict):
        library.docs.delete(stale)
    assert library.docs.get(doc["_id"])["label"] == "b"


def test_deleting_a_missing_doc_is_not_found(library: Library) -> None:
    with pytest.raises(NotFound):
        library.docs.delete({"_id": sid(), "_rev": "1-abc"})


def test_a_deleted_id_can_be_created_again(library: Library) -> None:
    doc = library.docs.save(store_doc("a"))
    library.docs.delete(doc)
    again = library.docs.save({"_id": doc["_id"], "type": "dmedia/store", "label": "again"})
    assert library.docs.get(doc["_id"])["label"] == "again"
    assert int(again["_rev"].split("-")[0]) >= 3
    assert library.docs.count() == 1


def test_changes_lists_each_doc_once_at_its_latest(library: Library) -> None:
    a = library.docs.save(store_doc("a"))
    b = library.docs.save(store_doc("b"))
    mid = library.docs.changes().last_seq
    a["label"] = "a2"
    library.docs.save(a)
    everything = library.docs.changes()
    assert sorted(c.id for c in everything.results) == sorted([a["_id"], b["_id"]])
    assert [c.id for c in everything.results][-1] == a["_id"]
    after = library.docs.changes(mid)
    assert [c.id for c in after.results] == [a["_id"]]
    assert library.docs.changes(everything.last_seq).results == []
    assert library.docs.changes(everything.last_seq).last_seq == everything.last_seq


def test_changes_paged_with_limit_sees_every_doc(library: Library) -> None:
    docs = [store_doc(str(i)) for i in range(23)]
    save_all(library, docs)
    seen: list[str] = []
    since = None
    for _ in range(20):
        ch = library.docs.changes(since, limit=5)
        assert len(ch.results) <= 5
        if not ch.results:
            break
        seen.extend(c.id for c in ch.results)
        since = ch.last_seq
    assert sorted(set(seen)) == sorted(ids(docs))


# --- paging and counting ---------------------------------------------------------------


def test_page_iter_docs_and_count(library: Library) -> None:
    docs = [store_doc(str(i)) for i in range(25)]
    save_all(library, docs)
    want = sorted(ids(docs))
    assert library.docs.count() == 25
    assert ids(library.docs.page(10)) == want[:10]
    assert ids(library.docs.page(10, want[9])) == want[10:20]
    assert ids(library.docs.page(10, want[19])) == want[20:]
    assert ids(library.docs.page(10, want[-1])) == []
    assert ids(library.docs.iter_docs(page_size=7)) == want
    assert ids(library.docs.iter_docs(page_size=5)) == want  # exact multiple
    library.docs.delete(library.docs.get(want[3]))
    assert library.docs.count() == 24
    assert want[3] not in ids(library.docs.iter_docs(page_size=4))


def test_iter_stored_gives_every_live_doc_in_id_order_as_a_read_decodes_it(
    library: Library,
) -> None:
    """The check pass's walk: (id, stored) of every live doc, any page size; decode_stored
    gives what get() gives."""
    docs = [store_doc(str(i)) for i in range(11)]
    save_all(library, docs)
    library.docs.delete(library.docs.get(docs[4]["_id"]))
    want = sorted(ids(docs[:4] + docs[5:]))
    for size in (0, 1, 3, 10, 5000):
        got = list(library.docs.iter_stored(size))
        assert [i for i, _ in got] == want, size
        for doc_id, stored in got:
            assert library.docs.decode_stored(doc_id, stored) == library.docs.get(doc_id)
    assert list(library.log.iter_stored()) == []


def test_iter_stored_walks_a_part_and_split_ids_cuts_the_whole_into_parts(
    library: Library,
) -> None:
    """A check split across processes walks [start, stop) parts: together they are every
    live doc, once each, in `_id` order; a backend that does not split gives no cuts."""
    docs = [store_doc(str(i)) for i in range(40)]
    save_all(library, docs)
    library.docs.delete(library.docs.get(docs[4]["_id"]))
    want = sorted(ids(docs[:4] + docs[5:]))
    lo, hi = want[10], want[30]
    for size in (1, 3, 5000):
        got = [i for i, _ in library.docs.iter_stored(size, start=lo, stop=hi)]
        assert got == want[10:30], size
        assert [i for i, _ in library.docs.iter_stored(size, stop=lo)] == want[:10]
        assert [i for i, _ in library.docs.iter_stored(size, start=hi)] == want[30:]
    for parts in (2, 3, 8):
        cuts = library.docs.split_ids(parts)
        assert len(cuts) <= parts - 1 and cuts == sorted(set(cuts))
        bounds = [None, *cuts, None]
        walked = [
            [i for i, _ in library.docs.iter_stored(7, a, b)] for a, b in itertools.pairwise(bounds)
        ]
        assert [i for part in walked for i in part] == want
        if library.worker_path is not None and parts <= 3:  # random IDs: parts of similar size
            assert len(cuts) == parts - 1 and all(part for part in walked), walked
    assert library.log.split_ids(2) == []  # nothing to cut


def test_databases_are_separate(library: Library) -> None:
    doc = library.docs.save(store_doc("a"))
    ev = library.log.save(log_doc("dmedia/store/purge", NOW))
    assert library.log.get_or_none(doc["_id"]) is None
    assert library.docs.get_or_none(ev["_id"]) is None
    assert library.docs.count() == 1
    assert library.log.count() == 1


# --- update_seq / wait_changes / update() ------------------------------------------------


def test_update_seq_changes_on_every_write_of_its_database(library: Library) -> None:
    s0 = library.docs.update_seq()
    assert library.docs.update_seq() == s0  # stable while nothing happens
    doc = library.docs.save(store_doc("a"))
    s1 = library.docs.update_seq()
    assert s1 != s0
    log_seq = library.log.update_seq()
    library.log.save(log_doc("dmedia/store/purge", NOW))
    assert library.log.update_seq() != log_seq
    assert library.docs.update_seq() == s1
    library.docs.delete(doc)
    assert library.docs.update_seq() not in (s0, s1)


def test_wait_changes_returns_at_once_when_already_changed(library: Library) -> None:
    s0 = library.docs.update_seq()
    library.docs.save(store_doc("a"))
    assert library.docs.wait_changes(s0, timeout=30) == library.docs.update_seq() != s0


def test_wait_changes_times_out_with_the_same_seq(library: Library) -> None:
    s0 = library.docs.update_seq()
    assert library.docs.wait_changes(s0, timeout=0.05) == s0


def test_wait_changes_wakes_on_a_write_from_another_thread(library: Library) -> None:
    s0 = library.docs.update_seq()
    writer = threading.Timer(0.05, library.docs.save, [store_doc("later")])
    writer.start()
    try:
        got = library.docs.wait_changes(s0, timeout=60)
    finally:
        writer.join()
    assert got != s0
    assert library.docs.count() == 1


def test_update_applies_fn_and_retries_on_conflict(library: Library) -> None:
    doc = library.docs.save(store_doc("a", counter=0))
    calls: list[int] = []

    def bump(d: dict[str, Any], by: int) -> dict[str, Any]:
        calls.append(d["counter"])
        if len(calls) == 1:  # someone else writes between our read and our save
            other = library.docs.get(d["_id"])
            other["counter"] += 10
            library.docs.save(other)
        d["counter"] += by
        return d

    saved = library.docs.update(doc["_id"], bump, 1)
    assert calls == [0, 10]
    assert saved is not None and saved["counter"] == 11
    assert library.docs.get(doc["_id"])["counter"] == 11


def test_update_returning_none_saves_nothing(library: Library) -> None:
    doc = library.docs.save(store_doc("a"))
    assert library.docs.update(doc["_id"], lambda d: None) is None
    assert library.docs.get(doc["_id"])["_rev"] == doc["_rev"]
    with pytest.raises(NotFound):
        library.docs.update(sid(), lambda d: d)


def _zero_on(doc: dict[str, Any], store_id: str) -> dict[str, Any] | None:
    """A pure transition for the tests: the copy on store_id counts 0 (None: no change)."""
    e = doc.get("stored", {}).get(store_id)
    if e == "boom":
        raise ValueError("a malformed entry")
    if not isinstance(e, dict) or e.get("copies") == 0:
        return None
    e["copies"] = 0
    return doc


def _assert_indexes_match_docs(library: Library, stores: list[str]) -> None:
    docs = list(library.docs.iter_docs())
    want: dict[tuple[str, str], list[int]] = {}
    for d in docs:
        if d.get("type") != "dmedia/file":
            continue
        g = want.setdefault((durability.file_origin(d), durability.placement_key(d)), [0, 0])
        g[0] += 1
        g[1] += durability.file_bytes(d)
    assert summary(library) == {k: tuple(v) for k, v in want.items()}
    for s in stores:
        on_s = [d for d in docs if s in d.get("stored", {})]
        assert library.file_ids_by_store(s, 10_000) == sorted(
            (durability.rank(d), d["_id"]) for d in on_s
        )
        assert library.verification_stats(s).copies == len(on_s)
    fragile = sorted(
        (durability.rank(d), d["_id"])
        for d in docs
        if durability.file_origin(d) == "user" and durability.durability(d) < 3
    )
    assert [(durability.rank(d), d["_id"]) for d in library.fragile_files(10_000)] == fragile


def test_update_many_applies_a_transition_in_batches(library: Library) -> None:
    a, b = sid(), sid()
    files = [file_doc({a: 1, b: 1} if i % 3 else {b: 2}, size=i + 1) for i in range(23)]
    files[5]["stored"][a] = entry(0)  # nothing to change: neither saved nor an error
    save_all(library, files)
    broken = library.docs.get(files[7]["_id"])
    broken["stored"][a] = "boom"  # the transition raises on this one
    library.docs.save(broken)
    seq = library.docs.update_seq()
    revs = {f["_id"]: library.docs.get(f["_id"])["_rev"] for f in files}
    missing = fid()
    ids_in = [f["_id"] for f in files] + [missing]
    batches = list(library.docs.update_many(iter(ids_in), _zero_on, a, batch_size=5))

    assert len(batches) == 5  # 24 IDs, 5 a batch
    saved = [i for bt in batches for i in bt.saved]
    errors = {i: type(e).__name__ for bt in batches for i, e in bt.errors}
    changed = [f["_id"] for i, f in enumerate(files) if i % 3 and i not in (5, 7)]
    assert saved == changed
    assert errors == {files[7]["_id"]: "ValueError", missing: "NotFound"}
    for f in files:
        got = library.docs.get(f["_id"])
        if f["_id"] in changed:
            assert got["stored"][a]["copies"] == 0 and got["_rev"].startswith("2-")
            assert got["stored"][b] == entry(1)  # the rest of the doc untouched
        else:
            assert got["_rev"] == revs[f["_id"]]
    assert {c.id for c in library.docs.changes(seq).results} == set(changed)
    _assert_indexes_match_docs(library, [a, b])


def test_update_many_with_a_purge_transition_keeps_every_index(library: Library) -> None:
    a, b, c = sid(), sid(), sid()
    rng = random.Random(13)
    files = [
        file_doc(
            {
                s: entry(rng.choice([0, 1, 2]), rng.choice([None, NOW - 5]))
                for s in rng.sample([a, b, c], rng.randint(1, 3))
            },
            size=rng.randint(1, 10**6),
            origin=rng.choice(["user", "user", "cache"]),
        )
        for _ in range(60)
    ]
    save_all(library, files)

    def purge(doc: dict[str, Any], store_id: str) -> dict[str, Any] | None:
        if store_id not in doc["stored"]:
            return None
        del doc["stored"][store_id]
        return doc

    # The IDs streamed from the index while the batches remove its rows.
    def on_a() -> Any:
        after = None
        while page := library.file_ids_by_store(a, limit=7, after=after):
            yield from (i for _, i in page)
            after = page[-1]

    want = sorted(f["_id"] for f in files if a in f["stored"])
    saved = sorted(
        i for bt in library.docs.update_many(on_a(), purge, a, batch_size=4) for i in bt.saved
    )
    assert saved == want
    assert library.file_ids_by_store(a) == []
    _assert_indexes_match_docs(library, [a, b, c])


def test_generic_update_many_retries_the_docs_that_conflicted(library: Library) -> None:
    """The get_many/save_many path (CouchDB's; any backend can run it): a doc changed
    between the batch's read and its save is read and transformed again."""
    docs = [store_doc(f"s{i}", counter=0) for i in range(4)]
    save_all(library, docs)
    calls: list[tuple[str, int]] = []

    def bump(d: dict[str, Any], by: int) -> dict[str, Any]:
        calls.append((d["label"], d["counter"]))
        if d["label"] == "s2" and d["counter"] == 0:  # someone else writes meanwhile
            other = library.docs.get(d["_id"])
            other["counter"] += 10
            library.docs.save(other)
        d["counter"] += by
        return d

    out = Database._update_batch(library.docs, [d["_id"] for d in docs], bump, (1,))
    assert sorted(out.saved) == sorted(d["_id"] for d in docs) and out.errors == []
    assert [library.docs.get(d["_id"])["counter"] for d in docs] == [1, 1, 11, 1]
    assert calls.count(("s2", 0)) == 1 and ("s2", 10) in calls


# --- named queries: stores, machines --------------------------------------------------------


def test_stores_and_machines_by_type_in_id_order(library: Library) -> None:
    stores = [store_doc(f"s{i}") for i in range(4)]
    machines = [machine_doc(f"m{i}") for i in range(3)]
    save_all(library, [*stores, *machines, file_doc({stores[0]["_id"]: 1})])
    library.docs.delete(library.docs.get(stores[2]["_id"]))
    want = sorted(ids(stores[:2] + stores[3:]))
    assert ids(library.stores()) == want
    assert ids(library.machines()) == sorted(ids(machines))
    assert library.stores()[0] == library.docs.get(want[0])


# --- named queries: placement summary -----------------------------------------------------


def test_placement_summary_groups_by_origin_and_placement(library: Library) -> None:
    a, b, c = sid(), sid(), sid()
    docs = [
        file_doc({a: 1}, size=10),
        file_doc({a: 1}, size=20),
        file_doc({a: 1, b: 1, c: 1}, size=100),
        file_doc({b: 2, a: 1}, size=5),
        file_doc({}, size=7),
        file_doc({a: 1}, size=1000, origin="cache"),
        file_doc({a: 1}, size=3, origin=None),  # no origin: a user file
        store_doc("not a file"),
        machine_doc("not a file either"),
    ]
    save_all(library, docs)
    assert summary(library) == {
        ("user", key((a, 1))): (3, 33),
        ("user", key((a, 1), (b, 1), (c, 1))): (1, 100),
        ("user", key((a, 1), (b, 2))): (1, 5),
        ("user", ""): (1, 7),
        ("cache", key((a, 1))): (1, 1000),
    }


def test_placement_summary_tolerates_malformed_stored(library: Library) -> None:
    a, b = sid(), sid()
    docs = [
        file_doc(
            {a: entry(1), "junk": entry(5), "Z" * 24: entry(2), "x" * 24: entry(2)}, size=1
        ),  # bad keys
        file_doc({a: entry(-2), b: entry(1)}, size=2),  # negative copies count 0
        file_doc({a: entry("2"), b: entry(1)}, size=4),  # string copies count 0
        file_doc({a: entry(True), b: entry(1)}, size=8),  # bool is not a count
        file_doc({a: "garbage", b: None}, size=16),  # entries that are not dicts
        file_doc({a: {"mtime": 1}}, size=32),  # copies missing
        file_doc(stored=["not", "a", "dict"], size=64),
        file_doc({a: 1}, size=-5),  # bad size counts 0 bytes
        file_doc({a: 1}, size="big"),  # type: ignore[arg-type]
        file_doc({b: entry(None)}, size=128),  # null copies count 0
    ]
    save_all(library, docs)
    assert summary(library) == {
        ("user", key((a, 1))): (3, 1),
        ("user", key((a, 0), (b, 1))): (3, 14),
        ("user", key((a, 0), (b, 0))): (1, 16),
        ("user", key((a, 0))): (1, 32),
        ("user", ""): (1, 64),
        ("user", key((b, 0))): (1, 128),
    }


def test_whole_float_copies_and_bytes_count_like_ints(library: Library) -> None:
    # JSON cannot tell 2 from 2.0; both backends must read them alike.
    a, b = sid(), sid()
    library.docs.save(
        file_doc({a: {"copies": 2.0, "mtime": NOW}, b: {"copies": 1.5, "mtime": NOW}}, size=1000)
    )
    doc = file_doc({a: 1}, size=1000)
    doc["bytes"] = 500.0
    library.docs.save(doc)
    both = ",".join(f"{s}:{c}" for s, c in sorted([(a, 2), (b, 0)]))
    rows = {(r.placement, r.count, r.bytes) for r in library.placement_summary()}
    assert rows == {(both, 1, 1000), (f"{a}:1", 1, 500)}


def test_placement_summary_follows_updates_and_deletes(library: Library) -> None:
    a, b = sid(), sid()
    f1 = file_doc({a: 1}, size=10)
    f2 = file_doc({a: 1}, size=20)
    f3 = file_doc({a: 1, b: 1}, size=40)
    save_all(library, [f1, f2, f3])
    assert summary(library) == {
        ("user", key((a, 1))): (2, 30),
        ("user", key((a, 1), (b, 1))): (1, 40),
    }
    f1["stored"][b] = entry(2)
    library.docs.save(f1)
    assert summary(library) == {
        ("user", key((a, 1))): (1, 20),
        ("user", key((a, 1), (b, 1))): (1, 40),
        ("user", key((a, 1), (b, 2))): (1, 10),
    }
    library.docs.delete(f3)
    assert summary(library) == {
        ("user", key((a, 1))): (1, 20),
        ("user", key((a, 1), (b, 2))): (1, 10),
    }
    f2["bytes"] = 25
    f2["origin"] = "proxy"
    library.docs.save(f2)
    assert summary(library) == {
        ("proxy", key((a, 1))): (1, 25),
        ("user", key((a, 1), (b, 2))): (1, 10),
    }
    # Downgrade a store: its copies count 0 but it stays in the placement.
    f1["stored"][a]["copies"] = 0
    library.docs.save(f1)
    assert summary(library) == {
        ("proxy", key((a, 1))): (1, 25),
        ("user", key((a, 0), (b, 2))): (1, 10),
    }
    # Turning a file doc into something else takes it out of the summary.
    f1["type"] = "dmedia/other"
    library.docs.save(f1)
    library.docs.delete(f2)
    assert summary(library) == {}


def test_placement_summary_after_bulk_updates(library: Library) -> None:
    a, b = sid(), sid()
    files = [file_doc({a: 1}, size=i + 1) for i in range(40)]
    save_all(library, files)
    for f in files[:15]:
        f["stored"][b] = entry(1)
    save_all(library, files[:15])
    # The same five docs twice in one batch: the second copies carry a stale _rev.
    results = library.docs.save_many([dict(f) for f in files[15:20]] + files[15:20])
    assert all(isinstance(r, dict) for r in results[:5])
    assert all(isinstance(r, Conflict) for r in results[5:])
    assert summary(library) == {
        ("user", key((a, 1))): (25, sum(range(16, 41))),
        ("user", key((a, 1), (b, 1))): (15, sum(range(1, 16))),
    }


# --- named queries: files by store / fragile / placement ----------------------------------


def _ranked_library(library: Library) -> tuple[str, str, str, dict[str, int]]:
    """Files on store a with known ranks; returns (a, b, c, {file_id: rank})."""
    a, b, c = sid(), sid(), sid()
    spec = [
        ({a: 0}, 1),
        ({a: 1}, 2),
        ({a: 1}, 2),
        ({a: 2}, 3),
        ({a: 1, b: 1}, 4),
        ({a: 1, b: 2}, 5),
        ({a: 1, b: 1, c: 1}, 6),
        ({a: 3}, 4),
        ({a: entry("3"), b: 1}, 3),  # string copies: worth 0
        ({a: 1, "junk": entry(3)}, 2),
    ]
    docs, ranks = [], {}
    for stored, rank in spec:
        for _ in range(2):
            d = file_doc(stored)
            docs.append(d)
            ranks[d["_id"]] = rank
    docs.append(file_doc({b: 1}))  # not on a
    docs.append(file_doc({a: 1}, origin="cache"))  # on a, another origin, rank 2
    ranks[docs[-1]["_id"]] = 2
    save_all(library, docs)
    return a, b, c, ranks


def test_files_by_store_orders_by_rank_then_id(library: Library) -> None:
    a, b, _, ranks = _ranked_library(library)
    want = sorted(ranks, key=lambda i: (ranks[i], i))
    got = library.files_by_store(a, limit=1000)
    assert ids(got) == want
    assert all(a in d["stored"] for d in got)
    assert len(library.files_by_store(b, limit=1000)) == 2 * 4 + 1
    assert library.files_by_store(sid()) == []
    assert library.files_by_store("junk") == []


def test_files_by_store_pages_with_rank_and_id(library: Library) -> None:
    a, _, _, ranks = _ranked_library(library)
    want = sorted(ranks, key=lambda i: (ranks[i], i))
    got: list[str] = []
    after = None
    for _ in range(30):
        page = library.files_by_store(a, limit=3, after=after)
        got.extend(ids(page))
        if len(page) < 3:
            break
        after = (ranks[page[-1]["_id"]], page[-1]["_id"])
    assert got == want


def test_file_ids_by_store_is_files_by_store_without_the_docs(library: Library) -> None:
    a, b, _, ranks = _ranked_library(library)
    want = sorted((ranks[i], i) for i in ranks)
    assert library.file_ids_by_store(a, limit=1000) == want
    got: list[tuple[int, str]] = []
    after = None
    for _ in range(30):
        page = library.file_ids_by_store(a, limit=4, after=after)
        got.extend(page)
        if len(page) < 4:
            break
        after = page[-1]
    assert got == want
    assert [i for _, i in library.file_ids_by_store(b)] == ids(library.files_by_store(b))
    assert library.file_ids_by_store(sid()) == []
    assert library.file_ids_by_store(a, limit=0) == []


def test_fragile_files_are_below_target_by_rank(library: Library) -> None:
    a, b, c, ranks = _ranked_library(library)
    user = {d["_id"]: d for d in library.docs.iter_docs() if d.get("origin") == "user"}

    def dur(d: dict[str, Any]) -> int:
        return sum(
            e["copies"]
            for s, e in d["stored"].items()
            if s in (a, b, c) and isinstance(e.get("copies"), int) and e["copies"] > 0
        )

    fragile = [i for i, d in user.items() if dur(d) < 3]
    rank_of = {i: ranks.get(i, 2) for i in user}  # the file only on b has rank 2
    want = sorted(fragile, key=lambda i: (rank_of[i], i))
    assert ids(library.fragile_files(limit=1000)) == want
    got: list[str] = []
    after = None
    while True:
        page = library.fragile_files(limit=4, after=after)
        got.extend(ids(page))
        if len(page) < 4:
            break
        after = (rank_of[page[-1]["_id"]], page[-1]["_id"])
    assert got == want
    cache = library.fragile_files(origin="cache")
    assert len(cache) == 1 and cache[0]["origin"] == "cache"


def test_files_by_placement_exact_match_paged_by_id(library: Library) -> None:
    a, b = sid(), sid()
    on_a = [file_doc({a: 1}) for _ in range(7)]
    save_all(library, [*on_a, file_doc({a: 1, b: 1}), file_doc({a: 1}, origin="render")])
    want = sorted(ids(on_a))
    assert ids(library.files_by_placement(key((a, 1)), limit=100)) == want
    assert ids(library.files_by_placement(key((a, 1)), limit=3)) == want[:3]
    assert ids(library.files_by_placement(key((a, 1)), limit=3, after=want[2])) == want[3:6]
    assert ids(library.files_by_placement(key((a, 1)), limit=3, after=want[5])) == want[6:]
    assert len(library.files_by_placement(key((a, 1)), origin="render")) == 1
    assert library.files_by_placement(key((a, 2))) == []
    nowhere = file_doc({})
    library.docs.save(nowhere)
    assert ids(library.files_by_placement("")) == [nowhere["_id"]]


def test_file_queries_follow_delete_and_move(library: Library) -> None:
    a, b = sid(), sid()
    f = file_doc({a: 1})
    g = file_doc({a: 1})
    save_all(library, [f, g])
    del f["stored"][a]
    f["stored"][b] = entry(1)
    library.docs.save(f)
    library.docs.delete(g)
    assert library.files_by_store(a) == []
    assert ids(library.files_by_store(b)) == [f["_id"]]
    assert library.files_by_store(b)[0]["_rev"] == f["_rev"]
    assert library.copies_due(a, NOW) == []
    assert ids(library.fragile_files()) == [f["_id"]]


# --- named queries: verification ------------------------------------------------------------


def test_copies_due_never_verified_first_then_oldest(library: Library) -> None:
    a, b = sid(), sid()
    never = [file_doc({a: entry(1)}, size=i + 1) for i in range(3)]
    junk = file_doc({a: entry(1, "yesterday")}, size=50)  # unusable time: never verified
    old = file_doc({a: entry(1, NOW - 40 * 86400)}, size=60)
    older = file_doc({a: entry(0, NOW - 50 * 86400), b: entry(1, NOW)}, size=70)
    recent = file_doc({a: entry(1, NOW - 86400)}, size=80)
    save_all(library, [*never, junk, old, older, recent])
    due = library.copies_due(a, NOW - 15 * 86400)
    assert all(isinstance(d, CopyDue) for d in due)
    never_ids = sorted([*ids(never), junk["_id"]])
    assert [d.file_id for d in due] == [*never_ids, older["_id"], old["_id"]]
    assert [d.verified for d in due] == [None] * 4 + [NOW - 50 * 86400, NOW - 40 * 86400]
    assert {d.store_id for d in due} == {a}
    assert due[-1].bytes == 60
    assert [d.file_id for d in library.copies_due(a, NOW - 15 * 86400, limit=2)] == never_ids[:2]
    assert library.copies_due(b, NOW) == []
    assert [d.file_id for d in library.copies_due(b, NOW + 1)] == [older["_id"]]


def test_copies_due_follows_verification(library: Library) -> None:
    a = sid()
    f = file_doc({a: entry(1)})
    library.docs.save(f)
    assert [d.file_id for d in library.copies_due(a, NOW)] == [f["_id"]]
    f["stored"][a]["verified"] = NOW
    library.docs.save(f)
    assert library.copies_due(a, NOW) == []
    assert [d.verified for d in library.copies_due(a, NOW + 1)] == [NOW]


def test_verification_stats(library: Library) -> None:
    a, b = sid(), sid()
    times = [NOW - 900, NOW - 100, NOW - 500, NOW - 300]
    docs = [file_doc({a: entry(1, t)}) for t in times]
    docs += [file_doc({a: entry(1)}), file_doc({a: entry(1, "bad"), b: entry(1, NOW)})]
    save_all(library, docs)
    st = library.verification_stats(a)
    assert isinstance(st, VerificationStats)
    # The median is the lower median of the verified times: an actual verification time.
    assert st == VerificationStats(6, 2, NOW - 900, NOW - 500, NOW - 100)
    assert library.verification_stats(b) == VerificationStats(1, 0, NOW, NOW, NOW)
    assert library.verification_stats(sid()) == VerificationStats(0, 0, None, None, None)
    library.docs.save(file_doc({a: entry(1, NOW)}))
    assert library.verification_stats(a) == VerificationStats(7, 2, NOW - 900, NOW - 300, NOW)


def test_verification_median_is_exact_when_many_copies_share_an_hour(library: Library) -> None:
    """Verified times crowded into a few hours (as when a verify pass runs at disk speed)
    and spread over others: as copies go, the lower median walks across hour boundaries
    and through the crowded hours from both ends, and is always the per-copy answer."""
    rng = random.Random(13)
    a = sid()
    hours = [NOW - 3 * 3600, NOW - 3600, NOW - 7 * 86400]
    docs = []
    for i in range(90):
        base = hours[i % 3] - hours[i % 3] % 3600
        t = base + rng.choice([0, 1, 1, 1799, 1800, 3599]) if i % 5 else NOW - rng.randint(0, 10**6)
        docs.append(file_doc({a: entry(1, t)}))
    docs += [file_doc({a: entry(1)}) for _ in range(5)]
    save_all(library, docs)
    live = list(docs)
    while live:
        times = sorted(d["stored"][a]["verified"] for d in live if "verified" in d["stored"][a])
        want = VerificationStats(
            len(live),
            len(live) - len(times),
            times[0] if times else None,
            times[(len(times) - 1) // 2] if times else None,
            times[-1] if times else None,
        )
        assert library.verification_stats(a) == want
        gone = [live.pop(rng.randrange(len(live))) for _ in range(min(len(live), 7))]
        for d in gone:
            library.docs.delete(d)


# --- named queries: events -------------------------------------------------------------------


def _events(library: Library) -> tuple[str, str, str, list[dict[str, Any]]]:
    s1, s2, f1 = sid(), sid(), fid()
    evs = [
        log_doc("dmedia/store/downgrade", NOW - 500, store_id=s1, reason="stale"),
        log_doc("dmedia/file/corrupt", NOW - 400, store_id=s1, file_id=f1),
        log_doc("dmedia/file/missing", NOW - 300, store_id=s2, file_id=f1),
        log_doc("dmedia/store/purge", NOW - 200, store_id=s2, reason="stale"),
        log_doc("dmedia/doc/invalid", NOW - 100, errors=["bad"], x_extra=1),
        log_doc("dmedia/file/corrupt", NOW, store_id=s2, file_id=fid()),
    ]
    assert not [r for r in library.log.save_many(evs) if isinstance(r, DatabaseError)]
    return s1, s2, f1, evs


def test_events_order_newest_or_oldest_first(library: Library) -> None:
    *_, evs = _events(library)
    want = ids(evs)
    assert ids(library.events()) == want[::-1]
    assert ids(library.events(newest_first=False)) == want
    assert ids(library.events(limit=2)) == want[::-1][:2]
    assert library.events()[0] == evs[-1]


def test_events_filters(library: Library) -> None:
    s1, s2, f1, evs = _events(library)
    want = ids(evs)
    assert ids(library.events(since=NOW - 300, newest_first=False)) == want[2:]
    assert ids(library.events(types=["dmedia/file/corrupt"])) == [want[5], want[1]]
    assert ids(library.events(types=("dmedia/store/purge", "dmedia/store/downgrade"))) == [
        want[3],
        want[0],
    ]
    assert ids(library.events(store_id=s1, newest_first=False)) == want[:2]
    assert ids(library.events(file_id=f1, newest_first=False)) == want[1:3]
    assert ids(library.events(store_id=s2, types=["dmedia/file/corrupt"])) == [want[5]]
    assert ids(library.events(store_id=s2, since=NOW - 250)) == [want[5], want[3]]
    assert library.events(store_id=sid()) == []
    assert library.events(types=["dmedia/nope"]) == []


def test_events_cursor_paging_both_ways(library: Library) -> None:
    *_, evs = _events(library)
    want = ids(evs)
    for newest_first, expect in ((True, want[::-1]), (False, want)):
        got: list[str] = []
        cursor = None
        while True:
            page = library.events(limit=4, newest_first=newest_first, cursor=cursor)
            got.extend(ids(page))
            if len(page) < 4:
                break
            cursor = page[-1]["_id"]
        assert got == expect
    corrupt = library.events(limit=1, types=["dmedia/file/corrupt"])
    more = library.events(types=["dmedia/file/corrupt"], cursor=corrupt[0]["_id"])
    assert ids(more) == [want[1]]


def test_iter_events_walks_every_page_with_the_filters(library: Library) -> None:
    """Library.iter_events, the one loop over the log: every match exactly once in order,
    whatever the page size (pages that end exactly at the last event included), with the
    filters of events(); each page asks only for rows after the last `_id` (keyset)."""
    s1, s2, f1, evs = _events(library)
    want = ids(evs)
    for size in (1, 2, 3, 6, 7):
        assert ids(library.iter_events(page_size=size)) == want
        assert ids(library.iter_events(newest_first=True, page_size=size)) == want[::-1]
    got = library.iter_events(types=("dmedia/file/corrupt", "dmedia/store/purge"), page_size=1)
    assert ids(got) == [want[1], want[3], want[5]]
    assert ids(library.iter_events(store_id=s2, since=NOW - 250, page_size=1)) == [
        want[3],
        want[5],
    ]
    assert ids(library.iter_events(file_id=f1, page_size=1)) == want[1:3]
    asked: list[str | None] = []
    real = library.events

    def spy(limit: int = 100, **kw: Any) -> list[dict[str, Any]]:
        asked.append(kw.get("cursor"))
        return real(limit, **kw)

    library.events = spy  # type: ignore[method-assign]
    assert len(list(library.iter_events(page_size=4))) == 6
    assert asked == [None, want[3]]  # page 2 starts after page 1's last _id


# --- the derived queries always equal a recomputation from the docs --------------------------


def test_named_queries_match_the_docs_after_random_writes(library: Library) -> None:
    """Saves, bulk saves, deletes and re-creations in a fixed random order: the summary,
    per-store lists and verification queries must equal what the docs themselves say."""
    rng = random.Random(20261125)
    stores = [sid() for _ in range(4)]
    live: dict[str, dict[str, Any]] = {}
    dead: list[str] = []

    def random_stored() -> dict[str, Any]:
        out: dict[str, Any] = {}
        for s in rng.sample(stores, rng.randint(0, 3)):
            verified = rng.choice([None, NOW - rng.randint(0, 90) * 86400, "junk"])
            out[s] = entry(rng.choice([0, 1, 1, 2, -1, "1"]), verified)
        if rng.random() < 0.1:
            out["junk"] = entry(2)
        return out

    def new_file(doc_id: str | None = None) -> dict[str, Any]:
        return file_doc(
            random_stored(),
            size=rng.randint(1, 10**9),
            origin=rng.choice(["user", "user", "user", "cache", "render"]),
            _id=doc_id,
        )

    save_all(library, [new_file() for _ in range(40)])
    live = {d["_id"]: d for d in library.docs.iter_docs()}
    for _ in range(60):
        op = rng.random()
        if op < 0.5 and live:  # edit a batch of files
            batch = [live[i] for i in rng.sample(sorted(live), min(len(live), rng.randint(1, 6)))]
            for d in batch:
                d["stored"] = random_stored()
                if rng.random() < 0.2:
                    d["bytes"] = rng.randint(1, 10**6)
                    d["origin"] = rng.choice(["user", "proxy"])
            save_all(library, batch)
        elif op < 0.7 and live:  # delete one
            doc_id = rng.choice(sorted(live))
            library.docs.delete(live.pop(doc_id))
            dead.append(doc_id)
        elif op < 0.8 and dead:  # bring one back
            d = library.docs.save(new_file(dead.pop()))
            live[d["_id"]] = d
        else:
            d = library.docs.save(new_file())
            live[d["_id"]] = d
    docs = list(library.docs.iter_docs())
    assert {d["_id"]: d for d in docs} == live

    want: dict[tuple[str, str], list[int]] = {}
    for d in docs:
        g = want.setdefault((durability.file_origin(d), durability.placement_key(d)), [0, 0])
        g[0] += 1
        g[1] += durability.file_bytes(d)
    assert summary(library) == {k: tuple(v) for k, v in want.items()}

    cutoff = NOW - 30 * 86400
    for s in stores:
        on_s = [d for d in docs if s in d["stored"]]
        want_ids = sorted((durability.rank(d), d["_id"]) for d in on_s)
        assert [(durability.rank(d), d["_id"]) for d in library.files_by_store(s, 1000)] == want_ids

        def verified(d: dict[str, Any], s: str = s) -> Any:
            v = d["stored"][s].get("verified")
            return v if isinstance(v, int) else None

        times = sorted(v for d in on_s if (v := verified(d)) is not None)
        never = sorted(d["_id"] for d in on_s if verified(d) is None)
        stats = library.verification_stats(s)
        assert (stats.copies, stats.never) == (len(on_s), len(never))
        assert (stats.oldest, stats.newest) == ((times[0], times[-1]) if times else (None, None))
        assert stats.median == (times[(len(times) - 1) // 2] if times else None)
        due = library.copies_due(s, cutoff, limit=1000)
        old = sorted((verified(d), d["_id"]) for d in on_s if (verified(d) or cutoff) < cutoff)
        assert [(c.verified, c.file_id) for c in due] == [(None, i) for i in never] + old

    fragile = sorted(
        (durability.rank(d), d["_id"])
        for d in docs
        if durability.file_origin(d) == "user" and durability.durability(d) < 3
    )
    got = [(durability.rank(d), d["_id"]) for d in library.fragile_files(limit=1000)]
    assert got == fragile
