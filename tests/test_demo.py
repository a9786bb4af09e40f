"""The demo library keeps its promises, checked through the core (docs, health, engine)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import platformdirs
import pytest

from dmedia_tui import health as health_mod
from dmedia_tui import schema
from dmedia_tui.clock import FixedClock
from dmedia_tui.config import APP_NAME, Config
from dmedia_tui.db import Library, open_library
from dmedia_tui.demo import CORRUPT_COPIES, DemoError, DemoLibrary, build_demo
from dmedia_tui.durability import durability
from dmedia_tui.engine import Engine, RoundSummary
from dmedia_tui.filestore import FileStore
from dmedia_tui.metastore import MetaStore, MetaStoreError
from dmedia_tui.protocol import LEAF_SIZE
from tests.conftest import NOW

FILES = 60


@pytest.fixture(scope="module")
def xdg_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Module fixtures run before conftest's per-test isolation: isolate them too."""
    home = tmp_path_factory.mktemp("xdg")
    with pytest.MonkeyPatch.context() as mp:
        for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME", "XDG_CACHE_HOME"):
            mp.setenv(var, str(home / var.lower()))
        mp.delenv("DMEDIA_DB", raising=False)
        mp.delenv("DMEDIA_NOW", raising=False)
        yield home


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, xdg_home: Path) -> DemoLibrary:
    """One small demo, as built: building is the expensive part (real files, fsyncs)."""
    return build_demo(tmp_path_factory.mktemp("demo") / "sandbox", NOW, files=FILES)


@dataclass
class Settled:
    demo: DemoLibrary
    report: RoundSummary


@pytest.fixture(scope="module")
def settled(tmp_path_factory: pytest.TempPathFactory, xdg_home: Path) -> Settled:
    """Another demo after one full engine pass (what the app's first minute does)."""
    demo = build_demo(tmp_path_factory.mktemp("demo") / "sandbox", NOW, files=FILES)
    lib = open_library(str(demo.db_path), create=False)
    try:
        report = Engine(metastore(lib, demo), watch_drives=False, watch_folders=False).run_once()
    finally:
        lib.close()
    return Settled(demo, report)


@pytest.fixture
def lib(built: DemoLibrary) -> Iterator[Library]:
    library = open_library(str(built.db_path), create=False)
    yield library
    library.close()


def metastore(lib: Library, built: DemoLibrary, config_dir: Path | None = None) -> MetaStore:
    config = Config.load(config_dir or built.config_dir, built.data_dir)
    return MetaStore(lib, config, FixedClock(built.now))


def test_builds_every_store_with_a_simulated_distinct_identity(built: DemoLibrary, lib: Library):
    stores = {s["label"]: s for s in lib.stores()}
    assert len(stores) >= 5
    expected = {"studio-int", "studio-raid", "usb-backup-2", "laptop-ssd", "usb-archive"}
    assert expected <= set(stores)
    assert "sd-card-a7" not in stores  # purged in the history; its folder stays on disk
    assert len({s["partition_uuid"] for s in stores.values()}) == len(stores)
    assert len({s["filesystem_id"] for s in stores.values()}) == len(stores)
    for s in stores.values():
        assert s["drive_serial"] and s["drive_model"]
        assert schema.check_doc(s) == []
    assert stores["usb-backup-2"]["removable"] is True
    assert stores["usb-archive"]["removable"] is True
    assert stores["studio-int"]["internal"] is True
    assert stores["laptop-ssd"]["internal"] is True
    # Nothing is pre-marked: the engine must find the corruption itself.
    assert not any(s.get("failure") or s.get("no_new_copies") for s in stores.values())
    for label, path in built.store_paths.items():
        assert FileStore(path).id == built.store_ids[label]
        assert path.resolve().is_relative_to(built.dir)


def test_laptop_store_belongs_to_another_machine_that_is_off(built: DemoLibrary, lib: Library):
    here = Config.load(built.config_dir, built.data_dir)
    other = Config.load(built.other_config_dir, built.other_data_dir)
    assert here.machine_id != other.machine_id
    laptop = lib.docs.get(built.store_ids["laptop-ssd"])
    assert laptop["machine_id"] == other.machine_id
    machines = {m["_id"]: m for m in lib.machines()}
    kestrel = machines[other.machine_id]
    assert kestrel["hostname"] == "kestrel"
    assert kestrel["stores"] == [laptop["_id"]]
    assert built.now - kestrel["atime"] > here.thresholds.heartbeat_fresh  # stale: it is off
    assert built.store_ids["laptop-ssd"] not in here.known_stores()
    assert built.store_ids["laptop-ssd"] in other.known_stores()
    studio = machines[here.machine_id]
    assert studio["hostname"] == "studio" and studio["atime"] == int(built.now)


def test_unplugged_drive_is_recorded_but_not_connected(built: DemoLibrary, lib: Library):
    ms = metastore(lib, built)
    sid = built.store_ids["usb-archive"]
    connected = ms.connected_filestores()
    assert set(connected) == {built.store_ids[label] for label in built.connected}
    assert sid not in connected
    doc = lib.docs.get(sid)
    assert doc["drive_serial"] and doc["partition_uuid"] and doc["removable"] is True
    assert doc["atime"] == int(built.now - 2 * 86400)
    assert sid not in ms.online(connected)
    # Its files really are on the drive "in the drawer".
    assert FileStore(built.store_paths["usb-archive"]).id == sid


def test_files_are_camera_like_at_every_durability(built: DemoLibrary, lib: Library):
    assert len(built.files) == FILES
    assert lib.docs.count() >= FILES
    assert any(f.bytes > LEAF_SIZE for f in built.files)  # at least one multi-leaf file
    assert {"render", "proxy"} <= {f.origin for f in built.files}
    exts = {f.name.rsplit(".", 1)[1] for f in built.files}
    assert {"MOV", "JPG", "CR2", "WAV"} <= exts
    h = metastore(lib, built).health()
    by_durability = {b.durability: b.files for b in h.histogram}
    assert by_durability[1] > 0 and by_durability[2] > 0 and by_durability[3] > 0
    for f in built.files:
        doc = lib.docs.get(f.file_id)
        assert schema.check_doc(doc) == [] and schema.check_file_consistency(doc) == []
        assert doc["bytes"] == f.bytes and doc["name"] == f.name
        assert doc["atime"] < built.now


def test_past_events_are_in_the_log(built: DemoLibrary, lib: Library):
    events = lib.events(100, newest_first=False)
    assert len(events) == built.events >= 3
    assert all(e["time"] < built.now for e in events)
    types = {e["type"] for e in events}
    assert {schema.LOG_STORE_DOWNGRADE, schema.LOG_STORE_PURGE} <= types
    assert schema.LOG_FILE_CORRUPT not in types  # the corruption is for the engine to find
    assert [e["time"] for e in events] == sorted(e["time"] for e in events)


def test_health_shows_offline_only_copies_and_low_durability(built: DemoLibrary, lib: Library):
    ms = metastore(lib, built)
    h = ms.health(local=ms.connected_filestores().keys())
    codes = [a.code for a in h.alerts]
    assert health_mod.DISCONNECTED_ONLY_COPY in codes
    assert health_mod.LOW_DURABILITY in codes
    assert health_mod.SHARED_FILESYSTEM not in codes
    assert health_mod.DRIVE_FAILURE not in codes  # not pre-marked
    actions = " ".join(a.action for a in h.alerts if a.code == health_mod.DISCONNECTED_ONLY_COPY)
    assert "kestrel" in actions and "usb-archive" in actions


def test_engine_finds_the_planted_corruption_and_makes_copies(settled: Settled):
    demo, report = settled.demo, settled.report
    assert report.corrupt == CORRUPT_COPIES == len(demo.corrupt)
    assert report.missing == 0 and report.unreadable == 0
    lib = open_library(str(demo.db_path), create=False)
    try:
        corrupt_events = lib.events(100, types=[schema.LOG_FILE_CORRUPT])
        assert sorted(e["file_id"] for e in corrupt_events) == sorted(demo.corrupt)
        usb = demo.store_ids["usb-backup-2"]
        assert {e["store_id"] for e in corrupt_events} == {usb}

        store = lib.docs.get(usb)
        assert store["failure"]["corrupt_count"] == CORRUPT_COPIES
        assert store["no_new_copies"] is True and store["downgraded"]
        fs = FileStore(demo.store_paths["usb-backup-2"], expected_id=usb)
        for fid in demo.corrupt:
            assert fs.corrupt_path(fid).exists() and not fs.exists(fid)
            doc = lib.docs.get(fid)
            assert usb not in doc["stored"] and usb in doc["corrupt"]

        h = metastore(lib, demo).health()
        failure = [a for a in h.alerts if a.code == health_mod.DRIVE_FAILURE]
        assert len(failure) == 1 and usb in failure[0].store_ids

        # Every user file with a copy on a store connected here now has 3 copies...
        reachable = set(demo.connected)
        checked = 0
        for f in demo.files:
            if f.origin == "user" and reachable & set(f.stores):
                assert durability(lib.docs.get(f.file_id)) >= 3, f
                checked += 1
        assert checked > FILES // 2
        # ... and only the files that are nowhere reachable stay below 2.
        low = [a for a in h.alerts if a.code == health_mod.LOW_DURABILITY]
        unreachable = [
            f for f in demo.files if f.origin == "user" and not reachable & set(f.stores)
        ]
        assert low and low[0].files == len(unreachable)
    finally:
        lib.close()


def test_nothing_is_written_outside_the_demo_dir(settled: Settled, xdg_home: Path):
    demo = settled.demo
    # The builds and the engine pass ran with XDG_* pointing at xdg_home: the platformdirs
    # defaults must stay untouched, there and in this test's own isolated home.
    assert not any(xdg_home.rglob("*")), list(xdg_home.rglob("*"))
    for d in (platformdirs.user_config_dir(APP_NAME), platformdirs.user_data_dir(APP_NAME)):
        assert not Path(d).exists(), d
    for path in (demo.db_path, demo.config_dir, demo.other_config_dir, demo.data_dir):
        assert path.is_relative_to(demo.dir)
    assert (demo.data_dir / "library.sqlite3").is_file()


def test_same_seed_same_files_and_a_summary(tmp_path: Path, built: DemoLibrary):
    again = build_demo(tmp_path / "again", NOW, files=FILES)
    assert [f.file_id for f in again.files] == [f.file_id for f in built.files]
    assert [f.name for f in again.files] == [f.name for f in built.files]
    other = build_demo(tmp_path / "other", NOW, files=FILES, seed=2)
    assert {f.file_id for f in other.files}.isdisjoint(f.file_id for f in built.files)
    text = built.summary()
    for label in built.store_paths:
        assert label in text
    assert f"{FILES} files" in text and "usb-backup-2" in text


def test_refuses_a_non_empty_dir_and_too_few_files(tmp_path: Path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("mine")
    with pytest.raises(DemoError, match="not empty"):
        build_demo(tmp_path / "full", NOW, files=FILES)
    assert os.listdir(tmp_path / "full") == ["keep.txt"]
    with pytest.raises(DemoError, match="at least"):
        build_demo(tmp_path / "tiny", NOW, files=3)
    assert not (tmp_path / "tiny").exists()
    with pytest.raises(DemoError, match="present"):
        build_demo(tmp_path / "past", 1000.0, files=FILES)
    assert issubclass(DemoError, MetaStoreError)  # the CLI prints it as one line
