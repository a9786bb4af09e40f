"""The operations on docs and files: import, verify, copy, policies, user actions, log-1.

`MetaStore` is where the library's rules meet the database and the FileStores. Each
operation is a composition of pure doc transitions (`transitions.py`) applied through
`Database.update` (read-modify-write with conflict retry), and every data-safety event is
written to `log-1` *and* to Python logging. Order matters for crash safety: bytes are
moved or written first, the doc is updated after, so a doc never claims a copy that is
not on disk.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dmedia_tui import protocol, schema, transitions
from dmedia_tui.actions import ActionPreview as ActionPreview  # the preview, re-exported
from dmedia_tui.actions import StoreAction, store_action
from dmedia_tui.checker import Checker, CheckReport
from dmedia_tui.clock import Clock
from dmedia_tui.config import Config
from dmedia_tui.db.base import (
    DOCS_DB,
    LOG_DB,
    SET_DOWNGRADE,
    SET_PURGE,
    Conflict,
    DatabaseError,
    Doc,
    InvalidDoc,
    Library,
    NotFound,
)
from dmedia_tui.durability import (
    MAX_COPIES,
    copies_of,
    durability,
    file_origin,
    parse_placement,
    rank,
)
from dmedia_tui.errors import DmediaError
from dmedia_tui.faults import fault_point
from dmedia_tui.filestore import (
    FOLDERS_SEEN,
    EmptyFile,
    FileStore,
    FileStoreError,
    FoldersSeen,
    ImportResult,
    NotAFileStore,
    VerifyResult,
    VerifyStatus,
    commit_staged,
    error_text,
    held_dirs_of,
    walk_files,
)
from dmedia_tui.presence import Presence, plausible_serial
from dmedia_tui.views import StoreView, time_value
from dmedia_tui.views import store_label as store_label  # the label rule, re-exported

# Loaded where used: most commands (an import, a verify) never judge health, and each
# module is a few ms of every start (see __main__.py).
if TYPE_CHECKING:
    from dmedia_tui.liveness import Observations

# A store-wide operation's progress: (files done, files in all), a call per batch.
StoreProgress = Callable[[int, int], None]

log = logging.getLogger("dmedia_tui")

Progress = Callable[[int], None]


# A new store on a drive where another store of the library returned corrupt data.
REASON_DRIVE_FAILED_BEFORE = "drive_failed_before"
# A store's recovery lists every files/XX folder at least this often (library seconds),
# not only those that changed: what bounds a copy the library lost track of.
FULL_LISTING_EVERY = 86400


def failure_warning(doc: Doc) -> str | None:
    """The loud line `store init` prints when the store it made or re-attached is FAILING."""
    failure = doc.get("failure") if isinstance(doc, dict) else None
    if not isinstance(failure, dict):
        return None
    label = store_label(doc)
    if failure.get("reason") == REASON_DRIVE_FAILED_BEFORE:
        what = (
            f"this drive held store {', '.join(failure.get('previous_store_ids') or [])}, "
            "which returned corrupt data"
        )
    else:
        what = f"store {label} returned corrupt data before it was forgotten"
    return (
        f"WARNING: {what}: {label} is FAILING and takes no new copies. Check the drive, then "
        f"`dmedia-tui store trust {label}` if it is sound."
    )


class MetaStoreError(DmediaError):
    """A user-level error: one line, fit for stderr or a banner."""


class UnknownStore(MetaStoreError):
    pass


@dataclass
class ImportReport:
    files: int = 0  # files read (non-empty)
    new: int = 0  # new to the library
    duplicates: int = 0  # already in the library (location merged)
    empty: int = 0
    bytes: int = 0
    errors: list[str] = field(default_factory=list)
    file_ids: list[str] = field(default_factory=list)
    # not regular files, never opened: [{"path", "reason": FIFO|socket|device|symlink}]
    skipped: list[dict[str, str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "files": self.files,
            "new": self.new,
            "duplicates": self.duplicates,
            "empty": self.empty,
            "bytes": self.bytes,
            "errors": self.errors,
            "file_ids": self.file_ids,
            "skipped": self.skipped,
        }


# Pseudo filesystems: a store there would write into devices, processes or the kernel.
_SYSTEM_FOLDERS = ("/dev", "/proc", "/sys")


class MetaStore:
    """The library's operations, for one machine (its config) at one time (its clock)."""

    def __init__(self, lib: Library, config: Config, clock: Clock) -> None:
        self.lib = lib
        self.config = config
        self.clock = clock
        self.thresholds = config.thresholds
        self.presence = Presence(lib, config)  # which stores are connected here
        # Stores whose folder holds a link (or a non-folder) where the layout has a folder:
        # never read or written; shown as STORE_UNSAFE. store_id -> the reason.
        self.unsafe_stores: dict[str, str] = self.presence.unsafe_stores
        self._read_errors: dict[str, _ReadErrors] = {}
        # The workers (verify, copy, the peer server's reads) meet a failing drive's errors
        # and corrupt copies at once: counting them and flagging the store failing happen
        # one at a time (note_io_error, handle_corrupt), so it is flagged and logged once.
        self._drive_trouble = threading.RLock()
        self.checker = Checker(lib, config, self.now)  # the schema pass, log-once
        self._vstats_cache: dict[str, tuple[float, Any]] = {}
        self._last_unverified_pass = float("-inf")
        self._obs: Observations | None = None
        self._obs_lock = threading.Lock()
        # Sources a copy found corrupt, missing or unreadable (so far, in this process):
        # a copy pass that saw none left no file behind its cursor (Engine._end_copy_pass).
        self.sources_lost = 0
        # Set by an engine: (verb, store_id) -> a context giving the progress callback of a
        # store-wide pass nobody else follows (a policy's purge, a downgrade after corrupt
        # data), so the app's activity panel shows every such pass while it runs.
        self.store_pass: Callable[[str, str], AbstractContextManager[StoreProgress]] | None = None

    def now(self) -> float:
        return self.clock.now()

    # Read lazily: machine.json is created on first use, and a read-only command (status,
    # events, the read-only app) never needs it, so it never writes it.
    @property
    def machine_id(self) -> str:
        return self.config.machine_id

    @property
    def hostname(self) -> str:
        return self.config.hostname

    # --- log-1 -----------------------------------------------------------------------

    def log_event(
        self,
        type: str,
        level: int = logging.WARNING,
        *,
        log_id: str | None = None,
        at: float | None = None,
        **fields: Any,
    ) -> Doc:
        """Record a data-safety event in log-1 and in Python logging.

        `log_id` (with `at`, the time it encodes): the event's ID chosen when the operation
        began and recorded with its intent. Logging it again (a crashed run finished by the
        next) finds it logged and returns that doc: one event, however many attempts.
        """
        now = self.now() if at is None else at
        doc = schema.create_log(now, type, self.machine_id, log_id=log_id, **fields)
        try:
            self.lib.log.save(doc)
        except Conflict:
            if log_id is None:
                raise
            logged = self.lib.log.get_or_none(log_id)
            if logged is not None:
                return logged
            raise
        _log_line(type, level, fields)
        return doc

    def log_events(self, events: list[tuple[str, int, dict[str, Any]]]) -> None:
        """Several (type, level, fields) events in one write, as log_event each: a batch
        of transfers committed together is recorded together."""
        if not events:
            return
        now = self.now()
        docs = [schema.create_log(now, t, self.machine_id, **fields) for t, _, fields in events]
        for result in self.lib.log.save_many(docs):
            if isinstance(result, Exception):
                raise result
        for t, level, fields in events:
            _log_line(t, level, fields)

    def report_invalid(self, doc_id: Any, error: BaseException | str, db: str = DOCS_DB) -> None:
        """A doc a worker could not use: logged once, with the key the check uses."""
        self.checker.report_invalid(doc_id, error, db)

    # --- reads for the presentation -------------------------------------------------
    # The app and the CLI read docs and the log here (or through the views), never through
    # `ms.lib`: the read rule is in db/base.py's docstring and the README.

    @property
    def library_url(self) -> str:
        """The library's name for people (a path, or a URL without its password)."""
        return self.lib.display_url

    def change_token(self) -> tuple[str, str]:
        """Changes whenever a doc or an event is written (both update sequences): the
        app's refresh loop redraws only then. Raises when the database went away."""
        return (self.lib.docs.update_seq(), self.lib.log.update_seq())

    def check_storage(self) -> None:
        """The storage's own check (every page of an SQLite file); DatabaseOffline if
        damaged."""
        self.lib.check_storage()

    def file_doc(self, file_id: str) -> Doc | None:
        return self.lib.docs.get_or_none(file_id)

    def docs(self, ids: list[str]) -> list[Doc | None]:
        """The docs of `ids`, in order (None for each unknown one)."""
        return self.lib.docs.get_many(ids)

    def files_by_store(
        self, store_id: str, limit: int, after: tuple[int, str] | None = None
    ) -> list[Doc]:
        """One page of the files on a store, most fragile first (`after`: the last key)."""
        return self.lib.files_by_store(store_id, limit, after)

    def events(self, limit: int = 100, **filters: Any) -> list[Doc]:
        """One page of the log, newest first unless `newest_first=False` (the filters of
        Library.events; `cursor`: the last `_id` of the previous page)."""
        return self.lib.events(limit, **filters)

    def iter_events(self, **filters: Any) -> Iterator[Doc]:
        """Every matching event (Library.iter_events: keyset paging, oldest first)."""
        return self.lib.iter_events(**filters)

    # --- stores ----------------------------------------------------------------------

    def stores(self) -> list[Doc]:
        return self.lib.stores()

    def store_doc(self, store_id: str) -> Doc | None:
        return self.lib.docs.get_or_none(store_id)

    def resolve_store(self, name: str) -> Doc:
        """A store named by exact ID, unique ID prefix, or label."""
        docs = self.lib.stores()
        for d in docs:
            if d["_id"] == name:
                return d
        by_label = [d for d in docs if d.get("label") == name]
        if len(by_label) == 1:
            return by_label[0]
        if len(by_label) > 1:
            raise UnknownStore(f"{len(by_label)} stores are labelled {name!r}: use the store ID")
        by_prefix = [d for d in docs if name and d["_id"].startswith(name.upper())]
        if len(by_prefix) == 1:
            return by_prefix[0]
        if len(by_prefix) > 1:
            raise UnknownStore(f"store ID prefix {name!r} is ambiguous ({len(by_prefix)} stores)")
        raise UnknownStore(f"unknown store {name!r} (see: dmedia-tui store list)")

    def open_filestore(self, store_id: str, path: str | os.PathLike[str]) -> FileStore | None:
        """The FileStore at path if it is the expected store, else None (a store whose
        layout holds a link is never opened: Presence.open)."""
        return self.presence.open(store_id, path)

    def connected_filestores(self) -> dict[str, FileStore]:
        """Stores connected here now: known folders and mounted drives (presence.py, the
        one rule; the engine asks the same)."""
        return self.presence.connected()

    def filesystem_peers(self, path: Path) -> list[str]:
        """Connected stores of this machine on the same filesystem as path."""
        dev = path.stat().st_dev
        out = []
        for sid, fs in self.connected_filestores().items():
            try:
                if fs.path.stat().st_dev == dev:
                    out.append(sid)
            except OSError:
                continue
        return out

    def init_store(
        self,
        path: str | os.PathLike[str],
        copies: int = 1,
        label: str | None = None,
        same_filesystem: bool = False,
        identity: dict[str, Any] | None = None,
    ) -> tuple[FileStore, Doc, bool]:
        """Create a FileStore at path and record it; returns (fs, doc, created).

        An existing FileStore there is adopted (recorded again and remembered), which is
        how a user re-attaches a library's drive to a new machine.
        """
        folder = Path(path)
        if not folder.is_dir():
            raise MetaStoreError(f"not a folder: {folder}")
        if not 0 <= copies <= MAX_COPIES:
            raise MetaStoreError(f"--copies must be from 0 to {MAX_COPIES}")
        if label is not None and (problem := schema.label_problem(label)):
            raise MetaStoreError(f"invalid --label: {problem}")
        folder = folder.resolve()
        for system in _SYSTEM_FOLDERS:
            if folder.is_relative_to(system):
                raise MetaStoreError(
                    f"{folder} is not a place for a store: {system} is a system filesystem"
                    " (devices, processes, the kernel), not a drive for files"
                )
        for sid, known in self.config.known_stores().items():
            known_path = Path(known)
            if folder != known_path and (
                folder.is_relative_to(known_path) or known_path.is_relative_to(folder)
            ):
                raise MetaStoreError(
                    f"{folder} is inside or around store {store_label(self.store_doc(sid), sid)}"
                    f" at {known_path}: stores cannot nest"
                )
        try:
            existing = FileStore(folder)
        except NotAFileStore:
            existing = None
        except (FileStoreError, OSError) as e:
            raise MetaStoreError(f"cannot use {folder}: {e}") from None
        if existing is not None:
            doc = self.lib.docs.get_or_none(existing.id)
            if doc is None:
                try:
                    total, avail = existing.statvfs()
                except OSError:
                    total, avail = 0, 0
                doc = self._record_again(existing, total, avail)
            self.config.remember_store(existing.id, folder)
            self.relink(existing)
            return existing, doc, False
        peers = self.filesystem_peers(folder)
        if peers and not same_filesystem:
            names = ", ".join(store_label(self.store_doc(s), s) for s in peers)
            raise MetaStoreError(
                f"{folder} is on the same filesystem as store {names}: copies there would not "
                "be independent (use --same-filesystem to insist)"
            )
        if identity is None:
            identity = _drive_identity(folder)
        now = self.now()
        st = os.statvfs(folder)
        fields = {k: v for k, v in identity.items() if v is not None}
        fields.setdefault("removable", False)
        fields.setdefault("internal", not fields["removable"])
        doc = schema.create_store(
            now,
            protocol.random_id(),
            copies=copies,
            label=label or schema.safe_label(folder.name or str(folder)),
            machine_id=self.machine_id,
            bytes_total=st.f_frsize * st.f_blocks,
            bytes_avail=st.f_frsize * st.f_bavail,
            **fields,
        )
        failed_before = self.failed_stores_on_drive(doc)
        if failed_before:
            # The drive returned corrupt data as another store (wiped and re-initialised
            # since): the hardware is the suspect, so the new store starts FAILING too.
            doc["failure"] = {
                "time": now,
                "reason": REASON_DRIVE_FAILED_BEFORE,
                "corrupt_count": 0,
                "acknowledged": False,
                "previous_store_ids": [e["store_id"] for e in failed_before],
            }
            doc["no_new_copies"] = True
        try:
            fs = FileStore.create(folder, doc=doc)
        except (FileStoreError, OSError) as e:
            raise MetaStoreError(f"cannot create a store in {folder}: {e}") from None
        self.lib.docs.save(doc)
        self.config.remember_store(doc["_id"], folder)
        if failed_before:
            self.log_event(
                schema.LOG_STORE_FAILING,
                level=logging.ERROR,
                store_id=doc["_id"],
                reason=REASON_DRIVE_FAILED_BEFORE,
                count=0,
                previous_store_ids=[e["store_id"] for e in failed_before],
                **self._drive_fields(doc["_id"]),
            )
        return fs, doc, True

    def heartbeat(
        self, connected: dict[str, FileStore], peer: dict[str, Any] | None = None
    ) -> set[str]:
        """Refresh this machine's doc and the atime / free space of its connected stores.

        `peer` (the engine's peer identity and addresses) is published in the machine
        doc; without it the doc keeps the `peer` it had.

        Returns the stores that came back: re-recorded after a purge, or whose
        unseen-for-days downgrade was just lifted. Their copies count 0 (or are not
        recorded at all) until verified, so the caller should verify them next.
        """
        now = self.now()
        back: set[str] = set()
        for sid, fs in connected.items():
            try:
                total, avail = fs.statvfs()
            except OSError:
                continue
            before = self.store_doc(sid)
            if before is None:
                # The FileStore is here but the library forgot it (purged): record it again.
                self._record_again(fs, total, avail)
                self.relink(fs)
                back.add(sid)
                continue
            after = self.lib.docs.update(
                sid, transitions.touch_store, now, total, avail, self.machine_id
            )
            if before.get("downgraded") and after is not None and not after.get("downgraded"):
                back.add(sid)
        machine = self.lib.docs.get_or_none(self.machine_id)
        if peer is None and machine is not None and isinstance(machine.get("peer"), dict):
            peer = machine["peer"]
        new = schema.create_machine(
            now, self.machine_id, self.hostname, sorted(connected), peer=peer
        )
        if machine is not None:
            new["_rev"] = machine["_rev"]
            new["time"] = machine.get("time", now)
        self.lib.docs.save(new)
        return back

    def import_destination(self, name: str | None = None) -> FileStore:
        """The connected store an import copies into: the one named, or the one with the
        most free space among those that take new copies (transitions.takes_new_copies,
        the rule the copier and health follow too)."""
        connected = self.connected_filestores()
        if name:
            doc = self.resolve_store(name)
            sid = doc["_id"]
            if sid not in connected:
                raise MetaStoreError(f"store {name} is not connected to this machine")
            if not transitions.takes_new_copies(doc):
                raise MetaStoreError(
                    f"store {store_label(doc)} takes no new copies ({_why_no_copies(doc)}): "
                    f"import into another store, or `dmedia-tui store trust {name}` once the "
                    "drive is checked"
                )
            return connected[sid]
        usable: list[tuple[Doc | None, FileStore]] = []
        refused: list[tuple[Doc | None, FileStore]] = []
        for sid, fs in sorted(connected.items()):
            d = self.store_doc(sid)
            ok = d is not None and transitions.takes_new_copies(d)
            (usable if ok else refused).append((d, fs))
        if not usable:
            if refused:
                names = ", ".join(
                    f"{store_label(d, fs.id)}: {_why_no_copies(d)}" for d, fs in refused
                )
                raise MetaStoreError(
                    f"no connected store takes new copies ({names}): connect another store "
                    "or dmedia-tui store init PATH"
                )
            raise MetaStoreError("no connected store to import into: dmedia-tui store init PATH")
        return max((fs for _, fs in usable), key=lambda fs: fs.statvfs()[1])

    def relink(self, fs: FileStore) -> int:
        """Track again the copies on a re-attached store that the library forgot.

        Each copy whose file doc exists but has no entry for this store gets one worth 0
        and never verified, so it is verified first (as the original Dmedia's relink):
        cheap here (a listing, no hashing), durable once the verify worker reads it.
        """
        n = 0
        for st in fs:
            try:
                doc = self.lib.docs.get_or_none(st.id)
                stored = doc.get("stored") if doc else None
                if doc is None or (isinstance(stored, dict) and fs.id in stored):
                    continue
                if self.lib.docs.update(st.id, transitions.mark_added, fs.id, 0, st.mtime):
                    n += 1
            except (InvalidDoc, ValueError, TypeError) as e:
                self.report_invalid(st.id, e)
        if n:
            log.info("relinked %d copies on store %s", n, fs.id)
        return n

    def _record_again(self, fs: FileStore, total: int, avail: int) -> Doc:
        """Record a store the library forgot (purged) whose FileStore is here again.

        A store that was failing comes back FAILING (no new copies, the banner until
        acknowledged): the mark is read from the drive's store.json and from log-1, where
        a purge cannot erase it. Without a later `store trust`, it is not forgiven.
        """
        now = self.now()
        doc = dict(fs.doc)
        doc.pop("_rev", None)
        doc.pop("failure", None)
        doc.pop("downgraded", None)
        doc["no_new_copies"] = False
        transitions.touch_store(doc, now, total, avail, self.machine_id)
        failure, source = self.remembered_failure(fs.id, fs.doc)
        if failure is not None:
            doc["failure"] = {**failure, "acknowledged": False}
            doc["no_new_copies"] = True
            transitions.downgrade_store(doc, now, transitions.REASON_CORRUPT)
        try:
            self.lib.docs.save(doc)
        except Conflict:  # recorded meanwhile (another machine, another process)
            return self.lib.docs.get(fs.id)
        if failure is not None:
            self.mark_drive(fs, doc["failure"])
            self.log_event(
                schema.LOG_STORE_FAILING,
                level=logging.ERROR,
                store_id=fs.id,
                reason=str(failure.get("reason") or transitions.REASON_CORRUPT),
                count=int(failure.get("corrupt_count") or 0),
                remembered=source,
                **self._drive_fields(fs.id),
            )
        return doc

    def remembered_failure(
        self, store_id: str, store_json: Doc | None = None
    ) -> tuple[Doc | None, str | None]:
        """The failure a store had before the library forgot it, and where it was found
        ("store.json" on the drive or "log-1"); (None, None) when none, or when the user
        trusted the store after it. Cheap: two lookups in the events index."""
        trusted = self.lib.events(1, types=[schema.LOG_STORE_TRUST], store_id=store_id)
        trusted_at = trusted[0].get("time", 0) if trusted else None

        def forgiven(t: Any) -> bool:
            return trusted_at is not None and isinstance(t, int | float) and trusted_at >= t

        mark = (store_json or {}).get("failure")
        if isinstance(mark, dict) and not forgiven(mark.get("time")):
            return dict(mark), "store.json"
        failing = self.lib.events(1, types=[schema.LOG_STORE_FAILING], store_id=store_id)
        if failing and not forgiven(failing[0].get("time")):
            ev = failing[0]
            count = ev.get("count")
            return {
                "time": ev.get("time"),
                "reason": ev.get("reason") if isinstance(ev.get("reason"), str) else "corrupt",
                "corrupt_count": count if isinstance(count, int) and count >= 0 else 0,
            }, LOG_DB
        return None, None

    def failed_stores_on_drive(self, identity: Doc) -> list[Doc]:
        """The newest unforgiven `dmedia/store/failing` event of each other store that was
        on this drive (same partition UUID, or same plausible drive serial)."""
        uuid = identity.get("partition_uuid")
        serial = identity.get("drive_serial")
        serial = serial if isinstance(serial, str) and plausible_serial(serial) else None
        if not uuid and not serial:
            return []
        out: dict[str, Doc] = {}
        # failing events are rare (a few per failed drive, ever): newest first, one each
        for ev in self.lib.iter_events(newest_first=True, types=[schema.LOG_STORE_FAILING]):
            sid = ev.get("store_id")
            if not isinstance(sid, str) or sid == identity.get("_id") or sid in out:
                continue
            same_uuid = (
                uuid
                and isinstance(ev.get("partition_uuid"), str)
                and (ev["partition_uuid"].lower() == str(uuid).lower())
            )
            if same_uuid or (serial and ev.get("drive_serial") == serial):
                out[sid] = ev
        return [ev for sid, ev in sorted(out.items()) if self.remembered_failure(sid)[0]]

    def purged_by_policy(self, store_id: str) -> bool:
        """Did the library forget this store by a policy, not by the user's `store purge`?
        Such a store found again is ours (Presence.purged_by_policy)."""
        return self.presence.purged_by_policy(store_id)

    def mark_drive(self, fs: FileStore | None, failure: Doc | None) -> None:
        """Write the failure mark into the store's own store.json (None clears it); best
        effort: a read-only or vanished drive keeps only the library's record."""
        if fs is None:
            return
        try:
            fs.set_failure(failure)
        except (FileStoreError, OSError) as e:
            log.warning("cannot write the failure mark into %s: %s", fs.path, e)

    # --- import ----------------------------------------------------------------------

    def record_import(
        self, path: Path, fs: FileStore, result: ImportResult, origin: str = "user"
    ) -> tuple[str, bool]:
        """Record a copy that is already durable in fs: a new doc, or a merged location."""
        ch = result.content_hash
        store = self.store_doc(fs.id)
        weight = transitions.store_copies_weight(store) if store else fs.copies
        doc = self.lib.docs.get_or_none(ch.id)
        if doc is None:
            stored = {fs.id: schema.create_stored_value(weight, result.mtime)}
            doc = schema.create_file(self.now(), ch, stored, origin=origin, name=path.name)
            try:
                self.lib.docs.save(doc)
                fault_point("import.doc_saved")
                return ch.id, True
            except Conflict:
                pass  # a concurrent import saved it first: merge below
        self.lib.docs.update(
            ch.id, transitions.merge_import, fs.id, weight, result.mtime, origin, self.now()
        )
        fault_point("import.doc_saved")
        return ch.id, False

    def record_imports(
        self, fs: FileStore, batch: list[tuple[Path, ImportResult]], origin: str = "user"
    ) -> list[tuple[str, bool]]:
        """record_import for a batch of copies already durable in fs, in one write (one
        transaction on SQLite, one _bulk_docs on CouchDB); (file_id, new_to_library) per
        item. A doc another writer changed meanwhile is recorded again on its own."""
        if not batch:
            return []
        store = self.store_doc(fs.id)
        weight = transitions.store_copies_weight(store) if store else fs.copies
        now = self.now()
        ids = list(dict.fromkeys(r.content_hash.id for _, r in batch))
        current = dict(zip(ids, self.lib.docs.get_many(ids), strict=True))
        first: dict[str, tuple[Path, ImportResult]] = {}
        for path, r in batch:
            first.setdefault(r.content_hash.id, (path, r))
        to_save: list[Doc] = []
        created: set[str] = set()
        for fid in ids:
            path, r = first[fid]
            doc = current[fid]
            if doc is None:
                stored = {fs.id: schema.create_stored_value(weight, r.mtime)}
                to_save.append(
                    schema.create_file(now, r.content_hash, stored, origin=origin, name=path.name)
                )
                created.add(fid)
            else:
                merged = transitions.merge_import(doc, fs.id, weight, r.mtime, origin, now)
                if merged is not None:
                    to_save.append(merged)
        retry: set[str] = set()
        for doc, res in zip(to_save, self.lib.docs.save_many(to_save), strict=True):
            if isinstance(res, DatabaseError):
                retry.add(doc["_id"])  # a concurrent writer (Conflict): merged on its own
                created.discard(doc["_id"])
        for fid in sorted(retry):
            path, r = first[fid]
            if self.record_import(path, fs, r, origin)[1]:
                created.add(fid)
        for _ in to_save:
            fault_point("import.doc_saved")  # once per doc, after its batch is saved
        out = []
        for _, r in batch:
            fid = r.content_hash.id
            out.append((fid, fid in created))
            created.discard(fid)  # the same content twice in a batch: new once
        return out

    def import_paths(
        self,
        paths: Iterable[str | os.PathLike[str]],
        fs: FileStore,
        origin: str = "user",
        on_file: Callable[[Path, int], None] | None = None,
    ) -> ImportReport:
        """Import files and folders (recursively); empty files are skipped and counted.

        Uses FileStore.import_batches: a batch of files is written, fsync-ed and renamed
        together while the next is read, and then recorded in one write; a doc is written
        only after its copy is durable.
        """
        report = ImportReport()
        try:  # partial writes a crashed writer left (opening a store never purges)
            fs.purge_tmp()
        except OSError as e:
            log.warning("cannot clean %s: %s", fs.tmp_dir, e)

        def skipped(path: Path, reason: str) -> None:
            report.skipped.append({"path": str(path), "reason": reason})

        # Empty files are found by the import's own fstat (EmptyFile), not by a stat of
        # every file first (a quarter of the walk's cost for small files).
        for batch in fs.import_batches(walk_files(paths, skipped)):
            done: list[tuple[Path, ImportResult]] = []
            for path, result in batch:
                if isinstance(result, EmptyFile):
                    report.empty += 1
                elif isinstance(result, Exception):
                    msg = (
                        result.strerror
                        if isinstance(result, OSError) and result.strerror
                        else result
                    )
                    report.errors.append(f"{path}: {msg}")
                else:
                    done.append((path, result))
            for (path, result), (file_id, new) in zip(
                done, self.record_imports(fs, done, origin), strict=True
            ):
                size = result.content_hash.file_size
                report.files += 1
                report.bytes += size
                report.new += new
                report.duplicates += not new
                report.file_ids.append(file_id)
                if on_file:
                    on_file(path, size)
        return report

    # --- verification ----------------------------------------------------------------

    def record_verified(
        self, verified: list[tuple[str, VerifyResult]]
    ) -> list[tuple[str, str, Exception]]:
        """Record good copies (store_id, OK result) as apply_verify_result does, many docs
        a transaction (Database.update_many) instead of one each. Returns the (store_id,
        file_id, error) of docs that could not be updated (damaged, invalid): the caller
        reports them and sets them aside. A doc that is gone is only logged."""
        failed: list[tuple[str, str, Exception]] = []
        if not verified:
            return failed
        now = self.now()
        by_id: dict[str, list[tuple[str, int]]] = {}
        for sid, r in verified:
            by_id.setdefault(r.file_id, []).append((sid, r.mtime or 0))
        weights = _StoreWeights(self)
        batches = self.lib.docs.update_many(list(by_id), _mark_verified_many, by_id, weights, now)
        for batch in batches:
            weights.clear()
            for fid, e in batch.errors:
                if isinstance(e, NotFound):
                    log.info("verified an untracked copy %s", fid)
                else:
                    failed.extend((sid, fid, e) for sid, _ in by_id[fid])
        return failed

    def record_pulled(self, copies: list[tuple[str, str, int]]) -> set[str]:
        """Record copies pulled from peers, (file_id, store_id, mtime) each, already
        durable in files/, as record_imports does for imports: many docs a transaction
        (Database.update_many). Returns the IDs recorded; a doc that could not be updated
        is logged (its copy stays in files/, unrecorded: the next pull finds it there)."""
        plans: dict[str, list[tuple[str, int]]] = {}
        for file_id, sid, mtime in copies:
            plans.setdefault(file_id, []).append((sid, mtime))
        saved: set[str] = set()
        weights = _StoreWeights(self)
        for batch in self.lib.docs.update_many(list(plans), _mark_added_many, plans, weights):
            weights.clear()
            saved.update(batch.saved)
            for file_id, err in batch.errors:
                log.warning("pulled copy of %s not recorded: %s", file_id, err)
        return saved

    def apply_verify_result(self, fs: FileStore, result: VerifyResult) -> None:
        """Record what FileStore.verify found: verified, corrupt (quarantined, the store
        flagged), missing (forgotten there, unless the whole store went) or unreadable."""
        now = self.now()
        file_id = result.file_id
        if result.status == VerifyStatus.OK:
            by_id = {file_id: [(fs.id, result.mtime or 0)]}
            try:
                self.lib.docs.update(file_id, _mark_verified_many, by_id, _StoreWeights(self), now)
            except NotFound:
                log.info("verified an untracked copy %s on %s", file_id, fs.id)
        elif result.status == VerifyStatus.CORRUPT:
            self.handle_corrupt(fs.id, file_id, result, fs=fs)
        elif result.status == VerifyStatus.MISSING:
            if not fs.still_here():
                # The whole store went (unplugged, unmounted mid-read): not a missing copy.
                log.warning("store %s is gone; %s not marked missing", fs.id, file_id)
                return
            try:
                changed = self.lib.docs.update(file_id, transitions.mark_missing_if_present, fs.id)
            except NotFound:
                changed = None
            if changed is not None:
                fields: dict[str, Any] = {"file_id": file_id, "store_id": fs.id}
                if result.error:
                    fields["reason"] = result.error
                self.log_event(schema.LOG_FILE_MISSING, **fields, **self._drive_fields(fs.id))
        else:
            # Unreadable: neither corrupt nor missing, and never marked verified.
            self.note_io_error(fs.id, file_id, result.error or "unreadable", op="read")

    # --- I/O errors ------------------------------------------------------------------

    def note_io_error(
        self, store_id: str, file_id: str, error: str, op: str = "read", counts: bool = True
    ) -> Doc | None:
        """An I/O error reading (or writing) a copy: logged to log-1 and counted per store.

        Rate-limited per store: the first error is logged at once, later ones are summed
        and logged (as `count`) at most every `io_error_log_interval` seconds, or by
        flush_io_errors. The store doc's `read_errors` {count, first, last} counts them
        within `read_error_window`; health raises READ_ERRORS past `read_error_alert`.
        `counts=False` (a full disk): logged, but it is not the drive failing.
        """
        log.warning("cannot %s %s on store %s: %s (will retry)", op, file_id, store_id, error)
        # One at a time: two workers adding at once lost an error or counted one twice (a
        # flush read the counts while the other added), and two flushes past the alert
        # both flagged the store failing (two events, two downgrade passes at once).
        with self._drive_trouble:
            r = self._read_errors.setdefault(store_id, _ReadErrors())
            r.pending += 1
            r.counted += counts
            r.sample = (file_id, error, op)
            if self.now() - r.last_flush >= self.thresholds.io_error_log_interval:
                return self._flush_io_errors(store_id, r)
            return None

    def flush_io_errors(self) -> list[Doc]:
        """Log and count the I/O errors held back by the rate limit (end of a run)."""
        out = []
        with self._drive_trouble:
            for sid, r in list(self._read_errors.items()):
                if r.pending:
                    ev = self._flush_io_errors(sid, r)
                    if ev is not None:
                        out.append(ev)
        return out

    def _flush_io_errors(self, store_id: str, r: _ReadErrors) -> Doc | None:
        now = self.now()
        file_id, error, op = r.sample
        n, counted = r.pending, r.counted
        r.pending = r.counted = 0
        r.last_flush = now
        store = None
        if counted:
            try:
                store = self.lib.docs.update(
                    store_id, _count_read_errors, counted, now, self.thresholds.read_error_window
                )
            except NotFound:
                pass
        ev = self.log_event(
            schema.LOG_FILE_UNREADABLE,
            file_id=file_id,
            store_id=store_id,
            reason=error,
            op=op,
            count=n,
            **self._drive_fields(store_id),
        )
        if store is not None and _reads_keep_failing(store, self.thresholds.read_error_alert):
            errs = store["read_errors"]
            self.flag_store_failing(
                store_id,
                transitions.REASON_IO_ERRORS,
                [f"{errs['count']} I/O errors since {int(errs['first'])}, the latest: {error}"],
            )
        return ev

    def flag_store_failing(
        self, store_id: str, reason: str, errors: list[str], fs: FileStore | None = None
    ) -> bool:
        """The drive is failing for `reason` (SMART, repeated I/O errors): logged as
        `store/failing`, the store flagged (DRIVE_FAILURE, no new copies; an earlier
        acknowledgement withdrawn), the mark written on the drive, and downgraded.

        The event is logged first: a run killed before the flag logs it again (one
        duplicate) rather than leaving a failing store nobody was told about.
        False when the store is unknown.
        """
        with self._drive_trouble:  # SMART's thread and a worker's I/O errors, at once
            return self._flag_store_failing(store_id, reason, errors, fs)

    def _flag_store_failing(
        self, store_id: str, reason: str, errors: list[str], fs: FileStore | None
    ) -> bool:
        store = self.store_doc(store_id)
        if store is None:
            return False
        now = self.now()
        self.log_event(
            schema.LOG_STORE_FAILING,
            level=logging.ERROR,
            store_id=store_id,
            reason=reason,
            count=0,
            errors=list(errors),
            **self._drive_fields(store_id),
        )
        try:
            flagged = self.lib.docs.update(store_id, transitions.flag_failing, now, reason, 0)
        except NotFound:
            return False
        if flagged is not None:
            if fs is None:
                fs = self.connected_filestores().get(store_id)
            self.mark_drive(fs, flagged.get("failure"))
        store = self.store_doc(store_id)
        if store is not None and (
            transitions.pending_downgrade(store) or not isinstance(store.get("downgraded"), dict)
        ):
            self.downgrade_store(store_id, reason=reason)
        return True

    def handle_corrupt(
        self,
        store_id: str,
        file_id: str,
        result: VerifyResult | None = None,
        fs: FileStore | None = None,
        resumed: bool = False,
    ) -> None:
        """A corrupt copy was found (and already moved to quarantine by the FileStore).

        The file loses that location (and gets a corrupt mark), the event is logged,
        and the store is downgraded at once and flagged failing (no new copies).

        Crash order: the quarantined copy in corrupt/ is the durable record of intent.
        Until the file doc is marked corrupt, `recover_store` finds it there (the doc
        still lists the store) and runs this again (`resumed`); so the store is flagged
        first and the file doc last, and each step is idempotent: resumed, an event the
        crashed run logged already (this quarantine's `file/corrupt`, the store's
        `store/failing` since its failure began) is not logged twice, and one it did
        not log yet is.
        """
        with self._drive_trouble:  # two corrupt copies found at once: one store/failing
            self._handle_corrupt(store_id, file_id, result, fs, resumed)

    def _handle_corrupt(
        self,
        store_id: str,
        file_id: str,
        result: VerifyResult | None,
        fs: FileStore | None,
        resumed: bool,
    ) -> None:
        now = self.now()
        drive = self._drive_fields(store_id)
        where = result.quarantine if result and result.quarantine else None
        if not (resumed and self._corrupt_logged(store_id, file_id, where)):
            self.log_event(
                schema.LOG_FILE_CORRUPT,
                level=logging.ERROR,
                file_id=file_id,
                store_id=store_id,
                quarantine=str(where) if where else None,
                **drive,
            )
        fault_point("corrupt.logged")
        store = self.store_doc(store_id)
        if store is not None:
            failure = store.get("failure")
            flagged = self.lib.docs.update(store_id, transitions.flag_failing, now, "corrupt", 1)
            fault_point("corrupt.flagged")
            if flagged is not None:  # the drive itself remembers it, beyond any purge
                if fs is None:
                    fs = self.connected_filestores().get(store_id)
                self.mark_drive(fs, flagged.get("failure"))
            if not failure or (resumed and not self._failing_logged(store_id, failure)):
                self.log_event(
                    schema.LOG_STORE_FAILING,
                    level=logging.ERROR,
                    store_id=store_id,
                    reason="corrupt",
                    count=1,
                    **drive,
                )
                fault_point("corrupt.failing_logged")
        try:
            self.lib.docs.update(file_id, transitions.mark_corrupt, store_id, now)
        except NotFound:
            pass
        fault_point("corrupt.doc_marked")
        store = self.store_doc(store_id)
        if store is None:
            return
        if transitions.pending_downgrade(store) or not isinstance(store.get("downgraded"), dict):
            self.downgrade_store(store_id, reason="corrupt")
        else:
            # Already downgraded: still make sure no copy on it counts.
            self._zero_copies_on(store_id)

    def _corrupt_logged(self, store_id: str, file_id: str, where: Path | None) -> bool:
        """Is this quarantine (the copy's name in corrupt/) logged as `file/corrupt`?"""
        if where is None:
            return False
        for e in self.lib.events(
            100, types=[schema.LOG_FILE_CORRUPT], store_id=store_id, file_id=file_id
        ):
            q = e.get("quarantine")
            if isinstance(q, str) and Path(q).name == where.name:
                return True
        return False

    def _failing_logged(self, store_id: str, failure: Any) -> bool:
        """Was the store's `store/failing` logged since its failure began?"""
        since = _time_of(failure) if isinstance(failure, dict) else None
        if since is None:
            return True  # a junk failure: not ours to re-announce
        return bool(
            self.lib.events(1, types=[schema.LOG_STORE_FAILING], store_id=store_id, since=since)
        )

    # --- recovery after a crash ------------------------------------------------------

    def recover_store(self, fs: FileStore) -> dict[str, int]:
        """Finish what a crashed writer left half done on a connected store (engine start,
        drive plugged in). Returns counts {tmp, quarantines, adopted, relinked}.

        - partial writes in tmp/ are removed (purge_tmp: dead owners only);
        - a copy both in files/ and in corrupt/ (one inode: a quarantine killed between
          its link and its unlink) loses its files/ name, the corrupt/ one keeping the
          bytes, and is handled as the corrupt copy it is;
        - a copy in corrupt/ whose file doc still lists this store (a crash between the
          quarantine and the docs) is handled as the corrupt copy it is;
        - a failing store left not downgraded is downgraded;
        - copies in files/ the library does not record on this store (a crash between
          the rename into files/ and the doc) are adopted: a known file is relinked
          (counts 0, verified first); an unknown one is verified now and recorded.
        """
        out = {"tmp": 0, "quarantines": 0, "adopted": 0, "relinked": 0, "folders": 0}
        try:
            out["tmp"] = fs.purge_tmp()
        except OSError as e:
            log.warning("cannot clean %s: %s", fs.tmp_dir, e)
        sid = fs.id
        try:
            quarantined = dict(fs.quarantined())  # the last (newest) name of each ID
        except OSError as e:
            log.warning("cannot list %s: %s", fs.corrupt_dir, e)
            quarantined = {}
        for fid, name in quarantined.items():
            where: Path | None = fs.corrupt_dir / name
            if fs.exists(fid):
                try:
                    where = fs.finish_quarantine(fid)
                except OSError as e:
                    log.warning("cannot finish the quarantine of %s on %s: %s", fid, sid, e)
                    continue
                if where is None:
                    continue  # a good copy is back: an old quarantine
            else:
                doc = self.lib.docs.get_or_none(fid)
                stored = doc.get("stored") if isinstance(doc, dict) else None
                if not isinstance(stored, dict) or sid not in stored:
                    continue  # handled already
            log.warning("finishing an interrupted quarantine of %s on store %s", fid, sid)
            self.handle_corrupt(
                sid,
                fid,
                VerifyResult(VerifyStatus.CORRUPT, fid, quarantine=where),
                fs=fs,
                resumed=True,
            )
            out["quarantines"] += 1
        store = self.store_doc(sid)
        if store is not None and store.get("failure") and not store.get("downgraded"):
            self.downgrade_store(sid, reason="corrupt")
        out["adopted"], out["relinked"], out["folders"] = self.adopt_orphans(fs)
        return out

    def adopt_orphans(self, fs: FileStore) -> tuple[int, int, int]:
        """Record the copies in fs that the library does not list on fs:
        (adopted, relinked, folders listed).

        Only the files/XX folders that changed since the library last accounted for
        every copy in them are listed (FoldersSeen, kept on the store): one stat a folder
        when nothing changed. Every folder is listed when there is no such record, when
        the library records fewer copies on the store than it did then (it may have lost
        an entry whose copy is still there), and every FULL_LISTING_EVERY.
        """
        sid = fs.id
        now = int(self.now())
        try:
            stamps = fs.folder_stamps()  # before any listing: a change after is seen next time
            seen = fs.folders_seen()
            recorded = self.lib.verification_stats(sid).copies
            full = (
                seen is None
                or recorded < seen.recorded
                or not 0 <= now - seen.time < FULL_LISTING_EVERY
            )
            folders = sorted(stamps) if full or seen is None else seen.changed(stamps)
            if not folders:
                return 0, 0, 0
            on_disk = set(fs.ids_in(folders))
        except OSError as e:
            log.warning("cannot list store %s: %s", sid, e)
            return 0, 0, 0
        unknown = sorted(on_disk - self.lib.file_ids_on_among(sid, folders))
        adopted = relinked = 0
        for fid in unknown:
            try:
                done = self._adopt(fs, fid)
            except (OSError, FileStoreError) as e:  # a database error ends the recovery
                log.warning("cannot adopt copy %s on store %s: %s", fid, sid, e)
                done = "unread"
            adopted += done == "adopted"
            relinked += done == "relinked"
            if done == "unread":
                stamps[fid[:2]] = ""  # not accounted for: its folder is listed again
        try:
            fs.save_folders_seen(
                FoldersSeen(
                    now if full or seen is None else seen.time,
                    self.lib.verification_stats(sid).copies,
                    stamps,
                )
            )
        except OSError as e:
            log.info("cannot save %s on store %s: %s", FOLDERS_SEEN, sid, e)
        if adopted or relinked:
            log.info("store %s: %d orphan copies adopted, %d relinked", sid, adopted, relinked)
        return adopted, relinked, len(folders)

    def _adopt(self, fs: FileStore, fid: str) -> str | None:
        """Record a copy found in fs that the library does not list there: "adopted" (no
        doc: verified and recorded), "relinked" (a known file: its entry comes back with
        counts 0, to be verified first), "unread" (an I/O error: still there, still
        unknown, to be tried again), or None (corrupt or gone: handled as any verify
        result; or the entry was back already)."""
        sid = fs.id
        doc = self.lib.docs.get_or_none(fid)
        if doc is not None:
            if self.lib.docs.update(fid, _relink_entry, sid, fs.stat(fid).mtime):
                return "relinked"
            return None
        result = fs.verify(fid)
        if result.status != VerifyStatus.OK or result.content_hash is None:
            self.apply_verify_result(fs, result)
            return "unread" if result.status == VerifyStatus.UNREADABLE else None
        store = self.store_doc(sid)
        weight = transitions.store_copies_weight(store) if store else 0
        stored = {sid: schema.create_stored_value(weight, result.mtime or 0, self.now())}
        new = schema.create_file(self.now(), result.content_hash, stored, origin="user")
        try:
            self.lib.docs.save(new)
        except Conflict:
            self.lib.docs.update(fid, _relink_entry, sid, result.mtime or 0)
            return "relinked"
        log.warning("adopted copy %s found on store %s without a doc", fid, sid)
        return "adopted"

    def copies_due(self, store_id: str, limit: int = 100) -> list:
        before = int(self.now()) - self.thresholds.verify_due_after
        return self.lib.copies_due(store_id, before, limit)

    # --- copy-making -----------------------------------------------------------------

    def destinations(
        self,
        doc: Doc,
        connected: dict[str, FileStore],
        store_docs: dict[str, Doc | None] | None = None,
        space: dict[str, tuple[int, int] | None] | None = None,
    ) -> list[FileStore]:
        """Connected, trusted stores without this file and with room for it, emptiest first.

        `store_docs`: store docs already read in this batch (filled as they are read), so
        a batch of a thousand small files reads each store doc once, not once a file.
        `space`: the batch's (bytes_total, bytes_avail) per store that takes new copies
        (None: it does not, or statvfs failed), filled as stores are first met; the
        caller takes each copy it stages off its destination's bytes_avail (a statvfs
        and a store doc check a file and store were ~6% of a small file's copy).
        """
        size = doc.get("bytes", 0)
        stored = stored_ if isinstance(stored_ := doc.get("stored"), dict) else {}
        corrupt = corrupt_ if isinstance(corrupt_ := doc.get("corrupt"), dict) else {}
        out = []
        for sid, fs in connected.items():
            if sid in stored or sid in corrupt:
                continue
            if space is not None and sid in space:
                room = space[sid]
            else:
                room = None
                if transitions.takes_new_copies(self._store_doc_in(sid, store_docs)):
                    with contextlib.suppress(OSError):
                        room = fs.statvfs()
                if space is not None:
                    space[sid] = room
            if room is None:
                continue
            total, avail = room
            if avail - size < self.thresholds.reserve_for(total):
                continue
            out.append((avail, sid, fs))
        out.sort(key=lambda t: (-t[0], t[1]))
        return [fs for _, _, fs in out]

    def _store_doc_in(self, sid: str, cache: dict[str, Doc | None] | None) -> Doc | None:
        """store_doc(sid), through `cache` when one is given (one batch's reads)."""
        if cache is None:
            return self.store_doc(sid)
        if sid not in cache:
            cache[sid] = self.store_doc(sid)
        return cache[sid]

    def make_copy(
        self, doc: Doc, connected: dict[str, FileStore], progress: Progress | None = None
    ) -> int:
        """Bring one file toward the target; returns the number of new copies written."""
        result = self.make_copies([doc], connected, lambda _i, _d: progress)[0]
        if isinstance(result, Exception):
            raise result
        return result

    def make_copies(
        self,
        docs: list[Doc],
        connected: dict[str, FileStore],
        progress_for: Callable[[int, Doc], Progress | None] | None = None,
    ) -> list[int | Exception]:
        """Bring many files toward the target as one batch; per doc the number of new
        copies written, or the exception that file met (the others go on).

        Each file is read once (verifying its source) into its destinations' tmp/; then
        the batch's copies are fsync-ed, renamed and their folders fsync-ed together
        (filestore.commit_staged), and only then recorded, a transaction per batch
        (Database.update_many): a crash never leaves a doc claiming a copy not on disk.
        `progress_for(i, doc)` gives the progress callback for the i-th file (it may
        raise to abandon the batch: then nothing of it is committed).
        """
        with held_dirs_of(connected.values()):  # each folder walked once per batch
            return self._make_copies(docs, connected, progress_for)

    def _make_copies(
        self,
        docs: list[Doc],
        connected: dict[str, FileStore],
        progress_for: Callable[[int, Doc], Progress | None] | None,
    ) -> list[int | Exception]:
        out: list[int | Exception] = [0] * len(docs)
        staged: list[tuple[int, str, FileStore, Any]] = []  # (i, file_id, src, CopyResult)
        verified: list[tuple[str, VerifyResult]] = []  # sources read OK, nothing new
        aborted: list[BaseException] = []
        store_docs: dict[str, Doc | None] = {}  # read once for the batch
        space: dict[str, tuple[int, int] | None] = {}  # destinations(): once for the batch

        def guarded(progress: Progress | None) -> Progress | None:
            if progress is None:
                return None

            def call(n: int) -> None:
                try:
                    progress(n)
                except BaseException as e:
                    aborted.append(e)
                    raise

            return call

        try:
            for i, doc in enumerate(docs):
                try:
                    p = guarded(progress_for(i, doc) if progress_for else None)
                    got = self._stage_copy(doc, connected, p, store_docs, space)
                except Exception as e:  # one bad file must not stop the batch...
                    if aborted:
                        raise  # ...but the caller abandoning it does
                    out[i] = e
                    continue
                if got is not None:
                    staged.append((i, doc["_id"], *got))
            items = [(tmp, fid) for _, fid, _, r in staged for tmp in r.staged.values()]
        except BaseException:
            for _, _, _, r in staged:
                for tmp in r.staged.values():
                    tmp.discard()
            raise
        committed = iter(commit_staged(items, "copy"))
        now = self.now()
        plans: dict[str, tuple[str, Any, dict[str, int]]] = {}
        index: dict[str, int] = {}
        for i, file_id, src, r in staged:
            written = dict(r.written)
            failed = dict(r.failed)
            for sid in r.staged:
                c = next(committed)
                if isinstance(c, OSError):
                    failed[sid] = error_text(c)
                else:
                    written[sid] = c[0]
            fault_point("copy.written")
            for sid, err in failed.items():
                log.warning("copy of %s to store %s failed: %s", file_id, sid, err)
                full = any(f"({name})" in err for name in _FULL)
                self.note_io_error(sid, file_id, err, op="write", counts=not full)
            if not written:
                verified.append((src.id, r.source))
                continue
            plans[file_id] = (src.id, r.source.mtime, written)
            index[file_id] = i
        for _sid, fid, err in self.record_verified(verified):
            self.report_invalid(fid, err)
        if plans:
            weights = _StoreWeights(self)  # read in each write: an error above may flag one
            batches = self.lib.docs.update_many(list(plans), _mark_copied_many, plans, weights, now)
            for batch in batches:
                weights.clear()
                for fid, err in batch.errors:
                    out[index[fid]] = err
                for fid in batch.saved:
                    out[index[fid]] = len(plans[fid][2])
                    fault_point("copy.doc_saved")
        return out

    def _stage_copy(
        self,
        doc: Doc,
        connected: dict[str, FileStore],
        progress: Progress | None,
        store_docs: dict[str, Doc | None] | None = None,
        space: dict[str, tuple[int, int] | None] | None = None,
    ) -> tuple[FileStore, Any] | None:
        """Read one file from a good source into the destinations it needs (staged, not
        committed): (source, CopyResult), or None when there is nothing to copy."""
        file_id = doc["_id"]
        need = self.thresholds.target_copies - durability(doc)
        if need <= 0:
            return None
        stored = stored_ if isinstance(stored_ := doc.get("stored"), dict) else {}
        sources = [
            connected[s]
            for s in sorted(stored, key=lambda s: -copies_of(stored[s]))
            if s in connected
        ]
        dsts_all = self.destinations(doc, connected, store_docs, space)
        dsts: list[FileStore] = []
        gained = 0
        for fs in dsts_all:
            if gained >= need:
                break
            dsts.append(fs)
            gained += max(1, fs.copies)
        if not sources or not dsts:
            return None
        for src in sources:
            result = src.copy_to(file_id, dsts, progress=progress, commit=False)
            if result.source.status != VerifyStatus.OK:
                self.sources_lost += 1
                self.apply_verify_result(src, result.source)
                for cache in (store_docs, space):
                    if cache is not None:  # a corrupt copy flags its store: read it again
                        cache.pop(src.id, None)
                continue  # corrupt / missing / unreadable source: try the next one
            size = result.source.content_hash.file_size if result.source.content_hash else 0
            for sid in result.staged:
                if space is not None and (room := space.get(sid)) is not None:
                    space[sid] = (room[0], room[1] - size)  # the batch's own writes
            return src, result
        return None

    # --- time policies ---------------------------------------------------------------

    def run_time_policies(self, online: set[str]) -> list[Doc]:
        """Finish interrupted purges and downgrades (finish_interrupted), downgrade stores
        unseen for 3 days, purge those unseen for 8; purge orphans.

        Returns the log docs written.
        """
        events = self.finish_interrupted()
        obs = self.observe(persist=True)
        now = self.now()
        t = self.thresholds
        # Stores another machine lists: never acted on while its doc just changed (or we
        # have not watched it for heartbeat_fresh), and aged from its heartbeat as we saw
        # it, whatever its clock or ours says (liveness.py).
        protected: set[str] = set()
        listed_at: dict[str, float] = {}
        for m in self.lib.machines():
            listed = m.get("stores")
            if m.get("_id") == self.machine_id or not isinstance(listed, list):
                continue
            eff = obs.effective_atime(m, now) or 0.0
            settled = obs.settled(m, now, t.heartbeat_fresh)
            for sid in listed:
                if protocol.is_store_id(sid):
                    listed_at[sid] = max(listed_at.get(sid, 0.0), eff)
                    if not settled:
                        protected.add(sid)
        stores = self.lib.stores()
        for store in stores:
            sid = store.get("_id")
            if not protocol.is_store_id(sid):
                self.report_invalid(sid, "store doc with an invalid _id")
                continue  # one bad doc never stops the policies for the others
            if sid in online or sid in protected:
                continue
            atime = max(obs.effective_atime(store, now) or 0.0, listed_at.get(sid, 0.0))
            age = now - atime
            try:
                if age >= t.store_purge_after:
                    events.append(self.purge_store(sid, reason="atime"))
                elif age >= t.store_downgrade_after and not store.get("downgraded"):
                    events.append(self.downgrade_store(sid, reason="atime"))
            except (InvalidDoc, schema.SchemaError, ValueError, TypeError) as e:
                self.report_invalid(sid, e)
        known = {s.get("_id") for s in self.lib.stores()}
        for row in self.lib.placement_summary():
            for sid, _copies in parse_placement(row.placement):
                if sid not in known and protocol.is_store_id(sid):
                    known.add(sid)
                    n = self._purge_entries(sid)
                    events.append(
                        self.log_event(
                            schema.LOG_STORE_PURGE,
                            store_id=sid,
                            reason="store_doc_missing",
                            count=n,
                        )
                    )
        # Verification ages move by the day: once an hour is plenty, and keeps an idle
        # engine's housekeeping to a few index lookups.
        if now - self._last_unverified_pass >= 3600:
            self._last_unverified_pass = now
            events.extend(self.downgrade_unverified(online, skip=set(listed_at)))
        return events

    def downgrade_unverified(self, online: set[str], skip: set[str] | None = None) -> list[Doc]:
        """Copies not verified for 30 days count 0 until verified again.

        `skip`: stores another machine lists as connected. Their `verified` times were
        written by that machine's clock and it verifies them itself, so it judges them.

        A store whose oldest verification is recent enough is skipped on the strength of
        its verification stats, so the common pass costs one cheap query per store.
        """
        before = int(self.now()) - self.thresholds.verify_downgrade_after
        out = []
        for store in self.lib.stores():
            sid = store.get("_id")
            if not protocol.is_store_id(sid) or sid in (skip or ()):
                continue  # reported by run_time_policies / another machine's to judge
            oldest = self.lib.verification_stats(sid).oldest
            if oldest is None or oldest >= before:
                continue
            # Never-verified copies are judged by the verify worker first.
            due = self.lib.copies_due(sid, before, limit=100000)
            ids = [d.file_id for d in due if d.verified is not None]
            n = self._set_all(ids, sid, SET_DOWNGRADE, "downgrade.unverified")
            if n:
                out.append(
                    self.log_event(
                        schema.LOG_STORE_DOWNGRADE,
                        store_id=sid,
                        reason="unverified",
                        count=n,
                        scope="copies",
                    )
                )
        return out

    # --- user actions (CLI and TUI) --------------------------------------------------

    def preview(self, action: StoreAction | str, store_id: str) -> ActionPreview:
        """What an action on the store would change (counts only; changes nothing)."""
        verb = action.verb if isinstance(action, StoreAction) else action
        store = self.store_doc(store_id)
        files = copies = only = 0
        for doc in self.iter_files_on(store_id):
            files += 1
            copies += copies_of(doc["stored"].get(store_id))
            if file_origin(doc) == "user" and len(doc.get("stored") or {}) == 1:
                only += 1
        return ActionPreview(verb, store_id, store_label(store, store_id), files, copies, only)

    def run_action(
        self, action: StoreAction | str, store_id: str, progress: StoreProgress | None = None
    ) -> Doc | None:
        """Run a user's store action (actions.py: the CLI and the app both come here), with
        the user as its reason; the event it logged (None: nothing to log). `progress`:
        called as a store-wide action (`store_wide`) goes through the store's files."""
        a = store_action(action)
        if a.operation is None:
            raise MetaStoreError(f"{a.verb} is not an operation on a store")
        operation: Callable[..., Doc | None] = getattr(self, a.operation)
        if a.store_wide and progress is not None:
            return operation(store_id, progress=progress)
        return operation(store_id)

    def files_on(self, store_id: str) -> int:
        """Files with an entry for the store (every origin), from the placement summary:
        the `total` a store-wide action's progress counts up to."""
        return self._entries_on(store_id)[0]

    def downgrade_store(
        self, store_id: str, reason: str = "user", progress: StoreProgress | None = None
    ) -> Doc:
        """Every copy on the store counts 0 (locations still tracked); logged.

        Crash order: the store is marked downgraded first (a copy recorded meanwhile
        already counts 0), with the ID its event will have and `pending`; the copies are
        zeroed a batch at a time; the event is logged under that ID; `pending` is cleared
        last. Killed anywhere, the mark stays pending and finish_interrupted (every
        housekeeping pass, `daemon --once`) finishes the job: one event, however many runs.
        """
        now = self.now()
        store = self.store_doc(store_id)
        if store is None:
            raise UnknownStore(f"unknown store {store_id}")
        mark = transitions.pending_downgrade(store)
        if mark is None and not isinstance(store.get("downgraded"), dict):
            _, counting = self._entries_on(store_id)
            event = protocol.log_id(now)
            try:
                self.lib.docs.update(
                    store_id, transitions.downgrade_store, now, reason, event, counting
                )
            except NotFound:
                raise UnknownStore(f"unknown store {store_id}") from None
            fault_point("downgrade.store_marked")
            mark = transitions.pending_downgrade(self.store_doc(store_id))
        if mark is not None:
            return self._finish_downgrade(store_id, mark, progress)
        # Downgraded (and finished) already: nothing may count there; this request is logged.
        n = self._zero_copies_on(store_id, progress)
        return self.log_event(
            schema.LOG_STORE_DOWNGRADE,
            store_id=store_id,
            reason=reason,
            count=n,
            **self._drive_fields(store_id),
        )

    def _finish_downgrade(
        self, store_id: str, mark: Doc, progress: StoreProgress | None = None
    ) -> Doc:
        """Zero the copies of a pending downgrade, log its event (once), clear `pending`."""
        n = self._zero_copies_on(store_id, progress)
        fault_point("downgrade.files_done")
        event = self._log_marked(
            schema.LOG_STORE_DOWNGRADE, store_id, mark, n, self._drive_fields(store_id)
        )
        fault_point("downgrade.logged")
        try:
            self.lib.docs.update(store_id, transitions.downgrade_done, mark["event"])
        except NotFound:
            pass  # purged meanwhile: nothing left to clear
        return event

    def _log_marked(
        self, event_type: str, store_id: str, mark: Doc, n: int, fields: dict[str, Any]
    ) -> Doc:
        """Log the event a store mark promised, under the ID and time the mark chose (a
        rerun finds it logged). Its count is the one taken when the operation began, unless
        the copies found now are more."""
        count = mark.get("count")
        return self.log_event(
            event_type,
            log_id=mark["event"],
            at=_time_of(mark),
            store_id=store_id,
            reason=str(mark.get("reason") or transitions.REASON_USER),
            count=count if type(count) is int and count >= n else n,
            **fields,
        )

    def purge_store(
        self,
        store_id: str,
        reason: str = "user",
        progress: StoreProgress | None = None,
        **extra: Any,
    ) -> Doc:
        """Forget a store: remove it from every file and delete its doc. Files on disk stay.

        Crash order: the store doc is marked `purging` first (with the ID, count and fields
        of its event), every file forgets the store a batch at a time, the event is logged
        under that ID, this machine forgets the store's folder, and the store doc is
        deleted last. Killed anywhere, the mark stays and finish_interrupted finishes the
        purge: one event, however many runs.
        """
        now = self.now()
        store = self.store_doc(store_id)
        mark = transitions.pending_purge(store)
        if store is not None and mark is None:
            fields = {**self._drive_fields(store_id), **extra}
            fields = {k: v for k, v in fields.items() if v is not None}
            entries, _ = self._entries_on(store_id)
            event = protocol.log_id(now)
            try:
                self.lib.docs.update(
                    store_id, transitions.begin_purge, now, reason, event, entries, fields
                )
            except NotFound:
                pass
            fault_point("purge.store_marked")
            mark = transitions.pending_purge(self.store_doc(store_id))
        if mark is not None:
            return self._finish_purge(store_id, mark, progress)
        # No store doc to mark (gone already): forget what still names the store.
        n = self._purge_entries(store_id, progress)
        self.config.forget_store(store_id)
        fields = {k: v for k, v in extra.items() if v is not None}
        return self.log_event(
            schema.LOG_STORE_PURGE, store_id=store_id, reason=reason, count=n, **fields
        )

    def _finish_purge(self, store_id: str, mark: Doc, progress: StoreProgress | None = None) -> Doc:
        """Every file forgets the store, the event is logged (once), the doc goes last."""
        n = self._purge_entries(store_id, progress)
        fault_point("purge.files_done")
        stored = mark.get("fields")
        fields = {
            k: v
            for k, v in (stored if isinstance(stored, dict) else {}).items()
            if k not in _EVENT_OWN_FIELDS
        }
        event = self._log_marked(schema.LOG_STORE_PURGE, store_id, mark, n, fields)
        fault_point("purge.logged")
        self.config.forget_store(store_id)
        fault_point("purge.forgotten")
        for _ in range(20):
            store = self.store_doc(store_id)
            if store is None:
                break
            try:
                self.lib.docs.delete(store)
                break
            except NotFound:
                break
            except Conflict:
                continue  # touched meanwhile (a heartbeat): delete the new revision
        fault_point("purge.store_deleted")
        return event

    def finish_interrupted(self) -> list[Doc]:
        """Finish the store operations a crash (or a kill) left half done; the events logged.

        - a store marked `purging` is purged (its files forget it, its event, its doc);
        - a downgrade still `pending` is finished (copies zeroed, its event logged once);
        - a downgraded store on which copies still count (a downgrade interrupted before
          it recorded its intent, or a copy recorded with the weight read just before the
          downgrade) has them zeroed, and its event logged if none was since it began.

        Run by every housekeeping pass (and so by `daemon --once`), whether the store is
        connected or not; cheap when nothing is left: the store docs and the placement
        summary, no file doc.
        """
        events: list[Doc] = []
        stores = self.lib.stores()
        finished: set[str] = set()
        for store in stores:
            sid = store.get("_id")
            if not protocol.is_store_id(sid):
                continue  # reported by run_time_policies
            try:
                purge = transitions.pending_purge(store)
                if purge is not None:
                    log.warning("finishing the interrupted purge of store %s", sid)
                    events.append(self._finish_purge(sid, purge))
                    finished.add(sid)
                    continue
                mark = transitions.pending_downgrade(store)
                if mark is not None:
                    log.warning("finishing the interrupted downgrade of store %s", sid)
                    events.append(self._finish_downgrade(sid, mark))
                    finished.add(sid)
            except (InvalidDoc, schema.SchemaError, ValueError, TypeError) as e:
                self.report_invalid(sid, e)
        downgraded = {
            s["_id"]: s["downgraded"]
            for s in stores
            if protocol.is_store_id(s.get("_id"))
            and s["_id"] not in finished
            and isinstance(s.get("downgraded"), dict)
        }
        if not downgraded:
            return events
        counting: set[str] = set()
        for row in self.lib.placement_summary():
            counting.update(
                sid
                for sid, copies in parse_placement(row.placement)
                if copies and sid in downgraded
            )
        for sid in sorted(counting):
            mark = downgraded[sid]
            n = self._zero_copies_on(sid)
            log.warning("store %s is downgraded, yet %d copies on it counted: now 0", sid, n)
            since = _time_of(mark)
            if n and not self.lib.events(
                1, types=[schema.LOG_STORE_DOWNGRADE], store_id=sid, since=since
            ):
                events.append(
                    self.log_event(
                        schema.LOG_STORE_DOWNGRADE,
                        store_id=sid,
                        reason=str(mark.get("reason") or transitions.REASON_USER),
                        count=n,
                        **self._drive_fields(sid),
                    )
                )
        return events

    def acknowledge_failure(self, store_id: str) -> Doc | None:
        store = self.store_doc(store_id)
        if store is None:
            raise UnknownStore(f"unknown store {store_id}")
        if not store.get("failure"):
            raise MetaStoreError(f"store {store_label(store)} has no failure to acknowledge")
        self.lib.docs.update(store_id, transitions.acknowledge_failure, self.now())
        return self.log_event(schema.LOG_STORE_ACK, level=logging.INFO, store_id=store_id)

    def trust_store(self, store_id: str) -> Doc:
        if self.store_doc(store_id) is None:
            raise UnknownStore(f"unknown store {store_id}")
        self.lib.docs.update(store_id, transitions.trust_store)
        # The log's trust event forgives the failure library-wide; the drive's own mark
        # is cleared when it is here (otherwise its newer trust event wins when it returns).
        self.mark_drive(self.connected_filestores().get(store_id), None)
        return self.log_event(schema.LOG_STORE_TRUST, level=logging.INFO, store_id=store_id)

    # --- schema and consistency check (checker.py) ----------------------------------

    def check(self, page_size: int = 5000, storage: bool = False) -> CheckReport:
        return self.checker.check(page_size, storage)

    def check_if_due(self, full: bool = False) -> CheckReport:
        return self.checker.check_if_due(full)

    def metadata_problems(self) -> dict[str, int]:
        return self.checker.metadata_problems()

    # --- health ----------------------------------------------------------------------

    # --- other machines, judged by what we saw change (liveness.py) ------------------

    def observe(self, persist: bool = False) -> Observations:
        """Look at every other machine doc and store doc and remember which revisions we
        saw when (by this machine's clock). Only the engine's rounds persist what they saw
        (`persist=True`: data dir, observed.json); read-only commands only read it."""
        from dmedia_tui.liveness import Observations

        with self._obs_lock:
            if self._obs is None:
                self._obs = Observations.load(self.config.data_dir / "observed.json")
            me = self.config.known_machine_id()
            docs = [m for m in self.lib.machines() if m.get("_id") != me]
            self._obs.observe([*docs, *self.lib.stores()], self.now())
            if persist:
                try:
                    self._obs.save(self.config.data_dir / "observed.json")
                except OSError as e:
                    log.warning("cannot remember observed machines: %s", e)
            return self._obs

    def _judged_machines(self, obs: Observations) -> list[Doc]:
        """Machine docs with heartbeats in our clock: future ones clamped (liveness.py)."""
        now = self.now()
        me = self.config.known_machine_id()
        return [m if m.get("_id") == me else obs.judged([m], now)[0] for m in self.lib.machines()]

    def online(self, local: Iterable[str], persist: bool = False) -> set[str]:
        """`local` (this machine's connected stores) plus those other machines see now
        (judged by what this machine saw change: liveness.py)."""
        from dmedia_tui import health as health_mod

        obs = self.observe(persist)
        return health_mod.online_store_ids(
            self._judged_machines(obs),
            self.now(),
            self.thresholds,
            set(local),
            self.config.known_machine_id(),
        )

    def health(self, local: Iterable[str] | None = None, with_verification: bool = False):
        """Assess the library now, as this machine sees it.

        This machine's own stores are judged by the disk now, never by its last heartbeat:
        a store is local when its FileStore is at its folder now (`local`, when given by a
        caller that tracks connections, is narrowed to those), and the free space of each
        is read now (statvfs), not from the store doc. Other machines' stores are online
        by their heartbeat, as this machine saw it arrive (liveness.py).
        """
        from dmedia_tui import health as health_mod

        me = self.config.known_machine_id()  # a machine without an ID has no stores yet
        present = self.connected_filestores()
        if local is not None:
            wanted = set(local)
            present = {sid: fs for sid, fs in present.items() if sid in wanted}
        obs = self.observe()
        now = self.now()
        stores = obs.judged(
            [self._live_store(doc, present.get(doc["_id"])) for doc in self.lib.stores()], now
        )
        machines = self._judged_machines(obs)
        unreachable = self.peer_outages()
        online = health_mod.online_store_ids(
            machines, now, self.thresholds, set(present), me, unreachable
        )
        verification = (
            {s["_id"]: self._verification_stats(s["_id"]) for s in stores}
            if with_verification
            else None
        )
        h = health_mod.assess(
            self.lib.placement_summary(),
            stores,
            machines,
            now,
            online,
            self.thresholds,
            verification=verification,
            metadata_problems=self.metadata_problems(),
            shared_filesystems=health_mod.shared_filesystems(stores),
            machine_id=me,
            unreachable=unreachable,
        )
        h = health_mod.store_safety_alerts(h, self.unsafe_stores, stores, now, self.thresholds)
        others = [m for m in self.lib.machines() if m.get("_id") != me]
        skews = [(s.hostname, s.seconds) for s in obs.skews(others, now)]
        return health_mod.with_clock_skew(h, skews)

    def peer_outages(self, limit: int = 500) -> dict[str, str]:
        """Peers this machine could not reach when it last tried (machine ID -> the address
        tried), from the newest `dmedia/peer/unreachable|reachable` events it logged. Rare
        events (one per outage), so the newest `limit` cover every peer in practice."""
        me = self.config.known_machine_id()
        if me is None:
            return {}
        try:
            events = self.lib.events(
                limit, types=[schema.LOG_PEER_UNREACHABLE, schema.LOG_PEER_REACHABLE]
            )
        except Exception as e:  # an unreadable log must not stop the assessment
            log.warning("cannot read peer outages from log-1: %s", e)
            return {}
        out: dict[str, str] = {}
        decided: set[str] = set()
        for ev in events:  # newest first: the first event about a peer decides
            peer = ev.get("peer")
            if ev.get("machine_id") != me or not isinstance(peer, str) or peer in decided:
                continue
            decided.add(peer)
            if ev.get("type") == schema.LOG_PEER_UNREACHABLE:
                address = ev.get("address")
                out[peer] = address if isinstance(address, str) else ""
        return out

    def space(self, fs: FileStore) -> tuple[int, int]:
        """(bytes_total, bytes_avail) of the store's filesystem now. A seam like the clock:
        screens pinned for snapshot tests replace it on the instance."""
        return fs.statvfs()

    def _live_store(self, doc: Doc, fs: FileStore | None) -> Doc:
        """The store doc with the free space of its filesystem now, when it is here: a
        disk filled outside dmedia-tui shows at once, without waiting for a heartbeat."""
        if fs is None:
            return doc
        try:
            total, avail = self.space(fs)
        except OSError:
            return doc
        return {**doc, "bytes_total": total, "bytes_avail": avail}

    VERIFICATION_STATS_TTL = 30.0

    def _verification_stats(self, store_id: str):
        """Verification ages change slowly and cost a few index lookups per store (the
        median from the backend's per-hour counts on SQLite, a skip on CouchDB), so the
        dashboard's frequent refreshes reuse them for 30 s."""
        now = time.monotonic()
        hit = self._vstats_cache.get(store_id)
        if hit is not None and now - hit[0] < self.VERIFICATION_STATS_TTL:
            return hit[1]
        stats = self.lib.verification_stats(store_id)
        self._vstats_cache[store_id] = (now, stats)
        return stats

    def files_for_alert(self, alert: Any, limit: int = 200) -> list[Doc]:
        """Up to `limit` user files an alert is about (its placement groups), by ID."""
        out: list[Doc] = []
        for placement in getattr(alert, "placements", ()):
            if len(out) >= limit:
                break
            out.extend(self.lib.files_by_placement(placement, limit=limit - len(out)))
        return out

    # --- helpers ---------------------------------------------------------------------

    def _drive_fields(self, store_id: str) -> dict[str, Any]:
        store = self.store_doc(store_id) or {}
        return {
            k: store[k]
            for k in ("label", "drive_serial", "drive_model", "partition_uuid")
            if store.get(k) is not None
        }

    def iter_files_on(self, store_id: str, page_size: int = 1000) -> Iterator[Doc]:
        """Every file doc with an entry for the store, most fragile first, a page at a time."""
        after = None
        while True:
            page = self.lib.files_by_store(store_id, limit=page_size, after=after)
            yield from page
            if len(page) < page_size:
                return
            after = (rank(page[-1]), page[-1]["_id"])

    def _entries_on(self, store_id: str) -> tuple[int, int]:
        """(files with an entry for the store, those whose copy there counts), from the
        placement summary alone (every origin): what a purge or a downgrade will change."""
        entries = counting = 0
        for row in self.lib.placement_summary():
            for sid, copies in parse_placement(row.placement):
                if sid == store_id:
                    entries += row.count
                    counting += row.count if copies else 0
        return entries, counting

    def _zero_copies_on(self, store_id: str, progress: StoreProgress | None = None) -> int:
        ids = self.lib.iter_file_ids_on(store_id)
        return self._set_all(ids, store_id, SET_DOWNGRADE, "downgrade.file", progress)

    def _purge_entries(self, store_id: str, progress: StoreProgress | None = None) -> int:
        ids = self.lib.iter_file_ids_on(store_id)
        return self._set_all(ids, store_id, SET_PURGE, "purge.file", progress)

    def _set_all(
        self,
        ids: Iterable[str],
        store_id: str,
        op: str,
        fault: str,
        progress: StoreProgress | None = None,
    ) -> int:
        """Downgrade (copies count 0) or purge (entry removed) the store's entry in every
        doc of `ids`, as a set operation where the backend can (update_store_entries):
        the same docs as transitions.downgrade_store_in_file / purge_store_in_file
        would write. A doc that cannot be updated is reported and skipped, never the
        end of the pass.

        The fault point is passed once per changed doc, after its batch is committed:
        `name@N` kills right after the batch holding the N-th change, so a crash test
        lands on a batch boundary (every doc before or after, never half).
        """
        if progress is None and self.store_pass is not None:
            verb = "purge" if op == SET_PURGE else "downgrade"
            with self.store_pass(verb, store_id) as shown:
                return self._set_all(ids, store_id, op, fault, shown)
        fn = (
            transitions.purge_store_in_file
            if op == SET_PURGE
            else transitions.downgrade_store_in_file
        )
        total = (len(ids) if isinstance(ids, list) else self.files_on(store_id)) if progress else 0
        seen = 0

        def taken() -> Iterator[str]:
            nonlocal seen
            for file_id in ids:
                seen += 1
                yield file_id

        n = 0
        for batch in self.lib.docs.update_store_entries(taken(), store_id, op, fn):
            for fid, e in batch.errors:
                self.report_invalid(fid, e)
            for _ in batch.saved:
                n += 1
                fault_point(fault)
            if progress:  # the files the batches done so far took
                progress(seen, max(total, seen))
        if progress:
            progress(seen, seen)  # done: however many there turned out to be
        return n


def _log_line(event_type: str, level: int, fields: dict[str, Any]) -> None:
    """An event logged to log-1, as a line of Python logging too."""
    detail = " ".join(f"{k}={v}" for k, v in fields.items() if k != "errors")
    log.log(level, "%s %s", event_type, detail)


class _StoreWeights:
    """What a copy on each store counts (its weight: 0 once downgraded), read inside the
    write that records the copy (the update's fn runs in its transaction on SQLite, and
    again after a conflict on CouchDB), once per store and batch: the caller clears it
    after each batch. Read before the write, a downgrade committed in between was
    overwritten, and the copy counted on a store just downgraded."""

    def __init__(self, ms: MetaStore) -> None:
        self._ms = ms
        self._seen: dict[str, int] = {}

    def __call__(self, store_id: str) -> int:
        if store_id not in self._seen:
            store = self._ms.store_doc(store_id)
            self._seen[store_id] = transitions.store_copies_weight(store) if store else 0
        return self._seen[store_id]

    def clear(self) -> None:
        self._seen.clear()


def _mark_verified_many(
    doc: Doc, by_id: dict[str, list[tuple[str, int]]], weight: _StoreWeights, now: float
) -> Doc | None:
    for sid, mtime in by_id.get(doc.get("_id"), ()):  # type: ignore[arg-type]
        doc = transitions.mark_verified(doc, sid, weight(sid), mtime, now) or doc
    return doc


def _mark_added_many(
    doc: Doc, plans: dict[str, list[tuple[str, int]]], weight: _StoreWeights
) -> Doc | None:
    for store_id, mtime in plans.get(doc.get("_id"), ()):  # type: ignore[arg-type]
        doc = transitions.mark_added(doc, store_id, weight(store_id), mtime) or doc
    return doc


def _mark_copied_many(
    doc: Doc,
    plans: dict[str, tuple[str, Any, dict[str, int]]],
    weight: _StoreWeights,
    now: float,
) -> Doc | None:
    plan = plans.get(doc.get("_id"))  # type: ignore[arg-type]
    if plan is None:
        return None
    src_id, mtime, written = plan
    new = {sid: (weight(sid), m) for sid, m in written.items()}
    return transitions.mark_copied(doc, now, src_id, weight(src_id), mtime, new)


# Fields a log doc sets itself or that name the event: never taken from a stored mark.
_EVENT_OWN_FIELDS = frozenset({"_id", "_rev", "type", "time", "machine_id", "store_id", "reason"})
_EVENT_OWN_FIELDS |= {"count", "level", "log_id", "at"}


def _time_of(mark: Doc) -> float | None:
    """The `time` of a store mark when it is a usable one (a number >= 0), else None."""
    t = mark.get("time")
    if isinstance(t, (int, float)) and not isinstance(t, bool) and math.isfinite(t) and t >= 0:
        return float(t)
    return None


_FULL = ("ENOSPC", "EDQUOT", "EFBIG")  # a full disk is not a failing drive


@dataclass
class _ReadErrors:
    """I/O errors of one store held back by the log rate limit."""

    pending: int = 0  # errors not logged yet
    counted: int = 0  # ... of which count toward the drive alert
    last_flush: float = float("-inf")
    sample: tuple[str, str, str] = ("", "", "")  # the latest (file_id, error, op)


def _reads_keep_failing(store: Doc, alert: int) -> bool:
    """Has the store's I/O error count reached `alert`, in an episode nobody has heard of?

    Not when the store is failing already (its banner is up), unless the user acknowledged
    that failure before this run of errors began: errors again after an acknowledgement
    are news.
    """
    errs = store.get("read_errors")
    if not isinstance(errs, dict):
        return False
    count, first = errs.get("count"), errs.get("first")
    if type(count) is not int or count < max(1, alert) or not isinstance(first, int | float):
        return False
    view = StoreView.of(store)
    if view is None or not view.failing:  # StoreView: the one rule for "failing"
        return True
    failure = store.get("failure")
    acked = time_value(failure.get("acknowledged_time")) if isinstance(failure, dict) else None
    return view.acknowledged and acked is not None and first > acked


def _count_read_errors(doc: Doc, n: int, now: float, window: int) -> Doc | None:
    """Add n I/O errors to the store doc's `read_errors` {count, first, last}; a count
    whose last error is older than `window` starts again."""
    if not isinstance(doc, dict) or n <= 0:
        return None
    old: dict[str, Any] = errs if isinstance(errs := doc.get("read_errors"), dict) else {}
    last = old.get("last")
    count = old.get("count")
    fresh = isinstance(last, int | float) and not isinstance(last, bool) and now - last <= window
    if type(count) is int and fresh:
        doc["read_errors"] = {
            "count": count + n,
            "first": old.get("first", int(now)),
            "last": int(now),
        }
    else:
        doc["read_errors"] = {"count": n, "first": int(now), "last": int(now)}
    return doc


def _relink_entry(doc: Doc, store_id: str, mtime: int):
    """A copy found on disk that the doc does not list on this store: tracked again,
    counting 0 and never verified (verified first), unless it is marked corrupt there."""
    stored = doc.get("stored")
    if isinstance(stored, dict) and store_id in stored:
        return None
    return transitions.mark_added(doc, store_id, 0, mtime)


def _why_no_copies(doc: Doc | None) -> str:
    """Why transitions.takes_new_copies says no, in a few words for the user."""
    if not isinstance(doc, dict):
        return "no record of it"
    failure = doc.get("failure")
    if failure is not None:
        reason = failure.get("reason") if isinstance(failure, dict) else None
        return "it returned corrupt data" if reason == "corrupt" else "marked failing"
    if doc.get("no_new_copies") not in (None, False):
        return "flagged no_new_copies"
    downgraded = doc.get("downgraded")
    if downgraded is not None:
        reason = downgraded.get("reason") if isinstance(downgraded, dict) else None
        return f"downgraded{f' ({reason})' if reason else ''}"
    return "a copy there counts 0 (--copies 0)"


def _drive_identity(folder: Path) -> dict[str, Any]:
    """Drive and partition identity of the filesystem holding folder (empty if unknown)."""
    fields: dict[str, Any] = {"filesystem_id": folder.stat().st_dev}
    try:
        from dmedia_tui import drives

        identity = dict(drives.drive_identity_for_path(folder))
        # The store doc calls it mount_path: where the filesystem was mounted when seen.
        identity["mount_path"] = identity.pop("mount_point", None)
        fields.update(identity)
    except Exception as e:  # discovery is best effort: a store works without it
        log.info("no drive identity for %s: %s", folder, e)
    return fields
