"""Notice at once when a canonical copy in a FileStore is touched behind our back.

`StoreWatcher` puts a recursive inotify watch (watchdog) on each connected store's
`.dmedia/files` and reports, per store, the file IDs whose canonical copy was deleted,
written to, moved away, or replaced by a rename over it. A burst (a `rm -r`, a sync tool
rewriting a folder) is coalesced: the callback runs once `coalesce` seconds pass without a
new event (and at least every `max_delay` seconds during an endless stream).

Decisions:
- Only paths of the FileStore layout count: `files/<2 chars>/<46 chars>` forming a valid
  file ID (protocol.is_file_id). `tmp/` and `corrupt/` are outside the watch, so our own
  partial writes and quarantine moves are invisible except as "moved away" (a quarantine
  move is reported as changed: the engine knows it did that and the rescan is cheap).
- A *new* canonical file (created, or renamed into `files/` from `tmp/` by an import) is
  not a problem and is not reported as changed; pass `on_created` to hear about it anyway.
  Reading files (verification) and chmod are ignored: no open/close-nowrite/attrib events
  are even subscribed, so verifying a store costs no callbacks.
- A prefix directory that vanishes whole (moved away, `rm -r` of `files/AB`) cannot be
  enumerated afterwards: it is reported through `on_store_event(store_id, "rescan")`.
- The watched root vanishing (store folder deleted, drive unmounted or unplugged): the
  store is unwatched quietly (logged at info), its pending changes are dropped (a yanked
  drive is a disconnected store, not thousands of missing files) and
  `on_store_event(store_id, "gone")` is called. Unmounts give no per-file event, so a
  cheap stat of each root every `check_interval` seconds catches them.
- Callbacks run on the watcher's own thread; an exception in one is logged, never fatal.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from watchdog.events import (
    DirDeletedEvent,
    DirMovedEvent,
    FileClosedEvent,
    FileCreatedEvent,
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileSystemEvent,
    FileSystemEventHandler,
)
from watchdog.observers import Observer
from watchdog.observers.api import ObservedWatch

from dmedia_tui import protocol

log = logging.getLogger(__name__)

_EVENTS = [
    FileDeletedEvent,
    FileModifiedEvent,
    FileMovedEvent,
    FileCreatedEvent,
    FileClosedEvent,
    DirDeletedEvent,
    DirMovedEvent,
]


def files_dir(store_path: str | os.PathLike[str]) -> Path:
    """The folder of canonical copies in a FileStore."""
    return Path(store_path) / ".dmedia" / "files"


def file_id_for(path: str, root: str) -> str | None:
    """The file ID a path under `root` (= .dmedia/files) names, or None if it names none."""
    rel = os.path.relpath(path, root)
    parts = rel.split(os.sep)
    if len(parts) != 2 or len(parts[0]) != 2:
        return None
    candidate = parts[0] + parts[1]
    return candidate if protocol.is_file_id(candidate) else None


def _is_prefix_dir(path: str, root: str) -> bool:
    rel = os.path.relpath(path, root)
    return len(rel) == 2 and os.sep not in rel and rel != ".."


@dataclass
class _Store:
    store_id: str
    root: str
    ident: tuple[int, int]
    watch: ObservedWatch
    changed: set[str] = field(default_factory=set)
    created: set[str] = field(default_factory=set)
    rescan: bool = False
    first: float = 0.0
    last: float = 0.0


class _Handler(FileSystemEventHandler):
    def __init__(self, owner: StoreWatcher, store_id: str, root: str) -> None:
        self.owner = owner
        self.store_id = store_id
        self.root = root

    def on_any_event(self, event: FileSystemEvent) -> None:
        self.owner._on_event(self.store_id, self.root, event)


class StoreWatcher:
    """Watch the canonical copies of every connected store (see module docstring)."""

    def __init__(
        self,
        on_changed: Callable[[str, set[str]], None],
        coalesce: float | None = 0.2,
        *,
        max_delay: float = 5.0,
        on_created: Callable[[str, set[str]], None] | None = None,
        on_store_event: Callable[[str, str], None] | None = None,
        check_interval: float = 2.0,
    ) -> None:
        """`coalesce=None` never delivers on its own: call `flush()` (deterministic tests)."""
        self.on_changed = on_changed
        self.on_created = on_created
        self.on_store_event = on_store_event
        self.coalesce = coalesce
        self.max_delay = max_delay
        self.check_interval = check_interval
        self._stores: dict[str, _Store] = {}
        self._gone: list[str] = []  # stores lost, to announce from our own thread
        self._pending_unschedule: list[_Store] = []
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._observer = Observer()
        self._observer.start()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="dmedia-store-watcher", daemon=True)
        self._thread.start()

    # --- public API ---------------------------------------------------------------------

    def watch(self, store_id: str, store_path: str | os.PathLike[str]) -> bool:
        """Start watching a store's `.dmedia/files`; False (logged) when it is not there."""
        root = str(files_dir(store_path))
        try:
            st = os.stat(root)
        except OSError as e:
            log.info("not watching store %s: %s", store_id, e)
            return False
        self.unwatch(store_id)
        handler = _Handler(self, store_id, root)
        try:
            w = self._observer.schedule(handler, root, recursive=True, event_filter=_EVENTS)
        except OSError as e:
            log.info("cannot watch store %s at %s: %s", store_id, root, e)
            return False
        with self._lock:
            self._stores[store_id] = _Store(store_id, root, (st.st_dev, st.st_ino), w)
        return True

    def unwatch(self, store_id: str) -> None:
        """Stop watching a store (pending changes are dropped)."""
        with self._lock:
            s = self._stores.pop(store_id, None)
        if s is not None:
            self._unschedule(s)

    def watched(self) -> dict[str, str]:
        """store_id -> watched folder."""
        with self._lock:
            return {k: s.root for k, s in self._stores.items()}

    def pending(self, store_id: str) -> set[str]:
        """IDs seen changed but not delivered yet."""
        with self._lock:
            s = self._stores.get(store_id)
            return set(s.changed) if s else set()

    def flush(self) -> None:
        """Deliver everything pending now."""
        self._deliver(force=True)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._wake.notify_all()
            stores = list(self._stores.values())
            self._stores.clear()
        self._thread.join(timeout=5)
        for s in stores:
            self._unschedule(s)
        self._observer.stop()
        self._observer.join(timeout=5)

    # --- internals ------------------------------------------------------------------------

    def _unschedule(self, s: _Store) -> None:
        try:
            self._observer.unschedule(s.watch)
        except Exception:  # already gone (root deleted: the emitter stopped itself)
            pass

    def _on_event(self, store_id: str, root: str, event: FileSystemEvent) -> None:
        src = os.fsdecode(event.src_path)
        dest = os.fsdecode(event.dest_path) if event.dest_path else ""
        changed: set[str] = set()
        created: set[str] = set()
        rescan = gone = False
        if event.is_directory:
            if src == root and event.event_type in ("deleted", "moved"):
                gone = True
            elif event.event_type in ("deleted", "moved") and _is_prefix_dir(src, root):
                rescan = True
        elif event.event_type in ("deleted", "modified", "closed"):
            fid = file_id_for(src, root)
            if fid:
                changed.add(fid)
        elif event.event_type == "moved":
            fid = file_id_for(src, root)
            if fid:
                changed.add(fid)
            fid = file_id_for(dest, root) if dest else None
            if fid:
                changed.add(fid)  # renamed over a canonical path: its content is in doubt
        elif event.event_type == "created":
            fid = file_id_for(src, root)
            if fid:
                created.add(fid)
        if not (changed or created or rescan or gone):
            return
        now = time.monotonic()
        with self._lock:
            s = self._stores.get(store_id)
            if s is None or s.root != root:
                return
            if gone:
                self._stores.pop(store_id, None)
            else:
                if not (s.changed or s.created or s.rescan):
                    s.first = now
                s.last = now
                s.changed |= changed
                s.created |= created
                s.rescan = s.rescan or rescan
            self._wake.notify_all()
        if gone:
            self._lost(s, "watched folder deleted")

    def _lost(self, s: _Store, why: str) -> None:
        """Forget a store whose folder vanished; the announcement is made by `_run`
        (never unschedule on the observer's dispatch thread: it holds the observer lock)."""
        log.info("store %s no longer watched (%s): %s", s.store_id, why, s.root)
        with self._lock:
            self._gone.append(s.store_id)
            self._pending_unschedule.append(s)
            self._wake.notify_all()

    def _call(self, fn: Callable[..., None] | None, *args: object) -> None:
        if fn is None:
            return
        try:
            fn(*args)
        except Exception:
            log.exception("store watcher callback %r failed", fn)

    def _check_roots(self) -> None:
        with self._lock:
            stores = list(self._stores.values())
        for s in stores:
            try:
                st = os.stat(s.root)
                ok = (st.st_dev, st.st_ino) == s.ident
            except OSError:
                ok = False
            if not ok:
                with self._lock:
                    if self._stores.get(s.store_id) is not s:
                        continue
                    self._stores.pop(s.store_id)
                self._lost(s, "unmounted or replaced")

    def _deliver(self, force: bool = False) -> float | None:
        """Hand out what is due; return seconds until the next batch is due (None: idle)."""
        now = time.monotonic()
        due: list[tuple[str, set[str], set[str], bool]] = []
        wait: float | None = None
        with self._lock:
            gone, self._gone = self._gone, []
            dead, self._pending_unschedule = self._pending_unschedule, []
            for s in self._stores.values():
                if not (s.changed or s.created or s.rescan):
                    continue
                if not force:
                    if self.coalesce is None:
                        continue
                    at = min(s.last + self.coalesce, s.first + self.max_delay)
                    if at > now:
                        wait = at - now if wait is None else min(wait, at - now)
                        continue
                due.append((s.store_id, s.changed, s.created, s.rescan))
                s.changed, s.created, s.rescan = set(), set(), False
        for s in dead:
            self._unschedule(s)
        for store_id in gone:
            self._call(self.on_store_event, store_id, "gone")
        for store_id, changed, created, rescan in due:
            if changed:
                self._call(self.on_changed, store_id, changed)
            if created:
                self._call(self.on_created, store_id, created)
            if rescan:
                self._call(self.on_store_event, store_id, "rescan")
        return wait

    def _run(self) -> None:
        next_check = time.monotonic() + self.check_interval
        while True:
            wait = self._deliver()
            now = time.monotonic()
            if now >= next_check:
                self._check_roots()
                next_check = now + self.check_interval
                continue  # announce what the check found without waiting
            timeout = next_check - now if wait is None else min(wait, next_check - now)
            with self._lock:
                if self._stopping:
                    return
                self._wake.wait(timeout=max(0.001, timeout))
                if self._stopping:
                    return
