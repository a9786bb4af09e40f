"""End-to-end data-safety scenarios through the CLI, on both backends.

Each test builds a library with several stores on separate filesystems (tmpfs mounts as
root), injects one fault, and asserts on log-1 (`events --json`) and `status --json`.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import NOW
from tests.integration.harness import (
    Machine,
    Mounts,
    alert,
    canonical,
    codes,
    flip_bit,
    make_camera_files,
    quarantined,
    store_row,
    truncate,
)

DAY = 86400


@pytest.fixture
def machine(tmp_path: Path, db_url: str) -> Machine:
    return Machine(tmp_path / "machines", "studio", db_url, NOW)


def one_disk(mounts: Mounts) -> set[str]:
    """Alerts that exist because the test could not mount separate filesystems (not
    root): the stores share one disk (SHARED_FILESYSTEM), which is one place, so 3
    independent copies cannot exist (INSUFFICIENT_STORAGE, a panic)."""
    return set() if mounts.real else {"SHARED_FILESYSTEM", "INSUFFICIENT_STORAGE"}


def library_with_stores(machine: Machine, mounts: Mounts, n: int, size_mb: int = 64):
    ids, paths = [], []
    for i in range(n):
        p = mounts.new(f"store{i}", size_mb)
        ids.append(machine.init_store(p, f"store{i}", *mounts.same_fs_flag))
        paths.append(p)
    return ids, paths


def file_ids_of(result_json: dict) -> list[str]:
    return result_json["file_ids"]


def test_new_user_flow_three_stores_durability_one_then_healed(machine, mounts, tmp_path):
    ids, paths = library_with_stores(machine, mounts, 3)
    files = make_camera_files(tmp_path / "DCIM", 12)
    r = machine.ok("import", str(tmp_path / "DCIM"), "--store", "store0", "--json").json()
    assert r["new"] == 12 and r["files"] == 12
    code, st = machine.status()
    assert st["files"] == 12
    assert st["histogram"] == {"0": 0, "1": 12, "2": 0, "3": 0}
    assert codes(st) == {"LOW_DURABILITY"} | one_disk(mounts)
    assert code == (1 if mounts.real else 2)
    # Importing the same folder again adds nothing.
    again = machine.ok("import", str(tmp_path / "DCIM"), "--json").json()
    assert again["new"] == 0 and again["duplicates"] == 12
    code, st = machine.status()
    assert st["files"] == 12 and st["bytes"] == sum(f.stat().st_size for f in files)
    # The daemon settles it: 3 copies each.
    machine.once()
    code, st = machine.status()
    assert st["histogram"] == {"0": 0, "1": 0, "2": 0, "3": 12}
    assert codes(st) == one_disk(mounts)
    assert code == (0 if mounts.real else 2)


def test_corrupt_copy_is_quarantined_logged_flagged_and_healed(machine, mounts, tmp_path):
    ids, paths = library_with_stores(machine, mounts, 4)
    make_camera_files(tmp_path / "DCIM", 6)
    fids = file_ids_of(
        machine.ok("import", str(tmp_path / "DCIM"), "--store", "store0", "--json").json()
    )
    machine.once()
    _, st = machine.status()
    assert st["histogram"]["3"] == 6
    # Flip one bit in one copy on store0.
    victim = fids[2]
    original = canonical(paths[0], victim).read_bytes()
    flip_bit(canonical(paths[0], victim))
    r = machine.run("verify", "--store", "store0", "--all", "--json")
    assert r.exit_code == 2
    assert r.json()["corrupt"] == 1
    corrupt = machine.events("file/corrupt")
    assert len(corrupt) == 1
    assert corrupt[0]["file_id"] == victim and corrupt[0]["store_id"] == ids[0]
    assert [e["store_id"] for e in machine.events("store/failing")] == [ids[0]]
    downgrades = machine.events("store/downgrade")
    assert [(e["store_id"], e["reason"]) for e in downgrades] == [(ids[0], "corrupt")]
    # The corrupt copy is in quarantine, byte for byte what was found (never deleted).
    q = quarantined(paths[0], victim)
    assert len(q) == 1 and len(q[0].read_bytes()) == len(original)
    assert not canonical(paths[0], victim).exists()
    code, st = machine.status()
    assert code == 2
    failure = alert(st, "DRIVE_FAILURE")
    assert failure is not None and failure["store_ids"] == [ids[0]]
    assert store_row(st, ids[0])["state"] == "failing"
    # Healing: every file back to 3 copies on the other stores, none new on store0.
    files_on_flagged_before = sorted(
        p.name for p in (paths[0] / ".dmedia/files").rglob("*") if p.is_file()
    )
    machine.once()
    _, st = machine.status()
    assert st["histogram"] == {"0": 0, "1": 0, "2": 0, "3": 6}
    after = sorted(p.name for p in (paths[0] / ".dmedia/files").rglob("*") if p.is_file())
    assert after == files_on_flagged_before
    # Still exactly one corrupt event: healing did not re-report it.
    assert len(machine.events("file/corrupt")) == 1
    # Acknowledge: the banner goes, the store stays failing.
    machine.ok("store", "ack", "store0")
    _, st = machine.status()
    assert alert(st, "DRIVE_FAILURE") is None
    assert store_row(st, ids[0])["state"] == "failing"
    # Every doc and event written along the way passes the schema and consistency check.
    report = machine.ok("check", "--json").json()
    assert report["docs"] > 6 and (report["invalid"], report["inconsistent"]) == (0, 0)


def test_truncated_copy_is_corrupt_and_deleted_copy_is_missing(machine, mounts, tmp_path):
    ids, paths = library_with_stores(machine, mounts, 4)
    make_camera_files(tmp_path / "DCIM", 4)
    fids = file_ids_of(machine.ok("import", str(tmp_path / "DCIM"), "--json").json())
    machine.once()
    assert len(machine.ok("store", "list", "--json").json()) == 4
    # Truncate one copy of fids[0] and delete one copy of fids[1], on different stores.
    holder0 = next(p for p in paths if canonical(p, fids[0]).exists())
    holder1 = next(p for p in paths if canonical(p, fids[1]).exists() and p != holder0)
    truncate(canonical(holder0, fids[0]), 10)
    canonical(holder1, fids[1]).unlink()
    r = machine.run("verify", "--all", "--json")
    assert r.exit_code == 2
    assert (r.json()["corrupt"], r.json()["missing"]) == (1, 1)
    assert [e["file_id"] for e in machine.events("file/missing")] == [fids[1]]
    assert [e["file_id"] for e in machine.events("file/corrupt")] == [fids[0]]
    assert len(quarantined(holder0, fids[0])) == 1
    machine.once()
    _, st = machine.status()
    assert st["histogram"]["3"] == 4


def test_store_unseen_downgraded_at_3_days_purged_at_8(machine, mounts, tmp_path):
    ids, paths = library_with_stores(machine, mounts, 4)
    make_camera_files(tmp_path / "DCIM", 5)
    machine.ok("import", str(tmp_path / "DCIM"), "--json")
    machine.once()
    # "Unplug" store3: this machine no longer finds it at its folder.
    hidden = paths[3].parent / "unplugged"
    paths[3].rename(hidden) if not mounts.real else _unmount(mounts, paths[3])
    t0 = NOW
    machine.once(now=t0 + 3 * DAY - 1)
    assert machine.events("store/downgrade") == []
    machine.once(now=t0 + 3 * DAY)
    ev = machine.events("store/downgrade")
    assert [(e["store_id"], e["reason"]) for e in ev] == [(ids[3], "atime")]
    _, st = machine.status(now=t0 + 3 * DAY)
    assert store_row(st, ids[3])["state"] in ("downgraded", "stale")
    machine.once(now=t0 + 8 * DAY - 1)
    assert machine.events("store/purge") == []
    machine.once(now=t0 + 8 * DAY)
    ev = machine.events("store/purge")
    assert [(e["store_id"], e["reason"]) for e in ev] == [(ids[3], "atime")]
    _, st = machine.status(now=t0 + 8 * DAY)
    assert ids[3] not in {s["_id"] for s in st["stores"]}


def _unmount(mounts: Mounts, path: Path) -> None:
    import subprocess

    subprocess.run(["umount", "-l", str(path)], check=True)
    mounts.mounted.remove(path)


def test_purge_of_the_only_store_leaves_no_known_copy(machine, mounts, tmp_path):
    ids, paths = library_with_stores(machine, mounts, 1)
    make_camera_files(tmp_path / "DCIM", 3)
    machine.ok("import", str(tmp_path / "DCIM"), "--json")
    r = machine.run("store", "purge", "store0")  # no terminal, no --yes: refused
    assert r.exit_code != 0
    _, st = machine.status()
    assert st["histogram"]["1"] == 3
    machine.ok("store", "purge", "store0", "--yes")
    code, st = machine.status()
    assert code == 2
    a = alert(st, "NO_KNOWN_COPY")
    assert a is not None and a["files"] == 3
    assert [e["reason"] for e in machine.events("store/purge")] == ["user"]
    # Files on disk are never deleted by a purge.
    assert len([p for p in (paths[0] / ".dmedia/files").rglob("*") if p.is_file()]) == 3


def test_insufficient_storage_with_small_stores(machine, mounts, tmp_path):
    if not mounts.real:
        pytest.skip("needs root to mount size-limited tmpfs stores")
    big = mounts.new("big", 8)
    machine.init_store(big, "big")
    for i in range(2):
        machine.init_store(mounts.new(f"small{i}", 2), f"small{i}")
    make_camera_files(tmp_path / "DCIM", 6, min_kb=600, max_kb=900)
    total = sum(p.stat().st_size for p in (tmp_path / "DCIM").iterdir())
    assert total > 3 * 1024 * 1024  # more than a 2 MB store can hold
    machine.ok("import", str(tmp_path / "DCIM"), "--store", "big", "--json")
    machine.once()
    code, st = machine.status()
    assert code == 2
    a = alert(st, "INSUFFICIENT_STORAGE")
    assert a is not None
    # The copies that did fit were made; the rest wait for storage.
    assert st["histogram"]["3"] < 6


def test_two_stores_is_insufficient_three_is_enough(machine, mounts, tmp_path):
    ids, paths = library_with_stores(machine, mounts, 2)
    make_camera_files(tmp_path / "DCIM", 3)
    machine.ok("import", str(tmp_path / "DCIM"), "--json")
    machine.once()
    _, st = machine.status()
    assert alert(st, "INSUFFICIENT_STORAGE") is not None
    assert st["histogram"]["2"] == 3
    p = mounts.new("store2")
    machine.init_store(p, "store2", *mounts.same_fs_flag)
    machine.once()
    _, st = machine.status()
    assert alert(st, "INSUFFICIENT_STORAGE") is None
    assert st["histogram"]["3"] == 3


def test_store_of_another_machine_holding_the_only_copy(tmp_path, db_url, mounts):
    a = Machine(tmp_path / "machines", "studio", db_url, NOW)
    b = Machine(tmp_path / "machines", "kestrel", db_url, NOW)
    pa = mounts.new("a0")
    a.init_store(pa, "studio-int", *mounts.same_fs_flag)
    pb = mounts.new("b0")
    sid_b = b.init_store(pb, "laptop-ssd", *mounts.same_fs_flag)
    make_camera_files(tmp_path / "LAPTOP", 4)
    b.ok("import", str(tmp_path / "LAPTOP"), "--json")
    b.once()  # heartbeat: kestrel is on, its store online
    _, st = a.status()
    assert alert(st, "DISCONNECTED_ONLY_COPY") is None
    assert store_row(st, sid_b)["online"] is True
    # kestrel goes off: its heartbeat ages past freshness.
    later = NOW + 3600
    _, st = a.status(now=later)
    d = alert(st, "DISCONNECTED_ONLY_COPY")
    assert d is not None and d["files"] == 4 and d["store_ids"] == [sid_b]
    assert "boot kestrel" in d["action"].lower()


def test_malformed_docs_are_logged_once_and_left_alone(machine, mounts, tmp_path):
    from dmedia_tui.db import open_library

    library_with_stores(machine, mounts, 1)
    make_camera_files(tmp_path / "DCIM", 2)
    fids = file_ids_of(machine.ok("import", str(tmp_path / "DCIM"), "--json").json())
    lib = open_library(machine.db_url)
    try:
        doc = lib.docs.get(fids[0])
        doc["bytes"] = doc["bytes"] + 1  # size no longer matches the ID
        lib.docs.save(doc)
        lib.docs.save({"_id": "junk-doc", "type": "dmedia/file", "time": -5})
        before = lib.docs.get(fids[0])
    finally:
        lib.close()
    r = machine.run("check", "--json")
    assert r.exit_code == 1
    assert r.json()["invalid"] >= 1 and r.json()["inconsistent"] == 1
    inv = machine.events("doc/invalid")
    inc = machine.events("file/inconsistent")
    assert [e["file_id"] for e in inc] == [fids[0]]
    assert "junk-doc" in {e.get("doc_id") for e in inv}
    machine.run("check", "--json")
    assert len(machine.events("doc/invalid")) == len(inv)
    assert len(machine.events("file/inconsistent")) == 1
    lib = open_library(machine.db_url)
    try:
        assert lib.docs.get(fids[0]) == before  # never rewritten
    finally:
        lib.close()
    _, st = machine.status()
    assert alert(st, "METADATA_INVALID")["files"] == r.json()["invalid"] + 1
