"""A real CouchDB-API server for the tests: PouchDB Server from npm, in memory.

`couch_server` (session scope; one server per pytest-xdist worker) starts
`tests/node_modules/pouchdb-server` on a free 127.0.0.1 port and stops its process group
at the end. Install it once with `npm ci --ignore-scripts` in `tests/`. Without Node or
the package the CouchDB tests are skipped with the reason, unless DMEDIA_REQUIRE_COUCH=1
(CI), which turns that into a failure.

DMEDIA_TEST_COUCH_URL=http://user:pass@host:5984/ runs the tests against an existing
server (a real CouchDB) instead; every test library gets its own database prefix there.

Every `fresh_url()` is a new, empty library on the same server: its databases get a
prefix of their own (`?prefix=t7-` -> `t7-dmedia-1`, `t7-log-1`), see db/couch.py.

The server is started with `--unhandled-rejections=warn`: a `_changes` request with an
unknown filter would otherwise kill it (see the reference notes).
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SERVER_JS = HERE / "node_modules" / "pouchdb-server" / "bin" / "pouchdb-server"
START_TIMEOUT = 30.0  # seconds to wait for the server to answer (it takes ~0.3 s)


class CouchServer:
    """A running server; `fresh_url()` gives each test its own empty library."""

    def __init__(self, url: str, proc: subprocess.Popen[bytes] | None = None) -> None:
        self.url = url if url.endswith("/") else url + "/"
        self.proc = proc
        self._run = secrets.token_hex(3)  # distinct names on a shared external server
        self._counter = itertools.count(1)

    def fresh_url(self) -> str:
        return f"{self.url}?prefix=t{self._run}-{next(self._counter)}-"

    @property
    def port(self) -> int:
        return int(self.url.rstrip("/").rsplit(":", 1)[1])

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _unavailable(reason: str) -> None:
    if os.environ.get("DMEDIA_REQUIRE_COUCH") == "1":
        pytest.fail(f"DMEDIA_REQUIRE_COUCH=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except (OSError, urllib.error.URLError):
        return False


def start_pouchdb_server(workdir: Path) -> CouchServer:
    """Start PouchDB Server in memory on a free port; raise RuntimeError if it will not."""
    node = shutil.which("node")
    if node is None:
        raise FileNotFoundError("Node.js (`node`) is not installed")
    if not SERVER_JS.exists():
        raise FileNotFoundError(
            "pouchdb-server is not installed: run `npm ci --ignore-scripts` in tests/"
        )
    last_log = ""
    for _attempt in range(3):  # the free port may be taken between probe and bind
        port = _free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        log_path = workdir / f"pouchdb-server-{port}.log"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [
                    node,
                    "--unhandled-rejections=warn",
                    str(SERVER_JS),
                    "--in-memory",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    "--config",
                    str(workdir / "config.json"),
                    "--no-stdout-logs",
                ],
                cwd=workdir,  # it writes log.txt in its working directory
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        server = CouchServer(f"http://127.0.0.1:{port}/", proc)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            if _answers(server.url):
                return server
            time.sleep(0.05)
        server.stop()
        last_log = log_path.read_text(errors="replace")[-500:]
    raise RuntimeError(f"pouchdb-server did not start: {last_log.strip()}")


@pytest.fixture(scope="session")
def couch_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CouchServer]:
    external = os.environ.get("DMEDIA_TEST_COUCH_URL")
    if external:
        yield CouchServer(external)
        return
    try:
        server = start_pouchdb_server(tmp_path_factory.mktemp("pouchdb-server"))
    except (FileNotFoundError, RuntimeError) as e:
        _unavailable(str(e))
        return
    try:
        yield server
    finally:
        server.stop()
