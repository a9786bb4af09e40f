"""DMEDIA_TEST_CLOCK_AHEAD=SECONDS runs the suite with the wall clock that far ahead.

A test that mixes a pinned clock (tests.conftest.NOW, DMEDIA_NOW, FixedClock) with the
real one passes today and fails once the calendar moves past its pin; CI (.ci/run) runs
the suite a second time a year ahead so such a test fails there first.

Why not `faketime`: with libfaketime 0.9.10 and Python 3.11 either every timed thread
wait hangs (Event/Lock/Condition use sem_clockwait on the faked CLOCK_MONOTONIC, which
libfaketime does not translate) or, with FAKETIME_DONT_FAKE_MONOTONIC=1, every
time.sleep() raises EINVAL (its clock_nanosleep hook). So the offset is applied where
this code reads the wall clock: time.time() and time.time_ns(). File times come from the
kernel and stay real, as they would under faketime (it does not fake statx either).
"""

from __future__ import annotations

import os
import time

import pytest

ENV = "DMEDIA_TEST_CLOCK_AHEAD"


def pytest_configure(config: pytest.Config) -> None:
    raw = os.environ.get(ENV)
    if not raw:
        return
    offset = float(raw)
    real_time, real_time_ns = time.time, time.time_ns
    time.time = lambda: real_time() + offset  # type: ignore[assignment]
    time.time_ns = lambda: real_time_ns() + int(offset * 1_000_000_000)  # type: ignore[assignment]


def pytest_report_header(config: pytest.Config) -> str | None:
    raw = os.environ.get(ENV)
    return f"{ENV}={raw}: the wall clock runs {float(raw) / 86400:g} days ahead" if raw else None
