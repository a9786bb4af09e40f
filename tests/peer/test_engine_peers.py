"""Two machines on one host share one library (SQLite file or CouchDB URL): machine B
imports to its only store and its engine runs (the peer server inside it); machine A's
`daemon --once` pulls every file from B and brings it to 3 copies, byte-exact.

Each machine has its own config dir (identity, known stores, `[peer]` settings) and its
own store folders, which the other never connects.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from dmedia_tui import schema, transitions
from dmedia_tui.cli import cli
from dmedia_tui.clock import SystemClock
from dmedia_tui.config import Config, ConfigError, PeerSettings
from dmedia_tui.db import open_library
from dmedia_tui.durability import durability
from dmedia_tui.engine import Engine
from dmedia_tui.metastore import MetaStore
from dmedia_tui.protocol import hash_bytes
from tests.peer.conftest import LEAF

PEER_TOML = '[peer]\nlisten = "127.0.0.1:0"\ndiscovery = false\n'


def _machine(root: Path, db_url: str, name: str) -> MetaStore:
    cdir = root / name / "config" / "dmedia-tui"
    cdir.mkdir(parents=True)
    (cdir / "config.toml").write_text(f'hostname = "{name}"\n' + PEER_TOML)
    config = Config.load(cdir, root / name / "data")
    return MetaStore(open_library(db_url), config, SystemClock())


@pytest.fixture
def shm(tmp_path: Path) -> Path:
    """Stores on the test's disk folder: `store init` refuses folders under /dev."""
    return tmp_path


@pytest.fixture
def two(shm: Path, db_url: str) -> Iterator[tuple[MetaStore, MetaStore]]:
    a, b = _machine(shm, db_url, "studio"), _machine(shm, db_url, "laptop")
    yield a, b
    a.lib.close()
    b.lib.close()


def _wait(pred, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def test_daemon_once_pulls_every_file_from_a_peer_to_three_copies(two, shm: Path) -> None:
    a, b = two
    files = {
        "IMG_0001.JPG": os.urandom(300_000),
        "MVI_0002.MOV": os.urandom(2 * LEAF + 4321),  # three leaves
    }
    (shm / "card").mkdir()
    for name, data in files.items():
        (shm / "card" / name).write_bytes(data)
    (shm / "laptop-ssd").mkdir()
    b_store, _, _ = b.init_store(shm / "laptop-ssd", label="laptop-ssd")
    b.import_paths([shm / "card"], b_store)
    a_stores = []
    for label in ("studio-1", "studio-2", "studio-3"):
        (shm / label).mkdir()
        a_stores.append(a.init_store(shm / label, label=label, same_filesystem=True)[0])

    # A's first run publishes its identity; B's server is not up, so nothing moves.
    assert Engine(a, watch_drives=False, watch_folders=False).run_once().copies == 0
    eng_b = Engine(b, watch_drives=False, watch_folders=False)
    assert eng_b.acquire_lock()
    eng_b.start()
    try:
        _wait(
            lambda: ((b.lib.docs.get_or_none(b.machine_id) or {}).get("peer") or {}).get(
                "addresses"
            )
        )
        summary = Engine(a, watch_drives=False, watch_folders=False).run_once()
    finally:
        eng_b.stop()
    assert summary.copies == 2 * len(files)  # one pull and one local copy each

    ids = {}
    for name, data in files.items():
        ids[name] = hash_bytes(data).id
        doc = a.lib.docs.get(ids[name])
        assert durability(doc) == 3  # B's copy and two new ones here
        here = [fs for fs in a_stores if fs.exists(ids[name])]
        assert len(here) == 2 and set(doc["stored"]) == {b_store.id, *(fs.id for fs in here)}
        for fs in here:
            assert fs.file_path(ids[name]).read_bytes() == data
    done = a.lib.events(limit=100, types=[schema.LOG_TRANSFER_DONE])
    assert {d["file_id"] for d in done} == set(ids.values())
    assert all(d["peer"] == b.machine_id for d in done)
    assert schema.check_machine(a.lib.docs.get(a.machine_id)) == []
    assert schema.check_machine(b.lib.docs.get(b.machine_id)) == []


def test_peer_list_shows_every_machine(two, shm: Path, monkeypatch) -> None:
    a, b = two
    Engine(a, watch_drives=False, watch_folders=False).run_once()
    Engine(b, watch_drives=False, watch_folders=False).run_once()
    monkeypatch.setenv("XDG_CONFIG_HOME", str(shm / "studio" / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(shm / "studio" / "data"))
    r = CliRunner().invoke(cli, ["peer", "list", "--json", "--db", a.lib.display_url])
    assert r.exit_code == 0, r.output
    rows = {m["_id"]: m for m in json.loads(r.output)}
    assert set(rows) == {a.machine_id, b.machine_id}
    assert rows[a.machine_id]["this"] and not rows[b.machine_id]["this"]
    assert rows[b.machine_id]["hostname"] == "laptop"
    assert rows[b.machine_id]["fingerprint"] == b.lib.docs.get(b.machine_id)["peer"]["fingerprint"]
    assert rows[b.machine_id]["online"] is True
    assert set(rows[a.machine_id]) == {
        "_id",
        "hostname",
        "fingerprint",
        "addresses",
        "online",
        "this",
    }
    r = CliRunner().invoke(cli, ["peer", "list", "--db", a.lib.display_url])
    assert r.exit_code == 0 and "laptop" in r.output and "studio" in r.output


def test_peer_settings_from_config() -> None:
    assert PeerSettings.from_mapping({}) == PeerSettings("auto", "0.0.0.0:8476", True)
    assert PeerSettings.from_mapping({"enabled": False}).enabled == "off"
    assert PeerSettings.from_mapping({"enabled": True, "listen": "[::]:0"}).listen == "[::]:0"
    for bad in ({"enabled": "maybe"}, {"listen": "8476"}, {"discovery": 1}, {"port": 1}):
        with pytest.raises(ConfigError):
            PeerSettings.from_mapping(bad)


def test_a_rotten_copy_on_the_serving_machine_is_never_pulled_and_quarantined_there(
    two, shm: Path
) -> None:
    a, b = two
    data = os.urandom(LEAF + 999)
    (shm / "card").mkdir()
    (shm / "card" / "MVI_0003.MOV").write_bytes(data)
    (shm / "laptop-ssd").mkdir()
    b_store, _, _ = b.init_store(shm / "laptop-ssd", label="laptop-ssd")
    b.import_paths([shm / "card"], b_store)
    file_id = hash_bytes(data).id
    path = b_store.file_path(file_id)
    st = os.stat(path)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:  # rot in leaf 1, behind an unchanged mtime
        f.seek(LEAF + 10)
        f.write(bytes([data[LEAF + 10] ^ 0x40]))
    os.chmod(path, 0o444)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    # Verified just now: B's verify worker has no reason to read it, only serving does.
    mtime = b_store.stat(file_id).mtime
    b.lib.docs.update(file_id, transitions.mark_verified, b_store.id, 1, mtime, b.now())
    (shm / "studio-1").mkdir()
    a_store = a.init_store(shm / "studio-1", label="studio-1")[0]
    Engine(a, watch_drives=False, watch_folders=False).run_once()
    eng_b = Engine(b, watch_drives=False, watch_folders=False)
    assert eng_b.acquire_lock()
    eng_b.start()
    try:
        _wait(
            lambda: ((b.lib.docs.get_or_none(b.machine_id) or {}).get("peer") or {}).get(
                "addresses"
            )
        )
        Engine(a, watch_drives=False, watch_folders=False).run_once()
        # B's server found the rot while serving: B's own verify worker takes the normal
        # corrupt path at once (quarantine, failure flag, dmedia/file/corrupt).
        _wait(lambda: b.lib.events(types=[schema.LOG_FILE_CORRUPT]), timeout=60)
    finally:
        eng_b.stop()
    assert not a_store.exists(file_id)
    assert a.lib.docs.get(file_id)["stored"].keys() == set()
    assert (b_store.corrupt_dir / file_id).exists()
    assert b.store_doc(b_store.id).get("failure")
    failed = a.lib.events(types=[schema.LOG_TRANSFER_FAILED])
    assert [e["file_id"] for e in failed] == [file_id]
    assert not a.lib.events(types=[schema.LOG_TRANSFER_DONE])


def test_a_machine_that_is_on_but_unreachable_is_one_failed_event_per_outage(
    two, shm: Path
) -> None:
    a, b = two
    (shm / "card").mkdir()
    (shm / "card" / "IMG_0004.JPG").write_bytes(os.urandom(200_000))
    (shm / "laptop-ssd").mkdir()
    b_store, _, _ = b.init_store(shm / "laptop-ssd", label="laptop-ssd")
    b.import_paths([shm / "card"], b_store)
    (shm / "studio-1").mkdir()
    a.init_store(shm / "studio-1", label="studio-1")
    Engine(a, watch_drives=False, watch_folders=False).run_once()
    eng_b = Engine(b, watch_drives=False, watch_folders=False)
    assert eng_b.acquire_lock()
    eng_b.start()
    try:
        _wait(
            lambda: ((b.lib.docs.get_or_none(b.machine_id) or {}).get("peer") or {}).get(
                "addresses"
            )
        )
    finally:
        eng_b.stop()  # its doc still says it is on, at an address nobody answers
    engine_a = Engine(a, watch_drives=False, watch_folders=False)
    for _ in range(3):
        assert engine_a.run_once().copies == 0
    failed = a.lib.events(types=[schema.LOG_TRANSFER_FAILED])
    assert len(failed) == 1 and failed[0]["peer"] == b.machine_id
    assert "cannot connect" in failed[0]["reason"]

    # Health at A: B is on (fresh heartbeat) but its store cannot feed A, and says so.
    h = a.health()
    alert = next(x for x in h.alerts if x.code == "DISCONNECTED_ONLY_COPY")
    assert "laptop is on but cannot be reached at 127.0.0.1:" in alert.action.lower()
    assert "check its firewall" in alert.action
    row = next(r for r in h.store_rows if r.store_id == b_store.id)
    assert not row.online and row.unreachable_at and row.unreachable_at.startswith("127.0.0.1:")
    assert len(a.lib.events(types=[schema.LOG_PEER_UNREACHABLE])) == 1

    # A restarted engine remembers the outage: no second event for the same outage.
    assert Engine(a, watch_drives=False, watch_folders=False).run_once().copies == 0
    assert len(a.lib.events(types=[schema.LOG_PEER_UNREACHABLE])) == 1

    # B boots again (a new process: a new MetaStore on the same config and library) and
    # answers: A pulls, logs the end of the outage once, and the advice is gone.
    b = MetaStore(b.lib, Config.load(b.config.config_dir, b.config.data_dir), SystemClock())
    eng_b = Engine(b, watch_drives=False, watch_folders=False)
    assert eng_b.acquire_lock()
    eng_b.start()
    try:
        old = failed[0]["reason"]
        _wait(
            lambda: (
                ((b.lib.docs.get_or_none(b.machine_id) or {}).get("peer") or {}).get("addresses")
                and Engine(a, watch_drives=False, watch_folders=False).run_once().copies == 1
            )
        )
    finally:
        eng_b.stop()
    assert old
    reachable = a.lib.events(types=[schema.LOG_PEER_REACHABLE])
    assert [e["peer"] for e in reachable] == [b.machine_id]
    assert a.peer_outages() == {}
    assert not [x for x in a.health().alerts if x.code == "DISCONNECTED_ONLY_COPY"]


def _port_is_free(port: int) -> bool:
    import socket

    try:
        socket.create_server(("127.0.0.1", port)).close()
    except OSError:
        return False
    return True


def test_an_engine_makes_one_peer_service_and_its_stop_closes_the_server(
    two, shm: Path, monkeypatch
) -> None:
    """The housekeeping and copy threads both ask for the engine's Peers as they start.
    Asking at once, each made one: one served, the other was the engine's, so stop() (or
    `[peer] enabled = "off"`) never reached the server, which kept listening."""
    from dmedia_tui.peer import service

    a, b = two
    Engine(a, watch_drives=False, watch_folders=False).run_once()  # B now has a peer
    made = []
    real_init = service.Peers.__init__

    def slow_init(self, *args, **kwargs):  # the real one, after the import's ~0.1 s
        made.append(self)
        time.sleep(0.3)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(service.Peers, "__init__", slow_init)
    eng_b = Engine(b, watch_drives=False, watch_folders=False)
    assert eng_b.acquire_lock()
    eng_b.start()
    try:
        _wait(lambda: eng_b.peers is not None and eng_b.peers.server is not None)
        port = eng_b.peers.server.address[1]
        assert not _port_is_free(port)
    finally:
        eng_b.stop()
    assert made == [eng_b.peers]
    assert _port_is_free(port)


def test_a_server_a_round_starts_while_the_engine_stops_is_stopped_too(
    two, shm: Path, monkeypatch
) -> None:
    """stop() stops the server, then waits for the workers: a housekeeping round that was
    starting the server meanwhile finished starting it after, and it kept listening."""
    import threading

    from dmedia_tui.peer.server import PeerServer

    a, b = two
    Engine(a, watch_drives=False, watch_folders=False).run_once()
    starting = threading.Event()
    servers = []
    real_start = PeerServer.start

    def slow_start(self):  # the real start, once stop() has begun
        servers.append(self)
        starting.set()
        time.sleep(0.5)
        return real_start(self)

    monkeypatch.setattr(PeerServer, "start", slow_start)
    eng_b = Engine(b, watch_drives=False, watch_folders=False)
    assert eng_b.acquire_lock()
    eng_b.start()
    assert starting.wait(30)
    eng_b.stop()
    assert len(servers) == 1
    assert servers[0].address is not None and _port_is_free(servers[0].address[1])


def test_a_rot_found_while_serving_a_peer_is_notified_once_by_the_serving_engine(
    two, shm: Path
) -> None:
    """Notifications ride on the peer-enabled engine unchanged: B's engine serves A (its
    peer server runs), finds a rotten copy by serving it, and B's command hook hears of
    the DRIVE_FAILURE once, with B's workers still running."""
    from dmedia_tui import notify
    from dmedia_tui.health import DRIVE_FAILURE, Severity

    a, b = two
    hook = shm / "hook.jsonl"
    with open(b.config.config_dir / "config.toml", "a") as f:
        f.write(f'[notify]\ncommand = "cat >> {hook}"\nmin_severity = "panic"\ndesktop = false\n')
    data = os.urandom(LEAF + 999)
    (shm / "card").mkdir()
    (shm / "card" / "MVI_0005.MOV").write_bytes(data)
    (shm / "laptop-ssd").mkdir()
    b_store, _, _ = b.init_store(shm / "laptop-ssd", label="laptop-ssd")
    b.import_paths([shm / "card"], b_store)
    file_id = hash_bytes(data).id
    path = b_store.file_path(file_id)
    st = os.stat(path)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:  # rot behind an unchanged mtime: only serving finds it
        f.seek(LEAF + 10)
        f.write(bytes([data[LEAF + 10] ^ 0x40]))
    os.chmod(path, 0o444)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    mtime = b_store.stat(file_id).mtime
    b.lib.docs.update(file_id, transitions.mark_verified, b_store.id, 1, mtime, b.now())
    (shm / "studio-1").mkdir()
    a.init_store(shm / "studio-1", label="studio-1")
    Engine(a, watch_drives=False, watch_folders=False).run_once()

    def lines() -> list[dict]:
        text = hook.read_text() if hook.exists() else ""
        return [json.loads(line) for line in text.splitlines() if line.strip()]

    eng_b = Engine(b, watch_drives=False, watch_folders=False)
    assert eng_b.acquire_lock()
    n = notify.attach(eng_b)
    assert n is not None
    n.settings = notify.NotifySettings(
        command=n.settings.command, min_severity=Severity.PANIC, settle=0.1, interval=600
    )
    eng_b.start()
    try:
        _wait(
            lambda: ((b.lib.docs.get_or_none(b.machine_id) or {}).get("peer") or {}).get(
                "addresses"
            )
        )
        assert eng_b.peers is not None and eng_b.peers.server is not None  # it serves
        n.check()  # what B was already told (one store here: INSUFFICIENT_STORAGE)
        before = len(lines())
        assert DRIVE_FAILURE not in {e["code"] for e in lines()}
        Engine(a, watch_drives=False, watch_folders=False).run_once()
        _wait(lambda: DRIVE_FAILURE in {e["code"] for e in lines()}, timeout=30)  # < interval
        time.sleep(1.0)  # more engine events after the first: nothing is said twice
        told = [(e["event"], e["code"]) for e in lines()[before:]]
        assert len(told) == len(set(told)), told
        failure = [e for e in lines() if e["code"] == DRIVE_FAILURE]
        assert [(e["event"], e["store_ids"]) for e in failure] == [("new", [b_store.id])]
        assert ("new", "NO_KNOWN_COPY") in told  # its only copy was the rotten one
        assert all(t.is_alive() for t in eng_b._threads)
    finally:
        n.close()
        eng_b.stop()


# --- pulls side by side (peer.service.PULLS_AT_ONCE) ------------------------------------


def _serving_b(b: MetaStore) -> Engine:
    eng_b = Engine(b, watch_drives=False, watch_folders=False)
    assert eng_b.acquire_lock()
    eng_b.start()
    _wait(lambda: ((b.lib.docs.get_or_none(b.machine_id) or {}).get("peer") or {}).get("addresses"))
    return eng_b


def _rot(store, file_id: str, data: bytes, b: MetaStore) -> None:
    """Flip a byte of leaf 1 behind an unchanged mtime, the copy marked verified just now:
    only serving it finds the rot."""
    path = store.file_path(file_id)
    st = os.stat(path)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(LEAF + 10)
        f.write(bytes([data[LEAF + 10] ^ 0x40]))
    os.chmod(path, 0o444)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    mtime = store.stat(file_id).mtime
    b.lib.docs.update(file_id, transitions.mark_verified, store.id, 1, mtime, b.now())


@pytest.fixture
def together(monkeypatch):
    """Every client.receive (a pull) first waits for another one to start: sequential pulls (the old
    copy worker) break the barrier instead of passing it. Returns the pulls seen."""
    import threading

    from dmedia_tui.peer import client

    barrier = threading.Barrier(2, timeout=20)
    real = client.receive
    seen: list[str] = []

    def pull(identity, address, fingerprint, doc, dst, progress=None, **kw):
        seen.append(doc["_id"])
        if len(seen) <= 2:
            barrier.wait()
        return real(identity, address, fingerprint, doc, dst, progress, **kw)

    monkeypatch.setattr(client, "receive", pull)
    return seen


def _two_files(shm: Path, b: MetaStore, size: int) -> tuple[dict[str, bytes], object]:
    (shm / "card").mkdir()
    files = {}
    for name in ("MVI_0010.MOV", "MVI_0011.MOV"):
        data = os.urandom(size)
        (shm / "card" / name).write_bytes(data)
        files[hash_bytes(data).id] = data
    (shm / "laptop-ssd").mkdir()
    b_store, _, _ = b.init_store(shm / "laptop-ssd", label="laptop-ssd")
    b.import_paths([shm / "card"], b_store)
    return files, b_store


def test_two_pulls_run_at_once_each_shown_and_both_recorded(two, shm: Path, together) -> None:
    a, b = two
    files, _ = _two_files(shm, b, LEAF + 5000)
    (shm / "studio-1").mkdir()
    a_store = a.init_store(shm / "studio-1", label="studio-1")[0]
    Engine(a, watch_drives=False, watch_folders=False).run_once()  # A publishes itself
    eng_b = _serving_b(b)
    engine_a = Engine(a, watch_drives=False, watch_folders=False)
    shown: list[int] = []
    engine_a.subscribe(
        lambda ev: (
            shown.append(sum(x.kind == "pull" for x in engine_a.activity_snapshot()[0]))
            if ev.kind == "activity"
            else None
        )
    )
    try:
        engine_a.housekeeping()  # connects A's store
        assert engine_a.pull_round().copies == 2
    finally:
        eng_b.stop()
    assert sorted(together) == sorted(files)
    for file_id, data in files.items():
        assert a_store.file_path(file_id).read_bytes() == data
        assert a_store.id in a.lib.docs.get(file_id)["stored"]
    done = a.lib.events(types=[schema.LOG_TRANSFER_DONE])
    assert sorted(e["file_id"] for e in done) == sorted(files)
    assert max(shown) == 2  # the activity panel shows both transfers
    assert not engine_a.activity  # and neither once the round is over


def test_one_pull_failing_does_not_spoil_the_one_beside_it(two, shm: Path, together) -> None:
    a, b = two
    files, b_store = _two_files(shm, b, 2 * LEAF + 5000)
    bad, good = sorted(files)
    _rot(b_store, bad, files[bad], b)  # cut off after leaf 0, while `good` is on its way
    (shm / "studio-1").mkdir()
    a_store = a.init_store(shm / "studio-1", label="studio-1")[0]
    Engine(a, watch_drives=False, watch_folders=False).run_once()
    eng_b = _serving_b(b)
    engine_a = Engine(a, watch_drives=False, watch_folders=False)
    try:
        engine_a.housekeeping()
        assert engine_a.pull_round().copies == 1
    finally:
        eng_b.stop()
    assert sorted(together[:2]) == [bad, good]
    assert a_store.file_path(good).read_bytes() == files[good]
    assert a.lib.docs.get(good)["stored"].keys() == {b_store.id, a_store.id}
    assert not a_store.exists(bad)
    assert a_store.id not in a.lib.docs.get(bad)["stored"]
    assert [e["file_id"] for e in a.lib.events(types=[schema.LOG_TRANSFER_FAILED])] == [bad]
    assert [e["file_id"] for e in a.lib.events(types=[schema.LOG_TRANSFER_DONE])] == [good]


def test_a_pull_that_raises_lets_the_one_beside_it_finish_then_the_round_raises(
    two, shm: Path, together
) -> None:
    """An exception out of one pull (here its progress callback, as the engine's stop
    does) ends the round, but only after the other transfer is committed and recorded."""
    from dmedia_tui.peer import client
    from dmedia_tui.peer.service import Peers

    a, b = two
    files, b_store = _two_files(shm, b, 2 * LEAF + 5000)
    first, second = sorted(files)  # the round takes them in this order
    (shm / "studio-1").mkdir()
    a_store = a.init_store(shm / "studio-1", label="studio-1")[0]
    Engine(a, watch_drives=False, watch_folders=False).run_once()
    eng_b = _serving_b(b)

    class Abort(Exception):
        pass

    def started(doc, machine, dst):
        def progress(nbytes: int) -> None:
            if doc["_id"] == first:
                raise Abort

        return progress

    peers = Peers(a, lambda: {a_store.id: a_store}, lambda sid, fid: None, discovery=False)
    try:
        with pytest.raises(Abort):
            peers.pull_round({a_store.id: a_store}, started=started)
    finally:
        eng_b.stop()
    assert a_store.file_path(second).read_bytes() == files[second]
    assert a.lib.docs.get(second)["stored"].keys() == {b_store.id, a_store.id}
    assert a_store.id not in a.lib.docs.get(first)["stored"]  # no claim, no copy
    assert not a_store.exists(first)
    assert client.partial_size(a_store, first) == LEAF  # its verified leaf, for next time
