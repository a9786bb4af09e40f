"""The CouchDB backend: a library shared by several machines through CouchDB replication.

URL: `http(s)://[user:password@]host[:port][/base/path/][?prefix=NAME-]`
- The path is the server's base (a CouchDB behind a reverse proxy at `/couchdb/` works).
- `prefix` is prepended to both database names, so one server can host several
  libraries: `?prefix=studio-` uses `studio-dmedia-1` and `studio-log-1`. It must start
  with a lowercase letter and hold only `a-z 0-9 _ -` (CouchDB's rule for names). The
  tests give every test its own prefix on one PouchDB Server.
- The password is never shown: `display_url` and every error message mask it as `***`.

Why it looks like this:
- CouchDB-Python 1.2's HTTP layer (`couchdb.http`), called from worker threads: one
  session whose connection pool is thread-safe; its response cache is switched off (it
  is a plain dict, not thread-safe). Every request has a timeout (`timeout`, 30 s by
  default; `[database] timeout` / DMEDIA_DB_TIMEOUT): a server that accepts connections
  and never answers makes calls fail with DatabaseOffline, not hang. A view query that
  times out while the server still answers `GET /` is building its index (minutes over a
  big library on PouchDB): it is asked again with the long VIEW_TIMEOUT. The long polls
  of `wait_changes` use sessions of their own whose read timeout is the poll's.
- Every failure becomes a typed one-line error: a stale `_rev` -> Conflict, a missing
  doc -> NotFound; refused connections, DNS failures, 401s, timeouts, a missing database
  -> DatabaseOffline.
- The named queries are views of the design docs in `couch_views.py`, installed or
  replaced (when their content differs) whenever a library is opened.
- `_changes` seqs are opaque (integers on PouchDB, strings on CouchDB 2+): always str.
  `wait_changes` long-polls with a client-side timeout, because PouchDB Server ignores
  the `timeout` parameter; a dropped connection is re-opened until the time is up.
  `_changes?filter=_selector` is never sent: it kills PouchDB Server.
- Design docs are internal: `page`, `count` and `changes` never show them.
- PouchDB (unlike CouchDB) does not cache reductions: every reduce query costs O(rows in
  range), and building a view index is slow (100,000 docs: about 5 minutes; a grouped
  reduce after a few changes: 11 s, see bench/couch.py). So `placement_summary`, the
  dashboard's query, has two implementations: on Apache CouchDB the grouped `placement`
  view (cached reductions); on PouchDB Server (or when asked, `summary="changes"`) a
  summary kept in this process and brought up to date from `_changes?include_docs=true`
  with the functions of `durability.py` themselves: O(changed docs) per refresh, one
  full read of the docs at the first call, about 100 bytes of memory per file doc.
  Both are cached per `update_seq` (one cheap db-info request when nothing changed).
  The other queries are map-only key ranges.
"""

from __future__ import annotations

import heapq
import http.client
import json
import re
import socket
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from couchdb import http as couch_http

from dmedia_tui import durability, protocol
from dmedia_tui.db import couch_views
from dmedia_tui.db.base import (
    DOCS_DB,
    LOG_DB,
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
    VerificationStats,
    is_damaged,
)
from dmedia_tui.views import TYPE_FILE, TYPE_MACHINE, TYPE_STORE

BATCH = 500  # docs per _bulk_docs / _all_docs keys request
CHANGES_PAGE = 5000  # changes per request while bringing the placement tally up to date
CONNECT_TIMEOUT = 10.0  # at most; never more than the request timeout
TIMEOUT = 30.0  # seconds a request may go unanswered (config.DB_TIMEOUT)
VIEW_TIMEOUT = 600.0  # a first view build over 100k docs on PouchDB takes minutes
_PREFIX_RE = re.compile(r"^[a-z][a-z0-9_-]*$")
_HIGH: dict[str, Any] = {}  # sorts after every other JSON value in view collation


class _NoCache:
    """Replaces couchdb.http's ETag cache, which is not thread-safe."""

    def get(self, url: str) -> None:
        return None

    def put(self, url: str, response: Any) -> None:
        pass

    def remove(self, url: str) -> None:
        pass


def _connection_class(base: type) -> type:
    class Conn(base):
        read_timeout: float | None = TIMEOUT

        def connect(self) -> None:
            super().connect()
            self.sock.settimeout(self.read_timeout)

    return Conn


_HTTP = _connection_class(couch_http.HTTPConnection)
_HTTPS = _connection_class(couch_http.HTTPSConnection)


class _Pool(couch_http.ConnectionPool):
    """couchdb.http's pool, with a connect timeout distinct from the read timeout."""

    def __init__(self, read_timeout: float | None, connect_timeout: float) -> None:
        super().__init__(connect_timeout)
        self.read_timeout = read_timeout

    def get(self, url: str) -> http.client.HTTPConnection:
        scheme, host = urllib.parse.urlsplit(url)[:2]
        with self.lock:
            conns = self.conns.setdefault((scheme, host), [])
            conn = conns.pop(-1) if conns else None
        if conn is None:
            cls = _HTTPS if scheme == "https" else _HTTP
            conn = cls(host, timeout=self.timeout)
            conn.read_timeout = self.read_timeout
            conn.connect()
        return conn

    def close(self) -> None:
        with self.lock:
            for conns in self.conns.values():
                for conn in conns:
                    conn.close()
            self.conns.clear()


def _session(read_timeout: float, connect_timeout: float = CONNECT_TIMEOUT) -> couch_http.Session:
    session = couch_http.Session()
    session.cache = _NoCache()
    session.connection_pool = _Pool(read_timeout, min(connect_timeout, read_timeout))
    return session


def _encode(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def _error_parts(e: couch_http.HTTPError) -> tuple[str, str]:
    """(error, reason) of a couchdb.http error, whatever shape its args have."""
    arg = e.args[0] if e.args else None
    if isinstance(arg, tuple) and len(arg) == 2 and isinstance(arg[0], int):
        arg = arg[1]  # ServerError: (status, (error, reason))
    if isinstance(arg, tuple) and len(arg) == 2:
        return str(arg[0]), str(arg[1])
    if isinstance(arg, bytes):
        arg = arg.decode("utf-8", "replace")
    return "", str(arg or "")[:200].splitlines()[0] if arg else ""


def _status(e: couch_http.HTTPError) -> int | None:
    arg = e.args[0] if e.args else None
    if isinstance(arg, tuple) and arg and isinstance(arg[0], int):
        return arg[0]
    return None


def _os_reason(e: OSError) -> str:
    if isinstance(e, socket.gaierror):
        return "unknown host"
    if isinstance(e, TimeoutError):
        return "timed out"
    if isinstance(e, ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, ConnectionResetError | http.client.RemoteDisconnected):
        return "connection reset"
    return (e.strerror or type(e).__name__).lower()


def _seq(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


def _since_prefix(since: float) -> str:
    """The first 8 characters of every log ID made at or after second floor(since)."""
    secs = min(max(0, int(since // 1)), 2**40 - 1)
    return protocol.b32encode(secs.to_bytes(5, "big"))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


class _PlacementTally:
    """The placement summary kept in memory: file ID -> its (origin, placement), bytes."""

    def __init__(self) -> None:
        self.info_seq: str | None = None  # update_seq when last brought up to date
        self.changes_seq: str | None = None  # where the _changes feed continues
        self.files: dict[str, tuple[tuple[str, str], int]] = {}
        self.totals: dict[tuple[str, str], list[int]] = {}
        self._keys: dict[tuple[str, str], tuple[str, str]] = {}  # one tuple per group

    def apply(self, doc_id: str, doc: Doc | None) -> None:
        """Replace what a doc contributes (a change may be seen twice: idempotent)."""
        old = self.files.pop(doc_id, None)
        if old is not None:
            total = self.totals[old[0]]
            total[0] -= 1
            total[1] -= old[1]
            if total[0] <= 0:
                del self.totals[old[0]]
        if doc is None or doc.get("type") != TYPE_FILE:
            return
        key = (durability.file_origin(doc), durability.placement_key(doc))
        key = self._keys.setdefault(key, key)
        size = durability.file_bytes(doc)
        self.files[doc_id] = (key, size)
        total = self.totals.setdefault(key, [0, 0])
        total[0] += 1
        total[1] += size

    def rows(self) -> list[PlacementRow]:
        return [PlacementRow(o, p, n, b) for (o, p), (n, b) in sorted(self.totals.items())]


class CouchDatabase(Database):
    """One CouchDB database of a CouchLibrary."""

    def __init__(self, lib: CouchLibrary, name: str, dbname: str) -> None:
        self.name = name
        self.dbname = dbname
        self._lib = lib
        self._res = lib._server(dbname)

    def __repr__(self) -> str:
        return f"<CouchDatabase {self.dbname} at {self._lib.display_url}>"

    # --- plumbing ------------------------------------------------------------------

    # The CouchDB-only calls CouchLibrary's named queries are built on (this module's
    # internal API; everything outside db/ goes through the Database interface).

    def request(
        self,
        method: str,
        path: list[str] | None = None,
        body: Any = None,
        what: str | None = None,
        resource: Any = None,
        **params: Any,
    ) -> Any:
        """One JSON request; raises the typed errors (messages name `what`)."""
        res = resource if resource is not None else self._res
        headers = None
        if body is not None:
            if not isinstance(body, bytes):
                body = _encode(body)
            headers = {"Content-Type": "application/json"}
        try:
            with self._lib._guard(what or self.name, self.dbname):
                _, _, data = res._request_json(method, path, body=body, headers=headers, **params)
        except RecursionError:
            # A doc nested deeper than Python's JSON decoder goes (PouchDB stores 1000
            # levels): one damaged doc must not make its whole page unreadable.
            if params.get("include_docs") in (True, "true") and method in ("GET", "POST"):
                params = {k: v for k, v in params.items() if k != "include_docs"}
                data = self.request(method, path, body, what, resource, **params)
                self._attach_docs(data)
                return data
            raise InvalidDoc(what or self.name, "nested too deeply to read") from None
        if not isinstance(data, dict | list):
            raise self._lib._offline("not a CouchDB server (the answer is not JSON)")
        return data

    def _attach_docs(self, data: Any) -> None:
        """Fetch each row's doc on its own; a damaged one becomes a placeholder."""
        for row in data.get("rows", []) if isinstance(data, dict) else []:
            doc_id = row.get("id") if isinstance(row, dict) else None
            if not isinstance(doc_id, str) or "value" in row and row["value"] is None:
                continue
            try:
                row["doc"] = self.request("GET", self._doc_path(doc_id), what=doc_id)
            except InvalidDoc as e:
                row["doc"] = e.placeholder()
            except NotFound:
                row["doc"] = None

    def _doc_path(self, doc_id: str) -> list[str]:
        if doc_id.startswith("_design/"):
            return ["_design", doc_id[len("_design/") :]]
        return [doc_id]

    def info(self) -> dict[str, Any]:
        return self.request("GET")

    def view(self, view: str, **params: Any) -> dict[str, Any]:
        """GET a view of this database's design doc; JSON-encodes key parameters.

        A view may need minutes to build its index the first time: when the query times
        out but the server still answers, it is asked again with the long VIEW_TIMEOUT.
        """
        ddoc = couch_views.DOCS_DDOC if self.name == DOCS_DB else couch_views.LOG_DDOC
        path = ["_design", ddoc, "_view", view]
        try:
            return self.request("GET", path, **_params(params))
        except DatabaseOffline as e:
            if not isinstance(e.__cause__, TimeoutError) or not self._lib._reachable():
                raise
        return self.request("GET", path, resource=self._lib._slow(self.dbname), **_params(params))

    def all_docs(self, **params: Any) -> dict[str, Any]:
        return self.request("GET", ["_all_docs"], **_params(params))

    # --- reads ---------------------------------------------------------------------

    def get(self, doc_id: str) -> Doc:
        what = f"{self.name}/{doc_id}"
        if not isinstance(doc_id, str) or not doc_id or doc_id.startswith("_"):
            raise NotFound(f"{what}: not found")
        try:
            return self.request("GET", self._doc_path(doc_id), what=what)
        except InvalidDoc as e:
            raise InvalidDoc(doc_id, e.problem) from None

    def get_many(self, doc_ids: list[str]) -> list[Doc | None]:
        out: list[Doc | None] = []
        for i in range(0, len(doc_ids), BATCH):
            chunk = doc_ids[i : i + BATCH]
            data = self.request("POST", ["_all_docs"], {"keys": chunk}, include_docs="true")
            rows = data.get("rows", [])
            for row in rows:
                doc = row.get("doc") if isinstance(row, dict) else None
                out.append(doc if isinstance(doc, dict) and not is_damaged(doc) else None)
        return out

    def page(self, limit: int = 1000, start_after: str | None = None) -> list[Doc]:
        out: list[Doc] = []
        after = start_after
        while len(out) < limit:
            want = limit - len(out) + 1  # +1: the row of `after` itself comes back too
            params: dict[str, Any] = {"include_docs": True, "limit": want}
            if after is not None:
                params["startkey"] = after
            rows = self.all_docs(**params).get("rows", [])
            for row in rows:
                if row["id"] == after:
                    continue
                after = row["id"]
                if not row["id"].startswith("_design/") and isinstance(row.get("doc"), dict):
                    out.append(row["doc"])
                    if len(out) >= limit:
                        break
            if len(rows) < want:  # the range is exhausted
                break
        return out

    def _design_count(self) -> int:
        rows = self.all_docs(startkey="_design/", endkey="_design0").get("rows", [])
        return len(rows)

    def count(self) -> int:
        info = self.info()
        return int(info.get("doc_count", 0)) - self._design_count()

    def update_seq(self) -> str:
        return _seq(self.info().get("update_seq"))

    def changes(self, since: str | None = None, limit: int | None = None) -> Changes:
        results: list[Change] = []
        last = since
        while True:
            params: dict[str, Any] = {}
            if last is not None:
                params["since"] = last
            if limit is not None:
                params["limit"] = limit - len(results)
                if params["limit"] <= 0:
                    break
            data = self.request("GET", ["_changes"], **params)
            raw = data.get("results", [])
            for r in raw:
                if not r["id"].startswith("_design/"):  # design docs are internal
                    results.append(Change(r["id"], _seq(r["seq"]), bool(r.get("deleted"))))
            last = _seq(data.get("last_seq"))
            if limit is None or len(raw) < params["limit"]:
                break
        if last is None:
            last = self.update_seq()
        return Changes(results, last)

    def wait_changes(self, since: str, timeout: float) -> str:
        """Long-poll `_changes` (client-side timeout, reconnecting) until a change."""
        deadline = time.monotonic() + max(0.0, timeout)
        seq = self.update_seq()
        while seq == since:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            session = _session(read_timeout=left, connect_timeout=self._lib.timeout)
            res = couch_http.Resource(self._res.url, session)
            res.credentials = self._res.credentials
            try:
                self.request(
                    "GET",
                    ["_changes"],
                    resource=res,
                    feed="longpoll",
                    since=since,
                    limit=1,
                    timeout=int(left * 1000),
                )
            except DatabaseOffline as e:
                if self._lib._reachable():
                    # The long poll timed out or its connection dropped: poll again.
                    if not isinstance(e.__cause__, TimeoutError):
                        time.sleep(min(0.05, max(0.0, deadline - time.monotonic())))
                else:
                    raise
            finally:
                session.connection_pool.close()
            seq = self.update_seq()
        return seq

    # --- writes --------------------------------------------------------------------

    def _check_doc(self, doc: Any) -> str:
        if not isinstance(doc, dict):
            raise DatabaseError(f"{self.name}: not a document: {type(doc).__name__}")
        doc_id = doc.get("_id")
        if not isinstance(doc_id, str) or not doc_id:
            raise DatabaseError(f"{self.name}: document without a valid _id")
        if is_damaged(doc):
            raise DatabaseError(f"{self.name}: a damaged doc's placeholder is never saved")
        return doc_id

    def _encode_doc(self, doc: Doc, doc_id: str) -> bytes:
        try:
            return _encode(doc)
        except (TypeError, ValueError) as e:
            raise DatabaseError(f"{self.name}/{doc_id}: not JSON: {e}") from None

    def save(self, doc: Doc) -> Doc:
        doc_id = self._check_doc(doc)
        if doc.get("_deleted") is True:
            self.delete(doc)
            return doc
        body = self._encode_doc(doc, doc_id)
        data = self.request("PUT", self._doc_path(doc_id), body, what=f"{self.name}/{doc_id}")
        doc["_rev"] = data["rev"]
        return doc

    def save_many(self, docs: list[Doc]) -> list[Doc | DatabaseError]:
        results: list[Doc | DatabaseError | None] = [None] * len(docs)
        for start in range(0, len(docs), BATCH):
            parts: list[bytes] = []
            index: list[int] = []
            for n in range(start, min(start + BATCH, len(docs))):
                doc = docs[n]
                try:
                    parts.append(self._encode_doc(doc, self._check_doc(doc)))
                except DatabaseError as err:
                    results[n] = err
                    continue
                index.append(n)
            if not parts:
                continue
            body = b'{"docs":[' + b",".join(parts) + b"]}"
            rows = self.request("POST", ["_bulk_docs"], body)
            for n, row in zip(index, rows, strict=False):
                results[n] = self._bulk_result(docs[n], row)
        return results  # type: ignore[return-value]

    def _bulk_result(self, doc: Doc, row: dict[str, Any]) -> Doc | DatabaseError:
        what = f"{self.name}/{doc['_id']}"
        if isinstance(row, dict) and row.get("rev") and not row.get("error"):
            doc["_rev"] = row["rev"]
            return doc
        error = str(row.get("error", "")) if isinstance(row, dict) else ""
        reason = str(row.get("reason", "")) if isinstance(row, dict) else ""
        if error == "conflict":
            return Conflict(f"{what}: document update conflict")
        if error == "not_found":
            return NotFound(f"{what}: not found")
        return DatabaseError(f"{what}: {error or 'error'}: {reason}".rstrip(": "))

    # --- replication conflicts --------------------------------------------------------

    def leaves(self, doc_id: str) -> list[Doc]:
        """The winning revision, then every live conflicting one (in `_conflicts` order).

        `open_revs` with an explicit JSON list and `Accept: application/json` answers
        JSON on CouchDB and PouchDB alike; a revision gone meanwhile is skipped.
        """
        what = f"{self.name}/{doc_id}"
        if not isinstance(doc_id, str) or not doc_id or doc_id.startswith("_"):
            raise NotFound(f"{what}: not found")
        path = self._doc_path(doc_id)
        winner = self.request("GET", path, what=what, conflicts="true")
        revs = winner.pop("_conflicts", None)
        out = [winner]
        if isinstance(revs, list) and revs:
            rows = self.request("GET", path, what=what, open_revs=json.dumps(revs))
            by_rev = {}
            for row in rows if isinstance(rows, list) else []:
                doc = row.get("ok") if isinstance(row, dict) else None
                if isinstance(doc, dict) and not doc.get("_deleted"):
                    by_rev[doc.get("_rev")] = doc
            out.extend(by_rev[r] for r in revs if r in by_rev)
        if len(out) == 1 and self.name == DOCS_DB:
            self._lib._conflict_settled(doc_id)
        return out

    def resolve(self, merged: Doc, losing_revs: list[str]) -> Doc:
        """One `_bulk_docs`: the merged doc on the winning `_rev`, a tombstone per loser.

        Conflict when the winner moved on (nothing is deleted then: a loser is only
        dropped once its content is in the saved merge). A loser already deleted (by the
        same resolution on another machine) is fine.
        """
        doc_id = self._check_doc(merged)
        merged.pop("_conflicts", None)
        saved = self.save_many([merged])[0]
        if isinstance(saved, DatabaseError):
            raise saved
        if losing_revs:
            stones = [{"_id": doc_id, "_rev": r, "_deleted": True} for r in losing_revs]
            for res in self.save_many(stones):
                if isinstance(res, DatabaseError) and not isinstance(res, Conflict | NotFound):
                    raise res
        return saved

    def delete(self, doc: Doc) -> None:
        doc_id = self._check_doc(doc)
        what = f"{self.name}/{doc_id}"
        rev = doc.get("_rev")
        if doc_id.startswith("_") and not doc_id.startswith("_design/"):
            raise NotFound(f"{what}: not found")
        if not isinstance(rev, str) or not rev:
            self.get(doc_id)  # NotFound when absent
            raise Conflict(f"{what}: document update conflict")
        self.request("DELETE", self._doc_path(doc_id), what=what, rev=rev)


def _params(params: dict[str, Any]) -> dict[str, Any]:
    """Query parameters as CouchDB wants them: keys JSON-encoded, booleans lower case."""
    out: dict[str, Any] = {}
    for k, v in params.items():
        if v is None:
            continue
        if k in ("key", "startkey", "endkey"):
            out[k] = json.dumps(v, separators=(",", ":"))
        elif isinstance(v, bool):
            out[k] = "true" if v else "false"
        else:
            out[k] = v
    return out


class CouchLibrary(Library):
    """A library in two databases of a CouchDB (or PouchDB Server) at `url`."""

    docs: CouchDatabase
    log: CouchDatabase

    def __init__(
        self,
        url: str,
        create: bool = True,
        *,
        timeout: float = TIMEOUT,
        summary: str = "auto",
    ) -> None:
        """`summary`: "view", "changes" or "auto" (view on Apache CouchDB), see above.
        `timeout`: seconds any request may go unanswered (views: see `CouchDatabase.view`)."""
        self._parse(url)
        self._closed = False
        self.timeout = timeout
        self._session = _session(timeout)
        self._slow_session: couch_http.Session | None = None
        self._summary_lock = threading.Lock()
        self._summary: tuple[str, list[PlacementRow]] | None = None
        self._tally = _PlacementTally()
        self._conflict_seq: str | None = None  # conflicted_ids: where _changes continues
        self._conflict_pending: set[str] = set()
        self.docs = CouchDatabase(self, DOCS_DB, self.prefix + DOCS_DB)
        self.log = CouchDatabase(self, LOG_DB, self.prefix + LOG_DB)
        for db in (self.docs, self.log):
            self._open_db(db, create)
        self._install(self.docs, couch_views.docs_design())
        self._install(self.log, couch_views.log_design())
        if summary not in ("auto", "view", "changes"):
            raise ValueError(f"summary must be auto, view or changes, not {summary!r}")
        if summary == "auto":
            summary = "view" if self._is_apache_couchdb() else "changes"
        self.summary_mode = summary

    def __repr__(self) -> str:
        return f"<CouchLibrary {self.display_url}>"

    # --- URL and errors ------------------------------------------------------------

    def _parse(self, url: str) -> None:
        self._password = ""
        self._display = "CouchDB URL"
        try:
            parts = urllib.parse.urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a bad port
        except ValueError as e:
            raise DatabaseOffline(f"invalid CouchDB URL: {e}") from None
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise DatabaseOffline("invalid CouchDB URL: expected http(s)://host[:port]/")
        user = urllib.parse.unquote(parts.username) if parts.username is not None else None
        self._password = urllib.parse.unquote(parts.password) if parts.password is not None else ""
        hostport = parts.netloc.rpartition("@")[2]
        path = parts.path if parts.path.endswith("/") else parts.path + "/"
        self.server_url = f"{parts.scheme}://{hostport}{path}"
        self._credentials = (user, self._password) if user is not None else None
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=True)
        prefix = query.pop("prefix", [""])[-1]
        shown = f"{parts.scheme}://"
        if user is not None:
            shown += urllib.parse.quote(user, safe="") + (":***" if parts.password else "") + "@"
        shown += f"{hostport}{path}" + (f"?prefix={prefix}" if prefix else "")
        self._display = shown
        if query:
            raise DatabaseOffline(
                f"invalid CouchDB URL {shown}: unknown option {sorted(query)[0]!r}"
            )
        if prefix and not _PREFIX_RE.match(prefix):
            raise DatabaseOffline(
                f"invalid CouchDB URL {shown}: prefix must be lowercase letters, digits,"
                " '_' or '-', starting with a letter"
            )
        self.prefix = prefix

    @property
    def display_url(self) -> str:
        return self._display

    def _mask(self, text: str) -> str:
        if self._password and len(self._password) >= 3:
            text = text.replace(self._password, "***")
            quoted = urllib.parse.quote(self._password, safe="")
            if quoted != self._password:
                text = text.replace(quoted, "***")
        return text

    def _offline(self, reason: str) -> DatabaseOffline:
        return DatabaseOffline(self._mask(f"cannot use CouchDB at {self._display}: {reason}"))

    def _server(self, *path: str) -> couch_http.Resource:
        res = couch_http.Resource(self.server_url, self._session)
        res.credentials = self._credentials
        return res(*path) if path else res

    def _slow(self, dbname: str) -> couch_http.Resource:
        """The database through a session that waits VIEW_TIMEOUT for answers."""
        with self._summary_lock:
            if self._slow_session is None:
                self._slow_session = _session(max(VIEW_TIMEOUT, self.timeout), self.timeout)
            session = self._slow_session
        res = couch_http.Resource(self.server_url, session)
        res.credentials = self._credentials
        return res(dbname)

    @contextmanager
    def _guard(self, what: str, dbname: str) -> Iterator[None]:
        """Turn every transport and HTTP failure into the project's typed errors."""
        if self._closed:
            raise DatabaseOffline(f"library {self._display} is closed")
        try:
            yield
        except couch_http.ResourceNotFound as e:
            _, reason = _error_parts(e)
            if reason in ("no_db_file", "Database does not exist."):
                raise self._offline(f"database {dbname} does not exist") from None
            raise NotFound(self._mask(f"{what}: not found")) from None
        except couch_http.ResourceConflict:
            raise Conflict(self._mask(f"{what}: document update conflict")) from None
        except couch_http.Unauthorized:
            raise self._offline("not authorized (check the user name and password)") from None
        except couch_http.Forbidden as e:
            raise DatabaseError(self._mask(f"{what}: forbidden: {_error_parts(e)[1]}")) from None
        except (couch_http.ServerError, couch_http.PreconditionFailed) as e:
            error, reason = _error_parts(e)
            status = _status(e)
            detail = ": ".join(x for x in (error, reason) if x) or "error"
            msg = f"{what}: {detail}" + (f" (HTTP {status})" if status else "")
            raise DatabaseError(self._mask(msg)) from None
        except couch_http.RedirectLimit:
            raise self._offline("too many redirects") from None
        except TimeoutError as e:
            raise self._offline("timed out") from e
        except OSError as e:
            raise self._offline(_os_reason(e)) from e
        except http.client.HTTPException as e:
            raise self._offline(f"bad HTTP answer ({type(e).__name__})") from e
        except ValueError:
            raise self._offline("not a CouchDB server (the answer is not JSON)") from None

    def _is_apache_couchdb(self) -> bool:
        with self._guard("server", ""):
            _, _, data = self._server()._request_json("GET")
        return isinstance(data, dict) and "couchdb" in data

    def _reachable(self) -> bool:
        try:
            with self._guard("server", ""):
                self._server()._request_json("GET")
        except DatabaseError:
            return False
        return True

    # --- opening -------------------------------------------------------------------

    def _open_db(self, db: CouchDatabase, create: bool) -> None:
        try:
            info = db.info()
        except DatabaseOffline as e:
            if "does not exist" not in str(e):
                raise
            if not create:
                raise self._offline(
                    f"no library here (database {db.dbname} does not exist)"
                ) from None
            try:
                db.request("PUT")
            except DatabaseError as err:
                if "file_exists" not in str(err):  # another process created it first
                    raise
            info = db.info()
        if not isinstance(info, dict) or "update_seq" not in info:
            raise self._offline("not a CouchDB server (no database info)")

    def _install(self, db: CouchDatabase, ddoc: Doc) -> None:
        """Create or replace the design doc when its content differs from the code's."""
        for _ in range(5):
            try:
                current = db.request("GET", db._doc_path(ddoc["_id"]), what=ddoc["_id"])
            except NotFound:
                current = None
            if current is not None:
                mine = {k: v for k, v in current.items() if k != "_rev"}
                if mine == ddoc:
                    return
            new = dict(ddoc)
            if current is not None:
                new["_rev"] = current["_rev"]
            try:
                db.request("PUT", db._doc_path(ddoc["_id"]), new, what=ddoc["_id"])
                return
            except Conflict:
                continue  # another program installed it at the same moment: look again
        raise DatabaseError(f"{db.name}: could not install {ddoc['_id']}")

    def close(self) -> None:
        self._closed = True
        self._session.connection_pool.close()
        if self._slow_session is not None:
            self._slow_session.connection_pool.close()

    # --- replication conflicts -----------------------------------------------------

    def conflicted_ids(self) -> list[str]:
        """Docs whose latest change lists several leaf revisions (`style=all_docs`).

        Incremental: this library remembers where the `_changes` feed was read up to,
        plus the candidates returned before (each stays until `docs.leaves()` finds it has
        one live revision), so a long-running engine pays O(changed docs) per call. A
        resolved doc keeps its deleted leaves: it is a candidate again only when it changes.
        """
        with self._summary_lock:
            since = self._conflict_seq
        found: set[str] = set(self._conflict_pending)
        while True:
            params: dict[str, Any] = {"style": "all_docs", "limit": CHANGES_PAGE}
            if since is not None:
                params["since"] = since
            data = self.docs.request("GET", ["_changes"], **params)
            results = data.get("results", [])
            for r in results:
                doc_id = r.get("id")
                if not isinstance(doc_id, str) or doc_id.startswith("_design/"):
                    continue
                if len(r.get("changes") or ()) > 1 and not r.get("deleted"):
                    found.add(doc_id)
                else:
                    found.discard(doc_id)
            since = _seq(data.get("last_seq"))
            if len(results) < CHANGES_PAGE:
                break
        with self._summary_lock:
            self._conflict_seq = since
            self._conflict_pending = set(found)
        return sorted(found)

    def _conflict_settled(self, doc_id: str) -> None:
        """A candidate has one live revision: not returned again until it changes."""
        with self._summary_lock:
            self._conflict_pending.discard(doc_id)

    # --- named queries -------------------------------------------------------------

    def placement_summary(self) -> list[PlacementRow]:
        """The summary by `summary_mode`, cached per update_seq (see the module doc)."""
        if self.summary_mode == "changes":
            return self._summary_from_changes()
        seq = self.docs.update_seq()
        with self._summary_lock:
            if self._summary is not None and self._summary[0] == seq:
                return list(self._summary[1])
        data = self.docs.view("placement", group_level=2)
        rows = []
        for row in data.get("rows", []):
            (origin, placement), (count, size) = row["key"], row["value"]
            if count > 0:
                rows.append(PlacementRow(origin, placement, int(count), int(size)))
        rows.sort(key=lambda r: (r.origin, r.placement))
        with self._summary_lock:
            self._summary = (seq, rows)
        return list(rows)

    def _summary_from_changes(self) -> list[PlacementRow]:
        tally = self._tally
        with self._summary_lock:
            seq = self.docs.update_seq()  # read first: the feed below reaches at least it
            if tally.info_seq != seq:
                since = tally.changes_seq
                while True:
                    params: dict[str, Any] = {"include_docs": "true", "limit": CHANGES_PAGE}
                    if since is not None:
                        params["since"] = since
                    data = self.docs.request("GET", ["_changes"], **params)
                    results = data.get("results", [])
                    for r in results:
                        doc = None if r.get("deleted") else r.get("doc")
                        tally.apply(r["id"], doc if isinstance(doc, dict) else None)
                    since = _seq(data.get("last_seq"))
                    if len(results) < CHANGES_PAGE:
                        break
                tally.changes_seq, tally.info_seq = since, seq
            return tally.rows()

    def _docs_of(self, data: dict[str, Any]) -> list[Doc]:
        return [
            r["doc"]
            for r in data.get("rows", [])
            if isinstance(r.get("doc"), dict) and not is_damaged(r["doc"])
        ]

    def _by_type(self, typ: str) -> list[Doc]:
        return self._docs_of(self.docs.view("by_type", key=typ, include_docs=True))

    def stores(self) -> list[Doc]:
        return self._by_type(TYPE_STORE)

    def machines(self) -> list[Doc]:
        return self._by_type(TYPE_MACHINE)

    def _range(
        self, view: str, prefix: list[Any], after: list[Any] | None, limit: int
    ) -> list[Doc]:
        if limit <= 0:
            return []
        start = prefix + after + [None] if after is not None else prefix
        return self._docs_of(
            self.docs.view(
                view,
                reduce=False if view == "placement" else None,
                startkey=start,
                endkey=prefix + [_HIGH],
                include_docs=True,
                limit=limit,
            )
        )

    def files_by_store(
        self, store_id: str, limit: int = 100, after: tuple[int, str] | None = None
    ) -> list[Doc]:
        return self._range("by_store", [store_id], list(after) if after else None, limit)

    def file_ids_by_store(
        self, store_id: str, limit: int = 1000, after: tuple[int, str] | None = None
    ) -> list[tuple[int, str]]:
        if limit <= 0:
            return []
        prefix: list[Any] = [store_id]
        data = self.docs.view(
            "by_store",
            startkey=prefix + list(after) + [None] if after is not None else prefix,
            endkey=prefix + [_HIGH],
            limit=limit,
        )
        return [(int(r["key"][1]), r["id"]) for r in data.get("rows", [])]

    def fragile_files(
        self, limit: int = 100, after: tuple[int, str] | None = None, origin: str = "user"
    ) -> list[Doc]:
        return self._range("fragile", [origin], list(after) if after else None, limit)

    def files_by_placement(
        self, placement: str, limit: int = 100, after: str | None = None, origin: str = "user"
    ) -> list[Doc]:
        return self._range(
            "placement", [origin, placement], [after] if after is not None else None, limit
        )

    def copies_due(self, store_id: str, verified_before: int, limit: int = 100) -> list[CopyDue]:
        if limit <= 0:
            return []
        data = self.docs.view(
            "copies",
            reduce=False,
            startkey=[store_id, None],
            endkey=[store_id, verified_before],
            inclusive_end=False,
            limit=limit,
        )
        return [
            CopyDue(r["id"], store_id, r["key"][1], int(r["value"])) for r in data.get("rows", [])
        ]

    def _copies_count(self, startkey: list[Any], endkey: list[Any]) -> int:
        rows = self.docs.view("copies", startkey=startkey, endkey=endkey).get("rows", [])
        return int(rows[0]["value"]) if rows else 0

    def _verified_at(self, store_id: str, skip: int = 0, descending: bool = False) -> int:
        lo, hi = [store_id, 0], [store_id, _HIGH]
        data = self.docs.view(
            "copies",
            reduce=False,
            startkey=hi if descending else lo,
            endkey=lo if descending else hi,
            descending=descending,
            skip=skip,
            limit=1,
        )
        return int(data["rows"][0]["key"][1])

    def verification_stats(self, store_id: str) -> VerificationStats:
        """Two reduce queries (O(copies on the store) on PouchDB) and three row reads."""
        copies = self._copies_count([store_id, None], [store_id, _HIGH])
        never = self._copies_count([store_id, None], [store_id, None])
        verified = copies - never
        if verified <= 0:
            return VerificationStats(copies, never, None, None, None)
        oldest = self._verified_at(store_id)
        newest = self._verified_at(store_id, descending=True)
        # The lower median: an actual verification time, never an average.
        median = self._verified_at(store_id, skip=(verified - 1) // 2)
        return VerificationStats(copies, never, oldest, median, newest)

    # --- events --------------------------------------------------------------------

    def _scan(
        self,
        fetch: Callable[..., dict[str, Any]],
        key: Callable[[str], Any],
        lo: Any,
        hi: Any,
        newest_first: bool,
        cursor: str | None,
        page: int,
    ) -> Iterator[Doc]:
        """Docs of a key range in `_id` order (descending when newest_first), lazily."""
        params: dict[str, Any] = {"include_docs": True, "limit": page + 1}
        if newest_first:
            start, end = (key(cursor) if cursor is not None else hi), lo
        else:
            start, end = (key(cursor) if cursor is not None else lo), hi
        skip_id = cursor
        while True:
            q = dict(params, startkey=start, endkey=end, descending=newest_first)
            rows = fetch(**q).get("rows", [])
            fresh = [r for r in rows if r["id"] != skip_id]
            for row in fresh[:page]:
                doc = row.get("doc")
                if (
                    isinstance(doc, dict)
                    and not is_damaged(doc)
                    and not row["id"].startswith("_design/")
                ):
                    yield doc
            if len(fresh) <= page:
                return
            last = fresh[page - 1]
            start, skip_id = last["key"], last["id"]

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
        """Log docs by a key range of the most selective view, filtered exactly here.

        Log IDs start with the time (protocol.log_id), so `since` bounds the `_id`
        range at the first ID of that second; the `time` field is then checked exactly.
        """
        wanted = None if types is None else set(types)
        if limit <= 0 or (wanted is not None and not wanted):
            return []
        low_id = _since_prefix(since) if since is not None else ""
        page = min(max(limit, 20), 1000)
        log = self.log

        def view_scan(view: str, value: str) -> Iterator[Doc]:
            return self._scan(
                lambda **q: log.view(view, **q),
                lambda i: [value, i],
                [value, low_id],
                [value, _HIGH],
                newest_first,
                cursor,
                page,
            )

        if file_id is not None:
            source = view_scan("by_file", file_id)
        elif store_id is not None:
            source = view_scan("by_store", store_id)
        elif wanted is not None:
            scans = [view_scan("by_type", t) for t in sorted(wanted)]
            source = heapq.merge(*scans, key=lambda d: d["_id"], reverse=newest_first)
        else:
            source = self._scan(
                log.all_docs, lambda i: i, low_id, "\ufff0", newest_first, cursor, page
            )
        out: list[Doc] = []
        for doc in source:
            if wanted is not None and doc.get("type") not in wanted:
                continue
            if store_id is not None and doc.get("store_id") != store_id:
                continue
            if file_id is not None and doc.get("file_id") != file_id:
                continue
            if since is not None and not (_is_number(doc.get("time")) and doc["time"] >= since):
                continue
            out.append(doc)
            if len(out) >= limit:
                break
        return out
