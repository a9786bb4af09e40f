"""A peer server in a process of its own, so that a test can SIGKILL it mid-transfer.

    python -m tests.peer.serve_proc SPEC.json

SPEC: {"identity": dir, "machine_id", "trusted": {fp: pem}, "stores": {id: folder},
"docs": {file_id: doc}}. Prints "PORT <n>" once listening; serves until stdin closes.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from dmedia_tui.filestore import FileStore
from dmedia_tui.peer.identity import load_or_create
from dmedia_tui.peer.server import PeerServer


def main() -> None:
    spec = json.loads(Path(sys.argv[1]).read_text())
    stores = {sid: FileStore(path, sid) for sid, path in spec["stores"].items()}
    srv = PeerServer(
        load_or_create(spec["identity"]),
        machine_id=spec["machine_id"],
        trusted=lambda: spec["trusted"],
        stores=lambda: stores,
        file_doc=spec["docs"].get,
        listen="127.0.0.1:0",
    )
    _, port = srv.start()
    print(f"PORT {port}", flush=True)
    sys.stdin.read()
    srv.stop()


if __name__ == "__main__":
    main()
