"""Copy a library into another one (embedded SQLite -> CouchDB), history included.

A user who moves to CouchDB must keep every doc of `dmedia-1` and every event of `log-1`.
`migrate` walks both databases of the source in `_id` order, a batch at a time, and saves
into the target what it lacks, without the source's `_rev`s (each backend makes its own).

- Idempotent: a doc already in the target with the same content (ignoring `_rev`) is
  skipped, so a second run copies nothing.
- Resumable: every batch is saved before the next is read, and nothing but the target's
  docs tells what is done, so a run cut short (Ctrl-C, a dropped connection) is finished by
  running it again.
- Never destructive by default: a doc present in the target with different content (the
  target was in use already) is kept as it is and reported; `overwrite=True` replaces it
  with the source's. Log docs are never edited, so for them that can only mean corruption.
- Design docs and deleted docs are not copied: each backend has its own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from dmedia_tui.db.base import Conflict, Database, DatabaseError, Doc, Library

BATCH = 500
MAX_DIFFERING_LISTED = 20  # IDs named in the report; the count is always exact

Progress = Callable[[str, int], None]  # (database name, docs done in this batch)


class MigrateError(DatabaseError):
    """The migration cannot run (one line)."""


@dataclass
class DbReport:
    """What happened to the docs of one database."""

    name: str
    source: int = 0  # docs read
    copied: int = 0  # created in the target
    same: int = 0  # already there, equal
    differing: int = 0  # there with other content (kept, unless overwritten)
    overwritten: int = 0
    failed: int = 0
    differing_ids: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class MigrateReport:
    source: str
    target: str
    dbs: list[DbReport]
    seconds: float = 0.0

    @property
    def copied(self) -> int:
        return sum(d.copied + d.overwritten for d in self.dbs)

    @property
    def differing(self) -> int:
        return sum(d.differing for d in self.dbs)

    @property
    def failed(self) -> int:
        return sum(d.failed for d in self.dbs)

    def to_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "target": self.target,
            "seconds": round(self.seconds, 3),
            "copied": self.copied,
            "differing": self.differing,
            "failed": self.failed,
            "databases": {d.name: d.to_json() for d in self.dbs},
        }


def _content(doc: Doc) -> Doc:
    return {k: v for k, v in doc.items() if k not in ("_rev", "_conflicts")}


def migrate_db(
    src: Database,
    dst: Database,
    overwrite: bool = False,
    batch: int = BATCH,
    progress: Progress | None = None,
) -> DbReport:
    """Copy what `dst` lacks of `src`, a batch at a time (see the module docstring)."""
    rep = DbReport(src.name)
    after: str | None = None
    while True:
        page = src.page(batch, after)
        if not page:
            break
        after = page[-1]["_id"]
        rep.source += len(page)
        present = dst.get_many([d["_id"] for d in page])
        todo: list[Doc] = []
        for doc, there in zip(page, present, strict=True):
            mine = _content(doc)
            if there is None:
                todo.append(mine)
            elif _content(there) == mine:
                rep.same += 1
            elif overwrite:
                todo.append({**mine, "_rev": there["_rev"]})
            else:
                rep.differing += 1
                if len(rep.differing_ids) < MAX_DIFFERING_LISTED:
                    rep.differing_ids.append(doc["_id"])
        if todo:
            replacing = ["_rev" in doc for doc in todo]
            for doc, res, over in zip(todo, dst.save_many(todo), replacing, strict=True):
                if not isinstance(res, DatabaseError):
                    if over:
                        rep.overwritten += 1
                    else:
                        rep.copied += 1
                elif isinstance(res, Conflict):
                    # Written by someone else between our read and our save: theirs stays.
                    rep.differing += 1
                    if len(rep.differing_ids) < MAX_DIFFERING_LISTED:
                        rep.differing_ids.append(doc["_id"])
                else:
                    rep.failed += 1
                    if len(rep.errors) < MAX_DIFFERING_LISTED:
                        rep.errors.append(str(res))
        if progress is not None:
            progress(src.name, len(page))
        if len(page) < batch:
            break
    return rep


def migrate(
    source: Library,
    target: Library,
    *,
    overwrite: bool = False,
    batch: int = BATCH,
    progress: Progress | None = None,
) -> MigrateReport:
    """Copy `dmedia-1` then `log-1` of `source` into `target`."""
    if source.display_url == target.display_url:
        raise MigrateError(f"the source and the target are the same library: {source.display_url}")
    started = time.monotonic()
    dbs = [
        migrate_db(source.docs, target.docs, overwrite, batch, progress),
        migrate_db(source.log, target.log, overwrite, batch, progress),
    ]
    return MigrateReport(
        source.display_url, target.display_url, dbs, seconds=time.monotonic() - started
    )


def count_docs(lib: Library) -> int:
    """Docs to migrate (for a progress bar)."""
    return lib.docs.count() + lib.log.count()
