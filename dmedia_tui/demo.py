"""A realistic sandbox library for `dmedia-tui demo [DIR]`: everything lives inside DIR.

Why a builder and not a fixture file: the demo must show the engine *finding* trouble
(corrupt copies on a failing drive) and *fixing* what it can (copies made until every
reachable user file has 3), so it is built through the same MetaStore, FileStore and
schema code the app uses, at simulated past times, and the faults are planted on disk
only (bit flips), never pre-recorded in the docs.

What is built (labels are fixed, IDs random, file contents from `seed`):

- this machine "studio" (config dir DIR/config/dmedia-tui, data dir DIR/data/dmedia-tui
  holding library.sqlite3; laid out as XDG homes, so that
  `XDG_CONFIG_HOME=DIR/config XDG_DATA_HOME=DIR/data dmedia-tui status` works on it),
  with three connected stores under DIR/stores/: `studio-int` (internal SSD),
  `studio-raid` (internal RAID1 mirror, a copy there is worth 2) and `usb-backup-2` (a USB
  drive where a few canonical copies have flipped bits: the first verification finds
  them, quarantines them and flags the drive FAILING);
- another machine "kestrel" (config dir DIR/other-machine/config/dmedia-tui) whose
  internal store `laptop-ssd` (DIR/other-machine/laptop-ssd) is only known there; its
  heartbeat is 30 hours old, so the laptop is off and files only there raise
  DISCONNECTED_ONLY_COPY;
- unplugged removable drives whose folders (DIR/unplugged/...) this machine does not
  know: `usb-archive` (last seen 2 days ago), `sd-card-r5` (last seen 5 days ago,
  downgraded 2 days ago) and `sd-card-a7` (downgraded, then purged 4 days ago; its
  FileStore is still on disk, like a card in a drawer);
- several hundred camera-like files (MVI_1234.MOV, IMG_5678.CR2, ...) at every
  durability, a few of them over 8 MiB (several leaves), some render/proxy files.

Every store is on the filesystem of DIR, so the drive identities are *simulated*: each
store doc gets a distinct fake `partition_uuid` and `filesystem_id` (prefixed
"demo-") plus a plausible serial and model, which keeps SHARED_FILESYSTEM quiet the way
real separate drives would. Nothing is written outside DIR: config and data dirs are
always passed explicitly, never taken from platformdirs.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import random
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from blake3 import blake3

from dmedia_tui import protocol, schema, transitions
from dmedia_tui.clock import FixedClock
from dmedia_tui.config import APP_NAME, Config
from dmedia_tui.db import open_library
from dmedia_tui.filestore import FileStore
from dmedia_tui.metastore import MetaStore, MetaStoreError

HOUR = 3600
DAY = 86400
MIB = 1024 * 1024

THIS_HOST = "studio"
OTHER_HOST = "kestrel"
CORRUPT_COPIES = 3  # canonical copies on usb-backup-2 whose bits are flipped


class DemoError(MetaStoreError):
    """The demo cannot be built as asked (one line, for the user; the CLI shows it as such)."""


@dataclass(frozen=True)
class _StoreSpec:
    key: str  # short name used by the placement table below
    label: str
    folder: str  # relative to DIR
    machine: str  # THIS_HOST or OTHER_HOST
    connected: bool  # known to (and present on) this machine
    copies: int
    created: float  # days before now
    last_seen: float  # days before now (0: connected now)
    identity: dict[str, Any]
    note: str = ""  # what the demo shows with it (for the summary)


def _identity(
    rng: random.Random, serial: str, model: str, *, removable: bool, bus: str, fstype: str
) -> dict[str, Any]:
    """A simulated drive identity: distinct fake partition UUID and filesystem id."""
    part = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    return {
        "drive_serial": serial,
        "drive_model": model,
        "partition_uuid": part,
        "filesystem_id": f"demo-{part[:8]}",
        "removable": removable,
        "internal": not removable,
        "drive_bus": bus,
        "filesystem_type": fstype,
    }


def _store_specs(rng: random.Random) -> list[_StoreSpec]:
    def ident(serial: str, model: str, removable: bool, bus: str, fstype: str) -> dict[str, Any]:
        return _identity(rng, serial, model, removable=removable, bus=bus, fstype=fstype)

    return [
        _StoreSpec(
            "S",
            "studio-int",
            "stores/studio-int",
            THIS_HOST,
            True,
            1,
            60,
            0,
            ident("S6PTNM0T812345K", "Samsung SSD 870 EVO 2TB", False, "ata", "ext4"),
            "internal SSD, connected",
        ),
        _StoreSpec(
            "R",
            "studio-raid",
            "stores/studio-raid",
            THIS_HOST,
            True,
            2,
            60,
            0,
            ident("md127-ZDH8K2Q1", "Linux md RAID1 (2x ST4000VN008)", False, "ata", "ext4"),
            "internal RAID1 mirror (a copy there counts 2), connected",
        ),
        _StoreSpec(
            "U",
            "usb-backup-2",
            "stores/usb-backup-2",
            THIS_HOST,
            True,
            1,
            45,
            0,
            ident("WD-WX11A19C7K2P", "WD Elements 25A3", True, "usb", "exfat"),
            "USB drive, connected; a few copies on it have rotted",
        ),
        _StoreSpec(
            "L",
            "laptop-ssd",
            "other-machine/laptop-ssd",
            OTHER_HOST,
            False,
            1,
            50,
            30 / 24,
            ident("S675NX0T123456", "SAMSUNG MZVL2512HCJQ-00B00", False, "nvme", "ext4"),
            "internal SSD of kestrel, which is off (heartbeat 30 h ago)",
        ),
        _StoreSpec(
            "A",
            "usb-archive",
            "unplugged/usb-archive",
            THIS_HOST,
            False,
            1,
            90,
            2,
            ident("NA9JQ1XK", "Seagate Expansion HDD (ST5000LM000)", True, "usb", "exfat"),
            "USB drive, unplugged (last seen 2 days ago)",
        ),
        _StoreSpec(
            "r5",
            "sd-card-r5",
            "unplugged/sd-card-r5",
            THIS_HOST,
            False,
            1,
            14,
            5,
            ident("0x5e3a91c2", "SanDisk Extreme PRO SDXC 128GB", True, "usb", "exfat"),
            "SD card, unplugged 5 days, downgraded 2 days ago",
        ),
        _StoreSpec(
            "a7",
            "sd-card-a7",
            "unplugged/sd-card-a7",
            THIS_HOST,
            False,
            1,
            20,
            12,
            ident("0x1b77f0d4", "SanDisk Ultra SDXC 64GB", True, "usb", "exfat"),
            "SD card, unplugged 12 days, purged 4 days ago (its files stay on it)",
        ),
    ]


# Where the files are, as (store keys, share of the files, origin). Durability in the
# comments counts the copies *before* the first scan (studio-raid is worth 2).
_PLACEMENTS: list[tuple[tuple[str, ...], float, str]] = [
    (("S", "R"), 0.11, "user"),  # 3
    (("S", "R", "a7"), 0.04, "user"),  # 3 (the a7 entry is purged in the history)
    (("S", "R", "U"), 0.10, "user"),  # 4
    (("S", "U", "A"), 0.05, "user"),  # 3
    (("R", "U"), 0.05, "user"),  # 3
    (("S", "U"), 0.16, "user"),  # 2: the corrupt copies are planted here
    (("R",), 0.05, "user"),  # 2
    (("S", "L"), 0.07, "user"),  # 2
    (("U", "A"), 0.04, "user"),  # 2
    (("S",), 0.08, "user"),  # 1: LOW_DURABILITY, copying has work
    (("U",), 0.03, "user"),  # 1
    (("S", "r5"), 0.04, "user"),  # 1 (the card is downgraded)
    (("L",), 0.06, "user"),  # only on the laptop that is off
    (("A",), 0.04, "user"),  # only on the unplugged drive
    (("A", "r5"), 0.02, "user"),  # only on unplugged drives
    (("R",), 0.03, "render"),
    (("S",), 0.03, "proxy"),
]

# Camera-like kinds: (name pattern, share, min bytes, max bytes); sizes are log-uniform.
_KINDS: list[tuple[str, float, int, int]] = [
    ("IMG_{:04d}.JPG", 0.22, 20_000, 160_000),
    ("IMG_{:04d}.CR2", 0.16, 80_000, 400_000),
    ("DSC_{:04d}.JPG", 0.10, 20_000, 140_000),
    ("DSC_{:04d}.NEF", 0.06, 80_000, 350_000),
    ("MVI_{:04d}.MOV", 0.20, 100_000, 1_000_000),
    ("C{:04d}.MP4", 0.12, 100_000, 800_000),
    ("ZOOM{:04d}.WAV", 0.14, 30_000, 350_000),
]
_CLIP_SIZES = (9_000_000, 12_000_000)  # long clips: more than one 8 MiB leaf
_WRITERS = 8  # threads writing copies (each import waits for fsyncs)


@dataclass
class DemoFile:
    file_id: str
    name: str
    bytes: int
    origin: str
    stores: tuple[str, ...]  # labels of the stores its doc records (before the first scan)


@dataclass
class DemoLibrary:
    """What `build_demo` made, for the CLI (to open it) and the tests (to check it)."""

    dir: Path
    now: float
    db_path: Path
    config_dir: Path  # this machine ("studio")
    data_dir: Path
    other_config_dir: Path  # the other machine ("kestrel"), off
    other_data_dir: Path
    store_paths: dict[str, Path]  # label -> store folder
    store_ids: dict[str, str]  # label -> store ID
    connected: list[str]  # labels of the stores this machine has connected
    files: list[DemoFile] = field(default_factory=list)
    corrupt: list[str] = field(default_factory=list)  # file IDs with a flipped copy
    corrupt_store: str = "usb-backup-2"
    purged: list[str] = field(default_factory=list)  # labels purged in the history
    events: int = 0  # log-1 events written by the history
    notes: dict[str, str] = field(default_factory=dict)  # label -> what it shows

    @property
    def bytes(self) -> int:
        return sum(f.bytes for f in self.files)

    def summary(self) -> str:
        """A few lines for the terminal: what was built and what the engine will find."""
        copies = sum(len(f.stores) for f in self.files)
        lines = [
            f"demo library in {self.dir}",
            f"  database: {self.db_path}",
            f"  this machine: {THIS_HOST} (config dir {self.config_dir.relative_to(self.dir)}/), "
            f"other machine: {OTHER_HOST} "
            f"(config dir {self.other_config_dir.relative_to(self.dir)}/)",
            f"  {len(self.files)} files, {_mb(self.bytes)}, {copies} recorded copies; "
            f"{len(self.corrupt)} copies on {self.corrupt_store} have flipped bits "
            "(the first scan finds them)",
            f"  {self.events} past events in log-1; stores:",
        ]
        width = max(len(label) for label in self.store_paths)
        for label, path in self.store_paths.items():
            where = path.relative_to(self.dir)
            lines.append(f"    {label:<{width}}  {str(where):<26}  {self.notes.get(label, '')}")
        lines.append(
            "  drive serials and partition UUIDs are simulated: every store is on one filesystem"
        )
        lines.append(
            f"  other commands on it: XDG_CONFIG_HOME={self.dir / 'config'} "
            f"XDG_DATA_HOME={self.dir / 'data'} dmedia-tui status"
        )
        return "\n".join(lines)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def _counts(total: int, shares: list[float]) -> list[int]:
    """Split total by shares, every share getting at least one when total allows."""
    if total < len(shares):
        raise DemoError(f"the demo needs at least {len(shares)} files, got {total}")
    scale = sum(shares)
    counts = [max(1, math.floor(total * s / scale)) for s in shares]
    i = 0
    order = sorted(range(len(shares)), key=lambda k: -shares[k])
    while sum(counts) < total:
        counts[order[i % len(order)]] += 1
        i += 1
    while sum(counts) > total:
        k = order[i % len(order)]
        if counts[k] > 1:
            counts[k] -= 1
        i += 1
    return counts


def _content(seed: int, index: int, size: int) -> bytes:
    """Deterministic, incompressible bytes for file `index` (blake3 in XOF mode)."""
    return blake3(f"dmedia-tui demo {seed} {index}".encode()).digest(length=size)


def _log_uniform(rng: random.Random, lo: int, hi: int) -> int:
    return int(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _write_copy(fs: FileStore, data: bytes, mtime: float) -> tuple[protocol.ContentHash, int]:
    """Put one canonical copy in fs (through the FileStore), dated `mtime` (import time)."""
    ch = fs.import_bytes(data).content_hash
    os.utime(fs.file_path(ch.id), (int(mtime), int(mtime)))
    return ch, int(mtime)


def _flip_bits(path: Path, rng: random.Random) -> None:
    """Bit rot: flip a few bits in place, keeping the mode and the mtime."""
    st = path.stat()
    os.chmod(path, st.st_mode | 0o200)
    try:
        with open(path, "r+b") as f:
            for _ in range(3):
                pos = rng.randrange(st.st_size)
                f.seek(pos)
                b = f.read(1)[0]
                f.seek(pos)
                f.write(bytes([b ^ (1 << rng.randrange(8))]))
            f.flush()
            os.fsync(f.fileno())
    finally:
        os.chmod(path, st.st_mode)
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))


@contextlib.contextmanager
def _quiet_logging() -> Iterator[None]:
    """Keep the made-up history off the terminal: it did not happen now.

    MetaStore logs every event it writes to log-1; during the demo's history those lines
    would reach stderr (the CLI's handler, or logging's last resort) as if the drives
    were failing right now. The events are in log-1, where the app shows them.
    """
    logger = logging.getLogger("dmedia_tui")
    null = logging.NullHandler()
    logger.addHandler(null)
    propagate, logger.propagate = logger.propagate, False
    try:
        yield
    finally:
        logger.propagate = propagate
        logger.removeHandler(null)


def _write_config(config_dir: Path, hostname: str, db_path: Path) -> None:
    config_dir.mkdir(parents=True, exist_ok=True)
    (config_dir / "config.toml").write_text(
        "# dmedia-tui demo machine (built by `dmedia-tui demo`)\n"
        f'db = "{db_path}"\n'
        f'hostname = "{hostname}"\n',
        encoding="utf-8",
    )


def build_demo(dir: Path, now: float, *, files: int = 400, seed: int = 1) -> DemoLibrary:
    """Build the sandbox library in `dir` (created if needed, must be empty).

    `now` is the present of the demo: every atime, verification and event is placed
    relative to it, so the CLI can pass its (possibly simulated) clock.
    """
    dir = Path(dir)
    if not now >= 365 * DAY:  # the history reaches 90 days back; NaN is refused too
        raise DemoError(f"the demo needs a present after 1971, got now={now!r}")
    if files < len(_PLACEMENTS):
        raise DemoError(f"the demo needs at least {len(_PLACEMENTS)} files, got {files}")
    if dir.exists() and not dir.is_dir():
        raise DemoError(f"{dir} is not a folder")
    if dir.exists() and any(dir.iterdir()):
        raise DemoError(f"{dir} is not empty: give a new or empty folder")
    rng = random.Random(seed)
    dir.mkdir(parents=True, exist_ok=True)
    dir = dir.resolve()
    # Laid out as XDG homes (DIR/config/dmedia-tui, ...) so that every command works on
    # the demo with XDG_CONFIG_HOME=DIR/config (config.toml there names the database).
    data_dir = dir / "data" / APP_NAME
    db_path = data_dir / "library.sqlite3"
    config_dir = dir / "config" / APP_NAME
    other_config_dir = dir / "other-machine" / "config" / APP_NAME
    other_data_dir = dir / "other-machine" / "data" / APP_NAME
    data_dir.mkdir(parents=True)
    other_data_dir.mkdir(parents=True)
    _write_config(config_dir, THIS_HOST, db_path)
    _write_config(other_config_dir, OTHER_HOST, db_path)

    specs = _store_specs(rng)
    by_key = {s.key: s for s in specs}
    clock = FixedClock(now)
    lib = open_library(str(db_path))
    try:
        here = MetaStore(lib, Config.load(config_dir, data_dir), clock)
        other = MetaStore(lib, Config.load(other_config_dir, other_data_dir), clock)
        built = DemoLibrary(
            dir=dir,
            now=now,
            db_path=db_path,
            config_dir=config_dir,
            data_dir=data_dir,
            other_config_dir=other_config_dir,
            other_data_dir=other_data_dir,
            store_paths={},
            store_ids={},
            connected=[s.label for s in specs if s.connected],
        )

        # 1. The stores, created when they were bought.
        stores: dict[str, FileStore] = {}
        for spec in sorted(specs, key=lambda s: -s.created):
            ms = here if spec.machine == THIS_HOST else other
            folder = dir / spec.folder
            folder.mkdir(parents=True)
            clock.t = now - spec.created * DAY
            fs, doc, _ = ms.init_store(
                folder,
                copies=spec.copies,
                label=spec.label,
                same_filesystem=True,
                identity=dict(spec.identity),
            )
            if not spec.connected and spec.machine == THIS_HOST:
                # Unplugged: this machine does not find it at any known folder.
                here.config.forget_store(doc["_id"])
            stores[spec.key] = fs
        for spec in specs:  # in the table's order, for the summary
            built.store_paths[spec.label] = dir / spec.folder
            built.store_ids[spec.label] = stores[spec.key].id
            built.notes[spec.label] = spec.note

        # 2. The files: bytes written through each FileStore, docs built by the schema.
        _import_files(built, here, stores, by_key, now, files, seed, rng)

        # 3. When the offline stores were last seen (their atime), oldest first.
        for spec in sorted(specs, key=lambda s: -s.last_seen):
            if spec.last_seen <= 0:
                continue
            clock.t = now - spec.last_seen * DAY
            ms = here if spec.machine == THIS_HOST else other
            ms.heartbeat({stores[spec.key].id: stores[spec.key]})

        # 4. The copies that will rot on the failing drive (small files, by ID).
        candidates = [f for f in built.files if set(f.stores) == {"studio-int", "usb-backup-2"}]
        candidates.sort(key=lambda f: (f.bytes > 8 * MIB, f.file_id))
        built.corrupt = [f.file_id for f in candidates[:CORRUPT_COPIES]]

        # 5. The history in log-1, in time order; then the bit rot, found by the engine.
        with _quiet_logging():
            built.events += _history(built, here, clock, now)
        for file_id in built.corrupt:
            _flip_bits(Path(stores["U"].file_path(file_id)), rng)

        # 6. This machine now: heartbeat with its connected stores.
        clock.t = now
        here.heartbeat({stores[s.key].id: stores[s.key] for s in specs if s.connected})
    finally:
        lib.close()
    return built


@dataclass
class _Plan:
    """One file to write: decided up front (sequentially, so `seed` fixes everything)."""

    index: int
    keys: tuple[str, ...]
    origin: str
    name: str
    size: int
    imported: float
    verified: dict[str, int | None]


def _plan_files(
    specs: dict[str, _StoreSpec], now: float, total: int, rng: random.Random
) -> list[_Plan]:
    counts = _counts(total, [share for _, share, _ in _PLACEMENTS])
    placements = [p for p, n in zip(_PLACEMENTS, counts, strict=True) for _ in range(n)]
    user = [i for i, p in enumerate(placements) if p[2] == "user"]
    clip_slots = set(rng.sample(user, max(1, total // 200)))
    numbers: dict[str, int] = {}
    plans = []
    for i, (keys, _, origin) in enumerate(placements):
        # Named and sized like a camera's files (proxies and renders like an editor's).
        if origin == "proxy":
            name = f"MVI_{rng.randrange(1000, 9999):04d}_proxy.mp4"
            size = _log_uniform(rng, 20_000, 250_000)
        elif origin == "render":
            name = f"render_{rng.choice(['wedding', 'promo', 'doc'])}_v{i % 9 + 1}.mov"
            size = _log_uniform(rng, 400_000, 1_500_000)
        else:
            pattern, _, lo, hi = rng.choices(_KINDS, weights=[k[1] for k in _KINDS])[0]
            if i in clip_slots:
                pattern, lo, hi = "MVI_{:04d}.MOV", *_CLIP_SIZES
            start = numbers.setdefault(pattern, rng.randrange(100, 8000))
            numbers[pattern] = start + rng.randrange(1, 4)
            name = pattern.format(start % 10000)
            size = _log_uniform(rng, lo, hi)
        # Imported after every store it is on was created, before any was last seen.
        lo_t = max(now - specs[k].created * DAY for k in keys) + HOUR
        hi_t = min(now - max(specs[k].last_seen * DAY, HOUR) for k in keys) - HOUR
        t = rng.uniform(lo_t, max(lo_t, hi_t))
        verified = {k: _verified(rng, specs[k], t, now) for k in keys}
        plans.append(_Plan(i, keys, origin, name, size, t, verified))
    return plans


def _import_files(
    built: DemoLibrary,
    ms: MetaStore,
    stores: dict[str, FileStore],
    specs: dict[str, _StoreSpec],
    now: float,
    total: int,
    seed: int,
    rng: random.Random,
) -> None:
    """Write every file's copies through the FileStores and save the docs in bulk.

    The writes run on a few threads: each FileStore import fsyncs the file and its
    folder, and waiting for those one after the other would dominate the build time.
    """
    plans = _plan_files(specs, now, total, rng)

    def write(plan: _Plan) -> dict[str, Any]:
        data = _content(seed, plan.index, plan.size)
        stored = {}
        ch: protocol.ContentHash | None = None
        for k in plan.keys:
            ch, mtime = _write_copy(stores[k], data, plan.imported)
            stored[stores[k].id] = schema.create_stored_value(
                specs[k].copies, mtime, plan.verified[k]
            )
        assert ch is not None
        return schema.create_file(plan.imported, ch, stored, origin=plan.origin, name=plan.name)

    with ThreadPoolExecutor(_WRITERS, thread_name_prefix="dmedia-demo") as pool:
        docs = list(pool.map(write, plans))
    for plan, doc in zip(plans, docs, strict=True):
        built.files.append(
            DemoFile(
                doc["_id"],
                plan.name,
                plan.size,
                plan.origin,
                tuple(specs[k].label for k in plan.keys),
            )
        )
    for result in ms.lib.docs.save_many(docs):
        if isinstance(result, Exception):  # pragma: no cover - a fresh database
            raise DemoError(f"cannot save a demo file doc: {result}")


def _verified(rng: random.Random, spec: _StoreSpec, imported: float, now: float) -> int | None:
    """When a copy was last verified: None (never), or a time between import and last seen.

    Copies on usb-backup-2 are all due (verified 16-28 days ago, or never) so the first
    scan reads every one of them; elsewhere some are due, most are not. No copy is older
    than 28 days, so the 30-day "unverified" downgrade does not fire at start.
    """
    last = now - spec.last_seen * DAY
    oldest = max(imported, now - 28 * DAY)
    if spec.key == "U":
        hi = min(last, now - 16 * DAY)
        return int(rng.uniform(oldest, hi)) if hi > oldest else None
    if spec.connected and rng.random() < 0.15:
        return None
    if last <= oldest:
        return None
    return int(rng.uniform(oldest, last))


def _history(built: DemoLibrary, ms: MetaStore, clock: FixedClock, now: float) -> int:
    """Past data-safety events, through the MetaStore at the time they happened."""
    events = 0
    ids = built.store_ids
    # sd-card-a7, last seen 12 days ago: downgraded after 3 days, purged after 8.
    clock.t = now - 9 * DAY
    ms.downgrade_store(ids["sd-card-a7"], reason=transitions.REASON_STALE)
    events += 1
    # A copy deleted by hand from studio-raid a week ago (the file was then on 3 stores).
    both = [
        f
        for f in built.files
        if set(f.stores) == {"studio-int", "usb-backup-2"} and f.file_id not in built.corrupt
    ]
    if both:
        clock.t = now - 6 * DAY - 5 * HOUR
        f = both[-1]
        ms.log_event(
            schema.LOG_FILE_MISSING,
            file_id=f.file_id,
            store_id=ids["studio-raid"],
            label="studio-raid",
        )
        events += 1
    clock.t = now - 4 * DAY
    ms.purge_store(ids["sd-card-a7"], reason=transitions.REASON_STALE)
    built.purged.append("sd-card-a7")
    for f in built.files:
        f.stores = tuple(s for s in f.stores if s != "sd-card-a7")
    events += 1
    # sd-card-r5, last seen 5 days ago: downgraded 2 days ago.
    clock.t = now - 2 * DAY
    ms.downgrade_store(ids["sd-card-r5"], reason=transitions.REASON_STALE)
    events += 1
    return events
