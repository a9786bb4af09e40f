"""A FUSE passthrough that injects real I/O errors: EIO on reads, ENOSPC on writes.

This machine has no device-mapper (no dm-error / dm-flakey), so a failing disk is made
with FUSE: `python -m tests.faults.fusefs BACKING MOUNTPOINT CONTROL` mirrors BACKING at
MOUNTPOINT (libfuse3 through mfusepy) until unmounted. The test steers it by rewriting
the JSON file CONTROL (re-read whenever it changes), so no process is mocked:

    {"eio": [{"path": ".dmedia/files/AB/CD...", "offset": 0}],   # reads at/after offset
     "enospc": {"prefix": ".dmedia/tmp/", "after": 100000}}       # bytes allowed first

The product sees exactly what a dying disk or a full one gives: the syscall fails with
that errno (through read(2), mmap page faults, write(2)). `FuseMount` (below) starts and
stops it from a test.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]


def _ops_class() -> type:
    os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")  # read when mfusepy is imported
    import mfusepy

    class Passthrough(mfusepy.Operations):
        """Every call goes to the backing folder; reads/writes may fail on purpose."""

        use_ns = True  # times in nanoseconds both ways

        def __init__(self, backing: str, control: str) -> None:
            self.root = os.path.realpath(backing)
            self.control = control
            self._stamp: int | None = None
            self._rules: dict[str, Any] = {}
            self._written = 0
            self._lock = threading.Lock()

        # --- the fault rules ------------------------------------------------------

        def rules(self) -> dict[str, Any]:
            try:
                stamp = os.stat(self.control).st_mtime_ns
            except FileNotFoundError:
                stamp = None
            with self._lock:
                if stamp != self._stamp:
                    self._stamp = stamp
                    try:
                        with open(self.control) as f:
                            self._rules = json.load(f)
                    except (OSError, ValueError):
                        self._rules = {}
                    self._written = 0  # a new ENOSPC budget with every new rule set
                return self._rules

        def _rel(self, path: str) -> str:
            return path.lstrip("/")

        def _full(self, path: str) -> str:
            return os.path.join(self.root, self._rel(path))

        # --- metadata -------------------------------------------------------------

        def access(self, path: str, amode: int) -> int:
            if not os.access(self._full(path), amode):
                raise mfusepy.FuseOSError(errno.EACCES)
            return 0

        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            st = os.fstat(fh) if fh is not None else os.lstat(self._full(path))
            keys = ("st_mode", "st_nlink", "st_uid", "st_gid", "st_size", "st_ino")
            out = {k: getattr(st, k) for k in keys}
            for k in ("st_atime", "st_mtime", "st_ctime"):
                out[k] = getattr(st, k + "_ns")
            return out

        def chmod(self, path: str, mode: int) -> int:
            os.chmod(self._full(path), mode)
            return 0

        def chown(self, path: str, uid: int, gid: int) -> int:
            os.chown(self._full(path), uid, gid)
            return 0

        def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
            os.utime(self._full(path), ns=times) if times else os.utime(self._full(path))
            return 0

        def readdir(self, path: str, fh: int) -> list[str]:
            return [".", "..", *os.listdir(self._full(path))]

        def readlink(self, path: str) -> str:
            return os.readlink(self._full(path))

        def mkdir(self, path: str, mode: int) -> int:
            os.mkdir(self._full(path), mode)
            return 0

        def rmdir(self, path: str) -> int:
            os.rmdir(self._full(path))
            return 0

        def unlink(self, path: str) -> int:
            os.unlink(self._full(path))
            return 0

        def rename(self, old: str, new: str) -> int:
            os.rename(self._full(old), self._full(new))
            return 0

        def link(self, target: str, source: str) -> int:
            os.link(self._full(source), self._full(target))
            return 0

        def symlink(self, target: str, source: str) -> int:
            os.symlink(source, self._full(target))
            return 0

        def statfs(self, path: str) -> dict[str, int]:
            st = os.statvfs(self._full(path))
            keys = ("f_bavail", "f_bfree", "f_blocks", "f_bsize", "f_favail", "f_ffree")
            keys += ("f_files", "f_flag", "f_frsize", "f_namemax")
            return {k: getattr(st, k) for k in keys}

        # --- data -----------------------------------------------------------------

        def open(self, path: str, flags: int) -> int:
            return os.open(self._full(path), flags & ~os.O_CREAT)

        def create(self, path: str, mode: int, fi: Any = None) -> int:
            return os.open(self._full(path), os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)

        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            rel = self._rel(path)
            for rule in self.rules().get("eio", []):
                if rule.get("path") == rel and offset + size > rule.get("offset", 0):
                    raise mfusepy.FuseOSError(errno.EIO)
            return os.pread(fh, size, offset)

        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            rule = self.rules().get("enospc")
            if rule and self._rel(path).startswith(rule.get("prefix", "")):
                with self._lock:
                    if self._written + len(data) > rule.get("after", 0):
                        raise mfusepy.FuseOSError(errno.ENOSPC)
                    self._written += len(data)
            return os.pwrite(fh, data, offset)

        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            if fh is not None:
                os.ftruncate(fh, length)
            else:
                os.truncate(self._full(path), length)
            return 0

        def flush(self, path: str, fh: int) -> int:
            return 0

        def fsync(self, path: str, datasync: int, fh: int) -> int:
            os.fdatasync(fh) if datasync else os.fsync(fh)
            return 0

        def release(self, path: str, fh: int) -> int:
            os.close(fh)
            return 0

    return Passthrough


def serve(backing: str, mountpoint: str, control: str) -> None:
    import mfusepy

    ops = _ops_class()(backing, control)
    # default_permissions: the kernel checks modes (0444 copies stay read-only);
    # no kernel_cache: every open drops cached pages, so reads reach the rules.
    mfusepy.FUSE(ops, mountpoint, foreground=True, default_permissions=True, fsname="faultfs")


class FuseMount:
    """The passthrough as a child process: mount on start(), unmount on stop()."""

    def __init__(self, backing: Path, mountpoint: Path, control: Path) -> None:
        self.backing, self.mountpoint, self.control = backing, mountpoint, control
        self.proc: subprocess.Popen[bytes] | None = None

    def set(self, **rules: Any) -> None:
        """Replace the fault rules (eio=[...], enospc={...}); takes effect at once."""
        tmp = self.control.with_suffix(".tmp")
        tmp.write_text(json.dumps(rules))
        os.replace(tmp, self.control)

    def start(self, timeout: float = 20.0) -> None:
        for d in (self.backing, self.mountpoint):
            d.mkdir(parents=True, exist_ok=True)
        self.set()
        dev = os.stat(self.mountpoint).st_dev
        env = {**os.environ, "FUSE_LIBRARY_NAME": "fuse3", "PYTHONPATH": str(REPO)}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.fusefs", *map(str, self.info())],
            cwd=REPO,
            env=env,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while os.stat(self.mountpoint).st_dev == dev:  # bounded poll for the mount
            if self.proc.poll() is not None or time.monotonic() > deadline:
                err = self.proc.stderr.read().decode() if self.proc.stderr else ""
                self.stop()
                raise RuntimeError(f"FUSE passthrough did not mount: {err.strip()[-300:]}")
            time.sleep(0.02)

    def info(self) -> tuple[Path, Path, Path]:
        return self.backing, self.mountpoint, self.control

    def stop(self) -> None:
        if self.proc is None:
            return
        subprocess.run(["umount", "-l", str(self.mountpoint)], capture_output=True)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


def available() -> str | None:
    """None if a FUSE passthrough can run here, else why not (the skip reason)."""
    if os.geteuid() != 0:
        return "needs root to mount FUSE without fusermount3"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse"
    try:
        os.environ.setdefault("FUSE_LIBRARY_NAME", "fuse3")
        import mfusepy  # noqa: F401
    except (ImportError, OSError) as e:
        return f"mfusepy/libfuse3 not usable: {e}"
    return None


def required() -> Any:
    """The pytestmark of a test module that needs the passthrough: a skip with the reason
    where it cannot run, and an error instead in CI (DMEDIA_REQUIRE_FUSE=1), which must
    never skip it silently."""
    import pytest

    why = available()
    if why and os.environ.get("DMEDIA_REQUIRE_FUSE") == "1":
        raise RuntimeError(f"DMEDIA_REQUIRE_FUSE=1 but the FUSE passthrough cannot run: {why}")
    return pytest.mark.skipif(why is not None, reason=f"FUSE: {why}")


if __name__ == "__main__":
    serve(*sys.argv[1:4])
