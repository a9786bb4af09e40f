"""Pulling copies from a peer: every leaf verified before it is written, resumable."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dmedia_tui import protocol
from dmedia_tui.filestore import FileStore
from dmedia_tui.peer import client as client_mod
from dmedia_tui.peer import server as server_mod
from dmedia_tui.peer.client import (
    NotOnPeer,
    PartialBusy,
    TransferCorrupt,
    TransferFailed,
    partial_size,
    pull,
    purge_stale_partials,
)
from tests.peer.conftest import LEAF, SIZE, Machine

REPO = Path(__file__).resolve().parents[2]


def rot(fs: FileStore, file_id: str, offset: int) -> None:
    """Flip one byte of a canonical copy in place (a rotten sector)."""
    path = fs.file_path(file_id)
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x40]))
    os.chmod(path, 0o444)


def files_in(fs: FileStore) -> list[str]:
    return [s.id for s in fs]


def test_pull_brings_a_byte_exact_multi_leaf_copy(alice: Machine, bob: Machine, data) -> None:
    doc = alice.add_file(data, alice.new_store())
    dst = bob.new_store()
    srv = alice.server(bob)
    host, port = srv.start()
    try:
        seen: list[int] = []
        r = pull(bob.identity, f"{host}:{port}", alice.identity.fingerprint, doc, dst, seen.append)
    finally:
        srv.stop()
    assert r.new and r.fetched == SIZE and r.resumed == 0 and r.store_id == dst.id
    assert dst.file_path(doc["_id"]).read_bytes() == data
    assert os.stat(dst.file_path(doc["_id"])).st_mode & 0o777 == 0o444
    assert r.mtime == dst.stat(doc["_id"]).mtime
    assert seen == [LEAF, LEAF, SIZE - 2 * LEAF]
    assert partial_size(dst, doc["_id"]) == 0  # the partial became the copy
    assert dst.verify(doc["_id"]).status == "ok"


def test_a_store_that_has_the_file_already_needs_no_transfer(alice, bob, data) -> None:
    doc = alice.add_file(data, alice.new_store())
    dst = bob.new_store()
    dst.import_bytes(data)
    r = pull(bob.identity, "127.0.0.1:9", alice.identity.fingerprint, doc, dst)  # no server
    assert not r.new and r.fetched == 0


def test_404_is_not_on_peer_and_leaves_nothing(alice, bob, data) -> None:
    doc = alice.add_file(data, alice.new_store())
    dst = bob.new_store()
    srv = alice.server(bob, stores_fn=dict)  # the store is not connected there
    host, port = srv.start()
    try:
        with pytest.raises(NotOnPeer):
            pull(bob.identity, f"{host}:{port}", alice.identity.fingerprint, doc, dst)
    finally:
        srv.stop()
    assert files_in(dst) == [] and partial_size(dst, doc["_id"]) == 0


def test_unreachable_peer_is_a_failed_transfer(alice, bob, data) -> None:
    doc = alice.add_file(data, alice.new_store())
    srv = alice.server(bob)
    host, port = srv.start()
    srv.stop()  # nobody listens there any more
    with pytest.raises(TransferFailed, match="cannot connect"):
        pull(bob.identity, f"{host}:{port}", alice.identity.fingerprint, doc, bob.new_store())


def test_a_rotten_copy_on_the_server_is_never_sent_and_is_reported_there(alice, bob, data) -> None:
    src = alice.new_store()
    doc = alice.add_file(data, src)
    rot(src, doc["_id"], LEAF + 1000)  # in leaf 1
    dst = bob.new_store()
    srv = alice.server(bob)
    host, port = srv.start()
    try:
        with pytest.raises(TransferFailed):
            pull(bob.identity, f"{host}:{port}", alice.identity.fingerprint, doc, dst)
    finally:
        srv.stop()
    assert alice.corrupt_reports == [(src.id, doc["_id"])]  # the server's corrupt path
    assert files_in(dst) == []  # nothing recorded as a copy
    assert partial_size(dst, doc["_id"]) == LEAF  # only the good leaf 0 was kept
    assert srv.stats["bytes"] == LEAF


def test_a_rotten_copy_is_skipped_for_a_good_one_on_another_store(alice, bob, data) -> None:
    s1, s2 = alice.new_store(), alice.new_store()
    doc = alice.add_file(data, s1, s2)
    doc["stored"][s1.id]["verified"] = 2  # s1 is preferred: verified most recently
    doc["stored"][s2.id]["verified"] = 1
    rot(s1, doc["_id"], 2 * LEAF + 5)
    dst = bob.new_store()
    srv = alice.server(bob)
    host, port = srv.start()
    try:
        r = pull(bob.identity, f"{host}:{port}", alice.identity.fingerprint, doc, dst)
    finally:
        srv.stop()
    assert r.new and dst.file_path(doc["_id"]).read_bytes() == data
    assert alice.corrupt_reports == [(s1.id, doc["_id"])]


def test_a_copy_of_the_wrong_size_is_reported_corrupt(alice, bob, data) -> None:
    src = alice.new_store()
    doc = alice.add_file(data, src)
    path = src.file_path(doc["_id"])
    os.chmod(path, 0o644)
    os.truncate(path, SIZE - 1)
    srv = alice.server(bob)
    host, port = srv.start()
    try:
        with pytest.raises(NotOnPeer):
            pull(bob.identity, f"{host}:{port}", alice.identity.fingerprint, doc, bob.new_store())
    finally:
        srv.stop()
    assert alice.corrupt_reports == [(src.id, doc["_id"])]


def test_the_client_checks_every_leaf_itself(alice, bob, data) -> None:
    """Even a server that sends rot (one that does not verify) cannot plant it."""
    src = alice.new_store()
    doc = alice.add_file(data, src)
    rot(src, doc["_id"], LEAF + 7)
    dst = bob.new_store()
    srv = alice.server(bob, verify_leaves=False)
    host, port = srv.start()
    try:
        with pytest.raises(TransferCorrupt) as e:
            pull(bob.identity, f"{host}:{port}", alice.identity.fingerprint, doc, dst)
    finally:
        srv.stop()
    assert e.value.leaf == 1 and e.value.file_id == doc["_id"]
    assert files_in(dst) == []
    assert partial_size(dst, doc["_id"]) == LEAF  # leaf 1 was never written


def test_a_doc_without_valid_leaf_hashes_is_refused_before_any_transfer(alice, bob, data):
    doc = dict(alice.add_file(data, alice.new_store()))
    doc["bytes"] += 1
    with pytest.raises(protocol.ProtocolError):
        pull(bob.identity, "127.0.0.1:9", alice.identity.fingerprint, doc, bob.new_store())


def _spawn(alice: Machine, bob: Machine, shm: Path) -> tuple[subprocess.Popen[str], str]:
    spec = {
        "identity": str(alice.config_dir / "peer"),
        "machine_id": alice.machine_id,
        "trusted": {bob.identity.fingerprint: bob.identity.cert_pem},
        "stores": {sid: str(fs.path) for sid, fs in alice.stores.items()},
        "docs": alice.docs,
    }
    path = shm / "spec.json"
    path.write_text(json.dumps(spec))
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.peer.serve_proc", str(path)],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("PORT "), line
    return proc, f"127.0.0.1:{int(line.split()[1])}"


def test_a_server_killed_mid_transfer_leaves_no_copy_and_the_next_pull_resumes(
    alice, bob, data, shm: Path
) -> None:
    alice.identity  # noqa: B018 (made here, before the server process reads it)
    # Five leaves: what the kernel's socket buffers hold after the kill cannot finish it.
    data = os.urandom(5 * LEAF + 1)
    doc = alice.add_file(data, alice.new_store())
    dst = bob.new_store()
    proc, addr = _spawn(alice, bob, shm)
    try:

        def kill_after_first_leaf(n: int) -> None:
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                proc.wait()

        with pytest.raises(TransferFailed) as e:
            pull(bob.identity, addr, alice.identity.fingerprint, doc, dst, kill_after_first_leaf)
        assert not isinstance(e.value, TransferCorrupt)
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    assert files_in(dst) == []  # no partial copy recorded
    kept = partial_size(dst, doc["_id"])
    assert kept % LEAF == 0 and LEAF <= kept < 5 * LEAF  # whole verified leaves only

    FileStore(dst.path)  # reopening the store (a new process) keeps the partial
    assert partial_size(dst, doc["_id"]) == kept

    proc, addr = _spawn(alice, bob, shm)
    try:
        r = pull(bob.identity, addr, alice.identity.fingerprint, doc, dst)
    finally:
        proc.stdin.close()  # type: ignore[union-attr]
        proc.wait(10)
    assert r.resumed == kept and r.fetched == len(data) - kept  # only the missing bytes
    assert dst.file_path(doc["_id"]).read_bytes() == data


def test_a_partial_with_a_torn_tail_keeps_only_its_verified_leaves(alice, bob, data) -> None:
    doc = alice.add_file(data, alice.new_store())
    dst = bob.new_store()
    part = dst.tmp_dir / client_mod.PARTIAL_DIR
    part.mkdir()
    # leaf 0 good, then half a leaf of garbage (a crash before the fsync)
    (part / doc["_id"]).write_bytes(data[:LEAF] + os.urandom(LEAF // 2))
    srv = alice.server(bob)
    host, port = srv.start()
    try:
        r = pull(bob.identity, f"{host}:{port}", alice.identity.fingerprint, doc, dst)
    finally:
        srv.stop()
    assert r.resumed == LEAF and r.fetched == SIZE - LEAF
    assert dst.file_path(doc["_id"]).read_bytes() == data


def test_a_partial_whose_first_leaf_is_wrong_starts_over(alice, bob, data) -> None:
    doc = alice.add_file(data, alice.new_store())
    dst = bob.new_store()
    (dst.tmp_dir / client_mod.PARTIAL_DIR).mkdir()
    (dst.tmp_dir / client_mod.PARTIAL_DIR / doc["_id"]).write_bytes(os.urandom(LEAF))
    srv = alice.server(bob)
    host, port = srv.start()
    try:
        r = pull(bob.identity, f"{host}:{port}", alice.identity.fingerprint, doc, dst)
    finally:
        srv.stop()
    assert r.resumed == 0 and r.fetched == SIZE
    assert dst.file_path(doc["_id"]).read_bytes() == data


def test_the_serving_store_unplugged_mid_transfer_is_an_io_error_not_corruption(
    alice, bob, data, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EIO from the serving drive (a failing drive cannot be produced here, so the read
    of leaf 1 raises it): the transfer fails, nothing is called corrupt on either side."""
    doc = alice.add_file(data, alice.new_store())
    dst = bob.new_store()
    real = server_mod._read_and_check

    def unplugged_after_leaf_0(fd: int, index: int, view: memoryview, expected: bytes):
        if index >= 1:
            raise OSError(errno.EIO, "Input/output error")
        return real(fd, index, view, expected)

    monkeypatch.setattr(server_mod, "_read_and_check", unplugged_after_leaf_0)
    srv = alice.server(bob)
    host, port = srv.start()
    try:
        with pytest.raises(TransferFailed) as e:
            pull(bob.identity, f"{host}:{port}", alice.identity.fingerprint, doc, dst)
    finally:
        srv.stop()
    assert not isinstance(e.value, TransferCorrupt)
    assert alice.corrupt_reports == []
    assert srv.stats["io_errors"] == 1
    assert files_in(dst) == [] and partial_size(dst, doc["_id"]) == LEAF


def test_two_pulls_of_one_file_into_one_store_do_not_mix(alice, bob, data) -> None:
    doc = alice.add_file(data, alice.new_store())
    dst = bob.new_store()
    holder = client_mod._PartialFile(dst, doc["_id"])
    try:
        with pytest.raises(PartialBusy):
            pull(bob.identity, "127.0.0.1:9", alice.identity.fingerprint, doc, dst)
    finally:
        holder.close()


def test_stale_partials_are_purged_live_ones_kept(alice, bob, data) -> None:
    dst = bob.new_store()
    folder = dst.tmp_dir / client_mod.PARTIAL_DIR
    folder.mkdir()
    old, live = protocol.hash_bytes(b"old").id, protocol.hash_bytes(b"live").id
    (folder / old).write_bytes(b"x")
    os.utime(folder / old, (1000, 1000))
    holder = client_mod._PartialFile(dst, live)
    os.utime(folder / live, (1000, 1000))
    try:
        assert purge_stale_partials(dst, older_than=3600, now=1_000_000) == 1
    finally:
        holder.close()
    assert sorted(p.name for p in folder.iterdir()) == [live]
