"""Two "machines" on one host for the peer tests: each its own config dir (so its own
peer identity) and its own stores on tmpfs; real servers on 127.0.0.1, real TLS.

The server's lookups (trusted machines, file docs, connected stores) are the callables
the engine will give it; here they read the machines' own dicts.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from dmedia_tui import protocol
from dmedia_tui.filestore import FileStore
from dmedia_tui.peer import identity as ident
from dmedia_tui.peer.server import PeerServer

LEAF = protocol.LEAF_SIZE
SIZE = 2 * LEAF + 12_345  # three leaves, the last one short: ~16 MiB


@dataclass
class Machine:
    name: str
    root: Path
    machine_id: str = field(default_factory=protocol.random_id)
    stores: dict[str, FileStore] = field(default_factory=dict)
    docs: dict[str, dict[str, Any]] = field(default_factory=dict)
    corrupt_reports: list[tuple[str, str]] = field(default_factory=list)

    @property
    def config_dir(self) -> Path:
        return self.root / "config" / "dmedia-tui"

    @property
    def identity(self) -> ident.Identity:
        return ident.load_or_create(self.config_dir / "peer")

    def new_store(self) -> FileStore:
        path = self.root / f"store{len(self.stores)}"
        path.mkdir()
        fs = FileStore.create(path)
        self.stores[fs.id] = fs
        return fs

    def add_file(self, data: bytes, *stores: FileStore) -> dict[str, Any]:
        """Import data into stores; record (and return) its file doc."""
        doc: dict[str, Any] | None = None
        for fs in stores:
            r = fs.import_bytes(data)
            ch = r.content_hash
            doc = self.docs.setdefault(
                ch.id,
                {
                    "_id": ch.id,
                    "type": "dmedia/file",
                    "bytes": ch.file_size,
                    "origin": "user",
                    "leaf_hashes": protocol.encode_leaf_hashes(ch.leaf_hashes),
                    "stored": {},
                },
            )
            doc["stored"][fs.id] = {"copies": 1, "mtime": r.mtime}
        assert doc is not None
        return doc

    def server(self, *trusted: Machine, **kw: Any) -> PeerServer:
        trust = {m.identity.fingerprint: m.identity.cert_pem for m in trusted}
        kw.setdefault("listen", "127.0.0.1:0")
        return PeerServer(
            self.identity,
            machine_id=self.machine_id,
            trusted=kw.pop("trusted_fn", lambda: trust),
            stores=kw.pop("stores_fn", lambda: dict(self.stores)),
            file_doc=kw.pop("file_doc_fn", self.docs.get),
            on_corrupt=lambda sid, fid: self.corrupt_reports.append((sid, fid)),
            **kw,
        )


@pytest.fixture
def shm() -> Iterator[Path]:
    """A scratch folder on tmpfs (multi-leaf files without touching the disk)."""
    base = "/dev/shm" if os.path.isdir("/dev/shm") else None
    path = Path(tempfile.mkdtemp(prefix="dmedia-peer-", dir=base))
    yield path
    shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def alice(shm: Path) -> Machine:
    (shm / "alice").mkdir()
    return Machine("alice", shm / "alice")


@pytest.fixture
def bob(shm: Path) -> Machine:
    (shm / "bob").mkdir()
    return Machine("bob", shm / "bob")


@pytest.fixture
def data() -> bytes:
    return os.urandom(SIZE)
