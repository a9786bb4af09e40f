"""Two machines sharing one library through CouchDB replication (PouchDB Server).

Each machine has its own config dir (identity, known stores) and its own pair of
databases on one server (`?prefix=` of its own), replicated both ways by the server
(`POST /_replicate`), which is how two CouchDBs on two computers share a library.

PouchDB Server quirks found here (4.2.0):
- `_replicate` between two local databases works with bare names; continuous
  replication carries a change over in tens of milliseconds.
- `"cancel": true` answers ok but does NOT stop a continuous replication. So the
  conflict test partitions the machines by replicating one-shot (the request returns when
  the replication is complete) only when it wants them to meet.
- Revision IDs are deterministic (an md5 of the content and parent), like CouchDB's: two
  machines that resolve one conflict into the same merged doc write the same revision.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from dmedia_tui.conflicts import resolve_conflicts
from dmedia_tui.db import DOCS_DB, LOG_DB, Library, open_library
from tests.conftest import NOW
from tests.integration.harness import (
    Machine,
    alert,
    canonical,
    flip_bit,
    make_camera_files,
    store_row,
)

CONVERGE_TIMEOUT = 60.0  # a bound on polling for replication, never a threshold
FRESH = 180  # config.Thresholds.heartbeat_fresh
SAME_FS = "--same-filesystem"  # every store here is a folder of one test filesystem


def _prefix(url: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["prefix"][0]


def _server_request(server_url: str, method: str, path: str, body: Any = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        server_url + path,
        data=data,
        method=method,
        headers={"Content-Type": "application/json", "Accept": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=120) as resp:
        return json.loads(resp.read())


def replicate(server_url: str, url_a: str, url_b: str, continuous: bool) -> None:
    """Both databases, both ways (one-shot: returns when done)."""
    pa, pb = _prefix(url_a), _prefix(url_b)
    for db in (DOCS_DB, LOG_DB):
        for src, dst in ((pa, pb), (pb, pa)):
            body = {"source": src + db, "target": dst + db, "continuous": continuous}
            assert _server_request(server_url, "POST", "_replicate", body)["ok"] is True


def _leaves(server_url: str, dbname: str) -> dict[str, list[str]]:
    """doc ID -> every leaf revision (live or deleted), from `_changes?style=all_docs`."""
    data = _server_request(server_url, "GET", f"{dbname}/_changes?style=all_docs")
    return {r["id"]: sorted(c["rev"] for c in r["changes"]) for r in data["results"]}


def wait_converged(server_url: str, url_a: str, url_b: str) -> float:
    """Poll until both sides hold the same revision trees; the seconds it took."""
    started = time.monotonic()
    pa, pb = _prefix(url_a), _prefix(url_b)
    while True:
        same = all(
            _leaves(server_url, pa + db) == _leaves(server_url, pb + db)
            for db in (
                DOCS_DB,
                LOG_DB,
            )
        )
        took = time.monotonic() - started
        if same:
            return took
        assert took < CONVERGE_TIMEOUT, "replication did not converge"
        time.sleep(0.02)


def _live_conflicts(lib: Library) -> dict[str, int]:
    return {i: n for i in lib.conflicted_ids() if (n := len(lib.docs.leaves(i))) > 1}


@pytest.fixture
def libs():
    opened: list[Library] = []

    def open_(url: str) -> Library:
        lib = open_library(url)
        opened.append(lib)
        return lib

    yield open_
    for lib in opened:
        lib.close()


def test_two_machines_share_a_library(couch_server, tmp_path: Path, libs, capsys):
    server = couch_server.url
    url_a, url_b = couch_server.fresh_url(), couch_server.fresh_url()
    a = Machine(tmp_path / "machines", "alpha", url_a, NOW)
    b = Machine(tmp_path / "machines", "bravo", url_b, NOW)
    for name in ("alpha-int", "bravo-int", "stick"):
        (tmp_path / name).mkdir()
    sa = a.init_store(tmp_path / "alpha-int", "alpha-int", SAME_FS)
    sb = b.init_store(tmp_path / "bravo-int", "bravo-int", SAME_FS)
    sr = b.init_store(tmp_path / "stick", "bravo-stick", SAME_FS)
    replicate(server, url_a, url_b, continuous=True)
    timings = [wait_converged(server, url_a, url_b)]

    # The stick is a USB drive: its doc says so, as drive detection would have written it.
    def usb(doc: dict) -> dict:
        return {**doc, "removable": True, "internal": False, "drive_serial": "STICK-123"}

    libs(url_b).docs.update(sr, usb)

    files_a = make_camera_files(tmp_path / "cam-a", 4, seed=1, max_kb=32)
    files_b1 = make_camera_files(tmp_path / "cam-b1", 3, seed=2, max_kb=32)
    files_b2 = make_camera_files(tmp_path / "cam-b2", 2, seed=3, max_kb=32)
    a.ok("import", str(tmp_path / "cam-a"), "--store", "alpha-int")
    b.ok("import", str(tmp_path / "cam-b1"), "--store", "bravo-int")
    b.ok("import", str(tmp_path / "cam-b2"), "--store", "bravo-stick")
    timings.append(wait_converged(server, url_a, url_b))
    total = len(files_a) + len(files_b1) + len(files_b2)

    # A file imported on A is seen on B, and the other way round.
    assert b.status()[1]["files"] == total
    assert a.status()[1]["files"] == total
    fid_a = a.ok("import", str(files_a[0]), "--json").json()["file_ids"][0]
    assert libs(url_b).docs.get(fid_a)["stored"].keys() == {sa}

    # The stick is unplugged from B; both engines run at T (heartbeats).
    (tmp_path / "stick").rename(tmp_path / "stick-in-a-drawer")
    t = NOW + 60
    b.once(now=t)
    a.once(now=t)
    timings.append(wait_converged(server, url_a, url_b))

    # B's internal store is online for A while B's heartbeat is fresh.
    code, st = a.status(now=t + FRESH)  # the boundary itself is fresh
    assert store_row(st, sb)["online"] is True and store_row(st, sb)["machine"] == "bravo"
    assert store_row(st, sa)["online"] is True
    assert store_row(st, sr)["online"] is False
    only = [x for x in st["alerts"] if x["code"] == "DISCONNECTED_ONLY_COPY"]
    assert len(only) == 1 and only[0]["store_ids"] == [sr]
    assert only[0]["files"] == len(files_b2)
    # A runs the command: it is "here"; B is the other machine running.
    assert only[0]["action"] == (
        "Plug bravo-stick (serial STICK-123) in here (alpha) or into one of: bravo"
    )
    assert code == 2
    # Symmetric: A's store is online for B.
    assert store_row(b.status(now=t)[1], sa)["online"] is True

    # B stops: time passes beyond heartbeat_fresh with heartbeats from A only.
    t2 = t + FRESH + 1
    a.once(now=t2)
    timings.append(wait_converged(server, url_a, url_b))
    code, st = a.status(now=t2)
    assert code == 2
    assert store_row(st, sb)["online"] is False
    boot = [
        x for x in st["alerts"] if x["code"] == "DISCONNECTED_ONLY_COPY" and sb in x["store_ids"]
    ]
    assert len(boot) == 1 and boot[0]["store_ids"] == [sb]
    assert boot[0]["action"] == "Boot bravo" and boot[0]["files"] == len(files_b1)
    plug = [
        x for x in st["alerts"] if x["code"] == "DISCONNECTED_ONLY_COPY" and sr in x["store_ids"]
    ]
    assert len(plug) == 1
    # B is off, so the stick must go into A.
    assert plug[0]["action"] == "Plug bravo-stick (serial STICK-123) in here (alpha)"
    with capsys.disabled():
        print(f"\n[multi-machine] replication convergence (s): {[round(x, 3) for x in timings]}")


def test_concurrent_edits_converge_without_losing_a_copy(couch_server, tmp_path: Path, libs):
    server = couch_server.url
    url_a, url_b = couch_server.fresh_url(), couch_server.fresh_url()
    # The copies written here carry real mtimes, and the merge compares them with the
    # simulated times of the corrupt mark: so this scenario's clock starts at the real
    # time (a fixed date would fall behind the mtimes as the calendar moves on).
    start = int(time.time())
    a = Machine(tmp_path / "machines", "alpha", url_a, start)
    b = Machine(tmp_path / "machines", "bravo", url_b, start)
    for name in ("alpha-1", "alpha-2", "bravo-int"):
        (tmp_path / name).mkdir()
    a.init_store(tmp_path / "alpha-1", "alpha-1", SAME_FS)
    sa2 = a.init_store(tmp_path / "alpha-2", "alpha-2", SAME_FS)
    sb = b.init_store(tmp_path / "bravo-int", "bravo-int", SAME_FS)
    files = make_camera_files(tmp_path / "cam", 5, max_kb=32)
    ids = a.ok("import", str(tmp_path / "cam"), "--store", "alpha-1", "--json").json()["file_ids"]
    a.once()  # every file on alpha-1 and alpha-2
    replicate(server, url_a, url_b, continuous=False)
    la, lb = libs(url_a), libs(url_b)
    sa1 = next(s["_id"] for s in la.stores() if s["label"] == "alpha-1")
    fid = next(i for i in ids if la.docs.get(i)["name"] == files[0].name)
    assert set(lb.docs.get(fid)["stored"]) == {sa1, sa2}

    # Apart: A finds the copy of F on alpha-2 corrupt; B imports the same bytes (the
    # card was read on both machines) and edits alpha-2's doc (a newer atime).
    # (Store mtimes are the real files' mtimes: the clock runs after them, as a real one
    # would, or the merge would take B's older entry for a newer copy.)
    t = max(start, la.docs.get(fid)["stored"][sa2]["mtime"]) + 60
    assert t - start < FRESH, "the scenario must stay inside one heartbeat window"
    flip_bit(canonical(tmp_path / "alpha-2", fid))
    assert a.run("verify", "--all", "--store", "alpha-2", now=t).exit_code == 2
    b.ok("import", str(files[0]), "--store", "bravo-int", now=t + 30)
    lb.docs.update(sa2, lambda d: {**d, "label": "alpha-backup", "atime": t + 500})
    assert "failure" in la.docs.get(sa2) and "failure" not in lb.docs.get(sa2)

    # They meet: both sides now hold both revisions of F and of alpha-2.
    replicate(server, url_a, url_b, continuous=False)
    assert _live_conflicts(la).keys() >= {fid, sa2}
    assert _live_conflicts(lb).keys() >= {fid, sa2}

    # Both resolve at once (before seeing each other's resolution), then meet again.
    ra, rb = resolve_conflicts(la), resolve_conflicts(lb)
    assert set(ra.resolved) >= {fid, sa2} and set(rb.resolved) >= {fid, sa2}
    assert resolve_conflicts(la).resolved == []  # idempotent
    replicate(server, url_a, url_b, continuous=False)
    # The engine's housekeeping resolves whatever the two resolutions left.
    a.once(now=t + 600)
    b.once(now=t + 600)
    replicate(server, url_a, url_b, continuous=False)
    assert _live_conflicts(la) == {} and _live_conflicts(lb) == {}

    for lib in (la, lb):
        f = lib.docs.get(fid)
        assert set(f["stored"]) == {sa1, sb}  # B's copy kept, the quarantined one gone
        assert set(f["corrupt"]) == {sa2}  # the corrupt mark kept
        for other in (i for i in ids if i != fid):
            assert set(lib.docs.get(other)["stored"]) == {sa1, sa2}  # no copy lost
        store = lib.docs.get(sa2)
        assert store["label"] == "alpha-backup"  # the newest atime won...
        assert store["no_new_copies"] is True and store["failure"]["corrupt_count"] >= 1
    assert _docs(la) == _docs(lb)

    # The library works normally afterwards.
    summary = a.once(now=t + 700)
    assert summary["corrupt"] == 0 and summary["missing"] == 0
    code, st = a.status(now=t + 700)
    assert alert(st, "DRIVE_FAILURE") is not None and sa2 in alert(st, "DRIVE_FAILURE")["store_ids"]
    assert st["histogram"]["2"] >= 1  # F: alpha-1 + bravo-int
    assert len(a.events("file/corrupt")) == 1 and len(b.events("file/corrupt")) == 1


def _docs(lib: Library) -> list[dict]:
    return list(lib.docs.iter_docs())


# --- the merge rules of conflicts.py, without a server ----------------------------------

SID = "3456789ABCDEFGHIJKLMNOPQ"


def test_store_merge_keeps_every_safety_flag_whoever_wins():
    from dmedia_tui.conflicts import merge_store_conflict

    failing = {
        "_id": SID,
        "_rev": "2-a",
        "type": "dmedia/store",
        "atime": 100,
        "no_new_copies": True,
        "failure": {"time": 90, "reason": "corrupt", "corrupt_count": 2, "acknowledged": True},
        "downgraded": {"time": 90, "reason": "corrupt"},
    }
    trusted = {
        "_id": SID,
        "_rev": "2-b",
        "type": "dmedia/store",
        "atime": 200,
        "label": "renamed",
        "no_new_copies": False,
        "failure": {"time": 95, "reason": "corrupt", "corrupt_count": 3, "acknowledged": False},
    }
    for a, b in ((failing, trusted), (trusted, failing)):
        m = merge_store_conflict(a, b)
        assert m["label"] == "renamed" and m["atime"] == 200  # the newest atime wins
        assert m["no_new_copies"] is True
        assert m["failure"]["time"] == 90 and m["failure"]["corrupt_count"] == 3
        assert m["failure"]["acknowledged"] is False  # one side had not seen it
        assert m["downgraded"] == {"time": 90, "reason": "corrupt"}
        assert m["_rev"] == a["_rev"]


def test_store_merge_keeps_a_purge_under_way_whoever_wins():
    from dmedia_tui.conflicts import merge_store_conflict

    base = {"_id": SID, "type": "dmedia/store", "copies": 1}
    mark = {"time": 90, "reason": "atime", "event": "3" * 24, "count": 2, "fields": {}}
    purging = {**base, "_rev": "3-a", "atime": 80, "purging": mark}
    seen = {**base, "_rev": "3-b", "atime": 200}  # a heartbeat on another machine, newer
    for a, b in ((purging, seen), (seen, purging)):
        m = merge_store_conflict(a, b)
        assert m["atime"] == 200 and m["purging"] == mark  # finished by the next pass


def test_merge_revisions_by_type_and_unknown_docs_left_alone():
    from dmedia_tui.conflicts import merge_revisions

    m1 = {"_id": "m", "_rev": "3-a", "type": "dmedia/machine", "atime": 5, "stores": ["x"]}
    m2 = {"_id": "m", "_rev": "3-b", "type": "dmedia/machine", "atime": 9, "stores": []}
    merged = merge_revisions([m1, m2])
    assert merged["stores"] == [] and merged["_rev"] == "3-a"
    assert merge_revisions([{"_id": "x", "_rev": "1-a"}, {"_id": "x", "_rev": "1-b"}]) is None
    assert merge_revisions([{**m1, "type": "dmedia/file"}, m2]) is None  # types disagree


def test_resolve_conflicts_is_a_no_op_on_sqlite(sqlite_library):
    sqlite_library.docs.save({"_id": "a", "type": "dmedia/machine", "atime": 1})
    assert resolve_conflicts(sqlite_library).to_json() == {
        "resolved": [],
        "retry": [],
        "skipped": [],
    }
    assert sqlite_library.docs.leaves("a")[0]["_id"] == "a"
