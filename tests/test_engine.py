"""The engine's rounds and threads on folder stores in temp dirs (no drives needed).

Real SQLite, real FileStores, a FixedClock for the rounds (time is moved, never slept
through) and the real worker threads where the test is about them; waits are bounded polls
on the state, not timings.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dmedia_tui import schema
from dmedia_tui.config import DAY, Config
from dmedia_tui.engine import Activity, Engine, EngineEvent
from dmedia_tui.filestore import FileStore, VerifyResult, VerifyStatus
from dmedia_tui.metastore import MetaStore
from dmedia_tui.protocol import LEAF_SIZE


def wait_for(what: str, pred: Callable[[], object], timeout: float = 10.0) -> None:
    t0 = time.monotonic()
    while not pred():
        if time.monotonic() - t0 > timeout:
            raise AssertionError(f"not within {timeout} s: {what}")
        time.sleep(0.02)


@pytest.fixture
def ms(sqlite_library, tmp_path: Path, clock) -> MetaStore:
    return MetaStore(sqlite_library, Config.load(tmp_path / "config", tmp_path / "data"), clock)


def new_store(ms: MetaStore, tmp_path: Path, name: str) -> FileStore:
    folder = tmp_path / name
    folder.mkdir()
    fs, _doc, _ = ms.init_store(folder, label=name, same_filesystem=True)
    return fs


def import_files(ms: MetaStore, fs: FileStore, tmp_path: Path, n: int, size: int = 5000):
    src = tmp_path / "src"
    src.mkdir(exist_ok=True)
    for i in range(n):
        (src / f"f{i}.bin").write_bytes(bytes([i + 1]) * (size + i))
    return ms.import_paths([src], fs).file_ids


def verified_at(ms: MetaStore, fid: str, sid: str) -> int | None:
    return ms.lib.docs.get(fid)["stored"].get(sid, {}).get("verified")


@pytest.fixture
def engines() -> Iterator[list[Engine]]:
    made: list[Engine] = []
    yield made
    for e in made:
        e.stop()


# --- rounds -----------------------------------------------------------------------------


def test_run_once_settles_the_library_and_a_second_run_does_nothing(ms, tmp_path):
    a = new_store(ms, tmp_path, "a")
    b = new_store(ms, tmp_path, "b")
    c = new_store(ms, tmp_path, "c")
    ids = import_files(ms, a, tmp_path, 4)
    engine = Engine(ms, watch_drives=False, watch_folders=False)

    first = engine.run_once()
    assert first.copies == 4  # each file to b and c at once
    for fid in ids:
        stored = ms.lib.docs.get(fid)["stored"]
        assert set(stored) == {a.id, b.id, c.id}
        assert all("verified" in v for v in stored.values())  # new copies verified too
    docs_before = {d["_id"]: d["_rev"] for d in (ms.lib.docs.get(f) for f in ids)}

    second = engine.run_once()
    assert second.to_json() == {k: 0 for k in second.to_json()}
    assert {d["_id"]: d["_rev"] for d in (ms.lib.docs.get(f) for f in ids)} == docs_before
    assert ms.lib.events(types=[schema.LOG_FILE_CORRUPT, schema.LOG_FILE_MISSING]) == []


def test_request_verify_of_one_file_verifies_only_that_copy(ms, tmp_path, clock):
    a = new_store(ms, tmp_path, "a")
    f1, f2 = import_files(ms, a, tmp_path, 2)
    engine = Engine(ms, watch_drives=False, watch_folders=False)
    engine.run_once()
    t0 = verified_at(ms, f1, a.id)
    assert t0 == verified_at(ms, f2, a.id) == int(clock.now())

    clock.advance(DAY)  # nothing is due for 15 days
    assert engine.verify_round().verified == 0
    engine.request_verify(file_id=f1)
    r = engine.verify_round()
    assert r.verified == 1
    assert verified_at(ms, f1, a.id) == t0 + DAY
    assert verified_at(ms, f2, a.id) == t0


def test_unreadable_copy_is_retried_only_after_verify_retry_after(ms, tmp_path, clock, monkeypatch):
    a = new_store(ms, tmp_path, "a")
    [fid] = import_files(ms, a, tmp_path, 1)
    # A read error cannot be made on a real disk here (root reads a chmod-000 file, and a
    # folder in place of a copy is MISSING): the FileStore's read answers EIO instead.
    real_verify = FileStore.verify

    def eio(self, file_id, progress=None):
        return VerifyResult(VerifyStatus.UNREADABLE, file_id, error="Input/output error (EIO)")

    monkeypatch.setattr(FileStore, "verify", eio)
    engine = Engine(ms, watch_drives=False, watch_folders=False)
    engine.refresh_connected()

    assert engine.verify_round().unreadable == 1
    doc = ms.lib.docs.get(fid)
    assert a.id in doc["stored"] and not doc.get("corrupt")  # neither corrupt nor missing
    retry = ms.thresholds.verify_retry_after
    clock.advance(retry - 1)
    r = engine.verify_round()
    assert (r.unreadable, r.verified) == (0, 0)  # not before verify_retry_after

    clock.advance(1)
    assert engine.verify_round().unreadable == 1  # retried, still unreadable
    monkeypatch.setattr(FileStore, "verify", real_verify)
    clock.advance(retry)
    assert engine.verify_round().verified == 1
    assert verified_at(ms, fid, a.id) == int(clock.now())
    assert ms.lib.events(types=[schema.LOG_FILE_CORRUPT, schema.LOG_FILE_MISSING]) == []


def test_rounds_emit_events_to_subscribers(ms, tmp_path):
    a = new_store(ms, tmp_path, "a")
    new_store(ms, tmp_path, "b")
    import_files(ms, a, tmp_path, 2)
    engine = Engine(ms, watch_drives=False, watch_folders=False)
    got: list[EngineEvent] = []
    unsubscribe = engine.subscribe(got.append)
    engine.run_once()
    kinds = {e.kind for e in got}
    assert {"changed", "activity"} <= kinds
    acts = [e.data for e in got if e.kind == "activity"]
    assert all(isinstance(x, Activity) for x in acts)
    assert {x.kind for x in acts} == {"verify", "copy"}
    connected = [e.data for e in got if e.kind == "changed" and isinstance(e.data, dict)]
    assert connected[0]["added"] == sorted(engine.connected)
    unsubscribe()
    n = len(got)
    engine.run_once()
    assert len(got) == n


# --- threads ----------------------------------------------------------------------------


def test_a_raising_subscriber_does_not_kill_the_workers(ms, tmp_path, engines):
    a = new_store(ms, tmp_path, "a")
    f1, f2 = import_files(ms, a, tmp_path, 2)
    engine = Engine(ms, watch_drives=False, watch_folders=False)
    engines.append(engine)
    got: list[EngineEvent] = []

    def bad(ev: EngineEvent) -> None:
        raise RuntimeError("subscriber bug")

    engine.subscribe(bad)
    engine.subscribe(got.append)
    engine.start()
    wait_for("first verification", lambda: verified_at(ms, f1, a.id) and verified_at(ms, f2, a.id))
    assert all(t.is_alive() for t in engine._threads)
    ms.clock.advance(DAY)
    engine.request_verify(file_id=f2)  # the verify worker is still there to do it
    wait_for("requested verification", lambda: verified_at(ms, f2, a.id) == int(ms.now()))
    assert verified_at(ms, f1, a.id) == int(ms.now()) - DAY
    assert any(e.kind == "activity" for e in got)
    assert all(t.is_alive() for t in engine._threads)


def test_deleted_and_modified_copies_are_verified_at_once(ms, tmp_path, engines):
    """The folder watcher: a canonical copy deleted or rewritten behind our back is verified
    (missing / corrupt, logged to log-1) without waiting for it to be due."""
    a = new_store(ms, tmp_path, "a")
    f1, f2, f3 = import_files(ms, a, tmp_path, 3)
    engine = Engine(ms, watch_drives=False)
    engines.append(engine)
    engine.start()
    wait_for("verified", lambda: all(verified_at(ms, f, a.id) for f in (f1, f2, f3)))

    a.file_path(f1).unlink()
    wait_for("missing logged", lambda: ms.lib.events(types=[schema.LOG_FILE_MISSING]))
    [missing] = ms.lib.events(types=[schema.LOG_FILE_MISSING])
    assert (missing["file_id"], missing["store_id"]) == (f1, a.id)

    p = a.file_path(f2)
    os.chmod(p, 0o644)
    with open(p, "r+b") as f:
        f.write(b"\xff")  # bit rot, or a program writing where it should not
    wait_for(
        "corrupt handled",
        lambda: (
            ms.lib.events(types=[schema.LOG_FILE_CORRUPT])
            and a.id not in ms.lib.docs.get(f2)["stored"]
        ),
    )
    [corrupt] = ms.lib.events(types=[schema.LOG_FILE_CORRUPT])
    assert (corrupt["file_id"], corrupt["store_id"]) == (f2, a.id)
    assert a.corrupt_path(f2).exists()  # quarantined, never deleted
    assert a.id not in ms.lib.docs.get(f2)["stored"]


def test_store_folder_going_away_disconnects_it_and_the_watcher_survives(ms, tmp_path, engines):
    a = new_store(ms, tmp_path, "a")
    [fid] = import_files(ms, a, tmp_path, 1)
    engine = Engine(ms, watch_drives=False)
    engines.append(engine)
    engine.start()
    wait_for("watched", lambda: a.id in engine._store_watcher.watched())
    moved = tmp_path / "a-away"
    os.rename(a.path, moved)  # the folder goes (like a drive yanked)
    wait_for(
        "disconnected",
        lambda: (
            a.id not in engine.connected and a.id not in ms.lib.docs.get(ms.machine_id)["stores"]
        ),
    )
    assert ms.store_doc(a.id) is not None
    assert ms.lib.events(types=[schema.LOG_FILE_MISSING]) == []  # gone is not missing
    os.rename(moved, a.path)
    engine.wake()
    wait_for("connected again", lambda: a.id in engine.connected)
    wait_for("watched again", lambda: a.id in engine._store_watcher.watched())
    a.file_path(fid).unlink()
    wait_for("missing logged", lambda: ms.lib.events(types=[schema.LOG_FILE_MISSING]))


def test_stop_abandons_a_verify_in_progress_and_records_nothing(ms, tmp_path, engines):
    a = new_store(ms, tmp_path, "a")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(1024) * (3 * LEAF_SIZE // 1024) + b"tail")
    [fid] = ms.import_paths([src], a).file_ids
    engine = Engine(ms, watch_drives=False, watch_folders=False)
    started = threading.Event()

    def on_event(ev: EngineEvent) -> None:
        if ev.kind == "activity" and ev.data.kind == "verify" and ev.data.done:
            started.set()
            engine._stop.wait(10)  # hold the verify until stop() was called

    engine.subscribe(on_event)
    engine.start()
    assert started.wait(10)
    engine.stop()
    assert engine._threads == []
    assert verified_at(ms, fid, a.id) is None  # abandoned mid-file: nothing recorded
    assert ms.lib.events() == []


def test_activity_snapshot_copies_what_the_workers_do_from_another_thread(ms, tmp_path):
    """The app reads the workers' activity from its own thread: activity_snapshot hands
    it copies taken under the engine's lock (it used to iterate the live dict and retry on
    RuntimeError), so what it shows cannot change under it."""
    a = new_store(ms, tmp_path, "a")
    src = tmp_path / "big.bin"
    src.write_bytes(os.urandom(1024) * (3 * LEAF_SIZE // 1024) + b"tail")
    [fid] = ms.import_paths([src], a).file_ids
    engine = Engine(ms, watch_drives=False, watch_folders=False)
    engine.refresh_connected()
    seen: list[tuple[list[Activity], list[float], int]] = []

    def on_event(ev: EngineEvent) -> None:
        if ev.kind == "activity" and ev.data is not None and ev.data.kind == "verify":
            acts, rates = engine.activity_snapshot()
            seen.append((acts, rates, ev.data.done))

    engine.subscribe(on_event)
    assert engine.verify_round().verified == 1
    assert seen, "no activity while verifying a 3-leaf file"
    for acts, _rates, done in seen:
        [act] = acts
        assert act.kind == "verify" and act.file_id == fid
        assert act.done == done  # a copy of the state at that moment...
        assert act is not engine.activity.get("verify")  # ...not the worker's own object
    assert [done for _, _, done in seen] == sorted(done for _, _, done in seen)
    acts, rates = engine.activity_snapshot()
    assert acts == [] and len(rates) == 1  # the round is over: one throughput sample


def test_start_twice_and_stop_join_every_thread(ms, tmp_path):
    new_store(ms, tmp_path, "a")
    engine = Engine(ms, watch_drives=True, watch_folders=True)
    before = set(threading.enumerate())
    engine.start()
    threads = list(engine._threads)
    engine.start()
    assert engine._threads == threads
    wait_for("heartbeat", lambda: ms.lib.docs.get_or_none(ms.machine_id))
    engine.stop()
    assert not any(t.is_alive() for t in threads)
    leftover = [t for t in set(threading.enumerate()) - before if t.is_alive()]
    assert [t.name for t in leftover if t.name.startswith("dmedia")] == []


# --- the copy worker never stalls (issue 9 point 11) ---------------------------------------


def test_copy_worker_goes_past_files_it_cannot_copy_and_says_what_it_waits_for(
    ms, tmp_path, engines
):
    """The most fragile files (only on a store that is offline now) fill more than one
    round of the copy worker; the copyable files behind them still get their copies from
    the running engine, without a restart, and then the worker says it waits for that store."""
    a, b, c = (new_store(ms, tmp_path, n) for n in "abc")
    usb = new_store(ms, tmp_path, "usb-archive")
    src = tmp_path / "usb-src"
    src.mkdir()
    for i in range(120):  # more than two rounds (limit 50) of files that cannot be copied now
        (src / f"u{i}.bin").write_bytes(b"u%d" % i * 50)
    stuck = ms.import_paths([src], usb).file_ids
    copyable = import_files(ms, a, tmp_path, 5)
    ms.downgrade_store(usb.id)  # copies there count 0: those files rank first
    (tmp_path / "usb-archive").rename(tmp_path / "usb-unplugged")

    engine = Engine(ms, watch_drives=False, watch_folders=False)
    engines.append(engine)
    assert engine.acquire_lock()
    engine.start()
    wait_for(
        "every copyable file has 3 copies",
        lambda: all(len(ms.lib.docs.get(f)["stored"]) == 3 for f in copyable),
    )
    assert {a.id, b.id, c.id} == set(ms.lib.docs.get(copyable[0])["stored"])
    assert all(list(ms.lib.docs.get(f)["stored"]) == [usb.id] for f in stuck)

    def waiting() -> str:
        act = engine.activity.get("copy")
        return (act.waiting or "") if act is not None else ""

    wait_for("the copy worker says what it waits for", lambda: "usb-archive" in waiting())
    assert waiting().startswith("waiting for")


def test_a_verify_request_made_before_the_stores_are_known_waits_for_them(ms, tmp_path, clock):
    """The app asks to verify before the housekeeping thread's first look at the stores:
    the request is kept, not popped against an empty set of stores and lost."""
    a = new_store(ms, tmp_path, "a")
    [fid] = import_files(ms, a, tmp_path, 1)
    Engine(ms, watch_drives=False, watch_folders=False).run_once()
    t0 = verified_at(ms, fid, a.id)
    clock.advance(DAY)  # nothing is due for 15 days

    engine = Engine(ms, watch_drives=False, watch_folders=False)
    engine.request_verify()  # every connected store, asked at once
    assert engine.verify_round().verified == 0  # no store known yet: it waits
    engine.refresh_connected()
    assert engine.verify_round().verified == 1
    assert verified_at(ms, fid, a.id) == t0 + DAY
