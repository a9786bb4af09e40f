"""Benchmark: FileStore.import_file vs `cp -r` (+ `sync`) on the same bytes.

Import reads each file once, hashes it while writing it to tmp/, fsyncs it and renames it
into place; `cp` neither hashes nor syncs, so the fair comparison is `cp -r` + `sync`.
Goal: ratio (cp+sync time / import time) >= 0.8. Run: `uv run python bench/import.py`
(`--cold` drops the page cache before each run, as when importing from a card; root).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _util as U  # noqa: E402

from dmedia_tui.filestore import FileStore  # noqa: E402


def main() -> int:
    p = U.parser(__doc__.splitlines()[0])
    p.add_argument(
        "--cold",
        action="store_true",
        help="drop the page cache before each run (root; as when importing from a card)",
    )
    args = p.parse_args()
    work = U.workdir(args.dir)
    try:
        src = work / "card"
        files = U.make_corpus(src, args.mb)
        total = sum(p.stat().st_size for p in files)
        cache = "cold" if args.cold else "warm"
        print(f"corpus: {len(files)} files, {total / U.MB:.0f} MB in {src} ({cache} cache)")
        U.sync()
        U.warm(files)
        cp_dst = work / "cp"
        store_dir = work / "store"

        def reset() -> None:
            U.rmtree(cp_dst)
            U.rmtree(store_dir)
            store_dir.mkdir()
            U.sync()
            if args.cold:
                U.drop_caches()
            else:
                U.warm(files)

        def cp() -> None:
            subprocess.run(["cp", "-r", str(src), str(cp_dst)], check=True)

        def cp_sync() -> None:
            cp()
            U.sync()

        def do_import() -> None:
            store = FileStore.create(store_dir)
            for path in files:
                store.import_file(path)

        t_cp = U.best_of(args.rounds, cp, reset)
        t_cp_sync = U.best_of(args.rounds, cp_sync, reset)

        def do_import_files() -> None:
            store = FileStore.create(store_dir)
            for src, result in store.import_files(files):
                assert not isinstance(result, Exception), (src, result)

        t_imp = U.best_of(args.rounds, do_import, reset)
        t_batch = U.best_of(args.rounds, do_import_files, reset)
        print(f"cp -r           {U.rate(total, t_cp)}")
        print(f"cp -r + sync    {U.rate(total, t_cp_sync)}")
        print(f"import_file     {U.rate(total, t_imp)}   (hash + fsync per file)")
        print(f"import_files    {U.rate(total, t_batch)}   (same, fsync overlaps the next file)")
        ratio = t_cp_sync / t_imp
        verdict = U.verdict(ratio >= 0.8)
        print(f"ratio (import / cp+sync speed): {ratio:.2f}   goal >= 0.80   {verdict}")
        ratio = t_cp_sync / t_batch
        print(
            f"ratio (import_files / cp+sync speed): {ratio:.2f}  goal >= 0.80  "
            f"{U.verdict(ratio >= 0.8)}"
        )
        print(f"ratio (import / cp alone, no fsync): {t_cp / t_imp:.2f}")
    finally:
        if not args.keep:
            U.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
