"""Only a regular file can be a good copy (defect 5); two processes share tmp/ (defect 7)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

from dmedia_tui.filestore import FileStore, VerifyStatus
from dmedia_tui.protocol import random_id


@pytest.fixture
def two(tmp_path: Path) -> tuple[FileStore, FileStore, str]:
    stores = []
    for n in ("a", "b"):
        (tmp_path / n).mkdir()
        stores.append(FileStore.create(tmp_path / n))
    a, b = stores
    fid = a.import_bytes(os.urandom(100_000)).content_hash.id
    return a, b, fid


def verify_in_time(fs: FileStore, fid: str, seconds: float = 20):
    """verify in a thread: a hang (a FIFO opened blocking) fails instead of blocking."""
    out = []
    t = threading.Thread(target=lambda: out.append(fs.verify(fid)), daemon=True)
    t.start()
    t.join(seconds)
    assert out, "verify blocked"
    return out[0]


def make_intruder(kind: str, path: Path, good_copy: Path) -> None:
    if kind == "symlink to a good copy":
        os.symlink(good_copy, path)
    elif kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "/dev/zero":
        if os.geteuid() != 0:
            pytest.skip("mknod needs root")
        os.mknod(path, stat.S_IFCHR | 0o444, os.makedev(1, 5))


@pytest.mark.parametrize("kind", ["symlink to a good copy", "directory", "fifo", "/dev/zero"])
def test_only_a_regular_file_is_a_copy(two, kind: str) -> None:
    a, b, fid = two
    (b.files_dir / fid[:2]).mkdir(parents=True)
    path = b.file_path(fid)
    make_intruder(kind, path, a.file_path(fid))
    assert not b.exists(fid) and [s.id for s in b] == []
    r = verify_in_time(b, fid)
    assert r.status == VerifyStatus.MISSING, r
    assert "not a regular file" in (r.error or "")
    # Set aside (never deleted), out of the way of a real copy; the good copy untouched.
    assert not os.path.lexists(path) and r.quarantine and os.path.lexists(r.quarantine)
    assert a.verify(fid).status == VerifyStatus.OK
    # A real copy now takes its place.
    res = a.copy_to(fid, [b])
    assert res.written and b.verify(fid).status == VerifyStatus.OK


@pytest.mark.parametrize("kind", ["symlink to a good copy", "fifo", "/dev/zero"])
def test_a_copy_source_that_is_not_a_file_is_never_read(two, kind: str) -> None:
    a, b, fid = two
    path = a.file_path(fid)
    keep = path.with_name("keep")
    os.rename(path, keep)
    make_intruder(kind, path, keep)
    out = []
    t = threading.Thread(target=lambda: out.append(a.copy_to(fid, [b])), daemon=True)
    t.start()
    t.join(20)
    assert out and out[0].source.status == VerifyStatus.MISSING and not out[0].written
    assert not b.exists(fid)


CHILD = textwrap.dedent(
    """
    import fcntl, sys
    from dmedia_tui import filestore
    from dmedia_tui.filestore import FileStore, _TmpFile
    real = fcntl.flock
    # Hold the window between O_EXCL-creating the tmp file and flock-ing it open
    # until the parent says so: the file is visible, unlocked, its writer alive.
    def slow_flock(fd, op):
        print("created", flush=True)
        sys.stdin.readline()
        return real(fd, op)
    filestore.fcntl.flock = slow_flock
    fs = FileStore(sys.argv[1])
    print(fs.import_bytes(b"x" * 5000).content_hash.id, flush=True)
    """
)


def test_a_live_writers_tmp_file_survives_another_process_purge(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    store = FileStore.create(tmp_path / "s")
    dead = store.tmp_dir / f"999999999.{random_id()}"  # a crashed writer's (no such PID)
    dead.write_bytes(b"partial")
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(store.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "created"
        # Another process (a status, an engine starting) purges tmp/ in that window.
        other = subprocess.run(
            [
                sys.executable,
                "-c",
                "import sys; from dmedia_tui.filestore import FileStore; "
                "print(FileStore(sys.argv[1]).purge_tmp())",
                str(store.path),
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert other.stdout.strip() == "1"  # the dead writer's file only
        assert not dead.exists()
        child.stdin.write("go\n")
        child.stdin.flush()
        out, err = child.communicate(timeout=60)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert child.returncode == 0, err
    fid = out.strip()
    assert store.verify(fid).status == VerifyStatus.OK
    assert list(store.tmp_dir.iterdir()) == []
