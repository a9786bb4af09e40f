"""Which drives and partitions are connected, who they are, and when that changes.

Two discovery sources, chosen per call by `discovery_source()`:

- ``"udev"``: udevd runs (its database under /run/udev/data is populated). Identity comes
  from udev properties (ID_FS_UUID, ID_FS_LABEL, ID_FS_TYPE, ID_SERIAL_SHORT, ID_MODEL,
  ID_BUS) through pyudev, and unmounted filesystems udev knows are listed too.
- ``"sysfs"``: no udevd (containers, minimal VMs). Mounts come from /proc/self/mountinfo,
  drive facts from /sys/class/block/<dev>/ and the filesystem's UUID/LABEL/TYPE from
  ``blkid -o export <dev>`` (util-linux). The drive serial is read from sysfs where the
  kernel exposes one (USB device ``serial``, NVMe/virtio ``serial``, SCSI VPD page 0x80).

Either way a mount is what makes a partition reachable: a drive that is plugged in but
not mounted holds nothing we can read. Discovery is best effort and never raises: an
unreadable drive, a missing tool or an odd mount leaves fields at None.

This module only says what is there. Which stores those partitions hold, whether a store
is connected, and the ``filestore_missing`` purge rule are decided in `presence.py`.
"""

from __future__ import annotations

import logging
import os
import select
import shutil
import stat
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

log = logging.getLogger(__name__)

MOUNTINFO = "/proc/self/mountinfo"
SYS_CLASS_BLOCK = "/sys/class/block"
SYS_DEV_BLOCK = "/sys/dev/block"
UDEV_DATA = "/run/udev/data"

# Network filesystems: whether the store is internal or removable is unknown.
_NETWORK_FS = frozenset(
    {"nfs", "nfs4", "cifs", "smb3", "smbfs", "9p", "ceph", "glusterfs", "fuse.sshfs", "sshfs"}
)


# --- values ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Partition:
    """One filesystem on a block device (a partition, or a whole unpartitioned disk)."""

    devname: str  # /dev/loop3
    mount_point: str | None  # None when not mounted
    fs_uuid: str | None  # ID_FS_UUID / blkid UUID
    fs_type: str | None
    fs_label: str | None
    drive_serial: str | None  # ID_SERIAL_SHORT (loop devices have none)
    drive_model: str | None
    removable: bool  # /sys/block/<disk>/removable, or USB bus
    internal: bool  # not removable and not usb
    bus: str | None
    bytes_total: int | None
    bytes_avail: int | None
    dev: int | None  # st_dev of the mounted filesystem (to match a folder to it)
    disk: str | None = None  # kernel name of the whole drive: "sdb" for /dev/sdb1
    mount_root: str = "/"  # the filesystem path mounted at mount_point (bind mounts)

    @property
    def key(self) -> tuple[str, str | None, str | None]:
        """What identifies this partition *being connected here* (free space excluded)."""
        return (self.devname, self.fs_uuid, self.mount_point)

    @property
    def mounted(self) -> bool:
        return self.mount_point is not None


@dataclass(frozen=True)
class MountEntry:
    """One line of /proc/self/mountinfo."""

    mount_id: int
    parent_id: int
    major: int
    minor: int
    root: str
    mount_point: str
    fs_type: str
    source: str

    @property
    def dev(self) -> int:
        return os.makedev(self.major, self.minor)


# --- small robust readers --------------------------------------------------------------


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read().strip()
    except OSError:
        return None


def _read_bytes(path: str) -> bytes | None:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return None


def _clean(value: object) -> str | None:
    """Strip a udev/sysfs/blkid value; empty means unknown."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def _unescape_mountinfo(field_: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as \\ooo octal."""
    if "\\" not in field_:
        return field_
    out, i = [], 0
    while i < len(field_):
        c = field_[i]
        if c == "\\" and field_[i + 1 : i + 4].isdigit() and len(field_[i + 1 : i + 4]) == 3:
            out.append(chr(int(field_[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(c)
            i += 1
    return "".join(out)


def parse_mountinfo(text: str) -> list[MountEntry]:
    """Parse /proc/<pid>/mountinfo; malformed lines are skipped, never fatal."""
    entries = []
    for line in text.splitlines():
        parts = line.split()
        try:
            sep = parts.index("-", 6)
            major, minor = (int(x) for x in parts[2].split(":"))
            entries.append(
                MountEntry(
                    mount_id=int(parts[0]),
                    parent_id=int(parts[1]),
                    major=major,
                    minor=minor,
                    root=_unescape_mountinfo(parts[3]),
                    mount_point=_unescape_mountinfo(parts[4]),
                    fs_type=parts[sep + 1],
                    source=_unescape_mountinfo(parts[sep + 2]) if len(parts) > sep + 2 else "",
                )
            )
        except (ValueError, IndexError):
            continue
    return entries


def read_mountinfo(path: str = MOUNTINFO) -> list[MountEntry]:
    data = _read_bytes(path) or b""
    return parse_mountinfo(data.decode("utf-8", "replace"))


# --- block device facts ------------------------------------------------------------------


def _block_name_for_mount(m: MountEntry) -> str | None:
    """Kernel name (loop3, sdb1, dm-0) of the block device a mount lives on, if any."""
    if m.source.startswith("/dev/"):
        real = os.path.realpath(m.source)
        try:
            if stat.S_ISBLK(os.stat(real).st_mode):
                return os.path.basename(real)
        except OSError:
            pass
    if m.major != 0:  # e.g. "/dev/root" that does not exist as a node
        sys_path = f"{SYS_DEV_BLOCK}/{m.major}:{m.minor}"
        if os.path.exists(sys_path):
            return os.path.basename(os.path.realpath(sys_path))
    return None


def _devnum(name: str) -> int | None:
    text = _read(f"{SYS_CLASS_BLOCK}/{name}/dev")
    try:
        major, minor = (int(x) for x in (text or "").split(":"))
    except ValueError:
        return None
    return os.makedev(major, minor)


def _disk_of(name: str) -> str:
    """The whole-drive kernel name: sdb for sdb1, loop3 for loop3."""
    sys_path = f"{SYS_CLASS_BLOCK}/{name}"
    if os.path.exists(f"{sys_path}/partition"):
        return os.path.basename(os.path.dirname(os.path.realpath(sys_path)))
    return name


def _sysfs_serial(disk: str) -> str | None:
    """The drive serial where the kernel shows it (best effort, matches ID_SERIAL_SHORT)."""
    base = f"/sys/block/{disk}"
    real = os.path.realpath(base)
    if "/usb" in real:
        # udev's usb_id takes the USB device's iSerial: walk up to the usb_device node.
        path = real
        while path not in ("/", "/sys"):
            if os.path.exists(f"{path}/idVendor"):
                return _clean(_read(f"{path}/serial"))
            path = os.path.dirname(path)
        return None
    for candidate in (f"{base}/device/serial", f"{base}/serial"):
        value = _clean(_read(candidate))
        if value:
            return value
    page = _read_bytes(f"{base}/device/vpd_pg80")
    if page and len(page) > 4:
        return _clean(page[4:].decode("ascii", "replace").strip("\x00 "))
    return None


def _sysfs_facts(name: str) -> dict[str, Any]:
    """Size, removable, bus, model, serial from /sys (no udev needed)."""
    disk = _disk_of(name)
    real = os.path.realpath(f"{SYS_CLASS_BLOCK}/{name}")
    usb = "/usb" in real
    size = _read(f"{SYS_CLASS_BLOCK}/{name}/size")
    bus = "usb" if usb else None
    if bus is None:
        if disk.startswith("nvme"):
            bus = "nvme"
        elif "/virtio" in real:
            bus = "virtio"
        elif "/ata" in real:
            bus = "ata"
        elif disk.startswith("loop"):
            bus = None
    return {
        "disk": disk,
        "removable": _read(f"/sys/block/{disk}/removable") == "1" or usb,
        "usb": usb,
        "bus": bus,
        "size": int(size) * 512 if size and size.isdigit() else None,
        "model": _clean(_read(f"/sys/block/{disk}/device/model")),
        "serial": _sysfs_serial(disk),
    }


_BLKID = shutil.which("blkid") or next(
    (p for p in ("/usr/sbin/blkid", "/sbin/blkid") if os.path.exists(p)), None
)


def blkid(devname: str) -> dict[str, str]:
    """``blkid -o export`` as a dict ({} when the tool is missing or the device unreadable)."""
    if _BLKID is None:
        return {}
    import subprocess  # only when a drive is probed: not at every CLI start

    try:
        proc = subprocess.run(
            [_BLKID, "-c", "/dev/null", "-o", "export", devname],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError) as e:
        log.info("blkid %s failed: %s", devname, e)
        return {}
    out = {}
    for line in proc.stdout.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.replace("\\ ", " ").replace("\\\\", "\\")
    return out


# --- udev ---------------------------------------------------------------------------------


def discovery_source() -> str:
    """``"udev"`` when udevd's database is there to ask, else ``"sysfs"``."""
    try:
        with os.scandir(UDEV_DATA) as it:
            if any(e.name.startswith("b") for e in it):
                return "udev"
    except OSError:
        pass
    return "sysfs"


def _udev_context() -> Any | None:
    try:
        import pyudev

        return pyudev.Context()
    except Exception as e:  # libudev missing: fall back to sysfs
        log.info("pyudev unavailable: %s", e)
        return None


def _udev_properties(ctx: Any, devnum: int) -> dict[str, str]:
    try:
        import pyudev

        dev = pyudev.Devices.from_device_number(ctx, "block", devnum)
        return {k: dev.properties[k] for k in dev.properties}
    except Exception as e:
        log.debug("no udev record for %s: %s", devnum, e)
        return {}


def partition_from_properties(
    props: Mapping[str, str],
    *,
    mount_point: str | None = None,
    attributes: Mapping[str, str] | None = None,
    dev: int | None = None,
    bytes_avail: int | None = None,
    mount_root: str = "/",
) -> Partition:
    """Build a Partition from udev properties (a live device or a saved property dump).

    `attributes` are sysfs attributes of the whole drive (``removable``) and of the device
    (``size`` in 512-byte sectors), as `udevadm info --attribute-walk` would show them.
    """
    attributes = attributes or {}
    bus = _clean(props.get("ID_BUS"))
    devpath = props.get("DEVPATH", "")
    usb = bus == "usb" or "/usb" in devpath
    removable = attributes.get("removable") == "1" or usb
    size = attributes.get("size")
    devname = props.get("DEVNAME") or ""
    if props.get("DEVTYPE") == "partition" and devpath:
        disk: str | None = PurePosixPath(devpath).parent.name
    else:
        disk = PurePosixPath(devname).name or None
    return Partition(
        devname=devname,
        mount_point=mount_point,
        fs_uuid=_clean(props.get("ID_FS_UUID")),
        fs_type=_clean(props.get("ID_FS_TYPE")),
        fs_label=_clean(props.get("ID_FS_LABEL")),
        drive_serial=_clean(props.get("ID_SERIAL_SHORT")),
        drive_model=_clean(props.get("ID_MODEL")),
        removable=removable,
        internal=not removable and not usb,
        bus=bus or ("usb" if usb else None),
        bytes_total=int(size) * 512 if size and str(size).isdigit() else None,
        bytes_avail=bytes_avail,
        dev=dev,
        disk=disk,
        mount_root=mount_root,
    )


# --- discovery ----------------------------------------------------------------------------


def _space(mount_point: str) -> tuple[int | None, int | None]:
    try:
        st = os.statvfs(mount_point)
    except OSError:
        return None, None
    return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize


def _primary_mounts(entries: Iterable[MountEntry]) -> dict[str, MountEntry]:
    """One mount per block device: prefer the one showing the filesystem root, then the
    earliest (bind mounts of subfolders are the same partition)."""
    chosen: dict[str, MountEntry] = {}
    for m in entries:
        name = _block_name_for_mount(m)
        if name is None:
            continue
        best = chosen.get(name)
        if best is None or (m.root == "/", -m.mount_id) > (best.root == "/", -best.mount_id):
            chosen[name] = m
    return chosen


def _build(
    name: str,
    mount: MountEntry | None,
    source: str,
    ctx: Any | None,
) -> Partition:
    devname = f"/dev/{name}"
    devnum = _devnum(name)
    facts = _sysfs_facts(name)
    props: dict[str, str] = {}
    if source == "udev" and ctx is not None and devnum is not None:
        props = _udev_properties(ctx, devnum)
    if not props.get("ID_FS_UUID") and os.path.exists(devname):
        # Not cached: mount IDs are reused after an unmount, so nothing cheap tells a
        # reformatted filesystem from the old one; blkid costs ~3 ms per device.
        found = blkid(devname)
        props = {
            **props,
            "ID_FS_UUID": found.get("UUID", ""),
            "ID_FS_TYPE": props.get("ID_FS_TYPE") or found.get("TYPE", ""),
            "ID_FS_LABEL": props.get("ID_FS_LABEL") or found.get("LABEL", ""),
        }
    total, avail = _space(mount.mount_point) if mount else (None, None)
    bus = _clean(props.get("ID_BUS")) or facts["bus"]
    usb = facts["usb"] or bus == "usb"
    removable = bool(facts["removable"]) or usb
    fs_type = _clean(props.get("ID_FS_TYPE"))
    if fs_type is None and mount is not None and mount.fs_type not in ("fuseblk", "fuse"):
        fs_type = mount.fs_type
    return Partition(
        devname=devname,
        mount_point=mount.mount_point if mount else None,
        fs_uuid=_clean(props.get("ID_FS_UUID")),
        fs_type=fs_type,
        fs_label=_clean(props.get("ID_FS_LABEL")),
        drive_serial=_clean(props.get("ID_SERIAL_SHORT")) or facts["serial"],
        drive_model=_clean(props.get("ID_MODEL")) or facts["model"],
        removable=removable,
        internal=not removable and not usb,
        bus=bus,
        bytes_total=total if total is not None else facts["size"],
        bytes_avail=avail,
        dev=mount.dev if mount else None,
        disk=facts["disk"],
        mount_root=mount.root if mount else "/",
    )


def list_partitions(
    *, mountinfo: Sequence[MountEntry] | None = None, include_unmounted: bool = True
) -> list[Partition]:
    """Mounted block-device filesystems, plus unmounted ones whose UUID is cheaply known
    (udev's database, or the sibling partitions of a mounted drive).

    Never raises: anything unreadable just leaves fields at None.
    """
    entries = list(mountinfo) if mountinfo is not None else read_mountinfo()
    source = discovery_source()
    ctx = _udev_context() if source == "udev" else None
    mounts = _primary_mounts(entries)
    out: list[Partition] = []
    for name, m in mounts.items():
        try:
            out.append(_build(name, m, source, ctx))
        except Exception:  # one odd device never hides the others
            log.exception("cannot describe %s", name)
    if not include_unmounted:
        return out
    seen = set(mounts)
    # Every partition of a drive that has a mounted one is listed, even without a readable
    # UUID: the filestore_missing rule must see the whole drive to judge a serial match.
    siblings: set[str] = set()
    for disk in {_disk_of(n) for n in mounts}:
        try:
            with os.scandir(f"/sys/block/{disk}") as it:
                for e in it:
                    if e.name not in seen and os.path.exists(f"{e.path}/partition"):
                        siblings.add(e.name)
        except OSError:
            continue
    others: set[str] = set()
    if ctx is not None:
        try:
            for d in ctx.list_devices(subsystem="block"):
                name = d.sys_name
                if name not in seen and d.properties.get("ID_FS_USAGE") == "filesystem":
                    others.add(name)
        except Exception as e:
            log.info("udev listing failed: %s", e)
    for name in sorted(siblings | others):
        try:
            p = _build(name, None, source, ctx)
        except Exception:
            log.exception("cannot describe %s", name)
            continue
        if p.fs_uuid or name in siblings:
            out.append(p)
    return out


def _mount_for_path(path: Path, entries: Sequence[MountEntry]) -> MountEntry | None:
    """The mount holding `path`: longest mount-point prefix, preferring a st_dev match."""
    try:
        st_dev: int | None = os.stat(path).st_dev
    except OSError:
        st_dev = None
    text = str(path)
    best: MountEntry | None = None
    for m in entries:
        mp = m.mount_point
        if not (text == mp or text.startswith(mp.rstrip("/") + "/")):
            continue
        # Later mounts over the same point shadow earlier ones (higher id = later).
        if (
            best is None
            or len(mp) > len(best.mount_point)
            or (len(mp) == len(best.mount_point) and m.mount_id > best.mount_id)
        ):
            best = m
    if best is not None and st_dev is not None and best.dev != st_dev:
        # btrfs subvolumes and the like: trust the device number when one mount matches it.
        same = [m for m in entries if m.dev == st_dev and text.startswith(m.mount_point)]
        if same:
            best = max(same, key=lambda m: (len(m.mount_point), m.mount_id))
    return best


def partition_for_path(path: str | os.PathLike[str]) -> Partition | None:
    """The partition holding a folder (None for tmpfs, overlay and other non-block mounts)."""
    real = Path(os.path.realpath(path))
    entries = read_mountinfo()
    m = _mount_for_path(real, entries)
    if m is None:
        return None
    name = _block_name_for_mount(m)
    if name is None:
        return None
    primary = _primary_mounts(e for e in entries if _block_name_for_mount(e) == name).get(name, m)
    try:
        return _build(name, primary, discovery_source(), _udev_context())
    except Exception:
        log.exception("cannot describe %s", name)
        return None


def _relative_to_fs_root(path: Path, mount: MountEntry) -> PurePosixPath:
    rel = PurePosixPath(os.path.relpath(path, mount.mount_point))
    root = PurePosixPath(mount.root)
    return (
        PurePosixPath(*(root / rel).parts[1:])
        if str(rel) != "."
        else PurePosixPath(*root.parts[1:])
    )


def drive_identity_for_path(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The drive facts a store doc records for a store folder.

    Keys: drive_serial, drive_model, partition_uuid, removable, internal, filesystem_type,
    filesystem_label, mount_point, relative_path. `relative_path` is the store folder
    relative to the root of its filesystem ("" for the root itself), so the store can be
    found wherever the partition gets mounted next time. Folders on tmpfs, overlay and
    other non-block filesystems have no serial or UUID (None); they count as internal
    (the machine must be on) unless they are network filesystems (then both flags None).
    """
    real = Path(os.path.realpath(path))
    entries = read_mountinfo()
    m = _mount_for_path(real, entries)
    out: dict[str, Any] = {
        "drive_serial": None,
        "drive_model": None,
        "partition_uuid": None,
        "removable": False,
        "internal": True,
        "filesystem_type": None,
        "filesystem_label": None,
        "mount_point": None,
        "relative_path": None,
    }
    if m is None:
        return out
    part = partition_for_path(real) if _block_name_for_mount(m) else None
    if part is None:
        rel = os.path.relpath(real, m.mount_point)
        network = m.fs_type in _NETWORK_FS
        out.update(
            filesystem_type=m.fs_type,
            mount_point=m.mount_point,
            relative_path="" if rel == "." else rel,
            removable=None if network else False,
            internal=None if network else True,
        )
        return out
    rel_fs = _relative_to_fs_root(real, m)
    # Express the folder relative to the partition's primary mount when it shows the
    # filesystem root; otherwise relative to the mount we reached it through.
    if part.mount_root == "/" and part.mount_point is not None:
        mount_point, relative = part.mount_point, str(rel_fs)
    else:
        rel = os.path.relpath(real, m.mount_point)
        mount_point, relative = m.mount_point, "" if rel == "." else rel
    out.update(
        drive_serial=part.drive_serial,
        drive_model=part.drive_model,
        partition_uuid=part.fs_uuid,
        removable=part.removable,
        internal=part.internal,
        filesystem_type=part.fs_type,
        filesystem_label=part.fs_label,
        mount_point=mount_point,
        relative_path="" if relative == "." else relative,
    )
    return out


# --- watching -----------------------------------------------------------------------------


@dataclass
class _Snapshot:
    partitions: dict[tuple[str, str | None, str | None], Partition] = field(default_factory=dict)


class DriveWatcher:
    """Calls ``on_change(added, removed)`` from its own thread when partitions are mounted
    or unmounted (and, with udev, when drives appear or go).

    A udev "add" alone is not a connected store, so the mount table is always watched:
    poll(2) on /proc/self/mountinfo wakes us on every mount change (POLLPRI), and the
    file's bytes are compared every `interval` seconds as a fallback. Where udev runs, a
    pyudev monitor on the block subsystem wakes us too (source ``"udev"``); otherwise the
    source is ``"mountinfo-poll"``. Idle cost: one small read per `interval`.

    With ``mounted_only`` (the default) only mounted partitions are reported: a partition
    appears in `added` when it gets mounted and in `removed` when it is unmounted.
    """

    def __init__(
        self,
        on_change: Callable[[list[Partition], list[Partition]], None],
        *,
        interval: float = 1.0,
        mounted_only: bool = True,
        use_udev: bool | None = None,
        mountinfo_path: str = MOUNTINFO,
    ) -> None:
        self.on_change = on_change
        self.interval = interval
        self.mounted_only = mounted_only
        self.mountinfo_path = mountinfo_path
        if use_udev is None:
            use_udev = discovery_source() == "udev"
        self._use_udev = use_udev
        self.source = "udev" if use_udev else "mountinfo-poll"
        self._thread: threading.Thread | None = None
        self._stop_r, self._stop_w = -1, -1
        self._snapshot = _Snapshot()
        self._lock = threading.Lock()

    @property
    def partitions(self) -> list[Partition]:
        """The partitions as last seen."""
        with self._lock:
            return list(self._snapshot.partitions.values())

    def _scan(self) -> dict[tuple[str, str | None, str | None], Partition]:
        parts = list_partitions(include_unmounted=not self.mounted_only)
        if self.mounted_only:
            parts = [p for p in parts if p.mounted]
        return {p.key: p for p in parts}

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop_r, self._stop_w = os.pipe()
        with self._lock:
            self._snapshot.partitions = self._scan()
        monitor = None
        if self._use_udev:
            try:
                import pyudev

                monitor = pyudev.Monitor.from_netlink(pyudev.Context())
                monitor.filter_by("block")
                monitor.start()
            except Exception as e:
                log.info("udev monitor unavailable, polling mountinfo only: %s", e)
                monitor = None
                self.source = "mountinfo-poll"
        self._thread = threading.Thread(
            target=self._run, args=(monitor,), name="dmedia-drive-watcher", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        thread, self._thread = self._thread, None
        if thread is None:
            return
        try:
            os.write(self._stop_w, b"x")
        except OSError:
            pass
        thread.join(timeout=5)
        for fd in (self._stop_r, self._stop_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def _run(self, monitor: Any | None) -> None:
        poller = select.poll()
        poller.register(self._stop_r, select.POLLIN)
        try:
            mi = open(self.mountinfo_path, "rb")  # noqa: SIM115 (kept open for poll)
            last = mi.read()
            poller.register(mi.fileno(), select.POLLPRI | select.POLLERR)
        except OSError:
            mi, last = None, b""
        if monitor is not None:
            poller.register(monitor.fileno(), select.POLLIN)
        try:
            while True:
                events = poller.poll(self.interval * 1000)
                fds = {fd for fd, _ in events}
                if self._stop_r in fds:
                    return
                changed = False
                if monitor is not None and monitor.fileno() in fds:
                    while monitor.poll(timeout=0) is not None:
                        changed = True
                if mi is not None:
                    try:
                        mi.seek(0)
                        now = mi.read()
                    except OSError:
                        now = last
                    if now != last:
                        last, changed = now, True
                if changed:
                    self._rescan()
        except Exception:
            log.exception("drive watcher stopped")
        finally:
            if mi is not None:
                mi.close()

    def rescan(self) -> None:
        """Look again now (also used by the engine after it mounted something itself)."""
        self._rescan()

    def _rescan(self) -> None:
        new = self._scan()
        with self._lock:
            old = self._snapshot.partitions
            self._snapshot.partitions = new
        added = [p for k, p in new.items() if k not in old]
        removed = [p for k, p in old.items() if k not in new]
        if added or removed:
            try:
                self.on_change(added, removed)
            except Exception:
                log.exception("drive change callback failed")
