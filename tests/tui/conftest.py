"""Fixtures for the app tests: a real deterministic library, a stable home and time zone."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.tui.library import TestLibrary, build_library


@pytest.fixture(autouse=True)
def _stable_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """HOME under tmp (the header shows ~/...), UTC clock times, no colour surprises."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
def tlib(tmp_path: Path) -> Iterator[TestLibrary]:
    t = build_library(tmp_path / "lib")
    yield t
    t.ms.lib.close()


@pytest.fixture
def empty_lib(tmp_path: Path) -> Iterator[TestLibrary]:
    t = build_library(tmp_path / "lib", empty=True)
    yield t
    t.ms.lib.close()
