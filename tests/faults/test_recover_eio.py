"""A store's recovery meets an unknown copy it cannot read (real EIO from the FUSE
passthrough of tests/faults/fusefs.py): the copy is neither adopted nor quarantined, and
its folder is not recorded as accounted for, so the next recovery tries it again and
adopts it once the drive reads."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dmedia_tui.clock import FixedClock
from dmedia_tui.config import Config
from dmedia_tui.db import open_library
from dmedia_tui.filestore import FileStore
from dmedia_tui.metastore import MetaStore
from tests.faults import fusefs
from tests.faults.fusefs import FuseMount

pytestmark = fusefs.required()

NOW = 1_795_608_000


@pytest.fixture
def fuse(tmp_path: Path) -> Iterator[FuseMount]:
    (tmp_path / "backing" / "a").mkdir(parents=True)
    mount = FuseMount(tmp_path / "backing" / "a", tmp_path / "drives" / "a", tmp_path / "rules")
    mount.start()
    try:
        yield mount
    finally:
        mount.stop()


def test_an_unknown_copy_that_cannot_be_read_is_tried_again(
    fuse: FuseMount, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dmedia_tui.filestore.RACY_NS", 0)  # stamps trusted at once
    lib = open_library(str(tmp_path / "library.sqlite3"))
    ms = MetaStore(lib, Config.load(tmp_path / "config", tmp_path / "data"), FixedClock(NOW))
    fs, _, _ = ms.init_store(fuse.mountpoint, label="a", same_filesystem=True)
    known = fs.import_bytes(os.urandom(20_000)).content_hash.id
    ms.lib.docs.save(
        {
            "_id": known,
            "type": "dmedia/file",
            "time": NOW,
            "atime": NOW,
            "bytes": 20_000,
            "origin": "user",
            "stored": {fs.id: {"copies": 1, "mtime": NOW}},
        }
    )
    ms.recover_store(fs)  # every folder listed, the record saved
    unknown = fs.import_bytes(os.urandom(30_000)).content_hash.id  # put there by hand
    fuse.set(eio=[{"path": f".dmedia/files/{unknown[:2]}/{unknown[2:]}", "offset": 0}])

    def again() -> dict[str, int]:
        return MetaStore(ms.lib, ms.config, ms.clock).recover_store(FileStore(fs.path))

    got = again()
    assert (got["folders"], got["adopted"], got["quarantines"]) == (1, 0, 0)
    assert ms.file_doc(unknown) is None
    assert FileStore(fs.path).folders_seen().stamps[unknown[:2]] == ""  # not accounted for
    assert again()["folders"] == 1  # still unreadable: tried again, still not adopted
    assert ms.file_doc(unknown) is None
    fuse.set()  # the drive reads again
    got = again()
    assert (got["folders"], got["adopted"]) == (1, 1)
    assert fs.id in ms.file_doc(unknown)["stored"]
    assert again()["folders"] == 0
    lib.close()
