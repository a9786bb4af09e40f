"""MetaStore operations on a real SQLite library and real FileStores in temp dirs."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from dmedia_tui import schema
from dmedia_tui.config import DAY, Config
from dmedia_tui.durability import durability
from dmedia_tui.engine import Engine
from dmedia_tui.filestore import FileStore, VerifyStatus
from dmedia_tui.metastore import MetaStore, MetaStoreError, UnknownStore
from tests.conftest import NOW
from tests.ops import import_one, verify_one


@pytest.fixture
def ms(sqlite_library, tmp_path: Path, clock) -> MetaStore:
    config = Config.load(tmp_path / "config", tmp_path / "data")
    return MetaStore(sqlite_library, config, clock)


def new_store(ms: MetaStore, tmp_path: Path, name: str, copies: int = 1) -> FileStore:
    folder = tmp_path / name
    folder.mkdir()
    fs, _doc, created = ms.init_store(folder, copies=copies, label=name, same_filesystem=True)
    assert created
    return fs


def source_file(tmp_path: Path, name: str, data: bytes) -> Path:
    p = tmp_path / "src" / name
    p.parent.mkdir(exist_ok=True)
    p.write_bytes(data)
    return p


def events(ms: MetaStore, type: str) -> list[dict]:
    return ms.lib.events(1000, newest_first=False, types=[type])


def test_init_store_refuses_same_filesystem_and_missing_folder(ms, tmp_path):
    new_store(ms, tmp_path, "a")
    (tmp_path / "b").mkdir()
    with pytest.raises(MetaStoreError, match="same filesystem"):
        ms.init_store(tmp_path / "b", label="b")
    assert not (tmp_path / "b" / ".dmedia").exists()
    with pytest.raises(MetaStoreError, match="not a folder"):
        ms.init_store(tmp_path / "nope")


def test_init_store_adopts_an_existing_filestore(ms, tmp_path):
    fs = new_store(ms, tmp_path, "a")
    again, doc, created = ms.init_store(tmp_path / "a")
    assert not created and again.id == fs.id and doc["_id"] == fs.id


def test_resolve_store_by_id_prefix_and_label(ms, tmp_path):
    a = new_store(ms, tmp_path, "alpha")
    new_store(ms, tmp_path, "beta")
    assert ms.resolve_store("alpha")["_id"] == a.id
    assert ms.resolve_store(a.id[:10])["_id"] == a.id
    with pytest.raises(UnknownStore):
        ms.resolve_store("gamma")


def test_import_records_once_and_merges_locations(ms, tmp_path):
    a = new_store(ms, tmp_path, "a")
    b = new_store(ms, tmp_path, "b")
    src = source_file(tmp_path, "MVI_0001.MOV", b"x" * 5000)
    fid, new = import_one(ms, src, a)
    assert new
    fid2, new2 = import_one(ms, src, b)
    assert (fid2, new2) == (fid, False)
    doc = ms.lib.docs.get(fid)
    assert set(doc["stored"]) == {a.id, b.id}
    assert durability(doc) == 2 and doc["name"] == "MVI_0001.MOV"
    assert schema.check_doc(doc) == [] and schema.check_file_consistency(doc) == []


def test_verify_ok_sets_verified(ms, tmp_path, clock):
    a = new_store(ms, tmp_path, "a")
    fid, _ = import_one(ms, source_file(tmp_path, "f", b"abc" * 1000), a)
    clock.advance(10)
    r = verify_one(ms, a, fid)
    assert r.status == VerifyStatus.OK
    assert ms.lib.docs.get(fid)["stored"][a.id]["verified"] == int(NOW + 10)


def test_unreadable_copy_changes_nothing(ms, tmp_path):
    a = new_store(ms, tmp_path, "a")
    fid, _ = import_one(ms, source_file(tmp_path, "f", b"abc" * 1000), a)
    before = ms.lib.docs.get(fid)

    def drive_gone(nbytes: int) -> None:
        # An EIO mid-read is the one thing we cannot make a real disk do here: the
        # progress hook runs inside the read loop, so raising there is the same path.
        raise OSError(errno.EIO, "Input/output error")

    r = verify_one(ms, a, fid, progress=drive_gone)
    assert r.status == VerifyStatus.UNREADABLE
    assert ms.lib.docs.get(fid) == before  # not corrupt, not missing, not re-verified
    [event] = ms.lib.events(10)  # only the unreadable event (issue 10, defect 6)
    assert event["type"] == schema.LOG_FILE_UNREADABLE and event["store_id"] == a.id
    assert a.file_path(fid).exists()


def test_corrupt_copy_downgrades_and_flags_store_and_reverify_gives_nothing_back(ms, tmp_path):
    a = new_store(ms, tmp_path, "a")
    b = new_store(ms, tmp_path, "b")
    f1, _ = import_one(ms, source_file(tmp_path, "f1", b"1" * 4000), a)
    f2, _ = import_one(ms, source_file(tmp_path, "f2", b"2" * 4000), a)
    import_one(ms, source_file(tmp_path, "f1", b"1" * 4000), b)
    path = a.file_path(f1)
    path.chmod(0o644)
    path.write_bytes(b"1" * 3999 + b"X")
    assert verify_one(ms, a, f1).status == VerifyStatus.CORRUPT
    doc1 = ms.lib.docs.get(f1)
    assert a.id not in doc1["stored"] and a.id in doc1["corrupt"]
    store = ms.store_doc(a.id)
    assert store["no_new_copies"] is True and store["failure"]["corrupt_count"] == 1
    assert store["downgraded"]["reason"] == "corrupt"
    # Every other copy on the store now counts 0, still tracked.
    assert ms.lib.docs.get(f2)["stored"][a.id]["copies"] == 0
    assert len(events(ms, schema.LOG_FILE_CORRUPT)) == 1
    assert len(events(ms, schema.LOG_STORE_FAILING)) == 1
    assert len(events(ms, schema.LOG_STORE_DOWNGRADE)) == 1
    # Re-verifying a good copy on the flagged store does not give durability back.
    assert verify_one(ms, a, f2).status == VerifyStatus.OK
    assert ms.lib.docs.get(f2)["stored"][a.id]["copies"] == 0
    # Trust again: the next verification counts.
    ms.trust_store(a.id)
    assert verify_one(ms, a, f2).status == VerifyStatus.OK
    assert ms.lib.docs.get(f2)["stored"][a.id]["copies"] == 1


def test_missing_copy_is_removed_and_logged(ms, tmp_path):
    a = new_store(ms, tmp_path, "a")
    fid, _ = import_one(ms, source_file(tmp_path, "f", b"m" * 100), a)
    a.file_path(fid).unlink()
    assert verify_one(ms, a, fid).status == VerifyStatus.MISSING
    assert ms.lib.docs.get(fid)["stored"] == {}
    assert [e["file_id"] for e in events(ms, schema.LOG_FILE_MISSING)] == [fid]


def test_copies_never_go_to_a_flagged_store_nor_past_the_reserve(ms, tmp_path):
    a = new_store(ms, tmp_path, "a")
    b = new_store(ms, tmp_path, "b")
    c = new_store(ms, tmp_path, "c")
    fid, _ = import_one(ms, source_file(tmp_path, "f", b"q" * 1000), a)
    ms.lib.docs.update(b.id, lambda d: {**d, "no_new_copies": True})
    connected = {s.id: s for s in (a, b, c)}
    assert ms.make_copy(ms.lib.docs.get(fid), connected) == 1
    doc = ms.lib.docs.get(fid)
    assert set(doc["stored"]) == {a.id, c.id}
    assert not b.exists(fid)
    # A reserve bigger than any disk: no copy anywhere.
    g, _ = import_one(ms, source_file(tmp_path, "g", b"r" * 1000), a)
    ms.thresholds = type(ms.thresholds)(reserve_fraction=1.0, reserve_max_bytes=10**18)
    assert ms.make_copy(ms.lib.docs.get(g), connected) == 0


def test_corrupt_source_is_not_copied_from(ms, tmp_path):
    a = new_store(ms, tmp_path, "a")
    b = new_store(ms, tmp_path, "b")
    fid, _ = import_one(ms, source_file(tmp_path, "f", b"s" * 3000), a)
    a.file_path(fid).chmod(0o644)
    a.file_path(fid).write_bytes(b"t" * 3000)
    assert ms.make_copy(ms.lib.docs.get(fid), {a.id: a, b.id: b}) == 0
    assert not b.exists(fid)
    assert len(events(ms, schema.LOG_FILE_CORRUPT)) == 1
    assert ms.store_doc(a.id)["no_new_copies"] is True


def test_time_policies_at_exact_thresholds(ms, tmp_path, clock):
    a = new_store(ms, tmp_path, "a")
    fid, _ = import_one(ms, source_file(tmp_path, "f", b"p" * 100), a)
    ms.heartbeat({a.id: a})
    clock.t = NOW + 3 * DAY - 1
    assert ms.run_time_policies(online=set()) == []
    clock.t = NOW + 3 * DAY
    (ev,) = ms.run_time_policies(online=set())
    assert (ev["type"], ev["reason"], ev["count"]) == (schema.LOG_STORE_DOWNGRADE, "atime", 1)
    assert ms.lib.docs.get(fid)["stored"][a.id]["copies"] == 0
    assert ms.run_time_policies(online=set()) == []  # not downgraded twice
    clock.t = NOW + 8 * DAY - 1
    assert ms.run_time_policies(online=set()) == []
    clock.t = NOW + 8 * DAY
    (ev,) = ms.run_time_policies(online=set())
    assert (ev["type"], ev["reason"]) == (schema.LOG_STORE_PURGE, "atime")
    assert ms.lib.docs.get(fid)["stored"] == {}
    assert ms.store_doc(a.id) is None
    assert a.file_path(fid).exists()  # never deletes files


def test_online_store_is_never_aged_out(ms, tmp_path, clock):
    a = new_store(ms, tmp_path, "a")
    ms.heartbeat({a.id: a})
    clock.t = NOW + 30 * DAY
    assert ms.run_time_policies(online={a.id}) == []


def test_file_entries_naming_a_vanished_store_are_purged(ms, tmp_path):
    a = new_store(ms, tmp_path, "a")
    fid, _ = import_one(ms, source_file(tmp_path, "f", b"o" * 100), a)
    ms.lib.docs.delete(ms.store_doc(a.id))
    evs = ms.run_time_policies(online={a.id})
    assert [(e["type"], e["reason"]) for e in evs] == [
        (schema.LOG_STORE_PURGE, "store_doc_missing")
    ]
    assert ms.lib.docs.get(fid)["stored"] == {}


def test_copy_unverified_for_30_days_is_downgraded(ms, tmp_path, clock):
    a = new_store(ms, tmp_path, "a")
    fid, _ = import_one(ms, source_file(tmp_path, "f", b"v" * 100), a)
    verify_one(ms, a, fid)
    clock.t = NOW + 30 * DAY - 1
    assert ms.downgrade_unverified({a.id}) == []
    clock.t = NOW + 30 * DAY + 1
    (ev,) = ms.downgrade_unverified({a.id})
    assert ev["reason"] == "unverified"
    assert ms.lib.docs.get(fid)["stored"][a.id]["copies"] == 0


def test_preview_counts_what_purge_would_change(ms, tmp_path):
    a = new_store(ms, tmp_path, "a")
    b = new_store(ms, tmp_path, "b")
    f, _ = import_one(ms, source_file(tmp_path, "f", b"1" * 100), a)
    import_one(ms, source_file(tmp_path, "g", b"2" * 100), a)
    import_one(ms, source_file(tmp_path, "f", b"1" * 100), b)
    p = ms.preview("purge", a.id)
    assert (p.files, p.copies, p.user_files_only_there) == (2, 2, 1)
    assert "1 user files have no other known copy" in p.describe()
    # A preview changes nothing.
    assert ms.lib.docs.get(f)["stored"][a.id]["copies"] == 1


def test_acknowledge_requires_a_failure(ms, tmp_path):
    a = new_store(ms, tmp_path, "a")
    with pytest.raises(MetaStoreError, match="no failure"):
        ms.acknowledge_failure(a.id)


def test_engine_run_once_heals_to_three_and_lock_is_exclusive(ms, tmp_path):
    stores = [new_store(ms, tmp_path, n) for n in "abcd"]
    ids = [
        import_one(ms, source_file(tmp_path, f"f{i}", bytes([i]) * 2000), stores[0])[0]
        for i in range(5)
    ]
    engine = Engine(ms, watch_drives=False, watch_folders=False)
    assert engine.acquire_lock()
    other = Engine(ms, watch_drives=False, watch_folders=False)
    assert not other.acquire_lock()
    summary = engine.run_once()
    assert summary.copies == 5
    for fid in ids:
        assert durability(ms.lib.docs.get(fid)) == 3
    h = ms.health(local=[s.id for s in stores])
    assert h.histogram[3].files == 5
    engine.release_lock()
    assert other.acquire_lock()
    other.release_lock()


def test_engine_threads_start_and_stop_quickly(ms, tmp_path):
    a = new_store(ms, tmp_path, "a")
    engine = Engine(ms, watch_drives=False, watch_folders=False)
    seen = []
    engine.subscribe(seen.append)
    assert engine.acquire_lock()
    engine.start()
    import_one(ms, source_file(tmp_path, "f", b"z" * 100), a)
    engine.request_verify(a.id)
    engine.stop(timeout=10)
    assert all(not t.is_alive() for t in engine._threads)
    assert any(e.kind == "changed" for e in seen)


def test_reattached_store_is_relinked_then_verified_back_to_durability(ms, tmp_path):
    a = new_store(ms, tmp_path, "a")
    fid, _ = import_one(ms, source_file(tmp_path, "f", b"w" * 500), a)
    ms.purge_store(a.id)
    assert ms.lib.docs.get(fid)["stored"] == {}
    fs, _doc, created = ms.init_store(tmp_path / "a")
    assert not created and fs.id == a.id
    entry = ms.lib.docs.get(fid)["stored"][a.id]
    assert entry["copies"] == 0 and "verified" not in entry  # tracked, worth 0 until read
    assert [d.file_id for d in ms.copies_due(a.id)] == [fid]
    assert verify_one(ms, fs, fid).status == VerifyStatus.OK
    assert durability(ms.lib.docs.get(fid)) == 1


def test_time_policies_downgrade_stale_verifications_at_most_hourly(ms, tmp_path, clock):
    a = new_store(ms, tmp_path, "a")
    fid, _ = import_one(ms, source_file(tmp_path, "f", b"h" * 100), a)
    verify_one(ms, a, fid)
    assert ms.run_time_policies(online={a.id}) == []  # the hourly pass ran: nothing stale
    clock.t = NOW + 30 * DAY + 1
    (ev,) = ms.run_time_policies(online={a.id})
    assert (ev["type"], ev["reason"]) == (schema.LOG_STORE_DOWNGRADE, "unverified")
    ms.lib.docs.update(fid, lambda d: {**d, "stored": {a.id: {**d["stored"][a.id], "copies": 1}}})
    clock.t += 3599
    assert ms.run_time_policies(online={a.id}) == []  # within the hour: not looked at again
    clock.t += 1
    assert len(ms.run_time_policies(online={a.id})) == 1


def _count_store_walks(monkeypatch, roots: set[str]) -> dict[str, int]:
    """Count the opens of each store's own folder (every walk to .dmedia starts there)."""
    import os

    counts = dict.fromkeys(roots, 0)
    real_open = os.open

    def counting_open(path, *args, **kw):
        if kw.get("dir_fd") is None and str(path) in counts:
            counts[str(path)] += 1
        return real_open(path, *args, **kw)

    monkeypatch.setattr(os, "open", counting_open)
    return counts


def test_a_copy_batch_and_a_verify_round_walk_each_store_folder_once(ms, tmp_path, monkeypatch):
    """Small files: a batch of copies, and the round that reads them back, open each
    store's folders once, not four or five opens a file (a quarter of a copy's cost)."""
    a, b = new_store(ms, tmp_path, "a"), new_store(ms, tmp_path, "b")
    srcs = [source_file(tmp_path, f"f{i}", bytes([i + 1]) * (3000 + i)) for i in range(40)]
    ms.import_paths(srcs, a)
    engine = Engine(ms, watch_drives=False, watch_folders=False)
    engine.connected = {a.id: a, b.id: b}
    engine.verify_until_done()  # a's copies verified: the source is a settled one
    counts = _count_store_walks(monkeypatch, {str(a.path), str(b.path)})
    assert engine.copy_round(limit=100).copies == 40
    assert all(n <= 3 for n in counts.values()), counts  # tmp, files, corrupt at most
    counts.update(dict.fromkeys(counts, 0))
    assert engine.verify_round(limit=100).verified == 40  # b's new copies read back
    assert all(n <= 3 for n in counts.values()), counts
    assert {d["_id"] for d in ms.iter_files_on(b.id)} == {d["_id"] for d in ms.iter_files_on(a.id)}
    assert not ms.copies_due(b.id)  # every new copy verified


def test_recovering_a_store_never_stats_its_copies(ms, tmp_path, monkeypatch):
    """Recovery reads folder entries (their names and types), never a stat and a Stat a
    copy: at a million copies that listing cost every `daemon --once`. A settled store
    is not even listed (one stat a folder); a copy the library lacks is still found and
    relinked."""
    monkeypatch.setattr("dmedia_tui.filestore.RACY_NS", 0)
    a = new_store(ms, tmp_path, "a")
    fids = [
        import_one(ms, source_file(tmp_path, f"f{i}", bytes([i + 1]) * 900), a)[0] for i in range(3)
    ]
    listed = []
    monkeypatch.setattr(FileStore, "__iter__", lambda fs: listed.append(fs.id) or iter(()))
    assert ms.recover_store(a)["adopted"] == 0
    assert ms.recover_store(a)["folders"] == 0
    ms.lib.docs.update(fids[0], lambda d: {**d, "stored": {}})  # the doc lost its copy
    assert ms.recover_store(a)["relinked"] == 1
    assert listed == []


def test_a_copy_batch_counts_its_own_copies_against_the_free_space(ms, tmp_path, monkeypatch):
    """The free space of a destination is asked once a batch (statvfs a file and store
    was ~6% of a small file's copy), and the batch's own copies are taken off it: a drive
    whose statvfs lags (or lies) still never gets copies past its reserve."""
    a, b = new_store(ms, tmp_path, "a"), new_store(ms, tmp_path, "b")
    ids = [
        import_one(ms, source_file(tmp_path, f"f{i}", bytes([i + 1]) * 1000), a)[0]
        for i in range(20)
    ]
    total = 10**6
    reserve = ms.thresholds.reserve_for(total)
    asked = []

    def statvfs():
        asked.append(1)
        return total, reserve + 5500  # room for 5 copies of 1000 bytes, whatever is written

    monkeypatch.setattr(b, "statvfs", statvfs)
    docs = ms.lib.docs.get_many(ids)
    out = ms.make_copies(docs, {a.id: a, b.id: b})
    assert sorted(out) == [0] * 15 + [1] * 5
    assert sum(b.exists(fid) for fid in ids) == 5
    assert len(asked) == 1


def test_an_import_walk_stats_no_regular_file(ms, tmp_path, monkeypatch):
    """Folders are walked by their entries' types: a small file is not lstat-ed by the
    walk nor stat-ed for its size before it is opened (the import's fstat finds an empty
    one); what is reported is unchanged: files in walk order, empty ones, skipped ones."""
    import os

    a = new_store(ms, tmp_path, "a")
    top = tmp_path / "photos"
    for d in ("b", "a", "a/z"):
        (top / d).mkdir(parents=True)
    names = ["b/2.jpg", "a/1.jpg", "a/z/0.jpg", "top.jpg", "a/0.jpg"]
    for i, name in enumerate(names):
        (top / name).write_bytes(bytes([i + 1]) * (1000 + i))
    (top / "a" / "empty.jpg").write_bytes(b"")
    os.mkfifo(top / "a" / "pipe")
    (top / "link.jpg").symlink_to(top / "top.jpg")
    (top / "b" / "dir-link").symlink_to(top / "a")
    stats = []
    real_stat = os.stat

    def counting_stat(path, *args, **kw):
        stats.append(str(path))
        return real_stat(path, *args, **kw)

    monkeypatch.setattr(os, "stat", counting_stat)
    seen: list[str] = []
    report = ms.import_paths(
        [top], a, on_file=lambda p, n: seen.append(p.relative_to(top).as_posix())
    )
    monkeypatch.setattr(os, "stat", real_stat)
    assert seen == ["top.jpg", "a/0.jpg", "a/1.jpg", "a/z/0.jpg", "b/2.jpg"]
    assert (report.files, report.empty, report.errors) == (5, 1, [])
    assert {Path(s["path"]).relative_to(top).as_posix(): s["reason"] for s in report.skipped} == {
        "a/pipe": "FIFO",
        "link.jpg": "symlink",
        "b/dir-link": "symlink",
    }
    assert [s for s in stats if s.startswith(str(top))] == [str(top)]  # the folder named


def test_run_once_reads_each_file_for_copying_once(ms, tmp_path, monkeypatch):
    """daemon --once on small files: each fragile file is staged for copying once; no pass
    over the fragile list finds nothing (a copied file met again at its new rank, a pass
    repeated after one that made copies, another after the read-back found all good:
    three such passes cost ~6% of copying 2,000 small files). A copy found corrupt on the
    read-back still gets made again in the same call."""
    a, b = new_store(ms, tmp_path, "a"), new_store(ms, tmp_path, "b")  # still fragile after
    ids = [
        import_one(ms, source_file(tmp_path, f"f{i}", bytes([i + 1]) * (700 + i)), a)[0]
        for i in range(30)
    ]
    engine = Engine(ms, watch_drives=False, watch_folders=False)
    engine.refresh_connected()
    staged = []
    real = MetaStore._stage_copy

    def counting(self, doc, *args, **kw):
        staged.append(doc["_id"])
        return real(self, doc, *args, **kw)

    monkeypatch.setattr(MetaStore, "_stage_copy", counting)
    summary = engine.run_once()
    assert summary.copies == 30 and summary.verified == 60
    assert sorted(staged) == sorted(ids)
    assert all(durability(ms.lib.docs.get(fid)) == 2 for fid in ids)
    # A new copy that reads back corrupt is quarantined and made again, in the same call.
    c = new_store(ms, tmp_path, "c")
    engine.refresh_connected()
    rot = ids[0]
    b.file_path(rot).chmod(0o644)
    b.file_path(rot).write_bytes(b"x" * 700)
    engine.request_verify(b.id, rot)
    again = engine.run_once()
    assert again.corrupt == 1
    doc = ms.lib.docs.get(rot)
    assert durability(doc) == 2 and c.id in doc["stored"] and b.id not in doc["stored"]


def test_a_copy_verified_while_its_store_is_downgraded_counts_nothing(ms, tmp_path, monkeypatch):
    """The verify worker read each store's weight, then wrote the file docs. A downgrade
    committed in between (the user's, or a policy's on the housekeeping thread) was then
    overwritten: the copy counted 1 on a store just downgraded, and durability lied."""
    fs = new_store(ms, tmp_path, "s1")
    fid, _ = import_one(ms, source_file(tmp_path, "a.jpg", b"a photo" * 1000), fs)
    result = fs.verify(fid)
    assert result.status == VerifyStatus.OK
    docs = ms.lib.docs
    real_update_many = docs.update_many

    def downgrade_first(*args, **kwargs):  # committed after the worker read the store doc
        monkeypatch.setattr(docs, "update_many", real_update_many)
        ms.downgrade_store(fs.id)
        return real_update_many(*args, **kwargs)

    monkeypatch.setattr(docs, "update_many", downgrade_first)
    assert ms.record_verified([(fs.id, result)]) == []
    entry = ms.lib.docs.get(fid)["stored"][fs.id]
    assert entry["copies"] == 0 and entry["verified"] == int(ms.now())
    assert durability(ms.lib.docs.get(fid)) == 0


def test_a_copy_made_while_its_store_is_downgraded_counts_nothing(ms, tmp_path, monkeypatch):
    """The copy worker chose the destination, wrote the copy, then recorded it with the
    weight it had read before: a downgrade of that store committed meanwhile was
    overwritten, and the new copy counted 1 on a store that takes no new copies."""
    a, b = new_store(ms, tmp_path, "a"), new_store(ms, tmp_path, "b")
    fid, _ = import_one(ms, source_file(tmp_path, "a.jpg", b"a photo" * 1000), a)
    docs = ms.lib.docs
    real_update_many = docs.update_many

    def downgrade_b_first(doc_ids, fn, *args, **kwargs):  # as the copy is recorded
        if fn.__name__ == "_mark_copied_many":
            monkeypatch.setattr(docs, "update_many", real_update_many)
            ms.downgrade_store(b.id)
        return real_update_many(doc_ids, fn, *args, **kwargs)

    engine = Engine(ms, watch_drives=False, watch_folders=False)
    engine.refresh_connected()
    monkeypatch.setattr(docs, "update_many", downgrade_b_first)
    assert engine.copy_round().copies == 1  # no verify round after it to mend the count
    assert docs.update_many == real_update_many
    assert b.exists(fid)
    doc = docs.get(fid)
    assert doc["stored"][b.id]["copies"] == 0 and durability(doc) == 1


def test_two_corrupt_copies_found_at_once_flag_the_store_once(ms, tmp_path):
    """The verify worker and the peer server (serving a pull) can each find a corrupt copy
    on the same drive at the same moment. Each read the store as not failing yet, so each
    logged `store/failing` and started a downgrade pass."""
    import threading

    a = new_store(ms, tmp_path, "a")
    rotten = []
    for i in range(4):
        fid, _ = import_one(ms, source_file(tmp_path, f"f{i}", bytes([i]) * 40_000), a)
        path = a.file_path(fid)
        path.chmod(0o644)
        path.write_bytes(bytes([i]) * 39_999 + b"X")
        rotten.append(fid)
    start = threading.Barrier(len(rotten))
    results = []

    def worker(fid: str) -> None:
        start.wait()
        results.append(verify_one(ms, a, fid).status)

    running = [threading.Thread(target=worker, args=(fid,)) for fid in rotten]
    for t in running:
        t.start()
    for t in running:
        t.join()
    assert results == [VerifyStatus.CORRUPT] * len(rotten)
    assert len(ms.lib.events(100, types=[schema.LOG_STORE_FAILING])) == 1
    assert len(ms.lib.events(100, types=[schema.LOG_FILE_CORRUPT])) == len(rotten)
    assert ms.store_doc(a.id)["failure"]["corrupt_count"] == len(rotten)
