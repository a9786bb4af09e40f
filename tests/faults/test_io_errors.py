"""Real EIO and ENOSPC from a FUSE passthrough (tests/faults/fusefs.py) under store "a".

A read error is not corruption: nothing is quarantined, the copy stays claimed, the store
is not flagged. A full disk leaves no half copy and no doc claim, and says so in one line.
Every case ends with the independent check of crash.py.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.faults import fusefs
from tests.faults.crash import DAY, Lib, check
from tests.faults.fusefs import FuseMount

pytestmark = fusefs.required()

KB = 1024


@pytest.fixture
def lib(tmp_path: Path) -> Iterator[Lib]:
    """Stores a (on the faulty FUSE mount), b, c, d (plain folders)."""
    lib = Lib(tmp_path, int(time.time()))
    fuse = FuseMount(tmp_path / "backing" / "a", tmp_path / "drives" / "a", tmp_path / "rules")
    fuse.start()
    lib.fuse = fuse  # type: ignore[attr-defined]
    try:
        yield lib
    finally:
        fuse.stop()


def _fuse(lib: Lib) -> FuseMount:
    return lib.fuse  # type: ignore[attr-defined]


def _photos(lib: Lib, sizes: list[int]) -> list[Path]:
    lib.photos.mkdir(exist_ok=True)
    out = []
    for i, size in enumerate(sizes):
        p = lib.photos / f"IMG_{i:04d}.JPG"
        p.write_bytes(os.urandom(size))
        out.append(p)
    return out


def _copy_rel(lib: Lib, file_id: str) -> str:
    return f".dmedia/files/{file_id[:2]}/{file_id[2:]}"


def _file_doc(lib: Lib, file_id: str) -> dict:
    return next(d for d in lib.docs(1) if d["_id"] == file_id)


def _events(lib: Lib, type_: str) -> list[dict]:
    return [e for e in lib.docs(2) if e.get("type") == type_]


def _id_of(lib: Lib, path: Path) -> str:
    from dmedia_tui.protocol import hash_bytes

    return hash_bytes(path.read_bytes()).id


def _one_line_errors(stderr: str) -> list[str]:
    """The CLI's error lines ("dmedia-tui: ..."); log lines may come too, never a traceback."""
    assert "Traceback" not in stderr and "Error:" not in stderr, stderr
    # `daemon` stamps its log lines with the time (journald keeps it): look past the stamp.
    stamp = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
    lines = [stamp.sub("", ln) for ln in stderr.splitlines() if ln.strip()]
    assert all(ln.startswith(("dmedia-tui: ", "WARNING ", "INFO ", "ERROR ")) for ln in lines)
    return [ln for ln in lines if ln.startswith("dmedia-tui: ")]


def test_verify_eio_is_unreadable_never_corrupt(lib: Lib) -> None:
    lib.init_stores()
    photos = _photos(lib, [200 * KB, 300 * KB, 9 * 1024 * KB])  # the last has 2 leaves
    lib.ok("import", str(lib.photos), "--store", "a")
    lib.ok("daemon", "--once")
    before = lib.outside_snapshot()
    sid = lib.ids["a"]
    victim = _id_of(lib, photos[2])
    verified_before = _file_doc(lib, victim)["stored"][sid]["verified"]
    # a bad sector in the second leaf of one copy
    _fuse(lib).set(eio=[{"path": _copy_rel(lib, victim), "offset": 8 * 1024 * KB + 10}])

    r = lib.cli("verify", "--all", "--json", now=lib.now + DAY)
    _one_line_errors(r.stderr)
    assert r.returncode == 0, r.stderr  # 2 would mean "corrupt found"
    summary = __import__("json").loads(r.stdout)
    assert summary["unreadable"] == 1 and summary["corrupt"] == 0

    backing = lib.root / "backing" / "a" / ".dmedia"
    assert (backing / "files" / victim[:2] / victim[2:]).is_file()  # not moved
    assert list((backing / "corrupt").iterdir()) == []  # nothing quarantined
    value = _file_doc(lib, victim)["stored"][sid]
    assert value["copies"] == 1  # still claimed, still counts
    assert value["verified"] == verified_before  # an unread copy is not "verified"
    store = next(d for d in lib.docs(1) if d["_id"] == sid)
    assert not store.get("failure") and not store.get("no_new_copies")
    assert not store.get("downgraded")
    assert _events(lib, "dmedia/file/corrupt") == []
    # the drive reads again: the copy is intact (it never was corrupt) and verifies fine
    _fuse(lib).set()
    assert check(lib, before) == []
    r = lib.cli("verify", "--all", "--json", now=lib.now + DAY)
    assert r.returncode == 0, r.stderr
    assert __import__("json").loads(r.stdout)["unreadable"] == 0
    assert _file_doc(lib, victim)["stored"][sid]["verified"] > verified_before


def test_copy_from_an_unreadable_source_writes_nothing(lib: Lib) -> None:
    lib.init_stores()
    photos = _photos(lib, [200 * KB, 300 * KB])
    lib.ok("import", str(lib.photos), "--store", "a")
    before = lib.outside_snapshot()
    victim = _id_of(lib, photos[0])
    _fuse(lib).set(eio=[{"path": _copy_rel(lib, victim), "offset": 0}])

    r = lib.cli("daemon", "--once", "--json")
    assert r.returncode == 0, r.stderr
    _one_line_errors(r.stderr)
    doc = _file_doc(lib, victim)
    assert list(doc["stored"]) == [lib.ids["a"]]  # no copy made from unread bytes
    assert not doc.get("corrupt")
    other = _file_doc(lib, _id_of(lib, photos[1]))
    assert len(other["stored"]) == 3  # the readable file was copied
    _fuse(lib).set()
    assert check(lib, before) == []


def test_import_enospc_leaves_no_half_copy_and_no_claim(lib: Lib) -> None:
    lib.init_stores()
    photos = _photos(lib, [100 * KB, 300 * KB, 200 * KB])
    before = lib.outside_snapshot()
    # room for the first file only: the second fails part-way through its tmp write
    _fuse(lib).set(enospc={"prefix": ".dmedia/tmp/", "after": 150 * KB})

    r = lib.cli("import", str(lib.photos), "--store", "a")
    assert r.returncode == 1, (r.returncode, r.stderr)
    errors = _one_line_errors(r.stderr)
    assert len(errors) == 2, errors  # one line per file that did not fit
    assert all("No space left on device" in ln for ln in errors), errors

    files = lib.root / "backing" / "a" / ".dmedia" / "files"
    assert sorted(p.parent.name + p.name for p in files.glob("*/*")) == [_id_of(lib, photos[0])]
    assert list((lib.root / "backing" / "a" / ".dmedia" / "tmp").iterdir()) == []
    ids = {d["_id"] for d in lib.docs(1) if d.get("type") == "dmedia/file"}
    assert ids == {_id_of(lib, photos[0])}
    assert check(lib, before) == []


def test_copy_enospc_on_one_destination_leaves_no_half_copy_there(lib: Lib) -> None:
    # b is the import store; a (full) and c, d are destinations
    lib.init_stores()
    _photos(lib, [300 * KB, 200 * KB])
    lib.ok("import", str(lib.photos), "--store", "b")
    before = lib.outside_snapshot()
    _fuse(lib).set(enospc={"prefix": ".dmedia/tmp/", "after": 50 * KB})

    r = lib.cli("daemon", "--once", "--json")
    assert r.returncode == 0, r.stderr
    _one_line_errors(r.stderr)
    backing = lib.root / "backing" / "a" / ".dmedia"
    assert list(backing.joinpath("files").glob("*/*")) == []
    assert list(backing.joinpath("tmp").iterdir()) == []
    for doc in (d for d in lib.docs(1) if d.get("type") == "dmedia/file"):
        assert lib.ids["a"] not in doc["stored"]
        # the others still get copies (statfs says a has room, so it may be chosen again
        # for the last one: a file can stay at 2 copies this round, never fewer)
        assert set(doc["stored"]) <= {lib.ids[x] for x in "bcd"} and len(doc["stored"]) >= 2
    assert check(lib, before) == []


def test_a_drive_whose_reads_keep_failing_is_flagged_failing(lib: Lib) -> None:
    """Issue 14: repeated real EIO while verifying one store (10 unreadable copies, the
    default `read_error_alert`) flag it failing with reason io_errors: DRIVE_FAILURE in
    `status`, no new copies there, downgraded; still nothing quarantined, every copy still
    tracked, the files copied elsewhere by the next run."""
    lib.init_stores()
    photos = _photos(lib, [20 * KB + i for i in range(10)])
    lib.ok("import", str(lib.photos), "--store", "a")
    lib.ok("daemon", "--once")
    before = lib.outside_snapshot()
    sid = lib.ids["a"]
    ids = [_id_of(lib, p) for p in photos]
    _fuse(lib).set(eio=[{"path": _copy_rel(lib, fid), "offset": 0} for fid in ids])

    r = lib.cli("verify", "--store", "a", "--all", "--json", now=lib.now + DAY)
    _one_line_errors(r.stderr)
    assert r.returncode == 0, r.stderr  # unreadable is not corrupt
    assert __import__("json").loads(r.stdout)["unreadable"] == 10

    store = next(d for d in lib.docs(1) if d["_id"] == sid)
    assert store["failure"]["reason"] == "io_errors" and store["no_new_copies"] is True
    assert store["downgraded"]["reason"] == "io_errors"
    failing = _events(lib, "dmedia/store/failing")
    assert [(e["store_id"], e["reason"]) for e in failing] == [(sid, "io_errors")]
    backing = lib.root / "backing" / "a" / ".dmedia"
    assert list((backing / "corrupt").iterdir()) == []  # I/O errors are not corruption
    for fid in ids:
        assert (backing / "files" / fid[:2] / fid[2:]).is_file()
        assert _file_doc(lib, fid)["stored"][sid]["copies"] == 0  # tracked, counting 0
    st = __import__("json").loads(lib.cli("status", "--json", now=lib.now + DAY).stdout)
    flagged = [a for a in st["alerts"] if a["code"] == "DRIVE_FAILURE"]
    assert [a["store_ids"] for a in flagged] == [[sid]]
    assert "DRIVE_READ_ERRORS" not in {a["code"] for a in st["alerts"]}
    _fuse(lib).set()
    assert check(lib, before) == []
