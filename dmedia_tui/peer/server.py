"""The peer server: read-only HTTPS for the machines of one library (DESIGN.md §6).

Endpoints (HTTP/1.1 over TLS 1.3, client certificate required):

    GET  /files/<file_id>   bytes of a good copy on a store connected here (Range: one
                            byte range; 404 when this machine has none)
    HEAD /files/<file_id>   the same headers, no body
    GET  /info              {"machine_id", "stores": [connected store IDs]}

Trust: the TLS layer accepts only certificates of the library's machines (they are the
context's only trust anchors), and every request is checked again against the current
fingerprints (a machine removed from the library gets 403 even before a restart drops
its certificate from the context). Nothing is served to anyone else; nothing is written.

Every leaf is verified against the file doc's `leaf_hashes` before it is sent, so a peer
never receives rot from us: a leaf that does not match reports the copy to `on_corrupt`
(the engine then runs the normal corrupt path: quarantine, downgrade, `failure`) and the
transfer goes on from another connected copy, or is cut off when there is none. An I/O
error is not corruption: it switches copies the same way without reporting anything.

aiohttp (see the README for why) runs on its own asyncio loop in its own thread, because
the engine is threaded; start() returns the address actually bound.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import socket
import ssl
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from blake3 import blake3

from dmedia_tui import protocol
from dmedia_tui.errors import DmediaError
from dmedia_tui.filestore import FileStore
from dmedia_tui.peer.identity import Identity, add_trusted, fingerprint_der, fingerprint_pem
from dmedia_tui.views import FileView

log = logging.getLogger("dmedia_tui.peer.server")

DEFAULT_PORT = 8476
WRITE_CHUNK = 1024 * 1024  # leaves go out in 1 MiB writes: bounded transport buffers
SPARE_BUFFERS = 4  # leaf buffers kept between transfers (32 MiB: two transfers at once, as
# a peer's copy worker pulls): a new one costs more CPU (zeroing, page faults) than
# encrypting its bytes, and most files are 1-4 leaves

Doc = dict[str, Any]
Trust = Callable[[], Mapping[str, str]]  # fingerprint -> PEM certificate, every machine
Stores = Callable[[], Mapping[str, FileStore]]  # store ID -> FileStore connected here
FileDoc = Callable[[str], Doc | None]
OnCorrupt = Callable[[str, str], None]  # (store_id, file_id)


def _not_send_noise(record: logging.LogRecord) -> bool:
    """asyncio warns "socket.send() raised exception." for every write into a connection
    the peer already dropped; a peer that cuts a transfer short is routine here."""
    return record.getMessage() != "socket.send() raised exception."


class ListenError(DmediaError, ValueError):
    """`[peer] listen` is not HOST:PORT."""


def parse_listen(value: str) -> tuple[str, int]:
    """ "HOST:PORT" or "[v6]:PORT" -> (host, port); port 0 means any free port."""
    host, sep, port_s = value.rpartition(":")
    if not sep or not port_s.isdigit() or not host:
        raise ListenError(f"listen must be HOST:PORT, got {value!r}")
    port = int(port_s)
    if port > 65535:
        raise ListenError(f"port out of range in {value!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, port


def format_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class RangeNotSatisfiable(DmediaError, ValueError):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """One `Range: bytes=...` -> (start, end) with end exclusive; None for the whole file.

    Several ranges are ignored (a whole 200 answer, as RFC 9110 allows); a malformed or
    unsatisfiable range raises RangeNotSatisfiable (416).
    """
    if header is None:
        return None
    unit, _, spec = header.strip().partition("=")
    if unit.strip().lower() != "bytes" or not spec:
        raise RangeNotSatisfiable(header)
    if "," in spec:
        return None
    first, dash, last = spec.strip().partition("-")
    first, last = first.strip(), last.strip()
    if not dash or (first and not first.isdigit()) or (last and not last.isdigit()):
        raise RangeNotSatisfiable(header)
    if not first:  # suffix: the last N bytes
        if not last or int(last) == 0:
            raise RangeNotSatisfiable(header)
        return max(0, size - int(last)), size
    start = int(first)
    end = size if not last else int(last) + 1
    if start >= size or end <= start:
        raise RangeNotSatisfiable(header)
    return start, min(end, size)


@dataclass(frozen=True)
class _Copy:
    store_id: str
    fd: int


def _read_and_check(fd: int, index: int, view: memoryview, expected: bytes) -> bool:
    """Read leaf `index` whole into `view` (its length) and hash it: True when it matches.

    Runs in a worker thread (pread and blake3 release the GIL). A short read (the file
    shrank under us) is a mismatch: the copy is not the file. OSError propagates.
    """
    length = len(view)
    got = 0
    offset = index * protocol.LEAF_SIZE
    while got < length:
        n = os.preadv(fd, [view[got:]], offset + got)
        if n == 0:
            return False
        got += n
    h = blake3(derive_key_context=protocol.LEAF_CONTEXT, max_threads=blake3.AUTO)
    h.update(index.to_bytes(8, "little"))
    h.update(view)
    return h.digest(length=protocol.DIGEST_BYTES) == expected


class PeerServer:
    """The server of one machine; start() in the engine, stop() when it stops."""

    def __init__(
        self,
        identity: Identity,
        *,
        machine_id: str,
        trusted: Trust,
        stores: Stores,
        file_doc: FileDoc,
        on_corrupt: OnCorrupt | None = None,
        listen: str = f"0.0.0.0:{DEFAULT_PORT}",
        trust_refresh: float = 15.0,
        max_transfers: int = 8,
        verify_leaves: bool = True,
        handshake_timeout: float = 10.0,
        keepalive_timeout: float = 15.0,
    ) -> None:
        self.identity = identity
        self.machine_id = machine_id
        self._trusted_fn = trusted
        self._stores_fn = stores
        self._file_doc_fn = file_doc
        self._on_corrupt_fn = on_corrupt
        self.listen = parse_listen(listen)
        self.trust_refresh = trust_refresh
        self.verify_leaves = verify_leaves  # False only in tests of the client's own check
        self.handshake_timeout = handshake_timeout
        self.keepalive_timeout = keepalive_timeout
        self.max_transfers = max_transfers
        self.address: tuple[str, int] | None = None
        self._trusted: frozenset[str] = frozenset()
        self._anchors: set[str] = set()
        self._ctx: ssl.SSLContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._aio_server: asyncio.base_events.Server | None = None
        self._web: web.Server | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._refresher: asyncio.Task[None] | None = None
        self._transfers = 0
        self._spare: list[bytearray] = []  # only touched in the loop's thread
        self.stats = {"requests": 0, "refused": 0, "bytes": 0, "corrupt": 0, "io_errors": 0}

    # --- lifecycle -------------------------------------------------------------------

    def start(self) -> tuple[str, int]:
        """Bind, start serving in a new thread, return the bound (host, port).

        Raises OSError when the address cannot be bound (port taken, no such address).
        """
        if self._thread is not None:
            raise RuntimeError("peer server already started")
        self._ctx = self.identity.server_context()
        self._apply_trust(self._load_trust())
        asyncio_log = logging.getLogger("asyncio")
        if _not_send_noise not in asyncio_log.filters:
            asyncio_log.addFilter(_not_send_noise)
        host, port = self.listen
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.create_server((host, port), family=family, backlog=128, reuse_port=False)
        self.address = sock.getsockname()[:2]
        self._pool = ThreadPoolExecutor(4, thread_name_prefix="dmedia-peer-io")
        self._loop = asyncio.new_event_loop()
        ready = threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            assert self._loop is not None
            asyncio.set_event_loop(self._loop)
            try:
                self._loop.run_until_complete(self._serve(sock))
            except BaseException as e:  # reported to start()
                failure.append(e)
                ready.set()
                return
            ready.set()
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="dmedia-peer-server", daemon=True)
        self._thread.start()
        ready.wait()
        if failure:
            self._thread.join()
            self._close_loop()
            raise failure[0]
        log.info("peer server listening on %s", format_address(*self.address))
        return self.address

    async def _serve(self, sock: socket.socket) -> None:
        assert self._loop is not None
        self._web = web.Server(
            self._handle,
            access_log=None,
            keepalive_timeout=self.keepalive_timeout,
            handler_cancellation=True,
        )
        self._aio_server = await self._loop.create_server(
            self._web,
            sock=sock,
            ssl=self._ctx,
            ssl_handshake_timeout=self.handshake_timeout,
            ssl_shutdown_timeout=2.0,
        )
        self._refresher = self._loop.create_task(self._refresh_loop())

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving: open transfers are cut off (clients keep their verified leaves)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._shutdown(), loop)
        with contextlib.suppress(Exception):
            fut.result(timeout)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout)
        self._close_loop()

    async def _shutdown(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        if self._aio_server is not None:
            self._aio_server.close()
        if self._web is not None:
            await self._web.shutdown(1.0)

    def _close_loop(self) -> None:
        if self._loop is not None and not self._loop.is_running():
            self._loop.close()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        self._loop = self._thread = self._pool = None
        self._aio_server = self._web = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    # --- trust -----------------------------------------------------------------------

    def _load_trust(self) -> dict[str, str]:
        """{fingerprint: pem} from the lookup, keeping only certificates that match."""
        good: dict[str, str] = {}
        for fp, pem in dict(self._trusted_fn()).items():
            try:
                if isinstance(pem, str) and fingerprint_pem(pem) == fp:
                    good[fp] = pem
                else:
                    log.warning("machine certificate does not match fingerprint %s", fp)
            except Exception as e:  # a garbled doc must not stop the server
                log.warning("unusable machine certificate %s: %s", fp, e)
        return good

    def _apply_trust(self, trust: dict[str, str]) -> None:
        assert self._ctx is not None
        new = [pem for fp, pem in trust.items() if fp not in self._anchors]
        if new:
            add_trusted(self._ctx, new)
            self._anchors.update(fp for fp, _ in trust.items())
        self._trusted = frozenset(trust)

    def refresh_trust(self) -> None:
        """Re-read the library's machines now (thread-safe; the engine calls it when
        machine docs change)."""
        trust = self._load_trust()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._apply_trust, trust)

    async def _refresh_loop(self) -> None:
        assert self._loop is not None
        while True:
            await asyncio.sleep(self.trust_refresh)
            try:
                trust = await self._loop.run_in_executor(self._pool, self._load_trust)
            except Exception as e:
                log.warning("cannot refresh the trusted machines: %s", e)
                continue
            self._apply_trust(trust)

    def _peer_fingerprint(self, request: web.BaseRequest) -> str | None:
        transport = request.transport
        sslobj = transport.get_extra_info("ssl_object") if transport is not None else None
        der = sslobj.getpeercert(binary_form=True) if sslobj is not None else None
        return fingerprint_der(der) if der else None

    # --- requests --------------------------------------------------------------------

    async def _handle(self, request: web.BaseRequest) -> web.StreamResponse:
        self.stats["requests"] += 1
        fp = self._peer_fingerprint(request)
        if fp is None or fp not in self._trusted:
            self.stats["refused"] += 1
            return _text(403, "not a machine of this library")
        path = request.path
        if path == "/info" and request.method == "GET":
            return await self._info()
        if path.startswith("/files/"):
            if request.method not in ("GET", "HEAD"):
                return _text(405, "read-only", allow="GET, HEAD")
            return await self._file(request, path[len("/files/") :])
        return _text(404, "no such endpoint")

    async def _info(self) -> web.Response:
        assert self._loop is not None
        stores = await self._loop.run_in_executor(self._pool, lambda: sorted(self._stores_fn()))
        body = {"machine_id": self.machine_id, "stores": stores}
        return web.json_response(body, dumps=lambda o: json.dumps(o, sort_keys=True))

    async def _file(self, request: web.BaseRequest, file_id: str) -> web.StreamResponse:
        if not protocol.is_file_id(file_id):  # before anything builds a path from it
            return _text(400, "invalid file ID")
        assert self._loop is not None
        run = self._loop.run_in_executor
        doc = await run(self._pool, self._file_doc_fn, file_id)
        if doc is None:
            return _text(404, "no file doc with valid leaf hashes")
        try:
            size = doc["bytes"]
            leaves = protocol.check_root_hash(
                file_id, size, protocol.decode_leaf_hashes(doc["leaf_hashes"])
            )
        except (TypeError, KeyError, protocol.ProtocolError):
            return _text(404, "no file doc with valid leaf hashes")
        assert isinstance(size, int)
        copies = await run(self._pool, self._open_copies, file_id, doc, size)
        if not copies:
            return _text(404, "no good copy on a store connected here")
        try:
            try:
                span = parse_range(request.headers.get("Range"), size)
            except RangeNotSatisfiable:
                return _text(416, "range not satisfiable", content_range=f"bytes */{size}")
            start, end = span or (0, size)
            resp = web.StreamResponse(status=206 if span else 200)
            resp.content_length = end - start
            resp.content_type = "application/octet-stream"
            resp.headers["Accept-Ranges"] = "bytes"
            resp.headers["ETag"] = f'"{file_id}"'
            if span:
                resp.headers["Content-Range"] = f"bytes {start}-{end - 1}/{size}"
            if request.method == "HEAD":
                return resp
            if self._transfers >= self.max_transfers:
                return _text(503, "too many transfers", retry_after="5")
            self._transfers += 1
            try:
                await resp.prepare(request)
                await self._send(request, resp, file_id, leaves, size, start, end, copies)
            finally:
                self._transfers -= 1
            return resp
        finally:
            for c in copies:
                os.close(c.fd)

    def _open_copies(self, file_id: str, doc: Doc, size: int) -> list[_Copy]:
        """Open every connected copy the doc calls good, best first (counted copies,
        then the most recently verified). A copy of the wrong size is reported corrupt."""
        stores = self._stores_fn()
        view = FileView.of(doc)
        if view is None:
            return []
        corrupt = {sid for sid, _ in view.corrupt}
        here = [c for c in view.copies if c.store_id in stores and c.store_id not in corrupt]
        here.sort(key=lambda c: (c.copies == 0, -(c.verified or 0)))
        out: list[_Copy] = []
        for sid in (c.store_id for c in here):
            try:
                fd = os.open(stores[sid].file_path(file_id), os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                continue  # missing here, or unreadable: the verify worker will see to it
            try:
                st_size = os.fstat(fd).st_size
            except OSError:
                os.close(fd)
                continue
            if st_size != size:
                os.close(fd)
                self._report_corrupt(sid, file_id)
                continue
            with contextlib.suppress(OSError, AttributeError):
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_SEQUENTIAL)
            out.append(_Copy(sid, fd))
        return out

    def _report_corrupt(self, store_id: str, file_id: str) -> None:
        self.stats["corrupt"] += 1
        log.warning("corrupt copy of %s on store %s (found while serving)", file_id, store_id)
        if self._on_corrupt_fn is not None:
            try:
                self._on_corrupt_fn(store_id, file_id)
            except Exception:
                log.exception("on_corrupt callback failed")

    def _leaf(
        self,
        live: list[_Copy],
        file_id: str,
        index: int,
        expected: bytes,
        size: int,
        buf: bytearray,
    ) -> memoryview:
        """Leaf `index`, read into `buf`, from the first copy that reads and matches (runs
        in a pool thread).

        Copies that do not are closed and dropped from `live`: rot is reported to
        on_corrupt, an I/O error only logged (it is not corruption). Only one such job
        runs at a time per transfer, so `live` is never touched by two threads at once.
        """
        length = min(protocol.LEAF_SIZE, size - index * protocol.LEAF_SIZE)
        view = memoryview(buf)[:length]
        while live:
            c = live[0]
            try:
                good = self._read_leaf(c.fd, index, view, expected)
            except OSError as e:
                self.stats["io_errors"] += 1
                log.warning("cannot read %s on store %s: %s", file_id, c.store_id, e)
            else:
                if good:
                    return view
                self._report_corrupt(c.store_id, file_id)
            live.pop(0)
            os.close(c.fd)
        raise _NoGoodCopy

    def _read_leaf(self, fd: int, index: int, view: memoryview, expected: bytes) -> bool:
        if self.verify_leaves:
            return _read_and_check(fd, index, view, expected)
        if os.preadv(fd, [view], index * protocol.LEAF_SIZE) != len(view):
            raise OSError(errno.EIO, "short read")
        return True

    async def _send(
        self,
        request: web.BaseRequest,
        resp: web.StreamResponse,
        file_id: str,
        leaves: list[bytes],
        size: int,
        start: int,
        end: int,
        copies: list[_Copy],
    ) -> None:
        """Stream [start, end): each leaf read and verified (the next one already being
        read) before any of its bytes are written.

        Two leaf buffers per transfer take turns: leaf i+2 is read into leaf i's buffer
        once every write of leaf i has returned, and by then the TLS transport has
        encrypted those bytes into its own buffer (asyncio's SSL protocol encrypts in
        write() itself), so nothing still points into it. A new buffer for every leaf
        cost more CPU than the TLS encryption of its bytes.
        """
        assert self._pool is not None
        first, last = start // protocol.LEAF_SIZE, (end - 1) // protocol.LEAF_SIZE
        live = list(copies)
        copies.clear()  # the fds are ours now: closed below, after the last read
        bufs: list[bytearray] = []

        def fetch(i: int) -> Future[memoryview]:
            assert self._pool is not None
            if len(bufs) < 2:
                need = min(protocol.LEAF_SIZE, size - i * protocol.LEAF_SIZE)
                bufs.append(self._spare.pop() if self._spare else bytearray(need))
            buf = bufs[(i - first) % 2]
            return self._pool.submit(self._leaf, live, file_id, i, leaves[i], size, buf)

        nxt: Future[memoryview] | None = fetch(first)
        try:
            for i in range(first, last + 1):
                assert nxt is not None
                data = await asyncio.wrap_future(nxt)
                nxt = fetch(i + 1) if i < last else None
                base = i * protocol.LEAF_SIZE
                view = data[max(start, base) - base : min(end, base + len(data)) - base]
                for off in range(0, len(view), WRITE_CHUNK):
                    await resp.write(view[off : off + WRITE_CHUNK])
                self.stats["bytes"] += len(view)
            await resp.write_eof()
        except _NoGoodCopy:
            log.warning("no good copy left of %s: transfer cut off", file_id)
            _abort(request)
        finally:

            def close(_: object = None) -> None:
                for c in live:
                    os.close(c.fd)
                live.clear()

            if nxt is not None and not nxt.done():
                nxt.add_done_callback(close)  # a read may still use the fds (and buffer)
            else:
                close()
                whole = [b for b in bufs if len(b) == protocol.LEAF_SIZE]
                self._spare.extend(whole[: SPARE_BUFFERS - len(self._spare)])


class _NoGoodCopy(Exception):
    pass


def _abort(request: web.BaseRequest) -> None:
    """End the connection before the body is complete: the client sees a short body,
    never a wrong one. A graceful close, so the leaves already sent still arrive."""
    if request.transport is not None:
        request.transport.close()


def _text(status: int, text: str, **headers: str) -> web.Response:
    names = {"allow": "Allow", "content_range": "Content-Range", "retry_after": "Retry-After"}
    return web.Response(
        status=status, text=text + "\n", headers={names[k]: v for k, v in headers.items()}
    )
