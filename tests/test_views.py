"""One answer for each fact (issue 11 point 1): the doc views, and every layer agreeing.

Each `test_*_agree*` test names an inconsistency the old code had: two modules decided
the same fact differently. They read the same docs through every module that answers.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dmedia_tui import durability, health, metastore, protocol, schema
from dmedia_tui import transitions as tr
from dmedia_tui.config import Config, Thresholds
from dmedia_tui.metastore import MetaStore
from dmedia_tui.tui import data as tui_data
from dmedia_tui.views import (
    DEFAULT_STORE_COPIES,
    FileView,
    MachineView,
    StoreView,
    copy_count,
    store_label,
)
from tests.conftest import NOW

S1, S2, S3 = (protocol.random_id() for _ in range(3))
CH = protocol.hash_bytes(b"views\n")


def store_doc(store_id: str = S1, **over: Any) -> dict[str, Any]:
    doc = schema.create_store(NOW - 1000, store_id, label="usb")
    doc.update(over)
    return doc


def file_doc(stored: dict[str, Any], **over: Any) -> dict[str, Any]:
    doc = schema.create_file(NOW - 1000, CH, {}, name="a.mov")
    doc["stored"] = stored
    doc.update(over)
    return doc


def health_row(doc: dict[str, Any]) -> health.StoreRow:
    h = health.assess([], [doc], [], NOW, {doc["_id"]}, Thresholds())
    (row,) = h.store_rows
    return row


# --- a copy's count ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "copies, count",
    [(2, 2), (2.0, 2), (0, 0), (10, 10), (11, 0), (-1, 0), (2.5, 0), (True, 0), ("2", 0),
     (None, 0), (float("nan"), 0)],
)  # fmt: skip
def test_copy_count(copies, count):
    assert copy_count({"copies": copies, "mtime": 1}) == count
    assert durability.durability(file_doc({S1: {"copies": copies, "mtime": 1}})) == count


def test_copies_2_0_still_counts_2_after_an_unrelated_write():
    """`copies: 2.0` counted 2 in durability, but the next write to the doc (a copy added
    on another store) cleaned it to 0: the file went from durability 3 to 1."""
    doc = file_doc({S1: {"copies": 2.0, "mtime": 5, "verified": 6}})
    assert durability.durability(doc) == 2
    tr.mark_added(doc, S2, 1, 7)
    assert doc["stored"][S1]["copies"] == 2
    assert durability.durability(doc) == 3
    assert schema.check_file(doc) == []  # and the value is now a clean int


def test_cleaning_never_changes_what_a_copy_counts():
    for copies in (0, 1, 2.0, 3, 10, 11, 2.5, -1, True, "1", None, [1]):
        doc = file_doc({S1: {"copies": copies, "mtime": 1}})
        before = copy_count(doc["stored"][S1])
        tr.clean_stored(doc)
        assert copy_count(doc["stored"][S1]) == before, copies


def test_the_app_counts_copies_as_durability_does():
    """The store page showed int(copies): 11 (worth nothing) showed as 11 copies here."""
    doc = file_doc({S1: {"copies": 11, "mtime": 1}, S2: {"copies": 2.0, "mtime": 1}})
    assert tui_data.file_row(doc, S1).copies_here == 0 == copy_count(doc["stored"][S1])
    assert tui_data.file_row(doc, S2).copies_here == 2
    assert tui_data.file_row(doc, S2).durability == durability.durability(doc) == 2


# --- a store's weight and whether it takes new copies --------------------------------------


def test_a_store_without_copies_is_worth_the_default_everywhere():
    """health counted a store doc without `copies` as weight 1, transitions as 0 (so it
    took no new copy while the dashboard showed it as storage of weight 1)."""
    doc = store_doc()
    del doc["copies"]
    assert DEFAULT_STORE_COPIES == 1
    assert StoreView.of(doc).weight == 1
    assert tr.store_copies_weight(doc) == 1
    assert tr.takes_new_copies(doc) is True
    assert health_row(doc).copies == 1


@pytest.mark.parametrize("junk", ["2", None, -1, 11, 1.5, True, [1]])
def test_junk_copies_is_worth_nothing_everywhere(junk):
    """health counted junk `copies` ("2", 1.5, true) as 1, transitions as 0."""
    doc = store_doc(copies=junk)
    assert tr.store_copies_weight(doc) == 0
    assert tr.takes_new_copies(doc) is False
    assert health_row(doc).copies == 0


def test_a_whole_float_weight_counts_like_the_int():
    doc = store_doc(copies=2.0)
    assert tr.store_copies_weight(doc) == 2 == health_row(doc).copies
    assert tr.takes_new_copies(doc) is True


@pytest.mark.parametrize(
    "over, trusted, takes",
    [
        ({}, True, True),
        ({"no_new_copies": True}, False, False),
        ({"no_new_copies": "no"}, False, False),  # junk flags never trust a store
        ({"failure": {"time": 1}}, False, False),
        ({"downgraded": {"time": 1, "reason": "user"}}, True, False),
        ({"copies": 0}, True, False),
    ],
)
def test_trusted_and_takes_new_copies_is_one_rule(over, trusted, takes):
    doc = store_doc(**over)
    view = StoreView.of(doc)
    assert view.trusted is trusted and tr.is_store_trusted(doc) is trusted
    assert view.takes_new_copies is takes and tr.takes_new_copies(doc) is takes


# --- a store's label -----------------------------------------------------------------------


@pytest.mark.parametrize("label", ["", 5, None, ["usb"]])
def test_a_store_without_a_usable_label_is_named_by_its_id_everywhere(label, tmp_path: Path):
    """The rule existed 7 times: the app's data layer showed an empty label as '' and an
    event showed a non-string label as itself; health and the CLI used the ID."""
    doc = store_doc(label=label)
    want = S1[:8]
    assert store_label(doc) == want == StoreView.of(doc).label
    assert metastore.store_label(doc) == want
    assert health_row(doc).label == want
    event = {"_id": "x", "type": schema.LOG_STORE_PURGE, "store_id": S1, "label": label}
    assert tui_data.event_line(event, {}, {}).subject == want


def test_labels_in_the_app_data_layer_follow_the_rule(sqlite_library, tmp_path: Path, clock):
    ms = MetaStore(sqlite_library, Config.load(tmp_path / "c", tmp_path / "d"), clock)
    ms.lib.docs.save(store_doc(S1, label=""))
    ms.lib.docs.save(store_doc(S2, label="usb-2"))
    assert tui_data._labels(ms) == {S1: S1[:8], S2: "usb-2"}


# --- the app's data layer never fails a page on one bad doc -------------------------------


def test_a_malformed_doc_does_not_fail_the_store_page(sqlite_library, tmp_path: Path, clock):
    """`bytes: "12x"` made int() raise in the page loader: the whole store page failed."""
    ms = MetaStore(sqlite_library, Config.load(tmp_path / "c", tmp_path / "d"), clock)
    ms.lib.docs.save(store_doc(S1))
    good = file_doc({S1: {"copies": 1, "mtime": 1}})
    bad_hash = protocol.hash_bytes(b"another file\n")
    bad = schema.create_file(NOW - 1000, bad_hash, {S1: {"copies": 1, "mtime": 1}})
    bad.update(bytes="12x", name=["not", "a", "name"], origin=7)
    bad["stored"][S1]["verified"] = "yesterday"
    ms.lib.docs.save(good)
    ms.lib.docs.save(bad)
    rows = {r.id: r for r in tui_data.load_files_page(ms, S1)}
    assert set(rows) == {good["_id"], bad["_id"]}
    r = rows[bad["_id"]]
    assert (r.bytes, r.name, r.origin, r.verified) == (0, bad["_id"][:16], "user", None)
    data = tui_data.load_file(ms, bad["_id"])
    assert data is not None and data.view.bytes == 0
    assert [loc.store_id for loc in data.locations] == [S1]


# --- the views themselves ------------------------------------------------------------------


def test_views_of_things_that_are_not_docs_are_none():
    for junk in (None, [], "x", {}, {"_id": 5}, {"_id": ""}):
        assert StoreView.of(junk) is None
        assert FileView.of(junk) is None
        assert MachineView.of(junk) is None


def test_file_view_reads_every_field_tolerantly():
    doc = file_doc(
        {S1: {"copies": 1, "mtime": 3, "verified": 4.0, "pinned": True}, "junk": {"copies": 3},
         S2: "not an entry"},
        corrupt={S3: {"time": 9}, "junk": 1},
    )  # fmt: skip
    v = FileView.of(doc)
    assert [c.store_id for c in v.copies] == sorted([S1, S2])
    assert v.copy_on(S1) == v.copies[[c.store_id for c in v.copies].index(S1)]
    c1 = v.copy_on(S1)
    assert (c1.copies, c1.mtime, c1.verified, c1.pinned) == (1, 3, 4, True)
    assert v.copy_on(S2).copies == 0 and v.copy_on(S3) is None
    assert v.corrupt == ((S3, 9.0),)
    assert v.durability == durability.durability(doc) == 1


def test_machine_view():
    doc = {"_id": S1, "hostname": "", "atime": "now", "stores": [S2, "junk", 3]}
    v = MachineView.of(doc)
    assert (v.hostname, v.atime, v.stores) == (S1[:8], None, (S2,))
