"""Schema: constructors build valid docs; validators list every problem and never raise."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from dmedia_tui import protocol, schema
from dmedia_tui.schema import (
    SchemaError,
    check_doc,
    check_file,
    check_file_consistency,
    check_log,
    check_machine,
    check_store,
    create_file,
    create_log,
    create_machine,
    create_store,
    create_stored_value,
)
from tests.conftest import NOW

S1 = protocol.random_id()
S2 = protocol.random_id()
M1 = protocol.random_id()
CH = protocol.hash_bytes(b"the content of a small file\n")
BIG = protocol.hash_bytes(b"x" * (protocol.LEAF_SIZE + 10))  # two leaves


def file_doc(**over):
    doc = create_file(NOW, CH, {S1: create_stored_value(1, NOW - 100, NOW - 50)}, name="A.MOV")
    doc.update(over)
    return doc


def store_doc(**over):
    doc = create_store(NOW, S1, label="usb-backup")
    doc.update(over)
    return doc


def machine_doc(**over):
    doc = create_machine(NOW, M1, "studio", [S1, S2])
    doc.update(over)
    return doc


def log_doc(**over):
    doc = create_log(NOW, schema.LOG_FILE_CORRUPT, M1, file_id=CH.id, store_id=S1)
    doc.update(over)
    return doc


# --- constants ------------------------------------------------------------------------


def test_log_types_are_the_data_safety_events():
    expected = {
        "dmedia/file/corrupt",
        "dmedia/file/missing",
        "dmedia/file/inconsistent",
        "dmedia/file/unreadable",
        "dmedia/doc/invalid",
        "dmedia/store/downgrade",
        "dmedia/store/purge",
        "dmedia/store/failing",
        "dmedia/store/trust",
        "dmedia/store/ack",
        "dmedia/check/result",
        "dmedia/transfer/done",
        "dmedia/transfer/failed",
        "dmedia/transfer/corrupt",
        "dmedia/peer/unreachable",
        "dmedia/peer/reachable",
    }
    assert expected == schema.LOG_TYPES
    assert schema.ORIGINS[0] == "user"
    assert set(schema.ORIGINS) == {"user", "paid", "render", "proxy", "cache", "download"}


# --- constructors ---------------------------------------------------------------------


def test_create_file_has_every_field_and_is_valid_and_consistent():
    stored = {S1: create_stored_value(1, 1234)}
    doc = create_file(NOW + 0.5, CH, stored, name="MVI_5751.MOV")
    assert doc == {
        "_id": CH.id,
        "type": "dmedia/file",
        "time": NOW + 0.5,
        "atime": NOW,
        "bytes": CH.file_size,
        "origin": "user",
        "leaf_hashes": protocol.encode_leaf_hashes(CH.leaf_hashes),
        "stored": {S1: {"copies": 1, "mtime": 1234}},
        "name": "MVI_5751.MOV",
        "ext": "mov",
    }
    assert type(doc["atime"]) is int
    assert check_doc(doc) == []
    assert check_file_consistency(doc) == []
    # The stored values are copies, not the caller's dicts.
    doc["stored"][S1]["copies"] = 0
    assert stored[S1]["copies"] == 1


def test_create_file_accepts_a_tuple_and_other_origins():
    doc = create_file(NOW, (BIG.id, BIG.file_size, BIG.leaf_hashes), {}, origin="proxy")
    assert doc["origin"] == "proxy" and doc["stored"] == {}
    assert "name" not in doc and "ext" not in doc
    assert check_file(doc) == [] and check_file_consistency(doc) == []


@pytest.mark.parametrize(
    "name, ext, expected",
    [
        ("photo.JPG", None, "jpg"),
        ("archive.tar.gz", None, "gz"),
        ("README", None, None),
        (".bashrc", None, None),
        ("weird.ext ension", None, None),
        ("clip.mov", "MP4", "mp4"),
        (None, "wav", "wav"),
    ],
)
def test_create_file_ext(name, ext, expected):
    doc = create_file(NOW, CH, {}, name=name, ext=ext)
    assert doc.get("ext") == expected
    assert check_file(doc) == []


@pytest.mark.parametrize(
    "kwargs",
    [
        {"origin": "mine"},
        {"stored": {"not-a-store": {"copies": 1, "mtime": 1}}},
        {"stored": {S1: {"copies": -1, "mtime": 1}}},
        {"ext": "a b"},
    ],
)
def test_create_file_refuses_invalid_values(kwargs):
    args = {"stored": {}, **kwargs}
    with pytest.raises(SchemaError, match="invalid file doc"):
        create_file(NOW, CH, **args)


def test_create_file_refuses_a_bad_id_and_negative_time():
    with pytest.raises(SchemaError, match="_id"):
        create_file(NOW, ("short", 5, b"x" * 30), {})
    with pytest.raises(SchemaError):
        create_file(-1, CH, {})


def test_create_stored_value():
    assert create_stored_value(1, 17.9) == {"copies": 1, "mtime": 17}
    assert create_stored_value(0, 17, verified=NOW + 0.7) == {
        "copies": 0,
        "mtime": 17,
        "verified": NOW,
    }
    for bad in [(-1, 1), (True, 1), (1.0, 1), (1, -5), (1, "1"), (1, float("nan"))]:
        with pytest.raises(SchemaError):
            create_stored_value(*bad)
    with pytest.raises(SchemaError):
        create_stored_value(1, 1, verified=-3)


def test_create_store_has_every_design_field():
    doc = create_store(NOW + 0.25, S1, copies=2, label="studio-int", bytes_total=10, internal=True)
    assert doc == {
        "_id": S1,
        "type": "dmedia/store",
        "time": NOW + 0.25,
        "copies": 2,
        "atime": NOW,
        "bytes_total": 10,
        "bytes_avail": 0,
        "machine_id": None,
        "label": "studio-int",
        "drive_serial": None,
        "drive_model": None,
        "partition_uuid": None,
        "removable": False,
        "internal": True,
        "no_new_copies": False,
    }
    assert check_doc(doc) == []


def test_create_store_optional_and_x_fields():
    doc = create_store(
        NOW,
        S1,
        filesystem_id="fsid:1234abcd",
        mount_path="/media/me/usb",
        relative_path="",
        filesystem_type="ext4",
        filesystem_label="BACKUP",
        drive_bus="usb",
        x_app={"anything": [1, 2]},
        machine_id=M1,
        atime=5,
    )
    assert doc["filesystem_type"] == "ext4" and doc["x_app"] == {"anything": [1, 2]}
    assert doc["atime"] == 5 and doc["machine_id"] == M1
    assert check_store(doc) == []
    assert check_store(create_store(NOW, S1, filesystem_id=2049)) == []


def test_create_store_refuses_unknown_fields_and_bad_values():
    with pytest.raises(SchemaError, match="unknown store field.*drive_serail"):
        create_store(NOW, S1, drive_serail="WD-1")
    with pytest.raises(SchemaError, match="_id"):
        create_store(NOW, "abc")
    with pytest.raises(SchemaError, match="copies"):
        create_store(NOW, S1, copies=-1)
    with pytest.raises(SchemaError, match="removable"):
        create_store(NOW, S1, removable="yes")


def test_create_machine():
    doc = create_machine(NOW + 0.9, M1, "studio", (S1,))
    assert doc == {
        "_id": M1,
        "type": "dmedia/machine",
        "time": NOW + 0.9,
        "atime": NOW,
        "hostname": "studio",
        "stores": [S1],
    }
    assert check_doc(doc) == []
    with pytest.raises(SchemaError, match=r"stores\[0\]"):
        create_machine(NOW, M1, "studio", ["junk"])


def test_create_log_id_sorts_by_time_and_is_valid():
    doc = create_log(NOW + 0.5, schema.LOG_STORE_DOWNGRADE, M1, store_id=S1, count=3)
    assert protocol.log_id_time(doc["_id"]) == NOW
    assert doc["time"] == NOW + 0.5 and doc["machine_id"] == M1 and doc["count"] == 3
    assert check_doc(doc) == []
    later = create_log(NOW + 1, schema.LOG_STORE_PURGE, M1, store_id=S1)
    assert later["_id"] > doc["_id"]


def test_create_log_refuses_bad_events():
    with pytest.raises(SchemaError, match="not a log event type"):
        create_log(NOW, "dmedia/file/copied", M1)
    with pytest.raises(SchemaError, match="file_id"):
        create_log(NOW, schema.LOG_FILE_MISSING, M1, store_id=S1)
    with pytest.raises(SchemaError, match="store_id"):
        create_log(NOW, schema.LOG_STORE_FAILING, M1)
    with pytest.raises(SchemaError, match="sets _id"):
        create_log(NOW, schema.LOG_DOC_INVALID, M1, _id="x")


def test_constructed_docs_are_json():
    for doc in (file_doc(), store_doc(), machine_doc(), log_doc()):
        assert json.loads(json.dumps(doc)) == doc


# --- common rules and dispatch --------------------------------------------------------


@pytest.mark.parametrize("junk", [None, [], [1, 2], "dmedia/file", 5, 1.5, True, b"x"])
def test_check_doc_on_non_objects(junk):
    for fn in (check_doc, check_file, check_store, check_machine, check_log):
        problems = fn(junk)
        assert len(problems) == 1 and problems[0].startswith("doc: must be a JSON object")
    assert check_file_consistency(junk)


def test_common_rules_report_every_problem():
    problems = check_doc({"_id": 5, "type": "Dmedia/File", "time": -1, "_rev": 3})
    assert problems == [
        "_id: must be a non-empty str, got 5",
        "type: must match dmedia/[a-z]+(/[a-z]+)*, got 'Dmedia/File'",
        "time: must be a number >= 0, got -1",
        "_rev: must be a str, got 3",
    ]
    assert check_doc({}) == [
        "_id: must be a non-empty str, got None",
        "type: must match dmedia/[a-z]+(/[a-z]+)*, got None",
        "time: missing",
    ]


@pytest.mark.parametrize("t", [True, float("inf"), float("nan"), "1", None, -0.5])
def test_time_must_be_a_finite_number(t):
    assert any(p.startswith("time:") for p in check_doc(file_doc(time=t)))


def test_unknown_dmedia_types_get_the_common_rules_only():
    assert check_doc({"_id": "anything", "type": "dmedia/project", "time": 1}) == []
    assert check_doc({"_id": "x", "type": "dmedia/project", "time": "now"}) == [
        "time: must be a number >= 0, got 'now'"
    ]


def test_design_local_and_deleted_docs_are_skipped():
    assert check_doc({"_id": "_design/core", "views": {}}) == []
    assert check_doc({"_id": "_local/dmedia"}) == []
    assert check_doc({"_id": CH.id, "_rev": "2-x", "_deleted": True}) == []


def test_check_doc_dispatches_on_type():
    bad_file = file_doc(bytes=0)
    assert check_doc(bad_file) == check_file(bad_file) == ["bytes: must be an int >= 1, got 0"]
    assert check_doc(store_doc(copies="1")) == ["copies: must be an int >= 0, got '1'"]
    assert check_doc(machine_doc(hostname=None)) == ["hostname: must be a str, got None"]
    assert check_doc(log_doc(count=-1)) == ["count: must be an int >= 0, got -1"]


def test_a_specific_checker_reports_a_wrong_type():
    assert check_file(store_doc()) != []
    assert "type: must be 'dmedia/file', got 'dmedia/store'" in check_file(
        file_doc(type="dmedia/store")
    )


# --- files ----------------------------------------------------------------------------


def test_file_rules_report_every_problem_with_its_path():
    doc = file_doc(
        _id="3" * 47,
        bytes=True,
        origin="USER",
        atime=1.5,
        leaf_hashes="not base64!",
        name=7,
        ext="MOV",
        stored={
            S1: {"copies": -1, "mtime": 1.5, "verified": "yesterday", "pinned": False},
            S2: {},
            "junk": {"copies": 1, "mtime": 1},
            "x_other_app": "whatever",
        },
        corrupt={S1: {"time": "then"}, "bad": {"time": 1}, "x_note": None},
    )
    assert check_file(doc) == [
        "_id: must be a 48-character file ID, got '" + "3" * 47 + "'",
        "bytes: must be an int >= 1, got True",
        "origin: must be one of user, paid, render, proxy, cache, download, got 'USER'",
        "atime: must be an int >= 0, got 1.5",
        "leaf_hashes: must be a non-empty base64 str, got 'not base64!'",
        f"stored.{S1}: copies must be an int >= 0, got -1",
        f"stored.{S1}: mtime must be an int >= 0, got 1.5",
        f"stored.{S1}: verified must be an int >= 0, got 'yesterday'",
        f"stored.{S1}: pinned must be true when present, got False",
        f"stored.{S2}: copies missing",
        f"stored.{S2}: mtime missing",
        "stored: key 'junk' is not a valid store ID",
        f"corrupt.{S1}: must be {{time: number >= 0}}, got {{'time': 'then'}}",
        "corrupt: key 'bad' is not a valid store ID",
        "name: must be a str, got 7",
        "ext: must be a lower-case extension without leading dot, got 'MOV'",
    ]


def test_file_required_fields_missing():
    doc = {"_id": CH.id, "type": "dmedia/file", "time": NOW}
    assert check_file(doc) == [
        "bytes: missing",
        "origin: must be one of user, paid, render, proxy, cache, download, got None",
        "atime: missing",
        "leaf_hashes: must be a non-empty base64 str, got None",
        "stored: must be an object, got None",
    ]


@pytest.mark.parametrize("stored", [[], "S1", 5, None])
def test_stored_must_be_an_object(stored):
    assert check_file(file_doc(stored=stored)) == [f"stored: must be an object, got {stored!r}"]


@pytest.mark.parametrize("value", [None, 1, [1], "copies"])
def test_stored_value_must_be_an_object(value):
    assert check_file(file_doc(stored={S1: value})) == [
        f"stored.{S1}: must be an object, got {value!r}"
    ]


def test_valid_stored_variants():
    doc = file_doc(
        stored={
            S1: {"copies": 0, "mtime": 0, "verified": 0, "pinned": True},
            S2: {"copies": 2, "mtime": 5, "x_note": "kept"},
        },
        corrupt={protocol.random_id(): {"time": NOW + 0.5}},
    )
    assert check_file(doc) == []


@pytest.mark.parametrize("corrupt", [{}, [], "yes", None])
def test_corrupt_must_be_a_non_empty_object(corrupt):
    assert check_file(file_doc(corrupt=corrupt)) == [
        f"corrupt: must be a non-empty object when present, got {corrupt!r}"
    ]


def test_long_values_are_shortened_in_messages():
    problems = check_file(file_doc(origin="u" * 500))
    assert len(problems) == 1 and len(problems[0]) < 150 and problems[0].endswith("...")


def test_x_keys_are_never_reported():
    doc = file_doc(
        x_app=object(),
        x_list=[None],
        stored={S1: {"copies": 1, "mtime": 1, "x_": -1}, "x_copy": {"copies": -5}},
        corrupt={"x_only": 5},
    )
    assert check_file(doc) == []
    assert check_store(store_doc(x_flags="junk")) == []
    assert check_machine(machine_doc(x_=None)) == []
    assert check_log(log_doc(x_extra={1: 2})) == []


# --- consistency ----------------------------------------------------------------------


def test_consistency_of_valid_docs():
    assert check_file_consistency(file_doc()) == []
    big = create_file(NOW, BIG, {})
    assert check_file_consistency(big) == []


def test_consistency_names_each_distinct_failure():
    lh = protocol.encode_leaf_hashes(CH.leaf_hashes)
    cases = {
        "bad base64": (file_doc(leaf_hashes="!!!!"), "leaf_hashes: not valid base64"),
        "not a str": (file_doc(leaf_hashes=None), "leaf_hashes: not valid base64"),
        "length": (
            file_doc(leaf_hashes=protocol.encode_leaf_hashes(CH.leaf_hashes[:25])),
            "leaf_hashes: 25 bytes, not a multiple of 30",
        ),
        "leaf count": (
            file_doc(bytes=protocol.LEAF_SIZE + 1),
            f"leaf_hashes: 1 leaf hashes for {protocol.LEAF_SIZE + 1} bytes, expected 2",
        ),
        "two for one": (
            file_doc(leaf_hashes=protocol.encode_leaf_hashes(CH.leaf_hashes * 2)),
            f"leaf_hashes: 2 leaf hashes for {CH.file_size} bytes, expected 1",
        ),
        "bytes off by one": (
            file_doc(bytes=CH.file_size + 1),
            "_id: root hash of bytes and leaf_hashes does not match the file ID",
        ),
        "other leaf": (
            file_doc(leaf_hashes=protocol.encode_leaf_hashes(bytes(30))),
            "_id: root hash of bytes and leaf_hashes does not match the file ID",
        ),
        "other id": (
            file_doc(_id=BIG.id),
            "_id: root hash of bytes and leaf_hashes does not match the file ID",
        ),
        "bad id": (file_doc(_id="x"), "_id: not a file ID, got 'x'"),
        "bool bytes": (file_doc(bytes=True), "bytes: must be an int >= 1, got True"),
        "zero bytes": (file_doc(bytes=0), "bytes: must be an int >= 1, got 0"),
    }
    for name, (doc, expected) in cases.items():
        problems = check_file_consistency(doc)
        assert len(problems) == 1, name
        assert problems[0].startswith(expected), (name, problems)
    assert lh == file_doc()["leaf_hashes"]


# --- stores, machines, logs -----------------------------------------------------------


def test_store_rules_report_every_problem():
    doc = store_doc(
        _id=CH.id,
        copies=True,
        atime=-1,
        bytes_total=1.5,
        bytes_avail="lots",
        machine_id="m1",
        label=5,
        drive_serial=[],
        filesystem_id=1.5,
        removable=1,
        internal=None,
        no_new_copies="false",
        downgraded={"time": "now"},
        failure={"time": 1, "reason": "corrupt", "corrupt_count": -2, "acknowledged": "no"},
    )
    assert check_store(doc) == [
        f"_id: must be a 24-character store ID, got '{CH.id}'",
        "copies: must be an int >= 0, got True",
        "atime: must be an int >= 0, got -1",
        "bytes_total: must be an int >= 0, got 1.5",
        "bytes_avail: must be an int >= 0, got 'lots'",
        "label: must be a str or null, got 5",
        "drive_serial: must be a str or null, got []",
        "filesystem_id: must be a str, an int or null, got 1.5",
        "machine_id: must be a 24-character machine ID, got 'm1'",
        "removable: must be true or false, got 1",
        "internal: must be true or false, got None",
        "no_new_copies: must be true or false, got 'false'",
        "downgraded.time: must be a number >= 0, got 'now'",
        "downgraded.reason: must be a str, got None",
        "failure.corrupt_count: must be an int >= 0, got -2",
        "failure.acknowledged: must be true or false, got 'no'",
    ]


def test_store_valid_flags_and_missing_copies():
    doc = store_doc(
        no_new_copies=True,
        downgraded={"time": NOW, "reason": "corrupt"},
        failure={
            "time": NOW,
            "reason": "corrupt",
            "corrupt_count": 3,
            "acknowledged": True,
            "acknowledged_time": NOW + 1.5,
        },
    )
    assert check_store(doc) == []
    del doc["copies"]
    assert check_store(doc) == ["copies: missing"]
    assert check_store(store_doc(failure="yes", downgraded=[])) == [
        "downgraded: must be an object, got []",
        "failure: must be an object, got 'yes'",
    ]
    assert check_store(store_doc(failure={"time": 1, "reason": "x", "acknowledged_time": -1})) == [
        "failure.corrupt_count: must be an int >= 0, got None",
        "failure.acknowledged_time: must be a number >= 0, got -1",
    ]


def test_machine_rules():
    doc = machine_doc(_id="short", atime=None, stores=[S1, "junk", 5], hostname=b"h")
    assert check_machine(doc) == [
        "_id: must be a 24-character machine ID, got 'short'",
        "hostname: must be a str, got b'h'",
        "atime: must be an int >= 0, got None",
        "stores[1]: must be a store ID, got 'junk'",
        "stores[2]: must be a store ID, got 5",
    ]
    assert check_machine(machine_doc(stores={S1: {}})) == [
        f"stores: must be a list of store IDs, got {{'{S1}': {{}}}}"
    ]
    doc = machine_doc()
    del doc["atime"]
    assert check_machine(doc) == ["atime: missing"]


def test_machine_peer_rules():
    good = {"fingerprint": "ab" * 32, "addresses": ["192.168.1.20:8476", "[fd00::2]:8476"]}
    assert check_machine(machine_doc(peer=good)) == []
    assert check_machine(machine_doc(peer={**good, "cert": "-----BEGIN CERTIFICATE-----"})) == []
    bad = {"fingerprint": "ABC", "addresses": ["no-port"], "cert": 5}
    assert check_machine(machine_doc(peer=bad)) == [
        "peer.fingerprint: must be 64 lowercase hex digits, got 'ABC'",
        "peer.addresses: must be a list of host:port strings, got ['no-port']",
        "peer.cert: must be a PEM certificate string, got 5",
    ]
    assert check_machine(machine_doc(peer=[])) == ["peer: must be an object, got []"]


def test_log_rules():
    doc = log_doc(
        _id="not-a-log-id", machine_id=None, file_id="f", store_id=None, reason=1, errors=["a", 2]
    )
    assert check_log(doc) == [
        "_id: must be a 24-character log ID, got 'not-a-log-id'",
        "machine_id: must be a 24-character machine ID, got None",
        "file_id: must be a file ID, got 'f'",
        "store_id: must be a store ID, got None",
        "reason: must be a str, got 1",
        "errors: must be a list of str, got ['a', 2]",
    ]
    assert check_log(log_doc(type="dmedia/file/copied")) == [
        "type: not a log event type, got 'dmedia/file/copied'"
    ]
    invalid = create_log(NOW, schema.LOG_DOC_INVALID, M1, doc_id="junk", errors=["a", "b"])
    assert check_log(invalid) == []
    # check_doc only routes known log types to check_log; others get the common rules.
    assert check_doc(log_doc(type="dmedia/file/copied")) == []


# --- robustness and speed -------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=30), children, max_size=4)
    ),
    max_leaves=20,
)
keys = st.sampled_from(
    [
        "_id",
        "_rev",
        "type",
        "time",
        "bytes",
        "origin",
        "atime",
        "leaf_hashes",
        "stored",
        "corrupt",
        "name",
        "ext",
        "copies",
        "downgraded",
        "failure",
        "hostname",
        "stores",
        "machine_id",
        "file_id",
        "store_id",
        "count",
        "errors",
        "reason",
    ]
)
types = st.sampled_from(
    ["dmedia/file", "dmedia/store", "dmedia/machine", *sorted(schema.LOG_TYPES)]
)


@st.composite
def junk_docs(draw):
    doc = draw(st.dictionaries(keys | st.text(max_size=5), json_values, max_size=10))
    if draw(st.booleans()):
        doc["type"] = draw(types)
    if draw(st.booleans()):
        doc["stored"] = draw(
            st.dictionaries(st.sampled_from([S1, S2, "junk", "x_a"]), json_values, max_size=3)
        )
    return doc


@settings(max_examples=400, deadline=None)
@given(junk_docs() | json_values)
def test_validators_never_raise_on_any_json(doc):
    before = copy.deepcopy(doc)
    for fn in (check_doc, check_file, check_store, check_machine, check_log):
        problems = fn(doc)
        assert isinstance(problems, list)
        assert all(isinstance(p, str) and "\n" not in p for p in problems)
    consistency = check_file_consistency(doc)
    assert isinstance(consistency, list) and len(consistency) <= 1
    assert schema.file_doc_sound(doc) in (True, False)
    assert doc == before or doc != doc  # never touched (NaN compares unequal to itself)


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(st.text(max_size=8).map(lambda k: "x_" + k), json_values, max_size=4))
def test_any_x_keys_leave_valid_docs_valid(extra):
    for doc in (file_doc(), store_doc(), machine_doc(), log_doc()):
        doc.update(extra)
        assert check_doc(doc) == []


def test_store_id_memo_stays_bounded_and_admits_only_valid_ids():
    for _ in range(10_050):
        sid = protocol.random_id()
        assert check_file(file_doc(stored={sid: {"copies": 1, "mtime": 1}})) == []
    assert len(schema._VALID_STORE_IDS) <= 10_000
    assert "junk" not in schema._VALID_STORE_IDS
    assert check_file(file_doc(stored={"j" * 24: {"copies": 1, "mtime": 1}})) == [
        f"stored: key '{'j' * 24}' is not a valid store ID"
    ]


# --- file_doc_sound: the check pass's fast path ----------------------------------------


def clean(doc) -> bool:
    """What the check pass asks of a file doc, by the full validators."""
    return check_doc(doc) == [] and check_file_consistency(doc) == []


def clean_file_docs():
    """File docs as the app writes them, in every shape it writes."""
    s1, s2 = {S1: create_stored_value(1, NOW - 100, NOW - 50)}, {S2: create_stored_value(0, 5)}
    yield create_file(NOW, CH, s1, name="A.MOV")
    yield create_file(NOW + 0.25, CH, {**s1, **s2}, name="clip.tar.gz")  # float time
    yield create_file(NOW, CH, {}, origin="proxy")  # no copy, no name
    yield create_file(NOW, BIG, s1, name="BIG")  # two leaves, no ext
    for origin in schema.ORIGINS:
        yield create_file(NOW, BIG, s2, origin=origin, name="x.JPG")
    yield file_doc(_rev="3-abc", stored={S1: {"copies": 2, "mtime": 0, "pinned": True}})
    yield file_doc(stored={S1: {"copies": 1, "mtime": 1, "verified": 2, "x_note": [1]}})
    yield file_doc(x_app={"nested": [1, 2.5, None]}, newer_field="kept", name=None)
    yield file_doc(time=2**70)  # an int time has no upper bound
    yield file_doc(time=0, atime=0)


def test_file_doc_sound_passes_every_clean_file_doc_the_app_writes():
    for doc in clean_file_docs():
        assert clean(doc), doc
        assert schema.file_doc_sound(doc), doc
        assert schema.file_doc_sound(json.loads(json.dumps(doc))), doc


def test_file_doc_sound_leaves_the_unusual_to_the_full_validators():
    # Clean, but rare: the full validators decide (False says nothing is known).
    unusual = [
        file_doc(corrupt={S2: {"time": NOW}}),
        file_doc(name_b64="/w=="),
        file_doc(stored={"x_other_app": {"anything": 1}}),
    ]
    for doc in unusual:
        assert clean(doc) and not schema.file_doc_sound(doc)
    # A store ID seen for the first time: the full validators see it once, then it is fast.
    new_sid = protocol.random_id()
    doc = file_doc(stored={new_sid: {"copies": 1, "mtime": 1}})
    assert not schema.file_doc_sound(doc)
    assert clean(doc) and schema.file_doc_sound(doc)


NEAR = [
    None,
    True,
    False,
    -1,
    0,
    1,
    2,
    3,
    10,
    11,
    2**53 - 1,
    2**53,
    2**64,
    -(2**63),
    0.0,
    -0.0,
    0.5,
    1.0,
    1e300,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    "x",
    "user",
    "dmedia/file",
    "jpg",
    "tar.gz",
    "JPG",
    "a.b.c",
    "AAAA",
    "====",
    [],
    {},
    [1],
    {"copies": 1, "mtime": 1},
    {"copies": 1, "mtime": 1, "verified": 1},
    {"copies": 1, "mtime": 1, "pinned": False},
    {"copies": 11, "mtime": 1},
    {"copies": 1},
    {"mtime": 1},
    {"copies": True, "mtime": 1},
]
FILE_KEYS = [
    "_id",
    "_rev",
    "type",
    "time",
    "atime",
    "bytes",
    "origin",
    "leaf_hashes",
    "stored",
    "name",
    "ext",
    "_deleted",
    "x_a",
    "other",
]
file_keys = st.sampled_from(FILE_KEYS)
near_values = (st.sampled_from(NEAR) | json_values).map(copy.deepcopy)  # never shared
LEAF_TEXTS = [
    protocol.encode_leaf_hashes(CH.leaf_hashes),
    protocol.encode_leaf_hashes(BIG.leaf_hashes),
    protocol.encode_leaf_hashes(CH.leaf_hashes)[:-1] + "=",
    protocol.encode_leaf_hashes(CH.leaf_hashes) + "====",
    protocol.encode_leaf_hashes(CH.leaf_hashes)[:-4],
    protocol.encode_leaf_hashes(CH.leaf_hashes).replace("A", "-").replace("a", "_"),
    " " + protocol.encode_leaf_hashes(CH.leaf_hashes)[1:],
    protocol.encode_leaf_hashes(CH.leaf_hashes)[:-2] + "\n" + "A",
    protocol.encode_leaf_hashes(CH.leaf_hashes * 2),
    protocol.encode_leaf_hashes(bytes(30)),
    "é" * 40,
]
leaf_texts = st.sampled_from(LEAF_TEXTS)


def test_file_doc_sound_agrees_on_every_one_field_change():
    """Every near-valid value in every field (and in a stored entry), one at a time."""
    check_doc(file_doc())  # S1 seen valid
    changed = []
    for key in [*FILE_KEYS, "corrupt", "name_b64"]:
        for value in NEAR:
            changed.append(file_doc(**{key: copy.deepcopy(value)}))
        changed.append({k: v for k, v in file_doc().items() if k != key})
    for field in ("copies", "mtime", "verified", "pinned", "x_a"):
        for value in NEAR:
            doc = file_doc()
            doc["stored"][S1][field] = copy.deepcopy(value)
            changed.append(doc)
    for lh in LEAF_TEXTS:
        changed.append(file_doc(leaf_hashes=lh))
    # An ID that is the root hash of a leaf count the size does not have.
    two = CH.leaf_hashes * 2
    changed.append(file_doc(_id=protocol.hash_root(CH.file_size, two)))
    changed[-1]["leaf_hashes"] = protocol.encode_leaf_hashes(two)
    for doc in changed:
        sound = schema.file_doc_sound(doc)
        if sound:
            assert clean(doc), doc
        elif doc.get("type") == "dmedia/file" and doc.get("_deleted") is not True:
            rare = {"corrupt", "name_b64"} & doc.keys()
            assert rare or not clean(doc), doc
    assert sum(map(schema.file_doc_sound, changed)) > 50  # not only refusals


@st.composite
def mutated_file_docs(draw):
    base = draw(
        st.sampled_from([file_doc(), create_file(NOW, BIG, {S2: {"copies": 1, "mtime": 2}})])
    )
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(0, 3))):
        how = draw(st.integers(0, 5))
        key = draw(file_keys)
        if how == 0:
            doc.pop(key, None)
        elif how == 1:
            doc[key] = draw(near_values)
        elif how == 2:
            doc["leaf_hashes"] = draw(leaf_texts)
        elif how == 3 and isinstance(doc.get("stored"), dict):
            sid = draw(st.sampled_from([S1, S2, "junk", protocol.random_id(30)]))
            doc["stored"][sid] = draw(near_values)
        elif how == 4 and isinstance(doc.get("stored"), dict) and doc["stored"]:
            value = next(iter(doc["stored"].values()))
            if isinstance(value, dict):
                value[draw(st.sampled_from(["copies", "mtime", "verified", "pinned"]))] = draw(
                    near_values
                )
        elif how == 5:
            doc["_id"] = draw(st.sampled_from([CH.id, BIG.id, CH.id.lower(), CH.id[:-1] + "Z", ""]))
    return doc


@settings(max_examples=1500, deadline=None)
@given(mutated_file_docs())
def test_file_doc_sound_is_exactly_the_full_validators_on_file_docs(doc):
    """On any file doc (but for the rare shapes left to the full validators, tested
    above), the fast path says sound exactly when the full validators find nothing."""
    check_doc(file_doc(stored={S1: {"copies": 1, "mtime": 1}, S2: {"copies": 1, "mtime": 1}}))
    before = copy.deepcopy(doc)
    sound = schema.file_doc_sound(doc)
    event(f"sound: {sound}")
    assert doc == before or doc != doc  # never touched
    if sound:
        assert clean(doc), doc
    elif doc.get("type") == "dmedia/file" and doc.get("_deleted") is not True:
        assert not clean(doc), doc
