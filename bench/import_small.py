"""Import and copy-making of many small files vs `cp -r` + `sync` (run by hand, not a test).

For trees of small files (4-64 KiB, random contents, 100 a folder) and for a camera-like
corpus, prints the time of `cp -r SRC DST && sync` and, in the same run, of the real CLI:
`dmedia-tui import SRC` into a fresh library and store, and `daemon --once` making the
second copy of every file on a new store (in a settled library: the imported copies were
verified by an earlier run; it also verifies the new copies, as `daemon --once` does).
Each figure is the best of --rounds; ratios are cp+sync time / dmedia time (1.0 = as
fast as cp + sync). Goals (issue 13): small files >= 0.25 for both,
camera-sized import >= 0.8. The CLI runs in a child process, so its start-up (~0.3 s)
is in the figure; the per-file cost excluding start-up is printed too.

    nice uv run python bench/import_small.py [--files 1000,10000] [--camera-mb 200]
        [--rounds 3] [--dir DIR]     # DIR: where trees and stores go (e.g. a tmpfs mount)
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _util as U  # noqa: E402

REPO = Path(__file__).resolve().parent.parent


def make_small_tree(folder: Path, n: int, seed: int = 13) -> int:
    """n files of 4-64 KiB of random bytes, 100 a folder; returns the total bytes."""
    rng = random.Random(seed)
    total = 0
    for i in range(n):
        d = folder / f"d{i // 100:04d}"
        if i % 100 == 0:
            d.mkdir(parents=True, exist_ok=True)
        size = rng.randint(4 << 10, 64 << 10)
        (d / f"f{i:06d}.bin").write_bytes(rng.randbytes(size))
        total += size
    return total


class CLI:
    """One library (SQLite) and its config/data folders; runs the real CLI as a child."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "config" / "dmedia-tui").mkdir(parents=True, exist_ok=True)
        (root / "data").mkdir(exist_ok=True)
        # A user's Python caches compiled modules; a machine with PYTHONDONTWRITEBYTECODE
        # set (this one has) would compile every module on every call and count it.
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        self.env = {
            **env,
            "XDG_CONFIG_HOME": str(root / "config"),
            "XDG_DATA_HOME": str(root / "data"),
            "DMEDIA_DB": str(root / "library.sqlite3"),
        }

    def run(self, *args: str) -> str:
        r = subprocess.run(
            [sys.executable, "-m", "dmedia_tui", *args],
            env=self.env,
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )
        if r.returncode:
            raise SystemExit(f"dmedia-tui {' '.join(args)} failed: {r.stderr.strip()[-500:]}")
        return r.stdout

    def init_store(self, label: str) -> Path:
        folder = self.root / label
        folder.mkdir()
        self.run("store", "init", str(folder), "--label", label, "--same-filesystem")
        return folder


def startup(work: Path) -> float:
    """Time of a CLI call that does nothing (`--help`): the floor of every figure."""
    cli = CLI(work / "startup")
    cli.run("--help")  # the first call writes the compiled modules
    t0 = time.perf_counter()
    cli.run("--help")
    return time.perf_counter() - t0


def measure(work: Path, src: Path, rounds: int) -> dict[str, float]:
    """Best-of-rounds seconds of cp -r + sync, import, and daemon --once copies."""
    dst = work / "cp"
    n = [0]

    def fresh() -> CLI:
        n[0] += 1
        lib = work / f"lib{n[0]}"
        U.rmtree(lib)
        return CLI(lib)

    def cp_reset() -> None:
        U.rmtree(dst)
        U.sync()

    def cp_sync() -> None:
        subprocess.run(["cp", "-r", str(src), str(dst)], check=True)
        U.sync()

    out = {"cp_sync": U.best_of(rounds, cp_sync, cp_reset)}
    U.rmtree(dst)

    state: dict[str, CLI] = {}

    def imp_reset() -> None:
        for c in state.values():
            U.rmtree(c.root)
        state["cli"] = cli = fresh()
        cli.init_store("a")
        U.sync()

    def imp() -> None:
        state["cli"].run("import", str(src), "--store", "a")

    out["import"] = U.best_of(rounds, imp, imp_reset)

    def copy_reset() -> None:
        imp_reset()
        imp()
        state["cli"].run("daemon", "--once")  # settled: a's copies verified, keys made
        state["cli"].init_store("b")
        U.sync()

    def copy() -> None:
        summary = json.loads(state["cli"].run("daemon", "--once", "--json"))
        assert summary.get("copies"), summary

    out["copies"] = U.best_of(rounds, copy, copy_reset)
    for c in state.values():
        U.rmtree(c.root)
    return out


def report(name: str, files: int, nbytes: int, t: dict[str, float], start: float) -> None:
    print(f"== {name}: {files:,} files, {nbytes / U.MB:.0f} MB")
    print(f"  cp -r + sync         {t['cp_sync']:8.3f} s")
    for key, label, goal in (
        ("import", "import", GOALS[name][0]),
        ("copies", "daemon --once", GOALS[name][1]),
    ):
        secs = t[key]
        ratio = t["cp_sync"] / secs
        work = max(secs - start, 1e-9)
        per = work / files * 1e3
        verdict = "" if goal is None else f"goal >= {goal:.2f}  {U.verdict(ratio >= goal)}"
        print(
            f"  {label:<20} {secs:8.3f} s  ratio {ratio:5.2f}  {per:7.3f} ms/file,"
            f" ratio {t['cp_sync'] / work:5.2f} after start-up   {verdict}"
        )


GOALS: dict[str, tuple[float | None, float | None]] = {}


def main() -> int:
    p = U.parser(__doc__.splitlines()[0])
    p.add_argument(
        "--files", default="1000,10000", help="small-file tree sizes (0: skip, camera only)"
    )
    p.add_argument("--camera-mb", type=int, default=200, help="camera corpus MB (0: skip)")
    p.set_defaults(rounds=3)
    args = p.parse_args()
    work = U.workdir(args.dir)
    try:
        start = startup(work)
        print(f"work folder {work}; CLI start-up {start:.3f} s (in every dmedia figure)")
        # `--files 0` means no small-file tree (it used to measure an empty one and divide
        # by its zero files).
        for n in (int(x) for x in args.files.split(",") if x and int(x) > 0):
            name = f"{n} small"
            GOALS[name] = (0.25, 0.25)
            src = work / f"small-{n}"
            nbytes = make_small_tree(src, n)
            report(name, n, nbytes, measure(work, src, args.rounds), start)
            U.rmtree(src)
        if args.camera_mb:
            name = "camera"
            GOALS[name] = (0.8, None)
            src = work / "camera"
            files = U.make_corpus(src, args.camera_mb)
            nbytes = sum(f.stat().st_size for f in files)
            report(name, len(files), nbytes, measure(work, src, args.rounds), start)
    finally:
        if not args.keep:
            U.rmtree(work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
