"""StoreWatcher: canonical copies touched behind our back are reported, coalesced, safely."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dmedia_tui import protocol
from dmedia_tui.fswatch import StoreWatcher, file_id_for, files_dir
from tests import blockdev
from tests.blockdev import BlockDevs

STORE = "3" * 24
OTHER = "4" * 24
WAIT = 30.0  # generous upper bound for an event to arrive; never a timing assertion

blockdevs = blockdev.blockdevs


class Calls:
    """Records callbacks and lets a test block until a condition over them holds."""

    def __init__(self) -> None:
        self.changed: list[tuple[str, set[str]]] = []
        self.created: list[tuple[str, set[str]]] = []
        self.store_events: list[tuple[str, str]] = []
        self.cond = threading.Condition()

    def on_changed(self, store_id: str, ids: set[str]) -> None:
        with self.cond:
            self.changed.append((store_id, ids))
            self.cond.notify_all()

    def on_created(self, store_id: str, ids: set[str]) -> None:
        with self.cond:
            self.created.append((store_id, ids))
            self.cond.notify_all()

    def on_store_event(self, store_id: str, kind: str) -> None:
        with self.cond:
            self.store_events.append((store_id, kind))
            self.cond.notify_all()

    def changed_ids(self, store_id: str = STORE) -> set[str]:
        return set().union(*(ids for s, ids in self.changed if s == store_id))

    def wait_for(self, pred) -> None:
        with self.cond:
            assert self.cond.wait_for(pred, WAIT), (self.changed, self.created, self.store_events)


def make_store(folder: Path) -> Path:
    for sub in ("files", "tmp", "corrupt"):
        (folder / ".dmedia" / sub).mkdir(parents=True, exist_ok=True)
    return folder


def put_canonical(store: Path, data: bytes) -> str:
    """Write a canonical copy the way an import does: tmp, then rename into files/."""
    fid = protocol.hash_bytes(data).id
    tmp = store / ".dmedia" / "tmp" / fid
    tmp.write_bytes(data)
    tmp.chmod(0o444)
    dest = files_dir(store) / fid[:2] / fid[2:]
    dest.parent.mkdir(exist_ok=True)
    os.replace(tmp, dest)
    return fid


def path_of(store: Path, fid: str) -> Path:
    return files_dir(store) / fid[:2] / fid[2:]


@pytest.fixture
def calls() -> Calls:
    return Calls()


@pytest.fixture
def watcher(calls: Calls) -> Iterator[StoreWatcher]:
    w = StoreWatcher(
        calls.on_changed,
        coalesce=None,  # deliver only on flush(): the tests decide when a burst is over
        on_created=calls.on_created,
        on_store_event=calls.on_store_event,
        check_interval=0.2,
    )
    yield w
    w.stop()


def eventually(pred) -> None:
    """Poll until pred() holds (events arrive in about a millisecond here)."""
    deadline = time.monotonic() + WAIT
    while not pred():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.01)


def wait_pending(w: StoreWatcher, ids: set[str], store_id: str = STORE) -> None:
    eventually(lambda: w.pending(store_id) >= ids)


@pytest.fixture
def quick(calls: Calls) -> Iterator[StoreWatcher]:
    """A watcher that delivers on its own, shortly after a burst ends."""
    w = StoreWatcher(
        calls.on_changed,
        coalesce=0.05,
        on_created=calls.on_created,
        on_store_event=calls.on_store_event,
    )
    yield w
    w.stop()


def test_file_id_for_accepts_only_the_layout():
    fid = protocol.hash_bytes(b"x").id
    root = "/s/.dmedia/files"
    assert file_id_for(f"{root}/{fid[:2]}/{fid[2:]}", root) == fid
    assert file_id_for(f"{root}/{fid[:3]}/{fid[3:]}", root) is None
    assert file_id_for(f"{root}/{fid[:2]}/{fid[2:]}.part", root) is None
    assert file_id_for(f"{root}/{fid[:2]}/{fid[2:].lower()}", root) is None
    assert file_id_for(f"{root}/{fid[:2]}", root) is None
    assert file_id_for(f"/s/.dmedia/tmp/{fid}", root) is None


def test_deleted_and_modified_copies_are_reported(tmp_path, watcher, calls):
    store = make_store(tmp_path / "s")
    a, b, c = (put_canonical(store, d) for d in (b"alpha", b"beta", b"gamma"))
    assert watcher.watch(STORE, store)
    path_of(store, a).unlink()
    p = path_of(store, b)
    p.chmod(0o644)
    with open(p, "ab") as f:
        f.write(b"bit rot")
    wait_pending(watcher, {a, b})
    path_of(store, c).read_bytes()  # a verification read is not a change
    watcher.flush()
    assert calls.changed == [(STORE, {a, b})]


def test_moved_away_and_replaced_by_rename_are_reported(tmp_path, watcher, calls):
    store = make_store(tmp_path / "s")
    a, b, c = (put_canonical(store, d) for d in (b"one", b"two", b"three"))
    assert watcher.watch(STORE, store)
    os.replace(path_of(store, a), store / ".dmedia" / "corrupt" / a)  # moved out of files/
    os.replace(path_of(store, b), path_of(store, c))  # c replaced by b's bytes
    wait_pending(watcher, {a, b, c})
    watcher.flush()
    assert calls.changed_ids() == {a, b, c}


def test_new_imports_are_not_changes_but_reported_as_created(tmp_path, quick, calls):
    store = make_store(tmp_path / "s")
    assert quick.watch(STORE, store)
    (files_dir(store) / "zz-not-an-id").write_bytes(b"x")
    fid = put_canonical(store, b"new import")
    calls.wait_for(lambda: calls.created)
    assert calls.changed == []
    assert calls.created == [(STORE, {fid})]


def test_a_burst_of_100_changes_is_one_call(tmp_path, watcher, calls):
    store = make_store(tmp_path / "s")
    ids = {put_canonical(store, f"file {i}".encode()) for i in range(100)}
    assert watcher.watch(STORE, store)
    for fid in ids:
        path_of(store, fid).unlink()
    wait_pending(watcher, ids)
    watcher.flush()
    assert calls.changed == [(STORE, ids)]


def test_coalescing_timer_delivers_a_burst_together(tmp_path, calls):
    store = make_store(tmp_path / "s")
    ids = {put_canonical(store, f"timed {i}".encode()) for i in range(100)}
    w = StoreWatcher(calls.on_changed, coalesce=0.5, max_delay=60)
    try:
        assert w.watch(STORE, store)
        for fid in ids:
            path_of(store, fid).unlink()
        calls.wait_for(lambda: calls.changed_ids() == ids)
        assert len(calls.changed) == 1
    finally:
        w.stop()


def test_stores_are_reported_separately_and_unwatch_stops_reports(tmp_path, watcher, calls):
    s1, s2 = make_store(tmp_path / "s1"), make_store(tmp_path / "s2")
    a, b = put_canonical(s1, b"in one"), put_canonical(s2, b"in two")
    assert watcher.watch(STORE, s1) and watcher.watch(OTHER, s2)
    path_of(s1, a).unlink()
    path_of(s2, b).unlink()
    wait_pending(watcher, {a}, STORE)
    wait_pending(watcher, {b}, OTHER)
    watcher.flush()
    assert sorted(calls.changed) == sorted([(STORE, {a}), (OTHER, {b})])
    watcher.unwatch(OTHER)
    assert set(watcher.watched()) == {STORE}


def test_watch_of_a_missing_store_is_refused_quietly(tmp_path, watcher):
    assert watcher.watch(STORE, tmp_path / "nowhere") is False
    assert watcher.watched() == {}


def test_survives_the_watched_folder_being_removed(tmp_path, watcher, calls):
    gone, kept = make_store(tmp_path / "gone"), make_store(tmp_path / "kept")
    put_canonical(gone, b"doomed")
    k = put_canonical(kept, b"survivor")
    assert watcher.watch(STORE, gone) and watcher.watch(OTHER, kept)
    shutil.rmtree(gone)
    calls.wait_for(lambda: (STORE, "gone") in calls.store_events)
    assert STORE not in watcher.watched()
    watcher.flush()
    assert calls.changed_ids(STORE) == set()  # a vanished store is not N missing files
    # The other store is still watched, and the gone one can be watched again.
    path_of(kept, k).unlink()
    wait_pending(watcher, {k}, OTHER)
    make_store(gone)
    n = put_canonical(gone, b"again")
    assert watcher.watch(STORE, gone)
    path_of(gone, n).unlink()
    wait_pending(watcher, {n}, STORE)


def test_prefix_dir_moved_away_asks_for_a_rescan(tmp_path, quick, calls):
    store = make_store(tmp_path / "s")
    fid = put_canonical(store, b"in a prefix dir")
    assert quick.watch(STORE, store)
    os.replace(path_of(store, fid).parent, tmp_path / "elsewhere")
    calls.wait_for(lambda: (STORE, "rescan") in calls.store_events)


def test_unmounted_store_is_unwatched_quietly(blockdevs: BlockDevs, watcher, calls):
    disk = blockdevs.ext4("fsw", "FSWATCH")
    store = make_store(disk.mount_point / "lib")
    assert watcher.watch(STORE, store)
    disk.umount()  # inotify watches do not keep the filesystem busy
    calls.wait_for(lambda: (STORE, "gone") in calls.store_events)
    assert watcher.watched() == {}
