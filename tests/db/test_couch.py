"""What only the CouchDB backend has: design docs, URLs and credentials, a server that is
away, the long-polled changes feed, database prefixes, bulk batches, and the JavaScript
views agreeing with `dmedia_tui.durability` on random (and malformed) docs.

Runs against the real PouchDB Server of `tests/couchserver.py`; small stdlib HTTP/TCP
servers stand in only for what PouchDB cannot do (answer 401, drop a connection).
"""

from __future__ import annotations

import http.server
import json
import random
import socket
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dmedia_tui import durability
from dmedia_tui.db import (
    Conflict,
    DatabaseError,
    DatabaseOffline,
    NotFound,
    couch_views,
    open_library,
)
from dmedia_tui.db.couch import BATCH, CouchLibrary
from dmedia_tui.protocol import random_id
from tests.conftest import NOW
from tests.couchserver import CouchServer, start_pouchdb_server

PASSWORD = "s3cr3t-pa55word"


@pytest.fixture
def url(couch_server: CouchServer) -> str:
    return couch_server.fresh_url()


@pytest.fixture
def lib(url: str) -> Iterator[CouchLibrary]:
    library = CouchLibrary(url)
    yield library
    library.close()


def with_credentials(url: str, user: str = "admin", password: str = PASSWORD) -> str:
    parts = urllib.parse.urlsplit(url)
    netloc = f"{user}:{urllib.parse.quote(password, safe='')}@{parts.netloc}"
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def file_doc(stored: dict[str, Any], size: int = 100, origin: Any = "user") -> dict[str, Any]:
    return {
        "_id": random_id(30),
        "type": "dmedia/file",
        "time": NOW,
        "bytes": size,
        "origin": origin,
        "stored": stored,
    }


@pytest.fixture(scope="module")
def auth_server(
    couch_server: CouchServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[CouchServer]:
    """A server of its own with an admin user (PouchDB refuses unknown credentials)."""
    server = _start(tmp_path_factory.mktemp("auth-server"))
    yield server
    server.stop()


def _start(workdir: Path) -> CouchServer:
    """A dedicated PouchDB Server whose admin is `admin` / PASSWORD."""
    try:
        server = start_pouchdb_server(workdir)
    except (FileNotFoundError, RuntimeError) as e:
        pytest.skip(str(e))
    raw(server.url, "PUT", "_config/admins/admin", PASSWORD)
    return server


def raw(url: str, method: str, path: str, body: Any = None) -> Any:
    """A request straight to the server, bypassing the backend under test."""
    import urllib.request

    base = url.split("?")[0]
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    req.add_header("Accept", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


def prefix_of(url: str) -> str:
    return urllib.parse.parse_qs(urllib.parse.urlsplit(url).query)["prefix"][0]


# --- design docs -----------------------------------------------------------------------


def test_design_docs_installed_with_version(lib: CouchLibrary, url: str) -> None:
    p = prefix_of(url)
    ddoc = raw(url, "GET", f"{p}dmedia-1/_design/{couch_views.DOCS_DDOC}")
    assert ddoc["version"] == couch_views.VERSION
    assert set(ddoc["views"]) == set(couch_views.docs_design()["views"])
    log = raw(url, "GET", f"{p}log-1/_design/{couch_views.LOG_DDOC}")
    assert log["version"] == couch_views.VERSION


def test_design_doc_of_another_version_is_replaced(url: str) -> None:
    CouchLibrary(url).close()
    p = prefix_of(url)
    path = f"{p}dmedia-1/_design/{couch_views.DOCS_DDOC}"
    old = raw(url, "GET", path)
    old["version"] = couch_views.VERSION - 1
    old["views"]["placement"]["map"] = "function (doc) { emit(['old', 'view', doc._id], [1, 0]); }"
    raw(url, "PUT", path, old)

    lib = CouchLibrary(url)
    s = random_id()
    lib.docs.save(file_doc({s: {"copies": 1}}, size=7))
    new = raw(url, "GET", path)
    assert new["version"] == couch_views.VERSION
    assert new["views"] == couch_views.docs_design()["views"]
    assert [(r.placement, r.count, r.bytes) for r in lib.placement_summary()] == [(f"{s}:1", 1, 7)]


def test_current_design_doc_is_not_rewritten(url: str) -> None:
    CouchLibrary(url).close()
    p = prefix_of(url)
    path = f"{p}dmedia-1/_design/{couch_views.DOCS_DDOC}"
    rev = raw(url, "GET", path)["_rev"]
    CouchLibrary(url, create=False).close()
    assert raw(url, "GET", path)["_rev"] == rev


def test_design_docs_are_internal(lib: CouchLibrary) -> None:
    assert lib.docs.count() == 0
    assert lib.docs.page() == []
    assert lib.docs.changes().results == []
    assert lib.log.count() == 0
    assert lib.events() == []
    with pytest.raises(NotFound):
        lib.docs.get("_design/dmedia")


# --- URLs, credentials, prefixes -------------------------------------------------------


def test_prefix_names_the_databases(lib: CouchLibrary, url: str) -> None:
    p = prefix_of(url)
    assert lib.docs.dbname == f"{p}dmedia-1" and lib.log.dbname == f"{p}log-1"
    assert lib.docs.name == "dmedia-1" and lib.log.name == "log-1"
    lib.docs.save({"_id": "x1", "type": "t"})
    assert raw(url, "GET", f"{p}dmedia-1/x1")["type"] == "t"


def test_prefixes_isolate_libraries(couch_server: CouchServer) -> None:
    a = open_library(couch_server.fresh_url())
    b = open_library(couch_server.fresh_url())
    a.docs.save({"_id": "only-in-a", "type": "t"})
    a.log.save({"_id": random_id(), "type": "dmedia/store/purge", "time": NOW})
    assert b.docs.count() == 0 and b.log.count() == 0
    assert b.docs.get_or_none("only-in-a") is None
    assert a.docs.count() == 1


def test_display_url_masks_the_password(auth_server: CouchServer) -> None:
    url = auth_server.fresh_url()
    lib = CouchLibrary(with_credentials(url))
    lib.docs.save({"_id": "a", "type": "t"})
    assert PASSWORD not in lib.display_url
    assert PASSWORD not in repr(lib) and PASSWORD not in repr(lib.docs)
    assert lib.display_url.startswith("http://admin:***@127.0.0.1:")
    assert lib.display_url.endswith(f"/?prefix={prefix_of(url)}")
    lib.close()


def test_display_url_without_credentials_is_the_url(url: str) -> None:
    lib = CouchLibrary(url)
    assert lib.display_url == url
    lib.close()


@pytest.mark.parametrize(
    "bad",
    [
        "http://127.0.0.1:5984/?prefix=Upper-",
        "http://127.0.0.1:5984/?prefix=9lives-",
        "http://127.0.0.1:5984/?prefix=a%2Fb",
        "http://127.0.0.1:5984/?colour=blue",
        "http://127.0.0.1:notaport/",
        "ftp://127.0.0.1/",
    ],
)
def test_invalid_url_is_one_line_offline_error(bad: str) -> None:
    with pytest.raises(DatabaseOffline) as e:
        CouchLibrary(bad)
    assert "\n" not in str(e.value) and "invalid CouchDB URL" in str(e.value)


def test_missing_library_without_create(url: str) -> None:
    with pytest.raises(DatabaseOffline, match="no library here"):
        CouchLibrary(url, create=False)
    CouchLibrary(url).close()
    CouchLibrary(url, create=False).close()


# --- a server that is not there (or not willing) ---------------------------------------


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_refused_connection_is_offline_with_masked_password() -> None:
    url = f"http://admin:{PASSWORD}@127.0.0.1:{_closed_port()}/"
    with pytest.raises(DatabaseOffline) as e:
        open_library(url)
    msg = str(e.value)
    assert "connection refused" in msg and "admin:***@127.0.0.1" in msg
    assert PASSWORD not in msg and "\n" not in msg
    assert e.value.__cause__ is None or PASSWORD not in str(e.value.__cause__)


def test_unknown_host_is_offline() -> None:
    with pytest.raises(DatabaseOffline, match="unknown host"):
        CouchLibrary(f"http://admin:{PASSWORD}@no-such-host.invalid:5984/")


class _Handler(http.server.BaseHTTPRequestHandler):
    status = 401
    body = b'{"error":"unauthorized","reason":"Name or password is incorrect."}'
    ctype = "application/json"

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        self.send_response(self.status)
        self.send_header("Content-Type", self.ctype)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    do_PUT = do_GET  # noqa: N815

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def fake_server() -> Iterator[tuple[http.server.HTTPServer, type[_Handler]]]:
    handler = type("Handler", (_Handler,), {})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server, handler
    server.shutdown()
    server.server_close()


def test_wrong_password_is_offline_and_masked(auth_server: CouchServer) -> None:
    url = with_credentials(auth_server.fresh_url(), password="wrong-password")
    with pytest.raises(DatabaseOffline) as e:
        CouchLibrary(url)
    assert "not authorized" in str(e.value) and "wrong-password" not in str(e.value)


def test_unauthorized_is_offline_with_masked_password(fake_server: Any) -> None:
    server, _ = fake_server
    url = f"http://admin:{PASSWORD}@127.0.0.1:{server.server_address[1]}/"
    with pytest.raises(DatabaseOffline) as e:
        CouchLibrary(url)
    assert "not authorized" in str(e.value) and PASSWORD not in str(e.value)


def test_a_web_server_that_is_not_couchdb_is_offline(fake_server: Any) -> None:
    server, handler = fake_server
    handler.status, handler.body, handler.ctype = 200, b"<html>hello</html>", "text/html"
    with pytest.raises(DatabaseOffline, match="not a CouchDB server"):
        CouchLibrary(f"http://127.0.0.1:{server.server_address[1]}/")


def test_server_going_away_is_offline(tmp_path: Path) -> None:
    server = _start(tmp_path)
    try:
        lib = CouchLibrary(with_credentials(server.url))
        lib.docs.save({"_id": "a", "type": "t"})
    finally:
        server.stop()
    for call in (lambda: lib.docs.get("a"), lib.placement_summary, lib.docs.update_seq):
        with pytest.raises(DatabaseOffline) as e:
            call()
        assert PASSWORD not in str(e.value)
    with pytest.raises(DatabaseOffline):
        lib.docs.wait_changes("1", 5)


# --- writes ----------------------------------------------------------------------------


def test_bulk_save_in_batches_with_per_doc_results(lib: CouchLibrary) -> None:
    taken = lib.docs.save({"_id": "doc-0700", "type": "t"})
    docs: list[Any] = [{"_id": f"doc-{i:04d}", "type": "t"} for i in range(2 * BATCH + 3)]
    docs[3] = {"no": "id"}
    docs.append({"_id": "bad-json", "value": float("nan")})
    results = lib.docs.save_many(docs)
    assert len(results) == len(docs)
    assert isinstance(results[3], DatabaseError)
    assert isinstance(results[700], Conflict)  # saved before without this _rev
    assert isinstance(results[-1], DatabaseError) and "not JSON" in str(results[-1])
    ok = [r for r in results if isinstance(r, dict)]
    assert len(ok) == len(docs) - 3 and all(r["_rev"].startswith("1-") for r in ok)
    assert lib.docs.count() == len(ok) + 1
    assert lib.docs.get("doc-0700")["_rev"] == taken["_rev"]


def test_delete_without_rev_is_a_conflict(lib: CouchLibrary) -> None:
    doc = lib.docs.save({"_id": "a", "type": "t"})
    with pytest.raises(Conflict):
        lib.docs.delete({"_id": "a"})
    lib.docs.delete(doc)
    with pytest.raises(NotFound):
        lib.docs.delete({"_id": "a"})


# --- changes ---------------------------------------------------------------------------


def test_seqs_are_strings(lib: CouchLibrary) -> None:
    lib.docs.save({"_id": "a", "type": "t"})
    changes = lib.docs.changes()
    assert isinstance(changes.last_seq, str)
    assert all(isinstance(c.seq, str) for c in changes.results)
    assert isinstance(lib.docs.update_seq(), str)
    assert lib.docs.changes(since=changes.last_seq).results == []


def test_wait_changes_returns_at_once_when_behind(lib: CouchLibrary) -> None:
    since = lib.docs.update_seq()
    lib.docs.save({"_id": "a", "type": "t"})
    assert lib.docs.wait_changes(since, timeout=3600) == lib.docs.update_seq() != since


def test_wait_changes_times_out_unchanged(lib: CouchLibrary) -> None:
    since = lib.log.update_seq()
    assert lib.log.wait_changes(since, timeout=0.2) == since


def test_wait_changes_wakes_on_a_write(lib: CouchLibrary) -> None:
    since = lib.docs.update_seq()
    got: list[str] = []
    waiter = threading.Thread(target=lambda: got.append(lib.docs.wait_changes(since, 3600)))
    waiter.start()
    lib.docs.save({"_id": "a", "type": "t"})
    waiter.join()
    assert got == [lib.docs.update_seq()] and got[0] != since


def test_a_long_poll_outlives_the_request_timeout(url: str) -> None:
    """The request timeout bounds a server that never answers; a long poll that waits
    longer than it for a change is no such failure and keeps waiting."""
    lib = CouchLibrary(url, timeout=0.3)
    try:
        since = lib.docs.update_seq()
        got: list[str] = []
        errors: list[BaseException] = []

        def wait() -> None:
            try:
                got.append(lib.docs.wait_changes(since, 3600))
            except BaseException as e:  # noqa: BLE001 - reported below
                errors.append(e)

        waiter = threading.Thread(target=wait)
        waiter.start()
        waiter.join(1.5)  # five request timeouts
        assert waiter.is_alive() and not errors, errors
        lib.docs.save({"_id": "a", "type": "t"})
        waiter.join(30)
        assert not errors and got == [lib.docs.update_seq()] and got[0] != since
    finally:
        lib.close()


def test_a_server_that_never_answers_is_offline_within_the_timeout(black_hole) -> None:
    start = time.monotonic()
    with pytest.raises(DatabaseOffline, match="timed out"):
        CouchLibrary(black_hole.url, timeout=0.3)
    assert time.monotonic() - start < 5


def test_a_view_slower_than_the_timeout_is_waited_for_while_the_server_answers(
    couch_server: CouchServer,
) -> None:
    """A first view build takes minutes on a big PouchDB library: a view query that times
    out while the server still answers is asked again with the long view timeout."""
    from tests.couchserver import BlackHole

    hole = BlackHole(forward_to=("127.0.0.1", couch_server.port), slow_views=1.0)
    prefix = couch_server.fresh_url().split("?", 1)[1]
    lib = CouchLibrary(f"{hole.url}?{prefix}", timeout=0.4)
    try:
        lib.docs.save({"_id": "s1", "type": "dmedia/store"})
        assert [d["_id"] for d in lib.stores()] == ["s1"]
        assert hole.views == 2  # timed out once, asked again with the long timeout
        hole.hang()
        with pytest.raises(DatabaseOffline, match="timed out"):
            lib.stores()  # the server does not answer: no retry
    finally:
        lib.close()
        hole.close()


class DroppingProxy:
    """A TCP proxy to the server that cuts the first `drops` long-poll connections."""

    def __init__(self, target_port: int, drops: int = 1) -> None:
        self.target_port = target_port
        self.drops_left = drops
        self.dropped = threading.Event()
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        first = client.recv(65536)
        if b"feed=longpoll" in first and self.drops_left > 0:
            self.drops_left -= 1
            client.close()
            self.dropped.set()
            return
        upstream = socket.create_connection(("127.0.0.1", self.target_port))
        upstream.sendall(first)

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)

    def close(self) -> None:
        self.sock.close()


def test_wait_changes_reconnects_after_a_dropped_long_poll(
    couch_server: CouchServer, url: str
) -> None:
    writer = CouchLibrary(url)
    proxy = DroppingProxy(couch_server.port)
    try:
        query = urllib.parse.urlsplit(url).query
        lib = CouchLibrary(f"http://127.0.0.1:{proxy.port}/?{query}")
        since = lib.docs.update_seq()
        got: list[str] = []
        waiter = threading.Thread(target=lambda: got.append(lib.docs.wait_changes(since, 3600)))
        waiter.start()
        proxy.dropped.wait()
        writer.docs.save({"_id": "a", "type": "t"})
        waiter.join()
        assert got == [writer.docs.update_seq()] and got[0] != since
        assert proxy.drops_left == 0
    finally:
        proxy.close()


# --- the views agree with durability.py -----------------------------------------------


def _random_stored(rng: random.Random, stores: list[str]) -> Any:
    if rng.random() < 0.05:
        return rng.choice([None, [], "x", 3])
    stored: dict[str, Any] = {}
    for s in rng.sample(stores, rng.randint(0, 4)):
        # Integral floats (2.0) are left out: JSON numbers in JavaScript have no int/float
        # distinction, so CouchDB reads `2.0` back as `2` (see the closing report).
        copies = rng.choice([0, 1, 1, 1, 2, 3, -1, True, False, 1.5, "2", None])
        e: dict[str, Any] = {"mtime": NOW}
        if copies is not None:
            e["copies"] = copies
        if rng.random() < 0.5:
            e["verified"] = rng.choice([NOW - rng.randint(0, 10**6), True, "old", -5])
        stored[s] = e if rng.random() > 0.05 else rng.choice([1, "1", [1]])
    if rng.random() < 0.1:
        stored[rng.choice(["junk", "x" * 24, stores[0].lower()])] = {"copies": 5}
    return stored


def test_views_agree_with_durability_on_random_docs(lib: CouchLibrary) -> None:
    rng = random.Random(20261125)
    stores = [random_id() for _ in range(6)]
    docs = []
    for _ in range(400):
        doc = file_doc(
            _random_stored(rng, stores),
            size=rng.choice([1, 10, 1000, 0, -3, "big", 2.5]),
            origin=rng.choice(["user", "user", "cache", None, 7]),
        )
        docs.append(doc)
    docs.append({"_id": "not-a-file", "type": "dmedia/store", "stored": {stores[0]: 1}})
    assert all(isinstance(r, dict) for r in lib.docs.save_many(docs))
    files = docs[:-1]

    want: Counter[tuple[str, str]] = Counter()
    size: Counter[tuple[str, str]] = Counter()
    for d in files:
        k = (durability.file_origin(d), durability.placement_key(d))
        want[k] += 1
        size[k] += durability.file_bytes(d)
    got = {(r.origin, r.placement): (r.count, r.bytes) for r in lib.placement_summary()}
    assert got == {k: (want[k], size[k]) for k in want}

    fragile = sorted(
        (durability.rank(d), d["_id"])
        for d in files
        if durability.file_origin(d) == "user" and durability.durability(d) < 3
    )
    assert [d["_id"] for d in lib.fragile_files(limit=1000)] == [i for _, i in fragile]

    for s in stores[:2]:
        on_store = sorted(
            (durability.rank(d), d["_id"]) for d in files if s in dict(durability.stored_items(d))
        )
        assert [d["_id"] for d in lib.files_by_store(s, limit=1000)] == [i for _, i in on_store]


def test_summary_modes_agree_through_updates_and_deletes(url: str) -> None:
    by_view = CouchLibrary(url, summary="view")
    by_changes = CouchLibrary(url, summary="changes")
    assert by_view.summary_mode == "view" and by_changes.summary_mode == "changes"
    assert CouchLibrary(url).summary_mode == "changes"  # PouchDB Server: auto
    rng = random.Random(7)
    stores = [random_id() for _ in range(4)]
    docs = [file_doc(_random_stored(rng, stores), size=rng.randint(1, 99)) for _ in range(60)]
    by_view.docs.save_many(docs)
    assert by_changes.placement_summary() == by_view.placement_summary() != []
    for d in docs[:20]:
        d["stored"] = _random_stored(rng, stores)
    by_view.docs.save_many(docs[:20])
    for d in docs[20:30]:
        by_view.docs.delete(d)
    docs[30]["type"] = "dmedia/not-a-file-any-more"
    by_view.docs.save(docs[30])
    assert by_changes.placement_summary() == by_view.placement_summary()
    assert sum(r.count for r in by_changes.placement_summary()) == 60 - 11
    with pytest.raises(ValueError):
        CouchLibrary(url, summary="magic")
