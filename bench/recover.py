"""What a store's recovery costs (run by hand, not a test): at every engine start, drive
connect and `daemon --once`, `recover_store` looks for copies in the store's files/ that
the library does not record there.

Builds a real FileStore of N small copies (tiny distinct contents, imported through
MetaStore.import_paths into an SQLite library), then prints the time and CPU of:
the first recovery (no folders-seen record: every files/XX folder listed and compared
with the library), an idle one (nothing changed: one stat a folder), one after a copy
was put there by hand (its folder alone listed, the copy adopted), and one after the
library lost an entry (every folder listed again, the copy relinked); and, for the
record, the count of every folder's entries that each recovery made before (FileStore.count).
Before the idle runs it waits out the 2 s in which a just-changed folder's stamp is not
trusted.

    nice uv run python bench/recover.py [--copies 100000] [--dir DIR]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout

from dmedia_tui import filestore, transitions  # noqa: E402
from dmedia_tui.clock import FixedClock  # noqa: E402
from dmedia_tui.config import Config  # noqa: E402
from dmedia_tui.db.sqlite import SQLiteLibrary  # noqa: E402
from dmedia_tui.metastore import MetaStore  # noqa: E402

NOW = 1_795_608_000


def timed(label: str, fn, copies: int) -> dict[str, int]:
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn()
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print(
        f"  {label:<34} {wall * 1000:9.1f} ms wall {cpu * 1000:9.1f} ms CPU"
        f"  ({cpu / copies * 1e6:.2f} us CPU a copy)  folders listed {out['folders']:5d}"
        f"  adopted {out['adopted']}  relinked {out['relinked']}"
    )
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--copies", type=int, default=100_000)
    ap.add_argument("--dir", type=Path, default=Path("/var/tmp"))
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dmedia-recover-", dir=args.dir))
    try:
        src = root / "src"
        for i in range(args.copies):
            d = src / f"d{i // 1000:04d}"
            if i % 1000 == 0:
                d.mkdir(parents=True)
            (d / f"f{i:07d}").write_bytes(i.to_bytes(8, "big") + b"recover")
        lib = SQLiteLibrary(root / "library.sqlite3")
        ms = MetaStore(lib, Config.load(root / "config", root / "data"), FixedClock(NOW))
        (root / "store").mkdir()
        fs, _, _ = ms.init_store(root / "store", label="a", same_filesystem=True)
        t0 = time.perf_counter()
        ms.import_paths([src], fs)
        n = lib.verification_stats(fs.id).copies
        print(
            f"{n:,} copies on one store in {len(fs.folder_stamps())} folders"
            f" (imported in {time.perf_counter() - t0:.1f} s)"
        )

        def fresh() -> MetaStore:  # a new process on the same library: nothing in memory
            return MetaStore(lib, ms.config, ms.clock)

        timed("first (no record: every folder)", lambda: fresh().recover_store(fs), n)
        time.sleep(filestore.RACY_NS / 1e9 + 0.1)
        timed("again (the first saw racy folders)", lambda: fresh().recover_store(fs), n)
        timed("idle (nothing changed)", lambda: fresh().recover_store(fs), n)
        c0, t0 = time.process_time(), time.perf_counter()
        fs.count()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        print(
            f"  {'(before: the count every idle run made)':<34} {wall * 1000:9.1f} ms wall"
            f" {cpu * 1000:9.1f} ms CPU  ({cpu / n * 1e6:.2f} us CPU a copy)"
        )
        fs.import_bytes(b"put there by hand")
        time.sleep(filestore.RACY_NS / 1e9 + 0.1)
        timed("a copy put there by hand", lambda: fresh().recover_store(fs), n)
        lost = next(iter(lib.file_ids_on_among(fs.id, [min(fs.folder_stamps())])))
        lib.docs.update(lost, transitions.mark_missing, fs.id)
        timed("the library lost an entry", lambda: fresh().recover_store(fs), n)
        lib.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
