"""Transitions: each pure doc change, on good docs and on malformed ones."""

from __future__ import annotations

import copy

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dmedia_tui import durability, protocol
from dmedia_tui import transitions as tr
from dmedia_tui.schema import check_file, check_store, create_file, create_store
from tests.conftest import NOW

S1, S2, S3 = (protocol.random_id() for _ in range(3))
CH = protocol.hash_bytes(b"transitions\n")
X_DOC = {"x_app": {"keep": [1, 2]}}


def fdoc(stored=None, **over):
    doc = create_file(NOW - 1000, CH, {}, name="a.mov")
    if stored is not None:
        doc["stored"] = stored
    doc.update(over)
    return doc


def sdoc(**over):
    doc = create_store(NOW - 1000, S1, label="usb")
    doc.update(over)
    return doc


# Malformed `stored` dicts and what cleaning makes of them.
MALFORMED_STORED = [
    ("not a dict: list", [S1], {}),
    ("not a dict: str", "junk", {}),
    ("not a dict: None", None, {}),
    ("junk key", {"junk": {"copies": 1, "mtime": 1}, S1: {"copies": 1, "mtime": 1}},
     {S1: {"copies": 1, "mtime": 1}}),
    ("negative copies", {S1: {"copies": -2, "mtime": 1}}, {S1: {"copies": 0, "mtime": 1}}),
    ("bool copies", {S1: {"copies": True, "mtime": 1}}, {S1: {"copies": 0, "mtime": 1}}),
    ("str copies", {S1: {"copies": "3", "mtime": 1}}, {S1: {"copies": 0, "mtime": 1}}),
    ("float mtime", {S1: {"copies": 1, "mtime": 17.9}}, {S1: {"copies": 1, "mtime": 17}}),
    ("junk mtime", {S1: {"copies": 1, "mtime": "x"}}, {S1: {"copies": 1, "mtime": 0}}),
    ("missing fields", {S1: {}}, {S1: {"copies": 0, "mtime": 0}}),
    ("value not a dict", {S1: 3}, {S1: {"copies": 0, "mtime": 0}}),
    ("float verified", {S1: {"copies": 1, "mtime": 1, "verified": 5.5}},
     {S1: {"copies": 1, "mtime": 1, "verified": 5}}),
    ("junk verified", {S1: {"copies": 1, "mtime": 1, "verified": -1}},
     {S1: {"copies": 1, "mtime": 1}}),
    ("junk pinned", {S1: {"copies": 1, "mtime": 1, "pinned": "yes"}},
     {S1: {"copies": 1, "mtime": 1}}),
    ("x keys kept", {"x_s": "?", S1: {"copies": 1, "mtime": 1, "x_v": [None]}},
     {"x_s": "?", S1: {"copies": 1, "mtime": 1, "x_v": [None]}}),
]  # fmt: skip


@pytest.mark.parametrize("name, stored, cleaned", MALFORMED_STORED)
def test_clean_stored(name, stored, cleaned):
    doc = {"stored": stored, "x_top": 1}
    assert tr.clean_stored(doc) == cleaned
    assert doc["stored"] == cleaned and doc["x_top"] == 1


def _apply_every_file_transition(doc):
    """(name, result) of every file transition applied to a deep copy of doc."""
    calls = {
        "mark_added": lambda d: tr.mark_added(d, S2, 1, 100),
        "mark_verified": lambda d: tr.mark_verified(d, S2, 1, 100, NOW),
        "mark_corrupt": lambda d: tr.mark_corrupt(d, S2, NOW),
        "mark_missing": lambda d: tr.mark_missing(d, S1),
        "mark_copied": lambda d: tr.mark_copied(d, NOW, S1, 1, 100, {S2: (1, 200)}),
        "mark_mismatched": lambda d: tr.mark_mismatched(d, S1, 300),
        "downgrade_copy": lambda d: tr.downgrade_copy(d, S1),
        "downgrade_store_in_file": lambda d: tr.downgrade_store_in_file(d, S1),
        "purge_store_in_file": lambda d: tr.purge_store_in_file(d, S1),
    }
    out = []
    for name, fn in calls.items():
        d = copy.deepcopy(doc)
        out.append((name, d, fn(d)))
    return out


@pytest.mark.parametrize("name, stored, cleaned", MALFORMED_STORED)
def test_every_file_transition_cleans_malformed_stored(name, stored, cleaned):
    doc = fdoc(**X_DOC)
    doc["stored"] = copy.deepcopy(stored)
    for fname, d, result in _apply_every_file_transition(doc):
        assert result is None or result is d, fname
        # Cleaned and transformed: the doc is valid (x_ keys are never reported).
        assert check_file(d) == [], (fname, d)
        assert d["x_app"] == {"keep": [1, 2]}, fname
        x_entries = {k: v for k, v in d["stored"].items() if k.startswith("x_")}
        assert x_entries == {k: v for k, v in cleaned.items() if k.startswith("x_")}


def test_transitions_return_none_for_non_dict_docs():
    for junk in (None, [], "doc", 5):
        assert tr.mark_added(junk, S1, 1, 1) is None
        assert tr.mark_verified(junk, S1, 1, 1, NOW) is None
        assert tr.mark_corrupt(junk, S1, NOW) is None
        assert tr.mark_missing(junk, S1) is None
        assert tr.mark_copied(junk, NOW, S1, 1, 1, {S2: (1, 1)}) is None
        assert tr.mark_mismatched(junk, S1, 1) is None
        assert tr.downgrade_copy(junk, S1) is None
        assert tr.downgrade_store_in_file(junk, S1) is None
        assert tr.purge_store_in_file(junk, S1) is None
        for fn in (tr.downgrade_store, tr.flag_failing):
            assert fn(junk, NOW, "corrupt") is None
        assert tr.acknowledge_failure(junk, NOW) is None
        assert tr.trust_store(junk) is None
        assert tr.touch_store(junk, NOW, 1, 1, None) is None
        assert tr.is_store_trusted(junk) is False
        assert tr.store_copies_weight(junk) == 0


def test_an_invalid_store_id_argument_is_refused():
    for fn, args in [
        (tr.mark_added, ("junk", 1, 1)),
        (tr.mark_verified, ("junk", 1, 1, NOW)),
        (tr.mark_corrupt, ("junk", NOW)),
        (tr.mark_missing, ("junk",)),
        (tr.mark_mismatched, ("junk", 1)),
        (tr.downgrade_copy, ("junk",)),
        (tr.downgrade_store_in_file, ("junk",)),
        (tr.purge_store_in_file, ("junk",)),
    ]:
        doc = fdoc({S1: {"copies": 1, "mtime": 1}})
        with pytest.raises(protocol.InvalidID):
            fn(doc, *args)
        assert doc["stored"] == {S1: {"copies": 1, "mtime": 1}}
    with pytest.raises(protocol.InvalidID):
        tr.mark_copied(fdoc(), NOW, S1, 1, 1, {"junk": (1, 1)})


# --- file transitions -----------------------------------------------------------------


def test_mark_added_pops_verified_keeps_pinned():
    doc = fdoc({S1: {"copies": 0, "mtime": 5, "verified": 9, "pinned": True, "x_v": 1}})
    assert tr.mark_added(doc, S1, 2, 77.5) is doc
    assert doc["stored"] == {S1: {"copies": 2, "mtime": 77, "pinned": True, "x_v": 1}}
    tr.mark_added(doc, S2, 1, 8)
    assert doc["stored"][S2] == {"copies": 1, "mtime": 8}
    assert durability.durability(doc) == 3


def test_mark_added_keeps_corrupt_history():
    doc = fdoc(corrupt={S1: {"time": NOW - 10}})
    tr.mark_added(doc, S1, 1, NOW)
    assert doc["corrupt"] == {S1: {"time": NOW - 10}}
    assert doc["stored"][S1] == {"copies": 1, "mtime": NOW}


def test_mark_verified():
    doc = fdoc({S1: {"copies": 0, "mtime": 5, "pinned": True}})
    assert tr.mark_verified(doc, S1, 1, 6, NOW + 0.9) is doc
    assert doc["stored"][S1] == {"copies": 1, "mtime": 6, "verified": NOW, "pinned": True}
    tr.mark_verified(doc, S2, 2, 7, NOW)
    assert doc["stored"][S2] == {"copies": 2, "mtime": 7, "verified": NOW}
    assert check_file(doc) == []


def test_mark_verified_coerces_bad_copies_to_zero():
    doc = fdoc()
    tr.mark_verified(doc, S1, -1, 6, NOW)
    assert doc["stored"][S1]["copies"] == 0


def test_mark_corrupt():
    doc = fdoc({S1: {"copies": 1, "mtime": 1}, S2: {"copies": 1, "mtime": 1}})
    assert tr.mark_corrupt(doc, S1, NOW + 0.5) is doc
    assert doc["stored"] == {S2: {"copies": 1, "mtime": 1}}
    assert doc["corrupt"] == {S1: {"time": NOW + 0.5}}
    # A second store: both marks kept; the same store again: the newer time.
    tr.mark_corrupt(doc, S2, NOW + 1)
    tr.mark_corrupt(doc, S1, NOW + 2)
    assert doc["stored"] == {}
    assert doc["corrupt"] == {S1: {"time": NOW + 2}, S2: {"time": NOW + 1}}
    assert check_file(doc) == []


@pytest.mark.parametrize(
    "corrupt, expected",
    [
        ("junk", {}),
        ([], {}),
        ({"junk": {"time": 1}, "x_k": 5}, {"x_k": 5}),
        ({S2: "bad"}, {S2: {"time": 0}}),
        ({S2: {"time": -1}}, {S2: {"time": 0}}),
        ({S2: {"time": 3, "x_v": 1}}, {S2: {"time": 3, "x_v": 1}}),
    ],
)
def test_mark_corrupt_cleans_malformed_corrupt(corrupt, expected):
    doc = fdoc({S1: {"copies": 1, "mtime": 1}}, corrupt=corrupt)
    tr.mark_corrupt(doc, S1, NOW)
    assert doc["corrupt"] == {**expected, S1: {"time": NOW}}
    assert check_file(doc) == []


def test_mark_missing():
    doc = fdoc({S1: {"copies": 1, "mtime": 1}, S2: {"copies": 1, "mtime": 1}})
    assert tr.mark_missing(doc, S1) is doc
    assert list(doc["stored"]) == [S2]
    assert tr.mark_missing(doc, S3) is doc
    assert list(doc["stored"]) == [S2]
    assert "corrupt" not in doc


def test_mark_copied_verifies_source_only():
    doc = fdoc({S1: {"copies": 1, "mtime": 1, "verified": 5}, S3: {"copies": 0, "mtime": 2}})
    dsts = {S2: (1, 300), S3: (2, 400.5)}
    assert tr.mark_copied(doc, NOW + 0.3, S1, 1, 1, dsts) is doc
    assert doc["stored"] == {
        S1: {"copies": 1, "mtime": 1, "verified": NOW},
        S2: {"copies": 1, "mtime": 300},
        S3: {"copies": 2, "mtime": 400},
    }
    assert durability.durability(doc) == 4
    assert check_file(doc) == []


def test_mark_mismatched():
    doc = fdoc({S1: {"copies": 1, "mtime": 1, "verified": 5, "pinned": True}})
    assert tr.mark_mismatched(doc, S1, 99) is doc
    assert doc["stored"][S1] == {"copies": 0, "mtime": 99, "pinned": True}
    tr.mark_mismatched(doc, S2, 12)
    assert doc["stored"][S2] == {"copies": 0, "mtime": 12}


def test_downgrade_copy_keeps_location_and_verified():
    doc = fdoc({S1: {"copies": 2, "mtime": 1, "verified": 5, "pinned": True}})
    assert tr.downgrade_copy(doc, S1) is doc
    assert doc["stored"][S1] == {"copies": 0, "mtime": 1, "verified": 5, "pinned": True}
    assert tr.downgrade_copy(doc, S2) is doc
    assert S2 not in doc["stored"]


def test_downgrade_store_in_file_skips_needless_writes():
    doc = fdoc({S1: {"copies": 1, "mtime": 1, "verified": 5}})
    assert tr.downgrade_store_in_file(doc, S1) is doc
    assert doc["stored"][S1] == {"copies": 0, "mtime": 1, "verified": 5}
    assert tr.downgrade_store_in_file(doc, S1) is None  # already 0
    assert tr.downgrade_store_in_file(doc, S2) is None  # no entry
    junk = fdoc({S1: {"copies": -3, "mtime": 1}})
    assert tr.downgrade_store_in_file(junk, S1) is None  # junk counts as 0 already


def test_purge_store_in_file():
    doc = fdoc({S1: {"copies": 1, "mtime": 1}, S2: {"copies": 0, "mtime": 1}})
    assert tr.purge_store_in_file(doc, S2) is doc
    assert list(doc["stored"]) == [S1]
    assert tr.purge_store_in_file(doc, S2) is None
    assert tr.purge_store_in_file(fdoc(stored=None) | {"stored": "junk"}, S1) is None


def test_file_transitions_compose_with_database_update(sqlite_library):
    db = sqlite_library.docs
    doc = fdoc({S1: {"copies": 1, "mtime": 1}}, **X_DOC)
    db.save(doc)
    db.update(doc["_id"], tr.mark_copied, NOW, S1, 1, 1, {S2: (1, 2)})
    db.update(doc["_id"], tr.mark_corrupt, S2, NOW)
    assert db.update(doc["_id"], tr.purge_store_in_file, S3) is None
    saved = db.get(doc["_id"])
    assert saved["stored"] == {S1: {"copies": 1, "mtime": 1, "verified": NOW}}
    assert saved["corrupt"] == {S2: {"time": NOW}}
    assert saved["x_app"] == X_DOC["x_app"]
    assert check_file(saved) == []


# --- merge ----------------------------------------------------------------------------


def test_merge_unions_stored_and_never_mutates():
    a = fdoc({S1: {"copies": 1, "mtime": 1}}, _rev="3-a", x_a=1, atime=10)
    b = fdoc({S2: {"copies": 1, "mtime": 2}}, _rev="3-b", x_b=2, atime=20)
    a0, b0 = copy.deepcopy(a), copy.deepcopy(b)
    m = tr.merge_file_conflict(a, b)
    assert (a, b) == (a0, b0)
    assert m["stored"] == {S1: {"copies": 1, "mtime": 1}, S2: {"copies": 1, "mtime": 2}}
    assert m["_rev"] == "3-a" and m["x_a"] == 1 and m["x_b"] == 2 and m["atime"] == 20
    assert check_file(m) == []
    m["stored"][S1]["copies"] = 9
    assert a["stored"][S1]["copies"] == 1


def test_merge_same_mtime_same_copies_keeps_newest_verified_and_pinned():
    a = fdoc({S1: {"copies": 1, "mtime": 5, "verified": 10}})
    b = fdoc({S1: {"copies": 1, "mtime": 5, "verified": 20, "pinned": True}})
    assert tr.merge_file_conflict(a, b)["stored"][S1] == {
        "copies": 1,
        "mtime": 5,
        "verified": 20,
        "pinned": True,
    }
    c = fdoc({S1: {"copies": 1, "mtime": 5}})
    assert tr.merge_file_conflict(c, a)["stored"][S1] == {"copies": 1, "mtime": 5, "verified": 10}


def test_merge_disagreeing_copies_keeps_the_lower_and_asks_for_verification():
    # One side downgraded the copy, the other verified it: neither is known to be newer.
    a = fdoc({S1: {"copies": 0, "mtime": 5, "verified": 10}})
    b = fdoc({S1: {"copies": 1, "mtime": 5, "verified": 20, "pinned": True}})
    for m in (tr.merge_file_conflict(a, b), tr.merge_file_conflict(b, a)):
        assert m["stored"][S1] == {"copies": 0, "mtime": 5, "pinned": True}


def test_merge_newer_mtime_wins_whole():
    old = fdoc({S1: {"copies": 1, "mtime": 5, "verified": 30, "x_o": 1}})
    new = fdoc({S1: {"copies": 0, "mtime": 9}})
    for m in (tr.merge_file_conflict(old, new), tr.merge_file_conflict(new, old)):
        assert m["stored"][S1] == {"copies": 0, "mtime": 9, "x_o": 1}


def test_merge_corrupt_marks_and_stale_entries():
    # a found S1 corrupt at 100 (quarantined); b still has its older entry for S1.
    a = fdoc({S2: {"copies": 1, "mtime": 1}}, corrupt={S1: {"time": 100}, S3: {"time": 50}})
    b = fdoc({S1: {"copies": 1, "mtime": 40, "verified": 90}}, corrupt={S3: {"time": 70}})
    m = tr.merge_file_conflict(a, b)
    assert m["stored"] == {S2: {"copies": 1, "mtime": 1}}
    assert m["corrupt"] == {S1: {"time": 100}, S3: {"time": 70}}
    assert check_file(m) == []
    # b re-copied the file to S1 after the corruption: that copy is kept.
    b["stored"][S1] = {"copies": 1, "mtime": 150}
    m = tr.merge_file_conflict(b, a)
    assert m["stored"][S1] == {"copies": 1, "mtime": 150}
    assert m["corrupt"][S1] == {"time": 100}


def test_merge_keeps_a_side_that_re_added_after_its_own_corrupt_mark():
    a = fdoc({S1: {"copies": 1, "mtime": 10}}, corrupt={S1: {"time": 100}})
    b = fdoc({S1: {"copies": 1, "mtime": 10}})
    m = tr.merge_file_conflict(a, b)
    assert m["stored"][S1] == {"copies": 1, "mtime": 10}


def test_merge_origin_user_wins_and_atime_max():
    a = fdoc(origin="cache", atime=5)
    b = fdoc(origin="user", atime="junk")
    m = tr.merge_file_conflict(a, b)
    assert m["origin"] == "user" and m["atime"] == 5


def test_merge_never_loses_a_copy_location():
    a = fdoc({S1: {"copies": 1, "mtime": 1}, S2: {"copies": 0, "mtime": 3}})
    b = fdoc({S2: {"copies": 1, "mtime": 3, "verified": 4}, S3: {"copies": 2, "mtime": 1}})
    m = tr.merge_file_conflict(a, b)
    assert set(m["stored"]) == {S1, S2, S3}


@pytest.mark.parametrize(
    "a, b",
    [(None, None), ([], "x"), (None, {"stored": {S1: 5}}), ({"stored": "junk"}, 7)],
)
def test_merge_malformed_inputs(a, b):
    m = tr.merge_file_conflict(a, b)
    assert isinstance(m, dict) and isinstance(m["stored"], dict)
    assert all(protocol.is_store_id(k) for k in m["stored"])


# --- store docs -----------------------------------------------------------------------


def test_downgrade_store_keeps_the_first_time():
    doc = sdoc()
    assert tr.downgrade_store(doc, NOW, tr.REASON_STALE) is doc
    assert doc["downgraded"] == {"time": NOW, "reason": "atime"}
    assert tr.downgrade_store(doc, NOW + 5, tr.REASON_CORRUPT) is None
    assert doc["downgraded"] == {"time": NOW, "reason": "atime"}
    assert tr.store_copies_weight(doc) == 0
    assert tr.is_store_trusted(doc) is True  # downgraded alone still takes new copies
    assert check_store(doc) == []


def test_a_downgrade_with_an_event_is_pending_until_done():
    doc = sdoc()
    ev = protocol.log_id(NOW)
    assert tr.downgrade_store(doc, NOW, tr.REASON_USER, ev, 7) is doc
    assert doc["downgraded"] == {
        "time": NOW,
        "reason": "user",
        "event": ev,
        "pending": True,
        "count": 7,
    }
    assert check_store(doc) == []
    assert tr.store_copies_weight(doc) == 0  # counts 0 from the mark on, not from the end
    assert tr.pending_downgrade(doc) is doc["downgraded"]
    assert tr.downgrade_store(doc, NOW + 5, tr.REASON_CORRUPT, protocol.log_id(NOW)) is None
    assert tr.downgrade_done(doc, protocol.log_id(NOW + 9)) is None  # another downgrade's
    assert tr.downgrade_done(doc, ev) is doc
    assert "pending" not in doc["downgraded"] and doc["downgraded"]["event"] == ev
    assert tr.pending_downgrade(doc) is None
    assert tr.downgrade_done(doc, ev) is None  # done once
    assert check_store(doc) == []


def test_begin_purge_records_the_intent_once():
    doc = sdoc()
    ev = protocol.log_id(NOW)
    assert tr.takes_new_copies(doc)
    assert tr.begin_purge(doc, NOW, "atime", ev, 3, {"label": "usb"}) is doc
    mark = {"time": NOW, "reason": "atime", "event": ev, "count": 3, "fields": {"label": "usb"}}
    assert doc["purging"] == mark
    assert tr.pending_purge(doc) == mark
    assert tr.begin_purge(doc, NOW + 1, "user", protocol.log_id(NOW + 1), 0, {}) is None
    assert doc["purging"] == mark  # the purge under way is the one finished
    assert not tr.takes_new_copies(doc)  # a copy placed now would be forgotten with it
    assert check_store(doc) == []


def test_pending_marks_of_junk_are_none():
    for junk in (None, [], "doc", 5, sdoc(), sdoc(downgraded="yes"), sdoc(purging=[1])):
        assert tr.pending_downgrade(junk) is None
        assert tr.pending_purge(junk) is None
    assert (
        tr.pending_downgrade(sdoc(downgraded={"time": 1, "reason": "x", "pending": True})) is None
    )
    assert tr.downgrade_done("junk", "x") is None
    assert tr.begin_purge("junk", NOW, "user", "x", 1, {}) is None
    bad = sdoc(downgraded={"time": 1, "reason": "x", "event": "e", "pending": 1, "count": -1})
    assert len(check_store(bad)) == 3
    assert check_store(sdoc(purging={"time": 1})) == ["purging.reason: must be a str, got None"]


def test_flag_failing_counts_and_withdraws_acknowledgement():
    doc = sdoc(x_k=[1])
    assert tr.flag_failing(doc, NOW, tr.REASON_CORRUPT) is doc
    assert doc["no_new_copies"] is True
    assert doc["failure"] == {
        "time": NOW,
        "reason": "corrupt",
        "corrupt_count": 1,
        "acknowledged": False,
    }
    assert tr.acknowledge_failure(doc, NOW + 1) is doc
    assert doc["failure"]["acknowledged"] is True
    assert doc["failure"]["acknowledged_time"] == NOW + 1
    assert tr.acknowledge_failure(doc, NOW + 2) is None
    tr.flag_failing(doc, NOW + 10, "other", corrupt_count_increment=2)
    assert doc["failure"] == {
        "time": NOW,
        "reason": "corrupt",
        "corrupt_count": 3,
        "acknowledged": False,
    }
    assert tr.is_store_trusted(doc) is False and tr.store_copies_weight(doc) == 0
    assert doc["x_k"] == [1] and check_store(doc) == []


def test_flag_failing_repairs_a_malformed_failure():
    doc = sdoc(failure={"time": "x", "corrupt_count": -5})
    tr.flag_failing(doc, NOW, "corrupt")
    assert doc["failure"] == {
        "time": NOW,
        "reason": "corrupt",
        "corrupt_count": 1,
        "acknowledged": False,
    }
    assert check_store(doc) == []
    doc = sdoc(failure="junk")
    tr.flag_failing(doc, NOW, "corrupt", 0)
    assert doc["failure"]["corrupt_count"] == 0 and check_store(doc) == []


def test_acknowledge_without_failure_changes_nothing():
    doc = sdoc()
    assert tr.acknowledge_failure(doc, NOW) is None
    assert "failure" not in doc
    assert tr.acknowledge_failure(sdoc(failure="junk"), NOW) is None


def test_trust_store_clears_every_flag():
    doc = sdoc()
    tr.downgrade_store(doc, NOW, "corrupt")
    tr.flag_failing(doc, NOW, "io_errors", 0)
    doc["read_errors"] = {"count": 12, "first": NOW - 60, "last": NOW}
    assert tr.trust_store(doc) is doc
    assert doc["no_new_copies"] is False
    assert "downgraded" not in doc and "failure" not in doc
    assert "read_errors" not in doc  # the count starts again: one more error is not 13
    assert tr.is_store_trusted(doc) and tr.store_copies_weight(doc) == 1
    assert tr.trust_store(doc) is None
    assert check_store(doc) == []
    junk = sdoc(no_new_copies="maybe")
    assert tr.trust_store(junk) is junk and junk["no_new_copies"] is False


def test_touch_store():
    doc = sdoc(atime=5)
    m = protocol.random_id()
    assert tr.touch_store(doc, NOW + 0.7, 1000, 400, m) is doc
    assert (doc["atime"], doc["bytes_total"], doc["bytes_avail"], doc["machine_id"]) == (
        NOW,
        1000,
        400,
        m,
    )
    assert check_store(doc) == []


def test_touch_store_clears_only_a_stale_downgrade():
    stale = sdoc(downgraded={"time": 1, "reason": tr.REASON_STALE})
    tr.touch_store(stale, NOW, 1, 1, None)
    assert "downgraded" not in stale and tr.store_copies_weight(stale) == 1
    corrupt = sdoc(downgraded={"time": 1, "reason": tr.REASON_CORRUPT})
    tr.touch_store(corrupt, NOW, 1, 1, None)
    assert corrupt["downgraded"] == {"time": 1, "reason": "corrupt"}
    failing = sdoc(downgraded={"time": 1, "reason": tr.REASON_STALE}, failure={"time": 1})
    tr.touch_store(failing, NOW, 1, 1, None)
    assert tr.store_copies_weight(failing) == 0  # the failure still holds


@pytest.mark.parametrize(
    "over, trusted, weight",
    [
        ({}, True, 1),
        ({"copies": 2}, True, 2),
        ({"copies": 0}, True, 0),
        ({"copies": -1}, True, 0),
        ({"copies": True}, True, 0),
        ({"copies": None}, True, 0),
        ({"no_new_copies": True}, False, 1),
        ({"no_new_copies": "false"}, False, 1),
        ({"no_new_copies": None}, True, 1),
        ({"failure": {"time": 1}}, False, 0),
        ({"failure": "junk"}, False, 0),
        ({"failure": None}, True, 1),
        ({"downgraded": {"time": 1, "reason": "user"}}, True, 0),
    ],
)
def test_trust_and_weight(over, trusted, weight):
    doc = sdoc(**over)
    assert tr.is_store_trusted(doc) is trusted
    assert tr.store_copies_weight(doc) == weight


def test_store_transitions_keep_x_keys():
    doc = sdoc(x_a={"b": 1})
    for fn, args in [
        (tr.touch_store, (NOW, 1, 1, None)),
        (tr.downgrade_store, (NOW, "user")),
        (tr.flag_failing, (NOW, "corrupt")),
        (tr.acknowledge_failure, (NOW,)),
        (tr.trust_store, ()),
    ]:
        fn(doc, *args)
        assert doc["x_a"] == {"b": 1}, fn.__name__


# --- robustness -----------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=10), c, max_size=3),
    max_leaves=12,
)
store_keys = st.sampled_from([S1, S2, "junk", "x_a", ""])


@st.composite
def junk_file_docs(draw):
    doc = draw(st.dictionaries(st.sampled_from(["stored", "corrupt", "atime", "origin", "x_a"]),
                               json_values, max_size=4))  # fmt: skip
    if draw(st.booleans()):
        doc["stored"] = draw(st.dictionaries(store_keys, json_values, max_size=3))
    if draw(st.booleans()):
        doc["corrupt"] = draw(st.dictionaries(store_keys, json_values, max_size=3))
    return doc


@settings(max_examples=300, deadline=None)
@given(junk_file_docs(), junk_file_docs())
def test_file_transitions_never_raise_and_always_leave_clean_stored(a, b):
    for name, d, result in _apply_every_file_transition(a):
        assert result is None or result is d, name
        stored = d["stored"]
        assert isinstance(stored, dict)
        for k, v in stored.items():
            assert protocol.is_store_id(k) or k.startswith("x_")
            if protocol.is_store_id(k):
                assert type(v["copies"]) is int and v["copies"] >= 0
                assert type(v["mtime"]) is int and v["mtime"] >= 0
        if "x_a" in a:
            assert "x_a" in d
    m = tr.merge_file_conflict(a, b)
    assert isinstance(m["stored"], dict)
    if "corrupt" in m:
        assert isinstance(m["corrupt"], dict) and m["corrupt"]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.sampled_from(["copies", "failure", "downgraded", "no_new_copies",
                                        "x_a"]), json_values, max_size=5))  # fmt: skip
def test_store_transitions_never_raise(doc):
    for fn, args in [
        (tr.is_store_trusted, ()),
        (tr.store_copies_weight, ()),
        (tr.touch_store, (NOW, 1, 1, None)),
        (tr.downgrade_store, (NOW, "user")),
        (tr.flag_failing, (NOW, "corrupt")),
        (tr.acknowledge_failure, (NOW,)),
        (tr.trust_store, ()),
    ]:
        fn(copy.deepcopy(doc), *args)
