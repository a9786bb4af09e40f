"""The independent check itself: it must see each kind of damage (else a green matrix
would prove nothing)."""

from __future__ import annotations

import json
import os
import sqlite3
import time
from pathlib import Path

from tests.faults.crash import Lib, check
from tests.integration.harness import flip_bit


def _settled(tmp_path: Path) -> Lib:
    lib = Lib(tmp_path, int(time.time()))
    lib.init_stores()
    lib.photos_files()
    lib.ok("import", str(lib.photos), "--store", "a")
    lib.ok("daemon", "--once")
    return lib


def test_a_settled_library_passes(tmp_path: Path) -> None:
    lib = _settled(tmp_path)
    assert check(lib, lib.outside_snapshot()) == []


def test_each_kind_of_damage_is_seen(tmp_path: Path) -> None:
    lib = _settled(tmp_path)
    before = lib.outside_snapshot()
    a, b = (lib.stores[x] / ".dmedia" for x in "ab")
    copies_a = sorted(a.glob("files/*/*"))
    flip_bit(copies_a[0])  # a bad copy (and so a bad claim)
    os.chmod(copies_a[1], 0o644)
    copies_a[1].unlink()  # a claim with no copy
    orphan = lib.photos / "new.bin"
    orphan.write_bytes(os.urandom(3000))
    lib.ok("import", str(orphan), "--store", "c")
    (b / "tmp" / "leftover").write_bytes(b"x")  # a half write left behind
    (lib.canary / "keep-0.txt").write_bytes(b"changed")  # outside the stores
    con = sqlite3.connect(lib.db)  # a copy on c the library does not know any more
    fid = next(
        json.loads(j)["_id"]
        for (j,) in con.execute("SELECT json FROM doc WHERE db = 1 AND type = 'dmedia/file'")
        if lib.ids["c"] in json.loads(j)["stored"] and len(json.loads(j)["stored"]) == 1
    )
    con.execute("UPDATE doc SET deleted = 1 WHERE db = 1 AND id = ?", (fid,))
    con.commit()
    con.close()

    problems = " | ".join(check(lib, before))
    for expected in ("files: bad copy", "claim:", "tmp: 1 file(s)", "orphan:", "outside:"):
        assert expected in problems, (expected, problems)
