"""The test fixture installs PouchDB Server itself, once, whoever asks first.

`uv run pytest` on a fresh clone with Node must run the CouchDB tests, not skip them:
the fixture runs `npm ci --ignore-scripts` from tests/package-lock.json under a file
lock, so parallel xdist workers and pytest sessions install it once.
"""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest

from tests.couchserver import HERE, _installed, install_pouchdb_server

needs_node = pytest.mark.skipif(
    shutil.which("node") is None or shutil.which("npm") is None,
    reason="Node.js (`node`, `npm`) is not installed",
)


@needs_node
def test_install_runs_npm_once_and_a_concurrent_caller_waits(tmp_path: Path) -> None:
    for name in ("package.json", "package-lock.json"):
        shutil.copy(HERE / name, tmp_path / name)
    assert not _installed(tmp_path)
    second_waits = threading.Event()
    second: list[bool] = []
    errors: list[BaseException] = []

    def run_second() -> None:
        try:
            second.append(install_pouchdb_server(tmp_path, on_wait=second_waits.set))
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    waiter = threading.Thread(target=run_second)

    def while_first_holds_the_lock() -> None:
        waiter.start()
        assert second_waits.wait(60), "the second caller did not wait for the lock"
        assert not (tmp_path / "node_modules").exists()  # nobody installs beside us

    assert install_pouchdb_server(tmp_path, on_locked=while_first_holds_the_lock) is True
    waiter.join(60)
    assert not errors and second == [False]  # it waited, then found the packages there
    assert _installed(tmp_path)
    assert (tmp_path / "node_modules" / "pouchdb-server" / "bin" / "pouchdb-server").exists()
    assert install_pouchdb_server(tmp_path) is False  # a later session: nothing to do


def test_without_node_the_reason_is_given(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no node, no npm
    with pytest.raises(FileNotFoundError, match="Node.js"):
        install_pouchdb_server(tmp_path)
