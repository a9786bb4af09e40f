"""Does a library of a million files render its dashboard in well under a second? (by hand)

Builds (or, with --db pointing at one built earlier, reuses) a synthetic SQLite library of
N file docs (default 1,000,000; bench/placement.py's builder) over 8 stores: five online
through a machine's fresh heartbeat, one offline for 5 days, one marked failing and one
downgraded; plus a few hundred log events. Then it measures, with a real MetaStore on a
fixed clock and a fresh config:

1. `load_dashboard()` (what the app's refresh thread computes: health with verification
   ages, the last events, labels), cold (first call, verification stats included) and warm
   (median of 5; verification ages are cached for 30 s);
2. `DmediaApp.run_test(size=(120, 40))` from start to the first frame that shows the
   durability histogram of the whole library (read-only app, no engine);
3. the store screen of the biggest store: from opening it to its files table having rows;
4. the process's peak RSS with the dashboard up.

    uv run python bench/dashboard.py [--files N] [--db PATH] [--keep]

Build once with `--db /var/tmp/dmedia-dash.sqlite3` (it is kept) and re-run against it.

Measured (2 vCPUs, page cache warm, 1,000,000 files, 2.6 GB, build 155 s): load_dashboard()
1100 ms cold / 998 ms warm, first histogram frame 1310 ms, store screen 91 ms, RSS 54 MB.
Nearly all of it is `SQLiteLibrary.stores()` and `.machines()`, ~500 ms each: without
ANALYZE statistics the planner answers `WHERE db=1 AND type=? AND deleted=0 ORDER BY id`
by walking the (db, id) primary key over every doc instead of the partial index doc_type.
With `INDEXED BY doc_type` there: 82 ms cold / 7 ms warm, first frame 280 ms.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout
sys.path.insert(0, str(Path(__file__).resolve().parent))

from placement import NOW, build_library  # noqa: E402

from dmedia_tui import schema  # noqa: E402
from dmedia_tui.clock import FixedClock  # noqa: E402
from dmedia_tui.config import Config  # noqa: E402
from dmedia_tui.db import open_library  # noqa: E402
from dmedia_tui.metastore import MetaStore  # noqa: E402
from dmedia_tui.protocol import random_id  # noqa: E402

GOAL = 0.5  # seconds: "well under a second"
DAY = 86400
TB = 10**12
ONLINE = 5  # stores 0..4 are online; then one offline, one failing, one downgraded
EVENTS = 300


def store_docs(machine_id: str) -> list[dict[str, Any]]:
    """Eight store docs, labelled by role, in sorted-ID order (the last one downgraded)."""
    ids = sorted(random_id() for _ in range(8))
    roles = [f"online-{i}" for i in range(ONLINE)] + ["offline", "failing", "downgraded"]
    docs = []
    for i, (sid, role) in enumerate(zip(ids, roles, strict=True)):
        fields: dict[str, Any] = {
            "machine_id": machine_id,
            "bytes_total": 8 * TB,
            "bytes_avail": 2 * TB,
            "drive_serial": f"WD-BENCH{i:04d}",
            "drive_model": "WDC WD80EFAX",
            "removable": role in ("offline", "downgraded"),
        }
        if role == "offline":
            fields["atime"] = NOW - 5 * DAY
        if role == "downgraded":
            fields["atime"] = NOW - 20 * DAY
            fields["no_new_copies"] = True
        doc = schema.create_store(NOW, sid, 1, role, **fields)
        if role == "failing":
            doc["failure"] = {"time": NOW - DAY, "reason": "3 corrupt copies", "corrupt_count": 3}
        if role == "downgraded":
            doc["downgraded"] = {"time": NOW - 17 * DAY, "reason": "not seen for 3 days"}
        docs.append(doc)
    return docs


def build(path: Path, files: int) -> float:
    """The library, its machine heartbeat and some events; returns the build seconds."""
    machine_id = random_id()
    docs = store_docs(machine_id)
    by_role = {d["label"]: d["_id"] for d in docs}
    _, seconds = build_library(path, files, docs)
    lib = open_library(str(path), create=False)
    online = [by_role[f"online-{i}"] for i in range(ONLINE)] + [by_role["failing"]]
    lib.docs.save(schema.create_machine(NOW, machine_id, "nas", online))
    victims = lib.files_by_store(by_role["failing"], EVENTS)
    events = []
    for i, f in enumerate(victims):
        t = NOW - (EVENTS - i) * 600
        kind = schema.LOG_FILE_CORRUPT if i % 3 == 0 else schema.LOG_FILE_MISSING
        events.append(
            schema.create_log(t, kind, machine_id, file_id=f["_id"], store_id=by_role["failing"])
        )
    events.append(
        schema.create_log(
            NOW - 17 * DAY,
            schema.LOG_STORE_DOWNGRADE,
            machine_id,
            store_id=by_role["downgraded"],
            reason="not seen for 3 days",
        )
    )
    lib.log.save_many(events)
    lib.close()
    return seconds


def metastore(path: Path, tmp: Path) -> MetaStore:
    config = Config.load(tmp / "config", tmp / "data")
    return MetaStore(open_library(str(path), create=False), config, FixedClock(NOW))


def measure_data(path: Path, tmp: Path) -> tuple[float, float, Any]:
    """Cold and warm (median of 5) load_dashboard(), as the refresh thread calls it."""
    from dmedia_tui.tui.data import load_dashboard

    ms = metastore(path, tmp)
    t0 = time.perf_counter()
    data = load_dashboard(ms, None)
    cold = time.perf_counter() - t0
    warm = []
    for _ in range(5):
        t0 = time.perf_counter()
        load_dashboard(ms, None)
        warm.append(time.perf_counter() - t0)
    ms.lib.close()
    return cold, statistics.median(warm), data


async def measure_app(path: Path, tmp: Path, user_files: int) -> tuple[float, float, int]:
    """Seconds to the first frame with the full histogram; seconds to the store's rows."""
    from dmedia_tui.tui.app import DmediaApp
    from dmedia_tui.tui.screens.store import StoreScreen
    from dmedia_tui.tui.widgets.histogram import DurabilityHistogram

    ms = metastore(path, tmp)
    app = DmediaApp(ms, engine=None, read_only=True)
    goal: list[Any] = [None, None]  # [predicate, time of the first frame drawn once it held]
    original = app._display

    def display(screen: Any, renderable: Any) -> None:
        original(screen, renderable)
        if goal[1] is None and goal[0] is not None and goal[0]():
            goal[1] = time.perf_counter()

    async def first_frame(predicate: Any) -> float:
        goal[:] = [predicate, None]
        while goal[1] is None:
            await asyncio.sleep(0.002)
        return goal[1]

    def histogram_filled() -> bool:
        hist = app.screen.query(DurabilityHistogram)
        return bool(hist) and sum(b.files for b in hist.first().buckets) == user_files

    def store_rows_shown() -> bool:
        table = app.screen.query("#files")
        return isinstance(app.screen, StoreScreen) and bool(table) and table.first().row_count > 0

    app._display = display  # type: ignore[method-assign]
    t0 = time.perf_counter()
    async with app.run_test(size=(120, 40)) as pilot:
        first = await first_frame(histogram_filled) - t0
        biggest = max(app.data.health.store_rows, key=lambda r: r.files)
        await pilot.pause()
        t1 = time.perf_counter()
        app.open_store(biggest.store_id)
        store_rows = await first_frame(store_rows_shown) - t1
        await pilot.pause()
    ms.lib.close()
    return first, store_rows, biggest.files


def data_rows(path: Path) -> list[Any]:
    """The placement summary (for the total file count, untimed)."""
    lib = open_library(str(path), create=False)
    try:
        return lib.placement_summary()
    finally:
        lib.close()


def verdict(seconds: float) -> str:
    return "OK" if seconds < GOAL else "SLOW"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1_000_000, help="file docs to create")
    ap.add_argument("--db", help="library file: reused if it exists, else built there and kept")
    ap.add_argument("--keep", action="store_true", help="keep a library built in a temp dir")
    args = ap.parse_args(argv)

    base = "/var/tmp" if os.path.isdir("/var/tmp") else None
    tmp = Path(tempfile.mkdtemp(prefix="dmedia-dash-", dir=base))
    path = Path(args.db) if args.db else tmp / "library.sqlite3"
    try:
        if path.exists():
            print(f"library        {path} (reused)")
        else:
            seconds = build(path, args.files)
            print(f"built          {args.files:,} files in {seconds:.0f} s at {path}")
        size = sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if p.exists())
        cold, warm, data = measure_data(path, tmp)
        h = data.health
        user = sum(b.files for b in h.histogram)
        total = sum(r.count for r in data_rows(path))
        states = ", ".join(f"{r.label}={r.state.value}" for r in h.store_rows)
        print(f"library        {total:,} files ({user:,} user), {size / 1e6:,.0f} MB")
        print(f"stores         {states}")
        print(f"alerts         {', '.join(a.code for a in h.alerts) or 'none'}")
        print(f"1. load_dashboard() cold   {cold * 1000:7.1f} ms   {verdict(cold)}")
        print(f"   load_dashboard() warm   {warm * 1000:7.1f} ms   {verdict(warm)} (median of 5)")
        first, store_rows, store_files = asyncio.run(measure_app(path, tmp, user))
        print(f"2. run_test -> histogram   {first * 1000:7.1f} ms   {verdict(first)}")
        print(
            f"3. store screen rows       {store_rows * 1000:7.1f} ms   {verdict(store_rows)}"
            f" (biggest store, {store_files:,} files)"
        )
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(f"4. peak RSS                {rss:7.0f} MB")
        ok = max(cold, first) < GOAL
        print(
            f"verdict: a {total:,}-file library's dashboard "
            + (f"is up in well under a second (< {GOAL} s)" if ok else f"takes over {GOAL} s")
        )
        return 0 if ok else 1
    finally:
        if args.keep and not args.db:
            print(f"library kept at {path}")
            for p in tmp.iterdir():
                if p.is_dir():
                    shutil.rmtree(p)  # the config and data dirs
        else:
            shutil.rmtree(tmp)  # with a library built here, unless kept


if __name__ == "__main__":
    sys.exit(main())
