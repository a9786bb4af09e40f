"""The recovery rules that finish what a killed run left half done (issue 10), one by one,
on both backends: a quarantine killed between its link and its unlink, and the events of
a resumed quarantine (each logged once).

A kill is simulated in-process: the fault point named raises `Killed` (a BaseException,
so no handler of the product catches it), and nothing after it runs. The real SIGKILL of
each point, on a real CLI process, is the crash matrix (tests/faults/test_crash_matrix.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from dmedia_tui import schema
from dmedia_tui.clock import FixedClock
from dmedia_tui.config import Config
from dmedia_tui.filestore import FileStore
from dmedia_tui.metastore import MetaStore
from tests.conftest import NOW
from tests.ops import import_one, verify_one


class Killed(BaseException):
    """The process "died" at a fault point."""


@pytest.fixture
def die_at(monkeypatch: pytest.MonkeyPatch) -> Callable[[str], None]:
    """die_at("name") or die_at("name@N"): the N-th time that point is reached, raise."""

    def arm(spec: str) -> None:
        name, _, nth = spec.partition("@")
        hits = {"n": 0}

        def point(reached: str) -> None:
            if reached == name:
                hits["n"] += 1
                if hits["n"] >= int(nth or 1):
                    raise Killed(spec)

        for module in ("metastore", "filestore"):
            monkeypatch.setattr(f"dmedia_tui.{module}.fault_point", point)

    return arm


def disarm(monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("metastore", "filestore"):
        monkeypatch.setattr(f"dmedia_tui.{module}.fault_point", lambda name: None)


@pytest.fixture
def ms(library, tmp_path: Path) -> MetaStore:
    return MetaStore(library, Config.load(tmp_path / "config", tmp_path / "data"), FixedClock(NOW))


def restarted(ms: MetaStore) -> MetaStore:
    """A new process on the same library and machine (nothing kept in memory)."""
    return MetaStore(ms.lib, ms.config, ms.clock)


def new_store(ms: MetaStore, tmp_path: Path, name: str) -> FileStore:
    (tmp_path / name).mkdir()
    fs, _, created = ms.init_store(tmp_path / name, label=name, same_filesystem=True)
    assert created
    return fs


def import_n(ms: MetaStore, fs: FileStore, tmp_path: Path, n: int) -> list[str]:
    out = []
    for i in range(n):
        src = tmp_path / "src" / f"f{i}.jpg"
        src.parent.mkdir(exist_ok=True)
        src.write_bytes(bytes([i + 1]) * (5000 + i))
        out.append(import_one(ms, src, fs)[0])
    return sorted(out)


def one_per_batch(ms: MetaStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Set operations commit a batch per file, so `name@2` stops one mid-way."""
    orig = ms.lib.docs.update_many

    def update_many(ids, fn, *args):
        return orig(ids, fn, *args, batch_size=1)

    monkeypatch.setattr(ms.lib.docs, "update_many", update_many)


def events(ms: MetaStore, type: str) -> list[dict]:
    return ms.lib.events(1000, newest_first=False, types=[type])


def rot(fs: FileStore, fid: str) -> bytes:
    """Flip a byte of the copy in files/; returns its new (bad) content."""
    path = fs.file_path(fid)
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    data[100] ^= 0xFF
    path.write_bytes(bytes(data))
    os.chmod(path, 0o444)
    return bytes(data)


# --- a quarantine killed between its link and its unlink ----------------------------


def test_a_quarantine_killed_after_its_link_is_finished_by_recovery(
    ms: MetaStore, tmp_path: Path, die_at, monkeypatch
) -> None:
    a = new_store(ms, tmp_path, "a")
    (fid,) = import_n(ms, a, tmp_path, 1)
    bad = rot(a, fid)
    die_at("quarantine.linked")
    with pytest.raises(Killed):
        verify_one(ms, a, fid)
    # The crash: one inode under two names, the doc still claims the bad copy.
    assert a.file_path(fid).exists() and a.corrupt_path(fid).exists()
    assert a.id in ms.lib.docs.get(fid)["stored"]
    disarm(monkeypatch)

    again = restarted(ms)
    assert again.recover_store(a)["quarantines"] == 1
    assert not a.file_path(fid).exists()
    assert a.corrupt_path(fid).read_bytes() == bad  # the bytes kept, never deleted
    doc = again.lib.docs.get(fid)
    assert a.id not in doc["stored"] and a.id in doc["corrupt"]
    (ev,) = events(again, schema.LOG_FILE_CORRUPT)
    assert (ev["file_id"], ev["store_id"]) == (fid, a.id)
    assert Path(ev["quarantine"]).name == a.corrupt_path(fid).name
    store = again.store_doc(a.id)
    assert store["failure"] and store["no_new_copies"] and store["downgraded"]
    assert len(events(again, schema.LOG_STORE_FAILING)) == 1
    assert len(events(again, schema.LOG_STORE_DOWNGRADE)) == 1
    # Recovery again: nothing left to do, nothing logged twice.
    assert restarted(ms).recover_store(a)["quarantines"] == 0
    assert len(ms.lib.events(1000)) == 3


def test_finish_quarantine_never_touches_another_file(tmp_path: Path, ms: MetaStore) -> None:
    """An old quarantine (another inode) next to a good copy made since: left as it is."""
    a = new_store(ms, tmp_path, "a")
    (fid,) = import_n(ms, a, tmp_path, 1)
    good = a.file_path(fid).read_bytes()
    a.corrupt_dir.mkdir(exist_ok=True)
    a.corrupt_path(fid).write_bytes(b"an old corrupt copy")
    assert a.finish_quarantine(fid) is None
    assert a.file_path(fid).read_bytes() == good
    assert restarted(ms).recover_store(a)["quarantines"] == 0
    assert a.file_path(fid).read_bytes() == good
    assert ms.lib.events(1000) == []
    # The same inode under the corrupt/ name that is not the newest (<id>.1 exists too).
    os.link(a.file_path(fid), a.corrupt_dir / f"{fid}.1")
    (a.corrupt_dir / f"{fid}.2").write_bytes(b"another")
    assert a.finish_quarantine(fid) == a.corrupt_dir / f"{fid}.1"
    assert not a.file_path(fid).exists() and (a.corrupt_dir / f"{fid}.1").read_bytes() == good


@pytest.mark.parametrize("point", ["corrupt.logged", "corrupt.flagged"])
def test_a_resumed_quarantine_logs_each_event_once(
    ms: MetaStore, tmp_path: Path, die_at, monkeypatch, point: str
) -> None:
    a = new_store(ms, tmp_path, "a")
    (fid,) = import_n(ms, a, tmp_path, 1)
    rot(a, fid)
    die_at(point)
    with pytest.raises(Killed):
        verify_one(ms, a, fid)
    disarm(monkeypatch)
    restarted(ms).recover_store(a)
    restarted(ms).recover_store(a)
    assert len(events(ms, schema.LOG_FILE_CORRUPT)) == 1
    assert len(events(ms, schema.LOG_STORE_FAILING)) == 1  # logged, and once
    assert len(events(ms, schema.LOG_STORE_DOWNGRADE)) == 1
    assert a.id in ms.lib.docs.get(fid)["corrupt"]
