"""Re-create a lost library from its drives: the FileStores hold everything that matters.

Each FileStore carries its own store doc (`.dmedia/store.json`) and its copies named by
their content hash, so a library whose file was emptied, damaged or deleted can be made
again: every copy is re-hashed (a file doc needs its leaf hashes, and a copy is recorded
only once its bytes are proved to be its ID), the store docs come from store.json. What
is lost for good: file names, origins (every file comes back as `user`, the safe side:
it counts toward the panic conditions), safety flags, and the log-1 history.

A corrupt copy found on the way is quarantined and handled like any other (logged, store
flagged failing); an unreadable one is reported and left alone. The target must be a new
or empty library: rebuild never writes over docs that exist.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmedia_tui import schema, transitions
from dmedia_tui.db.base import Conflict, Doc
from dmedia_tui.filestore import FileStore, FileStoreError, VerifyStatus
from dmedia_tui.metastore import MetaStore, MetaStoreError

log = logging.getLogger("dmedia_tui.rebuild")


class RebuildError(MetaStoreError):
    """Rebuild cannot start (one line for the user)."""


@dataclass
class RebuildReport:
    stores: list[str] = field(default_factory=list)  # store IDs recorded
    files: int = 0  # file docs created
    copies: int = 0  # copies recorded (verified now)
    bytes: int = 0  # bytes hashed
    corrupt: int = 0  # copies found corrupt (quarantined)
    errors: list[str] = field(default_factory=list)  # unreadable copies, unusable folders

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def check_target_empty(ms: MetaStore) -> None:
    """Rebuild only into a library without docs: it must never overwrite what exists."""
    docs, events = ms.lib.docs.count(), ms.lib.log.count()
    if docs or events:
        raise RebuildError(
            f"library {ms.lib.display_url} is not empty ({docs} docs, {events} events): "
            "rebuild into a new library (--db NEW_PATH)"
        )


def bytes_to_hash(folders: Iterable[str | os.PathLike[str]]) -> int:
    """Bytes of every copy on the stores at `folders` (for a progress bar)."""
    total = 0
    for folder in folders:
        try:
            total += sum(st.size for st in FileStore(folder))
        except (FileStoreError, OSError):
            continue
    return total


def rebuild(
    ms: MetaStore,
    folders: Iterable[str | os.PathLike[str]],
    progress: Callable[[str, int], None] | None = None,
) -> RebuildReport:
    """Record the stores at `folders` and every copy on them (each one hashed).

    `progress(file_id, nbytes)` is called per copy hashed. The library should be empty
    (see check_target_empty); docs that exist are merged into, never replaced.
    """
    report = RebuildReport()
    stores: list[FileStore] = []
    for folder in dict.fromkeys(str(Path(f).resolve()) for f in folders):
        try:
            fs = FileStore(folder)
        except (FileStoreError, OSError) as e:
            report.errors.append(f"{folder}: not a usable store ({e})")
            continue
        if any(s.id == fs.id for s in stores):
            other = next(s for s in stores if s.id == fs.id)
            report.errors.append(
                f"{folder}: same store ID as {other.path} (a cloned drive?): skipped"
            )
            continue
        stores.append(fs)
        _record_store(ms, fs)
        report.stores.append(fs.id)
    for fs in stores:
        weight = transitions.store_copies_weight(ms.store_doc(fs.id))
        for st in fs:
            result = fs.verify(st.id)
            if result.status == VerifyStatus.OK and result.content_hash is not None:
                new = _record_copy(ms, fs.id, weight, result)
                report.files += new
                report.copies += 1
                report.bytes += result.content_hash.file_size
            elif result.status == VerifyStatus.CORRUPT:
                report.corrupt += 1
                ms.apply_verify_result(fs, result)  # logged, store flagged failing
            elif result.status == VerifyStatus.MISSING:
                continue  # gone since it was listed
            else:
                report.errors.append(f"{fs.path}: cannot read {st.id}: {result.error}")
            if progress is not None:
                progress(st.id, st.size)
    return report


def _record_store(ms: MetaStore, fs: FileStore) -> None:
    """The store doc from store.json, seen now on this machine, and the folder remembered."""
    doc = ms.store_doc(fs.id)
    if doc is None:
        doc = {k: v for k, v in fs.doc.items() if k != "_rev"}
        total, avail = fs.statvfs()
        transitions.touch_store(doc, ms.now(), total, avail, ms.machine_id)
        try:
            ms.lib.docs.save(doc)
        except Conflict:
            pass  # recorded meanwhile: keep that one
    ms.config.remember_store(fs.id, fs.path)


def _record_copy(ms: MetaStore, store_id: str, weight: int, result: Any) -> int:
    """Record one verified copy; 1 when the file doc is new."""
    now = ms.now()
    ch = result.content_hash
    mtime = result.mtime or 0
    stored = {store_id: schema.create_stored_value(weight, mtime, verified=now)}
    doc: Doc = schema.create_file(now, ch, stored, origin="user")
    try:
        ms.lib.docs.save(doc)
        return 1
    except Conflict:
        ms.lib.docs.update(ch.id, transitions.mark_verified, store_id, weight, mtime, now)
        return 0
