"""The copy pipeline alone: filestore._pump against whole-leaf pipelining and `cp`.

Reads, hashes and writes a camera-like corpus in this process, with no database and no
CLI start-up, three ways: `_pump` as import and copy_to run it (512 KiB chunks that stay
in the CPU's cache, a writer thread per destination); the pipeline it replaced, modelled
here (8 MiB leaves: the next leaf read ahead in a thread, the leaf written by another while
it is hashed on all cores, so each byte goes through memory three times); and `cp` of
each file (no hash). Prints the best of --rounds of each and the ratios. On a tmpfs
(`--dir`) this is memory and CPU only; on a disk the disk sets the pace for all three.

    uv run python bench/pipeline.py [--mb 1000] [--rounds 5] [--dir /mnt/tmpfs]
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _util as U  # noqa: E402

from dmedia_tui import filestore  # noqa: E402
from dmedia_tui.protocol import LEAF_SIZE, Hasher, read_full  # noqa: E402


def leaf_pipeline(src: Path, dst: Path, pool: ThreadPoolExecutor) -> str:
    """The whole-leaf pipeline (the code before the chunks), for comparison."""
    h = Hasher()
    bufs = [memoryview(bytearray(LEAF_SIZE)) for _ in range(2)]
    with open(src, "rb", buffering=0) as f, open(dst, "wb", buffering=0) as out:
        k = 0
        n = read_full(f, bufs[0])
        while n:
            leaf = bufs[k][:n]
            ahead = pool.submit(read_full, f, bufs[k ^ 1]) if n == LEAF_SIZE else None
            written = pool.submit(out.write, leaf)
            h.hash_leaf(leaf)  # a whole leaf: blake3 on all cores
            written.result()
            k ^= 1
            n = ahead.result() if ahead else 0
    return h.content_hash().id


def chunk_pipeline(src: Path, dst: Path, store: filestore.FileStore) -> str:
    """What import and copy_to run: _pump into a store's tmp file."""
    tmp = filestore._TmpFile(store)
    try:
        with open(src, "rb", buffering=0) as f:
            h = filestore._pump(f, {store.id: tmp}, None, None)
        return h.content_hash().id
    finally:
        tmp.discard()


def main() -> int:
    args = U.parser(__doc__.splitlines()[0]).parse_args()
    work = U.workdir(args.dir)
    try:
        files = U.make_corpus(work / "src", args.mb)
        nbytes = sum(p.stat().st_size for p in files)
        (work / "store").mkdir()
        store = filestore.FileStore.create(work / "store", doc=None)
        out = work / "out"
        out.mkdir()
        pool = ThreadPoolExecutor(2)
        ids: dict[str, list[str]] = {}

        def clean() -> None:
            for p in out.iterdir():
                p.unlink()

        def run(name: str, one) -> float:  # noqa: ANN001
            def go() -> None:
                ids[name] = [one(p, out / p.name) for p in files]

            return U.best_of(args.rounds, go, clean)

        t_leaf = run("leaves", lambda s, d: leaf_pipeline(s, d, pool))
        t_chunk = run("chunks", lambda s, d: chunk_pipeline(s, d, store))
        t_cp = run("cp", lambda s, d: subprocess.run(["cp", s, d], check=True) and "")
        assert ids["leaves"] == ids["chunks"], "the two pipelines disagree on an ID"
        print(f"{len(files)} files, {nbytes / U.MB:.0f} MB in {work}")
        print(f"  8 MiB leaves (before)   {t_leaf:7.3f} s  {U.rate(nbytes, t_leaf)}")
        print(f"  512 KiB chunks (_pump)  {t_chunk:7.3f} s  {U.rate(nbytes, t_chunk)}")
        print(f"  cp, no hash             {t_cp:7.3f} s  {U.rate(nbytes, t_cp)}")
        print(
            f"  chunks vs leaves {t_leaf / t_chunk:.2f}x faster;"
            f" chunks vs cp {t_cp / t_chunk:.2f} (1.0 = as fast as cp)"
        )
    finally:
        if not args.keep:
            U.rmtree(work)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
