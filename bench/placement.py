"""How fast is the dashboard's one query on a big SQLite library? (run by hand, not a test)

Builds a synthetic library of N file docs (default 1,000,000) spread over 8 stores with a
realistic mix of placements (most user files at 3 copies, a tail at 0-2, downgraded copies,
some render/proxy/cache files), through the backend's ordinary bulk path
(`docs.save_many`, 10,000 docs per transaction), so the derived tables are built exactly
as in production. Then it prints the build time, the file size, and the median time of
`placement_summary()` plus the durability histogram derived from it, and of
`health.assess()` over the same summary.

    uv run python bench/placement.py [--files N] [--runs R] [--path FILE] [--keep]
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from dmedia_tui import durability  # noqa: E402
from dmedia_tui.db.base import PlacementRow  # noqa: E402
from dmedia_tui.db.sqlite import SQLiteLibrary  # noqa: E402
from dmedia_tui.protocol import b32encode, random_id  # noqa: E402

NOW = 1_795_608_000
BATCH = 10_000
STORES = 8


def histogram(rows: list[PlacementRow]) -> dict[int, tuple[int, int]]:
    """User files and bytes by durability (3 = 3 or more), from the summary alone."""
    out = {d: [0, 0] for d in range(4)}
    for r in rows:
        if r.origin != "user":
            continue
        d = min(3, sum(c for _, c in durability.parse_placement(r.placement)))
        out[d][0] += r.count
        out[d][1] += r.bytes
    return {d: (n, b) for d, (n, b) in out.items()}


def synthetic_files(n: int, stores: list[str], seed: int = 1) -> Any:
    """Yield file docs in batches; IDs are random-looking 48-char sortable base32."""
    rng = random.Random(seed)
    weights = [(3, 0.80), (2, 0.10), (1, 0.06), (4, 0.02), (0, 0.02)]
    counts, probs = zip(*weights, strict=True)
    batch: list[dict[str, Any]] = []
    for i in range(n):
        where = rng.sample(stores, rng.choices(counts, probs)[0])
        stored = {}
        for s in where:
            e: dict[str, Any] = {"copies": 1, "mtime": NOW - rng.randint(0, 10**7)}
            if rng.random() < 0.7:
                e["verified"] = NOW - rng.randint(0, 40 * 86400)
            if s == stores[-1]:
                e["copies"] = 0  # a downgraded store
            stored[s] = e
        size = int(rng.lognormvariate(16, 2)) + 1
        batch.append(
            {
                "_id": b32encode(i.to_bytes(5, "big") + rng.randbytes(25)),
                "type": "dmedia/file",
                "time": NOW - rng.randint(0, 10**8),
                "atime": NOW - rng.randint(0, 10**7),
                "bytes": size,
                "origin": rng.choices(["user", "render", "proxy", "cache"], [85, 5, 5, 5])[0],
                "name": f"MVI_{i:07d}.MOV",
                "ext": "mov",
                "leaf_hashes": "A" * 40 * (1 + size // (8 * 2**20)),
                "stored": stored,
            }
        )
        if len(batch) == BATCH:
            yield batch
            batch = []
    if batch:
        yield batch


def timed(fn: Any, runs: int) -> tuple[float, Any]:
    """Median wall time in seconds of `runs` calls, and the last result."""
    times, result = [], None
    for _ in range(runs):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def build_library(
    path: Path, files: int, store_docs: list[dict[str, Any]] | None = None, progress: bool = True
) -> tuple[list[str], float]:
    """Create a synthetic library of `files` file docs at `path` (other benches reuse this).

    `store_docs` (default: STORES plain ones) are saved first; the file docs spread over
    their IDs in sorted order, the last of which holds only downgraded (copies 0) entries.
    Returns the sorted store IDs and the seconds spent on the file docs. The library is
    closed (WAL checkpointed) on return.
    """
    lib = SQLiteLibrary(path)
    if store_docs is None:
        store_docs = [
            {"_id": s, "type": "dmedia/store", "label": f"s{i}", "copies": 1}
            for i, s in enumerate(sorted(random_id() for _ in range(STORES)))
        ]
    lib.docs.save_many(store_docs)
    stores = sorted(d["_id"] for d in store_docs)
    t0 = time.perf_counter()
    done = 0
    for batch in synthetic_files(files, stores):
        lib.docs.save_many(batch)
        done += len(batch)
        if progress and done % 100_000 == 0:
            rate = done / (time.perf_counter() - t0)
            print(f"  {done:>9,} files  {rate:,.0f} docs/s", file=sys.stderr)
    build = time.perf_counter() - t0
    lib.close()  # checkpoint the WAL so the file size is the real one
    return stores, build


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=1_000_000, help="file docs to create")
    ap.add_argument("--runs", type=int, default=15, help="timed runs of each query")
    ap.add_argument("--path", help="library file (default: a temp dir, removed unless --keep)")
    ap.add_argument("--keep", action="store_true", help="keep the library file")
    args = ap.parse_args(argv)

    tmp = None
    if args.path:
        path = Path(args.path)
        if path.exists():
            print(f"refusing to overwrite {path}", file=sys.stderr)
            return 2
    else:
        tmp = tempfile.mkdtemp(prefix="dmedia-bench-")
        path = Path(tmp) / "library.sqlite3"

    stores, build = build_library(path, args.files)

    lib = SQLiteLibrary(path, create=False)
    size = sum(os.path.getsize(p) for p in (path, Path(f"{path}-wal")) if p.exists())
    summary_s, rows = timed(lib.placement_summary, args.runs)
    both_s, hist = timed(lambda: histogram(lib.placement_summary()), args.runs)
    store_docs = lib.stores()

    print(f"files          {args.files:,} (+{STORES} stores), {len(rows):,} placement groups")
    print(f"build          {build:.1f} s ({args.files / build:,.0f} docs/s via save_many)")
    print(f"database size  {size / 1e6:,.1f} MB ({size / max(1, args.files):,.0f} B/file)")
    print(f"placement_summary()              median {summary_s * 1000:.2f} ms of {args.runs}")
    print(f"placement_summary() + histogram  median {both_s * 1000:.2f} ms of {args.runs}")
    try:
        from dmedia_tui import health

        online = set(stores[:-2])
        assess_s, _ = timed(
            lambda: health.assess(lib.placement_summary(), store_docs, [], NOW, online),
            args.runs,
        )
        print(f"summary + health.assess()        median {assess_s * 1000:.2f} ms of {args.runs}")
    except Exception as e:  # noqa: BLE001 - health is someone else's module; report, go on
        print(f"health.assess() not timed: {e}")
    # The drill-down queries, for scale (first page, as the screens ask for them).
    busiest = stores[0]
    for label, fn in [
        ("files_by_store(limit=100)", lambda: lib.files_by_store(busiest, 100)),
        ("fragile_files(limit=100)", lambda: lib.fragile_files(100)),
        ("copies_due(limit=100)", lambda: lib.copies_due(busiest, NOW - 15 * 86400, 100)),
        ("verification_stats()", lambda: lib.verification_stats(busiest)),
        ("docs.update_seq()", lib.docs.update_seq),
        ("docs.count()", lib.docs.count),
    ]:
        t, _ = timed(fn, args.runs)
        print(f"{label:<33}median {t * 1000:.2f} ms of {args.runs}")
    for d, (n, b) in hist.items():
        print(f"  durability {d}{'+' if d == 3 else ' '}  {n:>9,} user files  {b / 1e12:8.2f} TB")
    lib.close()
    if tmp and not args.keep:
        for p in Path(tmp).iterdir():
            p.unlink()
        os.rmdir(tmp)
    elif args.keep or args.path:
        print(f"library kept at {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
