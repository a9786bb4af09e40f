"""kill -9 at the dangerous steps, then the next run recovers to the truth (defect 3).

Each test runs a real `dmedia-tui` child with DMEDIA_FAULT naming a fault point (see
dmedia_tui/faults.py), so it dies by SIGKILL at exactly that step; then a normal run
recovers and the disk and the docs are checked against each other.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dmedia_tui.db import open_library
from tests.conftest import NOW
from tests.faults.proc import KILLED, cli
from tests.integration.harness import (
    Machine,
    alert,
    canonical,
    flip_bit,
    make_camera_files,
    quarantined,
)


def file_doc(m: Machine, file_id: str) -> dict | None:
    lib = open_library(m.db_url, create=False)
    try:
        return lib.docs.get_or_none(file_id)
    finally:
        lib.close()


@pytest.fixture
def lib(tmp_path: Path):
    m = Machine(tmp_path, "m1", str(tmp_path / "library.sqlite3"), NOW)
    paths = {n: tmp_path / "drives" / n for n in ("a", "b", "c")}
    sids = {}
    for n, p in paths.items():
        p.mkdir(parents=True)
        sids[n] = m.init_store(p, n, "--same-filesystem")
    make_camera_files(tmp_path / "photos", 3, max_kb=40)
    return m, paths, sids


def ids_of(m: Machine) -> list[str]:
    return sorted(
        m.ok("import", "--json", "--store", "a", str(Path(m.db_url).parent / "photos")).json()[
            "file_ids"
        ]
    )


@pytest.mark.parametrize(
    "point",
    [
        "quarantine.moved",
        "quarantine.done",
        "corrupt.logged",
        "corrupt.flagged",
        "corrupt.failing_logged",
        "corrupt.doc_marked",
    ],
)
def test_a_crash_after_the_quarantine_still_flags_the_store(lib, point: str) -> None:
    m, paths, sids = lib
    fids = ids_of(m)
    m.ok("daemon", "--once")
    victim = fids[0]
    flip_bit(canonical(paths["a"], victim))

    r = cli(m, "verify", "--all", "--store", "a", fault=point)
    assert r.returncode == KILLED, r.stderr
    assert quarantined(paths["a"], victim) and not canonical(paths["a"], victim).exists()

    m.run("daemon", "--once")  # the next run, no fault
    doc = file_doc(m, victim)
    assert sids["a"] not in doc["stored"] and sids["a"] in doc.get("corrupt", {})
    corrupt = [e for e in m.events("file/corrupt") if e["file_id"] == victim]
    assert corrupt and all(e["store_id"] == sids["a"] for e in corrupt)
    assert not [e for e in m.events("file/missing") if e["file_id"] == victim]
    _, status = m.status()
    failing = alert(status, "DRIVE_FAILURE")
    assert failing is not None and sids["a"] in failing["store_ids"]
    row = next(s for s in status["stores"] if s["_id"] == sids["a"])
    assert row["state"] == "failing" and row["copies"] == 0
    # Healed from the good copies, never onto the failing store.
    assert set(doc["stored"]) == {sids["b"], sids["c"]}


@pytest.mark.parametrize("point", ["files.renamed", "files.committed"])
def test_an_import_killed_before_its_doc_is_adopted(lib, tmp_path: Path, point: str) -> None:
    m, paths, sids = lib
    one = tmp_path / "one"
    make_camera_files(one, 1, seed=5, max_kb=30)
    r = cli(m, "import", "--store", "a", str(one), fault=point)
    assert r.returncode == KILLED, r.stderr
    copies = [p for p in (paths["a"] / ".dmedia" / "files").rglob("*") if p.is_file()]
    assert len(copies) == 1
    fid = copies[0].parent.name + copies[0].name
    assert file_doc(m, fid) is None  # the crash: a durable copy the library does not know

    m.ok("daemon", "--once")
    doc = file_doc(m, fid)
    assert doc is not None and doc["origin"] == "user" and doc["bytes"] > 0
    assert sids["a"] in doc["stored"] and doc["stored"][sids["a"]].get("verified")
    assert len(doc["stored"]) == 3  # and copied like any other user file
    _, status = m.status()
    assert status["histogram"]["3"] == 1


def test_a_copy_killed_before_its_doc_is_recorded(lib) -> None:
    m, paths, sids = lib
    fids = ids_of(m)
    r = cli(m, "daemon", "--once", fault="copy.written")
    assert r.returncode == KILLED, r.stderr
    m.ok("daemon", "--once")
    for fid in fids:
        doc = file_doc(m, fid)
        assert set(doc["stored"]) == set(sids.values())
        for n, p in paths.items():
            assert canonical(p, fid).is_file(), n
