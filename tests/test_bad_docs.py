"""One malformed doc never stops a worker: it is reported once and skipped (issue 10, defect 2).

Every scenario plants the bad doc the way it would arrive (saved through the database API,
inserted into the SQLite tables, PUT over raw HTTP into CouchDB), rots one real copy, and
proves through the real CLI that `verify --all`, `daemon --once`, `check` and `events`
still find the rotten copy, exit as usual and log `dmedia/doc/invalid` once.
"""

from __future__ import annotations

import json
import sqlite3
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from dmedia_tui.db import open_library
from tests.conftest import NOW
from tests.integration.harness import Machine, canonical, flip_bit, make_camera_files

DAY = 86400


def settled(m: Machine, tmp_path: Path) -> tuple[list[Path], list[str], list[str]]:
    """Two stores, 4 files on both, everything verified."""
    paths, sids = [], []
    for name in ("a", "b"):
        p = tmp_path / name
        p.mkdir()
        sids.append(m.init_store(p, name, "--same-filesystem"))
        paths.append(p)
    make_camera_files(tmp_path / "photos", 4, max_kb=20)
    fids = m.ok("import", str(tmp_path / "photos"), "--store", "a", "--json").json()["file_ids"]
    m.once()
    return paths, sids, fids


def invalid_events(m: Machine) -> list[dict]:
    return m.events("doc/invalid")


def bad_file_doc(doc_id: str, store_id: str) -> dict:
    return {
        "_id": doc_id,
        "type": "dmedia/file",
        "time": NOW,
        "atime": NOW,
        "bytes": 10,
        "origin": "user",
        "leaf_hashes": "",
        "stored": {store_id: {"copies": 1, "mtime": 0}},
    }


def assert_rot_found_by_verify(m: Machine, store: Path, fid: str) -> None:
    flip_bit(canonical(store, fid))
    r = m.run("verify", "--all", "--json")
    assert r.exit_code == 2, r.stderr  # the real rotten copy is found...
    assert r.json()["corrupt"] == 1
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("bad_id", ["3456", "../../x"])
def test_a_file_doc_with_a_junk_id_does_not_stop_verify_or_the_daemon(tmp_path, db_url, bad_id):
    m = Machine(tmp_path / "machines", "studio", db_url, NOW)
    paths, sids, fids = settled(m, tmp_path)
    lib = open_library(db_url, create=False)
    lib.docs.save(bad_file_doc(bad_id, sids[0]))
    lib.close()
    assert_rot_found_by_verify(m, paths[0], fids[0])
    for _ in range(2):
        s = m.once(now=NOW + 60)
        assert s["copies"] >= 0
    bad = [e for e in invalid_events(m) if e.get("doc_id") == bad_id]
    assert len(bad) == 1, bad  # reported once, by whichever pass met it first
    assert not (tmp_path / "x").exists()  # and never a path


def test_a_store_doc_with_a_junk_id_does_not_stop_the_policies(tmp_path, db_url):
    m = Machine(tmp_path / "machines", "studio", db_url, NOW)
    paths, sids, fids = settled(m, tmp_path)
    lib = open_library(db_url, create=False)
    lib.docs.save({"_id": "BADSTORE", "type": "dmedia/store", "time": 0, "atime": 0, "copies": 1})
    lib.close()
    later = NOW + 9 * DAY  # old enough to be purged, if it were a store
    s = m.once(now=later)
    assert s["purged"] == 0
    bad = [e for e in m.events("doc/invalid", now=later) if e.get("doc_id") == "BADSTORE"]
    assert len(bad) == 1
    m.once(now=later + 60)
    assert len([e for e in m.events("doc/invalid") if e.get("doc_id") == "BADSTORE"]) == 1
    assert set(sids) <= {r["_id"] for r in m.ok("store", "list", "--json").json()}


def test_a_log_doc_with_a_junk_time_does_not_stop_events(tmp_path, db_url):
    from dmedia_tui import protocol

    m = Machine(tmp_path / "machines", "studio", db_url, NOW)
    settled(m, tmp_path)
    lib = open_library(db_url, create=False)
    lib.log.save({"_id": protocol.log_id(NOW + 5), "type": "dmedia/file/missing", "time": "x"})
    lib.log.save({"_id": protocol.log_id(NOW + 6), "type": "dmedia/file/missing", "time": 1e300})
    lib.close()
    r = m.ok("events")
    assert "(bad time)" in r.stdout
    lines = m.ok("events", "--json").stdout.splitlines()
    assert any(json.loads(line).get("time") == "x" for line in lines)
    assert m.run("check").exit_code == 1  # and the check names them


DAMAGED_ROWS = {
    "not-json": "{not json",
    "array": "[1, 2, 3]",
    "deep": "[" * 100_000 + "]" * 100_000,
}


def test_damaged_sqlite_rows_do_not_stop_check_verify_daemon_events(tmp_path):
    db = tmp_path / "library.sqlite3"
    m = Machine(tmp_path / "machines", "studio", str(db), NOW)
    paths, sids, fids = settled(m, tmp_path)
    conn = sqlite3.connect(db)
    with conn:
        seq = conn.execute("SELECT seq FROM dbinfo WHERE db=1").fetchone()[0]
        for n, (kind, text) in enumerate(DAMAGED_ROWS.items()):
            fid = "ABCDEFGH"[n] * 48  # a well-formed file ID: the workers get as far as the doc
            seq += 1
            conn.execute(
                "INSERT INTO doc (db, id, rev, seq, deleted, type, json) VALUES (1,?,?,?,0,?,?)",
                (fid, "1-x", seq, "dmedia/file", text),
            )
            conn.execute(
                "INSERT INTO copy (file_id, store_id, copies, verified, bytes, rank)"
                " VALUES (?,?,1,NULL,10,1)",
                (fid, sids[0]),
            )
            conn.execute(
                "INSERT INTO file (id, origin, bytes, placement, rank, durability)"
                " VALUES (?,'user',10,?,1,1)",
                (fid, f"{sids[0]}:1"),
            )
            seq += 1
            conn.execute(
                "INSERT INTO doc (db, id, rev, seq, deleted, type, json) VALUES (1,?,?,?,0,?,?)",
                (f"STORE{kind}", "1-x", seq, "dmedia/store", text),
            )
        conn.execute("UPDATE dbinfo SET seq=? WHERE db=1", (seq,))
        for n, text in enumerate(DAMAGED_ROWS.values()):
            from dmedia_tui import protocol

            lid = protocol.log_id(NOW + n)
            conn.execute(
                "INSERT INTO doc (db, id, rev, seq, deleted, type, json) VALUES (2,?,?,?,0,?,?)",
                (lid, "1-x", 10_000 + n, "dmedia/file/missing", text),
            )
            conn.execute(
                "INSERT INTO event (id, type, time, store_id, file_id) VALUES (?,?,?,?,?)",
                (lid, "dmedia/file/missing", NOW + n, sids[0], None),
            )
    conn.close()
    r = m.run("check", "--json")
    assert r.exit_code == 1 and "Traceback" not in r.stderr, r.stderr
    assert r.json()["invalid"] >= 9
    assert_rot_found_by_verify(m, paths[0], fids[0])
    m.once(now=NOW + 60)
    m.once(now=NOW + 9 * DAY)  # policies over the stores, damaged store rows among them
    m.ok("events")
    m.ok("events", "--json")
    code, status = m.status(now=NOW + 9 * DAY)
    assert "METADATA_INVALID" in {a["code"] for a in status["alerts"]}
    damaged = {e["doc_id"] for e in m.events("doc/invalid") if "damaged" in " ".join(e["errors"])}
    assert {"A" * 48, "B" * 48, "C" * 48} <= damaged


def test_a_deeply_nested_couch_doc_does_not_stop_check_verify_daemon(tmp_path, couch_server):
    url = couch_server.fresh_url()
    m = Machine(tmp_path / "machines", "studio", url, NOW)
    paths, sids, fids = settled(m, tmp_path)
    prefix = urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["prefix"][0]
    fid = "A" * 48
    doc = bad_file_doc(fid, sids[0])
    body = json.dumps(doc)[:-1] + ', "x_deep": ' + "[" * 1000 + "]" * 1000 + "}"
    req = urllib.request.Request(
        f"{couch_server.url.rstrip('/')}/{prefix}dmedia-1/{fid}",
        data=body.encode(),
        method="PUT",
        headers={"Content-Type": "application/json"},
    )
    assert urllib.request.urlopen(req).status == 201  # PouchDB stores 1000 levels
    r = m.run("check", "--json")
    assert r.exit_code == 1 and "Traceback" not in r.stderr, r.stderr
    assert_rot_found_by_verify(m, paths[0], fids[0])
    m.once(now=NOW + 60)
    m.ok("events")
    assert any(e.get("doc_id") == fid for e in m.events("doc/invalid"))
