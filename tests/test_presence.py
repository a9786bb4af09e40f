"""presence.py: which stores are connected here (one rule for every command and the
engine), the wiped-drive probe, and the verdict on a store that went away.

Real FileStores in tmp folders, a real SQLite library and Config. Partitions are
`drives.Partition` values describing real tmp folders as mount points (the rules read
only the mount point, its st_dev and the identity fields); the end-to-end test mounts a
real loop device and asks `status --json` and `import` through the CLI.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dmedia_tui import presence
from dmedia_tui.clock import FixedClock
from dmedia_tui.config import Config
from dmedia_tui.db import open_library
from dmedia_tui.drives import Partition
from dmedia_tui.filestore import FileStore, FileStoreError, StoreUnsafe
from dmedia_tui.metastore import MetaStore
from dmedia_tui.presence import Away, verdict
from tests import blockdev
from tests.blockdev import BlockDevs, settle
from tests.conftest import NOW
from tests.integration.harness import Machine, make_camera_files, store_row

blockdevs = blockdev.blockdevs  # the loop-device fixture

UUID = "1b2c3d4e-0000-4000-8000-00000000abcd"


@pytest.fixture
def ms(tmp_path: Path) -> Iterator[MetaStore]:
    lib = open_library(str(tmp_path / "library.sqlite3"))
    config = Config.load(tmp_path / "config", tmp_path / "data")
    yield MetaStore(lib, config, FixedClock(NOW))
    lib.close()


def part(mount_point: Path | None, uuid: str | None = UUID, **kw: object) -> Partition:
    """A partition mounted at a real folder (its st_dev is the folder's)."""
    fields: dict[str, object] = dict(
        devname="/dev/sdz1",
        mount_point=str(mount_point) if mount_point else None,
        fs_uuid=uuid,
        fs_type="ext4",
        fs_label="STICK",
        drive_serial=None,
        drive_model=None,
        removable=True,
        internal=False,
        bus="usb",
        bytes_total=None,
        bytes_avail=None,
        dev=os.stat(mount_point).st_dev if mount_point else None,
        disk="sdz",
    )
    fields.update(kw)
    return Partition(**fields)  # type: ignore[arg-type]


def store_on_stick(ms: MetaStore, mp: Path, folder: str = "", **doc: object) -> str:
    """A store of this library on the "stick" at mp (in `folder`), forgotten by this
    machine: only the drive rule can find it. Its doc records the partition UUID."""
    where = mp / folder if folder else mp
    where.mkdir(parents=True, exist_ok=True)
    _fs, made, _ = ms.init_store(where, same_filesystem=True)
    sid = made["_id"]

    def set_identity(d: dict) -> dict:
        d.update({"partition_uuid": UUID, "relative_path": folder, **doc})
        return d

    ms.lib.docs.update(sid, set_identity)
    ms.config.forget_store(sid)
    return sid


# --- verdict: one word for where a store is ---------------------------------------------


def test_verdict_each_case_and_its_precedence():
    me, other = "m" * 20, "o" * 20
    mine = {"_id": "s", "machine_id": me}
    theirs = {"_id": "s", "machine_id": other}
    assert verdict("s", None, me, connected={"s"}) is Away.UNKNOWN  # not of this library
    # connected beats everything, wiped beats the machine's view
    assert verdict("s", theirs, me, connected={"s"}, wiped={"s"}) is Away.CONNECTED
    assert verdict("s", theirs, me, connected=(), wiped={"s"}, online={"s"}) is Away.WIPED
    assert verdict("s", mine, me, connected=()) is Away.UNPLUGGED
    assert verdict("s", theirs, me, connected=(), online={"s"}) is Away.ELSEWHERE
    assert verdict("s", theirs, me, connected=()) is Away.MACHINE_OFF


def test_verdict_boundaries_no_machine_yet_and_bad_machine_ids():
    """A doc no machine touched yet (or with junk in machine_id) is ours to connect: the
    advice is to plug it in here, never to boot a machine that does not exist."""
    me = "m" * 20
    for junk in (None, 7, ["x"]):
        assert verdict("s", {"machine_id": junk}, me, connected=()) is Away.UNPLUGGED
    assert verdict("s", {}, None, connected=()) is Away.UNPLUGGED
    # this machine has no ID yet: any named machine is another one
    assert verdict("s", {"machine_id": me}, None, connected=()) is Away.MACHINE_OFF


# --- connected: known folders and mounted drives ----------------------------------------


def test_known_folder_connected_and_moved_folder_not(ms: MetaStore, tmp_path: Path):
    a = tmp_path / "a"
    a.mkdir()
    _fs, doc, _ = ms.init_store(a)
    assert set(ms.presence.connected(scan=False)) == {doc["_id"]}
    a.rename(tmp_path / "a-moved")  # the folder it knows is empty now; no drive says more
    assert ms.presence.connected(scan=False) == {}
    assert ms.presence.connected([]) == {}


def test_a_store_at_a_partition_root_is_connected_without_being_known(
    ms: MetaStore, tmp_path: Path
):
    mp = tmp_path / "media" / "STICK"
    sid = store_on_stick(ms, mp)
    assert ms.presence.connected(scan=False) == {}
    found = ms.presence.connected([part(mp, uuid=None)])  # the root needs no identity
    assert found[sid].path == mp
    assert sid not in ms.config.known_stores()  # a read-only look remembers nothing


def test_a_store_in_a_folder_is_found_by_partition_uuid_and_remembered_on_request(
    ms: MetaStore, tmp_path: Path
):
    mp = tmp_path / "media" / "STICK"
    sid = store_on_stick(ms, mp, "Library")
    assert ms.presence.connected([part(mp, uuid="another-uuid")]) == {}
    assert set(ms.presence.connected([part(mp, uuid=UUID.upper())])) == {sid}
    assert sid not in ms.config.known_stores()
    ms.presence.connected([part(mp)], remember=True)  # the engine's call
    assert ms.config.known_stores()[sid] == str((mp / "Library").resolve())
    # and from now on the known folder alone finds it
    assert set(ms.presence.connected(scan=False)) == {sid}


def test_folder_of_another_machines_internal_disk_is_not_claimed(ms: MetaStore, tmp_path: Path):
    mp = tmp_path / "shared"
    other = "o" * 20
    sid = store_on_stick(ms, mp, "Library", machine_id=other, removable=False)
    assert ms.presence.connected([part(mp)]) == {}
    ms.lib.docs.update(sid, lambda d: {**d, "removable": True})  # a stick moves: ours now
    assert set(ms.presence.connected([part(mp)])) == {sid}


def test_only_stores_of_this_library_count(ms: MetaStore, tmp_path: Path):
    mp = tmp_path / "stick"
    mp.mkdir()
    FileStore.create(mp)  # a FileStore, of no library this one knows
    assert ms.presence.connected([part(mp)]) == {}


def test_a_store_purged_by_policy_is_found_again_one_purged_by_the_user_is_not(
    ms: MetaStore, tmp_path: Path
):
    mp = tmp_path / "stick"
    sid = store_on_stick(ms, mp)
    ms.purge_store(sid, reason="atime")
    assert set(ms.presence.connected([part(mp)])) == {sid}
    mp2 = tmp_path / "stick2"
    sid2 = store_on_stick(ms, mp2)
    ms.purge_store(sid2, reason="user")
    assert ms.presence.connected([part(mp2)]) == {}


def test_a_linked_store_is_unsafe_never_connected(ms: MetaStore, tmp_path: Path):
    a = tmp_path / "a"
    a.mkdir()
    _fs, doc, _ = ms.init_store(a)
    files = a / ".dmedia" / "files"
    if files.exists():
        files.rmdir()
    (tmp_path / "elsewhere").mkdir()
    files.symlink_to(tmp_path / "elsewhere")
    assert ms.presence.connected(scan=False) == {}
    assert doc["_id"] in ms.unsafe_stores  # what health shows as STORE_UNSAFE


def test_metastore_and_engine_ask_the_same_rule(ms: MetaStore, tmp_path: Path, monkeypatch):
    """`status`, `import` and `health` (MetaStore.connected_filestores) and the engine's
    refresh see the same stores: a store on a mounted drive that this machine does not
    know is connected for both (it was for the engine only)."""
    from dmedia_tui.engine import Engine

    mp = tmp_path / "media" / "STICK"
    sid = store_on_stick(ms, mp)
    monkeypatch.setattr(presence, "list_partitions", lambda: [part(mp)])
    assert set(ms.connected_filestores()) == {sid}
    [row] = [r for r in ms.health().store_rows if r.store_id == sid]
    assert row.online
    assert ms.import_destination().id == sid
    assert set(Engine(ms, watch_folders=False).refresh_connected()) == {sid}


def test_the_engine_says_why_a_store_went(ms: MetaStore, tmp_path: Path, monkeypatch):
    """The engine's "changed" event and log name the verdict of each store that went:
    unplugged for a folder that emptied, wiped for a drive back without its FileStore
    (purged in the same pass)."""
    from dmedia_tui.engine import Engine

    a = tmp_path / "a"
    a.mkdir()
    _fs, doc, _ = ms.init_store(a)
    mp = tmp_path / "stick"
    sid = store_on_stick(ms, mp)
    monkeypatch.setattr(presence, "list_partitions", lambda: [part(mp)])
    engine = Engine(ms, watch_folders=False)
    events: list = []
    engine.subscribe(events.append)
    engine.drive_pass()
    assert set(engine.connected) == {doc["_id"], sid}

    a.rename(tmp_path / "a-moved")
    (mp / ".dmedia" / "store.json").unlink()
    assert engine.drive_pass().purged == 1
    [gone] = [e.data["gone"] for e in events if isinstance(e.data, dict) and e.data.get("gone")]
    assert gone == {doc["_id"]: "unplugged", sid: "wiped"}
    assert ms.store_doc(sid) is None and ms.store_doc(doc["_id"]) is not None


# --- the wiped-drive probe ----------------------------------------------------------------


def test_wiped_when_the_drive_is_mounted_without_the_filestore(ms: MetaStore, tmp_path: Path):
    mp = tmp_path / "stick"
    sid = store_on_stick(ms, mp)
    p = part(mp)
    assert ms.presence.wiped([p], {}) == []  # still there: nothing to purge
    (mp / ".dmedia" / "store.json").unlink()
    [decision] = ms.presence.wiped([p], {})
    assert (decision.store_id, decision.matched_by, decision.expected_path) == (
        sid,
        "partition_uuid",
        mp,
    )
    # connected elsewhere (a cloned drive): never purged
    clone = tmp_path / "clone"
    clone.mkdir()
    assert ms.presence.wiped([p], {sid: FileStore.create(clone)}) == []


def test_reinitialised_drive_names_the_store_found_there(ms: MetaStore, tmp_path: Path):
    mp = tmp_path / "stick"
    sid = store_on_stick(ms, mp)
    old = mp / ".dmedia"
    old.rename(tmp_path / "old-dmedia")
    other = FileStore.create(mp)
    [decision] = ms.presence.wiped([part(mp)], {})
    assert decision.store_id == sid and decision.found_store_id == other.id


@pytest.mark.parametrize("damage", ["invalid", "link", "not-a-file"])
def test_any_doubt_means_no_purge(ms: MetaStore, tmp_path: Path, damage: str):
    mp = tmp_path / "stick"
    store_on_stick(ms, mp)
    sj = mp / ".dmedia" / "store.json"
    if damage == "invalid":
        sj.write_text("{not json")
    elif damage == "link":
        (mp / ".dmedia").rename(tmp_path / "real-dmedia")
        (mp / ".dmedia").symlink_to(tmp_path / "real-dmedia")
        sj.unlink()  # through the link: the real folder has no store.json, we cannot tell
    else:
        sj.unlink()
        sj.mkdir()
    assert ms.presence.wiped([part(mp)], {}) == []


def test_an_unmount_racing_the_look_means_no_purge(ms: MetaStore, tmp_path: Path):
    """The partition says st_dev X, the mount point shows another filesystem now (the
    empty folder under an unmounted drive): cannot tell."""
    mp = tmp_path / "stick"
    store_on_stick(ms, mp)
    (mp / ".dmedia" / "store.json").unlink()
    moved = part(mp, dev=os.stat(mp).st_dev + 1)
    assert ms.presence.wiped([moved], {}) == []


def test_read_id_is_the_one_store_json_reader(tmp_path: Path):
    assert FileStore.read_id(tmp_path / "absent") is None
    assert FileStore.read_id(tmp_path) is None  # no .dmedia
    fs = FileStore.create(tmp_path)
    assert FileStore.read_id(tmp_path) == fs.id
    (tmp_path / ".dmedia" / "store.json").write_text(json.dumps({"_id": "nope"}))
    with pytest.raises(FileStoreError):
        FileStore.read_id(tmp_path)
    real = tmp_path / "real"
    real.mkdir()
    (real / ".dmedia").symlink_to(tmp_path / ".dmedia")
    with pytest.raises(StoreUnsafe):
        FileStore.read_id(real)


# --- end to end: a real drive, through the CLI ------------------------------------------


def test_status_and_import_see_a_store_on_a_mounted_drive_this_machine_does_not_know(
    blockdevs: BlockDevs, tmp_path: Path
):
    """A store on a stick, mounted at a new place, not in this machine's known folders:
    the engine always found it; `status --json` and `import` now find it too (one rule),
    and the read-only `status` remembers nothing."""
    m = Machine(tmp_path / "machines", "studio", str(tmp_path / "library.sqlite3"), NOW)
    d = blockdevs.ext4("stick", "STICK", mount=False)
    settle(d.devname)
    mp = d.mount(blockdevs.workdir / "media" / "STICK")
    (mp / "Library").mkdir()
    sid = m.init_store(mp / "Library", "stick")
    d.umount()
    config = Config.load(m.config_home / "dmedia-tui", m.data_home / "dmedia-tui")
    config.forget_store(sid)
    d.mount(blockdevs.workdir / "run" / "media" / "STICK")

    _code, status = m.status()
    assert store_row(status, sid)["online"] is True
    assert sid not in config.known_stores()

    src = make_camera_files(tmp_path / "card", 3)
    r = m.ok("import", str(src[0].parent), "--store", "stick", "--json")
    assert r.json()["new"] == 3
