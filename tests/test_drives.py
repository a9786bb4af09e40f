"""Drive discovery, identity, matching, the filestore_missing rule and the drive watcher."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from dmedia_tui import drives, presence
from dmedia_tui.drives import DriveWatcher, Partition
from tests import blockdev
from tests.blockdev import BlockDevs, settle, udevd

blockdevs = blockdev.blockdevs  # the loop-device fixture

FIXTURES = Path(__file__).parent / "drives_fixtures"
STORE_A = "3" * 24
STORE_B = "4" * 24


def fixture_partition(name: str, mount_point: str | None = None) -> Partition:
    data = json.loads((FIXTURES / f"{name}.json").read_text())
    return drives.partition_from_properties(
        data["properties"],
        attributes=data["attributes"],
        mount_point=mount_point if mount_point is not None else data["mount_point"],
    )


def make_filestore(folder: Path, store_id: str) -> Path:
    """The bit of the FileStore layout these rules look at: .dmedia/store.json."""
    (folder / ".dmedia" / "files").mkdir(parents=True, exist_ok=True)
    (folder / ".dmedia" / "store.json").write_text(json.dumps({"_id": store_id}))
    return folder


def filestore_exists(path: Path) -> str | None:
    """Store ID of the FileStore at path, or None (as FileStore code will provide)."""
    try:
        return json.loads((path / ".dmedia" / "store.json").read_text())["_id"]
    except FileNotFoundError:
        return None


def store_doc(store_id: str, part: Partition, relative_path: str | None = "", **kw) -> dict:
    doc = {
        "_id": store_id,
        "type": "dmedia/store",
        "partition_uuid": part.fs_uuid,
        "drive_serial": part.drive_serial,
        "drive_model": part.drive_model,
    }
    if relative_path is not None:
        doc["relative_path"] = relative_path
    doc.update(kw)
    return doc


# --- parsing -------------------------------------------------------------------------------


def test_parse_mountinfo_unescapes_and_skips_garbage():
    text = (
        "36 35 98:0 /mnt1 /mnt/my\\040disk rw,noatime master:1 - ext3 /dev/root rw\n"
        "garbage line\n"
        "40 27 0:45 / /media/usb rw,nosuid - fuseblk /dev/loop3 rw,user_id=0\n"
    )
    entries = drives.parse_mountinfo(text)
    assert [(e.mount_point, e.root, e.fs_type, e.source) for e in entries] == [
        ("/mnt/my disk", "/mnt1", "ext3", "/dev/root"),
        ("/media/usb", "/", "fuseblk", "/dev/loop3"),
    ]
    assert entries[0].dev == os.makedev(98, 0)


def test_discovery_never_raises_on_this_machine():
    parts = drives.list_partitions()
    assert all(isinstance(p, Partition) for p in parts)
    assert drives.discovery_source() in ("udev", "sysfs")


# --- identity from saved udev property dumps -------------------------------------------------


def test_usb_partition_from_udev_dump_is_removable_with_serial():
    p = fixture_partition("usb-disk-part1", "/media/u/usb-backup-2")
    assert p.drive_serial == "57584B31413231384A413548"
    assert p.drive_model == "Elements_2621"
    assert (p.removable, p.internal, p.bus) == (True, False, "usb")
    assert (p.fs_uuid, p.fs_type, p.fs_label) == ("64A1-0F3E", "exfat", "usb-backup-2")
    assert p.disk == "sdb"
    assert p.bytes_total == 976762880 * 512


def test_sata_partition_from_udev_dump_is_internal():
    p = fixture_partition("sata-ssd-part1")
    assert (p.removable, p.internal, p.bus) == (False, True, "ata")
    assert p.drive_serial == "S6PUNX0T123456A"
    assert p.mount_point == "/srv/media"


def test_loop_device_dump_has_uuid_but_no_serial():
    p = fixture_partition("loop-ext4", "/mnt/x")
    assert p.drive_serial is None
    assert p.fs_uuid == "00b9aa9e-633f-4d8c-8480-5f7a68a4870b"
    assert (p.fs_type, p.fs_label) == ("ext4", "CAPEXT4")
    assert p.internal and not p.removable


# --- match_store ---------------------------------------------------------------------------


def test_match_store_by_uuid_then_serial_and_never_otherwise(tmp_path: Path):
    p1 = fixture_partition("usb-disk-part1", str(tmp_path))
    p2 = fixture_partition("usb-disk-part2")
    sata = fixture_partition("sata-ssd-part1")
    docs = [
        store_doc(STORE_A, p1, "media"),
        store_doc(STORE_B, p2),  # same drive, other partition
        store_doc("5" * 24, sata),
        {"_id": "6" * 24, "partition_uuid": None, "drive_serial": None},
    ]
    got = presence.match_store(p1, docs)
    assert got == [
        presence.StoreMatch(STORE_A, "partition_uuid", tmp_path / "media"),
        presence.StoreMatch(STORE_B, "drive_serial", tmp_path),
    ]


def test_serial_match_needs_a_plausible_serial_and_the_same_model(tmp_path: Path):
    p = fixture_partition("usb-disk-part1", str(tmp_path))
    other_model = store_doc(STORE_A, p, partition_uuid=None, drive_model="Passport_0748")
    assert presence.match_store(p, [other_model]) == []
    unknown_model = store_doc(STORE_A, p, partition_uuid=None, drive_model=None)
    assert [m.by for m in presence.match_store(p, [unknown_model])] == ["drive_serial"]
    for bogus in ("0000000000000000", "0123456789ABCDEF", "1"):
        cheap = dataclasses.replace(p, drive_serial=bogus)
        doc = store_doc(STORE_A, cheap, partition_uuid=None)
        assert presence.match_store(cheap, [doc]) == []
        assert presence.find_missing_filestores(cheap, [doc], filestore_exists, [cheap]) == []


def test_match_store_uuid_is_case_insensitive_and_unmounted_has_no_expected_path():
    p = fixture_partition("usb-disk-part1")  # not mounted
    doc = store_doc(STORE_A, p, "", partition_uuid="64a1-0f3e", drive_serial=None)
    assert presence.match_store(p, [doc]) == [presence.StoreMatch(STORE_A, "partition_uuid", None)]


# --- find_missing_filestores on fixture data -------------------------------------------------


@pytest.fixture
def usb(tmp_path: Path) -> tuple[Partition, Partition]:
    """The two partitions of the USB drive, both mounted on real folders."""
    a, b = tmp_path / "part1", tmp_path / "part2"
    a.mkdir()
    b.mkdir()
    return fixture_partition("usb-disk-part1", str(a)), fixture_partition("usb-disk-part2", str(b))


def test_filestore_present_means_no_purge(usb):
    p1, _ = usb
    make_filestore(Path(p1.mount_point) / "lib", STORE_A)
    doc = store_doc(STORE_A, p1, "lib")
    assert presence.find_missing_filestores(p1, [doc], filestore_exists) == []


def test_uuid_match_and_filestore_gone_purges(usb):
    p1, _ = usb
    doc = store_doc(STORE_A, p1, "lib")
    (decision,) = presence.find_missing_filestores(p1, [doc], filestore_exists)
    assert decision.store_id == STORE_A
    assert decision.reason == "filestore_missing"
    assert decision.matched_by == "partition_uuid"
    assert decision.expected_path == Path(p1.mount_point) / "lib"
    assert decision.found_store_id is None
    fields = decision.log_fields()
    assert fields["drive_serial"] == "57584B31413231384A413548"
    assert fields["partition_uuid"] == "64A1-0F3E"


def test_reinitialised_filestore_with_other_id_purges(usb):
    p1, _ = usb
    make_filestore(Path(p1.mount_point), STORE_B)
    (decision,) = presence.find_missing_filestores(p1, [store_doc(STORE_A, p1)], filestore_exists)
    assert decision.found_store_id == STORE_B
    assert decision.log_fields()["found_store_id"] == STORE_B


def test_not_mounted_never_purges(usb):
    p1, _ = usb
    unmounted = dataclasses.replace(p1, mount_point=None)
    assert (
        presence.find_missing_filestores(unmounted, [store_doc(STORE_A, p1)], filestore_exists)
        == []
    )


def test_no_uuid_or_serial_match_never_purges(usb):
    p1, _ = usb
    doc = {
        "_id": STORE_A,
        "partition_uuid": "1111-2222",
        "drive_serial": "OTHER",
        "relative_path": "",
    }
    assert presence.find_missing_filestores(p1, [doc], filestore_exists) == []


def test_unknown_or_escaping_relative_path_never_purges(usb):
    p1, _ = usb
    docs = [store_doc(STORE_A, p1, None), store_doc(STORE_B, p1, "../elsewhere")]
    assert presence.find_missing_filestores(p1, docs, filestore_exists) == []


def test_error_while_looking_never_purges(usb):
    p1, _ = usb

    def unreadable(path: Path) -> str | None:
        raise PermissionError(13, "Permission denied", str(path))

    assert presence.find_missing_filestores(p1, [store_doc(STORE_A, p1)], unreadable) == []


def test_serial_match_on_reformatted_single_partition_drive_purges(usb):
    p1, _ = usb
    doc = store_doc(STORE_A, p1, "", partition_uuid="0000-OLD0")  # before the reformat
    (decision,) = presence.find_missing_filestores(p1, [doc], filestore_exists, [p1])
    assert decision.matched_by == "drive_serial"
    assert decision.partition_uuid == "0000-OLD0"
    assert decision.found_partition_uuid == "64A1-0F3E"


def test_serial_match_with_unmounted_sibling_never_purges(usb):
    p1, p2 = usb
    doc = store_doc(STORE_A, p1, "", partition_uuid="0000-OLD0")
    sibling = dataclasses.replace(p2, mount_point=None)
    assert presence.find_missing_filestores(p1, [doc], filestore_exists, [p1, sibling]) == []


def test_serial_match_when_store_uuid_is_a_sibling_partition_leaves_it_to_that_one(usb):
    p1, p2 = usb
    doc = store_doc(STORE_B, p2, "")  # the store lives on partition 2, which is empty now
    assert presence.find_missing_filestores(p1, [doc], filestore_exists, [p1, p2]) == []
    (decision,) = presence.find_missing_filestores(p2, [doc], filestore_exists, [p1, p2])
    assert decision.matched_by == "partition_uuid"


def test_serial_match_whole_drive_mounted_and_store_nowhere_purges(usb):
    p1, p2 = usb
    doc = store_doc(STORE_A, p1, "lib", partition_uuid="0000-OLD0")
    got = presence.find_missing_filestores(p1, [doc], filestore_exists, [p1, p2])
    assert [d.store_id for d in got] == [STORE_A]


def test_serial_match_without_uuid_and_store_on_sibling_never_purges(usb):
    p1, p2 = usb
    make_filestore(Path(p2.mount_point) / "lib", STORE_A)
    doc = store_doc(STORE_A, p1, "lib", partition_uuid=None)
    assert presence.find_missing_filestores(p1, [doc], filestore_exists, [p1, p2]) == []


def test_serial_match_with_unreadable_sibling_never_purges(usb):
    p1, p2 = usb
    doc = store_doc(STORE_A, p1, "", partition_uuid="0000-OLD0")
    unknown = dataclasses.replace(p2, fs_uuid=None)
    assert presence.find_missing_filestores(p1, [doc], filestore_exists, [p1, unknown]) == []


# --- real loop devices ------------------------------------------------------------------------


def blkid_value(devname: str, key: str) -> str:
    return subprocess.run(
        ["blkid", "-c", "/dev/null", "-s", key, "-o", "value", devname],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def test_identity_of_a_mounted_loop_ext4(blockdevs: BlockDevs):
    disk = blockdevs.ext4("ident", "DMEDIATEST")
    store = disk.mount_point / "media" / "store one"
    store.mkdir(parents=True)
    ident = drives.drive_identity_for_path(store)
    assert ident == {
        "drive_serial": None,
        "drive_model": None,
        "partition_uuid": blkid_value(disk.devname, "UUID"),
        "removable": False,
        "internal": True,
        "filesystem_type": "ext4",
        "filesystem_label": "DMEDIATEST",
        "mount_point": str(disk.mount_point),
        "relative_path": "media/store one",
    }
    assert drives.drive_identity_for_path(disk.mount_point)["relative_path"] == ""


def test_partition_for_path_and_list_partitions_on_a_loop_device(blockdevs: BlockDevs):
    disk = blockdevs.ext4("pfp", "PFPLABEL")
    sub = disk.mount_point / "a" / "b"
    sub.mkdir(parents=True)
    p = drives.partition_for_path(sub)
    assert p is not None
    assert p.devname == disk.devname
    assert p.mount_point == str(disk.mount_point)
    assert p.dev == os.stat(sub).st_dev
    assert p.bytes_total and p.bytes_total > 50_000_000
    assert p.bytes_avail and 0 < p.bytes_avail <= p.bytes_total
    listed = {q.devname: q for q in drives.list_partitions()}
    assert listed[disk.devname].fs_uuid == p.fs_uuid == blkid_value(disk.devname, "UUID")


def test_folders_not_on_block_devices_have_no_uuid_or_serial(tmp_path: Path):
    shm = Path("/dev/shm")
    if not shm.is_dir():
        pytest.skip("no /dev/shm tmpfs here")
    assert drives.partition_for_path(shm) is None
    ident = drives.drive_identity_for_path(shm)
    assert ident["partition_uuid"] is None and ident["drive_serial"] is None
    assert ident["filesystem_type"] == "tmpfs"
    assert (ident["removable"], ident["internal"]) == (False, True)


def test_bind_mount_of_a_subfolder_gives_path_relative_to_the_filesystem(blockdevs: BlockDevs):
    disk = blockdevs.ext4("bind", "BINDLBL")
    inner = disk.mount_point / "deep" / "store"
    inner.mkdir(parents=True)
    target = blockdevs.workdir / "bindtarget"
    target.mkdir()
    subprocess.run(["mount", "--bind", str(inner), str(target)], check=True)
    try:
        ident = drives.drive_identity_for_path(target)
        assert ident["mount_point"] == str(disk.mount_point)
        assert ident["relative_path"] == "deep/store"
    finally:
        subprocess.run(["umount", str(target)], check=True)


def test_filestore_wiped_on_same_uuid_loop_device_purges(blockdevs: BlockDevs):
    disk = blockdevs.ext4("wipe", "WIPELBL")
    make_filestore(disk.mount_point / "lib", STORE_A)
    ident = drives.drive_identity_for_path(disk.mount_point / "lib")
    doc = {"_id": STORE_A, "type": "dmedia/store", **ident}
    part = drives.partition_for_path(disk.mount_point)
    assert presence.find_missing_filestores(part, [doc], filestore_exists) == []
    # The user deletes the store folder: same filesystem, same UUID, no FileStore.
    subprocess.run(["rm", "-rf", str(disk.mount_point / "lib")], check=True)
    (decision,) = presence.find_missing_filestores(part, [doc], filestore_exists)
    assert (decision.store_id, decision.matched_by) == (STORE_A, "partition_uuid")
    # Unmounted, the same drive never triggers a purge.
    disk.umount()
    gone = [p for p in drives.list_partitions() if p.devname == disk.devname]
    assert all(not p.mounted for p in gone)
    for p in gone:
        assert presence.find_missing_filestores(p, [doc], filestore_exists) == []


def test_reformatted_loop_device_gets_new_uuid_and_without_serial_no_purge(
    blockdevs: BlockDevs,
):
    disk = blockdevs.ext4("refmt", "OLDLBL")
    make_filestore(disk.mount_point, STORE_A)
    doc = {"_id": STORE_A, **drives.drive_identity_for_path(disk.mount_point)}
    disk.umount()
    disk.mkfs("NEWLBL")
    disk.mount(blockdevs.workdir / "mnt" / "refmt")
    part = drives.partition_for_path(disk.mount_point)
    assert part.fs_uuid and part.fs_uuid != doc["partition_uuid"]
    # Loop devices have no serial: nothing ties the new filesystem to the store doc, so
    # the rule stays silent (the store will age into downgrade/purge instead).
    assert presence.match_store(part, [doc]) == []
    assert presence.find_missing_filestores(part, [doc], filestore_exists) == []


def test_fuse_exfat_identity(blockdevs: BlockDevs):
    img = blockdevs.image("exfat")
    disk = blockdevs.disk(img)
    disk.mkfs("EXFATLBL", "exfat")
    disk.mount_fuse_exfat(blockdevs.workdir / "mnt" / "exfat")
    ident = drives.drive_identity_for_path(disk.mount_point)
    assert ident["filesystem_type"] == "exfat"
    assert ident["filesystem_label"] == "EXFATLBL"
    assert ident["partition_uuid"] == blkid_value(disk.devname, "UUID")
    assert ident["mount_point"] == str(disk.mount_point)


# --- the drive watcher -------------------------------------------------------------------------


class Recorder:
    """Collects on_change calls; `wait_for` blocks until a predicate over them holds."""

    def __init__(self, devname_filter: set[str]) -> None:
        self.names = devname_filter
        self.added: list[Partition] = []
        self.removed: list[Partition] = []
        self.cond = threading.Condition()

    def __call__(self, added: list[Partition], removed: list[Partition]) -> None:
        with self.cond:
            self.added += [p for p in added if p.devname in self.names]
            self.removed += [p for p in removed if p.devname in self.names]
            self.cond.notify_all()

    def wait_for(self, pred, timeout: float = 30.0) -> float:
        t0 = time.monotonic()
        with self.cond:
            assert self.cond.wait_for(pred, timeout), (self.added, self.removed)
        return time.monotonic() - t0


def _watch_mount_cycle(devs: BlockDevs, use_udev: bool) -> tuple[DriveWatcher, float, float]:
    disk = devs.disk(devs.image("watch"))
    disk.mkfs("WATCHLBL")
    settle(disk.devname)
    rec = Recorder({disk.devname})
    watcher = DriveWatcher(rec, use_udev=use_udev)
    watcher.start()
    try:
        disk.mount(devs.workdir / "mnt" / "watch")
        seen_mount = rec.wait_for(lambda: rec.added)
        (p,) = rec.added
        assert p.mount_point == str(disk.mount_point) and p.fs_label == "WATCHLBL"
        disk.umount()
        seen_umount = rec.wait_for(lambda: rec.removed)
        assert [q.devname for q in rec.removed] == [disk.devname]
    finally:
        watcher.stop()
    return watcher, seen_mount, seen_umount


def test_drive_watcher_polling_mountinfo_sees_mount_and_unmount(blockdevs: BlockDevs):
    watcher, t_mount, t_umount = _watch_mount_cycle(blockdevs, use_udev=False)
    assert watcher.source == "mountinfo-poll"
    print(f"mountinfo-poll: mount seen after {t_mount:.3f}s, unmount after {t_umount:.3f}s")


def test_udev_path_end_to_end(blockdevs: BlockDevs):
    """With udevd running: udev discovery, unmounted filesystems listed, udev watcher."""
    with udevd():
        assert drives.discovery_source() == "udev"
        disk = blockdevs.ext4("udev", "UDEVLBL")
        other = blockdevs.disk(blockdevs.image("udev-unmounted"))
        other.mkfs("UNMNTLBL")
        settle(disk.devname, other.devname)
        parts = {p.devname: p for p in drives.list_partitions()}
        assert parts[disk.devname].fs_label == "UDEVLBL"
        assert parts[disk.devname].fs_uuid == blkid_value(disk.devname, "UUID")
        assert parts[other.devname].mount_point is None
        assert parts[other.devname].fs_uuid == blkid_value(other.devname, "UUID")
        disk.umount()
        watcher, t_mount, t_umount = _watch_mount_cycle(blockdevs, use_udev=True)
        assert watcher.source == "udev"
        print(f"udev: mount seen after {t_mount:.3f}s, unmount after {t_umount:.3f}s")
