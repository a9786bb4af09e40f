"""A failing drive is remembered for good (issue 9 point 3).

A store flagged `failure` (it returned corrupt data) that the library forgets (purged after
8 days unseen, or by the user) and that comes back (its machine boots and heartbeats it,
`store init` re-attaches it, the drive is plugged in) comes back FAILING: no new copies,
DRIVE_FAILURE until acknowledged. The mark lives on the drive (`.dmedia/store.json`) and in
log-1 (`dmedia/store/failing`, never edited, never purged). A drive wiped and initialised
again as a new store starts FAILING too, with a warning. Real CLI, real FileStores, both
backends where machines share the library.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from dmedia_tui import schema
from dmedia_tui.config import DAY
from tests import blockdev
from tests.conftest import NOW
from tests.integration.harness import Machine, alert, codes, flip_bit, make_camera_files, store_row

SAME_FS = "--same-filesystem"
blockdevs = blockdev.blockdevs


def store_json(folder: Path) -> dict:
    return json.loads((folder / ".dmedia" / "store.json").read_text())


def corrupt_one_copy(m: Machine, folder: Path, label: str, now: float) -> None:
    """Rot a copy on the store at folder and let `verify --all` find it: FAILING."""
    copy = next(p for p in (folder / ".dmedia" / "files").rglob("*") if p.is_file())
    flip_bit(copy)
    r = m.run("verify", "--all", "--store", label, now=now)
    assert r.exit_code == 2, r.stderr
    assert store_json(folder)["failure"]["reason"] == "corrupt"  # the drive remembers it


def test_failing_store_purged_while_its_machine_was_off_comes_back_failing(
    db_url: str, tmp_path: Path
):
    alpha = Machine(tmp_path / "machines", "alpha", db_url, NOW)
    bravo = Machine(tmp_path / "machines", "bravo", db_url, NOW)
    folders = {n: tmp_path / n for n in ("a1", "a2", "a3", "bad", "good")}
    for f in folders.values():
        f.mkdir()
    for n in ("a1", "a2", "a3"):
        alpha.init_store(folders[n], n, SAME_FS)
    bad = bravo.init_store(folders["bad"], "bad", SAME_FS)
    bravo.init_store(folders["good"], "good", SAME_FS)
    make_camera_files(tmp_path / "cam", 3)
    bravo.ok("import", str(tmp_path / "cam"), "--store", "bad")
    corrupt_one_copy(bravo, folders["bad"], "bad", NOW)
    bravo.ok("store", "ack", "bad")

    # bravo is off for 9 days: alpha's policies purge its stores (unseen for 8 days).
    later = NOW + 9 * DAY
    alpha.once(now=later)
    assert [e["reason"] for e in alpha.events(schema.LOG_STORE_PURGE) if e["store_id"] == bad] == [
        "atime"
    ]
    assert bad not in {s["_id"] for s in alpha.status(now=later)[1]["stores"]}

    # bravo boots: its heartbeat records the store again, FAILING, banner back.
    bravo.once(now=later + 60)
    code, st = alpha.status(now=later + 60)
    row = store_row(st, bad)
    assert row["state"] == "failing", row
    assert code == 2 and bad in alert(st, "DRIVE_FAILURE")["store_ids"]
    make_camera_files(tmp_path / "new", 2, seed=99)
    r = bravo.ok("import", str(tmp_path / "new"), "--json", now=later + 60)
    new_ids = r.json()["file_ids"]
    bravo.once(now=later + 120)
    for fid in new_ids:  # neither the import nor the copier puts anything on it
        assert not (folders["bad"] / ".dmedia" / "files" / fid[:2] / fid[2:]).exists()
    bravo.ok("store", "ack", "bad", now=later + 180)
    assert "DRIVE_FAILURE" not in codes(alpha.status(now=later + 180)[1])
    assert store_row(alpha.status(now=later + 180)[1], bad)["state"] == "failing"


def test_store_init_re_attaching_a_forgotten_failing_store_keeps_it_failing(tmp_path: Path):
    """Re-attached by `store init`: the mark comes from store.json, or from log-1 when the
    drive could not keep it (here: stripped from store.json by hand)."""
    m = Machine(tmp_path / "machines", "studio", str(tmp_path / "library.sqlite3"), NOW)
    folders = [tmp_path / n for n in ("s1", "s2", "bad")]
    for f in folders:
        f.mkdir()
    for f in folders:
        m.init_store(f, f.name, SAME_FS)
    make_camera_files(tmp_path / "cam", 3)
    m.ok("import", str(tmp_path / "cam"), "--store", "bad")
    corrupt_one_copy(m, folders[2], "bad", NOW)
    sid = store_json(folders[2])["_id"]

    for strip in (False, True):
        m.ok("store", "purge", "bad", "--yes")
        if strip:
            doc = store_json(folders[2])
            doc.pop("failure")
            doc.pop("no_new_copies")
            (folders[2] / ".dmedia" / "store.json").write_text(json.dumps(doc))
        r = m.ok("store", "init", str(folders[2]), "--json")
        assert r.json()["created"] is False
        assert "FAILING" in r.stderr and "store trust" in r.stderr
        code, st = m.status()
        assert store_row(st, sid)["state"] == "failing"
        assert code == 2 and sid in alert(st, "DRIVE_FAILURE")["store_ids"]
        assert store_json(folders[2])["failure"]  # written back onto the drive
        refused = m.run("import", str(tmp_path / "cam"), "--store", "bad")
        assert refused.exit_code != 0 and "takes no new copies" in refused.stderr


def test_wiped_and_reinitialised_drive_starts_failing_with_a_warning(blockdevs, tmp_path: Path):
    m = Machine(tmp_path / "machines", "studio", str(tmp_path / "library.sqlite3"), NOW)
    s1, s2 = tmp_path / "s1", tmp_path / "s2"
    s1.mkdir()
    s2.mkdir()
    m.init_store(s1, "s1", SAME_FS)
    m.init_store(s2, "s2", SAME_FS)
    stick = blockdevs.ext4("stick", "STICK")
    old = m.init_store(stick.mount_point, "stick")
    make_camera_files(tmp_path / "cam", 3)
    m.ok("import", str(tmp_path / "cam"), "--store", "stick")
    corrupt_one_copy(m, stick.mount_point, "stick", NOW)

    shutil.rmtree(stick.mount_point / ".dmedia")  # wiped ...
    m.once()  # ... and seen so: purged (filestore_missing)
    assert old not in {s["_id"] for s in m.ok("store", "list", "--json").json()}
    r = m.ok("store", "init", str(stick.mount_point), "--label", "stick2", "--json")
    assert r.json()["created"] is True
    assert "WARNING" in r.stderr and old in r.stderr and "store trust" in r.stderr
    new = r.json()["store"]["_id"]
    code, st = m.status()
    assert store_row(st, new)["state"] == "failing"
    assert code == 2 and new in alert(st, "DRIVE_FAILURE")["store_ids"]
    [ev] = [e for e in m.events(schema.LOG_STORE_FAILING) if e["store_id"] == new]
    assert ev["reason"] == "drive_failed_before" and ev["previous_store_ids"] == [old]
    one_line = m.run("import", str(tmp_path / "cam"), "--store", "stick2")
    assert one_line.exit_code != 0 and "takes no new copies" in one_line.stderr


def test_failing_stick_purged_while_unplugged_comes_back_failing_when_plugged_in(
    blockdevs, tmp_path: Path
):
    """The engine's drive scan finds a store it forgot (purged after 8 days unplugged) at
    the root of a stick plugged in again: recorded again, FAILING, the banner back."""
    m = Machine(tmp_path / "machines", "studio", str(tmp_path / "library.sqlite3"), NOW)
    for n in ("s1", "s2", "s3"):
        (tmp_path / n).mkdir()
        m.init_store(tmp_path / n, n, SAME_FS)
    stick = blockdevs.ext4("stick", "STICK")
    mp = stick.mount_point
    sid = m.init_store(mp, "stick")
    make_camera_files(tmp_path / "cam", 3)
    m.ok("import", str(tmp_path / "cam"), "--store", "stick")
    corrupt_one_copy(m, mp, "stick", NOW)
    m.ok("store", "ack", "stick")
    stick.umount()

    later = NOW + 9 * DAY
    m.once(now=later)
    assert [e["reason"] for e in m.events(schema.LOG_STORE_PURGE)] == ["atime"]
    stick.mount(mp)
    m.once(now=later + 60)
    code, st = m.status(now=later + 60)
    assert store_row(st, sid)["state"] == "failing"
    assert code == 2 and sid in alert(st, "DRIVE_FAILURE")["store_ids"]
    [back] = [e for e in m.events(schema.LOG_STORE_FAILING) if e.get("remembered")]
    assert back["store_id"] == sid and back["remembered"] == "store.json"


# --- METADATA_INVALID is library-wide (issue 9 point 8) ------------------------------------


def test_metadata_invalid_found_by_one_machine_shows_on_every_machine_until_fixed(
    db_url: str, tmp_path: Path
):
    """The check result lives in log-1: bravo shows what alpha's check found, with both
    kinds and the command to list them; once the doc is fixed, a pass on either clears it
    everywhere."""
    from dmedia_tui.db import open_library

    alpha = Machine(tmp_path / "machines", "alpha", db_url, NOW)
    bravo = Machine(tmp_path / "machines", "bravo", db_url, NOW)
    folder = tmp_path / "s"
    folder.mkdir()
    alpha.init_store(folder, "s")
    make_camera_files(tmp_path / "cam", 2)
    fids = alpha.ok("import", str(tmp_path / "cam"), "--json").json()["file_ids"]
    lib = open_library(db_url)
    try:
        good = lib.docs.get(fids[0])
        bad = dict(good, bytes=good["bytes"] + 1)  # the size no longer ties to the ID
        lib.docs.save(bad)
        lib.docs.save({"_id": "junk-doc", "type": "dmedia/file", "time": -5})
    finally:
        lib.close()
    assert "METADATA_INVALID" not in codes(bravo.status()[1])
    assert alpha.run("check").exit_code == 1

    for m in (alpha, bravo):
        a = alert(m.status()[1], "METADATA_INVALID")
        assert a is not None and a["files"] == 2, a
        assert "schema check" in a["message"] and "do not tie" in a["message"]
        assert "events --type dmedia/doc/invalid --type dmedia/file/inconsistent" in a["action"]
    listed = bravo.events("doc/invalid", "file/inconsistent")
    assert {e.get("doc_id") or e.get("file_id") for e in listed} == {"junk-doc", fids[0]}

    lib = open_library(db_url)
    try:
        fixed = lib.docs.get(fids[0])
        fixed["bytes"] = good["bytes"]
        lib.docs.save(fixed)
        lib.docs.delete(lib.docs.get("junk-doc"))
    finally:
        lib.close()
    assert bravo.run("check").exit_code == 0
    for m in (alpha, bravo):
        assert "METADATA_INVALID" not in codes(m.status()[1])
    before = len(alpha.events())
    assert bravo.run("check").exit_code == 0  # an unchanged result logs nothing
    assert len(alpha.events()) == before
