"""FileStore: layout, import, verify, quarantine, copy_to, crash safety — on real files."""

from __future__ import annotations

import errno
import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dmedia_tui import filestore as fs_mod
from dmedia_tui.filestore import (
    FileStore,
    FileStoreError,
    FoldersSeen,
    NotAFileStore,
    StoreUnsafe,
    VerifyStatus,
    WrongStore,
)
from dmedia_tui.protocol import LEAF_SIZE, InvalidID, hash_bytes, hash_path, random_id

BIG = 2 * LEAF_SIZE + 12345  # three leaves, the last one short


def data(n: int, seed: int = 0) -> bytes:
    """Deterministic, non-repeating-ish bytes."""
    block = bytes((i * 7 + seed) % 251 for i in range(4096))
    return (block * (n // 4096 + 1))[:n]


@pytest.fixture
def store(tmp_path: Path) -> FileStore:
    (tmp_path / "src").mkdir()
    return FileStore.create(tmp_path / "src")


def make_stores(tmp_path: Path, *names: str) -> list[FileStore]:
    out = []
    for name in names:
        (tmp_path / name).mkdir()
        out.append(FileStore.create(tmp_path / name))
    return out


def tamper(path: Path, change: Callable[[bytes], bytes]) -> bytes:
    """Rewrite a read-only canonical copy in place (as a failing drive would)."""
    os.chmod(path, 0o644)
    new = change(path.read_bytes())
    path.write_bytes(new)
    os.chmod(path, 0o444)
    return new


def listing(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*") if p.is_file())


# --- create / open ------------------------------------------------------------------


def test_create_makes_the_layout(tmp_path: Path) -> None:
    s = FileStore.create(tmp_path)
    dot = tmp_path / ".dmedia"
    for sub in ("files", "tmp", "corrupt"):
        assert (dot / sub).is_dir()
    doc = json.loads((dot / "store.json").read_text())
    assert doc["_id"] == s.id and len(s.id) == 24
    assert doc["type"] == "dmedia/store"
    assert doc["copies"] == 1 and s.copies == 1
    assert s.doc == doc
    assert s.path == tmp_path


def test_create_writes_the_given_doc(tmp_path: Path) -> None:
    sid = random_id()
    doc = {"_id": sid, "type": "dmedia/store", "time": 1.5, "copies": 2, "label": "usb"}
    s = FileStore.create(tmp_path, sid, doc)
    assert json.loads((tmp_path / ".dmedia/store.json").read_text()) == doc
    reopened = FileStore(tmp_path, expected_id=sid)
    assert (reopened.id, reopened.copies, reopened.doc) == (sid, 2, doc)
    assert s.id == sid


def test_create_refuses_an_existing_store(tmp_path: Path) -> None:
    first = FileStore.create(tmp_path)
    with pytest.raises(FileStoreError, match="already exists"):
        FileStore.create(tmp_path)
    assert FileStore(tmp_path).id == first.id


def test_create_refuses_a_missing_folder_or_a_file(tmp_path: Path) -> None:
    with pytest.raises(FileStoreError, match="not a directory"):
        FileStore.create(tmp_path / "typo")
    assert not (tmp_path / "typo").exists()
    (tmp_path / "f").write_text("x")
    with pytest.raises(FileStoreError, match="not a directory"):
        FileStore.create(tmp_path / "f")


def test_create_refuses_a_bad_store_id(tmp_path: Path) -> None:
    with pytest.raises(FileStoreError, match="invalid store ID"):
        FileStore.create(tmp_path, "../../etc")
    assert not (tmp_path / ".dmedia/store.json").exists()


def test_open_wrong_store(tmp_path: Path) -> None:
    FileStore.create(tmp_path)
    with pytest.raises(WrongStore):
        FileStore(tmp_path, expected_id=random_id())


@pytest.mark.parametrize(
    "content",
    [None, b"not json", b"[1, 2]", b'{"_id": "../../etc"}', b'{"_id": "AAAAAAAAAAAAAAAAAAAAAAAA"'],
)
def test_open_not_a_store(tmp_path: Path, content: bytes | None) -> None:
    if content is not None:
        (tmp_path / ".dmedia").mkdir()
        (tmp_path / ".dmedia/store.json").write_bytes(content)
    with pytest.raises(NotAFileStore) as e:
        FileStore(tmp_path)
    assert "\n" not in str(e.value)


def test_open_a_file_is_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotAFileStore):
        FileStore(tmp_path / "f")


@pytest.mark.parametrize("copies", [-1, "2", True, 1.5])
def test_invalid_copies_refused(tmp_path: Path, copies: object) -> None:
    doc = {"_id": random_id(), "type": "dmedia/store", "copies": copies}
    with pytest.raises(FileStoreError, match="copies"):
        FileStore.create(tmp_path, doc=doc)
    assert not (tmp_path / ".dmedia/store.json").exists()
    (tmp_path / ".dmedia").mkdir(exist_ok=True)
    (tmp_path / ".dmedia/store.json").write_text(json.dumps(doc))
    with pytest.raises(NotAFileStore, match="copies"):
        FileStore(tmp_path)


def test_statvfs_and_filesystem_id(store: FileStore) -> None:
    total, avail = store.statvfs()
    assert 0 < avail <= total
    assert store.bytes_total == total
    assert store.filesystem_id == os.stat(store.path).st_dev


# --- IDs are validated before they become paths ---------------------------------------


@pytest.mark.parametrize("bad", ["../../etc", "../" * 16, "a" * 48, "", None])
def test_ids_validated_before_paths(store: FileStore, bad: object) -> None:
    for op in (
        store.file_path,
        store.corrupt_path,
        store.stat,
        store.exists,
        store.verify,
        store.move_to_corrupt,
        lambda i: store.copy_to(i, []),
    ):
        with pytest.raises(InvalidID):
            op(bad)  # type: ignore[arg-type]


# --- import -------------------------------------------------------------------------


def test_import_new_file(store: FileStore, tmp_path: Path) -> None:
    src = tmp_path / "MVI_0001.MOV"
    src.write_bytes(data(BIG))
    seen: list[int] = []
    r = store.import_file(src, seen.append)
    assert r.new
    assert r.content_hash == hash_path(src)
    fid = r.content_hash.id
    dst = store.path / ".dmedia" / "files" / fid[:2] / fid[2:]
    assert store.file_path(fid) == dst
    assert dst.read_bytes() == src.read_bytes()
    assert stat.S_IMODE(dst.stat().st_mode) == 0o444
    assert r.mtime == int(dst.stat().st_mtime) == store.stat(fid).mtime
    assert store.stat(fid).size == BIG
    assert sum(seen) == BIG and len(seen) == 3
    assert listing(store.path / ".dmedia") == [f"files/{fid[:2]}/{fid[2:]}", "store.json"]


def test_import_duplicate(store: FileStore, tmp_path: Path) -> None:
    a = tmp_path / "a.jpg"
    b = tmp_path / "b.jpg"
    a.write_bytes(data(5000))
    b.write_bytes(data(5000))
    first = store.import_file(a)
    ino = store.file_path(first.content_hash.id).stat().st_ino
    second = store.import_file(b)
    assert (first.new, second.new) == (True, False)
    assert second.content_hash == first.content_hash
    assert second.mtime == first.mtime
    assert store.file_path(first.content_hash.id).stat().st_ino == ino
    assert [s.id for s in store] == [first.content_hash.id]
    assert list(store.tmp_dir.iterdir()) == []


def test_import_bytes(store: FileStore) -> None:
    r = store.import_bytes(b"hello")
    assert r.new and r.content_hash == hash_bytes(b"hello")
    assert store.file_path(r.content_hash.id).read_bytes() == b"hello"
    assert not store.import_bytes(b"hello").new


def test_import_refuses_empty_files_and_folders(store: FileStore, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    with pytest.raises(FileStoreError, match="empty file"):
        store.import_file(empty)
    with pytest.raises(FileStoreError, match="empty file"):
        store.import_bytes(b"")
    with pytest.raises(FileStoreError, match="not a regular file"):
        store.import_file(tmp_path)
    with pytest.raises(FileNotFoundError):
        store.import_file(tmp_path / "nope")
    assert list(store) == []
    assert list(store.tmp_dir.iterdir()) == []


# --- crash safety ---------------------------------------------------------------------


def fail_writes_after(monkeypatch: pytest.MonkeyPatch, limit: int, under: Path) -> None:
    """os.write raises ENOSPC once `limit` bytes went to files under `under`."""
    real = os.write
    done = {"n": 0}

    def write(fd: int, buf: bytes) -> int:
        if os.readlink(f"/proc/self/fd/{fd}").startswith(str(under)):
            if done["n"] + len(buf) > limit:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            done["n"] += len(buf)
        return real(fd, buf)

    monkeypatch.setattr(os, "write", write)


def test_failed_write_midway_leaves_nothing(
    store: FileStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "big"
    src.write_bytes(data(BIG))
    fail_writes_after(monkeypatch, LEAF_SIZE + 100, store.path)
    with pytest.raises(OSError) as e:
        store.import_file(src)
    assert e.value.errno == errno.ENOSPC
    monkeypatch.undo()
    assert list(FileStore(store.path)) == []
    assert listing(store.path / ".dmedia") == ["store.json"]


def test_crash_midway_leaves_no_canonical_file(store: FileStore, tmp_path: Path) -> None:
    """A process killed mid-import leaves a tmp file only; reopening purges it."""
    src = tmp_path / "big"
    src.write_bytes(data(BIG))
    child = textwrap.dedent(
        f"""
        import os
        from dmedia_tui.filestore import FileStore
        real = os.write
        def write(fd, buf):
            if os.readlink(f"/proc/self/fd/{{fd}}").startswith({str(store.tmp_dir)!r}):
                real(fd, bytes(buf[:1000]))
                os._exit(9)  # the power goes out mid-write
            return real(fd, buf)
        os.write = write
        FileStore({str(store.path)!r}).import_file({str(src)!r})
        """
    )
    proc = subprocess.run([sys.executable, "-c", child], capture_output=True)
    assert proc.returncode == 9, proc.stderr.decode()
    leftovers = list(store.tmp_dir.iterdir())
    assert len(leftovers) == 1 and leftovers[0].stat().st_size == 1000
    reopened = FileStore(store.path)
    assert len(list(store.tmp_dir.iterdir())) == 1  # opening writes nothing...
    assert reopened.purge_tmp() == 1  # ...the writers purge (the child is dead)
    assert list(store.tmp_dir.iterdir()) == []
    assert list(reopened) == []
    assert listing(store.path / ".dmedia") == ["store.json"]


def test_purge_tmp_keeps_live_writes(store: FileStore) -> None:
    (store.tmp_dir / "stale1").write_bytes(b"partial")
    (store.tmp_dir / "stale2").write_bytes(b"")
    live = fs_mod._TmpFile(store)  # a write in progress: holds its flock
    try:
        assert store.purge_tmp() == 2  # stale tmp files only
        assert [p.name for p in store.tmp_dir.iterdir()] == [live.path.name]
        assert store.purge_tmp() == 0
    finally:
        live.discard()
    assert list(store.tmp_dir.iterdir()) == []
    (store.tmp_dir / "stale3").write_bytes(b"x")
    assert store.purge_tmp() == 1


# --- verify -------------------------------------------------------------------------


@pytest.fixture
def imported(store: FileStore) -> str:
    return store.import_bytes(data(BIG)).content_hash.id


def test_verify_ok(store: FileStore, imported: str) -> None:
    seen: list[int] = []
    r = store.verify(imported, seen.append)
    assert r.status == VerifyStatus.OK == "ok"
    assert r.mtime == store.stat(imported).mtime
    assert r.content_hash == hash_bytes(data(BIG))
    assert r.quarantine is None and r.error is None
    assert sum(seen) == BIG


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(
            lambda b: b[:LEAF_SIZE] + bytes([b[LEAF_SIZE] ^ 1]) + b[LEAF_SIZE + 1 :], id="bit-flip"
        ),
        pytest.param(lambda b: b[:-1], id="truncated"),
        pytest.param(lambda b: b[:LEAF_SIZE], id="truncated-at-leaf"),
        pytest.param(lambda b: b + b"\x00", id="appended-byte"),
        pytest.param(lambda b: b"", id="emptied"),
    ],
)
def test_verify_corrupt_is_quarantined_never_deleted(
    store: FileStore, imported: str, change: Callable[[bytes], bytes]
) -> None:
    bad = tamper(store.file_path(imported), change)
    r = store.verify(imported)
    assert r.status == VerifyStatus.CORRUPT
    assert r.quarantine == store.corrupt_path(imported)
    assert r.quarantine.read_bytes() == bad
    assert not store.file_path(imported).exists()
    assert [s.id for s in store] == []
    if bad:
        assert r.content_hash is not None and r.content_hash.id != imported


def test_a_second_quarantine_keeps_both(store: FileStore, imported: str) -> None:
    tamper(store.file_path(imported), lambda b: b[:-1])
    first = store.verify(imported).quarantine
    store.import_bytes(data(BIG))
    tamper(store.file_path(imported), lambda b: b[:-2])
    second = store.verify(imported).quarantine
    assert first is not None and second is not None and first != second
    assert second.name == imported + ".1"
    assert first.stat().st_size == BIG - 1 and second.stat().st_size == BIG - 2


def test_verify_missing(store: FileStore, imported: str) -> None:
    os.unlink(store.file_path(imported))
    r = store.verify(imported)
    assert r.status == VerifyStatus.MISSING
    assert listing(store.corrupt_dir) == []


def test_verify_unreadable_on_open(
    store: FileStore, imported: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EIO (a failing drive cannot be produced here) is retried later, never corrupt."""

    real_open = os.open

    def eio(path, *a: object, **k: object) -> int:
        if path == imported[2:]:
            raise OSError(errno.EIO, "Input/output error")
        return real_open(path, *a, **k)

    monkeypatch.setattr(fs_mod.os, "open", eio)
    r = store.verify(imported)
    assert r.status == VerifyStatus.UNREADABLE
    assert r.error == "Input/output error (EIO)"
    monkeypatch.undo()
    assert store.exists(imported) and listing(store.corrupt_dir) == []


def test_verify_unreadable_midway(
    store: FileStore, imported: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An I/O error after the first leaf was read: nothing moved."""
    real = fs_mod.hash_file

    def failing(f, progress=None, **kw):  # type: ignore[no-untyped-def]
        def p(n: int) -> None:
            raise OSError(errno.EIO, "Input/output error")

        return real(f, p, **kw)

    monkeypatch.setattr(fs_mod, "hash_file", failing)
    assert store.verify(imported).status == VerifyStatus.UNREADABLE
    monkeypatch.undo()
    assert store.verify(imported).status == VerifyStatus.OK


def test_a_directory_in_place_of_a_copy_is_missing_and_set_aside(
    store: FileStore, imported: str
) -> None:
    """Not a copy (MISSING, with the reason), moved out of the copy's way, never deleted."""
    path = store.file_path(imported)
    os.unlink(path)
    path.mkdir()
    (path / "inside").write_bytes(b"kept")
    r = store.verify(imported)
    assert r.status == VerifyStatus.MISSING and "folder" in (r.error or "")
    assert not path.exists() and r.quarantine is not None
    assert (r.quarantine / "inside").read_bytes() == b"kept"


# --- iteration ----------------------------------------------------------------------


def test_iteration_skips_junk(store: FileStore) -> None:
    ids = sorted(store.import_bytes(data(100 + i, seed=i)).content_hash.id for i in range(5))
    files = store.files_dir
    (files / "README.txt").write_text("junk")
    (files / "ZZ").mkdir()
    (files / "ZZ" / ("A" * 46)).write_text("bad prefix: Z is not in the alphabet")
    (files / ids[0][:2] / "short").write_text("junk")
    (files / ids[0][:2] / ids[0][2:].lower()).write_text("lower case")
    (files / "AA").mkdir(exist_ok=True)
    (files / "AA" / ("B" * 46)).mkdir()  # a directory with a valid ID name
    assert [s.id for s in store] == ids
    assert all(s.size == store.stat(s.id).size for s in store)
    assert store.count() == len(ids)  # the same copies, counted without a stat each


# --- copy_to ------------------------------------------------------------------------


def test_copy_to_two_stores(store: FileStore, imported: str, tmp_path: Path) -> None:
    a, b = make_stores(tmp_path, "a", "b")
    seen: list[int] = []
    r = store.copy_to(imported, [a, b], seen.append)
    assert r.status == VerifyStatus.OK
    assert r.failed == {}
    assert set(r.written) == {a.id, b.id}
    for dst in (a, b):
        path = dst.file_path(imported)
        assert path.read_bytes() == data(BIG)
        assert stat.S_IMODE(path.stat().st_mode) == 0o444
        assert r.written[dst.id] == dst.stat(imported).mtime
        assert list(dst.tmp_dir.iterdir()) == []
        assert dst.verify(imported).status == VerifyStatus.OK
    assert r.source.content_hash == hash_bytes(data(BIG))
    assert sum(seen) == BIG


_CHUNK = fs_mod._CHUNK


@pytest.mark.parametrize(
    "size",
    [
        1,
        _CHUNK - 1,
        _CHUNK,  # one whole chunk: the in-thread path reads a 2nd time and finds EOF
        _CHUNK + 1,  # the writer threads, a 1-byte last chunk
        3 * _CHUNK,
        LEAF_SIZE - 1,
        LEAF_SIZE,
        LEAF_SIZE + 1,  # a chunk straddles no leaf, a 1-byte 2nd leaf
        LEAF_SIZE + _CHUNK // 2,
    ],
    ids=lambda n: f"{n}B",
)
def test_import_and_copy_at_every_chunk_and_leaf_boundary(tmp_path: Path, size: int) -> None:
    """The pump cuts files into chunks and the hasher into leaves: at and around each
    boundary, the import and a copy to two stores write the same bytes, under the ID of
    those bytes, with progress adding up to the size and nothing left in tmp/."""
    src, a, b = make_stores(tmp_path, "src", "a", "b")
    content = data(size, seed=size % 251)
    path = tmp_path / "photo.bin"
    path.write_bytes(content)
    seen: list[int] = []
    ((_, r),) = src.import_files([path], seen.append)
    assert not isinstance(r, Exception)
    assert r.content_hash == hash_bytes(content)
    assert sum(seen) == size
    file_id = r.content_hash.id
    seen.clear()
    c = src.copy_to(file_id, [a, b], seen.append)
    assert c.status == VerifyStatus.OK and c.failed == {}
    assert sum(seen) == size
    for st in (src, a, b):
        assert st.file_path(file_id).read_bytes() == content
        assert list(st.tmp_dir.iterdir()) == []


def test_a_copy_stopped_mid_file_leaves_no_tmp_and_no_writer(
    store: FileStore, imported: str, tmp_path: Path
) -> None:
    """Progress raising (the engine stopping) after the first leaf of a three-leaf file:
    the exception reaches the caller once the writer threads have finished, and both
    destinations' partial copies are gone."""
    import threading

    a, b = make_stores(tmp_path, "a", "b")

    class Stop(Exception):
        pass

    def progress(n: int) -> None:
        raise Stop

    with pytest.raises(Stop):
        store.copy_to(imported, [a, b], progress)
    assert [t for t in threading.enumerate() if t.name == "dmedia-write"] == []
    for dst in (a, b):
        assert list(dst.tmp_dir.iterdir()) == []
        assert not dst.file_path(imported).exists()


def test_copy_to_leaves_an_existing_copy_alone(
    store: FileStore, imported: str, tmp_path: Path
) -> None:
    (a,) = make_stores(tmp_path, "a")
    a.import_bytes(data(BIG))
    ino = a.file_path(imported).stat().st_ino
    r = store.copy_to(imported, [a])
    assert r.written == {a.id: a.stat(imported).mtime}
    assert a.file_path(imported).stat().st_ino == ino


def test_copy_from_corrupt_source_writes_nothing(
    store: FileStore, imported: str, tmp_path: Path
) -> None:
    a, b = make_stores(tmp_path, "a", "b")
    bad = tamper(store.file_path(imported), lambda x: x[:-5] + b"XXXXX")
    r = store.copy_to(imported, [a, b])
    assert r.status == VerifyStatus.CORRUPT
    assert r.written == {} and r.failed == {}
    assert r.source.quarantine == store.corrupt_path(imported)
    assert store.corrupt_path(imported).read_bytes() == bad
    for dst in (a, b):
        assert listing(dst.path / ".dmedia") == ["store.json"]


def test_copy_from_missing_or_unreadable_source(
    store: FileStore, imported: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (a,) = make_stores(tmp_path, "a")
    real = fs_mod.read_full
    calls = {"n": 0}

    def eio_on_second_leaf(f, view):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.EIO, "Input/output error")
        return real(f, view)

    monkeypatch.setattr(fs_mod, "read_full", eio_on_second_leaf)
    r = store.copy_to(imported, [a])
    assert r.status == VerifyStatus.UNREADABLE
    assert r.written == {}
    monkeypatch.undo()
    assert store.exists(imported) and listing(store.corrupt_dir) == []
    assert listing(a.path / ".dmedia") == ["store.json"]

    os.unlink(store.file_path(imported))
    r = store.copy_to(imported, [a])
    assert r.status == VerifyStatus.MISSING and r.written == {}


def test_copy_dst_failure_is_isolated(
    store: FileStore, imported: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    a, b, c = make_stores(tmp_path, "a", "b", "c")
    fail_writes_after(monkeypatch, LEAF_SIZE, b.path)
    r = store.copy_to(imported, [a, b, c])
    monkeypatch.undo()
    assert r.status == VerifyStatus.OK
    assert set(r.written) == {a.id, c.id}
    assert r.failed == {b.id: "No space left on device (ENOSPC)"}
    assert listing(b.path / ".dmedia") == ["store.json"]
    assert a.verify(imported).status == c.verify(imported).status == VerifyStatus.OK


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB filesystem (needs root and mount): ENOSPC for real."""
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=4M", "tmpfs", str(mnt)],
            check=True,
            capture_output=True,
        )
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=False)


def test_copy_to_a_full_filesystem(
    store: FileStore, imported: str, tmp_path: Path, tiny_tmpfs: Path
) -> None:
    (a,) = make_stores(tmp_path, "a")
    full = FileStore.create(tiny_tmpfs)
    r = store.copy_to(imported, [full, a])
    assert r.status == VerifyStatus.OK
    assert r.failed == {full.id: "No space left on device (ENOSPC)"}
    assert set(r.written) == {a.id}
    assert listing(tiny_tmpfs / ".dmedia") == ["store.json"]
    assert FileStore(tiny_tmpfs).bytes_avail > LEAF_SIZE // 4  # the partial write is gone


def test_move_to_corrupt_missing(store: FileStore) -> None:
    with pytest.raises(FileNotFoundError):
        store.move_to_corrupt(hash_bytes(b"nope").id)


def test_source_read_error_midway_leaves_nothing(
    store: FileStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = tmp_path / "card.MOV"
    src.write_bytes(data(BIG))
    real = fs_mod.read_full
    calls = {"n": 0}

    def eio_on_second_leaf(f, view):  # type: ignore[no-untyped-def]
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError(errno.EIO, "Input/output error")
        return real(f, view)

    monkeypatch.setattr(fs_mod, "read_full", eio_on_second_leaf)
    with pytest.raises(OSError):
        store.import_file(src)
    assert listing(store.path / ".dmedia") == ["store.json"]


def test_import_files_in_order_with_per_file_errors(store: FileStore, tmp_path: Path) -> None:
    card = tmp_path / "card"
    card.mkdir()
    names = ["a.MOV", "b.JPG", "dup.MOV", "empty.JPG", "missing.JPG", "sub", "c.CR2"]
    (card / "a.MOV").write_bytes(data(BIG))
    (card / "b.JPG").write_bytes(data(5000, seed=1))
    (card / "dup.MOV").write_bytes(data(BIG))
    (card / "empty.JPG").write_bytes(b"")
    (card / "sub").mkdir()
    (card / "c.CR2").write_bytes(data(LEAF_SIZE, seed=2))
    seen: list[int] = []
    out = list(store.import_files((card / n for n in names), seen.append))
    assert [src.name for src, _ in out] == names
    res = dict((src.name, r) for src, r in out)
    assert res["a.MOV"].new and res["b.JPG"].new and res["c.CR2"].new  # type: ignore[union-attr]
    assert not res["dup.MOV"].new  # type: ignore[union-attr]
    assert res["dup.MOV"].content_hash == res["a.MOV"].content_hash  # type: ignore[union-attr]
    assert isinstance(res["empty.JPG"], FileStoreError)
    assert isinstance(res["missing.JPG"], FileNotFoundError)
    assert isinstance(res["sub"], FileStoreError)
    ids = sorted(r.content_hash.id for r in res.values() if not isinstance(r, Exception))
    assert [s.id for s in store] == sorted(set(ids))
    for file_id in set(ids):
        assert store.verify(file_id).status == VerifyStatus.OK
        assert stat.S_IMODE(store.file_path(file_id).stat().st_mode) == 0o444
    assert sum(seen) == 2 * BIG + 5000 + LEAF_SIZE
    assert list(store.tmp_dir.iterdir()) == []


def test_import_files_stopped_early_leaves_nothing_half_done(
    store: FileStore, tmp_path: Path
) -> None:
    srcs = []
    for i in range(3):
        srcs.append(tmp_path / f"f{i}")
        srcs[-1].write_bytes(data(1000 + i))
    gen = store.import_files(srcs)
    first_src, first = next(gen)
    gen.close()  # the batch is committed whole before its first result: nothing in tmp/
    assert first_src == srcs[0] and first.new  # type: ignore[union-attr]
    assert len(list(store)) == 3
    assert list(store.tmp_dir.iterdir()) == []


def test_an_import_under_a_low_fd_limit_runs_smaller_batches_not_out_of_fds(
    tmp_path: Path,
) -> None:
    """Each staged file holds an fd until its batch is committed: under `ulimit -n 200`
    (a real limit, in a child process) 400 files are imported in batches of 36, every one
    of them, none failing with EMFILE; with no limit a batch is IMPORT_BATCH_FILES."""
    (tmp_path / "store").mkdir()
    store = FileStore.create(tmp_path / "store", doc=None)
    card = tmp_path / "card"
    card.mkdir()
    for i in range(400):
        (card / f"{i:03d}.JPG").write_bytes(data(100 + i, seed=i))
    script = textwrap.dedent(
        f"""
        import resource, sys
        from pathlib import Path
        from dmedia_tui import filestore
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (200, hard))
        store = filestore.FileStore({str(store.path)!r})
        srcs = sorted(Path({str(card)!r}).iterdir())
        sizes, errors = [], []
        for batch in store.import_batches(srcs):
            sizes.append(len(batch))
            errors += [str(r) for _, r in batch if isinstance(r, Exception)]
        print(filestore.import_batch_files(), sizes, errors)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout.split(" ", 1)
    assert out[0] == "36"  # (200 - 128) // 2
    assert out[1].strip() == f"{[36] * 11 + [4]} []"
    assert len(list(store)) == 400
    assert list(store.tmp_dir.iterdir()) == []


def test_import_batch_files_without_a_limit_is_the_full_batch(monkeypatch) -> None:
    monkeypatch.setattr(
        fs_mod.resource, "getrlimit", lambda _: (fs_mod.resource.RLIM_INFINITY,) * 2
    )
    assert fs_mod.import_batch_files() == fs_mod.IMPORT_BATCH_FILES == 512
    monkeypatch.setattr(fs_mod.resource, "getrlimit", lambda _: (20, 4096))
    assert fs_mod.import_batch_files() == 8  # a floor: never a batch of nothing


def test_an_unreadable_store_json_is_not_taken_for_no_store(tmp_path, monkeypatch):

    import dmedia_tui.filestore as fsmod

    fs = FileStore.create(tmp_path, doc=None)
    real = os.open

    def eio(path, *a, **k):
        if path == "store.json":
            raise OSError(5, "Input/output error")
        return real(path, *a, **k)

    # An EIO cannot be made on a real disk here; the store.json open is the one patched.
    monkeypatch.setattr(fsmod.os, "open", eio)
    with pytest.raises(fsmod.StoreUnreadable, match="Input/output error"):
        FileStore(tmp_path)
    monkeypatch.undo()
    assert FileStore(tmp_path).id == fs.id


def test_still_here_until_the_store_folder_is_gone(tmp_path):
    fs = FileStore.create(tmp_path)
    assert fs.still_here()
    (fs.path / ".dmedia" / "store.json").rename(fs.path / "moved.json")
    assert not fs.still_here()


def test_a_good_copy_is_verified_and_copied_without_base32(
    store: FileStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The root digest is compared with the expected ID as a number (no base32 encoding,
    pure Python: ~10% of a small file's verify or copy); a bad copy still gets its real ID."""
    import dmedia_tui.protocol as P

    small = store.import_bytes(data(20_000, seed=3)).content_hash.id
    real = P.b32encode
    (dst,) = make_stores(tmp_path, "dst")

    def refuse(_data: bytes) -> str:
        raise AssertionError("base32-encoded a digest that matched")

    monkeypatch.setattr(P, "b32encode", refuse)
    r = store.verify(small)
    assert r.status == VerifyStatus.OK and r.content_hash is not None
    assert (r.content_hash.id, r.content_hash.file_size) == (small, 20_000)
    c = store.copy_to(small, [dst])
    assert c.status == VerifyStatus.OK and set(c.written) == {dst.id}
    assert c.source.content_hash is not None and c.source.content_hash.id == small
    monkeypatch.setattr(P, "b32encode", real)
    rotten = data(20_000, seed=3)[:-1] + b"!"
    path = store.file_path(small)
    path.chmod(0o644)
    path.write_bytes(rotten)
    bad = store.verify(small)
    assert bad.status == VerifyStatus.CORRUPT and bad.content_hash is not None
    assert bad.content_hash.id == P.hash_bytes(rotten).id != small


# --- folder stamps (what a store's recovery lists) -------------------------------------


def test_a_folder_stamp_moves_with_every_entry_added_removed_or_renamed(
    store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any change of a files/XX folder's entries moves its stamp, even one whose mtime is
    set back afterwards (as `cp -a` or `rsync -a` do): the ctime cannot be. Reading and
    verifying copies move nothing."""
    monkeypatch.setattr(fs_mod, "RACY_NS", 0)
    fid = store.import_bytes(data(5000)).content_hash.id
    folder = store.files_dir / fid[:2]
    before = store.folder_stamps()
    assert set(before) == {fid[:2]} and before[fid[:2]]
    assert store.verify(fid).status == VerifyStatus.OK
    assert store.folder_stamps() == before
    st = folder.stat()
    (folder / ("Z" * 46)).write_bytes(b"x")  # a name a tool put there
    os.utime(folder, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime set back
    assert folder.stat().st_mtime_ns == st.st_mtime_ns
    added = store.folder_stamps()
    assert added[fid[:2]] != before[fid[:2]]
    (folder / ("Z" * 46)).rename(folder / ("Y" * 46))
    renamed = store.folder_stamps()
    assert renamed[fid[:2]] not in (before[fid[:2]], added[fid[:2]])
    (folder / ("Y" * 46)).unlink()
    assert store.folder_stamps()[fid[:2]] not in (before[fid[:2]], added[fid[:2]], renamed[fid[:2]])


def test_a_folder_changed_within_the_racy_window_is_saved_without_its_stamp(
    store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Within RACY_NS of a change (by the filesystem's clock: the record's own mtime),
    another change may leave the ctime as it is, so the stamp is not kept; this machine's
    clock, even a year ahead, does not count."""
    fid = store.import_bytes(data(5000)).content_hash.id
    now = store.folder_stamps()
    assert now[fid[:2]]  # a real stamp
    real = time.time_ns
    monkeypatch.setattr(time, "time_ns", lambda: real() + 365 * 86400 * 10**9)
    store.save_folders_seen(FoldersSeen(0, 1, now))
    seen = store.folders_seen()
    assert seen is not None and seen.stamps == {fid[:2]: ""}
    assert seen.changed(now) == [fid[:2]]


def test_a_settled_folder_keeps_its_stamp(
    store: FileStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    fid = store.import_bytes(data(5000)).content_hash.id
    monkeypatch.setattr(fs_mod, "RACY_NS", 0)  # as if the change were 2 s old
    now = store.folder_stamps()
    store.save_folders_seen(FoldersSeen(0, 1, now))
    seen = store.folders_seen()
    assert seen is not None and seen.stamps == now and seen.changed(now) == []
    assert now[fid[:2]]


def test_ids_in_lists_only_the_folders_asked_for(store: FileStore) -> None:
    ids = {store.import_bytes(data(3000 + i, seed=i)).content_hash.id for i in range(12)}
    some = sorted({i[:2] for i in ids})[:3]
    assert set(store.ids_in(some)) == {i for i in ids if i[:2] in some}
    assert set(store.ids_in([])) == set()
    assert set(store.ids_in(["ZZ", "3"])) == set()  # absent, or not a folder name


def test_folders_seen_round_trips_and_is_none_when_absent(store: FileStore) -> None:
    assert store.folders_seen() is None
    seen = FoldersSeen(123, 4, {"AB": "1:2", "CD": ""})
    store.save_folders_seen(seen)
    assert store.folders_seen() == seen
    assert sorted(p.name for p in (store.path / ".dmedia").iterdir()) == sorted(
        ["corrupt", "files", "folders-seen.json", "store.json", "tmp"]
    )


def test_failure_marks_written_at_once_leave_a_whole_store_json(store: FileStore) -> None:
    """A verify marking the drive failing while the user acknowledges it: both wrote
    store.json through one temp name, so a rename could put the other's half-written file
    in its place (or fail: the temp file was gone), and an invalid store.json takes the
    store offline."""
    import threading

    start = threading.Barrier(6)
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        start.wait()
        for k in range(40):
            try:
                store.set_failure({"reason": "corrupt", "count": k} if (i + k) % 2 else None)
            except BaseException as e:  # noqa: BLE001 - every writer's error is the failure
                errors.append(e)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert FileStore(store.path).id == store.id  # a whole, valid store.json
    assert sorted(p.name for p in (store.path / ".dmedia").iterdir()) == sorted(
        ["corrupt", "files", "store.json", "tmp"]
    )
    assert list((store.path / ".dmedia" / "tmp").iterdir()) == []  # every temp renamed


def test_a_failure_mark_never_writes_through_a_linked_tmp(store: FileStore, tmp_path: Path) -> None:
    """store.json's temp file goes in tmp/, opened without following links: a tmp/ that
    became a link after the store was opened gets nothing, and store.json stays as it was."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    before = (store.path / ".dmedia" / "store.json").read_bytes()
    (store.path / ".dmedia" / "tmp").rmdir()
    (store.path / ".dmedia" / "tmp").symlink_to(elsewhere)
    with pytest.raises(StoreUnsafe):
        store.set_failure({"reason": "corrupt", "count": 1})
    assert list(elsewhere.iterdir()) == []
    assert (store.path / ".dmedia" / "store.json").read_bytes() == before


def test_a_failure_mark_is_written_when_tmp_has_gone(store: FileStore) -> None:
    """store.json's temp file goes in tmp/: a store whose tmp/ was removed (by hand, by a
    cleaner) still takes its failure mark, and has its tmp/ back."""
    (store.path / ".dmedia" / "tmp").rmdir()
    store.set_failure({"reason": "corrupt", "count": 1})
    assert FileStore(store.path).doc["failure"] == {"reason": "corrupt", "count": 1}
    assert list((store.path / ".dmedia" / "tmp").iterdir()) == []
