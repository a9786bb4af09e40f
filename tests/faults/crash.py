"""The crash-point harness: a real library, the real CLI killed at a named step, recovery,
and an independent check of what is on disk against what the library claims.

The check reads the stores' folders and the SQLite file directly (not through FileStore,
MetaStore or the db layer) and re-hashes every copy with the protocol's hash functions
(the one part of the product it trusts: the hash is the definition of a copy's name).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dmedia_tui.protocol import hash_bytes, is_file_id
from tests.integration.harness import Machine, flip_bit, make_camera_files

DAY = 86400
REPO = Path(__file__).resolve().parents[2]

# Filled by the matrix tests, printed at the end of the session (conftest.py) and
# returned by matrix_summary(): the lead's closing note quotes it.
RESULTS: dict[str, dict[str, str]] = {}


@dataclass
class Run:
    args: tuple[str, ...]
    returncode: int
    stdout: str
    stderr: str

    @property
    def killed(self) -> bool:
        return self.returncode == -9


@dataclass
class Lib:
    """One machine, four stores (a..d) as folders, a source folder and a canary folder."""

    root: Path
    now: int
    machine: Machine = field(init=False)
    stores: dict[str, Path] = field(default_factory=dict)  # label -> folder
    ids: dict[str, str] = field(default_factory=dict)  # label -> store ID
    injected: list[tuple[str, str, bytes]] = field(default_factory=list)  # (label, id, bytes)
    away: dict[str, Path] = field(default_factory=dict)  # label -> folder it was moved to

    def __post_init__(self) -> None:
        self.db = self.root / "library.sqlite3"
        self.machine = Machine(self.root / "machines", "m1", str(self.db), self.now)
        self.photos = self.root / "photos"
        self.canary = self.root / "canary"
        self.canary.mkdir(parents=True)
        for i in range(3):
            (self.canary / f"keep-{i}.txt").write_bytes(os.urandom(1000 + i))
        (self.canary / "sub").mkdir()
        (self.canary / "sub" / "deep.bin").write_bytes(os.urandom(5000))

    # --- building (in-process: fast) ----------------------------------------------

    def init_stores(self, labels: str = "abcd") -> None:
        for label in labels:
            folder = self.root / "drives" / label
            folder.mkdir(parents=True, exist_ok=True)  # or a mount point made by the test
            self.stores[label] = folder
            self.ids[label] = self.machine.init_store(folder, label, "--same-filesystem")

    def photos_files(self, n: int = 3, seed: int = 7) -> list[Path]:
        return make_camera_files(self.photos, n, seed=seed, max_kb=300)

    def ok(self, *args: str, now: int | None = None) -> Any:
        return self.machine.ok(*args, now=now)

    def corrupt_one(self, label: str) -> str:
        """Flip a bit in the first copy on store `label`; returns its file ID."""
        files = sorted((self.stores[label] / ".dmedia" / "files").glob("*/*"))
        path = files[0]
        flip_bit(path)
        os.chmod(path, 0o444)
        file_id = path.parent.name + path.name
        self.injected.append((label, file_id, path.read_bytes()))
        return file_id

    def unplug(self, label: str) -> None:
        """Move a store's folder away: its drive is not connected any more."""
        dst = self.root / "unplugged" / label
        dst.parent.mkdir(exist_ok=True)
        self.stores[label].rename(dst)
        self.away[label] = dst

    # --- the real CLI, as a process that can die ----------------------------------

    def cli(self, *args: str, fault: str | None = None, now: int | None = None) -> Run:
        env = {k: v for k, v in os.environ.items() if not k.startswith("DMEDIA_")}
        env.update(self.machine.env(now))
        if fault:
            env["DMEDIA_FAULT"] = fault
        r = subprocess.run(
            [sys.executable, "-m", "dmedia_tui", *args],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        return Run(args, r.returncode, r.stdout, r.stderr)

    # --- the independent view -----------------------------------------------------

    def docs(self, db: int = 1) -> list[dict[str, Any]]:
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True)
        try:
            rows = con.execute(
                "SELECT json FROM doc WHERE db = ? AND deleted = 0", (db,)
            ).fetchall()
        finally:
            con.close()
        return [json.loads(r[0]) for r in rows]

    def outside_snapshot(self) -> dict[str, str]:
        """Every path outside the connected stores that must never change: the canary,
        the source folder and unplugged stores (name, type, mode, content hash)."""
        out: dict[str, str] = {}
        roots = [self.canary, self.photos, *self.away.values()]
        for top in roots:
            if not top.exists():
                continue
            for dirpath, dirnames, filenames in os.walk(top):
                dirnames.sort()
                for name in sorted(dirnames + filenames):
                    p = Path(dirpath, name)
                    st = p.lstat()
                    kind = stat.S_IFMT(st.st_mode)
                    digest = ""
                    if stat.S_ISREG(st.st_mode):
                        digest = hashlib.sha256(p.read_bytes()).hexdigest()
                    out[str(p)] = f"{kind:o} {stat.S_IMODE(st.st_mode):o} {digest}"
        return out


def _copies(store: Path, sub: str) -> list[Path]:
    base = store / ".dmedia" / sub
    if not base.exists():
        return []
    return sorted(p for p in base.rglob("*") if not p.is_dir() or p.is_symlink())


def check(lib: Lib, before: dict[str, str]) -> list[str]:
    """Everything wrong with the library and its stores now; [] when all holds."""
    problems: list[str] = []
    file_docs = {d["_id"]: d for d in lib.docs(1) if d.get("type") == "dmedia/file"}
    store_docs = {d["_id"]: d for d in lib.docs(1) if d.get("type") == "dmedia/store"}
    events = lib.docs(2)
    connected = {lib.ids[label]: path for label, path in lib.stores.items() if path.exists()}

    # 1. every copy in files/ is a regular file whose content hashes to its name
    on_disk: dict[str, set[str]] = {}
    for sid, path in connected.items():
        on_disk[sid] = set()
        for p in _copies(path, "files"):
            file_id = p.parent.name + p.name
            if not p.is_file() or p.is_symlink() or not is_file_id(file_id):
                problems.append(f"files: not a copy: {p}")
                continue
            if hash_bytes(p.read_bytes()).id != file_id:
                problems.append(f"files: bad copy {file_id[:8]} on {sid[:6]}")
                continue
            on_disk[sid].add(file_id)
        # 2. nothing left in tmp/
        left = _copies(path, "tmp")
        if left:
            problems.append(f"tmp: {len(left)} file(s) left on {sid[:6]}")

    # 3. every claim on a connected store is a good copy there; 4. every copy is known
    claimed: dict[str, set[str]] = {sid: set() for sid in connected}
    for fid, doc in file_docs.items():
        for sid in doc.get("stored") or {}:
            if sid in connected:
                claimed[sid].add(fid)
                if fid not in on_disk[sid]:
                    problems.append(f"claim: {fid[:8]} on {sid[:6]} is not a good copy there")
            if sid not in store_docs:
                problems.append(f"claim: {fid[:8]} on {sid[:6]}, a store the library forgot")
    for sid, ids in on_disk.items():
        for fid in sorted(ids - claimed[sid]):
            problems.append(f"orphan: copy {fid[:8]} on {sid[:6]} unknown to the library")

    # 5. injected corruption: kept in quarantine, never in files/, logged, store flagged
    for label, fid, data in lib.injected:
        sid = lib.ids[label]
        kept = [p for p in _copies(lib.stores[label], "corrupt") if p.read_bytes() == data]
        if not kept:
            problems.append(f"corrupt: {fid[:8]} on {label} not kept in corrupt/")
        if not any(
            e.get("type") == "dmedia/file/corrupt"
            and e.get("file_id") == fid
            and e.get("store_id") == sid
            for e in events
        ):
            problems.append(f"corrupt: no dmedia/file/corrupt event for {fid[:8]} on {label}")
        doc = file_docs.get(fid, {})
        if sid not in (doc.get("corrupt") or {}):
            problems.append(f"corrupt: {fid[:8]} has no corrupt mark for {label}")
        sdoc = store_docs.get(sid, {})
        if not sdoc.get("failure") or not sdoc.get("no_new_copies"):
            problems.append(f"corrupt: store {label} not flagged failing")
        if not sdoc.get("downgraded"):
            problems.append(f"corrupt: store {label} not downgraded")

    # 6. a downgraded store's copies all count 0
    for sid, sdoc in store_docs.items():
        if not sdoc.get("downgraded"):
            continue
        counting = [
            fid
            for fid, doc in file_docs.items()
            if ((doc.get("stored") or {}).get(sid) or {}).get("copies", 0) != 0
        ]
        if counting:
            problems.append(f"downgrade: {len(counting)} copies on downgraded {sid[:6]} count")
        if not any(
            e.get("type") == "dmedia/store/downgrade" and e.get("store_id") == sid for e in events
        ):
            problems.append(f"downgrade: {sid[:6]} downgraded without an event")

    # 7. a store the library forgot was purged with an event
    for label, sid in lib.ids.items():
        if sid in store_docs:
            continue
        if not any(
            e.get("type") == "dmedia/store/purge" and e.get("store_id") == sid for e in events
        ):
            problems.append(f"purge: store {label} gone without a dmedia/store/purge event")

    # 8. each event once: a crashed run finished by the next never logs one twice
    seen: dict[tuple[Any, ...], int] = {}
    for e in events:
        t = e.get("type")
        if t == "dmedia/file/corrupt":
            key: tuple[Any, ...] = (t, e.get("file_id"), e.get("store_id"))
        elif t in ("dmedia/store/failing", "dmedia/store/purge") or (
            t == "dmedia/store/downgrade" and e.get("scope") != "copies"
        ):
            key = (t, e.get("store_id"))
        else:
            continue
        seen[key] = seen.get(key, 0) + 1
    for key, n in sorted(seen.items(), key=str):
        if n > 1:
            problems.append(f"events: {key[0]} for {str(key[1])[:8]} logged {n} times")
    for sid, sdoc in store_docs.items():
        if sdoc.get("failure") and ("dmedia/store/failing", sid) not in seen:
            problems.append(f"failing: {sid[:6]} flagged without a dmedia/store/failing event")

    # 9. nothing outside the stores changed
    after = lib.outside_snapshot()
    changed = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if changed:
        problems.append(f"outside: {len(changed)} path(s) changed, e.g. {changed[0]}")
    return problems


@dataclass(frozen=True)
class Scenario:
    """One operation killed at one point."""

    op: str  # import | copy | verify | downgrade | purge | downgrade-atime
    point: str  # DMEDIA_FAULT value
    fast: bool = False  # in the normal suite (CI); the rest run with -m slow

    @property
    def id(self) -> str:
        return f"{self.op}:{self.point}"


Setup = Callable[[Lib], tuple[str, ...] | tuple[tuple[str, ...], int]]


def _settled(lib: Lib) -> None:
    lib.init_stores()
    lib.photos_files()
    lib.ok("import", str(lib.photos), "--store", "a")
    lib.ok("daemon", "--once")


def setup(lib: Lib, op: str) -> tuple[tuple[str, ...], int]:
    """Build the library for `op`; return (the command to kill, its DMEDIA_NOW)."""
    if op == "import":
        lib.init_stores()
        lib.photos_files()
        return ("import", str(lib.photos), "--store", "a"), lib.now
    if op == "copy":
        lib.init_stores()
        lib.photos_files()
        lib.ok("import", str(lib.photos), "--store", "a")
        return ("daemon", "--once"), lib.now
    _settled(lib)
    if op == "verify":
        lib.corrupt_one("a")
        return ("verify", "--all"), lib.now
    if op == "downgrade":
        return ("store", "downgrade", "a", "--yes"), lib.now
    # a store on a drive that is no longer plugged in, seen 4 (downgrade) or 9 days ago
    lib.unplug("a")
    if op == "downgrade-atime":
        return ("daemon", "--once"), lib.now + 4 * DAY
    if op == "purge":
        return ("daemon", "--once"), lib.now + 9 * DAY
    raise ValueError(op)


def run_scenario(lib: Lib, sc: Scenario) -> tuple[Run, Run, list[str]]:
    """Set up, kill at the point, recover with `daemon --once`, check independently."""
    command, now = setup(lib, sc.op)
    before = lib.outside_snapshot()
    died = lib.cli(*command, fault=sc.point, now=now)
    recovered = lib.cli("daemon", "--once", "--json", now=now)
    problems = check(lib, before)
    outcome = "recovered" if not problems else "; ".join(problems)
    if not died.killed:
        outcome = f"NOT KILLED (exit {died.returncode}): {outcome}"
    if recovered.returncode != 0:
        outcome = f"recovery exit {recovered.returncode}: {recovered.stderr.strip()[-200:]}"
    RESULTS[sc.id] = {"op": sc.op, "point": sc.point, "outcome": outcome}
    return died, recovered, problems


def matrix_summary() -> str:
    """The points x outcomes table of the scenarios run in this session."""
    if not RESULTS:
        return ""
    rows = sorted(RESULTS.values(), key=lambda r: (r["op"], r["point"]))
    w_op = max(len(r["op"]) for r in rows)
    w_pt = max(len(r["point"]) for r in rows)
    lines = [f"{'operation':<{w_op}}  {'killed at':<{w_pt}}  outcome after daemon --once"]
    lines += [f"{r['op']:<{w_op}}  {r['point']:<{w_pt}}  {r['outcome']}" for r in rows]
    ok = sum(r["outcome"] == "recovered" for r in rows)
    lines.append(f"{ok}/{len(rows)} crash points recovered")
    return "\n".join(lines)
