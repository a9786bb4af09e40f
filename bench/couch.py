"""How does the CouchDB backend scale on PouchDB Server? (run by hand, not a test)

Imports N synthetic file docs (default 100,000; the same mix as bench/placement.py)
through `docs.save_many` (`_bulk_docs`, 500 docs a request) and prints:
- the bulk import rate (docs/s);
- the first `placement_summary()`: on PouchDB Server it reads every doc once from
  `_changes` (on Apache CouchDB it builds the `placement` view index);
- the dashboard refresh, `placement_summary()` + durability histogram, (a) when nothing
  changed (the per-update_seq cache: one db-info request) and (b) after 100 docs changed;
- the drill-down queries the screens run (median of --runs; the first run of each builds
  that view's index, which on PouchDB takes minutes at 100,000 docs).

    uv run python bench/couch.py [--files N] [--runs R] [--url http://host:5984/]

Without --url it starts an in-memory PouchDB Server from tests/node_modules
(`npm ci --ignore-scripts` in tests/ first).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout
sys.path.insert(0, str(ROOT / "bench"))

from placement import NOW, STORES, histogram, synthetic_files  # noqa: E402

from dmedia_tui.db.couch import CouchLibrary  # noqa: E402
from dmedia_tui.protocol import random_id  # noqa: E402
from tests.couchserver import start_pouchdb_server  # noqa: E402

GOAL_S = 2.0  # dashboard refresh goal


def timed(fn: Any, runs: int, before: Any = None) -> tuple[float, Any]:
    """Median wall time in seconds of `runs` calls (each after `before()`), last result."""
    times, result = [], None
    for _ in range(runs):
        if before is not None:
            before()
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000, help="file docs to create")
    ap.add_argument("--runs", type=int, default=5, help="timed runs of each query")
    ap.add_argument("--url", help="an existing CouchDB (default: start PouchDB Server)")
    args = ap.parse_args(argv)

    server = None
    if args.url:
        base = args.url.split("?")[0]
    else:
        server = start_pouchdb_server(Path(tempfile.mkdtemp(prefix="dmedia-bench-couch-")))
        base = server.url
    url = f"{base}?prefix=bench{int(time.time())}-"
    try:
        lib = CouchLibrary(url)
        stores = sorted(random_id() for _ in range(STORES))
        lib.docs.save_many(
            [{"_id": s, "type": "dmedia/store", "label": f"s{i}"} for i, s in enumerate(stores)]
        )
        t0 = time.perf_counter()
        done = 0
        docs: list[dict[str, Any]] = []
        for batch in synthetic_files(args.files, stores):
            results = lib.docs.save_many(batch)
            bad = [r for r in results if not isinstance(r, dict)]
            if bad:
                print(f"save_many failed: {bad[0]}", file=sys.stderr)
                return 1
            done += len(batch)
            docs.extend(batch[:10])
            print(
                f"  {done:>9,} files  {done / (time.perf_counter() - t0):,.0f} docs/s",
                file=sys.stderr,
            )
        build = time.perf_counter() - t0

        t0 = time.perf_counter()
        rows = lib.placement_summary()
        first = time.perf_counter() - t0

        def refresh() -> Any:
            return histogram(lib.placement_summary())

        def change_100() -> None:
            for d in docs[:100]:
                d["atime"] = d.get("atime", 0) + 1
            lib.docs.save_many(docs[:100])

        cached_s, _ = timed(refresh, args.runs)
        changed_s, hist = timed(refresh, args.runs, before=change_100)

        print(f"server         {lib.display_url}")
        print(f"files          {args.files:,} (+{STORES} stores), {len(rows):,} placement groups")
        print(f"bulk import    {build:.1f} s ({args.files / build:,.0f} docs/s via _bulk_docs)")
        print(f"first placement_summary() ({lib.summary_mode} mode)        {first:.1f} s")
        print(f"refresh, nothing changed (cached per update_seq)   median {cached_s * 1000:.1f} ms")
        verdict = "meets" if changed_s <= GOAL_S else "MISSES"
        print(
            f"refresh after 100 docs changed                    median {changed_s:.2f} s"
            f"  ({verdict} the {GOAL_S:.0f} s goal)"
        )
        busiest = stores[0]
        for label, fn in [
            ("files_by_store(limit=100)", lambda: lib.files_by_store(busiest, 100)),
            ("fragile_files(limit=100)", lambda: lib.fragile_files(100)),
            ("copies_due(limit=100)", lambda: lib.copies_due(busiest, NOW - 15 * 86400, 100)),
            ("verification_stats()", lambda: lib.verification_stats(busiest)),
            ("stores()", lib.stores),
            ("docs.update_seq()", lib.docs.update_seq),
            ("docs.count()", lib.docs.count),
        ]:
            t, _ = timed(fn, args.runs)
            print(f"{label:<34}median {t * 1000:.1f} ms of {args.runs}")
        for d, (n, b) in hist.items():
            print(
                f"  durability {d}{'+' if d == 3 else ' '}  {n:>9,} user files  {b / 1e12:8.2f} TB"
            )
        lib.close()
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
