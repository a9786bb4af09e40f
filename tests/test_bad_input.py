"""Bad input never stops or fools the tool (issue 10, defect 8), through the real CLI.

Each test reproduces one finding of the fault attack: a non-UTF-8 file name aborted a whole
import, DMEDIA_NOW=inf was accepted, `store init /dev` and labels with control characters
were accepted, FIFOs in an import folder vanished silently, absurd numbers in a doc crashed
the SQLite index (and so `verify`), and a garbled machine.json silently became a new machine.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import stat
from pathlib import Path

import pytest

from dmedia_tui.db import open_library
from tests.conftest import NOW
from tests.integration.harness import Machine


def one_line(stderr: str) -> bool:
    return stderr.count("\n") == 1 and "Traceback" not in stderr


@pytest.fixture
def studio(tmp_path: Path, db_url: str) -> tuple[Machine, Path, str]:
    m = Machine(tmp_path / "machines", "studio", db_url, NOW)
    store = tmp_path / "store"
    store.mkdir()
    sid = m.init_store(store, "store")
    return m, store, sid


def store_files(store: Path) -> set[str]:
    root = store / ".dmedia" / "files"
    return {d.name + f.name for d in root.iterdir() for f in d.iterdir()}


def test_a_non_utf8_file_name_is_recorded_losslessly_and_the_import_goes_on(tmp_path, studio):
    m, store, _sid = studio
    photos = tmp_path / "photos"
    photos.mkdir()
    raw = b"caf\xe9 \xff.JPG"  # Latin-1, not UTF-8
    (photos / "a.jpg").write_bytes(os.urandom(3000))
    with open(os.path.join(os.fsencode(photos), raw), "wb") as f:
        f.write(os.urandom(3000))
    (photos / "z.jpg").write_bytes(os.urandom(3000))
    r = m.run("import", str(photos), "--json")
    assert r.exit_code == 0, r.stderr
    report = r.json()
    assert report["files"] == 3 and report["new"] == 3 and report["errors"] == []
    # Every copy in the store has its doc (no orphan), and the odd name is kept exactly.
    assert store_files(store) == set(report["file_ids"])
    lib = open_library(m.db_url, create=False)
    try:
        docs = [lib.docs.get(fid) for fid in report["file_ids"]]
    finally:
        lib.close()
    odd = [d for d in docs if d["name"] not in ("a.jpg", "z.jpg")]
    assert len(odd) == 1
    assert base64.b64decode(odd[0]["name_b64"]) == raw
    assert odd[0]["name"] == raw.decode("utf-8", "replace") and odd[0]["ext"] == "jpg"
    assert all("name_b64" not in d for d in docs if d is not odd[0])
    r = m.run("check", "--json")
    assert r.exit_code == 0 and r.json()["invalid"] == 0, r.stdout


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "-1", "1e400", "99999999999999"])
def test_dmedia_now_out_of_range_is_refused_in_one_line(tmp_path, value):
    m = Machine(tmp_path / "machines", "studio", str(tmp_path / "lib.sqlite3"), NOW)
    s = tmp_path / "s"
    s.mkdir()
    m.init_store(s, "s")
    from click.testing import CliRunner

    from dmedia_tui.cli import cli

    for args in (["status"], ["daemon", "--once"], ["store", "list"]):
        r = CliRunner().invoke(cli, args, env={**m.env(), "DMEDIA_NOW": value})
        assert r.exit_code != 0 and "DMEDIA_NOW" in r.stderr and one_line(r.stderr), r.stderr


def test_clock_accepts_ordinary_simulated_times():
    from dmedia_tui.clock import clock_from_env

    assert clock_from_env({"DMEDIA_NOW": str(NOW)}).now() == NOW
    assert clock_from_env({"DMEDIA_NOW": "0"}).now() == 0


@pytest.mark.parametrize("path", ["/dev", "/dev/shm", "/proc", "/proc/self", "/sys", "/sys/kernel"])
def test_store_init_refuses_system_folders(tmp_path, path):
    m = Machine(tmp_path / "machines", "studio", str(tmp_path / "lib.sqlite3"), NOW)
    if not os.path.isdir(path):
        pytest.skip(f"{path} is not a folder here")
    existed = os.path.lexists(os.path.join(path, ".dmedia"))
    try:
        r = m.run("store", "init", path, "--same-filesystem")
        assert r.exit_code == 1 and one_line(r.stderr), r.stderr
        assert "not a place for a store" in r.stderr
        assert os.path.lexists(os.path.join(path, ".dmedia")) == existed
    finally:
        if not existed and os.path.isdir(os.path.join(path, ".dmedia")):
            import shutil

            shutil.rmtree(os.path.join(path, ".dmedia"))  # the old code made one here


@pytest.mark.parametrize("label", ["two\nlines", "bell\x07", "esc\x1b[31mred", "tab\there", " "])
def test_store_labels_with_control_characters_are_refused(tmp_path, label):
    m = Machine(tmp_path / "machines", "studio", str(tmp_path / "lib.sqlite3"), NOW)
    s = tmp_path / "s"
    s.mkdir()
    r = m.run("store", "init", str(s), "--label", label)
    assert r.exit_code == 1 and one_line(r.stderr) and "label" in r.stderr, r.stderr
    assert not (s / ".dmedia").exists()


def test_a_bad_label_in_a_store_doc_is_flagged_by_check(tmp_path, studio):
    m, _store, sid = studio
    lib = open_library(m.db_url, create=False)
    try:
        doc = lib.docs.get(sid)
        doc["label"] = "evil\n\x1b[2J"
        lib.docs.save(doc)
    finally:
        lib.close()
    r = m.run("check", "--json")
    assert r.exit_code == 1 and r.json()["invalid"] == 1


def test_fifos_sockets_and_devices_in_an_import_folder_are_listed_as_skipped(tmp_path, studio):
    m, _store, _sid = studio
    photos = tmp_path / "photos"
    (photos / "sub").mkdir(parents=True)
    (photos / "a.jpg").write_bytes(os.urandom(2000))
    os.mkfifo(photos / "pipe")
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(photos / "sub" / "sock"))
    kinds = {"pipe": "FIFO", "sub/sock": "socket"}
    try:
        os.mknod(photos / "null", 0o600 | stat.S_IFCHR, os.makedev(1, 3))
        kinds["null"] = "device"
    except PermissionError:
        pass  # not root: FIFO and socket still prove it
    r = m.run("import", str(photos), "--json")
    sock.close()
    assert r.exit_code == 0, r.stderr
    report = r.json()
    assert report["files"] == 1
    skipped = {
        Path(s["path"]).relative_to(photos).as_posix(): s["reason"] for s in report["skipped"]
    }
    assert skipped == kinds
    # People see them too, one line each, and a total in the summary.
    (photos / "b.jpg").write_bytes(os.urandom(2000))
    r = m.run("import", str(photos))
    assert r.exit_code == 0
    assert f"{len(kinds)} skipped (not regular files)" in r.stdout
    assert "skipped" in r.stderr and str(photos / "pipe") in r.stderr
    # A FIFO named on the command line is skipped the same way, never opened.
    r = m.run("import", str(photos / "pipe"), "--json")
    assert r.exit_code == 0 and r.json()["skipped"] == [
        {"path": str(photos / "pipe"), "reason": "FIFO"}
    ]


def test_absurd_numbers_in_docs_are_flagged_by_check_and_crash_nothing(tmp_path, studio):
    m, store, sid = studio
    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        (photos / f"{i}.jpg").write_bytes(os.urandom(2000 + i))
    ids = m.ok("import", str(photos), "--json").json()["file_ids"]
    lib = open_library(m.db_url, create=False)
    try:
        big = lib.docs.get(ids[0])
        big["bytes"] = 2**63  # the SQLite index could not hold it: the write crashed
        lib.docs.save(big)
        many = lib.docs.get(ids[1])
        many["stored"][sid]["copies"] = 1_000_000
        lib.docs.save(many)
        late = lib.docs.get(ids[2])
        late["stored"][sid]["verified"] = 2**64
        late["atime"] = 2**70
        lib.docs.save(late)
        store_doc = lib.docs.get(sid)
        store_doc["bytes_avail"] = 2**80
        lib.docs.save(store_doc)
    finally:
        lib.close()
    r = m.run("check", "--json")
    assert r.exit_code == 1 and r.json()["invalid"] == 4, r.stdout
    events = m.events("dmedia/doc/invalid")
    problems = " ".join(" ".join(e["errors"]) for e in events)
    assert "bytes" in problems and "copies" in problems and "verified" in problems
    # A million copies on one store is not durability: the file still needs copies.
    code, st = m.status()
    assert st["histogram"]["3"] == 0, st["histogram"]
    for args in (["verify", "--all", "--json"], ["daemon", "--once", "--json"], ["store", "list"]):
        r = m.run(*args)
        assert r.exit_code in (0, 1, 2) and "Traceback" not in r.stderr, (args, r.stderr)
    assert len(store_files(store)) == 3  # nothing lost


def test_sqlite_index_survives_integers_beyond_64_bits(tmp_path):
    """Every indexed column of the SQLite backend takes any JSON number without crashing."""
    lib = open_library(str(tmp_path / "lib.sqlite3"))
    sid = "3" * 24
    try:
        doc = {
            "_id": "4" * 48,
            "type": "dmedia/file",
            "time": NOW,
            "bytes": 2**64,
            "origin": "user",
            "atime": NOW,
            "leaf_hashes": "AAAA",
            "stored": {sid: {"copies": 2**65, "mtime": NOW, "verified": 2**66}},
        }
        many = [dict(doc, _id=c * 48, bytes=2**53 - 1) for c in "56789ABCDEFGHIJK"]
        lib.docs.save(doc)
        assert all(isinstance(d, dict) for d in lib.docs.save_many(many))
        lib.log.save({"_id": "5" * 24, "type": "dmedia/file/missing", "time": 2**70})
        assert lib.docs.get("4" * 48)["bytes"] == 2**64  # stored as written
        assert sum(r.count for r in lib.placement_summary()) == 1 + len(many)
    finally:
        lib.close()


@pytest.mark.parametrize(
    "content", ["garbage", "", "[]", "{}", '{"machine_id": "not-an-id", "hostname": "x"}']
)
def test_a_garbled_machine_json_is_an_error_not_a_new_identity(tmp_path, content):
    m = Machine(tmp_path / "machines", "studio", str(tmp_path / "lib.sqlite3"), NOW)
    s = tmp_path / "s"
    s.mkdir()
    m.init_store(s, "s")
    path = m.config_home / "dmedia-tui" / "machine.json"
    assert json.loads(path.read_text())["machine_id"]
    path.write_text(content)
    # (Commands that never need this machine's identity, like importing or verifying
    # nothing, may run: machine.json is read lazily, see the read-only rule.)
    for args in (["store", "list"], ["status"], ["daemon", "--once"]):
        r = m.run(*args)
        assert r.exit_code == 3 and one_line(r.stderr), (args, r.exit_code, r.stderr)
        assert "machine.json" in r.stderr
        assert path.read_text() == content  # never replaced by a new identity
