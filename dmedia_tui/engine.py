"""The workers that keep a library safe, and the small event bus they report on.

One `Engine` per machine and library (a lock file says who holds it). It owns:
- housekeeping: connected stores (known folders + mounted drives), the heartbeat, the
  immediate purge of stores whose drive is back without its FileStore, the time
  policies, and the periodic schema/consistency check;
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
import fcntl
import hashlib
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dmedia_tui.durability import rank
from dmedia_tui.filestore import FileStore, VerifyStatus
from dmedia_tui.metastore import MetaStore, store_label

log = logging.getLogger("dmedia_tui.engine")


@dataclass
class Activity:
    """What a worker is doing now, for the activity panel."""

    kind: str  # "verify" | "copy"
    label: str  # store label (verify) or "src -> dst" (copy)
    file_id: str | None = None
    name: str | None = None
    done: int = 0  # bytes of the current file
    total: int = 0
    queue_done: int = 0  # items done this round
    queue_total: int = 0  # items known this round
    started: float = field(default_factory=time.monotonic)

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


class EngineLocked(Exception):
    """Another engine already runs for this machine and library."""


class Engine:
    """Hosts the workers over one MetaStore."""

    def __init__(
        self,
        ms: MetaStore,
        *,
        watch_drives: bool = True,
        watch_folders: bool = True,
    ) -> None:
        self.ms = ms
        self.watch_drives = watch_drives
        self.watch_folders = watch_folders
        self.connected: dict[str, FileStore] = {}
        self.activity: dict[str, Activity] = {}
        self.rates: deque[float] = deque(maxlen=60)  # verify throughput samples, bytes/s
        self.drive_source: str | None = None
        self._subscribers: list[Callable[[EngineEvent], None]] = []
        self._stop = threading.Event()
        self._wake_verify = threading.Event()
        self._wake_copy = threading.Event()
        self._wake_house = threading.Event()
        self._threads: list[threading.Thread] = []
        self._retry_after: dict[tuple[str, str], float] = {}
        self._priority: deque[tuple[str | None, str | None]] = deque()
        self._lock_fd: int | None = None
        self._last_check = 0.0
        self._drive_watcher: Any = None
        self._store_watcher: Any = None
        self._conn_lock = threading.Lock()

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

    # --- connected stores ------------------------------------------------------------

    def refresh_connected(self) -> dict[str, FileStore]:
        """Stores present now: known folders plus FileStores at the root of mounted drives."""
        found = self.ms.connected_filestores()
        if self.watch_drives:
            found.update(self._stores_on_drives(found))
        with self._conn_lock:
            before = set(self.connected)
            self.connected = found
        if set(found) != before:
            self.emit("changed", {"connected": sorted(found)})
            self._wake_verify.set()
            self._wake_copy.set()
            if self._store_watcher is not None:
                for sid in before - set(found):
                    self._store_watcher.unwatch(sid)
                for sid in set(found) - before:
                    self._store_watcher.watch(sid, str(found[sid].path))
        return found

    def _stores_on_drives(self, known: dict[str, FileStore]) -> dict[str, FileStore]:
        try:
            from dmedia_tui import drives

            parts = drives.list_partitions()
        except Exception as e:
            log.debug("drive discovery failed: %s", e)
            return {}
        out: dict[str, FileStore] = {}
        for p in parts:
            if not p.mount_point:
                continue
            try:
                fs = FileStore(p.mount_point)
            except Exception:
                continue
            if fs.id in known or self.ms.store_doc(fs.id) is None:
                continue  # only stores of this library
            self.ms.config.remember_store(fs.id, fs.path)
            out[fs.id] = fs
        return out

    def purge_wiped_drives(self) -> int:
        """Purge stores whose drive is mounted without their FileStore (reformatted, wiped)."""
        try:
            from dmedia_tui import drives

            parts = drives.list_partitions()
        except Exception as e:
            log.debug("drive discovery failed: %s", e)
            return 0
        stores = self.ms.stores()
        n = 0

        def filestore_id_at(path: os.PathLike[str] | str) -> str | None:
            try:
                return FileStore(path).id
            except Exception:
                return None

        for p in parts:
            if not p.mount_point:
                continue
            for decision in drives.find_missing_filestores(p, stores, filestore_id_at):
                if self.ms.store_doc(decision.store_id) is None:
                    continue
                extra = {
                    k: v
                    for k, v in decision.log_fields().items()
                    if k not in ("store_id", "reason")
                }
                self.ms.purge_store(decision.store_id, reason=decision.reason, **extra)
                n += 1
        if n:
            self.emit("changed", {"purged": n})
        return n

    # --- rounds (each bounded; used by threads and by run_once) ---------------------

    def housekeeping(self) -> RoundSummary:
        s = RoundSummary()
        connected = self.refresh_connected()
        self.ms.heartbeat(connected)
        if self.watch_drives:
            s.purged += self.purge_wiped_drives()
        online = self.ms.online(connected)
        s.events += len(self.ms.run_time_policies(online))
        now = self.ms.now()
        if now - self._last_check >= self.ms.thresholds.schema_check_interval:
            report = self.ms.check()
            s.check_invalid = report.invalid + report.inconsistent
            self._last_check = now
        self.emit("changed", None)
        return s

    def verify_round(self, limit: int = 50) -> RoundSummary:
        """Verify up to `limit` due copies (priority requests first) across stores."""
        s = RoundSummary()
        todo: list[tuple[str, str]] = []
        while self._priority and len(todo) < limit:
            sid, fid = self._priority.popleft()
            todo.extend(self._priority_items(sid, fid))
        now = self.ms.now()
        with self._conn_lock:
            connected = dict(self.connected)
        for sid in sorted(connected):
            if len(todo) >= limit:
                break
            for due in self.ms.copies_due(sid, limit=limit):
                if self._retry_after.get((sid, due.file_id), 0) > now:
                    continue
                todo.append((sid, due.file_id))
                if len(todo) >= limit:
                    break
        todo = list(dict.fromkeys(todo))  # a due copy may also be a priority request
        for i, (sid, fid) in enumerate(todo):
            if self._stop.is_set():
                break
            fs = connected.get(sid)
            if fs is None:
                continue
            self._verify_one(fs, fid, s, i, len(todo))
        self.activity.pop("verify", None)
        if todo:
            self.emit("changed", None)
        return s

    def _priority_items(self, sid: str | None, fid: str | None) -> list[tuple[str, str]]:
        with self._conn_lock:
            connected = dict(self.connected)
        if fid is not None:
            doc = self.ms.lib.docs.get_or_none(fid) or {}
            stored = doc.get("stored") if isinstance(doc.get("stored"), dict) else {}
            return [(s, fid) for s in stored if s in connected and (sid is None or s == sid)]
        out = []
        for s in [sid] if sid else sorted(connected):
            after = None
            while True:
                page = self.ms.lib.files_by_store(s, limit=1000, after=after)
                out.extend((s, d["_id"]) for d in page)
                if len(page) < 1000:
                    break
                after = (rank(page[-1]), page[-1]["_id"])
        return out

    def _verify_one(self, fs: FileStore, fid: str, s: RoundSummary, i: int, n: int) -> None:
        store = self.ms.store_doc(fs.id)
        act = Activity("verify", store_label(store, fs.id), fid, queue_done=i, queue_total=n)
        try:
            act.total = fs.stat(fid).size
        except OSError:
            act.total = 0
        self.activity["verify"] = act
        started = time.monotonic()

        def progress(nbytes: int) -> None:
            act.done += nbytes
            self.emit("activity", act)

        result = self.ms.verify_copy(fs, fid, progress=progress)
        elapsed = time.monotonic() - started
        if result.status == VerifyStatus.OK:
            s.verified += 1
            if elapsed > 0 and act.total:
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

    def copy_round(self, limit: int = 50) -> RoundSummary:
        """Make copies for up to `limit` fragile user files, most fragile first."""
        s = RoundSummary()
        with self._conn_lock:
            connected = dict(self.connected)
        if not connected:
            return s
        after = None
        tried = 0
        while tried < limit and not self._stop.is_set():
            page = self.ms.lib.fragile_files(limit=100, after=after, origin="user")
            if not page:
                break
            for doc in page:
                if tried >= limit or self._stop.is_set():
                    break
                tried += 1
                act = Activity(
                    "copy",
                    "",
                    doc["_id"],
                    doc.get("name"),
                    total=doc.get("bytes", 0),
                    queue_done=tried,
                    queue_total=limit,
                )
                self.activity["copy"] = act

                def progress(nbytes: int, act: Activity = act) -> None:
                    act.done += nbytes
                    self.emit("activity", act)

                try:
                    gained = self.ms.make_copy(doc, connected, progress=progress)
                except Exception as e:  # one bad file must not stop the worker
                    log.warning("copy of %s failed: %s", doc["_id"], e)
                    gained = 0
                if gained:
                    s.copies += 1
            after = (rank(page[-1]), page[-1]["_id"])
            if len(page) < 100:
                break
        self.activity.pop("copy", None)
        if s.copies:
            self.emit("changed", None)
        return s

    def run_once(self) -> RoundSummary:
        """Every worker until its present backlog is empty; leaves the library settled."""
        total = RoundSummary()

        def add(r: RoundSummary) -> None:
            for k, v in r.__dict__.items():
                setattr(total, k, getattr(total, k) + v)

        self._last_check = 0.0
        add(self.housekeeping())
        for _ in range(10_000):
            r = self.verify_round(limit=200)
            add(r)
            if not (r.verified or r.corrupt or r.missing):
                break
        for _ in range(10_000):
            r = self.copy_round(limit=500)
            add(r)
            if not r.copies:
                break
        self._last_check = 0.0
        add(self.housekeeping())
        return total

    # --- threads ---------------------------------------------------------------------

    def start(self) -> None:
        """Start the worker threads (call acquire_lock first)."""
        self._stop.clear()
        if self.watch_folders:
            self._start_store_watcher()
        if self.watch_drives:
            self._start_drive_watcher()
        for name, fn in (
            ("housekeeping", self._house_loop),
            ("verify", self._verify_loop),
            ("copy", self._copy_loop),
        ):
            t = threading.Thread(target=fn, name=f"dmedia-{name}", daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for ev in (self._wake_verify, self._wake_copy, self._wake_house):
            ev.set()
        for t in self._threads:
            t.join(timeout)
        self._threads.clear()
        for w in (self._drive_watcher, self._store_watcher):
            if w is not None:
                with contextlib.suppress(Exception):
                    w.stop()
        self._drive_watcher = self._store_watcher = None
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
                log.error("worker error: %s", e)
                self.emit("error", str(e))
            if self._stop.is_set():
                break
            if not busy:
                wake.wait(idle)
                wake.clear()

    def _house_loop(self) -> None:
        def round_() -> bool:
            self.housekeeping()
            return False  # always wait for the next interval (or a drive event)

        self._loop(self._wake_house, round_, self.ms.thresholds.housekeeping_interval)

    def _verify_loop(self) -> None:
        def round_() -> bool:
            r = self.verify_round()
            return bool(r.verified or r.corrupt or r.missing)

        self._loop(self._wake_verify, round_, 30.0)

    def _copy_loop(self) -> None:
        self._loop(self._wake_copy, lambda: bool(self.copy_round().copies), 30.0)

    def _start_store_watcher(self) -> None:
        try:
            from dmedia_tui.fswatch import StoreWatcher

            self._store_watcher = StoreWatcher(
                self._on_store_files_changed, on_store_event=self._on_store_event
            )
        except Exception as e:
            log.info("folder watching unavailable: %s", e)

    def _on_store_files_changed(self, store_id: str, file_ids: set[str]) -> None:
        for fid in sorted(file_ids):
            self._priority.append((store_id, fid))
        self._wake_verify.set()

    def _on_store_event(self, store_id: str, what: str) -> None:
        if what == "rescan":  # a whole prefix folder went: check every copy there
            self.request_verify(store_id)
        else:  # "gone": the store folder vanished (unplugged, unmounted)
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

    def _on_drives_changed(self, added: list[Any], removed: list[Any]) -> None:
        self.emit("drives", {"added": added, "removed": removed})
        self._wake_house.set()
