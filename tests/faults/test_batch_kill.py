"""kill -9 at random points inside the batches of a many-file import and of daemon --once
making copies (deterministic seeds).

An import of 600 small files runs in two batches (512, 88: files written, fsync-ed,
renamed, their folders fsync-ed, then recorded in one transaction); daemon --once copies
150 of them a page (100) at a time the same way. Each seed picks one fault point of that
pipeline and the N-th time it is reached, anywhere in any batch; the process SIGKILLs
itself there, `daemon --once` recovers, and crash.check verifies independently that no
doc claims a copy that is not on disk, no copy in files/ is partial or unknown, and
nothing is left in tmp/. The normal suite runs the first seeds, DMEDIA_FAULTS=full all.
"""

from __future__ import annotations

import os
import random
import time
from pathlib import Path

import pytest

from dmedia_tui.filestore import import_batch_files
from tests.faults.crash import Lib, check

FILES = 150  # copied by daemon --once
IMPORT_FILES = 600
BATCHES = -(-IMPORT_FILES // import_batch_files())  # 2: 512 and 88 (448, 152 at 1024 fds)
assert BATCHES >= 2, "the import must run more than one batch"

# point -> how many times one import of IMPORT_FILES files reaches it
POINTS = {
    "tmp.created": IMPORT_FILES,
    "tmp.write": IMPORT_FILES,
    "import.batch_staged": BATCHES,
    "tmp.fsynced": IMPORT_FILES,
    "import.batch_synced": BATCHES,
    "files.renamed": IMPORT_FILES,
    "import.batch_renamed": BATCHES,
    "files.committed": IMPORT_FILES,
    "db.many_written": BATCHES,
    "import.doc_saved": IMPORT_FILES,
}
# daemon --once copying the 150 files from a to b: pages of 100 (two batches), after a
# verify round (one update_many) of a's copies.
COPY_POINTS = {
    "tmp.created": FILES,
    "tmp.write": FILES,
    "tmp.fsynced": FILES,
    "copy.batch_synced": 2,
    "files.renamed": FILES,
    "copy.batch_renamed": 2,
    "files.committed": FILES,
    "copy.written": FILES,
    "db.batch_written": 3,
    "copy.doc_saved": FILES,
}
SEEDS = range(1, 13)
FAST_SEEDS = 3


def _fault(seed: int, points: dict[str, int] = POINTS, salt: str = "") -> str:
    rng = random.Random(f"{salt}{seed}" if salt else seed)
    point = rng.choice(sorted(points))
    return f"{point}@{rng.randint(1, points[point])}"


def _small_files(folder: Path, n: int, seed: int) -> None:
    rng = random.Random(seed)
    for i in range(n):
        d = folder / f"d{i // 40}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:04d}.bin").write_bytes(rng.randbytes(rng.randint(1, 12_000)))


@pytest.mark.parametrize(
    "seed",
    [
        pytest.param(s, id=f"seed{s}-{_fault(s)}")
        for s in SEEDS
        if s <= FAST_SEEDS or os.environ.get("DMEDIA_FAULTS") == "full"
    ],
)
def test_import_killed_inside_a_batch_recovers(seed: int, tmp_path: Path) -> None:
    lib = Lib(tmp_path, int(time.time()))
    lib.init_stores("ab")
    _small_files(lib.photos, IMPORT_FILES, seed)
    before = lib.outside_snapshot()
    fault = _fault(seed)
    died = lib.cli("import", str(lib.photos), "--store", "a", fault=fault)
    assert died.killed, f"{fault} never reached (exit {died.returncode}): {died.stderr}"
    recovered = lib.cli("daemon", "--once", "--json")
    assert recovered.returncode == 0, recovered.stderr
    assert check(lib, before) == []
    # Whatever was cut short, importing again completes the library: every file known.
    again = lib.cli("import", str(lib.photos), "--store", "a")
    assert again.returncode == 0, again.stderr
    files = [d for d in lib.docs() if d.get("type") == "dmedia/file"]
    assert len(files) == IMPORT_FILES
    assert check(lib, before) == []


@pytest.mark.parametrize(
    "seed",
    [
        pytest.param(s, id=f"seed{s}-{_fault(s, COPY_POINTS, 'copy')}")
        for s in SEEDS
        if s <= FAST_SEEDS or os.environ.get("DMEDIA_FAULTS") == "full"
    ],
)
def test_copies_killed_inside_a_batch_recover(seed: int, tmp_path: Path) -> None:
    lib = Lib(tmp_path, int(time.time()))
    lib.init_stores("ab")
    _small_files(lib.photos, FILES, seed)
    lib.ok("import", str(lib.photos), "--store", "a")
    before = lib.outside_snapshot()
    fault = _fault(seed, COPY_POINTS, "copy")
    died = lib.cli("daemon", "--once", fault=fault)
    assert died.killed, f"{fault} never reached (exit {died.returncode}): {died.stderr}"
    recovered = lib.cli("daemon", "--once", "--json")
    assert recovered.returncode == 0, recovered.stderr
    assert check(lib, before) == []
    files = [d for d in lib.docs() if d.get("type") == "dmedia/file"]
    assert len(files) == FILES
    assert all(set(d["stored"]) == set(lib.ids.values()) for d in files)  # both copies


def test_verify_round_killed_in_its_write_records_none_then_recovers(tmp_path: Path) -> None:
    """A verify round records its good copies in one transaction: killed inside it, none
    is marked verified (never some), and the next run verifies them all."""
    lib = Lib(tmp_path, int(time.time()))
    lib.init_stores("a")
    _small_files(lib.photos, 30, seed=1)
    lib.ok("import", str(lib.photos), "--store", "a")
    before = lib.outside_snapshot()
    died = lib.cli("daemon", "--once", fault="db.batch_written@1")
    assert died.killed, died.stderr
    files = [d for d in lib.docs() if d.get("type") == "dmedia/file"]
    assert len(files) == 30
    assert not any("verified" in e for d in files for e in d["stored"].values())
    recovered = lib.cli("daemon", "--once", "--json")
    assert recovered.returncode == 0, recovered.stderr
    files = [d for d in lib.docs() if d.get("type") == "dmedia/file"]
    assert all("verified" in e for d in files for e in d["stored"].values())
    assert check(lib, before) == []
