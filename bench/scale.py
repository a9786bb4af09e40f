"""How does each library-wide operation grow with the library? (run by hand, not a test)

Builds (and caches, in a temp dir outside the repo) SQLite libraries of 10k, 100k and
1M file docs with *real* leaf hashes (`check` finds nothing unless `--bad N` seeds N
invalid docs), then for each size prints, per file or per copy, the figures of issue 13:
`check` (docs/s, peak RSS of a process doing only that and of its worker processes;
CPU counts the workers'; how long the process waited for a CPU that others used; then a
2nd run over the same library, which meets every problem the 1st logged; the storage
check the CLI's `check` runs first), an idle round's check (CPU), an
idle `daemon --once` round (Engine.run_once with nothing to do, CPU),
`store downgrade` and `store purge` of the busiest store (per copy, per 1M copies), the
dashboard's cold load (`load_dashboard()`, what the app's refresh thread computes: health
with each store's verification ages, the latest events; the bare placement summary +
health beside it) and the app's first frames (headless, 120x40, each in a fresh process:
the first paint, a "loading" placeholder, and the first frame showing the library's
durability histogram). Copies of the cached library are worked on, so runs are
repeatable. Small-file import and copy are not measured here.

Cached libraries are named by schema version and page size (`-16k`: a new library's
pages, dmedia_tui.db.sqlite.PAGE_SIZE): a library cached by an older schema with the same
page size is copied and migrated (the older file is left as it is, for checkouts still
using it).

    nice uv run python bench/scale.py [--sizes 10000,100000] [--bad N] [--cache DIR]
        [--per-file] [--couch] [--only-dashboard] [--only check,idle,...]

`--bad N` on a size already built is derived from the clean library (N docs made invalid
in SQL), minutes less than building it again.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from dmedia_tui import protocol  # noqa: E402
from dmedia_tui.db.sqlite import PAGE_SIZE, SCHEMA_VERSION, SQLiteLibrary  # noqa: E402

NOW = 1_795_608_000
STORES = 6
BATCH = 10_000


def synthetic(n: int, stores: list[str], bad: int, seed: int = 13) -> Any:
    """File docs in batches: real IDs and leaf hashes of tiny distinct contents."""
    rng = random.Random(seed)
    batch: list[dict[str, Any]] = []
    bad_at = set(rng.sample(range(n), min(bad, n)))
    for i in range(n):
        data = i.to_bytes(8, "big") + b"scale"
        leaf = protocol.hash_leaf(0, data)
        where = rng.sample(stores, rng.choices([3, 2, 1, 4], [80, 10, 6, 4])[0])
        stored = {}
        for s in where:
            e: dict[str, Any] = {"copies": 1, "mtime": NOW - rng.randint(0, 10**7)}
            if rng.random() < 0.7:
                e["verified"] = NOW - rng.randint(0, 10 * 86400)
            stored[s] = e
        doc = {
            "_id": protocol.hash_root(len(data), [leaf]),
            "type": "dmedia/file",
            "time": NOW - rng.randint(0, 10**8),
            "atime": NOW - rng.randint(0, 10**7),
            "bytes": len(data),
            "origin": "user",
            "name": f"IMG_{i:07d}.JPG",
            "ext": "jpg",
            "leaf_hashes": protocol.encode_leaf_hashes([leaf]),
            "stored": stored,
        }
        if i in bad_at:
            doc["bytes"] = -1  # invalid by the schema
        batch.append(doc)
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def build(path: Path, n: int, bad: int) -> float:
    lib = SQLiteLibrary(path)
    stores = sorted(protocol.random_id() for _ in range(STORES))
    lib.docs.save_many(
        [
            {
                "_id": s,
                "type": "dmedia/store",
                "time": NOW,
                "copies": 1,
                "label": f"s{i}",
                "atime": NOW,
            }
            for i, s in enumerate(stores)
        ]
    )
    t0 = time.perf_counter()
    for batch in synthetic(n, stores, bad):
        lib.docs.save_many(batch)
    lib.close()
    return time.perf_counter() - t0


def cached(cache: Path, n: int, bad: int) -> Path:
    path = cache / f"lib-{n}-bad{bad}-v{SCHEMA_VERSION}-{PAGE_SIZE >> 10}k.sqlite3"
    if path.exists():
        return path
    tmp = cache / f".building-{n}-{os.getpid()}.sqlite3"
    # Libraries of 4 KiB pages were cached without their page size in their name, and
    # schema 2 ones without a version: migrated copies keep the page size they had.
    older = [cache / f"lib-{n}-bad{bad}-v{v}.sqlite3" for v in range(SCHEMA_VERSION, 2, -1)]
    older = [p for p in [*older, cache / f"lib-{n}-bad{bad}.sqlite3"] if p.exists()]
    if PAGE_SIZE != 4096:
        older = []
    if older:
        import sqlite3

        t0 = time.perf_counter()
        src, dst = sqlite3.connect(older[0]), sqlite3.connect(tmp)  # plain: no migration
        src.backup(dst)
        src.close()
        dst.close()
        SQLiteLibrary(tmp, create=False, quick_check=False).close()  # migrates the copy
        os.replace(tmp, path)
        secs = time.perf_counter() - t0
        print(f"  migrated {older[0].name} to schema {SCHEMA_VERSION} in {secs:.0f} s: {path}")
        return path
    if bad:
        shutil.copy(cached(cache, n, 0), tmp)
        seed_bad(tmp, bad)
        os.replace(tmp, path)
        print(f"  seeded {bad:,} invalid docs in a copy of the clean library: {path}")
        return path
    secs = build(tmp, n, bad)
    os.replace(tmp, path)
    print(f"  built {n:,} files in {secs:.0f} s ({n / secs:,.0f} docs/s), cached at {path}")
    return path


def seed_bad(path: Path, bad: int) -> None:
    """Make `bad` file docs invalid (bytes -1, as `synthetic` does), spread over the IDs."""
    import sqlite3

    conn = sqlite3.connect(path)
    with conn:
        conn.execute(
            "UPDATE doc SET json = json_set(json, '$.bytes', -1) WHERE db = 1 AND id IN"
            " (SELECT id FROM doc WHERE db = 1 AND type = 'dmedia/file'"
            " ORDER BY substr(id, 25) LIMIT ?)",
            (bad,),
        )
    conn.close()


CHILD = r"""
import json, resource, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from dmedia_tui.clock import FixedClock
from dmedia_tui.config import Config
from dmedia_tui.db.sqlite import SQLiteLibrary
from dmedia_tui.metastore import MetaStore
from dmedia_tui import health
op, path, work = sys.argv[2], sys.argv[3], Path(sys.argv[4])
def cpu():  # this process's and its (waited-for) children's: check's worker processes
    r, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime + c.ru_utime + c.ru_stime
def runq():  # seconds this process was ready to run but waited for a CPU (other processes)
    return int(open("/proc/self/schedstat").read().split()[1]) / 1e9
def written():  # bytes this process wrote to files (write_bytes is no measure here: on
    # ext4 with large folios it counts a whole folio for each page dirtied, 5x wchar)
    io = dict(ln.split(": ") for ln in open("/proc/self/io").read().splitlines())
    return int(io["wchar"])
lib = SQLiteLibrary(path, create=False, quick_check=False)
ms = MetaStore(lib, Config.load(work / "config", work / "data"), FixedClock(1_795_608_000))
out = {}
if op == "dashboard":
    from dmedia_tui.tui.data import load_dashboard
    c0, t0 = cpu(), time.perf_counter()
    load_dashboard(ms, None)  # cold: the first call in this process
    out["seconds"], out["cpu"] = time.perf_counter() - t0, cpu() - c0
    t0 = time.perf_counter()
    summary = lib.placement_summary(); stores = lib.stores(); machines = lib.machines()
    health.assess(summary, stores, machines, 1_795_608_000, {s["_id"] for s in stores})
    out["bare"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    for s in stores:
        lib.verification_stats(s["_id"])
    out["vstats"] = time.perf_counter() - t0
elif op == "frame":
    import asyncio
    t0 = time.perf_counter()
    from dmedia_tui.tui.app import DmediaApp
    from dmedia_tui.tui.widgets.histogram import DurabilityHistogram
    out["imports"] = time.perf_counter() - t0
    app = DmediaApp(ms, engine=None, read_only=True)
    frames = []
    original = app._display
    def display(screen, renderable):
        original(screen, renderable)
        hist = app.screen.query(DurabilityHistogram)
        filled = bool(hist) and any(b.files for b in hist.first().buckets)
        frames.append((time.perf_counter(), cpu(), filled))
    app._display = display
    async def main():
        c0, t0 = cpu(), time.perf_counter()
        async with app.run_test(size=(120, 40)) as pilot:
            while not any(f for _, _, f in frames):
                await asyncio.sleep(0.002)
            await pilot.pause()
        return t0, c0
    c0 = cpu()
    t0, c0 = asyncio.run(main())
    out["first"], out["first_cpu"] = frames[0][0] - t0, frames[0][1] - c0
    data = next((t, c) for t, c, f in frames if f)
    out["data"], out["data_cpu"] = data[0] - t0, data[1] - c0
elif op in ("check", "check/storage"):  # /storage: as the CLI, the storage check beside
    c0, t0, q0 = cpu(), time.perf_counter(), runq()
    r = ms.check(storage=op.endswith("/storage"))
    out.update(seconds=time.perf_counter() - t0, cpu=cpu() - c0, docs=r.docs,
               invalid=r.invalid, logged=r.logged, runq=runq() - q0,
               workers_rss_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
    t0 = time.perf_counter()
    lib.check_storage()  # the CLI's `check` runs it too: PRAGMA quick_check, every page
    out["storage_seconds"] = time.perf_counter() - t0
elif op == "idle":
    ms.check_if_due()  # the full pass that sets the cursor
    c0, t0 = cpu(), time.perf_counter()
    r = ms.check_if_due()
    out.update(seconds=time.perf_counter() - t0, cpu=cpu() - c0, docs=r.docs)
elif op == "daemon":
    from dmedia_tui.engine import Engine
    Engine(ms, watch_drives=False, watch_folders=False, peers=False).run_once()  # settles
    engine = Engine(ms, watch_drives=False, watch_folders=False, peers=False)
    c0, t0 = cpu(), time.perf_counter()
    s = engine.run_once()  # nothing to do: no store connected, the check cursor is set
    out.update(seconds=time.perf_counter() - t0, cpu=cpu() - c0, events=s.events)
elif op.split("/")[0] in ("downgrade", "purge"):
    if op.endswith("/per-file"):  # the per-doc path (decode, transition, encode): the baseline
        from dmedia_tui.db.base import Database
        type(lib.docs).update_store_entries = Database.update_store_entries
    op = op.split("/")[0]
    sid = max(lib.stores(), key=lambda s: lib.verification_stats(s["_id"]).copies)["_id"]
    copies = lib.verification_stats(sid).copies
    c0, t0, w0 = cpu(), time.perf_counter(), written()
    ev = ms.downgrade_store(sid) if op == "downgrade" else ms.purge_store(sid)
    w1 = written()
    out.update(seconds=time.perf_counter() - t0, cpu=cpu() - c0, copies=copies, count=ev["count"],
               wchar=w1 - w0)
lib.close()
out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""


def run(op: str | list[str], src: Path, scratch: Path, copy: bool, times: int = 1) -> Any:
    """`op` in a fresh process on a copy of the library (or on it); `times` > 1: that many
    fresh processes over the same copy (a 2nd `check` meets what the 1st logged); a list
    of ops: one process for each, in turn, over the same copy."""
    ops = op if isinstance(op, list) else [op] * times
    work = Path(tempfile.mkdtemp(dir=scratch))
    path = src
    if copy:
        path = work / "library.sqlite3"
        shutil.copy(src, path)
        os.sync()
    # As installed: with bytecode (pip compiles it at install time; a checkout writes it
    # on first import), or every child would compile Textual and dmedia_tui from source.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    outs = []
    for op in ops:
        r = subprocess.run(
            [sys.executable, "-c", CHILD, str(Path(__file__).resolve().parent.parent), op, path]
            + [work],
            capture_output=True,
            text=True,
            check=False,
            env=env,
        )
        if r.returncode:
            shutil.rmtree(work, ignore_errors=True)
            raise SystemExit(f"{op} failed: {r.stderr.strip().splitlines()[-1:]}")
        outs.append(json.loads(r.stdout.strip().splitlines()[-1]))
    shutil.rmtree(work, ignore_errors=True)
    return outs[0] if len(ops) == 1 else outs


def best(op: str, src: Path, scratch: Path, repeat: int) -> dict[str, float]:
    """Each figure's minimum over `repeat` runs of op on the library itself."""
    runs = [run(op, src, scratch, copy=False) for _ in range(max(1, repeat))]
    return {k: min(r[k] for r in runs) for k in runs[0]}


def couch(n: int, bad: int) -> None:
    """The CouchDB backend on PouchDB Server (in memory, started here): the same library
    built through `_bulk_docs`, then check, downgrade and purge of the busiest store, in
    this process (CPU is the client's; the server's is its own)."""
    import resource

    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from dmedia_tui.clock import FixedClock
    from dmedia_tui.config import Config
    from dmedia_tui.db.couch import CouchLibrary
    from dmedia_tui.metastore import MetaStore
    from tests.couchserver import start_pouchdb_server

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    work = Path(tempfile.mkdtemp(prefix="dmedia-scale-couch-", dir="/var/tmp"))
    server = start_pouchdb_server(work / "server")
    try:
        lib = CouchLibrary(f"{server.url}?prefix=scale{int(time.time())}-")
        stores = sorted(protocol.random_id() for _ in range(STORES))
        lib.docs.save_many(
            [
                {"_id": s, "type": "dmedia/store", "time": NOW, "copies": 1, "atime": NOW}
                for s in stores
            ]
        )
        t0 = time.perf_counter()
        for batch in synthetic(n, stores, bad):
            for i in range(0, len(batch), 2000):
                lib.docs.save_many(batch[i : i + 2000])
        secs = time.perf_counter() - t0
        print(f"== CouchDB (PouchDB Server) {n:,} files: built in {secs:.0f} s")
        ms = MetaStore(lib, Config.load(work / "config", work / "data"), FixedClock(NOW))
        c0, t0 = cpu(), time.perf_counter()
        r = ms.check()
        wall, used = time.perf_counter() - t0, cpu() - c0
        print(
            f"  check                     {r.docs / wall:10,.0f} docs/s wall"
            f"  {used / r.docs * 1e6:6.1f} us client CPU/doc  (invalid {r.invalid})"
        )
        sid = max(stores, key=lambda s: lib.verification_stats(s).copies)
        copies = lib.verification_stats(sid).copies
        for op in ("downgrade", "purge"):
            c0, t0 = cpu(), time.perf_counter()
            ev = ms.downgrade_store(sid) if op == "downgrade" else ms.purge_store(sid)
            wall, used = time.perf_counter() - t0, cpu() - c0
            print(
                f"  store {op:<9}           {copies:,} copies  {wall:.1f} s wall"
                f" (= {wall / copies * 1e6:.0f} s per 1M copies)  client CPU"
                f" {used / copies * 1e6:.1f} us/copy  (count {ev['count']})"
            )
        lib.close()
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="10000,100000,1000000")
    ap.add_argument("--bad", type=int, default=0, help="seed N invalid file docs")
    ap.add_argument(
        "--cache",
        type=Path,
        default=Path(tempfile.gettempdir()) / "dmedia-scale-cache",
        help="where built libraries are kept between runs (never in the repo)",
    )
    ap.add_argument(
        "--only-dashboard",
        action="store_true",
        help="only the dashboard's cold load and the app's first frames",
    )
    ap.add_argument(
        "--repeat",
        type=int,
        default=5,
        help="dashboard and first-frame figures: the fastest of N fresh processes",
    )
    ap.add_argument(
        "--per-file",
        action="store_true",
        help="also time downgrade/purge on the per-doc path, for the ratio in the same run",
    )
    ap.add_argument(
        "--couch",
        action="store_true",
        help="CouchDB backend instead (PouchDB Server from tests/node_modules): check,"
        " downgrade and purge at each size",
    )
    ap.add_argument(
        "--only",
        default="dashboard,frame,check,idle,daemon,downgrade,purge",
        help="comma-separated figures to measure (default: all)",
    )
    args = ap.parse_args(argv)
    only = {"dashboard", "frame"} if args.only_dashboard else set(args.only.split(","))
    if args.couch:
        for n in (int(x) for x in args.sizes.split(",")):
            couch(n, args.bad)
        return 0
    args.cache.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="dmedia-scale-", dir="/var/tmp"))
    try:
        for n in (int(x) for x in args.sizes.split(",")):
            print(f"== {n:,} files (bad {args.bad})")
            src = cached(args.cache, n, args.bad)
            # Fastest of --repeat fresh processes, each figure on its own (a shared machine
            # slows some runs down; wall and CPU both shown).
            if "dashboard" in only:
                d = best("dashboard", src, scratch, args.repeat)
                print(
                    f"  dashboard cold load       {d['seconds'] * 1000:8.1f} ms wall"
                    f" {d['cpu'] * 1000:6.1f} ms CPU  (load_dashboard; placement summary +"
                    f" health alone {d['bare'] * 1000:.1f} ms, verification stats of {STORES}"
                    f" stores warm {d['vstats'] * 1000:.1f} ms)"
                )
            if "frame" in only:
                f = best("frame", src, scratch, args.repeat)
                print(
                    f"  app first frame           {f['first'] * 1000:8.1f} ms wall"
                    f" {f['first_cpu'] * 1000:6.1f} ms CPU (loading…); with the histogram"
                    f" {f['data'] * 1000:.1f} ms wall {f['data_cpu'] * 1000:.1f} ms CPU"
                    f"  (imports before: {f['imports'] * 1000:.0f} ms)"
                )
            checks = []
            if "check" in only:
                checks = run(["check", "check", "check/storage"], src, scratch, True)
            labels = ("check", "  2nd run", "  3rd, as the CLI")
            for what, c in zip(labels, checks, strict=False):
                print(
                    f"  {what:<24}  {c['docs'] / c['seconds']:10,.0f} docs/s wall"
                    f"  {c['docs'] / c['cpu']:10,.0f} docs/s CPU"
                    f"  {c['cpu'] / c['docs'] * 1e6:6.1f} us CPU/doc  {c['seconds']:6.1f} s"
                    f"  RSS {c['rss_mb']:.0f} MB (workers {c['workers_rss_mb']:.0f} MB)"
                    f"  (invalid {c['invalid']}, logged {c['logged']}; waited for a CPU"
                    f" {c['runq']:.1f} s)"
                )
            if checks:
                print(
                    "  storage check alone (quick_check; the CLI's check runs it beside"
                    f" the walk, 3rd run above)  {checks[0]['storage_seconds']:.1f} s"
                )
            if "idle" in only:
                i = run("idle", src, scratch, copy=True)
                print(
                    f"  idle round's check        {i['cpu'] * 1000:8.1f} ms CPU"
                    f" ({i['cpu'] / n * 1e6:.2f} us/file, {i['docs']} docs read)"
                )
            if "daemon" in only:
                dm = run("daemon", src, scratch, copy=True)
                print(
                    f"  idle daemon --once round  {dm['cpu'] * 1000:8.1f} ms CPU"
                    f" ({dm['cpu'] / n * 1e6:.2f} us/file; goal <= 1 s at 1M; engine only,"
                    f" no start-up)  {dm['seconds']:.2f} s wall"
                )
            for op in [o for o in ("downgrade", "purge") if o in only]:
                r = run(op, src, scratch, copy=True)
                per = r["cpu"] / r["copies"]
                print(
                    f"  store {op:<9}           {r['copies']:,} copies  {r['seconds']:.1f} s wall"
                    f" (= {r['seconds'] / r['copies'] * 1e6:.0f} s per 1M copies)"
                    f"  {r['cpu']:.1f} s CPU  {per * 1e6:6.1f} us CPU/copy"
                    f"  (= {per * 1e6:.0f} s CPU per 1M copies)  wrote"
                    f" {r['wchar'] / r['copies'] / 1024:.1f} KiB/copy"
                    f"  RSS {r['rss_mb']:.0f} MB"
                )
                if args.per_file:
                    b = run(op + "/per-file", src, scratch, copy=True)
                    print(
                        f"    per-file path         {b['seconds']:.1f} s wall"
                        f"  {b['cpu'] / b['copies'] * 1e6:6.1f} us CPU/copy:"
                        f" the set operation is {b['cpu'] / r['cpu']:.1f}x less CPU,"
                        f" {b['seconds'] / r['seconds']:.1f}x less wall"
                    )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
