"""A small, deterministic, real library for the app tests, snapshots and the tmux runner.

Built with the real core (SQLite, FileStores, MetaStore) at a fixed time. Random IDs are
replaced by a counter while building so store IDs and log order are the same every run;
the few values that come from the machine (free space, file mtimes) are pinned afterwards.

The library (this machine "studio"):
- `studio-int` (internal, online): every file;
- `usb-backup-2` (removable, online): half the files; one copy has a flipped bit, found by a
  real verification, so the store is FAILING and downgraded;
- `laptop-ssd` on machine "kestrel" (internal, offline for 2 days): a few files only there;
so the dashboard shows DRIVE_FAILURE, DISCONNECTED_ONLY_COPY, LOW_DURABILITY and more.
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from dmedia_tui import protocol
from dmedia_tui.clock import FixedClock
from dmedia_tui.config import Config
from dmedia_tui.db import open_library
from dmedia_tui.metastore import MetaStore
from tests.ops import verify_one

NOW = 1_795_608_000  # tests.conftest.NOW
DAY = 86400
TB = 1_000_000_000_000


@dataclass
class TestLibrary:
    ms: MetaStore
    clock: FixedClock
    stores: dict[str, str]  # label -> store ID
    files: dict[str, str]  # name -> file ID
    root: Path


@contextlib.contextmanager
def deterministic_ids() -> Iterator[None]:
    """random_id / log_id from a counter while the library is built."""
    counter = itertools.count(1)
    saved = protocol.random_id, protocol.log_id

    def random_id(nbytes: int = protocol.STORE_ID_BYTES) -> str:
        return protocol.b32encode(next(counter).to_bytes(nbytes, "big"))

    def log_id(timestamp: float) -> str:
        secs = max(0, int(timestamp)).to_bytes(5, "big")
        return protocol.b32encode(secs + next(counter).to_bytes(10, "big"))

    protocol.random_id, protocol.log_id = random_id, log_id
    try:
        yield
    finally:
        protocol.random_id, protocol.log_id = saved


def _config(root: Path, name: str, hostname: str) -> Config:
    cdir = root / name / "config"
    cdir.mkdir(parents=True, exist_ok=True)
    (cdir / "config.toml").write_text(f'hostname = "{hostname}"\n')
    return Config.load(cdir, root / name / "data")


def _write(folder: Path, name: str, size: int, seed: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    block = bytes((seed * 31 + i) % 251 for i in range(251))
    path = folder / name
    path.write_bytes((block * (size // 251 + 1))[:size])
    return path


def _flip_bit(fs_path: Path, file_id: str) -> None:
    path = fs_path / ".dmedia" / "files" / file_id[:2] / file_id[2:]
    os.chmod(path, 0o600)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def build_library(root: Path, *, empty: bool = False) -> TestLibrary:
    """Build the library under `root` (a fresh directory) and return its MetaStore."""
    root.mkdir(parents=True, exist_ok=True)
    clock = FixedClock(NOW - 3 * DAY)
    with deterministic_ids():
        lib = open_library(str(root / "library.sqlite3"))
        ms = MetaStore(lib, _config(root, "studio", "studio"), clock)
        ms.machine_id  # noqa: B018 (machine.json is created lazily: keep the ID order stable)
        if empty:
            clock.t = NOW
            return TestLibrary(ms, clock, {}, {}, root)
        other = MetaStore(lib, _config(root, "kestrel", "kestrel"), clock)
        other.machine_id  # noqa: B018
        stores: dict[str, str] = {}
        fss = {}
        for label, owner, removable in (
            ("studio-int", ms, False),
            ("usb-backup-2", ms, True),
            ("laptop-ssd", other, False),
        ):
            folder = root / "stores" / label
            folder.mkdir(parents=True)
            identity = {
                "removable": removable,
                "internal": not removable,
                "drive_serial": f"SER-{label.upper()[:6]}",
                "drive_model": "TestDisk",
                "partition_uuid": f"uuid-{label}",
                "filesystem_id": f"fs-{label}",
            }
            fs, doc, _ = owner.init_store(
                folder, label=label, same_filesystem=True, identity=identity
            )
            stores[label] = doc["_id"]
            fss[label] = fs
        src = root / "src"
        names = [f"MVI_{5740 + i}.MOV" for i in range(12)]
        paths = [_write(src / "all", n, 3000 + 700 * i, i) for i, n in enumerate(names)]
        laptop_only = [
            _write(src / "laptop", f"IMG_{100 + i}.CR2", 5000 + 100 * i, 50 + i) for i in range(3)
        ]
        files: dict[str, str] = {}
        report = ms.import_paths(paths, fss["studio-int"])
        files.update(zip(names, report.file_ids, strict=True))
        clock.advance(60)
        ms.import_paths(paths[:6], fss["usb-backup-2"])
        clock.advance(60)
        other.import_paths(paths[8:], fss["laptop-ssd"])
        report = other.import_paths(laptop_only, fss["laptop-ssd"])
        files.update(zip((p.name for p in laptop_only), report.file_ids, strict=True))
        other.heartbeat({stores["laptop-ssd"]: fss["laptop-ssd"]})
        # Two days later on studio: verify usb-backup-2, one copy is corrupt.
        clock.t = NOW - 2 * DAY + 3600
        _flip_bit(fss["usb-backup-2"].path, files[names[3]])
        for name in names[:6]:
            clock.advance(1)
            verify_one(ms, fss["usb-backup-2"], files[name])
        clock.t = NOW - 3600
        for name in names[:4]:
            clock.advance(1)
            verify_one(ms, fss["studio-int"], files[name])
        clock.t = NOW
        ms.heartbeat({sid: fss[label] for label, sid in stores.items() if label != "laptop-ssd"})
        _pin_machine_values(ms, stores)
    return TestLibrary(ms, clock, stores, files, root)


def _pin_machine_values(ms: MetaStore, stores: dict[str, str]) -> None:
    """Free space and mtimes come from this machine: pin them so screens are the same."""
    space = {
        "studio-int": (2 * TB, TB * 12 // 10),
        "usb-backup-2": (TB, TB * 6 // 10),
        "laptop-ssd": (TB // 2, TB // 5),
    }
    pinned = {stores[label]: space[label] for label in stores}
    real_space = ms.space
    # Health reads the space of connected stores live (statvfs): pin that answer too.
    ms.space = lambda fs: pinned.get(fs.id) or real_space(fs)  # type: ignore[method-assign]
    for label, sid in stores.items():
        total, avail = space[label]

        def pin(doc: dict, total: int = total, avail: int = avail) -> dict:
            doc["bytes_total"], doc["bytes_avail"] = total, avail
            return doc

        ms.lib.docs.update(sid, pin)
    for doc in list(ms.lib.docs.iter_docs()):
        if doc.get("type") != "dmedia/file":
            continue

        def mtimes(d: dict) -> dict:
            for entry in d.get("stored", {}).values():
                entry["mtime"] = NOW - 3 * DAY
            return d

        ms.lib.docs.update(doc["_id"], mtimes)
