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
    # ... and at the threshold the drive is failing (issue 14, reason io_errors): one
    # DRIVE_FAILURE banner (not a second DRIVE_READ_ERRORS one), no new copies there.
    alerts = {a.code: a for a in ms.health(local=[fs.id]).alerts}
    assert alerts["DRIVE_FAILURE"].store_ids == (fs.id,)
    assert "DRIVE_READ_ERRORS" not in alerts
    store = ms.store_doc(fs.id)
    assert store["failure"]["reason"] == "io_errors" and store["no_new_copies"] is True
    assert store["downgraded"]["reason"] == "io_errors"
    assert ms.lib.docs.get(fid)["stored"][fs.id]["verified"] == verified
    # A full disk on a copy's destination is logged, but it is not the drive failing.
    ms.clock = FixedClock(NOW + 10 * 86400)
    ms.note_io_error(fs.id, fid, "No space left on device (ENOSPC)", op="write", counts=False)
    assert ms.lib.events(1, types=[LOG_FILE_UNREADABLE])[0]["op"] == "write"
    assert "DRIVE_READ_ERRORS" not in {a.code for a in ms.health(local=[fs.id]).alerts}


def _fail_reads(ms: MetaStore, store_id: str, fid: str, n: int) -> None:
    eio = "Input/output error (EIO)"
    for _ in range(n):
        ms.note_io_error(store_id, fid, eio)
    ms.flush_io_errors()


def test_repeated_io_errors_flag_the_store_once_per_episode(ms, tmp_path: Path) -> None:
    """Issue 14: reads that keep failing flag the store failing (reason io_errors) once;
    more errors in the same run of them say nothing new; an acknowledgement hides the
    banner until a new run of errors begins after it."""
    from dmedia_tui.schema import LOG_STORE_FAILING

    (tmp_path / "a").mkdir()
    fs, _, _ = ms.init_store(tmp_path / "a", label="a", same_filesystem=True)
    src = tmp_path / "photo.jpg"
    src.write_bytes(b"p" * 10_000)
    fid, _ = import_one(ms, src, fs)
    th = ms.thresholds

    def failing_events() -> list[dict]:
        return ms.lib.events(100, newest_first=False, types=[LOG_STORE_FAILING])

    def codes() -> set[str]:
        return {a.code for a in ms.health(local=[fs.id]).alerts}

    # One error short of the threshold: counted, not flagged.
    _fail_reads(ms, fs.id, fid, th.read_error_alert - 1)
    assert "failure" not in ms.store_doc(fs.id) and failing_events() == []
    assert not ({"DRIVE_FAILURE", "DRIVE_READ_ERRORS"} & codes())
    # The threshold: flagged, logged once, downgraded (its copy still tracked, counting 0).
    ms.clock = FixedClock(NOW + 60)
    _fail_reads(ms, fs.id, fid, 1)
    assert [(e["store_id"], e["reason"]) for e in failing_events()] == [(fs.id, "io_errors")]
    assert "10 I/O errors" in failing_events()[0]["errors"][0]
    assert ms.lib.docs.get(fid)["stored"][fs.id]["copies"] == 0
    assert "DRIVE_FAILURE" in codes()
    # More of the same run: nothing new to say.
    ms.clock = FixedClock(NOW + 120)
    _fail_reads(ms, fs.id, fid, 5)
    assert len(failing_events()) == 1
    # Acknowledged: the banner goes, and errors of the same run keep it gone.
    ms.clock = FixedClock(NOW + 180)
    ms.acknowledge_failure(fs.id)
    assert not ({"DRIVE_FAILURE", "DRIVE_READ_ERRORS"} & codes())
    ms.clock = FixedClock(NOW + 240)
    _fail_reads(ms, fs.id, fid, 5)
    assert len(failing_events()) == 1 and "DRIVE_FAILURE" not in codes()
    # A quiet window later the drive fails again: that is news, the banner is back.
    ms.clock = FixedClock(NOW + 240 + th.read_error_window + 1)
    _fail_reads(ms, fs.id, fid, th.read_error_alert)
    assert len(failing_events()) == 2
    assert ms.store_doc(fs.id)["failure"]["acknowledged"] is False
    assert "DRIVE_FAILURE" in codes()


def test_full_disk_errors_never_flag_the_store(ms, tmp_path: Path) -> None:
    """ENOSPC is logged but is not the drive failing, however many there are."""
    (tmp_path / "a").mkdir()
    fs, _, _ = ms.init_store(tmp_path / "a", label="a", same_filesystem=True)
    for _ in range(3 * ms.thresholds.read_error_alert):
        ms.note_io_error(
            fs.id, "X" * 48, "No space left on device (ENOSPC)", op="write", counts=False
        )
    ms.flush_io_errors()
    store = ms.store_doc(fs.id)
    assert "failure" not in store and "downgraded" not in store


def test_workers_noting_io_errors_at_once_count_each_once_and_flag_once(ms, tmp_path: Path) -> None:
    """On a failing drive the verify and copy workers and the peer server's reads note
    errors at the same moment. Without one lock, a flush read the counts while another
    worker added to them (an error lost, or counted twice), and two flushes past the alert
    each flagged the store failing: two events and two downgrade passes at once."""
    import dataclasses
    import threading

    from dmedia_tui.schema import LOG_STORE_FAILING

    (tmp_path / "a").mkdir()
    fs, _, _ = ms.init_store(tmp_path / "a", label="a", same_filesystem=True)
    src = tmp_path / "photo.jpg"
    src.write_bytes(b"p" * 10_000)
    fid, _ = import_one(ms, src, fs)
    ms.thresholds = dataclasses.replace(ms.thresholds, io_error_log_interval=0)  # each flushes
    threads, per_thread = 8, 40
    start = threading.Barrier(threads)

    def worker() -> None:
        start.wait()
        for _ in range(per_thread):
            ms.note_io_error(fs.id, fid, "Input/output error (EIO)")

    running = [threading.Thread(target=worker) for _ in range(threads)]
    for t in running:
        t.start()
    for t in running:
        t.join()
    ms.flush_io_errors()
    total = threads * per_thread
    assert ms.store_doc(fs.id)["read_errors"]["count"] == total
    logged = ms.lib.events(1000, types=[LOG_FILE_UNREADABLE])
    assert sum(e["count"] for e in logged) == total
    assert len(ms.lib.events(100, types=[LOG_STORE_FAILING])) == 1
