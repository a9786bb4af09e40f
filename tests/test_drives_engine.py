"""Drive hot-plug through the running engine, on real loop devices (issue 6).

A "USB stick" is a loop device with ext4 (or exFAT over FUSE). The engine runs its real
threads (`start()`), its DriveWatcher sees mounts through udev or the mountinfo poll, and
each test polls (bounded) for the state a user would see: the store connected and listed
in the machine doc, offline but kept after an unplug, purged with the drive's identity
after it comes back wiped. The seconds each step took are printed (run with -s).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dmedia_tui import schema
from dmedia_tui.clock import FixedClock, SystemClock
from dmedia_tui.config import DAY, Config
from dmedia_tui.db import open_library
from dmedia_tui.engine import Engine, EngineEvent
from dmedia_tui.filestore import FileStore
from dmedia_tui.metastore import MetaStore
from tests import blockdev
from tests.blockdev import BlockDevs, LoopDisk, settle, udev_running, udevd

blockdevs = blockdev.blockdevs  # the loop-device fixture

WAIT = 10.0  # bound for every wait; the state is asserted, not the time it took


def wait_for(
    what: str, pred: Callable[[], object], timeout: float = WAIT, since: float | None = None
) -> float:
    """Poll `pred` until true; return the seconds since `since` (default: now) that took
    (fail after `timeout`)."""
    t0 = time.monotonic() if since is None else since
    while True:
        if pred():
            return time.monotonic() - t0
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


def report(step: str, seconds: float) -> None:
    print(f"\n[hot-plug] {step}: {seconds:.3f} s")


@pytest.fixture
def ms(tmp_path: Path) -> Iterator[MetaStore]:
    lib = open_library(str(tmp_path / "library.sqlite3"))
    config = Config.load(tmp_path / "config", tmp_path / "data")
    yield MetaStore(lib, config, SystemClock())
    lib.close()


class Running:
    """An engine started with its threads, and the events it emitted."""

    def __init__(self, ms: MetaStore) -> None:
        self.ms = ms
        self.engine = Engine(ms)
        self.events: list[EngineEvent] = []
        self.engine.subscribe(self.events.append)
        assert self.engine.acquire_lock()
        self.engine.start()
        # settled: the first housekeeping pass wrote the machine doc
        wait_for("first heartbeat", lambda: ms.lib.docs.get_or_none(ms.machine_id))

    def machine_stores(self) -> list[str]:
        doc = self.ms.lib.docs.get_or_none(self.ms.machine_id) or {}
        return list(doc.get("stores") or [])

    def online(self, store_id: str) -> bool:
        return store_id in self.engine.connected and store_id in self.machine_stores()

    def offline(self, store_id: str) -> bool:
        return store_id not in self.engine.connected and store_id not in self.machine_stores()

    def changed(self, key: str, store_id: str) -> bool:
        return any(
            e.kind == "changed" and isinstance(e.data, dict) and store_id in e.data.get(key, ())
            for e in list(self.events)
        )

    def stop(self) -> None:
        t0 = time.monotonic()
        self.engine.stop()
        report("stop() joined every thread", time.monotonic() - t0)
        assert not self.engine._threads


@pytest.fixture
def running(ms: MetaStore) -> Iterator[Callable[[], Running]]:
    started: list[Running] = []

    def start() -> Running:
        r = Running(ms)
        started.append(r)
        return r

    yield start
    for r in started:
        r.engine.stop()


def purge_events(ms: MetaStore, store_id: str) -> list[dict]:
    return ms.lib.events(limit=100, types=[schema.LOG_STORE_PURGE], store_id=store_id)


def in_private_namespace(script: str) -> None:
    """Run a shell script in a private mount namespace: what it mounts there is invisible
    to this process (the engine), like a drive wiped on another computer."""
    if shutil.which("unshare") is None:
        pytest.skip("needs unshare (util-linux)")
    subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-euc", script],
        check=True,
        capture_output=True,
        timeout=60,
    )


def stick_with_store(
    blockdevs: BlockDevs, ms: MetaStore, folder: str = "", fstype: str = "ext4"
) -> tuple[LoopDisk, str, Path]:
    """A stick holding a store (at its root or in `folder`), unplugged; (disk, id, mount)."""
    if fstype == "ext4":
        d = blockdevs.ext4("stick", "STICK", mount=False)
        settle(d.devname)
        mp = d.mount(blockdevs.workdir / "media" / "STICK")
    else:
        d = blockdevs.disk(blockdevs.image("stick"))
        d.mkfs("EXSTICK", "exfat")
        settle(d.devname)
        mp = d.mount_fuse_exfat(blockdevs.workdir / "media" / "EXSTICK")
    where = mp / folder if folder else mp
    where.mkdir(exist_ok=True)
    _fs, doc, created = ms.init_store(where)
    assert created
    d.umount()
    return d, doc["_id"], mp


# --- plug and unplug ----------------------------------------------------------------------


def _plug_unplug(blockdevs: BlockDevs, ms: MetaStore, running, source: str, fstype: str):
    d, sid, mp = stick_with_store(blockdevs, ms, fstype=fstype)
    doc = ms.store_doc(sid)
    assert doc["relative_path"] == "" and doc["partition_uuid"]
    r = running()
    assert r.engine.drive_source == source
    assert r.offline(sid)

    t_mount, t0 = time.time(), time.monotonic()
    if fstype == "ext4":
        d.mount(mp)
    else:
        d.mount_fuse_exfat(mp)
    took = wait_for("connected", lambda: r.online(sid), since=t0)
    report(f"{source}/{fstype} mount command -> connected", took)
    # announced right after the heartbeat that made it online (not before): poll
    wait_for("added announced", lambda: r.changed("added", sid))
    assert ms.store_doc(sid)["atime"] >= int(t_mount)
    assert ms.lib.docs.get(ms.machine_id)["atime"] >= int(t_mount)

    t0 = time.monotonic()
    d.umount()
    took = wait_for("offline", lambda: r.offline(sid), since=t0)
    report(f"{source}/{fstype} umount command -> offline", took)
    # announced right after the heartbeat that made it online (not before): poll
    wait_for("removed announced", lambda: r.changed("removed", sid))
    assert ms.store_doc(sid) is not None  # an unplugged drive is kept...
    assert purge_events(ms, sid) == []
    r.stop()
    return sid


def test_plug_unplug_without_udev_uses_mountinfo_poll(blockdevs: BlockDevs, ms, running):
    if udev_running():
        pytest.skip("a udevd runs on this machine: the poll source is not used")
    _plug_unplug(blockdevs, ms, running, "mountinfo-poll", "ext4")


def test_plug_unplug_with_udevd(blockdevs: BlockDevs, ms, running):
    with udevd():
        _plug_unplug(blockdevs, ms, running, "udev", "ext4")


def test_plug_unplug_exfat_fuse_stick(blockdevs: BlockDevs, ms, running):
    if udev_running():
        pytest.skip("a udevd runs on this machine")
    _plug_unplug(blockdevs, ms, running, "mountinfo-poll", "exfat")


def test_unplugged_store_is_only_subject_to_the_3_and_8_day_policy(
    blockdevs: BlockDevs, ms, running
):
    """However often drives come and go, an unplugged store is downgraded at 3 days and
    purged (reason atime) at 8, never earlier and never as filestore_missing."""
    sid = _plug_unplug(
        blockdevs, ms, running, "udev" if udev_running() else "mountinfo-poll", "ext4"
    )
    atime = ms.store_doc(sid)["atime"]
    engine = Engine(ms)  # the same drive checks, by hand, with time moved on
    ms.clock = FixedClock(atime + 3 * DAY - 1)
    engine.housekeeping()
    assert not ms.store_doc(sid).get("downgraded")
    ms.clock = FixedClock(atime + 8 * DAY - 1)
    engine.housekeeping()
    assert ms.store_doc(sid)["downgraded"]["reason"] == "atime"
    assert purge_events(ms, sid) == []
    ms.clock = FixedClock(atime + 8 * DAY)
    engine.housekeeping()
    assert ms.store_doc(sid) is None
    assert [e["reason"] for e in purge_events(ms, sid)] == ["atime"]


def test_store_in_a_folder_on_a_stick_mounted_elsewhere_is_found_and_remembered(
    blockdevs: BlockDevs, ms, running
):
    """A store this machine does not know (made elsewhere, or forgotten) in a folder of a
    stick, mounted at a new place: found through the doc's partition UUID and relative
    path, connected, and remembered at its new folder."""
    d, sid, _mp = stick_with_store(blockdevs, ms, folder="Library")
    doc = ms.store_doc(sid)  # what `store init` recorded, so the store can be found again
    assert doc["relative_path"] == "Library" and doc["partition_uuid"]
    ms.config.forget_store(sid)
    r = running()
    new_mp = blockdevs.workdir / "run" / "media" / "user" / "STICK"
    d.mount(new_mp)
    report("mount elsewhere -> connected", wait_for("connected", lambda: r.online(sid)))
    assert ms.config.known_stores()[sid] == str((new_mp / "Library").resolve())
    assert r.engine.connected[sid].path == new_mp / "Library"
    d.umount()
    wait_for("offline", lambda: r.offline(sid))
    assert ms.store_doc(sid) is not None
    r.stop()


# --- a wiped drive comes back -------------------------------------------------------------


def _wipe_and_plug(blockdevs: BlockDevs, ms, running, replace_with: Path | None) -> None:
    d, sid, mp = stick_with_store(blockdevs, ms)
    uuid = ms.store_doc(sid)["partition_uuid"]
    r = running()
    d.mount(mp)
    wait_for("connected", lambda: r.online(sid))
    d.umount()
    wait_for("offline", lambda: r.offline(sid))

    # Wiped on "another computer": the engine never sees this mount.
    priv = blockdevs.workdir / "private"
    priv.mkdir()
    script = f"mount {d.devname} {priv}; rm -rf {priv}/.dmedia; "
    if replace_with is not None:
        script += f"cp -a {replace_with}/.dmedia {priv}/; "
    in_private_namespace(script + f"umount {priv}")
    assert ms.store_doc(sid) is not None

    t0 = time.monotonic()
    d.mount(mp)
    report(
        "wiped stick mount command -> purged" + (" (re-initialised)" if replace_with else ""),
        # Purged: the event is logged before the store doc goes (the doc is the purge's
        # intent until the end), so wait for both.
        wait_for("purged", lambda: purge_events(ms, sid) and ms.store_doc(sid) is None, since=t0),
    )
    [event] = purge_events(ms, sid)
    assert ms.store_doc(sid) is None
    assert event["reason"] == "filestore_missing"
    assert event["partition_uuid"] == uuid
    assert event["found_partition_uuid"] == uuid
    assert event["matched_by"] == "partition_uuid"
    assert event["devname"] == d.devname
    assert event["expected_path"] == str(mp)
    assert event["machine_id"] == ms.machine_id
    if replace_with is not None:
        assert event["found_store_id"] == FileStore(replace_with).id
    else:
        assert "found_store_id" not in event
    assert sid not in ms.config.known_stores()
    wait_for("purged event", lambda: r.changed("purged", sid))
    assert sid not in r.engine.connected
    r.stop()


def test_wiped_stick_is_purged_when_plugged_in(blockdevs: BlockDevs, ms, running):
    _wipe_and_plug(blockdevs, ms, running, None)


def test_reinitialised_stick_purges_the_old_store(blockdevs: BlockDevs, ms, running, tmp_path):
    other = tmp_path / "other-library-store"
    other.mkdir()
    doc = schema.create_store(time.time(), "5" * 24, copies=1, label="other")
    FileStore.create(other, doc=doc)
    _wipe_and_plug(blockdevs, ms, running, other)


def test_wiped_stick_with_udevd_is_purged(blockdevs: BlockDevs, ms, running):
    with udevd():
        _wipe_and_plug(blockdevs, ms, running, None)


# --- the folder watcher -------------------------------------------------------------------


def test_deleted_copy_on_a_stick_is_found_missing_and_the_watch_survives_unplug(
    blockdevs: BlockDevs, ms, running, tmp_path
):
    d, sid, mp = stick_with_store(blockdevs, ms)
    d.mount(mp)
    fs = FileStore(mp)
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(3):
        (src / f"p{i}.jpg").write_bytes(f"photo {i} ".encode() * 1000)
    ids = ms.import_paths([src], fs).file_ids
    r = running()
    wait_for("connected", lambda: r.online(sid))

    def verified(fid: str) -> bool:
        return "verified" in ms.lib.docs.get(fid)["stored"].get(sid, {})

    wait_for("first verification", lambda: all(verified(f) for f in ids))

    def missing_logged(fid: str) -> bool:
        return bool(ms.lib.events(types=[schema.LOG_FILE_MISSING], file_id=fid))

    fs.file_path(ids[0]).unlink()
    report("delete -> dmedia/file/missing", wait_for("missing", lambda: missing_logged(ids[0])))
    assert sid not in ms.lib.docs.get(ids[0])["stored"]

    d.umount()
    wait_for("offline", lambda: r.offline(sid))
    assert r.engine._store_watcher is not None and sid not in r.engine._store_watcher.watched()
    d.mount(mp)
    wait_for("connected again", lambda: r.online(sid))
    wait_for("watched again", lambda: sid in r.engine._store_watcher.watched())
    FileStore(mp).file_path(ids[1]).unlink()
    report("delete after replug -> missing", wait_for("missing", lambda: missing_logged(ids[1])))
    assert missing_logged(ids[2]) is False
    r.stop()


# --- `daemon --once` settles drives too (issue 9 point 12) ---------------------------------


def test_daemon_once_purges_a_wiped_stick_and_finds_a_store_at_a_new_mount_point(
    blockdevs: BlockDevs, tmp_path: Path
):
    """No engine runs: one `daemon --once` scans the partitions, so a stick plugged in
    wiped is purged (filestore_missing) and a store on a stick mounted at a new place is
    connected there and remembered, exactly as the running engine would do."""
    from tests.conftest import NOW
    from tests.integration.harness import Machine

    m = Machine(tmp_path / "machines", "studio", str(tmp_path / "library.sqlite3"), NOW)
    wiped = blockdevs.ext4("wiped", "WIPED")
    moved = blockdevs.ext4("moved", "MOVED")
    (moved.mount_point / "Library").mkdir()
    wiped_id = m.init_store(wiped.mount_point, "wiped")
    moved_id = m.init_store(moved.mount_point / "Library", "moved")
    m.once()

    shutil.rmtree(wiped.mount_point / ".dmedia")  # wiped, and plugged in again
    new_mp = blockdevs.workdir / "run" / "media" / "user" / "MOVED"
    moved.umount()
    moved.mount(new_mp)  # the same stick, mounted somewhere else

    m.once()
    [event] = m.events(schema.LOG_STORE_PURGE)
    assert (event["store_id"], event["reason"]) == (wiped_id, "filestore_missing")
    rows = {s["_id"]: s for s in m.ok("store", "list", "--json").json()}
    assert wiped_id not in rows
    assert rows[moved_id]["path"] == str((new_mp / "Library").resolve())
    assert rows[moved_id]["online"] is True, rows[moved_id]
