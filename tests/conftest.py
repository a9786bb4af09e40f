"""Shared fixtures: libraries on every backend, temp config dirs, a fixed clock."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dmedia_tui.clock import FixedClock
from dmedia_tui.db import Library, open_library
from tests.integration.harness import Mounts

# A fixed, realistic "now" for every test that needs one (2026-11-25 12:00:00 UTC).
NOW = 1_795_608_000


def need(available: bool, env: str, reason: str) -> None:
    """Skip a test whose outside tool is missing, unless CI requires it (`env`=1, set in
    .ci/run, which installs the tool): then it fails, so a skip never passes for a run."""
    if available:
        return
    if os.environ.get(env) == "1":
        pytest.fail(f"{env}=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(NOW)


@pytest.fixture(params=["sqlite", "couch"])
def backend(request: pytest.FixtureRequest) -> str:
    """Every test that takes `library` (or `db_url`) runs on both backends."""
    if request.param == "couch":
        request.getfixturevalue("couch_server")
    return request.param


@pytest.fixture
def db_url(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """A fresh, empty library URL on the current backend."""
    if backend == "sqlite":
        return str(tmp_path / "library.sqlite3")
    server = request.getfixturevalue("couch_server")
    return server.fresh_url()


@pytest.fixture
def library(db_url: str) -> Iterator[Library]:
    lib = open_library(db_url)
    yield lib
    lib.close()


@pytest.fixture
def sqlite_library(tmp_path: Path) -> Iterator[Library]:
    """An SQLite library for tests that are not about the backend."""
    lib = open_library(str(tmp_path / "library.sqlite3"))
    yield lib
    lib.close()


@pytest.fixture
def mounts(tmp_path: Path) -> Iterator[Mounts]:
    """Store folders on separate tmpfs mounts when root (plain folders otherwise)."""
    m = Mounts(tmp_path / "mnt")
    yield m
    m.cleanup()


@pytest.fixture(autouse=True)
def _isolated_dirs(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Never touch the real user's config or data dirs, nor inherit their settings."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_STATE_HOME", str(home / "state"))
    for var in ("DMEDIA_DB", "DMEDIA_NOW", "DMEDIA_FAULT"):
        monkeypatch.delenv(var, raising=False)
    os.environ.setdefault("TERM", "xterm-256color")


pytest_plugins = ["tests.couchserver", "tests.clock_ahead"]
