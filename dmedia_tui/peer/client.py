"""Pull a file from a peer: every 8 MiB leaf verified before it touches the disk.

The client is synchronous (it runs in the engine's copy worker thread) on http.client
over TLS 1.3 with this machine's certificate; the server's certificate is pinned to the
fingerprint its machine doc publishes, checked right after the handshake and before any
request is sent.

Writing goes through the FileStore's own tmp-file machinery (`filestore._TmpFile`:
sync_file_range as it goes, fsync, read-only, atomic rename into files/), so a pulled
copy lands exactly like a local copy. The partial file is named by file ID in a folder
of its own, `.dmedia/tmp/peer/<file_id>`, which FileStore.purge_tmp leaves alone (it
skips folders) so that a broken transfer can resume in a later process: only whole,
verified leaves are ever written to it, and on resume its leaves are hashed again (a
machine crash may have left garbage past the last fsync) and kept up to the first one
that does not match.

Errors, for the caller to log:
- TransferCorrupt: a leaf did not match (`dmedia/transfer/corrupt`); it was not written.
- TransferFailed: the peer is unreachable, refused us, dropped the connection, timed out
  (`dmedia/transfer/failed`): not corruption; verified leaves are kept for the next try.
- NotOnPeer: the peer has no good copy connected (404): try another peer.
- DestinationError: writing our own store failed (ENOSPC, EIO).
"""

from __future__ import annotations

import contextlib
import fcntl
import http.client
import json
import os
import ssl
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmedia_tui import protocol
from dmedia_tui.errors import DmediaError
from dmedia_tui.filestore import (
    FileStore,
    _give_buffer,
    _take_buffer,
    _TmpFile,
    commit_staged,
)
from dmedia_tui.peer.identity import Identity, fingerprint_der

PARTIAL_DIR = "peer"  # under .dmedia/tmp/
Progress = Callable[[int], None]


class PeerError(DmediaError):
    """Base of every error of a pull; the message is one line."""


class TransferFailed(PeerError):
    """Not corruption: unreachable, refused, dropped, timed out. Retry later."""


class PeerUnreachable(TransferFailed):
    """No TLS connection could be made (refused, timed out, no route): nothing was sent."""


class PeerRefusedUs(TransferFailed):
    """The peer's TLS layer refused our certificate: it does not (yet) know this machine
    (its server re-reads the machine docs every few seconds)."""


# OpenSSL's names for the alerts a server sends when it does not trust our certificate.
_REFUSED = ("UNKNOWN_CA", "CERTIFICATE_UNKNOWN", "CERTIFICATE_REQUIRED", "BAD_CERTIFICATE")


def _failure(message: str, e: BaseException, connecting: bool = False) -> TransferFailed:
    if isinstance(e, ssl.SSLError) and any(r in (e.reason or "") for r in _REFUSED):
        return PeerRefusedUs(f"{message}: it does not trust this machine's certificate (yet)")
    return (PeerUnreachable if connecting else TransferFailed)(f"{message}: {_why(e)}")


class NotOnPeer(PeerError):
    """The peer answered 404: it has no good copy connected."""


class TransferCorrupt(PeerError):
    """A leaf did not match the file doc's leaf hash; it was not written."""

    def __init__(self, message: str, file_id: str, leaf: int) -> None:
        super().__init__(message)
        self.file_id = file_id
        self.leaf = leaf


class DestinationError(PeerError):
    """Our own store could not be written (its I/O error, not the peer's)."""


class PartialBusy(PeerError):
    """Another process is pulling the same file into the same store right now."""


@dataclass(frozen=True)
class PullResult:
    file_id: str
    store_id: str
    mtime: int  # of the new copy
    new: bool  # False: the store already had it
    fetched: int  # bytes received from the peer
    resumed: int  # bytes of verified leaves kept from an earlier transfer
    seconds: float


def parse_address(address: str) -> tuple[str, int]:
    """ "host:port" or "[v6]:port" -> (host, port)."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise ValueError(f"not a host:port address: {address!r}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host, int(port)


class _PartialFile(_TmpFile):
    """A resumable partial write, `.dmedia/tmp/peer/<file_id>`, flock-ed while in use.

    Reuses _TmpFile's write (with early writeback) and commit (fchmod, fsync, rename,
    fsync the folder); only where it lives and that it survives a failure differ.
    """

    def __init__(self, store: FileStore, file_id: str) -> None:
        self.store = store
        self.name = protocol.check_file_id(file_id)
        self.path = store.tmp_dir / PARTIAL_DIR / self.name
        self.written = 0
        # The folder is opened without following links, as _TmpFile opens tmp/.
        self.dir_fd: int | None = store._open_dir("tmp", PARTIAL_DIR, create=True)
        try:
            self.fd: int | None = os.open(
                self.name,
                os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | os.O_CLOEXEC,
                0o600,
                dir_fd=self.dir_fd,
            )
        except BaseException:
            os.close(self.dir_fd)
            self.dir_fd = None
            raise
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.close()
            raise PartialBusy(f"{file_id} is being pulled into {store.id} already") from None
        except OSError:
            pass  # no locking on this filesystem: best effort

    def keep_verified(self, leaves: list[bytes], size: int) -> int:
        """Hash the leaves already here; keep the prefix that matches; return its size."""
        assert self.fd is not None
        have = os.fstat(self.fd).st_size
        keep = 0
        if have:  # a fresh 8 MiB buffer costs ~20 ms of zeroing here: only when needed
            buf = _take_buffer()
            try:
                for i, expected in enumerate(leaves):
                    length = min(protocol.LEAF_SIZE, size - keep)
                    if keep + length > have:
                        break
                    view = memoryview(buf)[:length]
                    if os.preadv(self.fd, [view], keep) != length:
                        break
                    if protocol.hash_leaf(i, view) != expected:
                        break
                    keep += length
            finally:
                _give_buffer(buf)
        if keep != have:
            os.ftruncate(self.fd, keep)
        os.lseek(self.fd, keep, os.SEEK_SET)
        self.written = keep
        return keep

    def close_keep(self) -> None:
        """Close, leaving the verified leaves for the next try (fsync-ed first)."""
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self.fd)
        self.close()


class PeerConnection:
    """One TLS connection to a peer whose certificate is pinned by fingerprint."""

    def __init__(
        self, identity: Identity, address: str, fingerprint: str, timeout: float = 30.0
    ) -> None:
        self.address = address
        self.fingerprint = fingerprint
        host, port = parse_address(address)
        self._conn = http.client.HTTPSConnection(
            host, port, context=identity.client_context(), timeout=timeout
        )
        self._conn.server_hostname = "dmedia-tui-peer"  # type: ignore[attr-defined]
        self._connected = False

    def _connect(self) -> None:
        if self._connected:
            return
        try:
            self._conn.connect()
        except OSError as e:
            self.close()
            raise _failure(f"cannot connect to {self.address}", e, connecting=True) from None
        sock = self._conn.sock
        der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
        if not der or fingerprint_der(der) != self.fingerprint:
            self.close()
            raise TransferFailed(
                f"{self.address} is not the machine it claims to be (certificate fingerprint "
                "differs from its machine doc)"
            )
        self._connected = True

    def request(
        self, method: str, path: str, headers: dict[str, str] | None = None
    ) -> http.client.HTTPResponse:
        self._connect()
        try:
            self._conn.request(method, path, headers=headers or {})
            return self._conn.getresponse()
        except (OSError, http.client.HTTPException) as e:
            self.close()
            raise _failure(f"{self.address}", e) from None

    def info(self) -> dict[str, Any]:
        resp = self.request("GET", "/info")
        body = resp.read()
        if resp.status != 200:
            raise TransferFailed(f"{self.address}: /info answered {resp.status}")
        try:
            return json.loads(body)
        except ValueError:
            raise TransferFailed(f"{self.address}: /info is not JSON") from None

    def close(self) -> None:
        self._conn.close()
        self._connected = False

    def __enter__(self) -> PeerConnection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _why(e: BaseException) -> str:
    if isinstance(e, ssl.SSLError):
        return e.reason or str(e)
    if isinstance(e, OSError) and e.errno:
        return e.strerror or str(e)
    return str(e) or type(e).__name__


def pull(
    identity: Identity,
    address: str,
    fingerprint: str,
    doc: dict[str, Any],
    dst: FileStore,
    progress: Progress | None = None,
    timeout: float = 30.0,
) -> PullResult:
    """Fetch the file of `doc` from the peer at `address` into `dst` and commit it: one
    file, `receive` then `commit_received`; see the module doc.

    Raises ProtocolError when the doc itself is unusable (no valid leaf hashes), and the
    PeerError subclasses above (DestinationError when the commit fails).
    """
    got = receive(identity, address, fingerprint, doc, dst, progress, timeout)
    result = commit_received([got])[0]
    if isinstance(result, OSError):
        raise DestinationError(f"cannot commit {got.file_id} to {dst.id}: {_why(result)}") from None
    return result


@dataclass
class Received:
    """A file whose every leaf was verified and written to its partial file, not yet in
    files/ (`part` is None when the store had the copy already): commit_received."""

    file_id: str
    store: FileStore
    part: _PartialFile | None
    mtime: int  # of the copy already there (part None)
    fetched: int
    resumed: int
    t0: float

    def keep(self) -> None:
        """Not to be committed now: close it, its verified leaves kept for next time."""
        if self.part is not None:
            self.part.close_keep()
            self.part = None


def receive(
    identity: Identity,
    address: str,
    fingerprint: str,
    doc: dict[str, Any],
    dst: FileStore,
    progress: Progress | None = None,
    timeout: float = 30.0,
) -> Received:
    """Fetch the file of `doc` from the peer into its partial file in `dst`, each leaf
    verified before it is written, and stop there: the caller commits it (possibly with
    others: commit_received) or `keep()`s it. The partial stays locked until then.

    `progress(n)` is called after each leaf is written, with its size; it may raise to
    abort (the verified leaves stay for the next try). Raises ProtocolError when the doc
    itself is unusable (no valid leaf hashes), and the PeerError subclasses above.
    """
    t0 = time.monotonic()
    file_id = protocol.check_file_id(doc.get("_id"))
    size = doc.get("bytes")
    leaves = protocol.check_root_hash(
        file_id, size, protocol.decode_leaf_hashes(doc.get("leaf_hashes", ""))
    )
    assert isinstance(size, int)
    with contextlib.suppress(FileNotFoundError):
        mtime = dst.stat(file_id).mtime
        _drop_partial(dst, file_id)
        return Received(file_id, dst, None, mtime, 0, 0, t0)
    try:
        part = _PartialFile(dst, file_id)
    except OSError as e:
        raise DestinationError(f"cannot write to store {dst.id}: {_why(e)}") from None
    done = False
    try:
        try:
            resumed = part.keep_verified(leaves, size)
        except OSError as e:
            raise DestinationError(f"cannot read back {part.path}: {_why(e)}") from None
        fetched = 0
        if resumed < size:
            with PeerConnection(identity, address, fingerprint, timeout) as conn:
                fetched = _receive(conn, part, file_id, leaves, size, resumed, progress)
        done = True
        return Received(file_id, dst, part, 0, fetched, resumed, t0)
    finally:
        if not done:
            part.close_keep()


def commit_received(items: list[Received]) -> list[PullResult | OSError]:
    """Commit received files as one batch (filestore.commit_staged: their write-back
    flushed together, fsync each, rename into files/, fsync the folders); per item its
    PullResult, or the OSError its commit met (that partial is removed: what failed to
    sync is not trusted). Nothing is recorded here."""
    staged: list[tuple[_TmpFile, str]] = [(r.part, r.file_id) for r in items if r.part]
    done = iter(commit_staged(staged, "pull") if staged else [])
    out: list[PullResult | OSError] = []
    for r in items:
        if r.part is None:
            mtime, new = r.mtime, False
        else:
            r.part = None  # committed or removed: no longer ours
            c = next(done)
            if isinstance(c, OSError):
                out.append(c)
                continue
            mtime, new = c
        seconds = time.monotonic() - r.t0
        out.append(PullResult(r.file_id, r.store.id, mtime, new, r.fetched, r.resumed, seconds))
    return out


def _drop_partial(dst: FileStore, file_id: str) -> None:
    with contextlib.suppress(OSError):
        (dst.tmp_dir / PARTIAL_DIR / file_id).unlink()


def _receive(
    conn: PeerConnection,
    part: _PartialFile,
    file_id: str,
    leaves: list[bytes],
    size: int,
    offset: int,
    progress: Progress | None,
) -> int:
    """GET [offset, size) and append its leaves to `part`, each verified first.

    Receiving leaf i+1 overlaps hashing and writing leaf i (a second thread; blake3,
    SSL reads and writes all release the GIL). Returns the bytes received.
    """
    headers = {"Range": f"bytes={offset}-"} if offset else {}
    resp = conn.request("GET", f"/files/{file_id}", headers)
    if resp.status == 404:
        resp.read()
        raise NotOnPeer(f"{conn.address} has no good copy of {file_id}")
    if resp.status not in (200, 206):
        raise TransferFailed(f"{conn.address} answered {resp.status} for {file_id}")
    if resp.status == 200 and offset:
        # The peer ignored the range: start over rather than trust an offset.
        os.ftruncate(part.fd, 0)  # type: ignore[arg-type]
        os.lseek(part.fd, 0, os.SEEK_SET)  # type: ignore[arg-type]
        part.written = offset = 0
    elif resp.status == 206 and not (resp.getheader("Content-Range") or "").startswith(
        f"bytes {offset}-{size - 1}/{size}"
    ):
        raise TransferFailed(f"{conn.address} sent the wrong range of {file_id}")
    if resp.length is not None and resp.length != size - offset:
        raise TransferFailed(f"{conn.address} sent {resp.length} bytes, expected {size - offset}")

    bufs = (_take_buffer(), _take_buffer())  # reused: page faults and zeroing cost CPU
    pending: Future[None] | None = None
    received = 0

    def check_and_write(index: int, view: memoryview) -> None:
        if protocol.hash_leaf(index, view) != leaves[index]:
            raise TransferCorrupt(
                f"leaf {index} of {file_id} from {conn.address} does not match its hash: "
                "not written",
                file_id,
                index,
            )
        try:
            part.write(view)
        except OSError as e:
            raise DestinationError(f"cannot write to store {part.store.id}: {_why(e)}") from None

    with ThreadPoolExecutor(1, thread_name_prefix="dmedia-pull") as ex:
        try:
            for index in range(offset // protocol.LEAF_SIZE, len(leaves)):
                length = min(protocol.LEAF_SIZE, size - index * protocol.LEAF_SIZE)
                view = memoryview(bufs[index & 1])[:length]
                try:
                    got = protocol.read_full(resp, view)
                except (OSError, http.client.HTTPException) as e:
                    raise TransferFailed(
                        f"{conn.address} dropped the transfer of {file_id}: {_why(e)}"
                    ) from None
                received += got
                if pending is not None:
                    pending.result()
                    pending = None
                    if progress:
                        progress(protocol.LEAF_SIZE)
                if got < length:
                    raise TransferFailed(
                        f"{conn.address} dropped the transfer of {file_id} "
                        f"({offset + received} of {size} bytes)"
                    )
                pending = ex.submit(check_and_write, index, view)
            if pending is not None:
                pending.result()
                pending = None
                if progress:
                    progress(size - (len(leaves) - 1) * protocol.LEAF_SIZE)
        finally:
            if pending is not None:
                with contextlib.suppress(BaseException):
                    pending.result()  # a leaf already verified is still worth keeping
            for buf in bufs:  # no job uses them now: the only one has returned
                _give_buffer(buf)
    return received


def partial_size(store: FileStore, file_id: str) -> int:
    """Bytes of a partial download of `file_id` in `store` (0 when none)."""
    try:
        return os.stat(store.tmp_dir / PARTIAL_DIR / protocol.check_file_id(file_id)).st_size
    except FileNotFoundError:
        return 0


def purge_stale_partials(store: FileStore, older_than: float, now: float) -> int:
    """Remove partial downloads untouched since `now - older_than` (not being written)."""
    folder = store.tmp_dir / PARTIAL_DIR
    count = 0
    try:
        entries = list(os.scandir(folder))
    except FileNotFoundError:
        return 0
    for entry in entries:
        try:
            if not entry.is_file(follow_symlinks=False):
                continue
            if entry.stat(follow_symlinks=False).st_mtime > now - older_than:
                continue
            fd = os.open(entry.path, os.O_RDONLY | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            Path(entry.path).unlink()
            count += 1
        except OSError:
            continue
        finally:
            os.close(fd)
    return count
