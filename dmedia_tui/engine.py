"""The workers that keep a library safe, and the small event bus they report on.

One `Engine` per machine and library (a lock file says who holds it). It owns:
- housekeeping: the connected stores (presence.py decides which: known folders and
  mounted drives), the heartbeat, the immediate purge of the stores presence.py finds
  wiped, the time policies, and the periodic schema/consistency check;
- verification: due copies, never-verified first, oldest-verified next;
- copy-making: user files below 3 copies, most fragile first;
- watchers: drives (pyudev or a mountinfo poll) and store folders (watchdog).

Each worker is a thread that waits on an Event between rounds, so an idle engine
costs nothing. `run_once()` does every round until its backlog is empty (for
`daemon --once` and the tests). Subscribers (the TUI, the daemon's logger) get
`EngineEvent`s; they must not block.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from dmedia_tui import presence, protocol, schema, transitions
from dmedia_tui.conflicts import resolve_conflicts
from dmedia_tui.db.base import InvalidDoc
from dmedia_tui.durability import rank
from dmedia_tui.filestore import (
    FileStore,
    Progress,
    VerifyResult,
    VerifyStatus,
    held_dirs_of,
)
from dmedia_tui.metastore import MetaStore, store_label

log = logging.getLogger("dmedia_tui.engine")


@dataclass
class Activity:
    """What a worker is doing now, for the activity panel."""

    kind: str  # "verify" | "copy" | "pull" | a store operation's verb ("downgrade", "purge")
    label: str  # store label (verify) or "src -> dst" (copy)
    file_id: str | None = None
    name: str | None = None
    done: int = 0  # bytes of the current file
    total: int = 0
    queue_done: int = 0  # items done this round
    queue_total: int = 0  # items known this round
    started: float = field(default_factory=time.monotonic)
    waiting: str | None = None  # "waiting for usb-archive, ...": nothing can be done now

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


@dataclass(frozen=True)
class EngineEvent:
    kind: str  # "activity" | "idle" | "changed" | "log" | "error" | "drives"
    data: Any = None


@dataclass
class RoundSummary:
    verified: int = 0
    corrupt: int = 0
    missing: int = 0
    unreadable: int = 0
    copies: int = 0
    purged: int = 0
    events: int = 0
    check_invalid: int = 0

    def to_json(self) -> dict[str, int]:
        return dict(self.__dict__)

    def add(self, other: RoundSummary) -> RoundSummary:
        """Add another round's counts to this one (in place); returns self."""
        for k, v in other.__dict__.items():
            setattr(self, k, getattr(self, k) + v)
        return self


class Engine:
    """Hosts the workers over one MetaStore."""

    def __init__(
        self,
        ms: MetaStore,
        *,
        watch_drives: bool = True,
        watch_folders: bool = True,
        peers: bool = True,
    ) -> None:
        self.ms = ms
        ms.store_pass = self._store_pass  # every store-wide pass shows as an activity
        self.use_peers = peers
        self.peers: Any = None  # peer.service.Peers, made on first use (_peer_service)
        self._serve_peers = False  # the threaded engine serves; run_once only pulls
        self._last_pull_refused: set[str] = set()
        self.watch_drives = watch_drives
        self.watch_folders = watch_folders
        self.connected: dict[str, FileStore] = {}
        # What the workers are doing, written by their threads and read by the app's:
        # changed under _activity_lock, read whole with activity_snapshot().
        self.activity: dict[str, Activity] = {}
        self.rates: deque[float] = deque(maxlen=60)  # verify throughput samples, bytes/s
        self._activity_lock = threading.Lock()
        self.drive_source: str | None = None
        self._subscribers: list[Callable[[EngineEvent], None]] = []
        self._stop = threading.Event()
        self._wake_verify = threading.Event()
        self._wake_copy = threading.Event()
        self._wake_house = threading.Event()
        self._threads: list[threading.Thread] = []
        self._retry_after: dict[tuple[str, str], float] = {}
        self._priority: deque[tuple[str | None, str | None]] = deque()
        # Set by the first look at which stores are connected: until then a verify request
        # waits (popped earlier it would find no store and be lost).
        self._stores_known = threading.Event()
        self._lock_fd: int | None = None
        self._last_check = 0.0
        self._drive_watcher: Any = None
        self._store_watcher: Any = None
        self._conn_lock = threading.Lock()
        self._peers_lock = threading.Lock()  # one Peers, whichever worker asks first
        # The copy worker's place in the fragile list: each round goes on where the last
        # stopped, so files that cannot be copied now never hide the ones behind them.
        self._copy_after: tuple[int, str] | None = None
        self._copy_pass = _CopyPass(sources_lost=ms.sources_lost)
        self._copy_more = False  # the last round stopped before the end of the list
        self._once = False  # run_once: no verify runs while the copy worker does
        self._copy_stalled: tuple[Any, float] | None = None  # (what it saw, when)

    # --- lock ------------------------------------------------------------------------

    def lock_path(self) -> str:
        key = f"{self.ms.lib.display_url}|{self.ms.machine_id}".encode()
        name = hashlib.sha256(key).hexdigest()[:16]
        return str(self.ms.config.lock_dir / f"engine-{name}.lock")

    def acquire_lock(self) -> bool:
        """Take the one-engine-per-machine-and-library lock; False if someone has it."""
        path = self.lock_path()
        os.makedirs(os.path.dirname(path), exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd
        return True

    def release_lock(self) -> None:
        if self._lock_fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
                os.close(self._lock_fd)
            self._lock_fd = None

    # --- event bus -------------------------------------------------------------------

    def subscribe(self, fn: Callable[[EngineEvent], None]) -> Callable[[], None]:
        self._subscribers.append(fn)
        return lambda: self._subscribers.remove(fn) if fn in self._subscribers else None

    def emit(self, kind: str, data: Any = None) -> None:
        ev = EngineEvent(kind, data)
        for fn in list(self._subscribers):
            try:
                fn(ev)
            except Exception:  # a subscriber must never kill a worker
                log.exception("engine subscriber failed")

    # --- activity (what the workers are doing) -----------------------------------------

    def _set_activity(self, slot: str, act: Activity | None) -> None:
        """A worker starts (act) or stops (None) showing what it does; `slot` is the
        worker ("verify", "copy", or "pull <thread>": pulls run side by side)."""
        with self._activity_lock:
            if act is None:
                self.activity.pop(slot, None)
            else:
                self.activity[slot] = act

    def _store_pass(
        self, verb: str, store_id: str
    ) -> contextlib.AbstractContextManager[Callable[[int, int], None]]:
        try:
            label = store_label(self.ms.store_doc(store_id), store_id)
        except Exception:  # a damaged store doc: the pass goes on, shown by its ID
            label = store_label(None, store_id)
        return self.store_operation(verb, label)

    @contextlib.contextmanager
    def store_operation(self, verb: str, label: str) -> Iterator[Callable[[int, int], None]]:
        """Show a store-wide pass (a downgrade, a purge: the user's or a policy's; seconds
        to a minute at a million files) in the activity panel while it runs; yields its
        progress callback, (files done, files in all)."""
        slot = f"store {verb}"
        act = Activity(verb, label)

        def progress(done: int, total: int) -> None:
            act.done, act.total = done, total
            act.queue_done, act.queue_total = done, total
            self.emit("activity", act)

        self._set_activity(slot, act)
        self.emit("activity", act)
        try:
            yield progress
        finally:
            self._set_activity(slot, None)
            self.emit("activity", None)

    def activity_snapshot(self) -> tuple[list[Activity], list[float]]:
        """Copies of the current activities (in the activity panel's order: verify, pull,
        copy) and of the verify rate samples, taken together: safe to call from any
        thread while the workers run."""
        with self._activity_lock:
            acts = [dataclasses.replace(a) for a in self.activity.values()]
            rates = list(self.rates)
        acts.sort(key=lambda a: a.kind, reverse=True)
        return acts, rates

    # --- connected stores ------------------------------------------------------------

    def refresh_connected(self, only: str | None = None) -> dict[str, FileStore]:
        """Stores present now (presence.py: known folders plus FileStores on mounted drives);
        with `only`, the engine works on that store alone (`verify --store`)."""
        found, added, removed = self._refresh(self._partitions(), only)
        if added or removed:
            self._announce(found, added, removed)
        return found

    def drive_pass(self) -> RoundSummary:
        """What a drive coming or going needs at once: find the connected stores, write the
        heartbeat (store atimes, the machine doc listing them), purge the stores whose drive
        is back without its FileStore. One partition scan serves all three."""
        s = RoundSummary()
        parts = self._partitions()
        peer = self._peer_publication()  # before the refresh: keeps connect -> announce short
        found, added, removed = self._refresh(parts)
        for sid in sorted(self.ms.heartbeat(found, peer=peer)):
            # Back after a purge or a days-long absence: its copies count 0 (or are not
            # recorded) until verified, so verify them all now rather than in 15 days.
            self.request_verify(sid)
        wiped = self._purge_wiped(parts, found) if parts is not None else []
        s.purged += len(wiped)
        if added or removed:
            self._announce(found, added, removed, wiped=set(wiped))
        return s

    def _partitions(self) -> list[Any] | None:
        """Every filesystem known now; None when discovery fails or this engine does not
        look at drives (`watch_drives=False`: tests, and nothing else)."""
        return self.ms.presence.partitions() if self.watch_drives else None

    def _refresh(
        self, partitions: list[Any] | None, only: str | None = None
    ) -> tuple[dict[str, FileStore], set[str], set[str]]:
        found = self.ms.presence.connected(partitions, scan=False, remember=True)
        if only is not None:
            found = {sid: fs for sid, fs in found.items() if sid == only}
        with self._conn_lock:
            before = set(self.connected)
            self.connected = found
        for sid in sorted(set(found) - before):
            # A store just connected (or the engine just started): finish what a crashed
            # writer left (tmp files, a quarantine or a copy not yet in the docs).
            try:
                self.ms.recover_store(found[sid])
            except Exception as e:  # recovery is retried next time; never stop the pass
                log.warning("recovery of store %s failed: %s", sid, e)
        self._sync_store_watches(found)
        if not self._stores_known.is_set():
            self._stores_known.set()
            if self._priority:
                self._wake_verify.set()  # the requests that waited for this
        return found, set(found) - before, before - set(found)

    def _announce(
        self,
        found: dict[str, FileStore],
        added: set[str],
        removed: set[str],
        wiped: set[str] | None = None,
    ) -> None:
        for sid in sorted(added):
            log.info("store %s connected at %s", sid, found[sid].path)
        gone = {sid: self._away(sid, found, wiped or set()) for sid in sorted(removed)}
        for sid, why in gone.items():
            log.info("store %s disconnected (%s)", sid, why)
        self.emit(
            "changed",
            {
                "connected": sorted(found),
                "added": sorted(added),
                "removed": sorted(removed),
                "gone": gone,
            },
        )
        self._wake_verify.set()
        self._wake_copy.set()

    def _sync_store_watches(self, found: dict[str, FileStore]) -> None:
        """Watch exactly the connected stores, at the folder each is connected at now (a
        drive mounted elsewhere, or a watch dropped when the drive went, is watched again)."""
        watcher = self._store_watcher
        if watcher is None:
            return
        try:
            from dmedia_tui.fswatch import files_dir

            watched = watcher.watched()
            for sid in set(watched) - set(found):
                watcher.unwatch(sid)
            for sid, fs in found.items():
                if watched.get(sid) != str(files_dir(fs.path)):
                    watcher.watch(sid, fs.path)
        except Exception as e:  # watching is a help, never a condition
            log.info("store watches not updated: %s", e)

    def _away(self, store_id: str, connected: dict[str, FileStore], wiped: set[str]) -> str:
        """presence.verdict for a store that just went: wiped (purged by this drive pass),
        unplugged, or with another machine (elsewhere, or machine off)."""
        if store_id in wiped:
            return str(presence.Away.WIPED)
        try:
            doc = self.ms.store_doc(store_id)
            online = self.ms.online(connected) if doc and doc.get("machine_id") else set()
            me = self.ms.config.known_machine_id()
        except Exception as e:  # a word for the log, never a reason to stop the pass
            log.info("cannot tell where store %s went: %s", store_id, e)
            return "unknown"
        return str(presence.verdict(store_id, doc, me, connected=connected, online=online))

    def purge_wiped_drives(
        self,
        partitions: list[Any] | None = None,
        connected: dict[str, FileStore] | None = None,
    ) -> int:
        """Purge the stores presence.py finds wiped (drive mounted without their FileStore);
        any doubt there means no purge, and a store connected now is never purged."""
        if partitions is None:
            partitions = self.ms.presence.partitions()
            if partitions is None:
                return 0
        if connected is None:
            with self._conn_lock:
                connected = dict(self.connected)
        return len(self._purge_wiped(partitions, connected))

    def _purge_wiped(self, partitions: list[Any], connected: dict[str, FileStore]) -> list[str]:
        purged: list[str] = []
        for decision in self.ms.presence.wiped(partitions, connected):
            if self.ms.store_doc(decision.store_id) is None:
                continue
            extra = {
                k: v for k, v in decision.log_fields().items() if k not in ("store_id", "reason")
            }
            self.ms.purge_store(decision.store_id, reason=decision.reason, **extra)
            purged.append(decision.store_id)
        if purged:
            self.emit("changed", {"purged": purged})
        return purged

    # --- rounds (each bounded; used by threads and by run_once) ---------------------

    def housekeeping(self, check: bool = True) -> RoundSummary:
        """The drive pass, then the time policies, then (when due and `check`) the schema
        and consistency pass. The threaded engine runs the check on its own thread."""
        s = self.drive_pass()
        # Replication conflicts merged first, so the policies see every copy (no-op on SQLite).
        resolve_conflicts(self.ms.lib)
        with self._conn_lock:
            connected = dict(self.connected)
        online = self.ms.online(connected, persist=True)
        s.events += len(self.ms.run_time_policies(online))
        if check:
            s.check_invalid += self._check_if_due()
        self.emit("changed", None)
        return s

    def _check_if_due(self) -> int:
        now = self.ms.now()
        if now - self._last_check < self.ms.thresholds.schema_check_interval:
            return 0
        report = self.ms.check_if_due()  # a full pass when due, else the changed docs
        self._last_check = now
        return report.invalid + report.inconsistent

    def verify_round(self, limit: int = 50) -> RoundSummary:
        """Verify up to `limit` due copies (priority requests first) across stores."""
        s = RoundSummary()
        todo: list[tuple[str, str]] = []
        if not self._priority_ready():
            return s  # requests wait for the first look at the connected stores
        while self._priority and len(todo) < limit:
            sid, fid = self._priority.popleft()
            todo.extend(self._priority_items(sid, fid))
        urgent = len(todo)
        now = self.ms.now()
        self._retry_after = {k: t for k, t in self._retry_after.items() if t > now}
        with self._conn_lock:
            connected = dict(self.connected)
        for sid in sorted(connected):
            if len(todo) >= limit:
                break
            waiting = sum(1 for k in self._retry_after if k[0] == sid)
            for due in self.ms.copies_due(sid, limit=limit + waiting):
                if self._retry_after.get((sid, due.file_id), 0) > now:
                    continue  # unreadable lately: retried after verify_retry_after
                todo.append((sid, due.file_id))
                if len(todo) >= limit:
                    break
        todo = list(dict.fromkeys(todo))  # a due copy may also be a priority request
        gone: set[str] = set()
        verified: list[tuple[str, VerifyResult]] = []
        try:
            with held_dirs_of(connected.values()):  # folders walked once per round
                self._verify_items(todo, urgent, connected, gone, verified, s)
        finally:
            # Good copies are recorded together (one transaction): a crash before this
            # only means they are verified again.
            for sid, fid, e in self.ms.record_verified(verified):
                self._bad_item(sid, fid, e)
        self._set_activity("verify", None)
        if todo:
            self.emit("changed", None)
        return s

    def _verify_items(
        self,
        todo: list[tuple[str, str]],
        urgent: int,
        connected: dict[str, FileStore],
        gone: set[str],
        verified: list[tuple[str, VerifyResult]],
        s: RoundSummary,
    ) -> None:
        # Per store, taken at its first copy of the round: (its _store_mark, its label).
        marks: dict[str, tuple[tuple[int, int] | None, str]] = {}
        for i, (sid, fid) in enumerate(todo):
            if self._stop.is_set():
                break
            if i >= urgent and self._priority:
                break  # a copy was touched behind our back: verify it first
            fs = connected.get(sid)
            if fs is None or sid in gone:
                continue
            try:
                if not protocol.is_file_id(fid):
                    raise ValueError(f"invalid file ID: {fid!r:.60}")
                if sid not in marks:
                    marks[sid] = (_store_mark(fs), store_label(self.ms.store_doc(sid), sid))
                if not self._verify_one(fs, fid, s, i, len(todo), verified, *marks[sid]):
                    gone.add(sid)
            except _Stopping:
                break
            except Exception as e:
                # One bad doc (a junk _id, a damaged row, an absurd field) is reported once
                # and set aside until the next schema pass; the round goes on.
                self._bad_item(sid, fid, e)

    def _bad_item(self, sid: str, fid: Any, error: BaseException) -> None:
        log.warning("skipping %r on store %s: %s", fid, sid, error)
        self.ms.report_invalid(fid, error)
        retry = self.ms.now() + self.ms.thresholds.schema_check_interval
        self._retry_after[(sid, str(fid))] = retry

    def _priority_ready(self) -> bool:
        """May verify requests be taken now? Not before the stores were looked at once
        (unless a caller set `connected` itself): the request would match no store."""
        return self.connected_ids() is not None  # the one rule for "looked yet"

    def _priority_items(self, sid: str | None, fid: str | None) -> list[tuple[str, str]]:
        with self._conn_lock:
            connected = dict(self.connected)
        if fid is not None:
            try:
                doc = self.ms.lib.docs.get_or_none(fid) or {}
            except InvalidDoc as e:
                self.ms.report_invalid(fid, e)
                return []
            stored = stored_ if isinstance(stored_ := doc.get("stored"), dict) else {}
            return [(s, fid) for s in stored if s in connected and (sid is None or s == sid)]
        out: list[tuple[str, str]] = []
        for s in [sid] if sid else sorted(connected):
            # Every copy the library records there (a missing one is found missing)...
            out.extend((s, d["_id"]) for d in self.ms.iter_files_on(s) if "_id" in d)
            # ...and every copy on disk, so a store re-attached after a purge is relinked.
            fs = connected.get(s)
            if fs is not None:
                try:
                    out.extend((s, st.id) for st in fs)
                except OSError as e:
                    log.warning("cannot list store %s: %s", s, e)
        return list(dict.fromkeys(out))

    def _verify_one(
        self,
        fs: FileStore,
        fid: str,
        s: RoundSummary,
        i: int,
        n: int,
        verified: list[tuple[str, VerifyResult]],
        mark: tuple[int, int] | None,
        label: str,
    ) -> bool:
        """Verify one copy and record the outcome (a good copy: appended to `verified`,
        recorded with the round's others); False when the store itself is gone.

        `mark`: the store's _store_mark taken before the round's first copy of it (one
        read of store.json a round, not one a copy: that was 5% of a small file's cost);
        a MISSING verdict counts only if the store is still that one now. `label`: the
        store's, read with the mark (not a store doc read a copy)."""
        act = Activity("verify", label, fid, queue_done=i, queue_total=n)
        try:
            act.total = fs.stat(fid).size
        except OSError:
            act.total = 0
        self._set_activity("verify", act)
        started = time.monotonic()

        def progress(nbytes: int) -> None:
            if self._stop.is_set():
                raise _Stopping  # stop() must not wait for a whole file to be hashed
            act.done += nbytes
            self.emit("activity", act)

        result = fs.verify(fid, progress=progress)
        if result.status == VerifyStatus.MISSING and (mark is None or _store_mark(fs) != mark):
            # The store went (unmounted, unplugged, moved) rather than the copy: the empty
            # folder left behind must not make its copies "missing". Let housekeeping see.
            log.info("store %s went away while verifying %s", fs.id, fid)
            self._set_activity("verify", None)
            self._wake_house.set()
            return False
        if result.status == VerifyStatus.OK:
            verified.append((fs.id, result))
        else:
            self.ms.apply_verify_result(fs, result)
        elapsed = time.monotonic() - started
        if result.status == VerifyStatus.OK:
            s.verified += 1
            if elapsed > 0 and act.total:
                with self._activity_lock:
                    self.rates.append(act.total / elapsed)
        elif result.status == VerifyStatus.CORRUPT:
            s.corrupt += 1
            self._wake_copy.set()
        elif result.status == VerifyStatus.MISSING:
            s.missing += 1
            self._wake_copy.set()
        else:
            s.unreadable += 1
            self._retry_after[(fs.id, fid)] = self.ms.now() + self.ms.thresholds.verify_retry_after
        self.emit("activity", act)
        return True

    # A pass that copied nothing is not repeated while nothing it depends on changed
    # (connected stores, their flags, the placements), except this often: a copy that
    # failed on an I/O error is worth another try.
    COPY_STALL_RETRY = 600.0

    def copy_round(self, limit: int = 50, scan_limit: int = 2000) -> RoundSummary:
        """Make copies for up to `limit` fragile user files, most fragile first.

        The round goes on where the previous one stopped (a pass over the fragile list
        spans rounds), skips at once the files none of whose copies is connected, and reads
        at most `scan_limit` docs. At the end of a pass that made no copy the worker is
        waiting: `activity["copy"].waiting` names the stores it waits for.
        """
        s = RoundSummary()
        self._copy_more = False
        with self._conn_lock:
            connected = dict(self.connected)
        key = self._copy_key(connected)
        stalled = self._copy_stalled
        if (
            stalled is not None
            and stalled[0] == key
            and time.monotonic() - stalled[1] < self.COPY_STALL_RETRY
        ):
            return s  # the last pass found nothing to do and nothing changed since
        self._copy_stalled = None
        if not connected:
            self._end_copy_pass(key, connected)
            return s
        self._set_activity("copy", None)
        tried = scanned = 0
        pas = self._copy_pass
        while not self._stop.is_set():
            if tried >= limit or scanned >= scan_limit:
                self._copy_more = True  # bounded round: the next one goes on from here
                break
            want = min(100, scan_limit - scanned)
            page = self.ms.lib.fragile_files(limit=want, after=self._copy_after, origin="user")
            batch: list[dict[str, Any]] = []
            cut = False  # stopped inside the page (limit reached, stopping)
            for doc in page:
                if tried >= limit or self._stop.is_set():
                    cut = True
                    break
                scanned += 1
                self._copy_after = (rank(doc), str(doc.get("_id", "")))
                if doc.get("_id") in pas.copied:
                    continue  # copied in this pass, met again at its new rank: done
                stored = stored_ if isinstance(stored_ := doc.get("stored"), dict) else {}
                if not any(sid in connected for sid in stored):
                    pas.offline.update(stored)  # every copy is on a store not here
                    continue
                tried += 1
                batch.append(doc)
            try:
                results = self._copy_batch(batch, connected, tried - len(batch), limit)
            except _Stopping:
                self._copy_more = True
                break
            for doc, gained in zip(batch, results, strict=True):
                if isinstance(gained, Exception):  # one bad file must not stop the worker
                    e = gained
                    log.warning("copy of %r failed: %s", doc.get("_id"), e)
                    if not protocol.is_file_id(doc.get("_id")) or schema.check_doc(doc):
                        self.ms.report_invalid(doc.get("_id"), e)
                    gained = 0
                if gained:
                    s.copies += 1
                    pas.copies += 1
                    pas.copied.add(doc["_id"])
                else:
                    pas.no_destination += 1
            if not cut:
                if len(page) < want:
                    self._end_copy_pass(key, connected)  # the end of the fragile list
                    break
                continue
            self._copy_more = True  # stopped inside a page
            break
        with self._activity_lock:
            if (copying := self.activity.get("copy")) is not None and copying.waiting is None:
                del self.activity["copy"]
        if s.copies:
            self._wake_verify.set()  # new copies are never verified: they are due at once
            self.emit("changed", None)
        return s

    def _copy_batch(
        self, docs: list[dict[str, Any]], connected: dict[str, FileStore], done: int, n: int
    ) -> list[int | Exception]:
        """Copies for a page of fragile files, made and recorded as one batch
        (MetaStore.make_copies); per doc the copies gained or the error it met."""
        out: list[int | Exception] = [0] * len(docs)
        valid: list[tuple[int, dict[str, Any]]] = []
        for i, doc in enumerate(docs):
            if protocol.is_file_id(doc.get("_id")):
                valid.append((i, doc))
            else:
                out[i] = ValueError(f"invalid file ID: {doc.get('_id')!r:.60}")
        if not valid:
            return out

        def progress_for(i: int, doc: dict[str, Any]) -> Progress:
            size = doc.get("bytes")
            act = Activity(
                "copy",
                "",
                doc["_id"],
                doc.get("name") if isinstance(doc.get("name"), str) else None,
                total=size if isinstance(size, int) and not isinstance(size, bool) else 0,
                queue_done=done + valid[i][0] + 1,
                queue_total=n,
            )
            self._set_activity("copy", act)

            def progress(nbytes: int) -> None:
                if self._stop.is_set():
                    raise _Stopping  # the batch's partial copies are discarded
                act.done += nbytes
                self.emit("activity", act)

            return progress

        results = self.ms.make_copies([d for _, d in valid], connected, progress_for)
        for (i, _), r in zip(valid, results, strict=True):
            out[i] = r
        return out

    def _copy_key(self, connected: dict[str, FileStore]) -> Any:
        """What decides whether a fragile file can be copied now (cheap: no file docs)."""
        stores = tuple(
            (
                d["_id"],
                transitions.is_store_trusted(d),
                transitions.store_copies_weight(d),
                d.get("bytes_avail"),
            )
            for d in self.ms.stores()
        )
        placements = tuple(
            (r.origin, r.placement, r.count) for r in self.ms.lib.placement_summary()
        )
        return (frozenset(connected), stores, placements)

    def _end_copy_pass(self, key: Any, connected: dict[str, FileStore]) -> None:
        """The pass reached the end of the fragile list: start the next one at the top;
        if this one made no copy, say what the worker waits for and rest until a change."""
        pas, self._copy_after = self._copy_pass, None
        self._copy_pass = _CopyPass(sources_lost=self.ms.sources_lost)
        if pas.copies:
            self._set_activity("copy", None)
            # A pass that made copies is followed by another: a file whose rank fell
            # behind the pass's cursor meanwhile (a copy found corrupt or missing, by the
            # verify worker or by this pass reading a source) is met only by the next.
            # run_once verifies nothing while it copies: there only a lost source calls
            # for one (the pass finding nothing was ~6% of copying 2,000 small files).
            if not self._once or self.ms.sources_lost != pas.sources_lost:
                self._copy_more = True
            return
        self._copy_stalled = (key, time.monotonic())
        waiting = self._waiting_text(pas, connected)
        if waiting:
            self._set_activity("copy", Activity("copy", "", waiting=waiting))
        else:
            self._set_activity("copy", None)
        self.emit("activity", self.activity.get("copy"))

    def _waiting_text(self, pas: _CopyPass, connected: dict[str, FileStore]) -> str | None:
        """ "waiting for usb-archive, laptop-ssd (kestrel)" / "... a store with room"."""
        parts = []
        hosts = {m["_id"]: m.get("hostname") for m in self.ms.lib.machines() if m.get("hostname")}
        for sid in sorted(pas.offline - set(connected)):
            doc = self.ms.store_doc(sid)
            name = store_label(doc, sid)
            mid = (doc or {}).get("machine_id")
            if doc and not doc.get("removable") and mid != self.ms.machine_id and hosts.get(mid):
                name += f" ({hosts[mid]})"  # an internal disk: its machine must be on
            parts.append(name)
        if pas.no_destination:
            parts.append("another store with room")
        if not parts:
            return None
        if len(parts) > 4:
            parts = [*parts[:4], f"{len(parts) - 4} more"]
        return "waiting for " + ", ".join(parts)

    def run_once(self) -> RoundSummary:
        """Every worker until its present backlog is empty; leaves the library settled."""
        total = RoundSummary()
        self._last_check = 0.0
        total.add(self.housekeeping())
        self._once = True
        try:
            self._settle(total)
        finally:
            self._once = False
        self._last_check = 0.0
        total.add(self.housekeeping())
        return total

    def _settle(self, total: RoundSummary) -> None:
        pulled = RoundSummary()
        for i in range(100):  # new copies are never-verified: verify them in the same call
            v = self.verify_until_done()
            total.add(v)
            if i and not (v.corrupt or v.missing or v.unreadable or pulled.copies):
                # The copies made last time read back fine and none was pulled: no file
                # lost a copy or gained a source, so another pass could make nothing.
                break
            made = 0
            self._copy_stalled = None  # one whole pass of the fragile list at least
            for _ in range(100_000):
                r = self.copy_round(limit=500)
                total.add(r)
                made += r.copies
                if not self._copy_more:  # the pass is over (see _end_copy_pass)
                    break
            pulled = self.pull_until_done()
            total.add(pulled)
            made += pulled.copies
            if not made or self._stop.is_set():
                break

    def verify_until_done(self, limit: int = 200) -> RoundSummary:
        """Verify rounds until one finds nothing to do (requests and due copies)."""
        total = RoundSummary()
        for _ in range(10_000):
            r = self.verify_round(limit=limit)
            total.add(r)
            if not (r.verified or r.corrupt or r.missing or r.unreadable):
                break
        self.ms.flush_io_errors()  # the errors the log rate limit held back: counted now
        return total

    # --- threads ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker threads (call acquire_lock first); a second call does nothing.

        Every thread waits on an Event between rounds: housekeeping wakes for a drive or
        store-folder event or its interval, verify and copy for a connected store, a touched
        copy or a request (and every `idle` seconds as a safety net), the schema check on
        its own thread every schema_check_interval, so it never delays a drive event.
        """
        if self._threads:
            return
        self._stop.clear()
        self._serve_peers = True
        if self.watch_folders:
            self._start_store_watcher()
        if self.watch_drives:
            self._start_drive_watcher()
        for name, fn in (
            ("housekeeping", self._house_loop),
            ("verify", self._verify_loop),
            ("copy", self._copy_loop),
            ("check", self._check_loop),
        ):
            t = threading.Thread(target=fn, name=f"dmedia-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop every thread and watcher and release the lock. A verify or copy in progress
        is abandoned at its next leaf (nothing is recorded for it)."""
        self._stop.set()
        for ev in (self._wake_verify, self._wake_copy, self._wake_house):
            ev.set()
        for w in (self._drive_watcher, self._store_watcher):
            if w is not None:
                with contextlib.suppress(Exception):
                    w.stop()
        self._drive_watcher = self._store_watcher = None
        self._serve_peers = False
        if self.peers is not None:
            with contextlib.suppress(Exception):
                self.peers.stop()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                log.warning("engine thread %s did not stop in time", t.name)
        self._threads.clear()
        if self.peers is not None:  # again: a round may have started the server meanwhile
            with contextlib.suppress(Exception):
                self.peers.stop()
        self.release_lock()

    def request_verify(self, store_id: str | None = None, file_id: str | None = None) -> None:
        """Verify a store's copies (or one file's) next, whether due or not."""
        self._priority.append((store_id, file_id))
        self._wake_verify.set()

    def wake(self) -> None:
        for ev in (self._wake_verify, self._wake_copy, self._wake_house):
            ev.set()

    def _loop(self, wake: threading.Event, fn: Callable[[], bool], idle: float) -> None:
        while not self._stop.is_set():
            busy = False
            try:
                busy = fn()
            except Exception as e:
                log.exception("worker error: %s", e)
                self.emit("error", str(e))
            if self._stop.is_set():
                break
            if not busy:
                wake.wait(idle)
                wake.clear()

    def _house_loop(self) -> None:
        """A full housekeeping pass every housekeeping_interval; a drive pass (connected
        stores, heartbeat, wiped-drive purge) as soon as a drive or store folder changes."""
        interval = max(1.0, float(self.ms.thresholds.housekeeping_interval))
        next_full = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_full:
                    self.housekeeping(check=False)
                    next_full = time.monotonic() + interval
                else:
                    self.drive_pass()
                    self.emit("changed", None)
            except Exception as e:
                log.exception("housekeeping error: %s", e)
                self.emit("error", str(e))
            if self._stop.is_set():
                break
            self._wake_house.wait(max(0.0, next_full - time.monotonic()))
            self._wake_house.clear()

    def _check_loop(self) -> None:
        interval = max(1.0, float(self.ms.thresholds.schema_check_interval))
        while not self._stop.is_set():
            try:
                invalid = self._check_if_due()
                if invalid:
                    self.emit("changed", None)
            except Exception as e:
                log.exception("schema check error: %s", e)
                self.emit("error", str(e))
            self._stop.wait(interval)

    def _verify_loop(self) -> None:
        def round_() -> bool:
            r = self.verify_round()
            waiting = bool(self._priority) and self._priority_ready()
            return bool(r.verified or r.corrupt or r.missing or waiting)

        self._loop(self._wake_verify, round_, 30.0)

    def _copy_loop(self) -> None:
        def round_() -> bool:
            r = self.copy_round()
            return bool(r.copies or self._copy_more or self.pull_round().copies)

        self._loop(self._wake_copy, round_, 30.0)

    # --- peers (issue 12): identity on the heartbeat, the server, pulls -----------------

    def _peer_service(self) -> Any:
        """The engine's one Peers, made by the first worker to ask. Without the lock, the
        housekeeping and copy threads both made one at start (the import takes ~0.1 s):
        one served, the other was the engine's, so stop() and `[peer] enabled = "off"`
        never reached the server, and the heartbeat published no address for it."""
        with self._peers_lock:
            if self.peers is None and self.use_peers:
                from dmedia_tui.peer.service import Peers

                self.peers = Peers(self.ms, self._connected_now, self.request_verify)
            return self.peers

    def _connected_now(self) -> dict[str, FileStore]:
        with self._conn_lock:
            return dict(self.connected)

    def connected_ids(self) -> set[str] | None:
        """The IDs of the stores connected here, or None before the engine first looked.

        Until then `connected` is empty because nothing is known yet, not because nothing
        is connected: health judged from it would call every local store offline and raise
        a false "only copy on a disconnected drive" at each start. With None the caller
        (the app's dashboard, the notifier) lets the MetaStore look for itself.
        """
        with self._conn_lock:
            if not self._stores_known.is_set() and not self.connected:
                return None  # (a caller that set `connected` itself is known: tests)
            return set(self.connected)

    def _peer_publication(self) -> dict[str, Any] | None:
        """This machine's `peer` for the heartbeat; the threaded engine first starts or
        stops its server as `[peer] enabled` says (never fatal to the heartbeat)."""
        peers = self._peer_service()
        if peers is None:
            return None
        try:
            if self._serve_peers:
                peers.sync()
            return peers.publish()
        except Exception as e:
            log.warning("peer setup failed: %s", e)
            return None

    def pull_round(self, limit: int = 200) -> RoundSummary:
        """Pull files that only other machines have (see peer.service.Peers.pull_round)."""
        s = RoundSummary()
        peers = self._peer_service()
        if peers is None or self._stop.is_set():
            return s

        slots: set[str] = set()

        def started(doc: dict[str, Any], machine: Any, dst: FileStore) -> Callable[[int], None]:
            # Pulls run side by side, one per pull thread: each shows its own line.
            slot = f"pull {threading.current_thread().name}"
            slots.add(slot)
            label = f"{machine.hostname} -> {store_label(self.ms.store_doc(dst.id), dst.id)}"
            act = Activity("pull", label, doc["_id"], doc.get("name"), total=doc.get("bytes", 0))
            self._set_activity(slot, act)

            def progress(nbytes: int) -> None:
                if self._stop.is_set():
                    raise _Stopping  # verified leaves stay in tmp/peer for the next try
                act.done += nbytes
                self.emit("activity", act)

            return progress

        try:
            r = peers.pull_round(self._connected_now(), limit, self._stop.is_set, started)
        except _Stopping:
            return s
        finally:
            for slot in slots:
                self._set_activity(slot, None)
        s.copies += r.copies
        self._last_pull_refused = r.refused
        if r.copies:
            self._wake_verify.set()  # pulled copies are never verified: due at once
            self._wake_copy.set()  # and local copies can now be made from them
            self.emit("changed", None)
        return s

    def pull_until_done(self) -> RoundSummary:
        """Pull rounds until one brings nothing. A peer that does not trust us yet (it
        re-reads machine docs every few seconds) gets one more try after that delay."""
        total = RoundSummary()
        retried = False
        for _ in range(1000):
            self._last_pull_refused = set()
            r = self.pull_round(limit=500)
            total.add(r)
            if r.copies:
                continue
            if self._last_pull_refused and not retried and not self._stop.is_set():
                retried = True
                self._stop.wait(self.peers.trust_refresh + 1)
                continue
            break
        return total

    def _start_store_watcher(self) -> None:
        try:
            from dmedia_tui.fswatch import StoreWatcher

            self._store_watcher = StoreWatcher(
                self._on_store_files_changed, on_store_event=self._on_store_event
            )
        except Exception as e:
            log.info("folder watching unavailable: %s", e)
            return
        with self._conn_lock:
            connected = dict(self.connected)
        self._sync_store_watches(connected)

    def _on_store_files_changed(self, store_id: str, file_ids: set[str]) -> None:
        for fid in sorted(file_ids):
            self._priority.append((store_id, fid))
        self._wake_verify.set()

    def _on_store_event(self, store_id: str, what: str) -> None:
        if what == "rescan":  # a whole prefix folder went: check every copy there
            self.request_verify(store_id)
        else:  # "gone": the store folder vanished (unplugged, unmounted, wiped)
            self._wake_house.set()

    def _start_drive_watcher(self) -> None:
        try:
            from dmedia_tui.drives import DriveWatcher

            self._drive_watcher = DriveWatcher(self._on_drives_changed)
            self._drive_watcher.start()
            self.drive_source = getattr(self._drive_watcher, "source", None)
            log.info("watching drives via %s", self.drive_source)
        except Exception as e:
            log.info("drive watching unavailable: %s", e)
            self._drive_watcher = None

    def _on_drives_changed(self, added: list[Any], removed: list[Any]) -> None:
        self._wake_house.set()
        self.emit("drives", {"added": added, "removed": removed})


def _store_mark(fs: FileStore) -> tuple[int, int] | None:
    """(st_dev, st_ino) of the store's files folder while its store.json names it, else None:
    equal marks before and after a "missing" verdict mean the store itself stayed put."""
    try:
        st = os.stat(fs.files_dir)
    except OSError:
        return None
    return (st.st_dev, st.st_ino) if fs.still_here() else None


@dataclass
class _CopyPass:
    """What one pass of the copy worker over the fragile list met."""

    copies: int = 0
    offline: set[str] = field(default_factory=set)  # stores holding files with no source here
    no_destination: int = 0  # files with a source here but no store to copy to
    copied: set[str] = field(default_factory=set)  # files this pass made copies of
    sources_lost: int = 0  # MetaStore.sources_lost when the pass began


class _Stopping(Exception):
    """Raised from a progress callback to abandon a verify or copy when the engine stops."""
