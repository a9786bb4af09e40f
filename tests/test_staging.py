"""An import stages big files on worker threads (FileStore._staged, issue 13): two camera
files at once keep both cores busy. These tests prove that nothing else changes: the
results come back in the sources' order and are the ones a one-at-a-time import gives
(new, duplicate, empty, missing, a folder), the progress adds up, a caller that stops
early leaves nothing in tmp/, and a rotational disk keeps the one-at-a-time path.

The caller says which devices allow it (`side_by_side`; metastore asks
drives.rotational, checked here against the kernel's answer for this machine's root
filesystem); these tests pass their own, and a small PARALLEL_FROM.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any

import pytest

from dmedia_tui import drives
from dmedia_tui import filestore as fs_mod
from dmedia_tui.filestore import FileStore, FileStoreError, VerifyStatus
from dmedia_tui.protocol import LEAF_SIZE

BIG = 64 << 10  # PARALLEL_FROM in these tests


def data(n: int, seed: int = 0) -> bytes:
    block = bytes((i * 7 + seed) % 251 for i in range(4096))
    return (block * (n // 4096 + 1))[:n]


@pytest.fixture
def threads_seen(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """source name -> the thread that staged it."""
    seen: dict[str, str] = {}
    real = FileStore._stage_opened

    def spy(self: FileStore, f: Any, st: os.stat_result, *args: Any) -> Any:
        seen[Path(f.name).name] = threading.current_thread().name
        return real(self, f, st, *args)

    monkeypatch.setattr(FileStore, "_stage_opened", spy)
    monkeypatch.setattr(fs_mod, "PARALLEL_FROM", BIG)
    return seen


def make_card(folder: Path) -> list[Path]:
    """Big and small files, a duplicate of a big one, an empty file, a missing one and a
    folder, in an order that puts small files right behind big ones."""
    folder.mkdir()
    files: dict[str, bytes | None] = {
        "a.MOV": data(2 * LEAF_SIZE + 777, 1),
        "b.JPG": data(5000, 2),
        "c.MOV": data(BIG, 3),  # exactly PARALLEL_FROM
        "d.JPG": data(BIG - 1, 4),  # one byte short of it
        "dup.MOV": data(2 * LEAF_SIZE + 777, 1),
        "empty.JPG": b"",
        "missing.JPG": None,
        "e.CR2": data(3 * BIG + 5, 5),
        "f.JPG": data(10, 6),
    }
    for name, content in files.items():
        if content is not None:
            (folder / name).write_bytes(content)
    (folder / "sub").mkdir()
    return [folder / n for n in [*files, "sub"]]


def summary(results: list[tuple[Path, Any]]) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = []
    for src, r in results:
        if isinstance(r, Exception):
            out.append((src.name, type(r).__name__))
        else:
            out.append((src.name, (r.content_hash.id, r.content_hash.file_size, r.new)))
    return out


def test_big_files_are_staged_beside_the_next_and_come_back_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads_seen: dict[str, str]
) -> None:
    srcs = make_card(tmp_path / "card")
    (tmp_path / "one").mkdir()
    one_at_a_time = FileStore.create(tmp_path / "one")
    want = summary(list(one_at_a_time.import_files(srcs)))  # no side_by_side: in order
    assert set(threads_seen.values()) == {threading.current_thread().name}
    (tmp_path / "refused").mkdir()
    refused = FileStore.create(tmp_path / "refused")
    assert summary(list(refused.import_files(srcs, side_by_side=lambda dev: False))) == want
    assert set(threads_seen.values()) == {threading.current_thread().name}

    threads_seen.clear()
    (tmp_path / "two").mkdir()
    store = FileStore.create(tmp_path / "two")
    seen: list[int] = []
    got = summary(list(store.import_files(srcs, seen.append, lambda dev: True)))

    assert got == want
    assert dict(got)["empty.JPG"] == "EmptyFile" and dict(got)["sub"] == FileStoreError.__name__
    assert dict(got)["missing.JPG"] == "FileNotFoundError"
    assert dict(got)["dup.MOV"][2] is False  # the same content as a.MOV: recorded once
    pooled = {n for n, t in threads_seen.items() if t.startswith("dmedia-stage")}
    assert pooled == {"a.MOV", "c.MOV", "dup.MOV", "e.CR2"}  # PARALLEL_FROM and up
    here = {n for n, t in threads_seen.items() if n not in pooled}
    assert here == {"b.JPG", "d.JPG", "f.JPG"}
    assert sum(seen) == sum(p.stat().st_size for p in srcs if p.is_file())
    assert sorted(s.id for s in store) == sorted(s.id for s in one_at_a_time)
    for s in store:
        assert store.verify(s.id).status == VerifyStatus.OK
    assert list(store.tmp_dir.iterdir()) == []


def test_a_caller_that_stops_early_leaves_nothing_in_tmp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads_seen: dict[str, str]
) -> None:
    """Stopped after its first result, with files still in the pool and staged ahead:
    every staged file is committed whole (its batch) or removed from tmp/."""
    monkeypatch.setattr(fs_mod, "IMPORT_BATCH_BYTES", BIG)  # a batch a file or so
    card = tmp_path / "card"
    card.mkdir()
    srcs = []
    for i in range(12):
        srcs.append(card / f"{i:02d}.MOV")
        srcs[-1].write_bytes(data(BIG * (1 + i % 3), i))
    (tmp_path / "s").mkdir()
    store = FileStore.create(tmp_path / "s")
    gen = store.import_files(srcs, side_by_side=lambda dev: True)
    first, result = next(gen)
    gen.close()
    assert first == srcs[0] and not isinstance(result, Exception) and result.new
    assert list(store.tmp_dir.iterdir()) == []
    kept = list(store)
    assert 1 <= len(kept) < len(srcs)  # cut short mid-way, with files staged ahead
    for s in kept:  # whatever got in is whole
        assert store.verify(s.id).status == VerifyStatus.OK
    assert any(t.startswith("dmedia-stage") for t in threads_seen.values())


def test_rotational_is_the_kernels_answer() -> None:
    """For this machine's root filesystem, its drive's queue/rotational (a partition's
    drive's); a filesystem with no block device (proc) counts as not rotational."""
    dev = os.stat("/").st_dev
    block = Path(f"/sys/dev/block/{os.major(dev)}:{os.minor(dev)}")
    if not block.exists():
        source = next((m.source for m in drives.read_mountinfo() if m.dev == dev), "")
        if source.startswith("/dev/"):
            rdev = os.stat(source).st_rdev
            block = Path(f"/sys/dev/block/{os.major(rdev)}:{os.minor(rdev)}")
    block = block.resolve()
    queue = block / "queue" if (block / "queue").is_dir() else block.parent / "queue"
    # No block device behind it (an overlay, a tmpfs root): not rotational, as documented.
    want = queue.is_dir() and (queue / "rotational").read_text().strip() == "1"
    drives.rotational.cache_clear()
    assert drives.rotational(dev) is want
    assert drives.rotational(os.stat("/proc").st_dev) is False


def test_an_import_asks_the_drives_which_devices_take_files_side_by_side(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, threads_seen: dict[str, str]
) -> None:
    """MetaStore.import_paths stages big files side by side exactly where
    drives.rotational says the device is not a spinning disk."""
    from dmedia_tui.clock import FixedClock
    from dmedia_tui.config import Config
    from dmedia_tui.db import open_library
    from dmedia_tui.metastore import MetaStore
    from tests.conftest import NOW

    make_card(tmp_path / "card")
    asked: set[int] = set()
    for spinning in (True, False):
        threads_seen.clear()
        monkeypatch.setattr(drives, "rotational", lambda dev, s=spinning: asked.add(dev) or s)
        root = tmp_path / f"spinning-{spinning}"
        (root / "store").mkdir(parents=True)
        ms = MetaStore(
            open_library(str(root / "lib.sqlite3")),
            Config.load(root / "config", root / "data"),
            FixedClock(NOW),
        )
        report = ms.import_paths([tmp_path / "card"], FileStore.create(root / "store"))
        assert report.files == 7 and report.empty == 1  # dup.MOV is a file too
        pooled = {n for n, t in threads_seen.items() if t.startswith("dmedia-stage")}
        assert pooled == (set() if spinning else {"a.MOV", "c.MOV", "dup.MOV", "e.CR2"})
    assert asked == {(tmp_path / "card").stat().st_dev}
