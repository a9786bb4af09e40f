"""The embedded backend: both databases of a library in one SQLite file.

Why it looks like this:
- One file, WAL mode, `busy_timeout`, `BEGIN IMMEDIATE` for every write: several threads
  and several processes (the TUI, `daemon`, a CLI call from cron) can share a library.
  Readers never block; writers wait their turn. `synchronous=FULL`: metadata of a
  data-safety tool is worth an fsync per commit.
- One connection per thread (the engine calls from worker threads).
- Docs are stored as JSON text, so unknown keys and `x_*` keys round-trip untouched.
  Deleted docs keep a tombstone row, so `changes` reports deletions.
- The named queries read *derived* tables written in the same transaction as the doc
  (never a background indexer that could lag): `file` (origin, bytes, placement, rank,
  durability), `copy` (one row per `stored` entry) and `placement_sum` (origin,
  placement) -> (count, bytes), kept by +/- deltas so `placement_summary()` reads a
  table whose size is the number of distinct placements, not files. The numbers come
  from `dmedia_tui.durability`, like the CouchDB views', so both backends agree.
- A file we did not create is never touched: a non-SQLite file, a corrupt one (header,
  or any page: `PRAGMA quick_check` at open), an empty one (a lost library must not
  silently become a new empty one), or an SQLite file without our `application_id`
  raises DatabaseOffline before anything is written. Only a file this call created
  (`create=True` and the path did not exist) is initialised.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
import os
import sqlite3
import stat
import threading
import time
import urllib.parse
import weakref
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from dmedia_tui import durability
from dmedia_tui.db.base import (
    DAMAGED,
    DOCS_DB,
    LOG_DB,
    SET_BATCH,
    SET_DOWNGRADE,
    SET_PURGE,
    Change,
    Changes,
    Conflict,
    CopyDue,
    Database,
    DatabaseError,
    DatabaseOffline,
    Doc,
    InvalidDoc,
    Library,
    NotFound,
    PlacementRow,
    UpdateBatch,
    VerificationStats,
)
from dmedia_tui.faults import fault_point
from dmedia_tui.protocol import ALPHABET, RANDOM_B32LEN, is_id
from dmedia_tui.views import TYPE_FILE, TYPE_MACHINE, TYPE_STORE

APPLICATION_ID = 0x644D5431  # "dMT1": marks the file as a dmedia-tui library
SCHEMA_VERSION = 4
BUSY_TIMEOUT_MS = 10_000
POLL_INTERVAL = 0.1  # wait_changes() polls update_seq this often
_SQLITE_MAGIC = b"SQLite format 3\x00"
QUICK_CHECK_OPEN_BYTES = 32 * 1024 * 1024  # whole-file quick_check at open up to this size
QUICK_CHECK_OPEN_SECONDS = 0.5  # ...and never longer than this
# Pages of 16 KiB for a new library (an existing one keeps the size it was made with):
# a store-wide downgrade or purge rewrites docs and index entries spread over the whole
# file, and SQLite's cost is per page, not per byte. Measured on libraries built like a
# real one (random IDs, b-trees 2/3 full), busiest store: at 1M files downgrade 53 -> 41 us
# a copy, purge 58 -> 45; at 100k 45 -> 36 for both; `check` 5.7 -> 5.0 us a doc; the
# dashboard unchanged. The cost: a batch of small imports dirties as many pages, each 4x
# bigger: 5,000 small files into a 1M-file library 0.54 -> 0.56 ms a file (100k: 0.31 ->
# 0.35); into a new library unchanged (tmpfs and disk).
PAGE_SIZE = 16384
CACHE_KIB = 32 * 1024  # page cache per connection
BULK_CACHE_KIB = 256 * 1024  # ...while a store-wide pass runs (SQLiteLibrary._bulk)
_CHUNK = 500  # ids per "IN (...)" query, well under SQLite's variable limit
_DB_KEYS = {DOCS_DB: 1, LOG_DB: 2}
# Named queries skip damaged rows in SQL, so a page is only short at the end of its range
# (paging stops on a short page); _decode_rows still guards what SQLite calls valid.
_VALID = " AND json_valid(d.json) AND json_type(d.json) = 'object'"

# Schema 2 added store_sum (per-store copy counts, for verification_stats at scale).
_MIGRATE_1_TO_2 = """
CREATE TABLE store_sum (
    store_id TEXT PRIMARY KEY, copies INTEGER NOT NULL, never INTEGER NOT NULL
) WITHOUT ROWID;
INSERT INTO store_sum (store_id, copies, never)
    SELECT store_id, count(*), count(*) - count(verified) FROM copy GROUP BY store_id;
"""

# Schema 3 added verify_hour: how many copies of a store were last verified in each hour,
# so verification_stats finds its median in ~one row per hour with verifications plus a
# walk inside one hour, instead of an OFFSET over half of a store's verified copies
# (measured 274 ms at 100k files, growing with the store).
VERIFY_BUCKET = 3600
_MIGRATE_2_TO_3 = f"""
CREATE TABLE verify_hour (
    store_id TEXT NOT NULL, hour INTEGER NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (store_id, hour)
) WITHOUT ROWID;
INSERT INTO verify_hour (store_id, hour, count)
    SELECT store_id, verified / {VERIFY_BUCKET}, count(*) FROM copy
    WHERE verified IS NOT NULL GROUP BY 1, 2;
"""

# Schema 4 moved the changes feed from an index on doc (db, seq) to an append-only log,
# `change`. A store pass rewrites docs in _id order, whose old seqs are anywhere in seq
# order: deleting them from the index rewrote most of it in every batch (0.58 pages a copy
# at 1M files, growing with the library). Now a write appends its new seq to `change`; an
# ordinary write deletes the doc's old entry there, a pass only notes the old seqs in
# `change_gone` (appended too) and deletes them all at its end in one sorted sweep, each
# page of `change` rewritten once. The feed skips any entry that is not its doc's current
# seq (doc.seq, no longer indexed), so a leftover entry can never be reported.
_CHANGE_TABLES = """
CREATE TABLE change (
    db INTEGER NOT NULL, seq INTEGER NOT NULL, id TEXT NOT NULL, PRIMARY KEY (db, seq)
) WITHOUT ROWID;
CREATE TABLE change_gone (db INTEGER NOT NULL, seq INTEGER NOT NULL);
"""
_MIGRATE_3_TO_4 = f"""{_CHANGE_TABLES}
INSERT INTO change (db, seq, id) SELECT db, seq, id FROM doc ORDER BY db, seq;
DROP INDEX doc_seq;
"""
_MIGRATIONS = {1: _MIGRATE_1_TO_2, 2: _MIGRATE_2_TO_3, 3: _MIGRATE_3_TO_4}

_SCHEMA = f"""
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE dbinfo (
    db INTEGER PRIMARY KEY, name TEXT NOT NULL, seq INTEGER NOT NULL, live INTEGER NOT NULL
);
CREATE TABLE doc (
    db INTEGER NOT NULL, id TEXT NOT NULL, rev TEXT NOT NULL, seq INTEGER NOT NULL,
    deleted INTEGER NOT NULL, type TEXT, json TEXT,
    PRIMARY KEY (db, id)
) WITHOUT ROWID;
{_CHANGE_TABLES}CREATE INDEX doc_type ON doc (db, type, id) WHERE deleted = 0;
CREATE TABLE file (
    id TEXT PRIMARY KEY, origin TEXT NOT NULL, bytes INTEGER NOT NULL,
    placement TEXT NOT NULL, rank INTEGER NOT NULL, durability INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX file_placement ON file (origin, placement, id);
CREATE INDEX file_fragile ON file (origin, rank, id) WHERE durability < 3;
CREATE TABLE copy (
    file_id TEXT NOT NULL, store_id TEXT NOT NULL, copies INTEGER NOT NULL,
    verified INTEGER, bytes INTEGER NOT NULL, rank INTEGER NOT NULL,
    PRIMARY KEY (file_id, store_id)
) WITHOUT ROWID;
CREATE INDEX copy_verified ON copy (store_id, verified, file_id);
CREATE INDEX copy_rank ON copy (store_id, rank, file_id);
CREATE TABLE placement_sum (
    origin TEXT NOT NULL, placement TEXT NOT NULL, count INTEGER NOT NULL,
    bytes INTEGER NOT NULL, PRIMARY KEY (origin, placement)
) WITHOUT ROWID;
CREATE TABLE store_sum (
    store_id TEXT PRIMARY KEY, copies INTEGER NOT NULL, never INTEGER NOT NULL
) WITHOUT ROWID;
CREATE TABLE verify_hour (
    store_id TEXT NOT NULL, hour INTEGER NOT NULL, count INTEGER NOT NULL,
    PRIMARY KEY (store_id, hour)
) WITHOUT ROWID;
CREATE TABLE event (
    id TEXT PRIMARY KEY, type TEXT, time REAL, store_id TEXT, file_id TEXT
) WITHOUT ROWID;
CREATE INDEX event_type ON event (type, id);
CREATE INDEX event_time ON event (time);
CREATE INDEX event_store ON event (store_id, id);
CREATE INDEX event_file ON event (file_id, id);
"""


# --- downgrade and purge of a store as set operations (update_store_entries) -----------
# One row per doc of the batch done in SQL: what its file row and the placement summary
# become. `n`, the rowid (dense: 1, 2, ... in the order the rows are inserted), numbers
# the rows: their new update seqs are seq + n - base. (It was `row_number() OVER ()`:
# the window buffered every row of the join in an ephemeral table first; this INSERT
# went from 18.5 to 12.9 us a row, 100k library.)
_SET_TEMP_ROWS = """CREATE TEMP TABLE IF NOT EXISTS set_row (
    n INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, changed INTEGER NOT NULL,
    c INTEGER NOT NULL, never INTEGER NOT NULL, origin TEXT NOT NULL, bytes INTEGER NOT NULL,
    old_pl TEXT NOT NULL, new_pl TEXT NOT NULL, rank INTEGER NOT NULL, dur INTEGER NOT NULL,
    rev TEXT NOT NULL, old_seq INTEGER NOT NULL
)"""
# Docs done in SQL: the store's entry is clean (an object; copies a whole number, the one
# the `copy` table indexes, as the placement string is rewritten from it; mtime a whole
# number >= 0; `verified` one too if present; `pinned` true if present). Any other doc
# gets fn. (`x NOT IN (...)` is NULL, so not 0, when the key is absent.) The doc is
# parsed once (json_each over its `stored`), the entry's checks parse only the entry.
# CASE, not AND: only CASE promises json_type never sees text that is not JSON. Other
# stores' entries are left as they are, where fn's clean_stored would also clean them:
# checking every entry cost 27 us a doc, more than the whole set operation's budget.
_SET_DOABLE = """CASE
    WHEN e.type IS NOT 'object' THEN 0
    WHEN json_type(e.value, '$.copies') IS NOT 'integer' THEN 0
    WHEN json_type(e.value, '$.mtime') IS NOT 'integer' THEN 0
    WHEN json_type(e.value, '$.verified') NOT IN ('integer') THEN 0
    WHEN json_type(e.value, '$.pinned') NOT IN ('true') THEN 0
    ELSE json_extract(e.value, '$.copies') = cp.copies
        AND json_extract(e.value, '$.mtime') >= 0
        AND coalesce(json_extract(e.value, '$.verified'), 0) >= 0
END"""
# The batch's IDs come as one JSON array (:ids), and CROSS JOIN fixes the join order:
# driven by them, never by a scan of `doc`.
_SET_JOIN = """FROM json_each(:ids) t
CROSS JOIN copy cp ON cp.file_id = t.value AND cp.store_id = :s
CROSS JOIN file f ON f.id = t.value
CROSS JOIN doc d ON d.db = 1 AND d.id = t.value AND d.deleted = 0"""
_SET_FROM = f"""{_SET_JOIN}
CROSS JOIN json_each(iif(json_valid(d.json), d.json, '{{}}'), '$.stored') e
WHERE e.key = :s AND {_SET_DOABLE}"""
# A purge removes the store's entry whatever it holds, as fn does after cleaning it, so
# every doc with a `copy` row for the store is done in SQL (the indexer writes one for
# each entry under a store ID, in the doc's own transaction: its `stored` is an object
# with that key), and only text that is not JSON goes to fn. Without the entry's checks
# and the walk over `stored`, the INSERT took 17 -> 10 us a copy (100k files).
_SET_FROM_PURGE = f"""{_SET_JOIN}
WHERE json_valid(d.json)"""
_NEW_REV = (
    "(CAST(substr(d.rev, 1, instr(d.rev, '-') - 1) AS INTEGER) + 1)"
    " || '-' || lower(hex(randomblob(16)))"
)
_T = durability.TARGET
_SET_COLS = (
    "INSERT INTO temp.set_row"
    " (id, changed, c, never, origin, bytes, old_pl, new_pl, rank, dur, rev, old_seq)"
)
_SET_SELECT_DOWNGRADE = f"""{_SET_COLS}
SELECT f.id, cp.copies > 0, cp.copies, cp.verified IS NULL, f.origin, f.bytes,
    f.placement,
    trim(replace(',' || f.placement || ',', ',' || :s || ':' || cp.copies || ',',
        ',' || :s || ':0,'), ','),
    f.rank - min({_T}, f.durability) + min({_T}, f.durability - cp.copies),
    f.durability - cp.copies, {_NEW_REV}, d.seq
{_SET_FROM}"""
_SET_SELECT_PURGE = f"""{_SET_COLS}
SELECT f.id, 1, cp.copies, cp.verified IS NULL, f.origin, f.bytes,
    f.placement,
    trim(replace(',' || f.placement || ',', ',' || :s || ':' || cp.copies || ',', ','), ','),
    min({_T}, length(f.placement) - length(replace(f.placement, ',', '')))
        + min({_T}, f.durability - cp.copies),
    f.durability - cp.copies, {_NEW_REV}, d.seq
{_SET_FROM_PURGE}"""
_SET_INDEX = [
    "UPDATE file SET placement = r.new_pl, rank = r.rank, durability = r.dur"
    " FROM temp.set_row r WHERE file.id = r.id AND r.changed",
    # Subqueries, not UPDATE ... FROM: SQLite would drive that by a scan of the big table.
    # (The store's own row gets copies 0 in the same pass: a purge has deleted it.)
    "UPDATE copy SET rank = (SELECT r.rank FROM temp.set_row r WHERE r.id = copy.file_id),"
    " copies = iif(store_id = :s, 0, copies)"
    " WHERE file_id IN (SELECT id FROM temp.set_row WHERE changed)",
    # total(), not sum(): a sum beyond SQLite's INTEGER saturates (like _i64) instead of
    # failing the batch, and is exact below 2**53 bytes.
    "INSERT INTO placement_sum (origin, placement, count, bytes)"
    " SELECT origin, old_pl, -count(*), -CAST(total(bytes) AS INTEGER) FROM temp.set_row"
    " WHERE changed GROUP BY origin, old_pl"
    " ON CONFLICT (origin, placement) DO UPDATE SET"
    " count=count+excluded.count, bytes=bytes+excluded.bytes",
    "INSERT INTO placement_sum (origin, placement, count, bytes)"
    " SELECT origin, new_pl, count(*), CAST(total(bytes) AS INTEGER) FROM temp.set_row"
    " WHERE changed GROUP BY origin, new_pl"
    " ON CONFLICT (origin, placement) DO UPDATE SET"
    " count=count+excluded.count, bytes=bytes+excluded.bytes",
    "DELETE FROM placement_sum WHERE count <= 0",
]
# The new seqs appended to the change log, the old ones noted for the sweep at the end of
# the pass (_sweep_changes): deleting them here rewrote most of the log in every batch.
_SET_LOG = [
    "INSERT INTO change (db, seq, id) SELECT 1, :seq + n - :base, id FROM temp.set_row"
    " WHERE changed ORDER BY n",
    "INSERT INTO change_gone (db, seq) SELECT 1, old_seq FROM temp.set_row WHERE changed",
]
_SET_DOWNGRADE = [
    "UPDATE doc SET (rev, seq, json) = (SELECT r.rev, :seq + r.n - :base,"
    " json_set(doc.json, '$._rev', r.rev, :p || '.copies', 0)"
    " FROM temp.set_row r WHERE r.id = doc.id)"
    " WHERE db = 1 AND id IN (SELECT id FROM temp.set_row WHERE changed)",
    *_SET_LOG,
    *_SET_INDEX,
]
_SET_PURGE = [
    "UPDATE doc SET (rev, seq, json) = (SELECT r.rev, :seq + r.n - :base,"
    " json_set(json_remove(doc.json, :p), '$._rev', r.rev)"
    " FROM temp.set_row r WHERE r.id = doc.id)"
    " WHERE db = 1 AND id IN (SELECT id FROM temp.set_row WHERE changed)",
    *_SET_LOG,
    # The purged copies' verification hours go out of verify_hour before their rows go.
    "INSERT INTO verify_hour (store_id, hour, count)"
    f" SELECT :s, verified / {VERIFY_BUCKET}, -count(*) FROM copy"
    " WHERE store_id = :s AND file_id IN (SELECT id FROM temp.set_row)"
    " AND verified IS NOT NULL GROUP BY 2"
    " ON CONFLICT (store_id, hour) DO UPDATE SET count=count+excluded.count",
    "DELETE FROM verify_hour WHERE store_id = :s AND count <= 0",
    "DELETE FROM copy WHERE store_id = :s AND file_id IN (SELECT id FROM temp.set_row)",
    *_SET_INDEX,
    "UPDATE store_sum SET copies = copies - (SELECT count(*) FROM temp.set_row),"
    " never = never - (SELECT total(never) FROM temp.set_row) WHERE store_id = :s",
    "DELETE FROM store_sum WHERE copies <= 0",
]


log = logging.getLogger("dmedia_tui.db")


def _decode(text: Any, doc_id: Any) -> Doc:
    """One stored row as a doc; InvalidDoc when the row is damaged."""
    try:
        doc = json.loads(text)
    except (TypeError, ValueError, RecursionError) as e:
        raise InvalidDoc(doc_id, f"not readable JSON ({_reason(e)[:80]})") from None
    if not isinstance(doc, dict):
        raise InvalidDoc(doc_id, f"not a JSON object ({type(doc).__name__})")
    return doc


def _decode_rows(rows: Iterable[tuple[Any, Any]], keep_damaged: bool = False) -> list[Doc]:
    """(id, json) rows as docs. A damaged row is skipped (or, for the schema check's walk,
    stands as a placeholder doc), so one bad row never stops a query."""
    out: list[Doc] = []
    for doc_id, text in rows:
        try:
            out.append(_decode(text, doc_id))
        except InvalidDoc as e:
            if keep_damaged:
                out.append(e.placeholder())
            else:
                log.warning("skipped %s", e)
    return out


_CUT_CHARS = 12  # the leading characters two IDs are cut between (60 bits of base32)


def _cut_span(lo: str, hi: str, parts: int) -> list[str]:
    """Up to parts - 1 strings evenly between `lo` and `hi`, each > lo and <= hi,
    ascending: their first _CUT_CHARS characters read as numbers in the digits of the
    IDs' base32 alphabet (its digits and letters are not contiguous in ASCII), or of
    ASCII when one is not base32."""
    head = lo[:_CUT_CHARS] + hi[:_CUT_CHARS]
    digits = ALPHABET if all(ch in ALPHABET for ch in head) else "".join(map(chr, range(128)))
    base = len(digits)

    def num(s: str) -> int:
        n = 0
        for ch in s[:_CUT_CHARS].ljust(_CUT_CHARS, digits[0]):
            n = n * base + min(digits.find(ch) if ch in digits else base - 1, base - 1)
        return n

    def text(n: int) -> str:
        out = []
        for _ in range(_CUT_CHARS):
            n, d = divmod(n, base)
            out.append(digits[d])
        return "".join(reversed(out)).rstrip(digits[0]) or digits[0]

    a, b = num(lo), num(hi)
    cuts: list[str] = []
    for k in range(1, parts):
        cut = text(a + (b - a) * k // parts)
        if lo < cut <= hi and (not cuts or cut > cuts[-1]):
            cuts.append(cut)
    return cuts


def _reason(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return e.strerror.lower()
    return str(e).splitlines()[0] if str(e) else type(e).__name__


def _rev_gen(rev: str) -> int:
    head, _, _ = rev.partition("-")
    return int(head) if head.isdigit() else 0


def _seq_int(since: str | None) -> int:
    if since is None or since == "":
        return 0
    try:
        n = int(since)
    except (TypeError, ValueError):
        raise DatabaseError(f"not an update sequence of this library: {since!r:.40}") from None
    return max(0, n)


def _verified(entry: Any) -> int | None:
    """The `verified` time of a stored entry, None when absent or not a number."""
    if isinstance(entry, dict):
        v = entry.get("verified")
        if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= durability.MAX_INT:
            return v
    return None


def _num(value: Any) -> float | None:
    """A number SQLite can bind (an int beyond int64 would crash the write), else None."""
    if isinstance(value, float) or (isinstance(value, int) and not isinstance(value, bool)):
        return value if -durability.MAX_INT <= value <= durability.MAX_INT else None
    return None


def _i64(n: int) -> int:
    """A sum clamped to SQLite's INTEGER: binding a larger Python int raises OverflowError."""
    return max(-(2**63), min(2**63 - 1, n))


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _file_row(doc: Doc) -> tuple[str, int, str, int, int, list[tuple[str, int]]]:
    """(origin, bytes, placement, rank, durability, stored items) of a file doc.

    The same numbers as `durability.placement_key/rank/durability` (test_sqlite proves
    it on random malformed docs), computed from one `stored_items` pass: this runs for
    every file doc written, and bulk writes of a million docs feel the difference.
    """
    items = durability.stored_items(doc)
    dur = sum(c for _, c in items)
    rank = min(durability.TARGET, len(items)) + min(durability.TARGET, dur)
    placement = ",".join(f"{sid}:{c}" for sid, c in items)
    return durability.file_origin(doc), durability.file_bytes(doc), placement, rank, dur, items


def _copy_rows(
    doc: Doc, items: list[tuple[str, int]], rank: int, size: int
) -> list[tuple[Any, ...]]:
    stored = doc["stored"] if items else {}
    return [
        (doc["_id"], sid, copies, _verified(stored.get(sid)), size, rank) for sid, copies in items
    ]


class SQLiteDatabase(Database):
    """One of the two databases of an SQLiteLibrary (rows tagged with its key)."""

    def __init__(self, lib: SQLiteLibrary, name: str) -> None:
        self.name = name
        self._lib = lib
        self._key = _DB_KEYS[name]

    def __repr__(self) -> str:
        return f"<SQLiteDatabase {self.name} in {self._lib.path}>"

    # --- reads ---------------------------------------------------------------------

    def get(self, doc_id: str) -> Doc:
        with self._lib._read() as c:
            row = c.execute(
                "SELECT json FROM doc WHERE db=? AND id=? AND deleted=0", (self._key, doc_id)
            ).fetchone()
        if row is None:
            raise NotFound(f"{self.name}/{doc_id}: not found")
        return _decode(row[0], doc_id)

    def get_many(self, doc_ids: list[str]) -> list[Doc | None]:
        found: dict[str, str] = {}
        with self._lib._read() as c:
            for chunk in _chunks(list(dict.fromkeys(doc_ids))):
                marks = ",".join("?" * len(chunk))
                found.update(
                    c.execute(
                        f"SELECT id, json FROM doc WHERE db=? AND deleted=0 AND id IN ({marks})",
                        (self._key, *chunk),
                    )
                )
        # Decoded per position: callers may edit a doc they asked for twice.
        out: list[Doc | None] = []
        for i in doc_ids:
            docs = _decode_rows([(i, found[i])]) if i in found else []
            out.append(docs[0] if docs else None)
        return out

    def page(self, limit: int = 1000, start_after: str | None = None) -> list[Doc]:
        with self._lib._read() as c:
            rows = c.execute(
                "SELECT id, json FROM doc WHERE db=? AND id>? AND deleted=0 ORDER BY id LIMIT ?",
                (self._key, start_after if start_after is not None else "", max(0, limit)),
            ).fetchall()
        return _decode_rows(rows, keep_damaged=True)

    def iter_stored(
        self, page_size: int = 1000, start: str | None = None, stop: str | None = None
    ) -> Iterator[tuple[Any, Any]]:
        # The rows as stored: the check pass decodes the common case faster than `_decode`.
        limit = max(1, page_size)
        upto = "" if stop is None else " AND id<?"
        tail = () if stop is None else (stop,)
        first = start is not None
        after = start if start is not None else ""
        while True:
            with self._lib._read() as c:
                rows = c.execute(
                    f"SELECT id, json FROM doc WHERE db=? AND id{'>=' if first else '>'}?"
                    f"{upto} AND deleted=0 ORDER BY id LIMIT ?",
                    (self._key, after, *tail, limit),
                ).fetchall()
            yield from rows
            if len(rows) < limit:
                return
            after, first = rows[-1][0], False

    def split_ids(self, parts: int) -> list[str]:
        # File and log IDs are random or time-ordered base32: cut the span between the
        # first and last ID evenly (two index lookups; no OFFSET, which walks half the
        # table). Random IDs split ~evenly by count; a part only costs time if uneven.
        if parts < 2:
            return []
        with self._lib._read() as c:
            ends = [
                c.execute(
                    f"SELECT id FROM doc WHERE db=? ORDER BY id {order} LIMIT 1", (self._key,)
                ).fetchone()
                for order in ("ASC", "DESC")
            ]
        if ends[0] is None or ends[1] is None:
            return []
        return _cut_span(str(ends[0][0]), str(ends[1][0]), parts)

    def decode_stored(self, doc_id: Any, stored: Any) -> Doc:
        try:
            return _decode(stored, doc_id)
        except InvalidDoc as e:
            return e.placeholder()

    def count(self) -> int:
        with self._lib._read() as c:
            return c.execute("SELECT live FROM dbinfo WHERE db=?", (self._key,)).fetchone()[0]

    def update_seq(self) -> str:
        # A primary-key lookup in a two-row table: cheap enough to poll twice a second.
        # Each statement is its own read transaction, so another process's commit is
        # seen at once (WAL readers always start from the newest commit).
        with self._lib._read() as c:
            return str(c.execute("SELECT seq FROM dbinfo WHERE db=?", (self._key,)).fetchone()[0])

    def changes(self, since: str | None = None, limit: int | None = None) -> Changes:
        start = _seq_int(since)
        with self._lib._read(snapshot=True) as c:
            # Driven by the log in seq order; an entry that is not its doc's current seq
            # (an old one a store pass has not swept yet) is skipped.
            sql = (
                "SELECT c.id, c.seq, d.deleted FROM change c"
                " CROSS JOIN doc d ON d.db = c.db AND d.id = c.id"
                " WHERE c.db=? AND c.seq>? AND d.seq = c.seq ORDER BY c.seq"
            )
            args: tuple[Any, ...] = (self._key, start)
            if limit is not None:
                sql += " LIMIT ?"
                args += (max(0, limit),)
            rows = c.execute(sql, args).fetchall()
            current = c.execute("SELECT seq FROM dbinfo WHERE db=?", (self._key,)).fetchone()[0]
        results = [Change(i, str(s), bool(d)) for i, s, d in rows]
        if limit is not None and len(rows) >= limit and rows:
            last = rows[-1][1]
        else:
            last = max(current, start)
        return Changes(results, str(last))

    def wait_changes(self, since: str, timeout: float) -> str:
        deadline = time.monotonic() + max(0.0, timeout)
        while True:
            seq = self.update_seq()
            left = deadline - time.monotonic()
            if seq != since or left <= 0:
                return seq
            time.sleep(min(POLL_INTERVAL, left))

    # --- writes --------------------------------------------------------------------

    def save(self, doc: Doc) -> Doc:
        result = self.save_many([doc])[0]
        if isinstance(result, DatabaseError):
            raise result
        return result

    def save_many(self, docs: list[Doc]) -> list[Doc | DatabaseError]:
        return self._write([(d, False) for d in docs])

    def delete(self, doc: Doc) -> None:
        result = self._write([(doc, True)])[0]
        if isinstance(result, DatabaseError):
            raise result

    def _write(self, items: list[tuple[Doc, bool]]) -> list[Doc | DatabaseError]:
        """Save or delete docs in one transaction; per-doc Conflict/NotFound/errors."""
        ids = [d.get("_id") for d, _ in items if isinstance(d, dict)]
        ids = list(dict.fromkeys(i for i in ids if isinstance(i, str) and i))
        with self._lib._write() as c:
            state: dict[str, tuple[str, bool]] = {}
            for chunk in _chunks(ids):
                marks = ",".join("?" * len(chunk))
                for doc_id, rev, deleted in c.execute(
                    f"SELECT id, rev, deleted FROM doc WHERE db=? AND id IN ({marks})",
                    (self._key, *chunk),
                ):
                    state[doc_id] = (rev, bool(deleted))
            results, new_revs = self._apply(c, items, state)
            if len(items) > 1:
                fault_point("db.many_written")  # a save_many written, not committed
        # Only once the transaction is committed do the callers' dicts get their new _rev.
        for doc, rev in new_revs:
            doc["_rev"] = rev
        return results

    def _apply(
        self,
        c: sqlite3.Connection,
        items: list[tuple[Doc, bool]],
        state: dict[str, tuple[str, bool]],
    ) -> tuple[list[Doc | DatabaseError], list[tuple[Doc, str]]]:
        """Write docs inside the caller's transaction, given the current (rev, deleted)
        of their IDs: per-doc results, and the (doc, new rev) pairs written."""
        results: list[Doc | DatabaseError | None] = [None] * len(items)
        new_revs: list[tuple[Doc, str]] = []
        seq, live = c.execute("SELECT seq, live FROM dbinfo WHERE db=?", (self._key,)).fetchone()
        rows: list[tuple[Any, ...]] = []
        final: dict[str, Doc | None] = {}  # id -> last live doc written (None: deleted)
        for n, (doc, is_delete) in enumerate(items):
            try:
                rev, body, text = self._prepare(doc, is_delete, state)
            except DatabaseError as err:
                results[n] = err
                continue
            doc_id = doc["_id"]
            was_live = doc_id in state and not state[doc_id][1]
            dead = is_delete or doc.get("_deleted") is True
            seq += 1
            live += (0 if dead else 1) - (1 if was_live else 0)
            state[doc_id] = (rev, dead)
            typ = None if dead else _str(doc.get("type"))
            rows.append((self._key, doc_id, rev, seq, int(dead), typ, text))
            final[doc_id] = body
            new_revs.append((doc, rev))
            results[n] = doc
        if rows:
            # The docs' old entries out of the change log (a doc written twice here: its
            # 2nd delete finds nothing), then the docs, then one entry for each at its
            # last seq.
            key = self._key
            c.executemany(
                "DELETE FROM change WHERE db=?1"
                " AND seq=(SELECT seq FROM doc WHERE db=?1 AND id=?2)",
                [(key, i) for i in final],
            )
            c.executemany(
                "INSERT INTO doc (db, id, rev, seq, deleted, type, json)"
                " VALUES (?,?,?,?,?,?,?) ON CONFLICT (db, id) DO UPDATE SET"
                " rev=excluded.rev, seq=excluded.seq, deleted=excluded.deleted,"
                " type=excluded.type, json=excluded.json",
                rows,
            )
            last = {r[1]: r[3] for r in rows}
            c.executemany(
                "INSERT INTO change (db, seq, id) VALUES (?,?,?)",
                [(key, n, i) for i, n in sorted(last.items(), key=lambda kv: kv[1])],
            )
            c.execute("UPDATE dbinfo SET seq=?, live=? WHERE db=?", (seq, live, self._key))
            if self.name == DOCS_DB:
                _index_files(c, final)
            else:
                _index_events(c, final)
        return results, new_revs  # type: ignore[return-value]

    def _update_batch(
        self, doc_ids: list[str], fn: Callable[..., Doc | None], args: tuple[Any, ...]
    ) -> UpdateBatch:
        """Read, transform and write a batch in one write transaction: nothing can change
        a doc between its read and its write, so there is nothing to retry, and a crash
        leaves the whole batch before or after."""
        out = UpdateBatch()
        with self._lib._write() as c:
            written = self._update_in(c, doc_ids, fn, args, out)
            fault_point("db.batch_written")  # written, not committed: rolled back whole
        _collect(written, out)
        return out

    def _update_in(
        self,
        c: sqlite3.Connection,
        doc_ids: list[str],
        fn: Callable[..., Doc | None],
        args: tuple[Any, ...],
        out: UpdateBatch,
    ) -> list[tuple[Doc, Doc | DatabaseError]]:
        """fn on each doc inside the caller's write transaction: (doc, result) pairs of
        the docs written; missing docs and fn's errors go to out.errors."""
        found: dict[str, tuple[str, int, Any]] = {}
        for chunk in _chunks(doc_ids):
            marks = ",".join("?" * len(chunk))
            for doc_id, rev, deleted, text in c.execute(
                f"SELECT id, rev, deleted, json FROM doc WHERE db=? AND id IN ({marks})",
                (self._key, *chunk),
            ):
                found[doc_id] = (rev, deleted, text)
        state = {i: (rev, bool(deleted)) for i, (rev, deleted, _) in found.items()}
        items: list[tuple[Doc, bool]] = []
        for doc_id in doc_ids:
            row = found.get(doc_id)
            if row is None or row[1]:
                out.errors.append((doc_id, NotFound(f"{self.name}/{doc_id}: not found")))
                continue
            try:
                new = fn(_decode(row[2], doc_id), *args)
            except (InvalidDoc, ValueError, TypeError) as e:
                out.errors.append((doc_id, e))
                continue
            if new is not None:
                items.append((new, False))
        results, _ = self._apply(c, items, state)
        return [(doc, result) for (doc, _), result in zip(items, results, strict=True)]

    def update_store_entries(
        self,
        doc_ids: Iterable[str],
        store_id: str,
        op: str,
        fn: Callable[[Doc, str], Doc | None],
        batch_size: int = SET_BATCH,
    ) -> Iterator[UpdateBatch]:
        """Downgrade or purge a store's entries in SQL, a batch per transaction.

        Per-doc Python (decode, fn, encode, reindex) cost ~250 us a copy; this does the
        same in SQLite's JSON functions and a few UPDATEs over the derived tables. Only
        docs whose entry for this store is clean (an object with whole copies/mtime >= 0,
        `verified` a whole number if present, `pinned` true if present, and its copies
        the number the `copy` table indexes) are done in SQL, and for a purge, which
        removes the entry whatever it holds, every doc with an entry; every other doc
        gets fn, in the same transaction. In SQL only that entry and `_rev` change: a
        malformed entry of another store is left as it is, where fn's clean_stored would
        also have rewritten it (checking every entry cost more than the whole pass; the
        indexes are right either way, and tests/test_set_ops.py pins this).
        """
        if (
            self.name != DOCS_DB
            or op not in (SET_DOWNGRADE, SET_PURGE)
            or not is_id(store_id, RANDOM_B32LEN)
        ):
            yield from super().update_store_entries(doc_ids, store_id, op, fn, batch_size)
            return
        it = iter(doc_ids)
        with self._lib._bulk():
            self._sweep_changes()  # what a pass that died before its end left
            while chunk := list(itertools.islice(it, max(1, batch_size))):
                yield self._set_batch(list(dict.fromkeys(chunk)), store_id, op, fn)
            self._sweep_changes()

    def _sweep_changes(self) -> None:
        """Delete the entries a store pass superseded from the change log, in one sorted
        sweep (a transaction of its own: the feed never reports them anyway)."""
        with self._lib._write() as c:
            if c.execute("SELECT 1 FROM change_gone WHERE db=? LIMIT 1", (self._key,)).fetchone():
                c.execute(
                    "DELETE FROM change WHERE db=?1 AND seq IN"
                    " (SELECT seq FROM change_gone WHERE db=?1)",
                    (self._key,),
                )
                c.execute("DELETE FROM change_gone WHERE db=?", (self._key,))

    def _set_batch(
        self, doc_ids: list[str], store_id: str, op: str, fn: Callable[[Doc, str], Doc | None]
    ) -> UpdateBatch:
        out = UpdateBatch()
        purge = op == SET_PURGE
        with self._lib._write() as c:
            c.execute(_SET_TEMP_ROWS)
            c.execute("DELETE FROM temp.set_row")
            path = f'$.stored."{store_id}"'
            c.execute(
                _SET_SELECT_PURGE if purge else _SET_SELECT_DOWNGRADE,
                {"s": store_id, "p": path, "ids": json.dumps(doc_ids)},
            )
            handled = {i for (i,) in c.execute("SELECT id FROM temp.set_row")}
            saved = [i for (i,) in c.execute("SELECT id FROM temp.set_row WHERE changed")]
            if saved:
                (seq,) = c.execute("SELECT seq FROM dbinfo WHERE db=?", (self._key,)).fetchone()
                # n is the rowid: 1.. after the DELETE, but only ever relied on to be dense.
                base, top = c.execute("SELECT min(n) - 1, max(n) FROM temp.set_row").fetchone()
                for sql in _SET_PURGE if purge else _SET_DOWNGRADE:
                    c.execute(sql, {"s": store_id, "p": path, "seq": seq, "base": base})
                c.execute("UPDATE dbinfo SET seq=? WHERE db=?", (seq + top - base, self._key))
            rest = [i for i in doc_ids if i not in handled]
            written = self._update_in(c, rest, fn, (store_id,), out) if rest else []
            fault_point("db.batch_written")  # written, not committed: rolled back whole
        out.saved.extend(saved)
        _collect(written, out)
        return out

    def _prepare(
        self, doc: Any, is_delete: bool, state: dict[str, tuple[str, bool]]
    ) -> tuple[str, Doc | None, str | None]:
        """Check one doc against the current revs: (new rev, body, JSON text) or raise."""
        if not isinstance(doc, dict):
            raise DatabaseError(f"{self.name}: not a document: {type(doc).__name__}")
        if DAMAGED in doc:
            raise DatabaseError(f"{self.name}: a damaged doc's placeholder is never saved")
        doc_id = doc.get("_id")
        if not isinstance(doc_id, str) or not doc_id:
            raise DatabaseError(f"{self.name}: document without a valid _id")
        given = doc.get("_rev")
        cur = state.get(doc_id)
        conflict = Conflict(f"{self.name}/{doc_id}: document update conflict")
        if is_delete or doc.get("_deleted") is True:
            if cur is None or cur[1]:
                raise NotFound(f"{self.name}/{doc_id}: not found")
            if given != cur[0]:
                raise conflict
            return f"{_rev_gen(cur[0]) + 1}-{os.urandom(16).hex()}", None, None
        if cur is None:
            ok = given is None
        elif cur[1]:  # a tombstone may be written over, like CouchDB
            ok = given is None or given == cur[0]
        else:
            ok = given == cur[0]
        if not ok:
            raise conflict
        rev = f"{_rev_gen(cur[0]) + 1 if cur else 1}-{os.urandom(16).hex()}"
        body = dict(doc)
        body["_rev"] = rev
        body.pop("_deleted", None)
        try:
            text = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            text.encode()  # a lone surrogate (an undecoded file name) is not UTF-8 text
        except (TypeError, ValueError) as e:
            raise DatabaseError(f"{self.name}/{doc_id}: not JSON: {_reason(e)}") from None
        return rev, body, text


def _collect(written: list[tuple[Doc, Doc | DatabaseError]], out: UpdateBatch) -> None:
    for doc, result in written:
        if isinstance(result, DatabaseError):
            out.errors.append((str(doc.get("_id")), result))
        else:
            out.saved.append(doc["_id"])


def _chunks(items: list[Any], size: int = _CHUNK) -> Iterator[list[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _index_files(c: sqlite3.Connection, final: dict[str, Doc | None]) -> None:
    """Bring `file`, `copy` and `placement_sum` up to date for the docs just written."""
    ids = list(final)
    deltas: dict[tuple[str, str], list[int]] = {}
    per_store: dict[str, list[int]] = {}  # store_id -> [copies delta, never delta]
    hours: dict[tuple[str, int], int] = {}  # (store_id, hour verified) -> delta
    for chunk in _chunks(ids):
        marks = ",".join("?" * len(chunk))
        for origin, placement, size in c.execute(
            f"SELECT origin, placement, bytes FROM file WHERE id IN ({marks})", chunk
        ):
            d = deltas.setdefault((origin, placement), [0, 0])
            d[0] -= 1
            d[1] -= size
        for store_id, n, never in c.execute(
            "SELECT store_id, count(*), count(*) - count(verified) FROM copy"
            f" WHERE file_id IN ({marks}) GROUP BY store_id",
            chunk,
        ):
            p = per_store.setdefault(store_id, [0, 0])
            p[0] -= n
            p[1] -= never
        for store_id, hour, n in c.execute(
            f"SELECT store_id, verified / {VERIFY_BUCKET}, count(*) FROM copy"
            f" WHERE file_id IN ({marks}) AND verified IS NOT NULL GROUP BY 1, 2",
            chunk,
        ):
            hours[(store_id, hour)] = hours.get((store_id, hour), 0) - n
        c.execute(f"DELETE FROM file WHERE id IN ({marks})", chunk)
        c.execute(f"DELETE FROM copy WHERE file_id IN ({marks})", chunk)
    files: list[tuple[Any, ...]] = []
    copies: list[tuple[Any, ...]] = []
    for doc_id, doc in final.items():
        if doc is None or doc.get("type") != TYPE_FILE:
            continue
        origin, size, placement, rank, dur, items = _file_row(doc)
        files.append((doc_id, origin, size, placement, rank, dur))
        copies.extend(_copy_rows(doc, items, rank, size))
        d = deltas.setdefault((origin, placement), [0, 0])
        d[0] += 1
        d[1] += size
    c.executemany(
        "INSERT INTO file (id, origin, bytes, placement, rank, durability) VALUES (?,?,?,?,?,?)",
        files,
    )
    c.executemany(
        "INSERT INTO copy (file_id, store_id, copies, verified, bytes, rank) VALUES (?,?,?,?,?,?)",
        copies,
    )
    for row in copies:
        p = per_store.setdefault(row[1], [0, 0])
        p[0] += 1
        if row[3] is None:
            p[1] += 1
        else:
            key = (row[1], row[3] // VERIFY_BUCKET)
            hours[key] = hours.get(key, 0) + 1
    stores = [(sid, n, never) for sid, (n, never) in per_store.items() if n or never]
    if stores:
        c.executemany(
            "INSERT INTO store_sum (store_id, copies, never) VALUES (?,?,?)"
            " ON CONFLICT (store_id) DO UPDATE SET"
            " copies=copies+excluded.copies, never=never+excluded.never",
            stores,
        )
        c.execute("DELETE FROM store_sum WHERE copies <= 0")
    moved = [(sid, hour, n) for (sid, hour), n in hours.items() if n]
    if moved:
        c.executemany(
            "INSERT INTO verify_hour (store_id, hour, count) VALUES (?,?,?)"
            " ON CONFLICT (store_id, hour) DO UPDATE SET count=count+excluded.count",
            moved,
        )
        c.execute("DELETE FROM verify_hour WHERE count <= 0")
    changed = [(o, p, n, _i64(b)) for (o, p), (n, b) in deltas.items() if n or b]
    if changed:
        c.executemany(
            "INSERT INTO placement_sum (origin, placement, count, bytes) VALUES (?,?,?,?)"
            " ON CONFLICT (origin, placement) DO UPDATE SET"
            " count=count+excluded.count, bytes=bytes+excluded.bytes",
            changed,
        )
        c.execute("DELETE FROM placement_sum WHERE count <= 0")


def _index_events(c: sqlite3.Connection, final: dict[str, Doc | None]) -> None:
    """Bring `event` up to date for the log docs just written."""
    ids = list(final)
    for chunk in _chunks(ids):
        c.execute(f"DELETE FROM event WHERE id IN ({','.join('?' * len(chunk))})", chunk)
    c.executemany(
        "INSERT INTO event (id, type, time, store_id, file_id) VALUES (?,?,?,?,?)",
        [
            (
                doc_id,
                _str(doc.get("type")),
                _num(doc.get("time")),
                _str(doc.get("store_id")),
                _str(doc.get("file_id")),
            )
            for doc_id, doc in final.items()
            if doc is not None
        ],
    )


class SQLiteLibrary(Library):
    """A library in one SQLite file (created mode 0600, its folder created as needed)."""

    def __init__(
        self, path: str | os.PathLike[str], create: bool = True, quick_check: bool = True
    ) -> None:
        self.path = os.path.abspath(os.path.expanduser(os.fspath(path)))
        self.quick_check = quick_check
        self._local = threading.local()
        self._lock = threading.Lock()
        self._conns: list[tuple[weakref.ref[threading.Thread], sqlite3.Connection]] = []
        self._closed = False
        conn = self._open_first(create)
        self._register(conn)
        self.docs = SQLiteDatabase(self, DOCS_DB)
        self.log = SQLiteDatabase(self, LOG_DB)

    def __repr__(self) -> str:
        return f"<SQLiteLibrary {self.path}>"

    @property
    def display_url(self) -> str:
        return self.path

    @property
    def worker_path(self) -> str | None:
        return self.path

    # --- opening -------------------------------------------------------------------

    def _offline(self, reason: str) -> DatabaseOffline:
        return DatabaseOffline(f"cannot open library {self.path}: {reason}")

    def _open_first(self, create: bool) -> sqlite3.Connection:
        """Check the file is ours (or make it so when absent/empty), then connect."""
        path = self.path
        if os.path.isdir(path):
            raise self._offline("is a directory")
        created = False
        if not os.path.exists(path):
            if not create:
                raise self._offline("no such file")
            try:
                os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
                os.close(fd)
                created = True
            except FileExistsError:
                pass  # another process created it first: check it like any other file
            except OSError as e:
                raise self._offline(_reason(e)) from None
        try:
            if not stat.S_ISREG(os.stat(path).st_mode):  # a FIFO would block the open()
                raise self._offline("not a regular file")
            with open(path, "rb") as f:
                head = f.read(len(_SQLITE_MAGIC))
        except OSError as e:
            raise self._offline(_reason(e)) from None
        if head and head != _SQLITE_MAGIC:
            raise self._offline("file is not a database")
        if not head and not created:
            # A library that was there and is now empty (truncated, a failed restore): a
            # new empty one in its place would silently forget every file.
            raise self._offline("file is empty")
        conn = self._connect()
        try:
            self._check_or_init(conn, created)
        except DatabaseOffline:
            conn.close()
            raise
        except sqlite3.Error as e:
            conn.close()
            raise self._offline(_reason(e)) from None
        return conn

    def _connect(self) -> sqlite3.Connection:
        uri = "file:" + urllib.parse.quote(self.path) + "?mode=rw"
        try:
            conn = sqlite3.connect(
                uri,
                uri=True,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
            conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        except sqlite3.Error as e:
            raise self._offline(_reason(e)) from None
        return conn

    def _check_or_init(self, conn: sqlite3.Connection, created: bool) -> None:
        app_id = conn.execute("PRAGMA application_id").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id == 0 and version == 0 and created and self._schema_empty(conn):
            self._init_schema(conn)
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            version = conn.execute("PRAGMA user_version").fetchone()[0]
        if app_id != APPLICATION_ID:
            raise self._offline("not a dmedia-tui library (another program's SQLite file)")
        if version > SCHEMA_VERSION:
            raise self._offline(
                f"library schema {version} is newer than this program supports "
                f"({SCHEMA_VERSION}): upgrade dmedia-tui"
            )
        if version in _MIGRATIONS:
            version = self._migrate(conn)
        if version < 1:
            raise self._offline(f"library schema {version} is unknown")
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise self._offline(f"cannot use WAL mode (journal mode is {mode})")
        self._tune(conn)
        # Reading a real table proves the file is not corrupt beyond its header...
        conn.execute("SELECT count(*) FROM dbinfo").fetchone()
        # ...and quick_check that no page of it is (a damaged page would otherwise look
        # like a healthy library with some files missing).
        if self.quick_check:
            self._quick_check(conn, at_open=True)

    def _quick_check(self, conn: sqlite3.Connection, at_open: bool) -> bool:
        """PRAGMA quick_check; DatabaseOffline naming the damage. True when the whole file
        was checked.

        It reads every page: measured 1.8 s warm (3.6 s cold) for 100k file docs (258 MB)
        and ~10x that at 1M. So at open the whole file is checked only up to
        QUICK_CHECK_OPEN_BYTES (about 0.2 s), and never for longer than
        QUICK_CHECK_OPEN_SECONDS; a larger library gets the small tables `status` reads
        checked at open and the whole file by `check_storage()` (the `check` command and
        the engine's schema pass).
        """
        whole = not at_open or os.path.getsize(self.path) <= QUICK_CHECK_OPEN_BYTES
        targets = (
            [None] if whole else ["meta", "dbinfo", "placement_sum", "store_sum", "verify_hour"]
        )
        timer = None
        if at_open:
            timer = threading.Timer(QUICK_CHECK_OPEN_SECONDS, conn.interrupt)
            timer.daemon = True
            timer.start()
        problems: list[str] = []
        try:
            for table in targets:
                sql = "PRAGMA quick_check(3)" if table is None else f"PRAGMA quick_check({table})"
                rows = [str(r[0]) for r in conn.execute(sql)]
                if rows != ["ok"]:
                    problems.extend(rows)
        except sqlite3.OperationalError as e:
            if "interrupt" not in str(e):
                raise
            whole = False  # out of time: the engine's schema pass checks it all
        finally:
            if timer is not None:
                timer.cancel()
        if problems:
            lines = [ln.strip() for p in problems for ln in p.splitlines()]
            detail = "; ".join(ln for ln in lines if ln and not ln.startswith("***"))
            raise self._offline(f"the file is damaged ({detail[:200]})")
        return whole

    def check_storage(self) -> None:
        """Every page of the file checked (PRAGMA quick_check); DatabaseOffline if damaged."""
        conn = self._conn()
        try:
            self._quick_check(conn, at_open=False)
        except sqlite3.Error as e:
            raise self._error(e) from None

    def _migrate(self, conn: sqlite3.Connection) -> int:
        """Bring an older library to SCHEMA_VERSION, step by step, in one transaction (the
        version re-checked under the write lock: another process may have just done it)."""
        conn.execute("BEGIN IMMEDIATE")
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            while version in _MIGRATIONS:
                for stmt in _MIGRATIONS[version].split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                version += 1
                conn.execute("UPDATE meta SET value=? WHERE key='schema_version'", (str(version),))
                conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return version

    @staticmethod
    def _schema_empty(conn: sqlite3.Connection) -> bool:
        return conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] == 0

    def _init_schema(self, conn: sqlite3.Connection) -> None:
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # only an empty file takes it
        conn.execute("BEGIN IMMEDIATE")
        try:
            # Re-check under the write lock: another process may have just done it.
            app_id = conn.execute("PRAGMA application_id").fetchone()[0]
            if app_id == 0 and self._schema_empty(conn):
                for stmt in _SCHEMA.split(";"):
                    if stmt.strip():
                        conn.execute(stmt)
                conn.executemany(
                    "INSERT INTO meta (key, value) VALUES (?, ?)",
                    [
                        ("application", "dmedia-tui"),
                        ("schema_version", str(SCHEMA_VERSION)),
                        ("created", str(int(time.time()))),
                    ],
                )
                conn.executemany(
                    "INSERT INTO dbinfo (db, name, seq, live) VALUES (?, ?, 0, 0)",
                    [(k, name) for name, k in _DB_KEYS.items()],
                )
                conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
                conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    @staticmethod
    def _tune(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA synchronous = FULL")
        # Store-wide passes and the check touch pages all over a big file: the default
        # 2 MB page cache made every other page a read() (measured: sys time 3.7 s -> 1.5 s
        # for a 34k-copy downgrade). Filled lazily, so a small library stays small.
        conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        conn.execute("PRAGMA foreign_keys = OFF")

    # --- connections ---------------------------------------------------------------

    def _register(self, conn: sqlite3.Connection) -> None:
        with self._lock:
            # Close the connections of threads that have ended.
            alive = []
            for ref, other in self._conns:
                thread = ref()
                if thread is None or not thread.is_alive():
                    other.close()
                else:
                    alive.append((ref, other))
            alive.append((weakref.ref(threading.current_thread()), conn))
            self._conns = alive
        self._local.conn = conn

    def _conn(self) -> sqlite3.Connection:
        if self._closed:
            raise DatabaseOffline(f"library {self.path} is closed")
        conn = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._connect()
            try:
                self._tune(conn)
            except sqlite3.Error as e:
                conn.close()
                raise self._offline(_reason(e)) from None
            self._register(conn)
        return conn

    def _error(self, e: sqlite3.Error) -> DatabaseError:
        msg = _reason(e)
        if isinstance(e, sqlite3.OperationalError) and ("locked" in msg or "busy" in msg):
            return DatabaseError(f"library {self.path} is busy: {msg}")
        return DatabaseOffline(f"library {self.path}: {msg}")

    @contextmanager
    def _read(self, snapshot: bool = False) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        try:
            if snapshot:
                conn.execute("BEGIN")
            try:
                yield conn
            finally:
                if snapshot:
                    conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise self._error(e) from None

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise self._error(e) from None
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as e:
            try:
                conn.execute("ROLLBACK")
            except sqlite3.Error:
                pass
            if isinstance(e, sqlite3.Error):
                raise self._error(e) from None
            raise

    @contextmanager
    def _bulk(self) -> Iterator[None]:
        """This thread's connection tuned for a store-wide pass while it runs.

        Temp storage in memory: the pass's temp table, statement journals and the
        ephemeral tables of its UPDATEs wrote ~4.5 KB a copy to temp files (100k files).
        The cache is BULK_CACHE_KIB: a 20k batch dirties
        about 0.9 pages a copy (~70 MB; 0.4 of them `doc` pages), more than CACHE_KIB,
        and a full cache spills dirty pages to the WAL mid-transaction. The
        cost is memory while it runs (RSS 357 MB at 1M files, 79 MB before). Both are
        restored after (a smaller cache_size frees the extra pages).
        """
        conn = self._conn()
        try:
            conn.execute("PRAGMA temp_store = MEMORY")
            conn.execute(f"PRAGMA cache_size = -{BULK_CACHE_KIB}")
        except sqlite3.Error as e:
            raise self._error(e) from None
        try:
            yield
        finally:
            try:
                conn.execute("PRAGMA temp_store = DEFAULT")
                conn.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
            except sqlite3.Error:
                pass  # a closed or broken connection: nothing left to restore

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for _, conn in self._conns:
                try:
                    conn.close()
                except sqlite3.Error:
                    pass
            self._conns = []

    # --- named queries -------------------------------------------------------------

    def placement_summary(self) -> list[PlacementRow]:
        with self._read() as c:
            rows = c.execute(
                "SELECT origin, placement, count, bytes FROM placement_sum"
                " WHERE count > 0 ORDER BY origin, placement"
            ).fetchall()
        return [PlacementRow(o, p, n, b) for o, p, n, b in rows]

    def _by_type(self, typ: str) -> list[Doc]:
        # INDEXED BY: without statistics SQLite walks the primary key (every doc of the
        # library: 0.5 s at 1M files) instead of this partial index (0.07 ms).
        with self._read() as c:
            rows = c.execute(
                "SELECT id, json FROM doc INDEXED BY doc_type"
                " WHERE db=1 AND type=? AND deleted=0 AND json_valid(json)"
                " AND json_type(json) = 'object' ORDER BY id",
                (typ,),
            ).fetchall()
        return _decode_rows(rows)

    def stores(self) -> list[Doc]:
        return self._by_type(TYPE_STORE)

    def machines(self) -> list[Doc]:
        return self._by_type(TYPE_MACHINE)

    def files_by_store(
        self, store_id: str, limit: int = 100, after: tuple[int, str] | None = None
    ) -> list[Doc]:
        rank, after_id = after if after is not None else (-1, "")
        with self._read() as c:
            rows = c.execute(
                "SELECT d.id, d.json FROM copy c JOIN doc d ON d.db=1 AND d.id=c.file_id"
                " WHERE c.store_id=? AND (c.rank, c.file_id) > (?, ?)"
                + _VALID
                + " ORDER BY c.rank, c.file_id LIMIT ?",
                (store_id, rank, after_id, max(0, limit)),
            ).fetchall()
        return _decode_rows(rows)

    def file_ids_by_store(
        self, store_id: str, limit: int = 1000, after: tuple[int, str] | None = None
    ) -> list[tuple[int, str]]:
        rank, after_id = after if after is not None else (-1, "")
        with self._read() as c:
            rows = c.execute(
                "SELECT rank, file_id FROM copy WHERE store_id=? AND (rank, file_id) > (?, ?)"
                " ORDER BY rank, file_id LIMIT ?",
                (store_id, rank, after_id, max(0, limit)),
            ).fetchall()
        return [(r, i) for r, i in rows]

    def iter_file_ids_on(self, store_id: str, page_size: int = 5000) -> Iterator[str]:
        # By _id over the copy table's primary key (`+store_id`: not the store indexes,
        # whose order is not the doc table's): a set pass then rewrites the doc pages in
        # order, each once. A cursor on _id is safe while the entries change or go.
        after = ""
        while True:
            with self._read() as c:
                page = [
                    i
                    for (i,) in c.execute(
                        "SELECT file_id FROM copy WHERE file_id > ? AND +store_id = ?"
                        " ORDER BY file_id LIMIT ?",
                        (after, store_id, max(1, page_size)),
                    )
                ]
            yield from page
            if len(page) < page_size:
                return
            after = page[-1]

    def file_ids_on_among(self, store_id: str, prefixes: Iterable[str]) -> set[str]:
        # A range of the copy table's primary key a prefix (every copy of 1/1024 of
        # the library), filtered by store: `+store_id`, or SQLite walks all the store's
        # copies in copy_verified for each prefix (68 s for 1024 of them at 1M files).
        out: set[str] = set()
        with self._read() as c:
            for p in sorted(set(prefixes)):
                out.update(
                    i
                    for (i,) in c.execute(
                        "SELECT file_id FROM copy WHERE file_id >= ? AND file_id < ?"
                        " AND +store_id = ?",
                        (p, p + "\U0010ffff", store_id),
                    )
                )
        return out

    def fragile_files(
        self, limit: int = 100, after: tuple[int, str] | None = None, origin: str = "user"
    ) -> list[Doc]:
        rank, after_id = after if after is not None else (-1, "")
        with self._read() as c:
            rows = c.execute(
                "SELECT d.id, d.json FROM file f JOIN doc d ON d.db=1 AND d.id=f.id"
                f" WHERE f.origin=? AND f.durability < {durability.TARGET}"
                " AND (f.rank, f.id) > (?, ?)" + _VALID + " ORDER BY f.rank, f.id LIMIT ?",
                (origin, rank, after_id, max(0, limit)),
            ).fetchall()
        return _decode_rows(rows)

    def files_by_placement(
        self, placement: str, limit: int = 100, after: str | None = None, origin: str = "user"
    ) -> list[Doc]:
        with self._read() as c:
            rows = c.execute(
                "SELECT d.id, d.json FROM file f JOIN doc d ON d.db=1 AND d.id=f.id"
                " WHERE f.origin=? AND f.placement=? AND f.id > ?"
                + _VALID
                + " ORDER BY f.id LIMIT ?",
                (origin, placement, after if after is not None else "", max(0, limit)),
            ).fetchall()
        return _decode_rows(rows)

    def copies_due(self, store_id: str, verified_before: int, limit: int = 100) -> list[CopyDue]:
        # NULL sorts first in SQLite: never-verified copies come out first, by file ID.
        with self._read() as c:
            rows = c.execute(
                "SELECT file_id, store_id, verified, bytes FROM copy"
                " WHERE store_id=? AND (verified IS NULL OR verified < ?)"
                " ORDER BY verified, file_id LIMIT ?",
                (store_id, verified_before, max(0, limit)),
            ).fetchall()
        return [CopyDue(f, s, v, b) for f, s, v, b in rows]

    def verification_stats(self, store_id: str) -> VerificationStats:
        # Counts from store_sum, the median's hour from verify_hour (both kept by deltas),
        # min/max and the median inside its hour are index lookups and a walk over the
        # copies verified in that one hour: nothing here grows with the store.
        with self._read(snapshot=True) as c:
            row = c.execute(
                "SELECT copies, never FROM store_sum WHERE store_id=?", (store_id,)
            ).fetchone()
            copies, never = row if row else (0, 0)
            verified = copies - never
            if not verified:
                return VerificationStats(copies, never, None, None, None)
            oldest, newest = c.execute(
                "SELECT (SELECT min(verified) FROM copy WHERE store_id=?1"
                " AND verified IS NOT NULL), (SELECT max(verified) FROM copy WHERE store_id=?1)",
                (store_id,),
            ).fetchone()
            median = self._median(c, store_id, (verified - 1) // 2)
        return VerificationStats(copies, never, oldest, median, newest)

    @staticmethod
    def _median(c: sqlite3.Connection, store_id: str, k: int) -> int | None:
        """The k-th (from 0) verified time of the store, in verified order: the hour that
        holds it from verify_hour's running sums, then a walk inside that hour from
        whichever end is nearer. (The lower median: an actual verification time, never
        an average.)"""
        row = c.execute(
            "SELECT hour, count, cum FROM (SELECT hour, count, sum(count) OVER"
            " (ORDER BY hour ROWS UNBOUNDED PRECEDING) AS cum FROM verify_hour"
            " WHERE store_id=?) WHERE cum > ? ORDER BY hour LIMIT 1",
            (store_id, k),
        ).fetchone()
        if row is None:
            return None
        hour, count, cum = row
        at = k - (cum - count)  # rank inside the hour
        order, skip = ("ASC", at) if at < count - 1 - at else ("DESC", count - 1 - at)
        found = c.execute(
            "SELECT verified FROM copy WHERE store_id=? AND verified >= ? AND verified < ?"
            f" ORDER BY verified {order} LIMIT 1 OFFSET ?",
            (store_id, hour * VERIFY_BUCKET, (hour + 1) * VERIFY_BUCKET, skip),
        ).fetchone()
        return found[0] if found else None

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
        if types is not None:
            wanted = sorted(set(types))
            if not wanted:
                return []
            if len(wanted) > 1:
                # "type IN (a, b) ORDER BY id" cannot follow one index: SQLite sorted the
                # whole log again for every page (USE TEMP B-TREE), quadratic over a
                # paged walk. Each type is a range of event_type in id order: merge them.
                pages = [
                    self.events(
                        limit,
                        newest_first=newest_first,
                        since=since,
                        types=[t],
                        store_id=store_id,
                        file_id=file_id,
                        cursor=cursor,
                    )
                    for t in wanted
                ]
                merged = heapq.merge(*pages, key=lambda d: d["_id"], reverse=newest_first)
                return list(itertools.islice(merged, max(0, limit)))
        where = ["1"]
        args: list[Any] = []
        if since is not None:
            where.append("e.time >= ?")
            args.append(since)
        if types is not None:
            where.append(f"e.type IN ({','.join('?' * len(wanted))})")
            args.extend(wanted)
        if store_id is not None:
            where.append("e.store_id = ?")
            args.append(store_id)
        if file_id is not None:
            where.append("e.file_id = ?")
            args.append(file_id)
        if cursor is not None:
            where.append("e.id < ?" if newest_first else "e.id > ?")
            args.append(cursor)
        order = "DESC" if newest_first else "ASC"
        with self._read() as c:
            rows = c.execute(
                "SELECT d.id, d.json FROM event e JOIN doc d ON d.db=2 AND d.id=e.id"
                f" WHERE {' AND '.join(where)}{_VALID} ORDER BY e.id {order} LIMIT ?",
                (*args, max(0, limit)),
            ).fetchall()
        return _decode_rows(rows)
