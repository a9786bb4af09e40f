"""Which stores are connected to this machine, and why one is not: the one place that says.

A store is *connected* here when its FileStore (`.dmedia/store.json` naming it) is present
now at one of two places, and nowhere else:

- a folder this machine knows (`Config.known_stores`: `store init`, or where it was last
  found), or
- a mounted partition: at the partition's root, or at the folder its doc records on it
  (`relative_path`), the partition matched by filesystem UUID or drive serial
  (`match_store`), wherever it is mounted now. A store in a folder of *another* machine's
  internal disk is not claimed (`claimable_in_folder`): two machines would fight over it.
  Only stores of this library count (a doc, or a purge by policy: such a store is ours).

`Presence.connected()` is that rule; `status`, `import`, `health`, `verify`, the app and
the engine all ask it (MetaStore.connected_filestores and the engine's refresh are the same
call). Only the engine remembers where it found a store (`remember=True`): a read-only
command never writes.

The wiped-drive probe (`Presence.wiped`, the `filestore_missing` rule of DESIGN.md §2 in
`find_missing_filestores`): a store whose drive is mounted here (its partition UUID, or
its drive serial with the whole drive accounted for) but whose FileStore is not at the
recorded place is purged now. Any doubt means no purge: an I/O error, an unreadable
store.json, a link, an unmount racing the look, or the store connected elsewhere.

`verdict()` says where a store that is not connected went, in one word (`Away`): wiped
(purge now), unplugged (this machine's: connect it here), machine off (with another
machine, whose heartbeat is stale), elsewhere (with another machine that is up).

Layer: operations, below `metastore.py` (which asks it), above storage (`drives.py` says
which partitions exist, `filestore.py` reads store.json: the one reader). Matching and
the purge rule are pure functions over `Partition` values, tested on saved udev dumps as
well as on real loop devices.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

from dmedia_tui import schema, transitions
from dmedia_tui.config import Config
from dmedia_tui.db.base import Library
from dmedia_tui.drives import Partition, _clean, list_partitions
from dmedia_tui.filestore import FileStore, FileStoreError, StoreUnsafe

log = logging.getLogger(__name__)


# --- values ----------------------------------------------------------------------------


@dataclass(frozen=True)
class StoreMatch:
    """A store doc that belongs on a partition, how we know, and where its FileStore should be.

    `expected_path` is None when the doc does not record where on the partition the store
    folder is (no `relative_path`) or the partition is not mounted: then nobody can say
    the FileStore is missing.
    """

    store_id: str
    by: str  # "partition_uuid" | "drive_serial"
    expected_path: Path | None


@dataclass(frozen=True)
class PurgeDecision:
    """A store to purge now because its drive is here but its FileStore is not."""

    store_id: str
    reason: str  # "filestore_missing"
    matched_by: str  # "partition_uuid" | "drive_serial"
    expected_path: Path
    found_store_id: str | None  # a FileStore with another ID sits there (re-initialised)
    drive_serial: str | None
    drive_model: str | None
    partition_uuid: str | None  # the UUID recorded in the store doc
    found_partition_uuid: str | None  # the UUID of the partition mounted now
    devname: str

    def log_fields(self) -> dict[str, Any]:
        """The fields a `dmedia/store/purge` log doc carries about this decision."""
        out: dict[str, Any] = {
            "store_id": self.store_id,
            "reason": self.reason,
            "matched_by": self.matched_by,
            "expected_path": str(self.expected_path),
            "drive_serial": self.drive_serial,
            "drive_model": self.drive_model,
            "partition_uuid": self.partition_uuid,
            "found_partition_uuid": self.found_partition_uuid,
            "devname": self.devname,
        }
        if self.found_store_id is not None:
            out["found_store_id"] = self.found_store_id
        return out


# --- matching and the filestore_missing rule --------------------------------------------


def _safe_relative(value: object) -> PurePosixPath | None:
    """A recorded relative path, only if it cannot escape the partition."""
    if not isinstance(value, str):
        return None
    rel = PurePosixPath(value)
    if rel.is_absolute() or ".." in rel.parts or "\x00" in value:
        return None
    return rel


def _expected_path(partition: Partition, doc: Mapping[str, Any]) -> Path | None:
    if partition.mount_point is None:
        return None
    rel = _safe_relative(doc.get("relative_path"))
    if rel is None:
        return None
    root = PurePosixPath(partition.mount_root)
    if partition.mount_root != "/":
        # Only the part of the filesystem under mount_root is visible here.
        try:
            rel = PurePosixPath("/", rel).relative_to(root)
        except ValueError:
            return None
    return Path(partition.mount_point, rel)


# Serials that cheap USB bridges give to every unit they make: never an identity.
_BOGUS_SERIALS = frozenset({"0123456789ABCDEF", "123456789ABC", "0123456789", "1234567890"})


def plausible_serial(serial: str | None) -> bool:
    """False for serials that identify nothing (too short, one repeated character, or a
    placeholder that many USB enclosures share)."""
    if not serial:
        return False
    s = serial.strip().upper()
    return len(s) >= 4 and len(set(s)) > 1 and s not in _BOGUS_SERIALS


def match_store(partition: Partition, store_docs: Iterable[Mapping[str, Any]]) -> list[StoreMatch]:
    """Store docs that belong on this partition: same filesystem UUID (certain), else the
    same drive serial (the drive is right, the filesystem may have been re-made).

    A serial match needs a plausible serial (see `plausible_serial`) and, when both sides
    know it, the same drive model: two drives in identical enclosures must not match."""
    matches = []
    for doc in store_docs:
        store_id = doc.get("_id")
        if not isinstance(store_id, str):
            continue
        uuid = _clean(doc.get("partition_uuid"))
        serial = _clean(doc.get("drive_serial"))
        if uuid and partition.fs_uuid and uuid.lower() == partition.fs_uuid.lower():
            by = "partition_uuid"
        elif (
            plausible_serial(serial)
            and serial == partition.drive_serial
            and _same_model(doc.get("drive_model"), partition.drive_model)
        ):
            by = "drive_serial"
        else:
            continue
        matches.append(StoreMatch(store_id, by, _expected_path(partition, doc)))
    return matches


def _same_model(recorded: object, current: str | None) -> bool:
    recorded = _clean(recorded)
    return recorded is None or current is None or recorded == current


def _look(filestore_exists: Callable[[Path], str | None], path: Path) -> tuple[bool, str | None]:
    """(certain, store_id found). An error while looking is never certain."""
    try:
        return True, filestore_exists(path)
    except Exception as e:
        log.info("cannot look for a FileStore at %s: %s", path, e)
        return False, None


def find_missing_filestores(
    partition: Partition,
    store_docs: Iterable[Mapping[str, Any]],
    filestore_exists: Callable[[Path], str | None],
    drive_partitions: Sequence[Partition] | None = None,
) -> list[PurgeDecision]:
    """Stores to purge at once because their drive is connected but their FileStore is gone.

    `filestore_exists(path)` returns the store ID of the FileStore at `path`, or None.
    `drive_partitions` is what is known now about every filesystem, mounted or not, as
    `list_partitions()` gives it (the default, computed only when a serial match needs it);
    never pass `DriveWatcher.partitions` (mounted only): unmounted siblings must be seen.

    The rules (a purge forgets every copy on the store, so any doubt means "no"):
    - The partition must be mounted and the store doc must say where the store folder is
      on it (`relative_path`); looking there must not fail.
    - UUID match: purge when no FileStore is at the recorded place, or one with a
      different store ID is (the drive was re-initialised).
    - Serial match alone (the filesystem UUID differs or the doc has none: typically a
      reformatted drive): the whole drive must be accounted for. If the doc's UUID is on
      any filesystem of the drive that is known now, that filesystem decides, not this
      one. Otherwise every filesystem of the drive must be mounted and readable, and the
      FileStore must be at the recorded place on none of them. An unmounted or unreadable
      sibling partition (it may hold the store) means no purge.
    - Neither UUID nor serial matches: not our store, never a purge.
    """
    if partition.mount_point is None:
        return []
    docs = [d for d in store_docs if isinstance(d, Mapping)]
    known: list[Partition] | None = list(drive_partitions) if drive_partitions is not None else None
    decisions = []
    for match in match_store(partition, docs):
        doc = next(d for d in docs if d.get("_id") == match.store_id)
        if match.expected_path is None:
            continue
        certain, found = _look(filestore_exists, match.expected_path)
        if not certain or found == match.store_id:
            continue
        if match.by == "drive_serial":
            if known is None:
                known = list_partitions()
            if partition.key not in {p.key for p in known}:
                known.append(partition)
            uuid = _clean(doc.get("partition_uuid"))
            siblings = [
                p
                for p in known
                if p.drive_serial == partition.drive_serial
                or (p.disk is not None and p.disk == partition.disk)
            ]
            if uuid and any(p.fs_uuid and p.fs_uuid.lower() == uuid.lower() for p in siblings):
                continue  # its own filesystem is here: the UUID match there decides
            if any(p.mount_point is None or p.fs_uuid is None for p in siblings):
                continue  # part of the drive cannot be looked at
            elsewhere = False
            for p in siblings:
                if p.key == partition.key:
                    continue
                path = _expected_path(p, doc)
                ok, other = _look(filestore_exists, path) if path else (False, None)
                if not ok or other == match.store_id:
                    elsewhere = True
                    break
            if elsewhere:
                continue
        decisions.append(
            PurgeDecision(
                store_id=match.store_id,
                reason="filestore_missing",
                matched_by=match.by,
                expected_path=match.expected_path,
                found_store_id=found,
                drive_serial=partition.drive_serial or _clean(doc.get("drive_serial")),
                drive_model=partition.drive_model or _clean(doc.get("drive_model")),
                partition_uuid=_clean(doc.get("partition_uuid")),
                found_partition_uuid=partition.fs_uuid,
                devname=partition.devname,
            )
        )
    return decisions


# --- presence ----------------------------------------------------------------------------


class Away(StrEnum):
    """Where a store is, seen from this machine: one verdict for every caller."""

    CONNECTED = "connected"  # its FileStore is here now
    WIPED = "wiped"  # its drive is here without it (filestore_missing): purge now
    UNPLUGGED = "unplugged"  # this machine's (or nobody's yet): unplugged, unmounted, moved
    MACHINE_OFF = "machine_off"  # with another machine whose heartbeat is stale
    ELSEWHERE = "elsewhere"  # with another machine that is up: online through it
    UNKNOWN = "unknown"  # no store of this library


def verdict(
    store_id: str,
    doc: Mapping[str, Any] | None,
    machine_id: str | None,
    *,
    connected: Collection[str],
    wiped: Collection[str] = (),
    online: Collection[str] = (),
) -> Away:
    """Where `store_id` is: `connected` here now, `wiped` by the probe, else by the machine
    its doc names (`machine_id`, the last machine that saw it): this machine (or none) means
    unplugged here; another machine means elsewhere while the store is `online` (that
    machine's heartbeat) and machine off when not. Pure: the callers give what they saw."""
    if doc is None:
        return Away.UNKNOWN
    if store_id in connected:
        return Away.CONNECTED
    if store_id in wiped:
        return Away.WIPED
    owner = doc.get("machine_id")
    if not isinstance(owner, str) or owner == machine_id:
        return Away.UNPLUGGED
    return Away.ELSEWHERE if store_id in online else Away.MACHINE_OFF


def claimable_in_folder(doc: Mapping[str, Any] | None, machine_id: str | None) -> bool:
    """May a store found in a folder of a partition (not at its root) be taken as connected
    here? Yes for this machine's stores and for removable drives. A folder of another
    machine's internal disk seen here is a disk both can reach (a shared or simulated one):
    claiming it would make the two machines fight over the store."""
    if doc is None:
        return False
    return doc.get("machine_id") in (None, machine_id) or doc.get("removable") is True


class Presence:
    """The connected stores of one library on this machine (see the module docstring)."""

    def __init__(self, lib: Library, config: Config) -> None:
        self.lib = lib
        self.config = config
        # Stores whose folder holds a link (or a non-folder) where the layout has a folder:
        # never read or written; shown as STORE_UNSAFE. store_id -> the reason.
        self.unsafe_stores: dict[str, str] = {}

    def open(self, store_id: str, path: str | os.PathLike[str]) -> FileStore | None:
        """The FileStore at path if it is the expected store, else None.

        A store whose layout holds a link is never opened: it is remembered in
        `unsafe_stores` (shown as STORE_UNSAFE) and treated as not connected.
        """
        try:
            fs = FileStore(path, expected_id=store_id)
        except StoreUnsafe as e:
            if self.unsafe_stores.get(store_id) != str(e):
                log.error("store %s not used: %s", store_id, e)
            self.unsafe_stores[store_id] = str(e)
            return None
        except (FileStoreError, OSError):
            self.unsafe_stores.pop(store_id, None)
            return None
        self.unsafe_stores.pop(store_id, None)
        return fs

    @staticmethod
    def partitions() -> list[Partition] | None:
        """Every filesystem known now (mounted or not); None when discovery fails."""
        try:
            return list_partitions()
        except Exception as e:
            log.info("drive discovery failed: %s", e)
            return None

    def connected(
        self,
        partitions: Sequence[Partition] | None = None,
        *,
        scan: bool = True,
        remember: bool = False,
    ) -> dict[str, FileStore]:
        """{store_id: FileStore} of the stores connected here now: known folders, then
        mounted partitions (`partitions`, else scanned now unless `scan` is False). With
        `remember`, a store found where this machine did not know it is remembered there
        (the engine; a read-only command writes nothing)."""
        found: dict[str, FileStore] = {}
        known = self.config.known_stores()
        for store_id, folder in known.items():
            fs = self.open(store_id, folder)
            if fs is not None:
                found[store_id] = fs
        if partitions is None and scan:
            partitions = self.partitions()
        if partitions:
            found.update(self._on_drives(found, partitions, known, remember))
        return found

    def _on_drives(
        self,
        known_found: Mapping[str, FileStore],
        partitions: Sequence[Partition],
        remembered: Mapping[str, str],
        remember: bool,
    ) -> dict[str, FileStore]:
        out: dict[str, FileStore] = {}
        stores: list[dict[str, Any]] | None = None
        me = self.config.known_machine_id()
        for p in partitions:
            if not p.mount_point:
                continue
            if stores is None:
                stores = self.lib.stores()
            by_id = {d.get("_id"): d for d in stores}
            paths = [Path(p.mount_point)]
            paths += [
                m.expected_path
                for m in match_store(p, stores)
                if m.expected_path and claimable_in_folder(by_id.get(m.store_id), me)
            ]
            for path in dict.fromkeys(paths):
                try:
                    fs = FileStore(path)
                except Exception:
                    continue
                if fs.id in known_found or fs.id in out:
                    continue  # already found
                if fs.id not in by_id and not self.purged_by_policy(fs.id):
                    continue  # not a store of this library (or one the user purged)
                out[fs.id] = fs
                if remember and remembered.get(fs.id) != os.path.realpath(fs.path):
                    try:
                        self.config.remember_store(fs.id, fs.path)
                    except Exception as e:
                        log.warning("cannot remember store %s at %s: %s", fs.id, fs.path, e)
        return out

    def purged_by_policy(self, store_id: str) -> bool:
        """Did the library forget this store by a policy (unseen for days, its drive seen
        without it), not by the user's `store purge`? Such a store found again is ours."""
        purged = self.lib.events(1, types=[schema.LOG_STORE_PURGE], store_id=store_id)
        return bool(purged) and purged[0].get("reason") != transitions.REASON_USER

    def wiped(
        self, partitions: Sequence[Partition], connected: Mapping[str, FileStore]
    ) -> list[PurgeDecision]:
        """The stores to purge now because their drive is mounted without their FileStore
        (wiped, re-initialised): the `filestore_missing` rule on every mounted partition.
        A store connected now is never among them (a cloned drive), nor one without a doc."""
        stores = self.lib.stores()
        ids = {d.get("_id") for d in stores}
        look = _store_json_lookup(partitions)
        out: list[PurgeDecision] = []
        for p in partitions:
            if not p.mount_point:
                continue
            for decision in find_missing_filestores(p, stores, look, partitions):
                if decision.store_id in connected:
                    log.warning(
                        "not purging store %s: it is connected at %s (a cloned drive?)",
                        decision.store_id,
                        connected[decision.store_id].path,
                    )
                    continue
                if decision.store_id in ids and decision.store_id not in {d.store_id for d in out}:
                    out.append(decision)
        return out


def _store_json_lookup(partitions: Sequence[Partition]) -> Callable[[Path], str | None]:
    """`filestore_exists` for find_missing_filestores, made safe for a purge.

    It answers None ("no FileStore there") only when store.json is certainly absent
    (`FileStore.read_id`, the one reader) *and* the partition was the filesystem mounted
    there both before and after we looked (an unmount racing us shows the empty folder
    underneath). An I/O error, a link, an invalid store.json, or a path on no known mount
    raises, which the rule treats as "cannot tell" (no purge).
    """
    mounts = sorted(
        ((Path(p.mount_point), p.dev) for p in partitions if p.mount_point and p.dev is not None),
        key=lambda m: len(str(m[0])),
        reverse=True,
    )

    def look(path: Path) -> str | None:
        path = Path(path)
        owner = next((m for m in mounts if path == m[0] or m[0] in path.parents), None)
        if owner is None:
            raise LookupError(f"{path} is on no mounted partition")
        mount_point, dev = owner

        def still_mounted() -> None:
            if os.stat(mount_point).st_dev != dev:
                raise LookupError(f"{mount_point} is no longer the partition we looked at")

        still_mounted()
        found = FileStore.read_id(path)
        if found is None:
            still_mounted()
        return found

    return look
