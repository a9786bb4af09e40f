"""Shared helpers for the hand-run benchmarks: a camera-like corpus, timing, reporting."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

MB = 1_000_000  # benchmarks report decimal MB/s, like b3sum, dd and disk vendors

# A card's worth of media: phone photos, JPEGs, RAWs, short and long 4K clips (MB).
CAMERA_SIZES_MB = (30, 8, 150, 4, 60, 8, 30, 12, 90, 25)


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--mb", type=int, default=200, help="total corpus size in MB (default 200)")
    p.add_argument("--rounds", type=int, default=3, help="best of N rounds (default 3)")
    p.add_argument(
        "--dir",
        type=Path,
        default=None,
        help="work folder (default: a temp folder under /var/tmp, i.e. on a real disk)",
    )
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    return p


def workdir(arg: Path | None) -> Path:
    if arg is not None:
        arg.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="dmedia-bench-", dir=arg))
    base = "/var/tmp" if os.path.isdir("/var/tmp") else None
    return Path(tempfile.mkdtemp(prefix="dmedia-bench-", dir=base))


def make_corpus(folder: Path, total_mb: int) -> list[Path]:
    """Incompressible files of camera-like sizes adding up to total_mb."""
    folder.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    left = total_mb * MB
    i = 0
    while left > 0:
        size = min(CAMERA_SIZES_MB[i % len(CAMERA_SIZES_MB)] * MB, left)
        ext = "MOV" if size >= 50 * MB else "CR2" if size >= 20 * MB else "JPG"
        path = folder / f"IMG_{i:04d}.{ext}"
        with open(path, "wb") as f:
            for off in range(0, size, 16 * MB):
                f.write(os.urandom(min(16 * MB, size - off)))
        files.append(path)
        left -= size
        i += 1
    return files


def warm(files: list[Path]) -> None:
    """Read every file once so each contender starts from the same (warm) page cache."""
    buf = bytearray(8 << 20)
    for path in files:
        with open(path, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


def uncache(files: list[Path]) -> None:
    """Drop these files' clean pages from the page cache (what FileStore.verify does
    before it reads a copy), so the next read comes from the disk; on a tmpfs the pages
    are the files and stay."""
    for path in files:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def drop_caches() -> None:
    """Empty the page cache (root only) so the next run reads from the disk."""
    sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError as e:
        raise SystemExit(f"--cold needs root: cannot drop the page cache ({e.strerror})") from None


def sync() -> None:
    subprocess.run(["sync"], check=True)


def best_of(rounds: int, fn: Callable[[], None], before: Callable[[], None] | None = None) -> float:
    """Fastest of `rounds` runs of fn, in seconds; `before` runs untimed before each."""
    best = float("inf")
    for _ in range(rounds):
        if before:
            before()
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def rate(nbytes: int, seconds: float) -> str:
    return f"{nbytes / MB / seconds:8.0f} MB/s  ({seconds:6.3f} s)"


def rmtree(path: Path) -> None:
    """Remove a tree holding read-only canonical copies."""
    for root, dirs, _ in os.walk(path):
        for d in dirs:
            os.chmod(os.path.join(root, d), 0o755)
    shutil.rmtree(path, ignore_errors=True)


def verdict(ok: bool) -> str:
    return "OK" if ok else "BELOW GOAL"
