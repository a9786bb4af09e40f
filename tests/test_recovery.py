"""The recovery rules that finish what a killed run left half done (issue 10), one by one,
on both backends: a quarantine killed between its link and its unlink, a downgrade or a
purge killed anywhere after it began, a downgraded store whose copies still count, and
the events of a resumed quarantine (each logged once).

A kill is simulated in-process: the fault point named raises `Killed` (a BaseException,
so no handler of the product catches it), and nothing after it runs. The real SIGKILL of
each point, on a real CLI process, is the crash matrix (tests/faults/test_crash_matrix.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from dmedia_tui import schema, transitions
from dmedia_tui.clock import FixedClock
from dmedia_tui.config import Config
from dmedia_tui.filestore import FileStore, VerifyStatus
from dmedia_tui.metastore import MetaStore
from tests.conftest import NOW
from tests.ops import import_one, verify_one


class Killed(BaseException):
    """The process "died" at a fault point."""


@pytest.fixture
def die_at(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """die_at("name") or die_at("name@N"): the N-th time that point is reached, raise."""

    def arm(spec: str) -> None:
        name, _, nth = spec.partition("@")
        hits = {"n": 0}

        def point(reached: str) -> None:
            if reached == name:
                hits["n"] += 1
                if hits["n"] >= int(nth or 1):
                    raise Killed(spec)

        for module in ("metastore", "filestore"):
            monkeypatch.setattr(f"dmedia_tui.{module}.fault_point", point)

    return arm


def disarm(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("metastore", "filestore"):
        monkeypatch.setattr(f"dmedia_tui.{module}.fault_point", lambda name: None)


@pytest.fixture
def ms(library, tmp_path: Path) -> MetaStore:
    return MetaStore(library, Config.load(tmp_path / "config", tmp_path / "data"), FixedClock(NOW))


def restarted(ms: MetaStore) -> MetaStore:
    """A new process on the same library and machine (nothing kept in memory)."""
    return MetaStore(ms.lib, ms.config, ms.clock)


def new_store(ms: MetaStore, tmp_path: Path, name: str) -> FileStore:
    (tmp_path / name).mkdir()
    fs, _, created = ms.init_store(tmp_path / name, label=name, same_filesystem=True)
    assert created
    return fs


def import_n(ms: MetaStore, fs: FileStore, tmp_path: Path, n: int) -> list[str]:
    out = []
    for i in range(n):
        src = tmp_path / "src" / f"f{i}.jpg"
        src.parent.mkdir(exist_ok=True)
        src.write_bytes(bytes([i + 1]) * (5000 + i))
        out.append(import_one(ms, src, fs)[0])
    return sorted(out)


def one_per_batch(ms: MetaStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Set operations commit a batch per file, so `name@2` stops one mid-way."""
    orig = ms.lib.docs.update_many

    def update_many(ids, fn, *args, **_):
        return orig(ids, fn, *args, batch_size=1)

    monkeypatch.setattr(ms.lib.docs, "update_many", update_many)
    entries = ms.lib.docs.update_store_entries

    def update_store_entries(ids, store_id, op, fn):
        return entries(ids, store_id, op, fn, batch_size=1)

    monkeypatch.setattr(ms.lib.docs, "update_store_entries", update_store_entries)


def events(ms: MetaStore, type: str) -> list[dict]:
    return ms.lib.events(1000, newest_first=False, types=[type])


def rot(fs: FileStore, fid: str) -> bytes:
    """Flip a byte of the copy in files/; returns its new (bad) content."""
    path = fs.file_path(fid)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    os.chmod(path, 0o444)
    return bytes(data)


# --- a quarantine killed between its link and its unlink ----------------------------


def test_a_quarantine_killed_after_its_link_is_finished_by_recovery(
    ms: MetaStore, tmp_path: Path, die_at, monkeypatch
) -> None:
    a = new_store(ms, tmp_path, "a")
    (fid,) = import_n(ms, a, tmp_path, 1)
    bad = rot(a, fid)
    die_at("quarantine.linked")
    with pytest.raises(Killed):
        verify_one(ms, a, fid)
    # The crash: one inode under two names, the doc still claims the bad copy.
    assert a.file_path(fid).exists() and a.corrupt_path(fid).exists()
    assert a.id in ms.lib.docs.get(fid)["stored"]
    disarm(monkeypatch)

    again = restarted(ms)
    assert again.recover_store(a)["quarantines"] == 1
    assert not a.file_path(fid).exists()
    assert a.corrupt_path(fid).read_bytes() == bad  # the bytes kept, never deleted
    doc = again.lib.docs.get(fid)
    assert a.id not in doc["stored"] and a.id in doc["corrupt"]
    (ev,) = events(again, schema.LOG_FILE_CORRUPT)
    assert (ev["file_id"], ev["store_id"]) == (fid, a.id)
    assert Path(ev["quarantine"]).name == a.corrupt_path(fid).name
    store = again.store_doc(a.id)
    assert store["failure"] and store["no_new_copies"] and store["downgraded"]
    assert len(events(again, schema.LOG_STORE_FAILING)) == 1
    assert len(events(again, schema.LOG_STORE_DOWNGRADE)) == 1
    # Recovery again: nothing left to do, nothing logged twice.
    assert restarted(ms).recover_store(a)["quarantines"] == 0
    assert len(ms.lib.events(1000)) == 3


def test_finish_quarantine_never_touches_another_file(tmp_path: Path, ms: MetaStore) -> None:
    """An old quarantine (another inode) next to a good copy made since: left as it is."""
    a = new_store(ms, tmp_path, "a")
    (fid,) = import_n(ms, a, tmp_path, 1)
    good = a.file_path(fid).read_bytes()
    a.corrupt_dir.mkdir(exist_ok=True)
    a.corrupt_path(fid).write_bytes(b"an old corrupt copy")
    assert a.finish_quarantine(fid) is None
    assert a.file_path(fid).read_bytes() == good
    assert restarted(ms).recover_store(a)["quarantines"] == 0
    assert a.file_path(fid).read_bytes() == good
    assert ms.lib.events(1000) == []
    # The same inode under the corrupt/ name that is not the newest (<id>.1 exists too).
    os.link(a.file_path(fid), a.corrupt_dir / f"{fid}.1")
    (a.corrupt_dir / f"{fid}.2").write_bytes(b"another")
    assert a.finish_quarantine(fid) == a.corrupt_dir / f"{fid}.1"
    assert not a.file_path(fid).exists() and (a.corrupt_dir / f"{fid}.1").read_bytes() == good


@pytest.mark.parametrize("point", ["corrupt.logged", "corrupt.flagged"])
def test_a_resumed_quarantine_logs_each_event_once(
    ms: MetaStore, tmp_path: Path, die_at, monkeypatch, point: str
) -> None:
    a = new_store(ms, tmp_path, "a")
    (fid,) = import_n(ms, a, tmp_path, 1)
    rot(a, fid)
    die_at(point)
    with pytest.raises(Killed):
        verify_one(ms, a, fid)
    disarm(monkeypatch)
    restarted(ms).recover_store(a)
    restarted(ms).recover_store(a)
    assert len(events(ms, schema.LOG_FILE_CORRUPT)) == 1
    assert len(events(ms, schema.LOG_STORE_FAILING)) == 1  # logged, and once
    assert len(events(ms, schema.LOG_STORE_DOWNGRADE)) == 1
    assert a.id in ms.lib.docs.get(fid)["corrupt"]


# --- a downgrade killed anywhere after it began ---------------------------------------


@pytest.mark.parametrize(
    "point",
    ["downgrade.store_marked", "downgrade.file@2", "downgrade.files_done", "downgrade.logged"],
)
def test_an_interrupted_downgrade_is_finished_once(
    ms: MetaStore, tmp_path: Path, die_at, monkeypatch, point: str
) -> None:
    a = new_store(ms, tmp_path, "a")
    ids = import_n(ms, a, tmp_path, 3)
    one_per_batch(ms, monkeypatch)
    die_at(point)
    with pytest.raises(Killed):
        ms.downgrade_store(a.id, reason="user")
    disarm(monkeypatch)
    mark = ms.store_doc(a.id)["downgraded"]
    assert mark["pending"] is True and mark["reason"] == "user"

    # The next run finishes it, although the store is connected (no policy would act).
    again = restarted(ms)
    (ev,) = again.run_time_policies(online={a.id})
    assert (ev["type"], ev["store_id"], ev["reason"]) == (schema.LOG_STORE_DOWNGRADE, a.id, "user")
    assert ev["count"] == 3  # every copy that counted when it began
    assert ev["_id"] == mark["event"]
    assert all(again.lib.docs.get(f)["stored"][a.id]["copies"] == 0 for f in ids)
    assert "pending" not in again.store_doc(a.id)["downgraded"]
    assert restarted(ms).run_time_policies(online={a.id}) == []
    assert len(events(ms, schema.LOG_STORE_DOWNGRADE)) == 1


def test_a_downgraded_store_whose_copies_still_count_is_zeroed(
    ms: MetaStore, tmp_path: Path
) -> None:
    """No intent recorded (an older version killed mid-way, or a copy recorded with the
    weight read just before the downgrade): the copies are zeroed, the event logged once."""
    a = new_store(ms, tmp_path, "a")
    b = new_store(ms, tmp_path, "b")
    ids = import_n(ms, a, tmp_path, 2)
    import_n(ms, b, tmp_path, 1)
    ms.lib.docs.update(a.id, transitions.downgrade_store, NOW, "user")  # the mark alone
    (ev,) = ms.run_time_policies(online={a.id, b.id})
    assert (ev["type"], ev["store_id"], ev["count"]) == (schema.LOG_STORE_DOWNGRADE, a.id, 2)
    assert all(ms.lib.docs.get(f)["stored"][a.id]["copies"] == 0 for f in ids)
    assert ms.run_time_policies(online={a.id, b.id}) == []
    # A late copy recorded with weight 1 on the downgraded store: zeroed, no second event.
    ms.lib.docs.update(ids[0], transitions.mark_added, a.id, 1, NOW)
    assert ms.run_time_policies(online={a.id, b.id}) == []
    assert ms.lib.docs.get(ids[0])["stored"][a.id]["copies"] == 0
    assert len(events(ms, schema.LOG_STORE_DOWNGRADE)) == 1


# --- a purge killed anywhere after it began -------------------------------------------


@pytest.mark.parametrize(
    "point",
    [
        "purge.store_marked",
        "purge.file@2",
        "purge.files_done",
        "purge.logged",
        "purge.forgotten",
    ],
)
def test_an_interrupted_purge_is_finished_once(
    ms: MetaStore, tmp_path: Path, die_at, monkeypatch, point: str
) -> None:
    a = new_store(ms, tmp_path, "a")
    ids = import_n(ms, a, tmp_path, 3)
    assert a.id in ms.config.known_stores()
    one_per_batch(ms, monkeypatch)
    die_at(point)
    with pytest.raises(Killed):
        ms.purge_store(a.id, reason="user")
    disarm(monkeypatch)
    mark = ms.store_doc(a.id)["purging"]
    assert mark["reason"] == "user" and mark["count"] == 3

    again = restarted(ms)
    (ev,) = again.run_time_policies(online={a.id})  # connected: only the finishing acts
    assert (ev["type"], ev["store_id"], ev["count"]) == (schema.LOG_STORE_PURGE, a.id, 3)
    assert ev["_id"] == mark["event"] and ev["label"] == "a"
    assert again.store_doc(a.id) is None
    assert all(again.lib.docs.get(f)["stored"] == {} for f in ids)
    assert a.id not in again.config.known_stores()
    assert all(a.exists(f) for f in ids)  # a purge never deletes a copy
    assert restarted(ms).run_time_policies(online={a.id}) == []
    assert len(events(ms, schema.LOG_STORE_PURGE)) == 1


def test_a_store_being_purged_takes_no_new_copy(ms: MetaStore, tmp_path: Path, die_at) -> None:
    a = new_store(ms, tmp_path, "a")
    assert transitions.takes_new_copies(ms.store_doc(a.id))
    die_at("purge.store_marked")
    with pytest.raises(Killed):
        ms.purge_store(a.id)
    assert not transitions.takes_new_copies(ms.store_doc(a.id))
    assert schema.check_store(ms.store_doc(a.id)) == []


def test_a_preset_log_id_is_logged_once(ms: MetaStore) -> None:
    from dmedia_tui import protocol

    sid = protocol.random_id()
    lid = protocol.log_id(NOW)
    first = ms.log_event(schema.LOG_STORE_PURGE, log_id=lid, at=NOW, store_id=sid, count=1)
    second = ms.log_event(schema.LOG_STORE_PURGE, log_id=lid, at=NOW, store_id=sid, count=2)
    assert first["_id"] == second["_id"] == lid and second["count"] == 1
    assert len(ms.lib.events(10)) == 1


def test_verify_ok_after_recovery(ms: MetaStore, tmp_path: Path) -> None:
    """Sanity: the recovery rules leave a healthy store alone."""
    a = new_store(ms, tmp_path, "a")
    (fid,) = import_n(ms, a, tmp_path, 1)
    assert ms.recover_store(a) == {
        "tmp": 0,
        "quarantines": 0,
        "adopted": 0,
        "relinked": 0,
        "folders": 1,
    }
    assert ms.finish_interrupted() == []
    assert verify_one(ms, a, fid).status == VerifyStatus.OK


def _missing_and_unknown(ms: MetaStore, tmp_path: Path) -> tuple[FileStore, str, str, str]:
    """Store a with two verified copies; one then deleted, and a copy the library does
    not know put there: as many copies on disk as the library records."""
    from dmedia_tui.engine import Engine

    a = new_store(ms, tmp_path, "a")
    gone, kept = import_n(ms, a, tmp_path, 2)
    Engine(ms, watch_drives=False, watch_folders=False, peers=False).run_once()  # verified
    os.chmod(a.file_path(gone), 0o644)
    a.file_path(gone).unlink()
    unknown = a.import_bytes(b"put there by another library" * 300).content_hash.id
    assert a.count() == ms.lib.verification_stats(a.id).copies == 2
    return a, gone, kept, unknown


def test_a_missing_copy_and_an_unknown_one_are_both_found_at_once(
    ms: MetaStore, tmp_path: Path
) -> None:
    """As many copies on disk as recorded, yet one is unknown: its folder changed, so the
    next run lists it and adopts the copy; the missing one is the verify pass's to find,
    whenever it falls due (the counts no longer hide anything from each other)."""
    from dmedia_tui.engine import Engine

    a, gone, kept, unknown = _missing_and_unknown(ms, tmp_path)
    Engine(ms, watch_drives=False, watch_folders=False, peers=False).run_once()
    doc = ms.file_doc(unknown)
    assert doc is not None and a.id in doc["stored"]
    assert verify_one(ms, a, gone).status == VerifyStatus.MISSING
    assert a.id not in ms.file_doc(gone)["stored"]
    assert a.id in ms.file_doc(kept)["stored"]
    assert ms.lib.verification_stats(a.id).copies == a.count() == 2


# --- which folders a recovery lists (FoldersSeen) -------------------------------------
# RACY_NS 0: a folder's stamp is trusted at once (in use, only 2 s after it changed; a
# test would have to wait that long). The racy rule has its own test.


@pytest.fixture
def trusted_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("dmedia_tui.filestore.RACY_NS", 0)


def _folders(fs: FileStore) -> set[str]:
    return {p.name for p in fs.files_dir.iterdir()}


def _put_unknown(fs: FileStore, data: bytes) -> str:
    return fs.import_bytes(data).content_hash.id


def _seen_store(ms: MetaStore, tmp_path: Path, n: int) -> tuple[FileStore, list[str]]:
    """Store a with n copies, recovered once: every folder listed, the record saved."""
    a = new_store(ms, tmp_path, "a")
    ids = import_n(ms, a, tmp_path, n)
    ms.recover_store(a)
    return a, ids


def test_an_unchanged_store_lists_no_folder(
    ms: MetaStore, tmp_path: Path, trusted_at_once: None
) -> None:
    a = new_store(ms, tmp_path, "a")
    import_n(ms, a, tmp_path, 5)
    first = ms.recover_store(a)
    assert first["folders"] == len(_folders(a)) == 5  # no record yet: every folder
    assert restarted(ms).recover_store(a) == {
        "tmp": 0,
        "quarantines": 0,
        "adopted": 0,
        "relinked": 0,
        "folders": 0,
    }


def test_only_the_folder_that_changed_is_listed(
    ms: MetaStore, tmp_path: Path, trusted_at_once: None
) -> None:
    a, _ = _seen_store(ms, tmp_path, 5)
    unknown = _put_unknown(a, b"copied in by hand" * 500)
    got = restarted(ms).recover_store(a)
    assert (got["folders"], got["adopted"]) == (1, 1)
    doc = ms.file_doc(unknown)
    assert doc is not None and a.id in doc["stored"]
    assert restarted(ms).recover_store(a)["folders"] == 0


def test_a_missing_copy_and_an_unknown_one_in_other_folders_are_both_found(
    ms: MetaStore, tmp_path: Path, trusted_at_once: None
) -> None:
    """The counts stay equal and the two changes are in two folders: both are listed."""
    a, [gone, kept] = _seen_store(ms, tmp_path, 2)
    os.chmod(a.file_path(gone), 0o644)
    a.file_path(gone).unlink()
    unknown = _put_unknown(a, b"put there by another library" * 300)
    assert a.count() == ms.lib.verification_stats(a.id).copies == 2
    got = restarted(ms).recover_store(a)
    assert got["adopted"] == 1 and got["folders"] == len({gone[:2], unknown[:2]})
    assert a.id in ms.file_doc(unknown)["stored"]


def test_an_entry_the_library_lost_lists_every_folder(
    ms: MetaStore, tmp_path: Path, trusted_at_once: None
) -> None:
    """Nothing changed on disk, but the library records fewer copies on the store than
    when the folders were seen (another machine's edit won a conflict, say): every folder
    is listed and the copy it no longer lists there comes back (counting 0 until
    verified)."""
    a, [lost, _, _] = _seen_store(ms, tmp_path, 3)
    ms.lib.docs.update(lost, transitions.mark_missing, a.id)
    assert a.id not in ms.file_doc(lost)["stored"]
    got = restarted(ms).recover_store(a)
    assert (got["folders"], got["relinked"]) == (len(_folders(a)), 1)
    assert ms.file_doc(lost)["stored"][a.id]["copies"] == 0


def test_every_folder_is_listed_once_a_day(
    ms: MetaStore, tmp_path: Path, trusted_at_once: None
) -> None:
    from dmedia_tui.metastore import FULL_LISTING_EVERY

    a, _ = _seen_store(ms, tmp_path, 4)
    ms.clock.advance(FULL_LISTING_EVERY - 1)
    assert restarted(ms).recover_store(a)["folders"] == 0
    ms.clock.advance(1)
    assert restarted(ms).recover_store(a)["folders"] == 4
    assert restarted(ms).recover_store(a)["folders"] == 0  # a new day starts from there
    ms.clock.advance(-10 * FULL_LISTING_EVERY)  # a clock set back: not trusted either
    assert restarted(ms).recover_store(a)["folders"] == 4


def test_a_folder_changed_just_now_is_listed_every_time(ms: MetaStore, tmp_path: Path) -> None:
    """Within RACY_NS of a change, another change may leave the ctime as it is: such a
    folder's stamp is never trusted, however many times the store is recovered."""
    a, _ = _seen_store(ms, tmp_path, 2)
    assert a.folders_seen() is not None and set(a.folders_seen().stamps.values()) == {""}
    assert restarted(ms).recover_store(a)["folders"] == 2


@pytest.mark.parametrize("record", ["garbage", "not-json", "link", "folder", "wrong-types"])
def test_a_damaged_record_lists_every_folder_and_is_replaced(
    ms: MetaStore, tmp_path: Path, trusted_at_once: None, record: str
) -> None:
    """The record is a shortcut, never a source of truth: unreadable, it counts as
    absent. A link in its place is not followed, neither read nor written through."""
    from dmedia_tui.filestore import DOTDIR, FOLDERS_SEEN

    a, _ = _seen_store(ms, tmp_path, 3)
    path = a.path / DOTDIR / FOLDERS_SEEN
    path.unlink()
    outside = tmp_path / "outside.json"
    outside.write_text('{"time": 0, "recorded": 0, "stamps": {}}')
    if record == "garbage":
        path.write_bytes(os.urandom(300))
    elif record == "not-json":
        path.write_text("{")
    elif record == "link":
        path.symlink_to(outside)
    elif record == "folder":
        path.mkdir()
    else:
        path.write_text('{"time": "x", "recorded": 3, "stamps": {"AB": 1}}')
    got = restarted(ms).recover_store(a)
    assert got["folders"] == 3 and got["adopted"] == got["relinked"] == 0
    assert outside.read_text() == '{"time": 0, "recorded": 0, "stamps": {}}'
    if record == "folder":
        assert a.folders_seen() is None  # cannot be replaced: listed every time
        assert restarted(ms).recover_store(a)["folders"] == 3
    else:  # a link is replaced by the record itself (a rename never follows it)
        assert not path.is_symlink()
        assert restarted(ms).recover_store(a)["folders"] == 0
