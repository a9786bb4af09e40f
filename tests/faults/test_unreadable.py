"""Unreadable is an event (defect 6): logged, counted per store, a drive alert past a
threshold, and never taken for a verification.

A read error cannot be made on a real disk here as root (EIO needs a failing device or
the FUSE harness; root reads a chmod-000 file), so the FileStore's verdict is the one
constructed: everything after it (docs, log-1, health) is the real code on a real library.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dmedia_tui.clock import FixedClock
from dmedia_tui.config import Config
from dmedia_tui.filestore import VerifyResult, VerifyStatus
from dmedia_tui.metastore import MetaStore
from dmedia_tui.schema import LOG_FILE_UNREADABLE
from tests.conftest import NOW
from tests.ops import import_one, verify_one


@pytest.fixture
def ms(sqlite_library, tmp_path: Path) -> MetaStore:
    return MetaStore(
        sqlite_library, Config.load(tmp_path / "config", tmp_path / "data"), FixedClock(NOW)
    )


def test_unreadable_is_logged_counted_alerted_and_never_verified(ms, tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    fs, _, _ = ms.init_store(tmp_path / "a", label="a", same_filesystem=True)
    src = tmp_path / "photo.jpg"
    src.write_bytes(b"p" * 10_000)
    fid, _ = import_one(ms, src, fs)
    assert verify_one(ms, fs, fid).status == VerifyStatus.OK
    verified = ms.lib.docs.get(fid)["stored"][fs.id]["verified"]
    th = ms.thresholds

    ms.clock = FixedClock(NOW + 3600)
    eio = VerifyResult(VerifyStatus.UNREADABLE, fid, error="Input/output error (EIO)")
    ms.apply_verify_result(fs, eio)
    assert ms.lib.docs.get(fid)["stored"][fs.id]["verified"] == verified  # not refreshed
    logged = ms.lib.events(100, newest_first=False, types=[LOG_FILE_UNREADABLE])
    assert [(e["store_id"], e["file_id"], e["count"]) for e in logged] == [(fs.id, fid, 1)]
    assert "EIO" in logged[0]["reason"]

    # A store that keeps failing: rate-limited log, every error counted, then an alert.
    for _ in range(th.read_error_alert - 1):
        ms.apply_verify_result(fs, eio)
    assert len(ms.lib.events(100, types=[LOG_FILE_UNREADABLE])) == 1  # rate-limited
    assert "DRIVE_READ_ERRORS" not in {a.code for a in ms.health(local=[fs.id]).alerts}
    ms.flush_io_errors()  # the end of a run: what the rate limit held back is counted
    logged = ms.lib.events(100, newest_first=False, types=[LOG_FILE_UNREADABLE])
    assert sum(e["count"] for e in logged) == th.read_error_alert
    assert ms.store_doc(fs.id)["read_errors"]["count"] == th.read_error_alert
    alerts = {a.code: a for a in ms.health(local=[fs.id]).alerts}
    assert alerts["DRIVE_READ_ERRORS"].store_ids == (fs.id,)
    assert ms.lib.docs.get(fid)["stored"][fs.id]["verified"] == verified
    # A full disk on a copy's destination is logged, but it is not the drive failing.
    ms.clock = FixedClock(NOW + 10 * 86400)
    ms.note_io_error(fs.id, fid, "No space left on device (ENOSPC)", op="write", counts=False)
    assert ms.lib.events(1, types=[LOG_FILE_UNREADABLE])[0]["op"] == "write"
    assert "DRIVE_READ_ERRORS" not in {a.code for a in ms.health(local=[fs.id]).alerts}
