"""The hashing protocol and the IDs: the one thing that must never change.

A file's ID is the sortable base32 of a 30-byte blake3 root hash over its 8 MiB leaves
(DESIGN.md §2). The two derive-key contexts, the leaf size and the digest size *are* the
protocol: changing any of them would orphan every ID already recorded, so a future
protocol gets a different ID length instead.
"""

from __future__ import annotations

import base64
import errno
import mmap
import os
import struct
import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor, wait
from typing import Protocol, TypeGuard

from blake3 import blake3

from dmedia_tui.errors import DmediaError

LEAF_SIZE = 8 * 1024 * 1024
DIGEST_BYTES = 30
DIGEST_B32LEN = 48  # 30 bytes * 8 / 5
STORE_ID_BYTES = 15
RANDOM_B32LEN = 24  # store IDs and log IDs
LEAF_CONTEXT = "dmedia-tui 2026 leaf"
ROOT_CONTEXT = "dmedia-tui 2026 root"

# Sortable base32: the alphabet is in ASCII order, so the byte order of the raw value is
# the string order of its encoding (the property Dbase32 gave the original Dmedia).
ALPHABET = "3456789ABCDEFGHIJKLMNOPQRSTUVWXY"
_STD = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567"
_TO_SORTABLE = str.maketrans(_STD, ALPHABET)
_FROM_SORTABLE = str.maketrans(ALPHABET, _STD)
_ALPHABET_SET = frozenset(ALPHABET)


class ProtocolError(DmediaError, ValueError):
    """Base class for every violation of the hashing protocol or the ID format."""


class InvalidID(ProtocolError):
    """An ID read from somewhere has the wrong length or alphabet."""


class LeafHashesLengthError(ProtocolError):
    """`leaf_hashes` is not a whole number of 30-byte digests."""


class LeafCountError(ProtocolError):
    """`leaf_hashes` holds a different number of leaves than the file size implies."""


class RootHashError(ProtocolError):
    """The root hash of (size, leaf_hashes) is not the file ID."""


# --- encoding ------------------------------------------------------------------------


def b32encode(data: bytes) -> str:
    """Encode bytes (a multiple of 5 long) as sortable base32."""
    if len(data) % 5:
        raise ProtocolError(f"can only encode a multiple of 5 bytes, got {len(data)}")
    return base64.b32encode(data).decode("ascii").translate(_TO_SORTABLE)


def b32decode(text: str) -> bytes:
    """Decode sortable base32; raises InvalidID on anything that is not a valid encoding."""
    if not isinstance(text, str) or len(text) % 8 or not _ALPHABET_SET.issuperset(text):
        raise InvalidID(f"not a sortable base32 string: {text!r:.80}")
    return base64.b32decode(text.translate(_FROM_SORTABLE))


def is_id(value: object, length: int) -> TypeGuard[str]:
    """True when value is a str of exactly `length` characters from the alphabet."""
    return isinstance(value, str) and len(value) == length and _ALPHABET_SET.issuperset(value)


def check_id(value: object, length: int, what: str = "ID") -> str:
    """Return value unchanged when it is a valid ID of `length`; raise InvalidID otherwise.

    Every ID read from a document, a command line or a directory listing goes through
    this (or one of the wrappers below) before it becomes part of a filesystem path.
    """
    if not is_id(value, length):
        raise InvalidID(f"invalid {what}: {value!r:.80}")
    return value


def check_file_id(value: object) -> str:
    return check_id(value, DIGEST_B32LEN, "file ID")


def check_store_id(value: object) -> str:
    return check_id(value, RANDOM_B32LEN, "store ID")


def is_file_id(value: object) -> bool:
    return is_id(value, DIGEST_B32LEN)


_KNOWN_STORE_IDS: set[str] = set()  # a library has a handful of stores: memo the checks


def is_store_id(value: object) -> TypeGuard[str]:
    # Called for every `stored` key of every file doc written or indexed (millions in a
    # store-wide pass): a set lookup instead of a character scan for the few real IDs.
    if type(value) is str and value in _KNOWN_STORE_IDS:
        return True
    if not is_id(value, RANDOM_B32LEN):
        return False
    if len(_KNOWN_STORE_IDS) >= 4096:
        _KNOWN_STORE_IDS.clear()
    _KNOWN_STORE_IDS.add(value)
    return True


def random_id(nbytes: int = STORE_ID_BYTES) -> str:
    """A random ID: 15 bytes give the 24 characters of a store or machine ID."""
    return b32encode(os.urandom(nbytes))


_log_id_lock = threading.Lock()
_last_log_id = 0


def log_id(timestamp: float) -> str:
    """5 bytes of big-endian unix seconds + 10 random bytes: log IDs sort by time.

    Within one process IDs also sort in the order they were made, even within one second
    (or under a fixed DMEDIA_NOW): when the random draw would sort before the previous ID
    of the same second, the previous ID + 1 is used instead. Readers only rely on the
    first 5 bytes being the time.
    """
    global _last_log_id
    secs = max(0, int(timestamp))
    value = int.from_bytes(secs.to_bytes(5, "big") + os.urandom(10), "big")
    with _log_id_lock:
        if value >> 80 == _last_log_id >> 80 and value <= _last_log_id:
            value = _last_log_id + 1
        _last_log_id = value
    return b32encode(value.to_bytes(15, "big"))


def log_id_time(value: str) -> int:
    """The unix seconds encoded in a log ID."""
    return int.from_bytes(b32decode(check_id(value, RANDOM_B32LEN, "log ID"))[:5], "big")


# --- hashing -------------------------------------------------------------------------


# Below this, blake3's thread pool costs more than it saves: measured here, a 34 KB leaf
# took 14 us on one thread and 36 us with max_threads=AUTO; from 1 MiB on they are even.
_THREADED_FROM = 1 << 20


def leaf_hasher(index: int, size: int = LEAF_SIZE) -> blake3:
    """A hasher already fed the leaf's index; update it with the leaf's `size` bytes."""
    threads = blake3.AUTO if size >= _THREADED_FROM else 1
    h = blake3(derive_key_context=LEAF_CONTEXT, max_threads=threads)
    h.update(struct.pack("<Q", index))
    return h


def hash_leaf(index: int, data: bytes | bytearray | memoryview) -> bytes:
    """The 30-byte hash of leaf `index` holding `data`."""
    if not 0 < len(data) <= LEAF_SIZE:
        raise ProtocolError(f"leaf {index} has {len(data)} bytes")
    h = leaf_hasher(index, len(data))
    h.update(data)
    return h.digest(length=DIGEST_BYTES)


# The root hasher, keyed once: each file ID checked copies it (the context's key
# derivation is half the cost of hashing a one-leaf file's root).
_ROOT_HASHER = blake3(derive_key_context=ROOT_CONTEXT)
_PACK_SIZE = struct.Struct("<Q").pack
# Sortable base32 digits -> the digits int(x, 32) reads; every other byte -> "z", which
# int() refuses (so does it a sign, a space or an underscore: nothing else is read as a digit).
_ID_DIGITS = bytes(
    ord("0123456789abcdefghijklmnopqrstuv"[ALPHABET.index(chr(b))])
    if chr(b) in ALPHABET
    else ord("z")
    for b in range(256)
)


def hash_root(file_size: int, leaf_hashes: bytes | Sequence[bytes]) -> str:
    """The file ID (48 characters) for a file of `file_size` with these leaf hashes."""
    if not isinstance(leaf_hashes, bytes | bytearray):
        leaf_hashes = b"".join(leaf_hashes)
    if file_size < 1:
        raise ProtocolError(f"file size must be >= 1, got {file_size}")
    h = _ROOT_HASHER.copy()
    h.update(_PACK_SIZE(file_size))
    h.update(leaf_hashes)
    return b32encode(h.digest(length=DIGEST_BYTES))


def root_hash_matches(file_id: object, file_size: int, leaf_hashes: bytes) -> bool:
    """True when `file_id` is the root hash of (`file_size`, `leaf_hashes`), for the
    schema check of a million file docs: the ID is read as a 240-bit number and compared
    with the digest as one (C all through), instead of encoding the digest in base32
    (pure Python before 3.13). `file_size` must be an int >= 1; the leaf count is the
    caller's to check (see check_root_hash)."""
    if type(file_id) is not str or len(file_id) != DIGEST_B32LEN:
        return False
    try:
        want = int(file_id.encode("utf-8").translate(_ID_DIGITS), 32)
    except ValueError:  # a character outside the alphabet, or a lone surrogate
        return False
    h = _ROOT_HASHER.copy()
    h.update(_PACK_SIZE(file_size))
    h.update(leaf_hashes)
    return int.from_bytes(h.digest(length=DIGEST_BYTES), "big") == want


def leaf_count(file_size: int) -> int:
    """How many leaves a file of `file_size` bytes has (the last may be short)."""
    return -(-file_size // LEAF_SIZE)


def split_leaf_hashes(leaf_hashes: bytes) -> list[bytes]:
    if len(leaf_hashes) % DIGEST_BYTES:
        raise LeafHashesLengthError(
            f"len(leaf_hashes) is {len(leaf_hashes)}, not a multiple of {DIGEST_BYTES}"
        )
    return [leaf_hashes[i : i + DIGEST_BYTES] for i in range(0, len(leaf_hashes), DIGEST_BYTES)]


def check_root_hash(file_id: object, file_size: object, leaf_hashes: bytes) -> list[bytes]:
    """Check the cryptographic tie between ID, size and leaf hashes; return the leaves.

    ID and size are checked too, whatever they are (they come from docs and peers).

    Raises a distinct error for each way it can fail: InvalidID, LeafHashesLengthError,
    LeafCountError, RootHashError.
    """
    check_file_id(file_id)
    leaves = split_leaf_hashes(leaf_hashes)
    if not isinstance(file_size, int) or file_size < 1:
        raise LeafCountError(f"file size {file_size!r} is not a positive integer")
    if len(leaves) != leaf_count(file_size):
        raise LeafCountError(
            f"{len(leaves)} leaf hashes for {file_size} bytes, expected {leaf_count(file_size)}"
        )
    if not root_hash_matches(file_id, file_size, leaf_hashes):
        raise RootHashError(f"root hash of {file_size} bytes and leaf hashes is not {file_id}")
    return leaves


def encode_leaf_hashes(leaf_hashes: bytes | Iterable[bytes]) -> str:
    """Leaf hashes as stored in a file doc: base64 of the concatenated digests."""
    if not isinstance(leaf_hashes, bytes | bytearray):
        leaf_hashes = b"".join(leaf_hashes)
    return base64.b64encode(leaf_hashes).decode("ascii")


def decode_leaf_hashes(text: str) -> bytes:
    """Inverse of encode_leaf_hashes; raises ProtocolError on bad base64."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (ValueError, AttributeError, UnicodeEncodeError) as e:
        raise ProtocolError(f"leaf_hashes is not valid base64: {e}") from None


class ContentHash:
    """Result of hashing a file: its ID, size and concatenated leaf hashes."""

    __slots__ = ("id", "file_size", "leaf_hashes")

    def __init__(self, id: str, file_size: int, leaf_hashes: bytes) -> None:
        self.id = id
        self.file_size = file_size
        self.leaf_hashes = leaf_hashes

    def __repr__(self) -> str:
        return f"ContentHash({self.id!r}, {self.file_size}, <{len(self.leaf_hashes) // 30} leaves>)"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ContentHash) and (
            (self.id, self.file_size, self.leaf_hashes)
            == (other.id, other.file_size, other.leaf_hashes)
        )


class Hasher:
    """Incremental content hasher: feed it whole leaves in order (hash_leaf) or bytes in
    pieces of any size (update), then call content_hash()."""

    def __init__(self) -> None:
        self.file_size = 0
        self.leaves: list[bytes] = []
        self._closed = False
        self._leaf: blake3 | None = None  # the leaf update() is in, and its bytes so far
        self._in_leaf = 0

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Feed the next bytes of the file, a piece of any size: a piece that fits in the
        CPU's cache is hashed while still there, instead of a whole 8 MiB leaf read from
        memory again (see filestore._pump). Each leaf is hashed on one thread."""
        view = memoryview(data).cast("B")
        while view:
            if self._leaf is None:
                if self._closed:
                    raise ProtocolError("a short leaf was already hashed: it must be the last")
                self._leaf = leaf_hasher(len(self.leaves), 1)
                self._in_leaf = 0
            take = min(len(view), LEAF_SIZE - self._in_leaf)
            self._leaf.update(view[:take])
            self._in_leaf += take
            self.file_size += take
            view = view[take:]
            if self._in_leaf == LEAF_SIZE:
                self._end_leaf()

    def _end_leaf(self) -> None:
        assert self._leaf is not None
        self.leaves.append(self._leaf.digest(length=DIGEST_BYTES))
        if self._in_leaf < LEAF_SIZE:
            self._closed = True
        self._leaf = None

    def hash_leaf(self, data: bytes | bytearray | memoryview) -> bytes:
        if self._closed:
            raise ProtocolError("a short leaf was already hashed: it must be the last")
        if self._leaf is not None:
            raise ProtocolError("a whole leaf fed in the middle of one")
        digest = hash_leaf(len(self.leaves), data)
        self.leaves.append(digest)
        self.file_size += len(data)
        if len(data) < LEAF_SIZE:
            self._closed = True
        return digest

    def content_hash(self, expect: str | None = None) -> ContentHash:
        """The ContentHash of the leaves hashed (see content_hash_of for `expect`); the
        bytes update() fed past the last whole leaf are the file's last, short leaf."""
        if self._leaf is not None:
            self._end_leaf()
        return content_hash_of(self.file_size, b"".join(self.leaves), expect)


def content_hash_of(file_size: int, leaf_hashes: bytes, expect: str | None = None) -> ContentHash:
    """ContentHash(root hash, size, leaves). `expect`: the file ID a caller checks the
    content against (a verify, a copy); when it is the root hash it is taken as the ID,
    so the digest is not encoded in base32 (pure Python before 3.13: ~10% of verifying
    or copying a small file). Any other `expect` changes nothing: the ID is computed."""
    if expect is not None and root_hash_matches(expect, file_size, leaf_hashes):
        return ContentHash(expect, file_size, leaf_hashes)
    return ContentHash(hash_root(file_size, leaf_hashes), file_size, leaf_hashes)


def hash_bytes(data: bytes) -> ContentHash:
    """Hash an in-memory byte string (tests, the demo)."""
    h = Hasher()
    for i in range(0, len(data), LEAF_SIZE):
        h.hash_leaf(memoryview(data)[i : i + LEAF_SIZE])
    return h.content_hash()


class ReadsInto(Protocol):
    """A binary stream that fills a buffer: files, sockets' makefile(), HTTP responses."""

    def readinto(self, buffer: memoryview, /) -> int | None: ...


class OpenFile(ReadsInto, Protocol):
    """A binary file opened on a descriptor (what hash_file maps or reads)."""

    def fileno(self) -> int: ...


def read_full(f: ReadsInto, view: memoryview) -> int:
    """readinto until `view` is full or EOF: some filesystems (FUSE, network) return
    short reads before the end, and a leaf must be whole to hash it."""
    total = 0
    while total < len(view):
        n = f.readinto(view[total:])
        if not n:
            break
        total += n
    return total


Progress = Callable[[int], None]

# MADV_POPULATE_READ (Linux >= 5.14) faults a range of a mapping in and *returns an error*
# (EFAULT/EIO) where touching the pages would raise SIGBUS (I/O error, file truncated
# under us). That is what makes mmap safe enough for verification on failing drives: each
# leaf is populated just before it is hashed, so an unreadable sector becomes an OSError
# the caller can report as "unreadable" instead of killing the process.
# 0 (MADV_NORMAL, never this advice) where there is no such flag: mmap is then not used.
_POPULATE_READ: int = getattr(
    mmap, "MADV_POPULATE_READ", 22 if sys.platform.startswith("linux") else 0
)
_mmap_ok = _POPULATE_READ != 0 and hasattr(mmap.mmap, "madvise")

_POOL_WORKERS = os.cpu_count() or 2
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _hash_pool() -> ThreadPoolExecutor:
    """One pool of cpu_count threads shared by every hashing caller (blake3 drops the GIL)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(_POOL_WORKERS, thread_name_prefix="dmedia-hash")
        return _pool


def _map_file(fd: int, size: int) -> mmap.mmap | None:
    """A read-only mapping of the whole file, or None when it must be read instead."""
    global _mmap_ok
    if not _mmap_ok or size == 0:
        return None
    try:
        mm = mmap.mmap(fd, size, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None  # not mappable (pipe, some FUSE mounts, shrunk since fstat): read it
    try:
        mm.madvise(_POPULATE_READ, 0, min(mmap.PAGESIZE, size))  # probe kernel support
    except OSError as e:
        mm.close()
        if e.errno == errno.EINVAL:  # kernel without MADV_POPULATE_READ: never mmap again
            _mmap_ok = False
            return None
        raise
    return mm


def _hash_mapped_leaf(
    mm: mmap.mmap, view: memoryview, index: int, size: int, threads: int
) -> bytes:
    start = index * LEAF_SIZE
    length = min(LEAF_SIZE, size - start)
    mm.madvise(_POPULATE_READ, start, length)  # OSError here instead of SIGBUS below
    h = blake3(derive_key_context=LEAF_CONTEXT, max_threads=threads)
    h.update(struct.pack("<Q", index))
    with view[start : start + length] as leaf:
        h.update(leaf)
    return h.digest(length=DIGEST_BYTES)


def _hash_mapped(
    mm: mmap.mmap, size: int, progress: Progress | None, expect: str | None = None
) -> ContentHash:
    """Zero-copy: leaves hashed in parallel, one single-threaded hasher per leaf.

    Measured on the 2-vCPU reference machine this matches b3sum and blake3's own
    update_mmap, where one multi-threaded hasher per 8 MiB leaf lost ~15 %.
    """
    count = leaf_count(size)
    leaves: list[bytes] = []
    view = memoryview(mm)
    try:
        if count == 1:
            threads = blake3.AUTO if size >= _THREADED_FROM else 1
            leaves.append(_hash_mapped_leaf(mm, view, 0, size, threads))
            if progress:
                progress(size)
        else:
            pool = _hash_pool()
            window = 2 * _POOL_WORKERS
            pending: deque[Future[bytes]] = deque()
            nxt = 0
            try:
                while nxt < count or pending:
                    while nxt < count and len(pending) < window:
                        pending.append(pool.submit(_hash_mapped_leaf, mm, view, nxt, size, 1))
                        nxt += 1
                    leaves.append(pending.popleft().result())
                    if progress:
                        progress(min(LEAF_SIZE, size - (len(leaves) - 1) * LEAF_SIZE))
            finally:
                for fut in pending:
                    fut.cancel()
                wait(pending)  # no worker may still hold a slice when the map closes
    finally:
        view.release()
    return content_hash_of(size, b"".join(leaves), expect)


def _hash_read(f: ReadsInto, progress: Progress | None, expect: str | None = None) -> ContentHash:
    h = Hasher()
    buf = bytearray(LEAF_SIZE)
    view = memoryview(buf)
    while n := read_full(f, view):
        h.hash_leaf(view[:n])
        if progress:
            progress(n)
        if n < LEAF_SIZE:
            break
    return h.content_hash(expect)


def hash_file(
    f: OpenFile,
    progress: Progress | None = None,
    *,
    use_mmap: bool = True,
    expect: str | None = None,
) -> ContentHash:
    """Hash an open file (from offset 0) leaf by leaf at raw blake3 speed.

    Regular files are memory-mapped and each leaf is prefaulted with MADV_POPULATE_READ,
    so read errors surface as OSError, never SIGBUS; anything that cannot be mapped is
    read into one reusable buffer. `progress(n)` is called after each leaf with the
    number of bytes just hashed; it may raise to abort. Raises OSError on read errors and
    ProtocolError for an empty file (it has no ID). `expect`: see content_hash_of.
    """
    size = os.fstat(f.fileno()).st_size
    mm = _map_file(f.fileno(), size) if use_mmap else None
    if mm is None:
        return _hash_read(f, progress, expect)
    try:
        return _hash_mapped(mm, size, progress, expect)
    finally:
        mm.close()


def hash_path(
    path: str | os.PathLike[str], progress: Progress | None = None, *, use_mmap: bool = True
) -> ContentHash:
    """Hash a file on disk (see hash_file)."""
    with open(path, "rb", buffering=0) as f:
        return hash_file(f, progress, use_mmap=use_mmap)
