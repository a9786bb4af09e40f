"""A lost or damaged library is never silently replaced, and can be rebuilt from its drives.

Issue 10, defect 4: after `truncate -s 0 library.sqlite3`, `store list`, `check`, `verify`,
`daemon` and `import` used to create a new empty library and exit 0. Only `store init` on
a path that does not exist may create a library; everything else exits 3 with one line.
A damaged page is caught at open (PRAGMA quick_check) instead of looking healthy.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.conftest import NOW
from tests.integration.harness import Machine, Result, make_camera_files

EVERY_COMMAND = [
    ("status",),
    ("store", "list"),
    ("store", "trust", "x"),
    ("check",),
    ("verify", "--all"),
    ("daemon", "--once"),
    ("events",),
    ("import", "{file}"),
    ("store", "init", "{dir}"),
]


def one_line(r: Result, code: int, *words: str) -> str:
    assert r.exit_code == code, f"exit {r.exit_code}\n{r.stdout}\n{r.stderr}"
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dmedia-tui: "), r.stderr
    for w in words:
        assert w in lines[0], lines[0]
    return lines[0]


def files_under(folder: Path) -> dict[str, bytes]:
    return {
        str(p): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not p.name.endswith("-shm")
    }


@pytest.fixture
def filled(tmp_path: Path) -> tuple[Machine, Path, Path]:
    """A machine with a library of one store, 20 imported files and 500 more file docs."""
    db = tmp_path / "lib" / "library.sqlite3"
    m = Machine(tmp_path / "machines", "studio", str(db), NOW)
    store = tmp_path / "store"
    store.mkdir()
    m.init_store(store, "s")
    make_camera_files(tmp_path / "photos", 20, max_kb=4)
    m.ok("import", str(tmp_path / "photos"))
    from dmedia_tui import protocol, schema
    from dmedia_tui.db import open_library

    lib = open_library(str(db), create=False)
    docs = []
    for i in range(500):
        ch = protocol.hash_bytes(i.to_bytes(4, "big") * 10)
        docs.append(schema.create_file(NOW, ch, {}, name=f"IMG_{i:04d}.JPG"))
    lib.docs.save_many(docs)
    lib.close()
    return m, db, store


def _run_all(
    m: Machine, tmp_path: Path, commands: list[tuple[str, ...]] = EVERY_COMMAND
) -> list[tuple[tuple[str, ...], Result]]:
    f = tmp_path / "new.jpg"
    f.write_bytes(os.urandom(3000))
    d = tmp_path / "newstore"
    d.mkdir(exist_ok=True)
    out = []
    for args in commands:
        argv = [a.replace("{file}", str(f)).replace("{dir}", str(d)) for a in args]
        out.append((args, m.run(*argv)))
    return out


def test_an_emptied_library_is_refused_by_every_command(filled, tmp_path):
    m, db, store = filled
    for p in db.parent.glob("library.sqlite3-*"):
        p.unlink()
    os.truncate(db, 0)
    before = files_under(db.parent)
    store_before = files_under(store)
    for args, r in _run_all(m, tmp_path):
        line = one_line(r, 3, "file is empty")
        assert "dmedia-tui rebuild" in line, (args, line)
    assert db.read_bytes() == b""
    assert files_under(db.parent) == before  # no new library, no WAL beside it
    assert files_under(store) == store_before
    assert not (tmp_path / "newstore" / ".dmedia").exists()


def _corrupt_a_page(db: Path) -> None:
    """Overwrite one page in the middle of the file with garbage (a bad sector)."""
    size = db.stat().st_size
    page = 4096
    assert size >= 8 * page, size
    target = (size // page // 2) * page
    with open(db, "r+b") as f:
        f.seek(target)
        f.write(bytes([0x5A]) * page)


def test_a_damaged_page_is_caught_at_open(filled, tmp_path):
    m, db, _store = filled
    from dmedia_tui.db import open_library

    open_library(str(db), create=False).close()  # last connection: the WAL is checkpointed
    assert not Path(str(db) + "-wal").exists() or Path(str(db) + "-wal").stat().st_size == 0
    _corrupt_a_page(db)
    before = db.read_bytes()
    for args, r in _run_all(m, tmp_path):
        line = one_line(r, 3, "damaged")
        assert "dmedia-tui rebuild" in line, (args, line)
    assert db.read_bytes() == before


def test_store_init_still_creates_a_new_library(tmp_path):
    db = tmp_path / "new" / "library.sqlite3"
    m = Machine(tmp_path / "machines", "studio", str(db), NOW)
    s = tmp_path / "s"
    s.mkdir()
    m.init_store(s, "s")
    assert m.ok("store", "list", "--json").json()[0]["label"] == "s"


def test_a_couch_library_that_does_not_exist_is_not_created(tmp_path, couch_server):
    url = couch_server.fresh_url()
    m = Machine(tmp_path / "machines", "studio", url, NOW)
    for _args, r in _run_all(m, tmp_path, EVERY_COMMAND[:-1]):  # all but store init
        one_line(r, 3, "does not exist")
    from dmedia_tui.db import open_library
    from dmedia_tui.db.base import DatabaseOffline

    with pytest.raises(DatabaseOffline):
        open_library(url, create=False)
    s = tmp_path / "s"
    s.mkdir()
    m.init_store(s, "s")  # store init creates it
    assert m.ok("store", "list", "--json").json()[0]["label"] == "s"


def test_a_damaged_page_of_a_large_library_is_caught_by_check_and_the_daemon(
    filled, tmp_path, monkeypatch
):
    """Above QUICK_CHECK_OPEN_BYTES only the small tables are checked at open (the whole
    file costs ~1.8 s per 100k docs): `check` and the daemon's schema pass check it all."""
    from dmedia_tui.db import open_library, sqlite

    m, db, _store = filled
    open_library(str(db), create=False).close()
    _corrupt_a_page(db)
    monkeypatch.setattr(sqlite, "QUICK_CHECK_OPEN_BYTES", 4096)
    one_line(m.run("check"), 3, "damaged", "dmedia-tui rebuild")
    one_line(m.run("daemon", "--once"), 3, "damaged", "dmedia-tui rebuild")


# --- rebuild: the way back ---------------------------------------------------------------


def _settled(m: Machine, tmp_path: Path) -> tuple[list[Path], list[str]]:
    """Three stores, 12 files copied to all of them."""
    paths, sids = [], []
    for name in ("a", "b", "c"):
        p = tmp_path / name
        p.mkdir()
        sids.append(m.init_store(p, name, "--same-filesystem"))
        paths.append(p)
    make_camera_files(tmp_path / "photos", 12, max_kb=40)
    m.ok("import", str(tmp_path / "photos"), "--store", "a")
    m.once()
    return paths, sids


def _library_facts(m: Machine) -> tuple[dict, int, list]:
    _code, st = m.status()
    stores = sorted((s["_id"], s["label"]) for s in m.ok("store", "list", "--json").json())
    return st["histogram"], st["files"], stores


def test_rebuild_an_emptied_library_from_the_known_stores(tmp_path):
    db = tmp_path / "lib" / "library.sqlite3"
    m = Machine(tmp_path / "machines", "studio", str(db), NOW)
    paths, _sids = _settled(m, tmp_path)
    before = _library_facts(m)
    assert before[0]["3"] == 12
    for p in db.parent.glob("library.sqlite3-*"):
        p.unlink()
    os.truncate(db, 0)
    one_line(m.run("status"), 3, "file is empty", "dmedia-tui rebuild")
    r = m.ok("rebuild", "--json", now=NOW + 60)
    report = r.json()
    assert report["files"] == 12 and report["copies"] == 36 and report["corrupt"] == 0
    assert report["errors"] == []
    assert _library_facts(m) == before
    assert m.ok("check").exit_code == 0  # every rebuilt doc is valid and consistent
    # A second rebuild would overwrite a library that has docs: refused, nothing changed.
    snap = db.read_bytes()
    one_line(m.run("rebuild"), 1, "not empty", "--db NEW_PATH")
    assert db.read_bytes() == snap


def test_rebuild_on_both_backends_into_a_new_library_from_named_folders(tmp_path, db_url, request):
    m = Machine(tmp_path / "machines", "studio", db_url, NOW)
    paths, _sids = _settled(m, tmp_path)
    a = paths[0]
    # One copy on store a rots: rebuild finds it, quarantines it and flags a.
    victim = sorted((a / ".dmedia" / "files").rglob("*"))[-1]
    os.chmod(victim, 0o644)
    data = bytearray(victim.read_bytes())
    data[100] ^= 1
    victim.write_bytes(bytes(data))
    if db_url.startswith("http"):
        new_url = request.getfixturevalue("couch_server").fresh_url()
    else:
        new_url = str(tmp_path / "new.sqlite3")
    # A new machine (nothing known) names the folders.
    other = Machine(tmp_path / "machines", "laptop", new_url, NOW + 60)
    r = other.run("rebuild", *map(str, paths), "--json")
    assert r.exit_code == 0, r.stderr
    report = r.json()
    assert (report["files"], report["copies"], report["corrupt"]) == (12, 35, 1)
    assert sorted(report["stores"]) == sorted(_sids)
    assert list((a / ".dmedia" / "corrupt").iterdir())  # quarantined, never deleted
    code, st = other.status()
    assert st["files"] == 12 and st["histogram"]["2"] + st["histogram"]["3"] == 12
    assert "DRIVE_FAILURE" in {x["code"] for x in st["alerts"]}
    assert {e["type"] for e in other.events()} >= {"dmedia/file/corrupt"}
