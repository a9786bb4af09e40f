"""Benchmark: FileStore.verify vs `b3sum` over the same canonical copies.

verify hashes each copy leaf by leaf (zero-copy mmap, leaves in parallel) and checks the
root against the ID; b3sum computes plain blake3 with mmap and all cores, the raw speed we
compare with. Goal: ratio (b3sum time / verify time) >= 0.95.

verify drops a copy's pages from the page cache before it reads it (the bytes must come
from the drive), so every contender starts each round with the copies' pages dropped the
same way (bench/_util.uncache). On a disk (the default, under /var/tmp) that measures the
disk's speed for all of them; on a tmpfs (`--dir /dev/shm/x`) nothing can be dropped and
it measures the hashing alone.
Run: `uv run python bench/verify.py` (needs b3sum: `apt-get install b3sum`).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _util as U  # noqa: E402
from blake3 import blake3  # noqa: E402

from dmedia_tui.filestore import FileStore, VerifyStatus  # noqa: E402
from dmedia_tui.protocol import hash_path  # noqa: E402


def main() -> int:
    args = U.parser(__doc__.splitlines()[0]).parse_args()
    b3sum = shutil.which("b3sum")
    work = U.workdir(args.dir)
    try:
        files = U.make_corpus(work / "card", args.mb)
        (work / "store").mkdir()
        store = FileStore.create(work / "store")
        ids = [store.import_file(p).content_hash.id for p in files]
        U.rmtree(work / "card")
        copies = [store.file_path(i) for i in ids]
        total = sum(p.stat().st_size for p in copies)
        print(f"store: {len(ids)} files, {total / U.MB:.0f} MB in {store.path}")

        def verify() -> None:
            for file_id in ids:
                r = store.verify(file_id)
                assert r.status is VerifyStatus.OK, r

        def readinto() -> None:
            for p in copies:
                hash_path(p, use_mmap=False)

        def raw_blake3() -> None:
            for p in copies:
                blake3(max_threads=blake3.AUTO).update_mmap(p)

        def run_b3sum() -> None:
            subprocess.run([b3sum, *map(str, copies)], check=True, stdout=subprocess.DEVNULL)

        # Interleave the contenders round by round so background noise hits them alike.
        contenders = {"verify": verify, "readinto": readinto, "update_mmap": raw_blake3}
        if b3sum:
            contenders["b3sum"] = run_b3sum
        best = {name: float("inf") for name in contenders}
        for _ in range(args.rounds):
            for name, fn in contenders.items():
                best[name] = min(best[name], U.best_of(1, fn, lambda: U.uncache(copies)))
        print(f"FileStore.verify        {U.rate(total, best['verify'])}   (mmap, parallel leaves)")
        print(f"hash_path (readinto)    {U.rate(total, best['readinto'])}   (the fallback path)")
        print(f"blake3 update_mmap      {U.rate(total, best['update_mmap'])}   (plain blake3)")
        if not b3sum:
            print("b3sum not found: install it (`apt-get install -y b3sum`) for the ratio")
            return 1
        print(f"b3sum                   {U.rate(total, best['b3sum'])}")
        ratio = best["b3sum"] / best["verify"]
        verdict = U.verdict(ratio >= 0.95)
        print(f"ratio (verify / b3sum speed): {ratio:.2f}   goal >= 0.95   {verdict}")
    finally:
        if not args.keep:
            U.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
