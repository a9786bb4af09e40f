"""The database interface every backend implements, and the named queries the app needs.

A `Library` holds two `Database`s, `docs` (`dmedia-1`: files, stores, machines) and
`log` (`log-1`: data-safety events, never edited), plus the named queries. Each backend
(SQLite in `sqlite.py`, CouchDB in `couch.py`) implements them its own way; the contract
suite in `tests/db/` runs against both and proves they answer alike.

Docs are plain dicts. `_rev` is opaque ("N-xxxx"): saving a doc whose `_rev` is not the
current one (or saving a new doc over an existing `_id`) raises Conflict; `save` sets the
new `_rev` on the dict it was given.

Who may read what (the read rule; README "How it works" says the same):
- Presentation (`cli.py`, `tui/`) reads docs and the log only through the MetaStore (its
  reads: `stores`, `store_doc`, `file_doc`, `docs`, `files_by_store`, `events`,
  `iter_events`, `health`, `change_token`) and the doc views (`views.py`); never `ms.lib`,
  never a `Database`.
- Operations (`metastore.py`, `checker.py`, `presence.py`), workers (`engine.py`,
  `smart.py`, `peer/service.py`) and the commands that build or move a whole library
  (`demo.py`, `migrate.py`, `rebuild.py`) use a Library and its named queries here.
- A walk over the log or the docs is `iter_events` / `iter_docs`: keyset paging (each page
  after the last `_id`), never OFFSET and never a paging loop written by hand.
- Pure policies (`health.py`, `transitions.py`, `durability.py`) read nothing: they are
  given docs.
"""

from __future__ import annotations

import abc
import itertools
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from dmedia_tui.errors import DmediaError

Doc = dict[str, Any]

DOCS_DB = "dmedia-1"
LOG_DB = "log-1"

# Docs per batch of `update_many`: one transaction (SQLite) or one `_bulk_docs` (CouchDB).
# Big enough that the per-commit fsync vanishes (2,000 docs per fsync), small enough that
# a batch holds the SQLite write lock for milliseconds, not seconds.
UPDATE_BATCH = 2000
# Docs per batch of `update_store_entries` (downgrade and purge of a whole store): a
# backend doing it in SQL writes ~20k docs in a fraction of a second, and fewer commits
# mean fewer fsyncs (50 per million docs).
SET_BATCH = 20_000
# The store-wide operations a backend may run as set operations (update_store_entries).
SET_DOWNGRADE = "downgrade"  # the store's copy counts 0: transitions.downgrade_store_in_file
SET_PURGE = "purge"  # the store's entry is removed: transitions.purge_store_in_file


class DatabaseError(DmediaError):
    """The database could not do what was asked (a message fit for one line)."""


class DatabaseOffline(DatabaseError):
    """The database cannot be reached, opened or read at all."""


class Conflict(DatabaseError):
    """The `_rev` given is not the current one."""


class NotFound(DatabaseError, KeyError):
    """No (live) doc with that `_id`."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else "not found"


# The key of a placeholder doc standing for a stored row that cannot be decoded (not JSON,
# not an object, nested too deeply). Only `page()` (the schema check's walk) returns such
# placeholders, so the check reports them; no backend saves a doc carrying it (CouchDB
# forbids unknown `_` members anyway), so a placeholder can never overwrite the row.
DAMAGED = "_damaged"


class InvalidDoc(DatabaseError):
    """A stored doc cannot be decoded (a damaged row). Skipped by the named queries."""

    def __init__(self, doc_id: Any, problem: str) -> None:
        super().__init__(f"{str(doc_id)[:80]!r}: damaged doc: {problem}")
        self.doc_id = doc_id
        self.problem = problem

    def placeholder(self) -> Doc:
        return {"_id": self.doc_id, DAMAGED: self.problem}


def is_damaged(doc: Any) -> bool:
    return isinstance(doc, dict) and DAMAGED in doc


@dataclass
class UpdateBatch:
    """One committed batch of `Database.update_many`.

    `saved`: IDs of the docs the transition changed (now saved). `errors`: the docs left
    as they were and why (NotFound, InvalidDoc, the transition's ValueError/TypeError, or
    Conflict after 20 tries). Docs the transition returned None for are in neither.
    """

    saved: list[str] = field(default_factory=list)
    errors: list[tuple[str, Exception]] = field(default_factory=list)


@dataclass(frozen=True)
class Change:
    id: str
    seq: str
    deleted: bool = False


@dataclass(frozen=True)
class Changes:
    results: list[Change]
    last_seq: str


class Database(abc.ABC):
    """One named database of JSON docs."""

    name: str

    @abc.abstractmethod
    def get(self, doc_id: str) -> Doc:
        """The current doc; NotFound if absent or deleted."""

    def get_or_none(self, doc_id: str) -> Doc | None:
        try:
            return self.get(doc_id)
        except NotFound:
            return None

    @abc.abstractmethod
    def get_many(self, doc_ids: list[str]) -> list[Doc | None]:
        """Docs in the order asked, None where absent."""

    @abc.abstractmethod
    def save(self, doc: Doc) -> Doc:
        """Create or update; sets doc['_rev']; Conflict on a stale or missing `_rev`."""

    @abc.abstractmethod
    def save_many(self, docs: list[Doc]) -> list[Doc | DatabaseError]:
        """Bulk save; per doc either the saved doc (with new `_rev`) or its error."""

    @abc.abstractmethod
    def delete(self, doc: Doc) -> None:
        """Delete the doc at doc['_rev']; Conflict if stale."""

    @abc.abstractmethod
    def page(self, limit: int = 1000, start_after: str | None = None) -> list[Doc]:
        """Up to `limit` docs in `_id` order, after `start_after`."""

    def iter_docs(self, page_size: int = 1000) -> Iterator[Doc]:
        """Every doc, in `_id` order, a page at a time."""
        after: str | None = None
        while True:
            docs = self.page(page_size, after)
            yield from docs
            if len(docs) < page_size:
                return
            after = docs[-1]["_id"]

    def iter_stored(
        self, page_size: int = 1000, start: str | None = None, stop: str | None = None
    ) -> Iterator[tuple[Any, Any]]:
        """Every doc as stored, in `_id` order: (id, JSON text) from a backend that keeps
        docs as text, so the check pass can try a fast decoder on the text first; else
        (id, doc). `decode_stored` gives the doc every other read would. `start`/`stop`:
        only the IDs in [start, stop) (the parts of a check split by `split_ids`)."""
        for doc in self.iter_docs(max(1, page_size)):
            doc_id = doc.get("_id")
            if start is not None and not (isinstance(doc_id, str) and doc_id >= start):
                continue
            if stop is not None and isinstance(doc_id, str) and doc_id >= stop:
                continue
            yield doc_id, doc

    def split_ids(self, parts: int) -> list[str]:
        """IDs that cut this database's `_id` range into about `parts` parts of similar
        size, so that a check can walk them in parallel (`iter_stored(start=, stop=)`);
        [] where the backend does not split (the check then walks it in one process)."""
        return []

    def decode_stored(self, doc_id: Any, stored: Any) -> Doc:
        """The doc of an `iter_stored` item, decoded as every read decodes it (a damaged
        row: its placeholder, as `page` gives it)."""
        return stored

    @abc.abstractmethod
    def count(self) -> int:
        """Number of live docs."""

    @abc.abstractmethod
    def update_seq(self) -> str:
        """An opaque token that changes whenever anything in the database changes. Cheap."""

    @abc.abstractmethod
    def changes(self, since: str | None = None, limit: int | None = None) -> Changes:
        """Changes after `since` (None: from the beginning). A change may be seen twice."""

    @abc.abstractmethod
    def wait_changes(self, since: str, timeout: float) -> str:
        """Block up to `timeout` s until update_seq() differs from `since`; return it."""

    def leaves(self, doc_id: str) -> list[Doc]:
        """The current doc, then every other live revision of it (replication conflicts).

        A single-writer backend never has conflicts: just the doc. NotFound if absent.
        """
        return [self.get(doc_id)]

    def resolve(self, merged: Doc, losing_revs: list[str]) -> Doc:
        """Save `merged` over the current revision and delete the losing revisions.

        Conflict when the current revision moved on meanwhile (merge again later).
        """
        if losing_revs:
            raise DatabaseError(f"{self.name}/{merged.get('_id')}: no revisions to resolve here")
        return self.save(merged)

    def update(self, doc_id: str, fn: Callable[..., Doc | None], *args: Any) -> Doc | None:
        """Read-modify-write with retry on Conflict.

        `fn(doc, *args)` returns the doc to save (changed in place or a new dict), or
        None to leave it as it is. Returns the saved doc, or None when nothing was
        saved. NotFound propagates.
        """
        for _ in range(20):
            doc = self.get(doc_id)
            new = fn(doc, *args)
            if new is None:
                return None
            try:
                return self.save(new)
            except Conflict:
                continue
        raise Conflict(f"{self.name}/{doc_id}: gave up after 20 conflicting updates")

    def update_many(
        self,
        doc_ids: Iterable[str],
        fn: Callable[..., Doc | None],
        *args: Any,
        batch_size: int = UPDATE_BATCH,
    ) -> Iterator[UpdateBatch]:
        """`update(doc_id, fn, *args)` for many docs, a batch at a time: a set operation.

        Yields an UpdateBatch once each batch is saved, so a caller can report its errors
        and a crash between batches leaves every doc either before or after `fn`, never
        half. `doc_ids` is consumed lazily (a batch at a time): it may be a generator
        that pages through an index while earlier batches are being written. A doc that
        cannot be updated (missing, damaged, `fn` raising ValueError/TypeError) is an
        error of its batch, never the end of the pass.

        This generic version reads a batch with `get_many`, saves it with `save_many`
        and retries the docs that conflicted; a backend may do better (SQLite: one
        transaction per batch, so no conflicts at all).
        """
        it = iter(doc_ids)
        while chunk := list(itertools.islice(it, max(1, batch_size))):
            yield self._update_batch(list(dict.fromkeys(chunk)), fn, args)

    def update_store_entries(
        self,
        doc_ids: Iterable[str],
        store_id: str,
        op: str,
        fn: Callable[[Doc, str], Doc | None],
        batch_size: int = SET_BATCH,
    ) -> Iterator[UpdateBatch]:
        """`fn(doc, store_id)` on many file docs, where `op` (SET_DOWNGRADE or SET_PURGE)
        names what fn does to the store's entry: the store-wide passes of a downgrade or
        a purge, a batch (one transaction / `_bulk_docs` rounds) at a time.

        Same contract as update_many. This generic version is update_many; a backend may
        do `op` as a set operation on the docs where the result is provably the doc `fn`
        would write (SQLite: SQL over its JSON for docs whose `stored` is already clean),
        and `fn` for the rest.
        """
        return self.update_many(doc_ids, fn, store_id, batch_size=batch_size)

    def _update_batch(
        self, doc_ids: list[str], fn: Callable[..., Doc | None], args: tuple[Any, ...]
    ) -> UpdateBatch:
        out = UpdateBatch()
        todo = doc_ids
        for _ in range(20):
            if not todo:
                return out
            new_docs: list[tuple[str, Doc]] = []
            for doc_id, doc in zip(todo, self.get_many(todo), strict=True):
                if doc is None:
                    out.errors.append((doc_id, NotFound(f"{self.name}/{doc_id}: not found")))
                    continue
                try:
                    new = fn(doc, *args)
                except (ValueError, TypeError) as e:
                    out.errors.append((doc_id, e))
                    continue
                if new is not None:
                    new_docs.append((doc_id, new))
            todo = []
            results = self.save_many([d for _, d in new_docs]) if new_docs else []
            for (doc_id, _), result in zip(new_docs, results, strict=True):
                if isinstance(result, Conflict):
                    todo.append(doc_id)  # changed meanwhile: read it again, apply again
                elif isinstance(result, DatabaseError):
                    out.errors.append((doc_id, result))
                else:
                    out.saved.append(doc_id)
        for doc_id in todo:
            msg = f"{self.name}/{doc_id}: gave up after 20 conflicting updates"
            out.errors.append((doc_id, Conflict(msg)))
        return out


# --- named query results ---------------------------------------------------------------


@dataclass(frozen=True)
class PlacementRow:
    """One group of the placement summary: files with the same origin and placement."""

    origin: str
    placement: str  # durability.placement_key(): "SID:copies,SID:copies" sorted, "" = nowhere
    count: int
    bytes: int


@dataclass(frozen=True)
class CopyDue:
    """A copy to verify: never-verified ones (verified None) come first."""

    file_id: str
    store_id: str
    verified: int | None
    bytes: int


@dataclass(frozen=True)
class VerificationStats:
    """Verification ages of the copies on one store (times are unix seconds)."""

    copies: int
    never: int
    oldest: int | None
    median: int | None
    newest: int | None


class Library(abc.ABC):
    """A dmedia library: its two databases and the named queries over them."""

    docs: Database
    log: Database

    @property
    @abc.abstractmethod
    def display_url(self) -> str:
        """Where the library is, safe to show (passwords masked)."""

    @property
    def worker_path(self) -> str | None:
        """Where another process of this machine opens this same library (an SQLite
        file), so that a check can be split across processes; None: checked in one."""
        return None

    @abc.abstractmethod
    def placement_summary(self) -> list[PlacementRow]:
        """File counts and bytes grouped by (origin, placement key), every origin.

        Never touches more than the summary index: cardinality is the number of distinct
        placements, not files, so this is the one query the dashboard runs on refresh.
        """

    @abc.abstractmethod
    def stores(self) -> list[Doc]:
        """Every `dmedia/store` doc, by `_id`."""

    @abc.abstractmethod
    def machines(self) -> list[Doc]:
        """Every `dmedia/machine` doc, by `_id`."""

    @abc.abstractmethod
    def files_by_store(
        self, store_id: str, limit: int = 100, after: tuple[int, str] | None = None
    ) -> list[Doc]:
        """File docs with a `stored[store_id]` entry, most fragile first.

        Ordered by (rank, _id); `after` is the (rank, _id) of the last row of the
        previous page.
        """

    @abc.abstractmethod
    def file_ids_by_store(
        self, store_id: str, limit: int = 1000, after: tuple[int, str] | None = None
    ) -> list[tuple[int, str]]:
        """(rank, _id) of the files with a `stored[store_id]` entry, in files_by_store
        order, without reading a single doc (a store-wide pass over a million files
        should not decode a million docs just to learn their IDs)."""

    def iter_file_ids_on(self, store_id: str, page_size: int = 5000) -> Iterator[str]:
        """IDs of the files with an entry for the store, each once, streamed from the index
        alone: what the store-wide passes (downgrade, purge) work through.

        Safe to update while streaming for those passes: downgrading or purging the
        store's entry only lowers a file's rank or removes its row, so no file moves past
        the cursor. This version pages by (rank, _id); a backend may stream in the order
        its docs are stored (SQLite: by _id, so a pass rewrites each page of the doc
        table once instead of once per batch that has a doc on it).
        """
        after: tuple[int, str] | None = None
        while True:
            page = self.file_ids_by_store(store_id, limit=page_size, after=after)
            for _, fid in page:
                yield fid
            if len(page) < page_size:
                return
            after = page[-1]

    def file_ids_on_among(self, store_id: str, prefixes: Iterable[str]) -> set[str]:
        """IDs of the files with an entry for the store that start with one of `prefixes`
        (two characters: a store's files/XX folders), what a store's recovery compares a
        few listed folders with. This version walks every ID on the store."""
        want = set(prefixes)
        return {fid for fid in self.iter_file_ids_on(store_id) if fid[:2] in want}

    @abc.abstractmethod
    def fragile_files(
        self, limit: int = 100, after: tuple[int, str] | None = None, origin: str = "user"
    ) -> list[Doc]:
        """Files of `origin` with durability < 3, ordered by (rank, _id)."""

    @abc.abstractmethod
    def files_by_placement(
        self, placement: str, limit: int = 100, after: str | None = None, origin: str = "user"
    ) -> list[Doc]:
        """Files of `origin` whose placement key is exactly `placement`, by `_id`."""

    @abc.abstractmethod
    def copies_due(self, store_id: str, verified_before: int, limit: int = 100) -> list[CopyDue]:
        """Copies on a store never verified or verified before the given time.

        Never-verified first (by file ID), then oldest `verified` first.
        """

    @abc.abstractmethod
    def verification_stats(self, store_id: str) -> VerificationStats:
        """Oldest / median / newest verification and never-verified count on a store."""

    @abc.abstractmethod
    def events(
        self,
        limit: int = 100,
        *,
        newest_first: bool = True,
        since: float | None = None,
        types: Iterable[str] | None = None,
        store_id: str | None = None,
        file_id: str | None = None,
        cursor: str | None = None,
    ) -> list[Doc]:
        """Log docs (`log-1`) filtered by time (>= since), type, store or file.

        Paged by log `_id` (which sorts by time): `cursor` is the `_id` of the last row
        of the previous page; rows strictly before it (newest_first) or after it.
        """

    def iter_events(
        self,
        *,
        newest_first: bool = False,
        since: float | None = None,
        types: Iterable[str] | None = None,
        store_id: str | None = None,
        file_id: str | None = None,
        page_size: int = 1000,
    ) -> Iterator[Doc]:
        """Every log doc `events()` would match, a page at a time: keyset paging on the
        log `_id` (each page starts after the last one's `_id`; no OFFSET), so a walk over
        the whole log is linear. The one loop over the log: callers never page by hand."""
        cursor: str | None = None
        while True:
            page = self.events(
                page_size,
                newest_first=newest_first,
                since=since,
                types=types,
                store_id=store_id,
                file_id=file_id,
                cursor=cursor,
            )
            yield from page
            if len(page) < page_size:
                return
            cursor = page[-1]["_id"]

    def conflicted_ids(self) -> list[str]:
        """`dmedia-1` doc IDs that may hold conflicting revisions (from replication).

        Candidates: `docs.leaves()` says which really do. A single-writer backend has none.
        """
        return []

    def check_storage(self) -> None:  # noqa: B027 - optional hook
        """Check the storage itself (every page of an SQLite file); DatabaseOffline if
        damaged. A server backend checks its own storage: nothing to do."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and file handles."""
