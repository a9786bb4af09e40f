"""A real CouchDB-API server for the tests: PouchDB Server from npm, in memory.

`couch_server` (session scope; one server per pytest-xdist worker) starts
`tests/node_modules/pouchdb-server` on a free 127.0.0.1 port and stops its process group
at the end. The first session that needs it installs it from `tests/package-lock.json`
(`npm ci --ignore-scripts`, under a file lock, so parallel workers and sessions install
it once and the others wait): `uv run pytest` on a fresh clone runs what CI runs. Only
without Node are the CouchDB tests skipped (with the reason), unless
DMEDIA_REQUIRE_COUCH=1 (CI), which turns that into a failure; an install that fails is a
failure too.

DMEDIA_TEST_COUCH_URL=http://user:pass@host:5984/ runs the tests against an existing
server (a real CouchDB) instead; every test library gets its own database prefix there.

Every `fresh_url()` is a new, empty library on the same server: its databases get a
prefix of their own (`?prefix=t7-` -> `t7-dmedia-1`, `t7-log-1`), see db/couch.py.

The server is started with `--unhandled-rejections=warn`: a `_changes` request with an
unknown filter would otherwise kill it (see the reference notes).
"""

from __future__ import annotations

import fcntl
import itertools
import os
import secrets
import select
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SERVER_JS = HERE / "node_modules" / "pouchdb-server" / "bin" / "pouchdb-server"
START_TIMEOUT = 30.0  # seconds to wait for the server to answer (it takes ~0.3 s)
INSTALL_TIMEOUT = 900.0  # npm ci of PouchDB Server: ~15 s with a warm npm cache
INSTALL_LOCK = ".npm-install.lock"


class InstallError(RuntimeError):
    """npm could not install PouchDB Server (one line: the command and npm's last words)."""


def _installed(tests_dir: Path) -> bool:
    # npm writes node_modules/.package-lock.json when an install has completed.
    modules = tests_dir / "node_modules"
    return (modules / "pouchdb-server" / "bin" / "pouchdb-server").exists() and (
        modules / ".package-lock.json"
    ).exists()


def install_pouchdb_server(
    tests_dir: Path = HERE,
    on_wait: Callable[[], None] | None = None,
    on_locked: Callable[[], None] | None = None,
) -> bool:
    """Install tests_dir's package-lock.json (`npm ci --ignore-scripts`) unless done.

    One installer at a time (an flock on tests_dir/.npm-install.lock): a second caller,
    another xdist worker or pytest session, waits and then finds the packages there.
    True if this call ran npm. Raises FileNotFoundError without Node or npm, InstallError
    when npm fails. `on_wait` (called before waiting for the lock) and `on_locked` (called
    holding it, before npm runs) let a test order two callers.
    """
    if _installed(tests_dir):
        return False
    if shutil.which("node") is None:
        raise FileNotFoundError("Node.js (`node`) is not installed")
    npm = shutil.which("npm")
    if npm is None:
        raise FileNotFoundError("npm is not installed (it comes with Node.js)")
    with open(tests_dir / INSTALL_LOCK, "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when its holder is done
        if _installed(tests_dir):
            return False
        if on_locked is not None:
            on_locked()
        cmd = [npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--prefer-offline"]
        try:
            r = subprocess.run(
                [*cmd, "--loglevel=error"],
                cwd=tests_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise InstallError(
                f"`npm ci` in {tests_dir} took over {INSTALL_TIMEOUT:.0f} s"
            ) from None
        if r.returncode != 0 or not _installed(tests_dir):
            words = (r.stderr or r.stdout).strip().splitlines()
            raise InstallError(
                f"`npm ci --ignore-scripts` in {tests_dir} failed (exit {r.returncode}): "
                + (words[-1] if words else "no output")
            )
        return True


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
    install_pouchdb_server(HERE)
    node = shutil.which("node")
    if node is None:
        raise FileNotFoundError("Node.js (`node`) is not installed")
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


class BlackHole:
    """A TCP server on 127.0.0.1 that accepts connections and never answers.

    `forward_to=(host, port)` makes it a proxy to a real server until `hang()`: from then
    on it accepts and holds every connection, new or old, and passes nothing on (a
    CouchDB that stopped answering without closing its sockets). `slow_views=s` holds
    each view query s seconds first (a server busy building an index, still answering).
    """

    def __init__(self, forward_to: tuple[str, int] | None = None, slow_views: float = 0.0) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self._forward_to = forward_to
        self.slow_views = slow_views  # hold view queries this long (an index being built)
        self.views = 0
        self._hanging = threading.Event()
        if forward_to is None:
            self._hanging.set()
        self._stop = threading.Event()
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self.accepted = 0
        self._thread = threading.Thread(target=self._accept, name="black-hole", daemon=True)
        self._thread.start()

    def hang(self) -> None:
        self._hanging.set()

    def _hold(self, sock: socket.socket) -> None:
        with self._lock:
            self._held.append(sock)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.accepted += 1
            self._hold(conn)
            if not self._hanging.is_set() and self._forward_to is not None:
                threading.Thread(target=self._pump, args=(conn,), daemon=True).start()

    def _pump(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self._forward_to)  # type: ignore[arg-type]
        self._hold(upstream)
        peers = {client: upstream, upstream: client}
        while not self._stop.is_set() and not self._hanging.is_set():
            ready, _, _ = select.select(list(peers), [], [], 0.05)
            if self._hanging.is_set():
                return  # hold both sockets open, pass nothing on
            for sock in ready:
                try:
                    data = sock.recv(65536)
                    if data and sock is client and b"/_view/" in data and self.slow_views:
                        self.views += 1
                        time.sleep(self.slow_views)
                    if data:
                        peers[sock].sendall(data)
                except OSError:
                    data = b""
                if not data:
                    return

    def close(self) -> None:
        self._stop.set()
        # close() alone does not wake a thread blocked in accept() (Linux): the join
        # below then waited its whole 5 s, in every test that used a black hole.
        # shutdown() on the listening socket does: accept() fails at once.
        try:
            self._listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._listener.close()
        with self._lock:
            for sock in self._held:
                sock.close()
        self._thread.join(5)


@pytest.fixture
def black_hole() -> Iterator[BlackHole]:
    """A "CouchDB" at black_hole.url that accepts connections and never answers."""
    hole = BlackHole()
    yield hole
    hole.close()


@pytest.fixture(scope="session")
def couch_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CouchServer]:
    external = os.environ.get("DMEDIA_TEST_COUCH_URL")
    if external:
        yield CouchServer(external)
        return
    try:
        server = start_pouchdb_server(tmp_path_factory.mktemp("pouchdb-server"))
    except FileNotFoundError as e:  # no Node: the one reason to skip
        _unavailable(str(e))
        return
    except RuntimeError as e:  # Node is there but the install or the start failed
        pytest.fail(str(e), pytrace=False)
    try:
        yield server
    finally:
        server.stop()
