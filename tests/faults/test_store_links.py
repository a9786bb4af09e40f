"""Nothing outside a store is ever read as a copy, written or deleted (issue 10, defect 1).

Every path of a store's layout is replaced by a symlink to a canary folder outside it,
then the commands a user runs (status, verify --all, daemon --once, import) run on the
library. The canary must be byte-for-byte unchanged, and the store must be reported
(STORE_UNSAFE naming it) instead of used. A second set of tests proves that read-only
commands write nothing at all: not in the stores, not machine.json.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

import pytest

from dmedia_tui.protocol import random_id
from tests.conftest import NOW
from tests.integration.harness import Machine, alert, canonical, flip_bit, make_camera_files

LINKS = [".dmedia", "files", "files/XX", "tmp", "corrupt", "store.json"]


def tree(root: Path) -> dict[str, tuple[str, str]]:
    """Every entry under root: kind and content hash (files), link target (links)."""
    out: dict[str, tuple[str, str]] = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", "")
            else:
                out[rel] = ("file", hashlib.sha256(p.read_bytes()).hexdigest())
    return out


@pytest.fixture
def lib(tmp_path: Path) -> tuple[Machine, dict[str, Path], dict[str, str], list[str]]:
    m = Machine(tmp_path, "m1", str(tmp_path / "library.sqlite3"), NOW)
    paths = {name: tmp_path / "drives" / name for name in ("a", "b", "c")}
    sids = {}
    for name, p in paths.items():
        p.mkdir(parents=True)
        m.ok("store", "init", str(p), "--label", name, "--same-filesystem")
        sids[name] = p.joinpath(".dmedia", "store.json").read_text().split('"_id": "')[1][:24]
    make_camera_files(tmp_path / "photos", 4, max_kb=40)
    r = m.ok("import", str(tmp_path / "photos"), "--store", "a", "--json").json()
    m.ok("daemon", "--once")
    return m, paths, sids, r["file_ids"]


def plant(store: Path, where: str, canary: Path, file_ids: list[str]) -> None:
    """Replace `where` in the store's layout by a link to canary (holding a copy of what
    was there, so a program that follows the link finds plausible content)."""
    dot = store / ".dmedia"
    target = {
        ".dmedia": dot,
        "files": dot / "files",
        "files/XX": dot / "files" / file_ids[0][:2],
        "tmp": dot / "tmp",
        "corrupt": dot / "corrupt",
        "store.json": dot / "store.json",
    }[where]
    inside = canary / "inside"
    if target.is_dir():
        shutil.copytree(target, inside)
        shutil.rmtree(target)
    else:
        canary.mkdir(parents=True, exist_ok=True)
        shutil.copy2(target, inside)
        target.unlink()
    (canary / "precious.txt").write_text("the user's own file, outside every store")
    if where in ("tmp", ".dmedia"):
        # What a purge of tmp/ would delete: a file of a dead writer's.
        tmp = inside / "tmp" if where == ".dmedia" else inside
        (tmp / f"999999999.{random_id()}").write_bytes(b"partial")
    os.symlink(inside, target)


@pytest.mark.parametrize("where", LINKS)
def test_a_link_in_a_store_is_never_followed(lib, tmp_path: Path, where: str) -> None:
    m, paths, sids, file_ids = lib
    canary = tmp_path / "canary"
    # A corrupt copy on b, so verify has something to quarantine (into corrupt/).
    if where not in ("store.json", ".dmedia", "files", "files/XX"):
        flip_bit(canonical(paths["b"], file_ids[1]))
    plant(paths["b"], where, canary, file_ids)
    before = tree(canary)
    other = tmp_path / "more"
    make_camera_files(other, 2, seed=99, max_kb=20)

    code, status = m.status()
    m.run("verify", "--all")
    m.run("daemon", "--once")
    m.run("import", str(other))
    m.run("import", str(other), "--store", "b")
    assert tree(canary) == before, f"{where}: something outside the store changed"
    unsafe = alert(status, "STORE_UNSAFE")
    assert unsafe is not None and unsafe["store_ids"] == [sids["b"]], status["alerts"]
    assert where.replace("XX", file_ids[0][:2]) in unsafe["message"]
    assert code == 2
    _, status = m.status()
    assert alert(status, "STORE_UNSAFE") is not None
    # Nothing recorded on b came from the canary: b's copies are as before or fewer.
    assert not any(e.get("store_id") == sids["b"] for e in m.events("file/corrupt"))


def test_status_writes_nothing(tmp_path: Path) -> None:
    """A read-only command leaves every store, the library and machine.json untouched."""
    m1 = Machine(tmp_path, "m1", str(tmp_path / "library.sqlite3"), NOW)
    store = tmp_path / "drives" / "a"
    store.mkdir(parents=True)
    m1.ok("store", "init", str(store), "--label", "a")
    make_camera_files(tmp_path / "photos", 2, max_kb=20)
    m1.ok("import", str(tmp_path / "photos"))
    stale = store / ".dmedia" / "tmp" / f"999999999.{random_id()}"
    stale.write_bytes(b"a crashed writer's partial file")
    (store / ".dmedia" / "corrupt").rmdir()
    machine_json = m1.config_home / "dmedia-tui" / "machine.json"
    machine_json.unlink()
    before = tree(store)
    lib_before = (tmp_path / "library.sqlite3").read_bytes()
    for args in (("status",), ("status", "--json"), ("events",), ("store", "list")):
        m1.run(*args)
        assert tree(store) == before, args
        assert not machine_json.exists(), args
    assert stale.exists()
    assert (tmp_path / "library.sqlite3").read_bytes() == lib_before
    # A writer does clean up: the dead writer's partial file goes, corrupt/ comes back
    # when needed.
    m1.ok("daemon", "--once")
    assert not stale.exists()
