"""A FileStore: a folder (usually a drive's root) holding canonical, read-only file copies.

Layout under the store folder (DESIGN.md §2):

    .dmedia/store.json               the store doc as created
    .dmedia/files/<id[:2]>/<id[2:]>  canonical copies, mode 0444
    .dmedia/tmp/<pid>.<random>       partial writes (owner's PID; flock-ed while written)
    .dmedia/corrupt/<id>[.n]         quarantine: corrupt copies are moved here, never deleted
    .dmedia/corrupt/<id>.not-a-file  something that was not a regular file at a copy's path
    .dmedia/folders-seen.json        files/XX folders as last accounted for (FoldersSeen)

Crash safety: every copy is written to tmp/, fsync-ed, made read-only, then renamed into
files/ and the directory fsync-ed, so a crash at any point leaves either the whole file or
nothing under files/. Partial writes left by a crash are removed by `purge_tmp`, which
only the writers call (the engine when a store connects, an import before it starts):
opening a store writes nothing, so read-only commands never change a store. A tmp file
whose owner process is alive is left alone (its name carries the PID, so the window
between creating it and locking it is covered too); a dead owner's file is removed.

Links are never followed inside a store. Every path under the store folder is walked
from the store folder's own directory fd with O_NOFOLLOW (openat-style, `dir_fd=`), so a
symlinked `.dmedia`, `files`, `files/XX`, `tmp`, `corrupt` or `store.json` cannot make us
read, count, write or delete anything outside the store: opening such a store raises
`StoreUnsafe` naming the link, and a link that appears later fails the operation. Only a
regular file is a copy: a directory, FIFO, device or symlink at a copy's path is reported
MISSING (with the reason) and set aside into corrupt/, never opened for reading.

Every file ID goes through protocol.check_file_id before it becomes part of a path.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import functools
import io
import itertools
import json
import logging
import math
import os
import queue
import resource
import stat as stat_mod
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar

from dmedia_tui.errors import DmediaError
from dmedia_tui.faults import fault_point
from dmedia_tui.protocol import (
    LEAF_SIZE,
    ContentHash,
    Hasher,
    ProtocolError,
    check_file_id,
    hash_file,
    is_file_id,
    is_store_id,
    random_id,
    read_full,
)
from dmedia_tui.views import TYPE_STORE

Progress = Callable[[int], None]
_T = TypeVar("_T")
log = logging.getLogger("dmedia_tui.filestore")

DOTDIR = ".dmedia"
STORE_JSON = "store.json"
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIR = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _O_NOFOLLOW | _O_CLOEXEC
_O_READ = os.O_RDONLY | os.O_NONBLOCK | _O_NOFOLLOW | _O_CLOEXEC
SUBDIRS = ("files", "tmp", "corrupt")
NOT_A_FILE = "not-a-file"  # suffix of a non-regular thing set aside from a copy's path
FOLDERS_SEEN = "folders-seen.json"
# A folder changed this long before its stamp is saved may change again without its
# ctime moving (the clock tick of a file time: a few ms on ext4, 2 s on FAT): its stamp is
# not kept. "Before" by the filesystem's own clock (the saved record's mtime), never this
# machine's: a clock set ahead would make every folder look settled.
RACY_NS = 2_000_000_000
TMP_STALE_AFTER = 3600  # a live PID's tmp file older than this (real seconds) is stale
# An import batch: files fsync-ed, renamed and recorded together, in one transaction:
# 512 files a batch made importing 10k small files 16% faster than 128 (each file doc
# dirties a few random pages of the tables and indexes; a bigger batch writes each once).
# Each staged file holds an fd until its batch is committed, and the next batch is staged
# meanwhile: a batch is also kept under half of what the fd limit leaves.
IMPORT_BATCH_FILES = 512
IMPORT_BATCH_BYTES = 64 << 20
_FDS_KEPT = 128  # for everything else: the database, held store folders, sources


def import_batch_files() -> int:
    """How many files an import batch may hold open (IMPORT_BATCH_FILES, or fewer under
    a low fd limit: never an import failing with EMFILE)."""
    try:
        soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    except (OSError, ValueError):
        return IMPORT_BATCH_FILES
    if soft == resource.RLIM_INFINITY:
        return IMPORT_BATCH_FILES
    return max(8, min(IMPORT_BATCH_FILES, (soft - _FDS_KEPT) // 2))


class FileStoreError(DmediaError):
    """A FileStore operation failed; the message is one line for the user."""


class NotAFileStore(FileStoreError):
    """No valid .dmedia/store.json at the path."""


class NoStoreJson(NotAFileStore):
    """Certainly no FileStore at the path: the folder, `.dmedia` or its store.json is absent.

    The one "not a FileStore" that proves absence (the wiped-drive purge may act on it);
    an invalid store.json is a NotAFileStore but proves nothing.
    """


class StoreUnreadable(FileStoreError):
    """store.json exists (or may) but cannot be read: an I/O error, not an absent store.

    Callers must not take this for "no FileStore here": a yanked or failing drive gives
    EIO, and treating that as absence could purge a store that is merely unreadable.
    """


class EmptyFile(FileStoreError):
    """An empty file was named for import: it has no ID, so it is skipped (and counted)."""


class WrongStore(FileStoreError):
    """The folder holds a FileStore, but not the one expected."""


class StoreUnsafe(FileStoreError, OSError):
    """A path inside the store is a symlink (or not a directory where one must be).

    Never followed: the store is not read, counted or written until the user fixes it.
    It is an OSError too, so an operation that meets a link appearing mid-run fails like
    any I/O error (UNREADABLE: nothing recorded) instead of crashing a worker.
    """


@dataclass(frozen=True)
class Stat:
    id: str
    size: int
    mtime: int


@dataclass(frozen=True)
class FoldersSeen:
    """The files/XX folders as they were when the library last accounted for every copy
    in them: a folder whose stamp (inode and ctime: any entry added, removed or renamed
    moves the ctime, and no tool can set it back) is unchanged holds no copy the library
    does not know, so a store's recovery lists only the folders that changed."""

    time: int  # library clock: when every folder was last listed (the full listing)
    recorded: int  # copies the library recorded on the store when this was saved
    stamps: dict[str, str]  # "XX" -> "inode:ctime_ns"; "" (saved racy) matches no stamp

    def changed(self, now: dict[str, str]) -> list[str]:
        """The folders of `now` whose stamp is not the one seen (or was racy), sorted."""
        return sorted(p for p, st in now.items() if self.stamps.get(p) != st)


@dataclass(frozen=True)
class ImportResult:
    content_hash: ContentHash
    mtime: int
    new: bool  # False: the store already had this file


class VerifyStatus(StrEnum):
    OK = "ok"
    CORRUPT = "corrupt"
    MISSING = "missing"
    UNREADABLE = "unreadable"  # an I/O error: retry later, never treat as corrupt


@dataclass(frozen=True)
class VerifyResult:
    status: VerifyStatus
    file_id: str
    mtime: int | None = None
    content_hash: ContentHash | None = None
    quarantine: Path | None = None
    error: str | None = None


@dataclass(frozen=True)
class CopyResult:
    status: VerifyStatus  # of the source read
    written: dict[str, int]  # dst store_id -> mtime of its copy (new, or already there)
    failed: dict[str, str]  # dst store_id -> one-line error
    source: VerifyResult  # the source as read: OK, CORRUPT (quarantined), MISSING, UNREADABLE
    staged: dict[str, _TmpFile] = field(default_factory=dict)  # copy_to(commit=False)


def _errstr(e: BaseException) -> str:
    """One line for an OSError: 'No space left on device (ENOSPC)'."""
    if isinstance(e, OSError) and e.errno:
        name = errno.errorcode.get(e.errno, str(e.errno))
        return f"{e.strerror or os.strerror(e.errno)} ({name})"
    return str(e) or type(e).__name__


error_text = _errstr  # for the layers above, which report a FileStore's OSErrors alike


def _valid_copies(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | _O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        n = os.write(fd, data)
        data = data[n:]


def _libc_function(name: str, *argtypes: str) -> Callable[..., int] | None:
    """libc's `name` (C types named as in ctypes; an int result), or None off Linux or
    when libc lacks it. Looked up on first use: ctypes is ~2 ms of every start, and only
    a command that writes files needs it."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes

    try:
        fn = getattr(ctypes.CDLL(None, use_errno=True), name)
    except (OSError, AttributeError):
        return None
    fn.argtypes = tuple(getattr(ctypes, t) for t in argtypes)
    fn.restype = ctypes.c_int
    return fn


@functools.cache
def _sync_file_range() -> Callable[[int, int, int, int], int] | None:
    return _libc_function("sync_file_range", "c_int", "c_int64", "c_int64", "c_uint")


@functools.cache
def _syncfs() -> Callable[[int], int] | None:
    return _libc_function("syncfs", "c_int")


def _flush_filesystems(fds: Iterable[int]) -> None:
    """syncfs once per filesystem before a batch's per-file (or per-folder) fsyncs.

    Measured on ext4: 64 fsyncs of freshly written small files cost ~0.7 ms each (a
    journal commit or a cache flush each); one syncfs writes the whole batch in one
    commit, after which each fsync finds nothing to do (~0.07 ms). The fsyncs stay the
    contract (they report each file's errors, and FUSE may ignore syncfs): this is only
    a hint, and its errors are left to them.
    """
    syncfs = _syncfs()
    if syncfs is None:
        return
    seen: set[int] = set()
    for fd in fds:
        try:
            dev = os.fstat(fd).st_dev
        except OSError:
            continue
        if dev not in seen:
            seen.add(dev)
            syncfs(fd)


_SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Ask the kernel to start writing this leaf to disk now (async, Linux only).

    The fsync before the rename then has little left to wait for, so disk writes overlap
    reading and hashing the next leaves instead of all happening at the end of each file.
    """
    sync_file_range = _sync_file_range()
    if sync_file_range is not None:
        sync_file_range(fd, offset, length, _SYNC_FILE_RANGE_WRITE)  # advisory: ignore errors


def _write_store_json(dot: Path, doc: dict[str, Any]) -> None:
    """Replace .dmedia/store.json: written in tmp/ under a name of its own, fsync-ed, then
    renamed over it (no link followed). With one temp name for every writer, a verify
    marking the drive failing and the user's ack clearing it at once could rename the
    other's half-written file over store.json, and an invalid store.json takes the store
    offline. A crash leaves the temp file to purge_tmp, as any partial write (its name
    starts with the PID)."""
    name = f"{os.getpid()}.{_TMP_TOKEN}{next(_TMP_COUNTER)}.json"
    data = (json.dumps(doc, sort_keys=True, indent=1) + "\n").encode()
    dfd = os.open(dot, _O_DIR)
    try:
        try:
            tfd = _open_dir_at(dfd, "tmp", dot.parent, f"{DOTDIR}/tmp")
        except FileNotFoundError:  # removed by hand: writers make what they need
            with contextlib.suppress(FileExistsError):
                os.mkdir("tmp", 0o755, dir_fd=dfd)
            tfd = _open_dir_at(dfd, "tmp", dot.parent, f"{DOTDIR}/tmp")
        try:
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_CLOEXEC, 0o644, dir_fd=tfd)
            try:
                _write_all(fd, memoryview(data))
                os.fsync(fd)
            finally:
                os.close(fd)
            os.rename(name, STORE_JSON, src_dir_fd=tfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(name, dir_fd=tfd)
            raise
        finally:
            os.close(tfd)
        os.fsync(dfd)
    finally:
        os.close(dfd)


class _TmpFile:
    """A partial write in a store's tmp/: locked while alive, removed unless committed.

    Named `<pid>.<random>`: purge_tmp leaves the files of a live process alone, so the
    moment between O_EXCL-creating the file and flock-ing it is safe from another process.
    """

    sealed = False  # made read-only (subclasses with their own __init__ start unsealed)
    _own_dir = True  # dir_fd is closed with the file (an import's shared tmp/ fd is not)

    def __init__(self, store: FileStore, tmp_fd: int | None = None) -> None:
        self.store = store
        # <pid>.<this process's random token><a counter>: unique as random_id() was, for
        # ~1/5 of its cost (a small file's copy made 3 of them: sources, tmp, verify).
        self.name = f"{os.getpid()}.{_TMP_TOKEN}{next(_TMP_COUNTER)}"
        self.path = store.tmp_dir / self.name
        self.written = 0
        # An import shares its tmp/ fd (kept open until all its tmp files are done with);
        # anything else opens its own.
        self._own_dir = tmp_fd is None
        self.dir_fd: int | None = (
            tmp_fd if tmp_fd is not None else store._open_dir("tmp", create=True)
        )
        try:
            self.fd: int | None = os.open(
                self.name,
                os.O_WRONLY | os.O_CREAT | os.O_EXCL | _O_NOFOLLOW | _O_CLOEXEC,
                0o600,
                dir_fd=self.dir_fd,
            )
        except BaseException:
            if self._own_dir:
                os.close(self.dir_fd)
            self.dir_fd = None
            raise
        with contextlib.suppress(OSError):  # no locking on this filesystem: best effort
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        fault_point("tmp.created")

    def write(self, data: memoryview) -> None:
        assert self.fd is not None
        _write_all(self.fd, data)
        before, self.written = self.written, self.written + len(data)
        if before // LEAF_SIZE != self.written // LEAF_SIZE:  # another 8 MiB written
            # (files under a leaf are written back by the batch's syncfs)
            start = before // LEAF_SIZE * LEAF_SIZE
            _start_writeback(self.fd, start, self.written // LEAF_SIZE * LEAF_SIZE - start)
        fault_point("tmp.write")

    def commit(self, file_id: str) -> tuple[int, bool]:
        """fsync, make read-only, rename into place; return (mtime of the copy, new).

        If the canonical file appeared meanwhile (another writer of the same content),
        the existing one is kept: this tmp is discarded and (its mtime, False) returned.
        """
        check_file_id(file_id)
        self.sync()
        pd = self.store._open_dir("files", file_id[:2], create=True)
        try:
            mtime, new = self.place(file_id, pd)
            if not new:
                return mtime, False
            os.fsync(pd)
        finally:
            os.close(pd)
        fault_point("files.committed")
        return mtime, True

    def seal(self) -> None:
        """Make the file read-only (before its fsync, so the mode is durable too)."""
        assert self.fd is not None
        if not self.sealed:
            os.fchmod(self.fd, 0o444)
            self.sealed = True

    def sync(self) -> None:
        """Make the written bytes durable and the file read-only (the mode is durable too)."""
        assert self.fd is not None
        self.seal()
        os.fsync(self.fd)
        fault_point("tmp.fsynced")

    def place(self, file_id: str, pd: int) -> tuple[int, bool]:
        """Rename the synced tmp to its copy's name in the folder `pd` (files/<id[:2]>);
        the caller fsyncs `pd` before anything records the copy. (mtime, new) as commit."""
        assert self.fd is not None and self.dir_fd is not None
        check_file_id(file_id)
        name = file_id[2:]
        st = _lstat_at(pd, name)
        if st is not None and stat_mod.S_ISREG(st.st_mode):
            self.discard()
            return int(st.st_mtime), False
        if st is not None:  # a link, folder, FIFO... where the copy goes: set it aside
            self.store._set_aside(pd, file_id)
        mtime = int(os.fstat(self.fd).st_mtime)
        os.rename(self.name, name, src_dir_fd=self.dir_fd, dst_dir_fd=pd)
        fault_point("files.renamed")
        self.close()
        return mtime, True

    def close(self) -> None:
        if self.fd is not None:
            fd, self.fd = self.fd, None
            os.close(fd)
        if self.dir_fd is not None:
            dfd, self.dir_fd = self.dir_fd, None
            if self._own_dir:
                os.close(dfd)

    def discard(self) -> None:
        """Close and remove; never raises (it runs on error paths)."""
        if self.dir_fd is not None:
            with contextlib.suppress(OSError):
                os.unlink(self.name, dir_fd=self.dir_fd)
        with contextlib.suppress(OSError):
            self.close()


def _not_regular(mode: int) -> str | None:
    """Why a file of this st_mode is not imported (None for a regular file)."""
    if stat_mod.S_ISREG(mode):
        return None
    if stat_mod.S_ISLNK(mode):
        return "symlink"
    if stat_mod.S_ISFIFO(mode):
        return "FIFO"
    if stat_mod.S_ISSOCK(mode):
        return "socket"
    if stat_mod.S_ISCHR(mode) or stat_mod.S_ISBLK(mode):
        return "device"
    return "not a regular file"


def walk_files(
    paths: Iterable[str | os.PathLike[str]],
    on_skip: Callable[[Path, str], None] | None = None,
) -> Iterator[Path]:
    """Every regular file under the given paths (files or folders), sorted.

    Nothing else is ever opened (a FIFO would block, a device never ends): FIFOs,
    sockets, devices and symlinks inside folders go to `on_skip(path, reason)` so the
    caller can say what it left out. A path named directly is followed if it is a link.
    """
    skip = on_skip or (lambda _p, _r: None)
    for p in paths:
        path = Path(p)
        try:
            mode = path.stat().st_mode
        except OSError:
            raise FileStoreError(f"no such file or folder: {path}") from None
        if stat_mod.S_ISDIR(mode):
            yield from _walk_folder(path, skip)
        elif (reason := _not_regular(mode)) is None:
            yield path
        else:
            skip(path, reason)


def _walk_folder(folder: Path, skip: Callable[[Path, str], None]) -> Iterator[Path]:
    """walk_files of one folder: its files (sorted) first, then its folders (sorted), as
    os.walk did; each entry judged by its directory entry's type (no lstat per file: it
    was a third of the walk's cost for small files), the rare other kinds by an lstat.
    A folder that cannot be listed is left out, as os.walk leaves it."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: e.name)
    except OSError:
        return
    subdirs: list[Path] = []
    for entry in entries:
        try:
            if entry.is_dir():  # follows a link, as os.walk's listing did
                if entry.name == DOTDIR:
                    continue
                if entry.is_symlink():
                    skip(folder / entry.name, "symlink")
                else:
                    subdirs.append(folder / entry.name)
                continue
            if entry.is_file(follow_symlinks=False):
                yield folder / entry.name
                continue
            reason = _not_regular(entry.stat(follow_symlinks=False).st_mode)
        except OSError:
            continue  # gone since the folder was listed
        if reason is not None:
            skip(folder / entry.name, reason)
    for sub in subdirs:
        yield from _walk_folder(sub, skip)


class FileStore:
    """An opened FileStore; see the module docstring for the layout and guarantees."""

    def __init__(self, path: str | os.PathLike[str], expected_id: str | None = None) -> None:
        self.path = Path(path)
        self.doc = self._read_doc(self.path)
        self.id: str = self.doc["_id"]
        if expected_id is not None and expected_id != self.id:
            raise WrongStore(f"{self.path} holds store {self.id}, expected {expected_id}")
        copies = self.doc.get("copies", 1)
        if not _valid_copies(copies):
            raise NotAFileStore(f"{self.path}: invalid copies in {DOTDIR}/{STORE_JSON}")
        self.copies: int = copies
        self._local = threading.local()  # held_dirs: folder fds kept open by one thread
        # Nothing is created or purged here: opening a store (status, the read-only app)
        # never writes. Writers create folders as they need them and call purge_tmp.
        self._check_layout()

    @staticmethod
    def _read_doc(path: Path) -> dict[str, Any]:
        doc_path = path / DOTDIR / STORE_JSON
        try:
            root = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _O_CLOEXEC)
        except (FileNotFoundError, NotADirectoryError):
            raise NoStoreJson(f"not a FileStore (not a directory): {path}") from None
        except OSError as e:
            raise StoreUnreadable(f"cannot read {path}: {_errstr(e)}") from None
        try:
            dot = _open_dir_at(root, DOTDIR, path, DOTDIR)
            try:
                fd = os.open(STORE_JSON, _O_READ, dir_fd=dot)
            except OSError as e:
                if e.errno in (errno.ELOOP, errno.ENOTDIR, errno.ENXIO):
                    _raise_if_link(dot, STORE_JSON, path, f"{DOTDIR}/{STORE_JSON}")
                raise
            finally:
                os.close(dot)
            with os.fdopen(fd, "rb") as f:
                if not stat_mod.S_ISREG(os.fstat(f.fileno()).st_mode):
                    raise NotAFileStore(f"not a FileStore ({STORE_JSON} is not a file): {path}")
                doc = json.loads(f.read(1 << 20))
        except (FileNotFoundError, NotADirectoryError):
            raise NoStoreJson(f"not a FileStore (no {DOTDIR}/{STORE_JSON}): {path}") from None
        except ValueError:
            raise NotAFileStore(f"not a FileStore (invalid {STORE_JSON}): {path}") from None
        except FileStoreError:
            raise
        except OSError as e:
            raise StoreUnreadable(f"cannot read {doc_path}: {_errstr(e)}") from None
        finally:
            os.close(root)
        if not isinstance(doc, dict) or not is_store_id(doc.get("_id")):
            raise NotAFileStore(f"not a FileStore (invalid store ID in {STORE_JSON}): {path}")
        return doc

    @staticmethod
    def read_id(path: str | os.PathLike[str]) -> str | None:
        """The store ID that `path`'s store.json names, None only when there certainly is
        no store.json (NoStoreJson). Anything that cannot tell raises a FileStoreError: an
        I/O error (StoreUnreadable), a link (StoreUnsafe), an invalid store.json. The one
        reader of store.json: opening a store and the wiped-drive probe both use it, and it
        never writes (no folder is created, nothing purged)."""
        try:
            return str(FileStore._read_doc(Path(path))["_id"])
        except NoStoreJson:
            return None

    def _check_layout(self) -> None:
        """Raise StoreUnsafe if .dmedia/{files,tmp,corrupt} or a files/XX is a link (or
        not a folder). Absent folders are fine: the writers create them."""
        try:
            dot = self._open_dir()
        except StoreUnsafe:
            raise
        except OSError as e:
            raise StoreUnreadable(f"cannot read {self.path / DOTDIR}: {_errstr(e)}") from None
        try:
            for sub in SUBDIRS:
                st = _lstat_at(dot, sub)
                if st is not None and not stat_mod.S_ISDIR(st.st_mode):
                    raise _unsafe(self.path, f"{DOTDIR}/{sub}", st)
            try:
                fd = os.open("files", _O_DIR, dir_fd=dot)
            except FileNotFoundError:
                return
            try:
                with os.scandir(fd) as it:
                    for entry in it:
                        if entry.is_symlink():
                            st = entry.stat(follow_symlinks=False)
                            raise _unsafe(self.path, f"{DOTDIR}/files/{entry.name}", st)
            finally:
                os.close(fd)
        except OSError as e:
            if isinstance(e, FileStoreError):
                raise
            raise StoreUnreadable(f"cannot read {self.path / DOTDIR}: {_errstr(e)}") from None
        finally:
            os.close(dot)

    @contextlib.contextmanager
    def held_dirs(self) -> Iterator[None]:
        """Keep the store's folders open, in this thread, for a batch of operations.

        Walking from the store folder costs 4-5 opens per operation (.dmedia, files, XX):
        for small files that was a quarter of a copy's cost. Inside this block each folder
        is walked once (same checks: no link followed) and its fd reused. The held fds name
        the folders as they were when first opened: a link that replaces one later is not
        followed, and a store unmounted meanwhile is still read or written on its own
        drive (or fails with an I/O error), never on whatever took its path. Nested blocks
        share the outer one's fds; other threads walk as usual.
        """
        if getattr(self._local, "held", None) is not None:
            yield
            return
        held: dict[tuple[str, ...], int] = {}
        self._local.held = held
        try:
            yield
        finally:
            if getattr(self._local, "held", None) is held:  # (a generator closed elsewhere)
                self._local.held = None
            for fd in held.values():
                with contextlib.suppress(OSError):
                    os.close(fd)

    def _open_dir(self, *parts: str, create: bool = False) -> int:
        """An fd of .dmedia/<parts...>, walked from the store folder without following any
        link (StoreUnsafe names the link). `create`: make missing folders (and fsync their
        parents). FileNotFoundError when absent and not `create`. The caller closes it.
        Inside held_dirs the walk is done once per folder (see there)."""
        held: dict[tuple[str, ...], int] | None = getattr(self._local, "held", None)
        if held is None or not parts:
            return self._walk_dir(parts, create)
        fd = held.get(parts)
        if fd is None:
            if len(parts) == 1:
                fd = self._walk_dir(parts, create)
            else:
                parent = self._open_dir(*parts[:-1], create=create)
                try:
                    fd = self._step_dir(parent, parts[-1], "/".join((DOTDIR, *parts)), create)
                finally:
                    os.close(parent)
            held[parts] = fd
        return os.dup(fd)

    def _walk_dir(self, parts: tuple[str, ...], create: bool) -> int:
        root = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _O_CLOEXEC)
        fd = root
        rel = DOTDIR
        try:
            for name in (DOTDIR, *parts):
                if name != DOTDIR:
                    rel = f"{rel}/{name}"
                nxt = self._step_dir(fd, name, rel, create)
                os.close(fd)
                fd = nxt
            return fd
        except BaseException:
            os.close(fd)
            raise

    def _step_dir(self, fd: int, name: str, rel: str, create: bool) -> int:
        """The folder `name` in the folder fd (made, and fd fsync-ed, if absent and
        `create`); the caller closes both."""
        try:
            return _open_dir_at(fd, name, self.path, rel)
        except FileNotFoundError:
            if not create:
                raise
            with contextlib.suppress(FileExistsError):
                os.mkdir(name, 0o755, dir_fd=fd)
                os.fsync(fd)
            return _open_dir_at(fd, name, self.path, rel)

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        store_id: str | None = None,
        doc: dict[str, Any] | None = None,
    ) -> FileStore:
        """Make `path` (an existing directory) a FileStore whose store.json is `doc`.

        The directory must already exist: creating it would turn a mistyped mount point
        into a store on the wrong drive.
        """
        path = Path(path)
        if not path.is_dir():
            raise FileStoreError(f"not a directory: {path}")
        dot = path / DOTDIR
        for p in (dot, *(dot / sub for sub in (*SUBDIRS, STORE_JSON))):
            if p.is_symlink():
                raise StoreUnsafe(f"{p} is a symbolic link: not creating a FileStore there")
        if (dot / STORE_JSON).exists():
            raise FileStoreError(f"a FileStore already exists at {path}")
        if doc is None:
            doc = {
                "_id": store_id or random_id(),
                "type": TYPE_STORE,
                "time": time.time(),
                "copies": 1,
            }
        else:
            doc = dict(doc)
            doc.setdefault("_id", store_id or random_id())
        if store_id is not None and doc["_id"] != store_id:
            raise FileStoreError(f"store doc _id {doc['_id']!r} is not {store_id!r}")
        if not is_store_id(doc["_id"]):
            raise FileStoreError(f"invalid store ID: {doc['_id']!r:.80}")
        if not _valid_copies(doc.get("copies", 1)):
            raise FileStoreError(f"invalid copies: {doc['copies']!r:.80}")
        try:
            dot.mkdir(exist_ok=True)
            for sub in ("files", "tmp", "corrupt"):
                (dot / sub).mkdir(exist_ok=True)
            _write_store_json(dot, doc)
            _fsync_dir(path)
        except OSError as e:
            raise FileStoreError(f"cannot create a FileStore at {path}: {_errstr(e)}") from None
        return cls(path, doc["_id"])

    def __repr__(self) -> str:
        return f"FileStore({str(self.path)!r}, {self.id!r})"

    def set_failure(self, failure: dict[str, Any] | None) -> None:
        """Write (or, with None, clear) the store's failure mark into its own store.json.

        The drive carries the memory that it returned corrupt data, so the mark survives
        the library forgetting the store (a purge) and comes back with the drive. Atomic:
        store.json is rewritten through a temp file and a rename. OSError if it cannot be.
        """
        doc = self._read_doc(self.path)
        if doc.get("_id") != self.id:
            raise WrongStore(f"{self.path} no longer holds store {self.id}")
        if failure is None:
            if "failure" not in doc and not doc.get("no_new_copies"):
                return
            doc.pop("failure", None)
            doc.pop("no_new_copies", None)
        else:
            doc["failure"] = dict(failure)
            doc["no_new_copies"] = True
        _write_store_json(self.path / DOTDIR, doc)
        self.doc = doc

    # --- paths ---------------------------------------------------------------------

    # The paths are names for messages and for other processes; never walked (see
    # _open_dir). Built once: a Path join per file was ~5% of a small file's copy.
    @functools.cached_property
    def files_dir(self) -> Path:
        return self.path / DOTDIR / "files"

    @functools.cached_property
    def tmp_dir(self) -> Path:
        return self.path / DOTDIR / "tmp"

    @functools.cached_property
    def corrupt_dir(self) -> Path:
        return self.path / DOTDIR / "corrupt"

    def file_path(self, file_id: str) -> Path:
        check_file_id(file_id)
        return self.files_dir / file_id[:2] / file_id[2:]

    def corrupt_path(self, file_id: str) -> Path:
        check_file_id(file_id)
        return self.corrupt_dir / file_id

    # --- queries -------------------------------------------------------------------

    def still_here(self) -> bool:
        """Is this FileStore still at its folder (its store.json names this store)?

        False when the drive went away, was unmounted or wiped, or store.json cannot be
        read: a "missing" copy on a store that is not here is not a missing copy.
        """
        try:
            return self._read_doc(self.path).get("_id") == self.id
        except FileStoreError:
            return False

    def _lstat_copy(self, file_id: str) -> os.stat_result | None:
        """lstat of what is at the copy's name (never following a link); None when its
        folder or the name is absent. The caller has checked the ID."""
        try:
            pd = self._open_dir("files", file_id[:2])
        except FileNotFoundError:
            return None
        try:
            return _lstat_at(pd, file_id[2:])
        finally:
            os.close(pd)

    def stat(self, file_id: str) -> Stat:
        """Size and mtime of the canonical copy; FileNotFoundError if absent or if what is
        there is not a regular file (a link, folder, FIFO or device is never a copy)."""
        st = self._lstat_copy(check_file_id(file_id))
        if st is None or not stat_mod.S_ISREG(st.st_mode):
            what = "no such file" if st is None else f"not a regular file ({_kind(st)})"
            raise FileNotFoundError(errno.ENOENT, what, str(self.file_path(file_id)))
        return Stat(file_id, st.st_size, int(st.st_mtime))

    def _copy_mtime(self, file_id: str) -> int | None:
        """stat's mtime, or None where stat raises FileNotFoundError (no copy, or not a
        regular file), without building that error: a copy's destination is asked this
        for every file, and is nearly always without it (no folder files/XX yet, often)."""
        st = self._lstat_copy(file_id)
        return int(st.st_mtime) if st is not None and stat_mod.S_ISREG(st.st_mode) else None

    def exists(self, file_id: str) -> bool:
        try:
            self.stat(file_id)
        except OSError:
            return False
        return True

    def _scan_copies(
        self,
        ordered: bool,
        seen: Callable[[str, os.DirEntry[str]], _T | None],
        only: Iterable[str] | None = None,
    ) -> Iterator[_T]:
        """seen(file_id, entry) for every entry of every files/XX folder (or of those in
        `only`) whose name is a file ID, while its folder is open (a DirEntry's stat needs
        it); what it returns, unless None, is yielded once the folder is closed.
        `ordered`: by ID. Each folder is opened without following links; one that cannot
        be opened (or is absent) is skipped, a link in its place raises StoreUnsafe."""
        try:
            files = self._open_dir("files")
        except FileNotFoundError:
            return
        try:
            if only is None:
                with os.scandir(files) as it:
                    prefixes = [
                        e.name for e in it if len(e.name) == 2 and e.is_dir(follow_symlinks=False)
                    ]
            else:
                prefixes = [p for p in only if len(p) == 2]
            for prefix in sorted(prefixes) if ordered else prefixes:
                try:
                    pd = _open_dir_at(files, prefix, self.path, f"{DOTDIR}/files/{prefix}")
                except StoreUnsafe:
                    raise
                except OSError:
                    continue
                out = []
                try:
                    with os.scandir(pd) as it:
                        entries = sorted(it, key=lambda e: e.name) if ordered else it
                        for entry in entries:
                            file_id = prefix + entry.name
                            if is_file_id(file_id):
                                try:
                                    got = seen(file_id, entry)
                                except OSError:
                                    continue
                                if got is not None:
                                    out.append(got)
                finally:
                    os.close(pd)
                yield from out
        finally:
            os.close(files)

    def __iter__(self) -> Iterator[Stat]:
        """Every canonical copy, in ID order; names that are not valid IDs are skipped."""

        def stat(file_id: str, entry: os.DirEntry[str]) -> Stat | None:
            if not entry.is_file(follow_symlinks=False):
                return None  # links, folders, FIFOs, devices are never copies
            st = entry.stat(follow_symlinks=False)
            return Stat(file_id, st.st_size, int(st.st_mtime))

        return self._scan_copies(True, stat)

    def count(self) -> int:
        """How many copies __iter__ would list, without a stat per copy (the directory
        entry's type is enough on most filesystems)."""
        return sum(self._scan_copies(False, lambda _, e: e.is_file(follow_symlinks=False) or None))

    def ids_in(self, prefixes: Iterable[str]) -> Iterator[str]:
        """The copies' IDs in these files/XX folders, without a stat per copy."""
        return self._scan_copies(
            False, lambda fid, e: fid if e.is_file(follow_symlinks=False) else None, prefixes
        )

    def folder_stamps(self) -> dict[str, str]:
        """{"XX": "inode:ctime_ns"} of every files/XX folder (FoldersSeen). One stat a
        folder, none a copy."""
        try:
            files = self._open_dir("files")
        except FileNotFoundError:
            return {}
        out: dict[str, str] = {}
        try:
            with os.scandir(files) as it:
                for e in it:
                    if len(e.name) == 2 and e.is_dir(follow_symlinks=False):
                        st = e.stat(follow_symlinks=False)
                        out[e.name] = f"{st.st_ino}:{st.st_ctime_ns}"
        finally:
            os.close(files)
        return out

    def folders_seen(self) -> FoldersSeen | None:
        """What save_folders_seen last wrote; None when absent or not readable as one
        (then every folder is listed: the record is a shortcut, never a source of truth)."""
        try:
            dot = self._open_dir()
        except OSError:
            return None
        try:
            fd = os.open(FOLDERS_SEEN, _O_READ, dir_fd=dot)
            try:
                if not stat_mod.S_ISREG(os.fstat(fd).st_mode):
                    return None
                data = os.read(fd, 1 << 20)  # ~30 KB for 1024 folders
            finally:
                os.close(fd)
            doc = json.loads(data)
        except (OSError, ValueError, RecursionError):
            return None
        finally:
            os.close(dot)
        if not isinstance(doc, dict):
            return None
        when, recorded, stamps = doc.get("time"), doc.get("recorded"), doc.get("stamps")
        if not (
            isinstance(when, int)
            and isinstance(recorded, int)
            and isinstance(stamps, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in stamps.items())
        ):
            return None
        return FoldersSeen(when, recorded, stamps)

    def save_folders_seen(self, seen: FoldersSeen) -> None:
        """Replace .dmedia/folders-seen.json (a temp file renamed over it; no link
        followed). A stamp whose ctime is within RACY_NS of the new file's own mtime (the
        filesystem's clock now) is saved as "" (racy). Not fsync-ed: lost or torn, it only
        costs one full listing."""
        tmp = FOLDERS_SEEN + ".tmp"
        dot = self._open_dir()
        try:
            fd = os.open(
                tmp,
                os.O_WRONLY | os.O_CREAT | os.O_TRUNC | _O_NOFOLLOW | _O_CLOEXEC,
                0o644,
                dir_fd=dot,
            )
            try:
                horizon = os.fstat(fd).st_mtime_ns - RACY_NS
                stamps = {k: "" if _ctime_of(v) > horizon else v for k, v in seen.stamps.items()}
                data = json.dumps(
                    {"time": seen.time, "recorded": seen.recorded, "stamps": stamps},
                    sort_keys=True,
                    separators=(",", ":"),
                ).encode()
                _write_all(fd, memoryview(data))
            finally:
                os.close(fd)
            os.rename(tmp, FOLDERS_SEEN, src_dir_fd=dot, dst_dir_fd=dot)
        finally:
            os.close(dot)

    def quarantined(self) -> Iterator[tuple[str, str]]:
        """(file_id, name) of every corrupt copy in corrupt/ (`<id>` or `<id>.<n>`); things
        set aside because they were not regular files are not corrupt copies."""
        try:
            cd = self._open_dir("corrupt")
        except FileNotFoundError:
            return
        try:
            with os.scandir(cd) as it:
                names = sorted(e.name for e in it if e.is_file(follow_symlinks=False))
        finally:
            os.close(cd)
        for name in names:
            file_id, _, n = name.partition(".")
            if is_file_id(file_id) and (not n or n.isdigit()):
                yield file_id, name

    def statvfs(self) -> tuple[int, int]:
        """(bytes_total, bytes_avail) of the filesystem holding the store."""
        st = os.statvfs(self.path)
        return st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize

    @property
    def bytes_total(self) -> int:
        return self.statvfs()[0]

    @property
    def bytes_avail(self) -> int:
        return self.statvfs()[1]

    @property
    def filesystem_id(self) -> int:
        """st_dev of the store folder: two stores with the same one share a filesystem."""
        return os.stat(self.path).st_dev

    # --- maintenance ---------------------------------------------------------------

    def purge_tmp(self) -> int:
        """Remove partial writes left by a crash (writers only: see the module docstring).

        Kept: files of a live owner process (by the PID in the name, unless older than
        TMP_STALE_AFTER: a reused PID), files another process holds an flock on, and
        anything that is not a regular file (never followed, never removed).
        """
        count = 0
        try:
            tfd = self._open_dir("tmp")
        except FileNotFoundError:
            return 0
        try:
            with os.scandir(tfd) as it:
                names = [e.name for e in it]
            for name in names:
                try:
                    fd = os.open(name, _O_READ, dir_fd=tfd)
                except OSError:
                    continue  # gone, or a link (ELOOP): left alone
                try:
                    st = os.fstat(fd)
                    if not stat_mod.S_ISREG(st.st_mode):
                        continue
                    owner = _tmp_owner(name)
                    if (
                        owner is not None
                        and _pid_alive(owner)
                        and time.time() - st.st_mtime < TMP_STALE_AFTER
                    ):
                        continue  # its writer is alive (maybe not flock-ed yet)
                    try:
                        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue  # a live writer holds it
                    except OSError:
                        pass  # no locking here: judged by its owner alone
                    os.unlink(name, dir_fd=tfd)
                    count += 1
                except OSError:
                    continue
                finally:
                    os.close(fd)
        finally:
            os.close(tfd)
        return count

    def _free_corrupt_name(self, cd: int, base: str) -> str:
        name, n = base, 0
        while _lstat_at(cd, name) is not None:
            n += 1
            name = f"{base}.{n}"
        return name

    def move_to_corrupt(self, file_id: str) -> Path:
        """Quarantine the canonical copy (never delete it); return where it went.

        A copy already quarantined under that ID is kept: the new one gets a suffix.
        Crash order: linked into corrupt/ first, unlinked from files/ second, so the bytes
        always have a name; killed in between, finish_quarantine completes it.
        """
        check_file_id(file_id)
        name = file_id[2:]
        pd = self._open_dir("files", file_id[:2])
        try:
            cd = self._open_dir("corrupt", create=True)
            try:
                dst = file_id
                n = 0
                while True:
                    try:
                        # link + unlink: never replaces an earlier quarantined copy
                        os.link(name, dst, src_dir_fd=pd, dst_dir_fd=cd, follow_symlinks=False)
                        break
                    except FileExistsError:
                        n += 1
                        dst = f"{file_id}.{n}"
                    except OSError as e:
                        if e.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EMLINK):
                            raise
                        # No hard links (FAT, exFAT): a plain rename to a name that is free.
                        dst = self._free_corrupt_name(cd, dst)
                        os.rename(name, dst, src_dir_fd=pd, dst_dir_fd=cd)
                        fault_point("quarantine.moved")
                        os.fsync(cd)
                        os.fsync(pd)
                        fault_point("quarantine.done")
                        return self.corrupt_dir / dst
                fault_point("quarantine.linked")
                os.unlink(name, dir_fd=pd)
                fault_point("quarantine.moved")
                os.fsync(cd)
                os.fsync(pd)
                fault_point("quarantine.done")
                return self.corrupt_dir / dst
            finally:
                os.close(cd)
        finally:
            os.close(pd)

    def finish_quarantine(self, file_id: str) -> Path | None:
        """Finish a quarantine killed between its link into corrupt/ and its unlink from
        files/: when the canonical copy is the very file (same inode) as a quarantined
        copy of that ID, its files/ name is removed and the corrupt/ one returned.

        None (nothing changed) when the copy in files/ is any other file (a good copy
        made since an old quarantine), or either is absent: the bytes are never left
        without a name in corrupt/.
        """
        check_file_id(file_id)
        name = file_id[2:]
        try:
            pd = self._open_dir("files", file_id[:2])
        except FileNotFoundError:
            return None
        try:
            st = _lstat_at(pd, name)
            if st is None or not stat_mod.S_ISREG(st.st_mode) or st.st_nlink < 2:
                return None
            try:
                cd = self._open_dir("corrupt")
            except FileNotFoundError:
                return None
            try:
                with os.scandir(cd) as it:
                    names = sorted(
                        e.name for e in it if e.name == file_id or e.name.startswith(file_id + ".")
                    )
                for qname in names:
                    qst = _lstat_at(cd, qname)
                    if (
                        qst is not None
                        and stat_mod.S_ISREG(qst.st_mode)
                        and (qst.st_dev, qst.st_ino) == (st.st_dev, st.st_ino)
                    ):
                        os.unlink(name, dir_fd=pd)
                        os.fsync(cd)
                        os.fsync(pd)
                        log.warning(
                            "store %s: finished the quarantine of %s (into %s)",
                            self.id,
                            file_id,
                            qname,
                        )
                        return self.corrupt_dir / qname
            finally:
                os.close(cd)
        finally:
            os.close(pd)
        return None

    def _set_aside(self, pd: int, file_id: str) -> Path | None:
        """Move what is at a copy's path but is not a regular file (a link, folder, FIFO,
        device) into corrupt/<id>.not-a-file: never deleted, and out of the copy's way."""
        try:
            cd = self._open_dir("corrupt", create=True)
        except OSError as e:
            log.warning("cannot set aside %s on store %s: %s", file_id, self.id, _errstr(e))
            return None
        try:
            dst = self._free_corrupt_name(cd, f"{file_id}.{NOT_A_FILE}")
            os.rename(file_id[2:], dst, src_dir_fd=pd, dst_dir_fd=cd)
            os.fsync(cd)
            os.fsync(pd)
            return self.corrupt_dir / dst
        except OSError as e:
            log.warning("cannot set aside %s on store %s: %s", file_id, self.id, _errstr(e))
            return None
        finally:
            os.close(cd)

    # --- writing -------------------------------------------------------------------

    def import_file(
        self, src: str | os.PathLike[str], progress: Progress | None = None
    ) -> ImportResult:
        """Copy `src` into the store, hashing it in the same single read.

        Empty files have no ID and are refused (FileStoreError). OSError from reading
        `src` or writing the store propagates; either way no partial file is left behind.
        When this returns, the copy is on disk (fsync-ed file and directory).
        """
        staged = self._stage(src, progress)
        return staged if isinstance(staged, ImportResult) else self._commit(*staged)

    def import_files(
        self, srcs: Iterable[str | os.PathLike[str]], progress: Progress | None = None
    ) -> Iterator[tuple[Path, ImportResult | FileStoreError | OSError]]:
        """import_file for many files, in order, a batch at a time (import_batches)."""
        for batch in self.import_batches(srcs, progress):
            yield from batch

    def import_batches(
        self, srcs: Iterable[str | os.PathLike[str]], progress: Progress | None = None
    ) -> Iterator[list[tuple[Path, ImportResult | FileStoreError | OSError]]]:
        """Import files in batches (up to import_batch_files() files or IMPORT_BATCH_BYTES):
        every file of a batch is written to tmp/, then all are fsync-ed, then renamed into
        files/, then their folders fsync-ed; the batch's (src, result or error) list is
        yielded once all of it is durable, so a caller records a batch in one go.

        A batch is committed (fsyncs, renames) in a worker thread while the next one is
        read and hashed, so disk and CPU work in parallel. Per-file fsyncs and renames of
        many small files cost one journal commit, not one each. A crash anywhere leaves
        whole files in files/ (fsync-ed before their rename) and partial ones in tmp/.
        """
        with self.held_dirs():
            yield from self._import_batches(srcs, progress)

    def _import_batches(
        self, srcs: Iterable[str | os.PathLike[str]], progress: Progress | None
    ) -> Iterator[list[tuple[Path, ImportResult | FileStoreError | OSError]]]:
        # Everything staged is submitted before the next yield, so a caller that stops
        # early leaves nothing half-done: leaving the `with` waits for queued commits.
        Staged = tuple[Path, "tuple[_TmpFile, ContentHash] | ImportResult | Exception"]
        tmp_fd = self._open_dir("tmp", create=True)  # shared by the staged tmp files
        max_files = import_batch_files()
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="dmedia-commit") as ex:
                pending: Future[list[tuple[Path, Any]]] | None = None
                batch: list[Staged] = []
                nbytes = 0
                try:
                    for src in map(Path, srcs):
                        try:
                            staged: Any = self._stage(src, progress, tmp_fd)
                        except (FileStoreError, OSError) as e:
                            staged = e
                        batch.append((src, staged))
                        if isinstance(staged, tuple):
                            nbytes += staged[1].file_size
                        if len(batch) < max_files and nbytes < IMPORT_BATCH_BYTES:
                            continue
                        fault_point("import.batch_staged")
                        fut = ex.submit(self._commit_batch, batch)
                        batch, nbytes = [], 0
                        if pending is not None:
                            yield pending.result()
                        pending = fut
                    last = None
                    if batch:
                        fault_point("import.batch_staged")
                        last = ex.submit(self._commit_batch, batch)
                    batch = []
                    if pending is not None:
                        yield pending.result()
                    if last is not None:
                        yield last.result()
                finally:
                    for _, staged in batch:  # staged, never submitted (an exception): removed
                        if isinstance(staged, tuple):
                            staged[0].discard()
        finally:
            os.close(tmp_fd)  # only once no commit can be running: they rename through it

    def _commit_batch(self, batch: list[tuple[Path, Any]]) -> list[tuple[Path, Any]]:
        """Commit the staged files of an import batch; per file the ImportResult or the
        error (empty, unreadable...) it already had."""
        results: list[Any] = [staged for _, staged in batch]
        todo = [(i, staged) for i, staged in enumerate(results) if isinstance(staged, tuple)]
        committed = commit_staged([(tmp, ch.id) for _, (tmp, ch) in todo], "import")
        for (i, (_, ch)), r in zip(todo, committed, strict=True):
            results[i] = r if isinstance(r, OSError) else ImportResult(ch, r[0], r[1])
        return [(src, r) for (src, _), r in zip(batch, results, strict=True)]

    def import_bytes(self, data: bytes) -> ImportResult:
        """Store an in-memory byte string (the demo and tests)."""
        if not data:
            raise FileStoreError("empty file (not imported)")
        staged = self._stage_stream(io.BytesIO(data), None)
        return staged if isinstance(staged, ImportResult) else self._commit(*staged)

    def _stage(
        self,
        src: str | os.PathLike[str],
        progress: Progress | None,
        tmp_fd: int | None = None,
    ) -> ImportResult | tuple[_TmpFile, ContentHash]:
        try:
            f = open(src, "rb", buffering=0)  # noqa: SIM115 (closed below)
        except IsADirectoryError:
            raise FileStoreError(f"not a regular file: {src}") from None
        with f:
            st = os.fstat(f.fileno())
            if not stat_mod.S_ISREG(st.st_mode):
                raise FileStoreError(f"not a regular file: {src}")
            if st.st_size == 0:
                raise EmptyFile(f"empty file (not imported): {src}")
            with contextlib.suppress(OSError, AttributeError):  # a hint: larger readahead
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_SEQUENTIAL)
            return self._stage_stream(f, progress, tmp_fd)

    def _stage_stream(
        self, f: Any, progress: Progress | None, tmp_fd: int | None = None
    ) -> ImportResult | tuple[_TmpFile, ContentHash]:
        """Read f once into tmp/, hashing it: an ImportResult if the store already has
        it (tmp removed), else the tmp file to commit. `tmp_fd`: tmp/ as an import keeps
        it open (its other folders are held: see held_dirs)."""
        tmp = _TmpFile(self, tmp_fd)
        try:
            h = _pump(f, {self.id: tmp}, None, progress)
            if h.file_size == 0:
                raise FileStoreError("empty file (not imported)")
            ch = h.content_hash()
            existing = self._copy_mtime(ch.id)
            if existing is None:
                return tmp, ch
            tmp.discard()
            return ImportResult(ch, existing, False)
        except BaseException:
            tmp.discard()
            raise

    @staticmethod
    def _commit(tmp: _TmpFile, ch: ContentHash) -> ImportResult:
        try:
            mtime, new = tmp.commit(ch.id)
        except BaseException:
            tmp.discard()
            raise
        return ImportResult(ch, mtime, new)

    # --- verifying and copying -----------------------------------------------------

    def _quarantine(self, file_id: str, **kw: Any) -> VerifyResult:
        try:
            where = self.move_to_corrupt(file_id)
        except OSError as e:
            return VerifyResult(
                VerifyStatus.CORRUPT, file_id, error=f"cannot quarantine: {_errstr(e)}", **kw
            )
        return VerifyResult(VerifyStatus.CORRUPT, file_id, quarantine=where, **kw)

    def _open_copy(self, file_id: str) -> tuple[Any, os.stat_result] | VerifyResult:
        """The canonical copy opened for reading (never following a link, never blocking),
        or the verdict when there is none to read.

        MISSING: nothing there, or something that is not a regular file (a symlink, even to
        a good copy elsewhere; a folder; a FIFO; a device): it is no copy, is set aside into
        corrupt/ so a real copy can take its place, and `error` says what it was.
        UNREADABLE: an I/O error, or a link on the way (StoreUnsafe): nothing is changed.
        """
        check_file_id(file_id)
        try:
            pd = self._open_dir("files", file_id[:2])
        except FileNotFoundError:
            return VerifyResult(VerifyStatus.MISSING, file_id)
        except OSError as e:
            return VerifyResult(VerifyStatus.UNREADABLE, file_id, error=_errstr(e))
        try:
            name = file_id[2:]
            try:
                seen = _lstat_at(pd, name)
                if seen is None:
                    return VerifyResult(VerifyStatus.MISSING, file_id)
                st = seen
                if stat_mod.S_ISREG(st.st_mode):
                    fd = os.open(name, _O_READ, dir_fd=pd)
                    st = os.fstat(fd)  # what we opened, not what lstat saw a moment ago
                    if stat_mod.S_ISREG(st.st_mode):
                        return os.fdopen(fd, "rb", buffering=0), st
                    os.close(fd)
            except FileNotFoundError:
                return VerifyResult(VerifyStatus.MISSING, file_id)
            except OSError as e:
                if e.errno != errno.ELOOP:  # ELOOP: replaced by a link since the lstat
                    return VerifyResult(VerifyStatus.UNREADABLE, file_id, error=_errstr(e))
                st = _lstat_at(pd, name) or st
            kind = _kind(st)
            where = self._set_aside(pd, file_id)
            log.warning(
                "store %s: %s is a %s, not a copy (set aside to %s)", self.id, file_id, kind, where
            )
            return VerifyResult(
                VerifyStatus.MISSING,
                file_id,
                quarantine=where,
                error=f"not a regular file ({kind}): never counted as a copy",
            )
        finally:
            os.close(pd)

    def verify(self, file_id: str, progress: Progress | None = None) -> VerifyResult:
        """Re-hash the canonical copy; quarantine it if its content is not its ID.

        The copy's pages are dropped from the page cache first (clean ones: a copy is
        fsync-ed before it is in files/), so the bytes hashed come from the drive: a copy
        read or written recently (the read-back of a new copy, a library small enough to
        stay in RAM) would otherwise be "verified" from memory while the drive rots.
        An I/O error while reading is UNREADABLE (nothing is moved: a failing read is not
        evidence of corruption). `progress(n)` gets the bytes of each leaf hashed. Only a
        regular file is read (see _open_copy): verify never follows a link nor blocks.
        """
        opened = self._open_copy(file_id)
        if isinstance(opened, VerifyResult):
            return opened
        f, st = opened
        try:
            with f:
                if st.st_size == 0:
                    return self._quarantine(file_id, mtime=int(st.st_mtime))
                _drop_cached(f.fileno())  # read the drive, not what RAM kept of the copy
                try:
                    ch = hash_file(f, progress, expect=file_id)
                finally:
                    _drop_cached(f.fileno())  # and leave RAM to the user's own files
        except OSError as e:
            return VerifyResult(VerifyStatus.UNREADABLE, file_id, error=_errstr(e))
        except ProtocolError:  # emptied while we read it
            return self._quarantine(file_id, mtime=int(st.st_mtime))
        if ch.id != file_id:
            return self._quarantine(file_id, mtime=int(st.st_mtime), content_hash=ch)
        return VerifyResult(VerifyStatus.OK, file_id, mtime=int(st.st_mtime), content_hash=ch)

    def copy_to(
        self,
        file_id: str,
        dsts: list[FileStore],
        progress: Progress | None = None,
        commit: bool = True,
    ) -> CopyResult:
        """Copy one file to several stores, verifying the source in the same single read.

        Nothing reaches a destination's files/ unless the whole source hashed to
        `file_id`. A corrupt source is quarantined (as verify does); an unreadable one
        leaves everything as it was. One destination failing (ENOSPC, EIO) does not stop
        the others. A destination that already has the file is left alone.

        `commit=False`: the new copies are left written (not fsync-ed) in the
        destinations' tmp/ and returned in `staged`, for commit_staged to commit with
        other files' in one batch; the caller must commit or discard them.
        """
        written: dict[str, int] = {}
        failed: dict[str, str] = {}
        opened = self._open_copy(file_id)
        if isinstance(opened, VerifyResult):
            return CopyResult(opened.status, written, failed, opened)
        f, _st = opened

        tmps: dict[str, _TmpFile] = {}
        try:
            with f:
                for dst in dsts:
                    if dst.id in written or dst.id in tmps or dst.id in failed:
                        continue
                    try:
                        there = dst._copy_mtime(file_id)
                    except OSError as e:
                        failed[dst.id] = _errstr(e)
                        continue
                    if there is not None:
                        written[dst.id] = there  # already there: leave it
                        continue
                    try:
                        tmps[dst.id] = _TmpFile(dst)
                    except OSError as e:
                        failed[dst.id] = _errstr(e)
                mtime = int(os.fstat(f.fileno()).st_mtime)
                try:
                    h = _pump(f, tmps, failed, progress)
                except OSError as e:
                    src = VerifyResult(VerifyStatus.UNREADABLE, file_id, error=_errstr(e))
                    return CopyResult(src.status, {}, {}, src)
            ch = h.content_hash(expect=file_id) if h.file_size else None
            if ch is None or ch.id != file_id:
                src = self._quarantine(file_id, mtime=mtime, content_hash=ch)
                return CopyResult(src.status, {}, {}, src)
            if not commit:
                src = VerifyResult(VerifyStatus.OK, file_id, mtime=mtime, content_hash=ch)
                staged, tmps = tmps, {}
                return CopyResult(src.status, written, failed, src, staged)
            for sid, tmp in list(tmps.items()):
                try:
                    written[sid] = tmp.commit(file_id)[0]
                except OSError as e:
                    failed[sid] = _errstr(e)
                    tmp.discard()
                del tmps[sid]
            src = VerifyResult(VerifyStatus.OK, file_id, mtime=mtime, content_hash=ch)
            return CopyResult(src.status, written, failed, src)
        finally:
            for tmp in tmps.values():
                tmp.discard()


@contextlib.contextmanager
def held_dirs_of(stores: Iterable[FileStore]) -> Iterator[None]:
    """FileStore.held_dirs for several stores at once (a copy batch, a verify round)."""
    with contextlib.ExitStack() as held:
        for fs in stores:
            held.enter_context(fs.held_dirs())
        yield


def commit_staged(
    items: list[tuple[_TmpFile, str]], op: str = "copy"
) -> list[tuple[int, bool] | OSError]:
    """Commit many written tmp files (of one store or several) as one batch: fsync them
    all, rename them all into files/, fsync their folders; per item (mtime, new) as
    _TmpFile.commit, or the OSError that item met (its tmp removed). Nothing here is
    recorded anywhere: the caller records only the items that came back without error.

    Fault points `<op>.batch_synced` and `<op>.batch_renamed` sit between the phases.
    """
    results: list[tuple[int, bool] | OSError | None] = [None] * len(items)
    dirs: dict[tuple[str, str], int] = {}
    todo: list[int] = []
    try:
        for tmp, _ in items:
            with contextlib.suppress(OSError):  # an error here is met again by sync()
                tmp.seal()
        _flush_filesystems(tmp.fd for tmp, _ in items if tmp.fd is not None)
        for i, (tmp, _) in enumerate(items):
            try:
                tmp.sync()
            except OSError as e:
                tmp.discard()
                results[i] = e
                continue
            todo.append(i)
        fault_point(f"{op}.batch_synced")
        placed: list[tuple[int, tuple[str, str]]] = []
        while todo:
            i = todo.pop(0)
            tmp, file_id = items[i]
            key = (tmp.store.id, file_id[:2])
            try:
                check_file_id(file_id)
                if key not in dirs:
                    dirs[key] = tmp.store._open_dir("files", file_id[:2], create=True)
                mtime, new = tmp.place(file_id, dirs[key])
            except OSError as e:
                tmp.discard()
                results[i] = e
                continue
            results[i] = (mtime, new)
            if new:
                placed.append((i, key))
        fault_point(f"{op}.batch_renamed")
        _flush_filesystems(dirs.values())
        failed: dict[tuple[str, str], OSError] = {}
        for key, pd in dirs.items():
            try:
                os.fsync(pd)
            except OSError as e:
                failed[key] = e
        for i, key in placed:
            if key in failed:  # in files/ but maybe not durable: not reported done
                results[i] = failed[key]
            else:
                fault_point("files.committed")
    finally:
        for pd in dirs.values():
            os.close(pd)
        for i in todo:  # an exception before they were placed
            items[i][0].discard()
    return results  # type: ignore[return-value]


def _ctime_of(stamp: str) -> float:
    """The ctime in a folder stamp ("inode:ctime_ns"); +inf for "" or junk (racy)."""
    _, _, ctime = stamp.partition(":")
    return int(ctime) if ctime.isdigit() else math.inf


def _drop_cached(fd: int) -> None:
    """Drop the file's clean pages from the page cache (a hint: a tmpfs or a dirty page
    keeps them; where fadvise is missing, nothing happens)."""
    with contextlib.suppress(OSError, AttributeError):
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)


def _lstat_at(dir_fd: int, name: str) -> os.stat_result | None:
    """lstat of name in the folder dir_fd; None if absent."""
    try:
        return os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
    except FileNotFoundError:
        return None


def _kind(st: os.stat_result) -> str:
    m = st.st_mode
    for test, name in (
        (stat_mod.S_ISLNK, "symbolic link"),
        (stat_mod.S_ISDIR, "folder"),
        (stat_mod.S_ISFIFO, "FIFO"),
        (stat_mod.S_ISCHR, "character device"),
        (stat_mod.S_ISBLK, "block device"),
        (stat_mod.S_ISSOCK, "socket"),
    ):
        if test(m):
            return name
    return "regular file" if stat_mod.S_ISREG(m) else "special file"


def _unsafe(store_path: Path, rel: str, st: os.stat_result | None) -> StoreUnsafe:
    what = _kind(st) if st is not None else "not a folder"
    return StoreUnsafe(
        f"store {store_path}: {rel} is a {what}, not a folder of the store "
        "(links are never followed inside a store; nothing is read or written there "
        "until it is fixed)"
    )


def _raise_if_link(dir_fd: int, name: str, store_path: Path, rel: str) -> None:
    st = _lstat_at(dir_fd, name)
    if st is not None and stat_mod.S_ISLNK(st.st_mode):
        raise StoreUnsafe(
            f"store {store_path}: {rel} is a symbolic link "
            "(links are never followed inside a store)"
        )


def _open_dir_at(dir_fd: int, name: str, store_path: Path, rel: str) -> int:
    """openat(dir_fd, name, O_DIRECTORY | O_NOFOLLOW); a link or non-folder: StoreUnsafe."""
    try:
        return os.open(name, _O_DIR, dir_fd=dir_fd)
    except OSError as e:
        if e.errno not in (errno.ELOOP, errno.ENOTDIR):
            raise
        st = _lstat_at(dir_fd, name)
        if st is None:
            raise FileNotFoundError(errno.ENOENT, os.strerror(errno.ENOENT), rel) from None
        if rel == DOTDIR and not stat_mod.S_ISLNK(st.st_mode):
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), rel) from None
        raise _unsafe(store_path, rel, st) from None


def _tmp_owner(name: str) -> int | None:
    """The PID in a tmp file name `<pid>.<random>` (None for other names)."""
    pid, dot, _ = name.partition(".")
    return int(pid) if dot and pid.isdigit() and 0 < len(pid) < 11 else None


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    except (OverflowError, OSError):
        return False
    return True


# A few chunk buffers for the whole process, and a counter for tmp names. (A thread pool
# and two fresh 8 MiB buffers per file made a 20 KiB file cost ~15 ms: the kernel zeroing
# pages, thread starts.)
_BUF_LOCK = threading.Lock()
_SPARE_BUFFERS: dict[int, list[bytearray]] = {}  # by size
_TMP_TOKEN = random_id(5)  # a forked child has another PID, so its names differ too
_TMP_COUNTER = itertools.count()
# A file is read, hashed and written in chunks this size, which stay in the CPU's cache
# from the read to the write; whole 8 MiB leaves went through memory three times (read
# into a buffer, hashed, written). On a tmpfs, 1 GB of camera files: 1.00-1.11x the
# leaves' speed, 0.86-0.96 of cp's (bench/pipeline.py); 2 MiB of buffers, not 16.
_CHUNK = 512 << 10
_RING = 4  # chunks in flight: one being read and hashed, the rest queued for the writers
# Spares kept of each size: enough chunks for a few pumps at once (import, the copy
# worker, a verify), and the peer client's two leaves for each of its two pulls.
_MAX_SPARE_BUFFERS = {_CHUNK: 4 * _RING, LEAF_SIZE: 4}


def _take_buffer(size: int = LEAF_SIZE) -> bytearray:
    """A spare buffer of `size` bytes (a whole leaf, for the peer client; a chunk, for
    _pump), or a new one."""
    with _BUF_LOCK:
        spare = _SPARE_BUFFERS.get(size)
        if spare:
            return spare.pop()
    return bytearray(size)


def _give_buffer(buf: bytearray) -> None:
    with _BUF_LOCK:
        spare = _SPARE_BUFFERS.setdefault(len(buf), [])
        if len(spare) < _MAX_SPARE_BUFFERS.get(len(buf), 0):
            spare.append(buf)


class _Writers:
    """One thread per tmp file writing the chunks it is given, in order, while the caller
    reads and hashes the next ones; a chunk's buffer comes back to `free` once every
    writer has written it. A write error stops that writer (its tmp gets nothing more)
    and waits in `errors` for the caller."""

    def __init__(self, tmps: dict[str, _TmpFile], nbufs: int) -> None:
        self.errors: dict[str, OSError] = {}
        self.free: queue.SimpleQueue[int] = queue.SimpleQueue()
        for k in range(1, nbufs):  # buffer 0 holds the caller's first chunk
            self.free.put(k)
        self._lock = threading.Lock()
        self._left: dict[int, int] = {}
        self._queues: dict[str, queue.SimpleQueue[tuple[int, memoryview] | None]] = {}
        self._threads: list[threading.Thread] = []
        for sid, tmp in tmps.items():
            q: queue.SimpleQueue[tuple[int, memoryview] | None] = queue.SimpleQueue()
            t = threading.Thread(
                target=self._run, args=(sid, tmp, q), name="dmedia-write", daemon=True
            )
            self._queues[sid] = q
            self._threads.append(t)
            t.start()

    def put(self, k: int, chunk: memoryview) -> None:
        """Hand buffer k's chunk to every writer (it comes back to `free` after)."""
        if not self._queues:
            self.free.put(k)
            return
        with self._lock:
            self._left[k] = len(self._queues)
        for q in self._queues.values():
            q.put((k, chunk))

    def _done(self, k: int) -> None:
        with self._lock:
            self._left[k] -= 1
            last = self._left[k] == 0
        if last:
            self.free.put(k)

    def _run(
        self, sid: str, tmp: _TmpFile, q: queue.SimpleQueue[tuple[int, memoryview] | None]
    ) -> None:
        while (item := q.get()) is not None:
            k, chunk = item
            if sid not in self.errors:
                try:
                    tmp.write(chunk)
                except OSError as e:
                    self.errors[sid] = e
                except BaseException as e:  # never leave the caller waiting for a buffer
                    self.errors[sid] = OSError(errno.EIO, f"write failed: {e!r}")
            self._done(k)

    def close(self) -> None:
        """Wait for every writer to finish what it was given."""
        for q in self._queues.values():
            q.put(None)
        for t in self._threads:
            t.join()


def _pump(
    f: Any, tmps: dict[str, _TmpFile], failed: dict[str, str] | None, progress: Progress | None
) -> Hasher:
    """Read f once; hash each chunk and write it to every tmp. A file of one chunk (most
    photos are not, most other files are) is hashed and written in this thread; a bigger
    one is written by a thread per tmp while this one reads and hashes the next chunks.

    A write error removes that tmp into `failed` (the file is still read to its end: the
    hash is the source's verification), or is raised when `failed` is None.
    """
    h = Hasher()
    bufs = [_take_buffer(_CHUNK)]
    views = [memoryview(bufs[0])]
    try:
        n = read_full(f, views[0])
        if n < _CHUNK:  # the whole file
            if n:
                chunk = views[0][:n]
                h.update(chunk)
                for sid, tmp in list(tmps.items()):
                    try:
                        tmp.write(chunk)
                    except OSError as e:
                        _write_failed(tmps, failed, sid, e)
                if progress:
                    progress(n)
            return h
        while len(bufs) < _RING:
            bufs.append(_take_buffer(_CHUNK))
            views.append(memoryview(bufs[-1]))
        _pump_chunks(f, tmps, failed, progress, h, views, n)
        return h
    finally:
        for b in bufs:
            _give_buffer(b)


def _pump_chunks(
    f: Any,
    tmps: dict[str, _TmpFile],
    failed: dict[str, str] | None,
    progress: Progress | None,
    h: Hasher,
    views: list[memoryview],
    n: int,
) -> None:
    """_pump for a file of more than one chunk; the first, n bytes, is in views[0]."""
    writers = _Writers(tmps, len(views))
    reported = 0
    k = 0
    try:
        while n:
            chunk = views[k][:n]
            h.update(chunk)
            writers.put(k, chunk)
            if progress and h.file_size - reported >= LEAF_SIZE:
                progress(h.file_size - reported)
                reported = h.file_size
            if writers.errors and failed is None:
                break  # the only destination failed: no point reading on
            if n < _CHUNK:
                break
            k = writers.free.get()
            n = read_full(f, views[k])
    finally:
        writers.close()  # before any buffer is reused or any tmp closed
    for sid, e in writers.errors.items():
        _write_failed(tmps, failed, sid, e)
    if progress and h.file_size > reported:
        progress(h.file_size - reported)


def _write_failed(
    tmps: dict[str, _TmpFile], failed: dict[str, str] | None, sid: str, e: OSError
) -> None:
    if failed is None:
        raise e
    failed[sid] = _errstr(e)
    tmps.pop(sid).discard()
