"""The alarm table: every alarm case, one row each, through the real CLI `status --json`.

A row is a setup (real FileStores on their own tmpfs mounts, files imported with the real
CLI, faults made on the real files and folders), the expected alert codes (the exact
set), the expected exit code of `status`, and words each action must contain (or must
not). Multi-machine rows share one library between two config dirs (one SQLite file, or
one CouchDB database: those rows run on both backends).

The clock of every command is DMEDIA_NOW = T0 + offset, where T0 is the real time when
the row starts: the copies carry real mtimes, so the simulated time never falls behind
them (a pinned date would, as the calendar moves on).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.harness import Machine, Mounts, canonical, flip_bit, make_camera_files

DAY = 86400
FRESH = 180  # Thresholds.heartbeat_fresh
DOWNGRADE = 3 * DAY  # Thresholds.store_downgrade_after
PURGE = 8 * DAY  # Thresholds.store_purge_after


class World:
    """What a row's setup works with: machines on one library, tmpfs mounts, a clock."""

    def __init__(self, root: Path, db_url: str, mounts: Mounts) -> None:
        self.root = root
        self.db_url = db_url
        self.mounts = mounts
        self.t0 = int(time.time())
        self.machines: dict[str, Machine] = {}
        self.ids: dict[str, str] = {}  # store label -> store ID
        self.paths: dict[str, Path] = {}  # store label -> folder
        self.file_ids: list[str] = []
        # The machine that runs `status`, and when (set by the setup).
        self.here = "studio"
        self.at = 0

    def m(self, name: str = "studio") -> Machine:
        if name not in self.machines:
            self.machines[name] = Machine(self.root / "machines", name, self.db_url, self.t0)
        return self.machines[name]

    def store(self, label: str, on: str = "studio", size_mb: int = 16, *extra: str) -> str:
        path = self.mounts.new(f"fs-{label}", size_mb) / label  # a store per filesystem
        path.mkdir()
        self.paths[label] = path
        self.ids[label] = self.m(on).init_store(path, label, *self.mounts.same_fs_flag, *extra)
        return self.ids[label]

    def folder_store(self, label: str, under: str, on: str = "studio") -> str:
        """A store in a folder of another store's filesystem (--same-filesystem)."""
        path = self.paths[under].parent / label
        path.mkdir()
        self.paths[label] = path
        self.ids[label] = self.m(on).init_store(path, label, "--same-filesystem")
        return self.ids[label]

    def files(self, n: int = 6, seed: int = 7) -> Path:
        folder = self.root / f"DCIM-{seed}"
        if not folder.exists():
            make_camera_files(folder, n, seed=seed, max_kb=64)
        return folder

    def imp(self, label: str, on: str = "studio", n: int = 6, seed: int = 7, dt: int = 0) -> None:
        r = self.m(on).ok(
            "import", str(self.files(n, seed)), "--store", label, "--json", now=self.t0 + dt
        )
        self.file_ids = sorted(set(self.file_ids) | set(r.json()["file_ids"]))

    def once(self, on: str = "studio", dt: int = 0) -> None:
        self.m(on).once(now=self.t0 + dt)

    def unplug(self, label: str) -> None:
        """The store's folder goes away (a drive unmounted, a folder moved)."""
        path = self.paths[label]
        path.rename(path.with_name(path.name + "-gone"))

    def fill(self, label: str, leave: int = 0) -> None:
        """Fill the store's filesystem from outside dmedia-tui."""
        path = self.paths[label]
        st = os.statvfs(path)
        free = st.f_bavail * st.f_frsize
        try:
            with open(path.parent / f"junk-{label}.bin", "wb") as f:
                f.write(b"\0" * max(0, free - leave))
        except OSError:
            pass  # full: that was the point

    def status_now(self, here: str = "studio", dt: int = 0) -> None:
        self.here, self.at = here, dt


@dataclass(frozen=True)
class Row:
    id: str
    setup: Callable[[World], None]
    codes: frozenset[str]
    exit: int
    # code -> words its action (or message, for words starting "msg:") must contain
    words: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # code -> words its action must NOT contain
    not_words: dict[str, tuple[str, ...]] = field(default_factory=dict)
    both_backends: bool = False
    check: Callable[[World, dict[str, Any]], None] | None = None


def R(
    id: str,
    setup: Callable[[World], None],
    codes: set[str] | frozenset[str],
    exit: int,
    **kw: Any,
) -> Row:
    return Row(id, setup, frozenset(codes), exit, **kw)


IS = "INSUFFICIENT_STORAGE"
DOC = "DISCONNECTED_ONLY_COPY"
DF = "DRIVE_FAILURE"
LOW = "LOW_DURABILITY"
NKC = "NO_KNOWN_COPY"
SFS = "SHARED_FILESYSTEM"


# --- setups ----------------------------------------------------------------------------


def empty_library(w: World) -> None:
    """A library that had a store, forgotten: no store, no file (only store init creates
    a library)."""
    w.store("s0")
    w.m().ok("store", "purge", "s0", "--yes")


def one_store_no_files(w: World) -> None:
    w.store("s0")


def one_store_with_files(w: World) -> None:
    w.store("s0")
    w.imp("s0")


def three_settled(w: World) -> None:
    for s in ("s0", "s1", "s2"):
        w.store(s)
    w.imp("s0")
    w.once()


def three_fresh_import(w: World) -> None:
    for s in ("s0", "s1", "s2"):
        w.store(s)
    w.imp("s0")


def downgraded_one_of_three(w: World) -> None:
    """Point 2: a downgraded store takes no new copies, so 3 stores are really 2."""
    three_settled(w)
    w.m().ok("store", "downgrade", "s2", "--yes")


def downgraded_one_of_three_then_once(w: World) -> None:
    downgraded_one_of_three(w)
    w.once(dt=60)  # the copier must not (and cannot) place copies on s2
    w.status_now(dt=60)


def no_new_copies_one_of_three(w: World) -> None:
    three_settled(w)
    w.m().ok("store", "downgrade", "s2", "--yes")
    w.m().ok("store", "trust", "s2", "--yes")  # takes copies; they count once verified
    w.once(dt=60)
    w.status_now(dt=60)


def corrupt_copy(w: World) -> None:
    for s in ("s0", "s1", "s2"):
        w.store(s)
    w.imp("s0")
    w.once()
    flip_bit(canonical(w.paths["s0"], w.file_ids[0]))
    w.m().run("verify", "--store", "s0", "--all", now=w.t0 + 10)
    w.status_now(dt=10)


def corrupt_copy_acknowledged(w: World) -> None:
    corrupt_copy(w)
    w.m().ok("store", "ack", "s0", now=w.t0 + 20)
    w.status_now(dt=20)


def purged_only_store(w: World) -> None:
    w.store("s0")
    w.store("s1")
    w.imp("s0")
    w.m().ok("store", "purge", "s0", "--yes")


def own_store_gone_before_any_daemon(w: World) -> None:
    """Point 4: s0 of this machine, never heartbeated, is unplugged: connect it here."""
    for s in ("s0", "s1", "s2"):
        w.store(s)
    w.imp("s0")
    w.unplug("s0")


def own_store_gone_after_heartbeat(w: World) -> None:
    """Points 4 and 5: the heartbeat listing s0 is 10 s old, but s0 is gone from disk now."""
    for s in ("s0", "s1", "s2"):
        w.store(s)
    w.imp("s0")
    w.once()  # heartbeat lists s0 (and copies the files to s1, s2)
    w.imp("s0", seed=8, dt=5)  # new files, on s0 only
    w.unplug("s0")
    w.status_now(dt=10)


def own_store_gone_heartbeat_stale(w: World) -> None:
    """Point 4: the heartbeat is 3 minutes old; this machine is still not to be booted."""
    own_store_gone_after_heartbeat(w)
    w.status_now(dt=FRESH + 60)


def disk_filled_outside(w: World) -> None:
    """Point 7: s1's disk is filled by someone else; no daemon ran since the import."""
    for s in ("s0", "s1", "s2"):
        w.store(s)
    w.imp("s0")
    w.fill("s1")


def disk_filled_outside_but_room_left(w: World) -> None:
    """Point 7's control: filled to leave room for the files plus the 1 % reserve."""
    for s in ("s0", "s1", "s2"):
        w.store(s)
    w.imp("s0")
    w.fill("s1", leave=2 * 1024 * 1024)


def three_stores_one_filesystem(w: World) -> None:
    """Point 6: three stores in folders of one filesystem are one place, however settled."""
    w.store("s0", size_mb=32)
    w.folder_store("s1", "s0")
    w.folder_store("s2", "s0")
    w.imp("s0")
    w.once()


def two_places_one_shared(w: World) -> None:
    """Point 6: s0 alone, s1 and s2 share a filesystem: 2 places for 3 copies."""
    w.store("s0")
    w.store("s1", size_mb=32)
    w.folder_store("s2", "s1")
    w.imp("s0")
    w.once()


def shared_filesystem_full(w: World) -> None:
    """Point 6: s2 and s3 share a full filesystem: its (no) free space counts once."""
    w.store("s0")
    w.store("s1")
    w.store("s2", size_mb=16)
    w.folder_store("s3", "s2")
    w.imp("s0")
    w.fill("s2")


def laptop_store(w: World, dt_once: int | None = None) -> None:
    """studio has s0, s1; laptop has l0. Files are on all three (imported on each)."""
    w.store("s0")
    w.store("s1")
    w.store("l0", on="laptop")
    w.imp("s0")
    w.once()  # s0 -> s1
    w.imp("l0", on="laptop")  # the same files: now 3 copies each
    if dt_once is not None:
        w.once(on="laptop", dt=dt_once)


def laptop_seen(dt: int) -> Callable[[World], None]:
    def setup(w: World) -> None:
        laptop_store(w)
        w.status_now(dt=dt)

    return setup


def laptop_seen_then_policy(dt: int) -> Callable[[World], None]:
    def setup(w: World) -> None:
        laptop_store(w)
        w.once(dt=dt)  # studio's policies run at that age
        w.status_now(dt=dt)

    return setup


def laptop_only_files(dt: int) -> Callable[[World], None]:
    """Files only on laptop's l0; laptop's engine ran at T0 (heartbeat lists l0)."""

    def setup(w: World) -> None:
        w.store("s0")
        w.store("s1")
        w.store("l0", on="laptop")
        w.imp("l0", on="laptop")
        w.once(on="laptop")
        w.status_now(dt=dt)

    return setup


def laptop_files_seen_from_laptop(w: World) -> None:
    """The same library from the laptop: its own store is gone; studio's are not its own."""
    laptop_only_files(0)(w)
    w.unplug("l0")
    w.status_now(here="laptop", dt=10)


# --- the table -------------------------------------------------------------------------

MAKE_COPIES = ("making copies",)
ROWS = [
    R("empty-library", empty_library, set(), 0),
    R("one-store-no-files", one_store_no_files, set(), 0),
    R(
        "one-store-only",
        one_store_with_files,
        {IS, LOW},
        2,
        words={IS: ("Add a drive",), LOW: MAKE_COPIES},
    ),
    R("three-stores-fresh-import", three_fresh_import, {LOW}, 1, words={LOW: MAKE_COPIES}),
    R("three-stores-settled", three_settled, set(), 0),
    # point 2
    R(
        "downgraded-one-of-three",
        downgraded_one_of_three,
        {IS},
        2,
        words={IS: ("Add a drive", "msg:only 2 trusted drives")},
    ),
    R(
        "downgraded-one-of-three-after-daemon",
        downgraded_one_of_three_then_once,
        {IS},
        2,
        check=lambda w, st: _histogram(st, {"2": 6}),
    ),
    R("trusted-again-after-downgrade", no_new_copies_one_of_three, set(), 0),
    R(
        "corrupt-copy",
        corrupt_copy,
        {DF, IS},
        2,
        words={DF: ("store ack",), IS: ("Add a drive",)},
    ),
    R("corrupt-copy-acknowledged", corrupt_copy_acknowledged, {IS}, 2),
    R(
        "purged-only-store",
        purged_only_store,
        {NKC, IS, LOW},
        2,
        words={NKC: ("Reconnect every drive",), LOW: ("No copy of them is known",)},
        not_words={LOW: ("making copies",)},
    ),
    # points 4 and 5
    R(
        "own-store-gone-before-any-daemon",
        own_store_gone_before_any_daemon,
        {DOC, LOW},
        2,
        words={DOC: ("Connect s0 here",), LOW: ("Connect s0 here", "only copies are offline")},
        not_words={DOC: ("oot",), LOW: ("oot", "making copies")},
    ),
    R(
        "own-store-gone-heartbeat-fresh",
        own_store_gone_after_heartbeat,
        {DOC, LOW},
        2,
        words={DOC: ("Connect s0 here",)},
        not_words={DOC: ("oot", "running but does not see it")},
        check=lambda w, st: _offline(w, st, "s0"),
    ),
    R(
        "own-store-gone-heartbeat-stale",
        own_store_gone_heartbeat_stale,
        {DOC, LOW},
        2,
        words={DOC: ("Connect s0 here",)},
        not_words={DOC: ("oot",), LOW: ("oot",)},
        check=lambda w, st: _offline(w, st, "s0"),
    ),
    # point 7
    R(
        "disk-filled-outside",
        disk_filled_outside,
        {IS, LOW},
        2,
        words={IS: ("Free space on a drive",)},
        check=lambda w, st: _live_space(w, st, "s1"),
    ),
    R("disk-filled-outside-room-left", disk_filled_outside_but_room_left, {LOW}, 1),
    # point 6
    R(
        "three-stores-one-filesystem",
        three_stores_one_filesystem,
        {IS, SFS},
        2,
        words={IS: ("msg:only 1 trusted drive",)},
    ),
    R(
        "two-places-one-shared",
        two_places_one_shared,
        {IS, SFS},
        2,
        words={IS: ("msg:only 2 trusted drives",)},
    ),
    R("shared-filesystem-full", shared_filesystem_full, {IS, SFS, LOW}, 2),
    # point 9: the 3-day boundary, seen from studio (laptop's l0 is offline, last seen T0)
    R("laptop-seen-3d-minus-1s", laptop_seen(DOWNGRADE - 1), set(), 0, both_backends=True),
    R(
        "laptop-seen-exactly-3d",
        laptop_seen(DOWNGRADE),
        {IS},
        2,
        words={IS: ("msg:only 2 trusted drives",)},
        both_backends=True,
    ),
    R("laptop-seen-3d-plus-1s", laptop_seen(DOWNGRADE + 1), {IS}, 2),
    R(
        "laptop-3d-policy-ran",
        laptop_seen_then_policy(DOWNGRADE),
        {IS},
        2,
        check=lambda w, st: _histogram(st, {"2": 6}),
    ),
    R(
        "laptop-8d-policy-ran",
        laptop_seen_then_policy(PURGE),
        {IS},
        2,
        check=lambda w, st: _histogram(st, {"2": 6}) or _forgotten(w, st, "l0"),
    ),
    R("laptop-8d-no-daemon", laptop_seen(PURGE), {IS}, 2),
    # heartbeat_fresh boundary, point 10, and another machine's advice
    R(
        "laptop-heartbeat-exactly-fresh",
        laptop_only_files(FRESH),
        {LOW},
        1,
        words={LOW: MAKE_COPIES},
        both_backends=True,
    ),
    R(
        "laptop-heartbeat-stale-by-1s",
        laptop_only_files(FRESH + 1),
        {DOC, LOW},
        2,
        words={DOC: ("Boot laptop",), LOW: ("Boot laptop", "only copies are offline")},
        not_words={LOW: ("making copies",)},
        both_backends=True,
    ),
    R(
        "laptop-own-store-gone-seen-from-laptop",
        laptop_files_seen_from_laptop,
        {DOC, LOW},
        2,
        words={DOC: ("Connect l0 here",)},
        not_words={DOC: ("oot",)},
        both_backends=True,
    ),
]


# --- checks ----------------------------------------------------------------------------


def _histogram(st: dict[str, Any], expect: dict[str, int]) -> None:
    full = {"0": 0, "1": 0, "2": 0, "3": 0, **expect}
    assert st["histogram"] == full, st["histogram"]


def _row(w: World, st: dict[str, Any], label: str) -> dict[str, Any]:
    return next(s for s in st["stores"] if s["_id"] == w.ids[label])


def _offline(w: World, st: dict[str, Any], label: str) -> None:
    assert _row(w, st, label)["online"] is False


def _forgotten(w: World, st: dict[str, Any], label: str) -> None:
    assert w.ids[label] not in {s["_id"] for s in st["stores"]}


def _live_space(w: World, st: dict[str, Any], label: str) -> None:
    st_vfs = os.statvfs(w.paths[label])
    assert _row(w, st, label)["bytes_avail"] == st_vfs.f_bavail * st_vfs.f_frsize


def _params() -> list[Any]:
    out = []
    for row in ROWS:
        for backend in ("sqlite", "couch") if row.both_backends else ("sqlite",):
            out.append(pytest.param(row, backend, id=f"{row.id}-{backend}"))
    return out


@pytest.mark.parametrize(("row", "backend"), _params(), indirect=["backend"])
def test_alarm_table(row: Row, backend: str, db_url: str, tmp_path: Path) -> None:
    mounts = Mounts(tmp_path / "mnt")
    if not mounts.real:
        pytest.skip("needs root to mount a tmpfs per store (separate filesystems)")
    try:
        w = World(tmp_path, db_url, mounts)
        row.setup(w)
        r = w.m(w.here).run("status", "--json", now=w.t0 + w.at)
        assert r.exit_code in (0, 1, 2), r.stderr
        st = r.json()
        got = {a["code"] for a in st["alerts"]}
        detail = "\n".join(f"{a['code']}: {a['message']} -> {a['action']}" for a in st["alerts"])
        assert got == row.codes, detail
        assert r.exit_code == row.exit, detail
        for code, words in row.words.items():
            a = next(a for a in st["alerts"] if a["code"] == code)
            for word in words:
                if word.startswith("msg:"):
                    assert word[4:] in a["message"], a["message"]
                else:
                    assert word in a["action"], a["action"]
        for code, words in row.not_words.items():
            a = next(a for a in st["alerts"] if a["code"] == code)
            for word in words:
                assert word not in a["action"], a["action"]
        if row.check is not None:
            row.check(w, st)
    finally:
        mounts.cleanup()


def test_target_copies_refused_by_every_command(tmp_path: Path) -> None:
    """Point 13: config.toml's target_copies other than 3 is refused with one line naming
    the key (`status` exits 3: it cannot tell), never half-honoured."""
    m = Machine(tmp_path / "machines", "studio", str(tmp_path / "lib.sqlite3"), time.time())
    cfg = m.config_home / "dmedia-tui" / "config.toml"
    cfg.write_text('hostname = "studio"\n[thresholds]\ntarget_copies = 4\n')
    r = m.run("status", "--json")
    assert r.exit_code == 3
    assert r.stderr.count("\n") == 1 and "target_copies" in r.stderr and "fixed at 3" in r.stderr
    r = m.run("store", "list")
    assert r.exit_code != 0 and "target_copies" in r.stderr
    cfg.write_text('hostname = "studio"\ncolour = "blue"\n')
    r = m.run("status", "--json")
    assert r.exit_code == 3 and "unknown key 'colour'" in r.stderr
