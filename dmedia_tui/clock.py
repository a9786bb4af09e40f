"""Injectable time. Policies take `now`; commands get it from a Clock.

`DMEDIA_NOW` (unix seconds) pins every command's clock, for test harnesses and demos;
tests pass a FixedClock and move it instead of sleeping through thresholds.
"""

from __future__ import annotations

import math
import os
import time
from typing import Protocol

from dmedia_tui.errors import DmediaError


class Clock(Protocol):
    def now(self) -> float: ...

    @property
    def simulated(self) -> bool: ...


class SystemClock:
    simulated = False

    def now(self) -> float:
        return time.time()


class FixedClock:
    """A clock that only moves when told to (tests, DMEDIA_NOW)."""

    simulated = True

    def __init__(self, t: float) -> None:
        self.t = float(t)

    def now(self) -> float:
        return self.t

    def advance(self, seconds: float) -> None:
        self.t += seconds


class OffsetClock:
    """Real time shifted so that it starts at `start`: a simulated clock that still ticks.

    Used for DMEDIA_NOW in long-running processes (the app, the daemon), so that
    heartbeats stay fresh while the simulated date holds.
    """

    simulated = True

    def __init__(self, start: float) -> None:
        self.offset = float(start) - time.time()

    def now(self) -> float:
        return time.time() + self.offset


class ClockError(DmediaError, ValueError):
    pass


# The latest simulated time accepted: 9999-12-31 23:59:59 UTC, the last second `datetime`
# can show. Later values (and inf, nan, negatives) would crash date formatting or poison a
# policy's arithmetic, so they are refused instead of half working.
MAX_SIMULATED = 253_402_300_799


def clock_from_env(environ: dict[str, str] | None = None, *, ticking: bool = False) -> Clock:
    """SystemClock, or a simulated clock when DMEDIA_NOW is set.

    `ticking=True` (long-running processes) gives an OffsetClock, else a FixedClock.
    """
    env = os.environ if environ is None else environ
    raw = env.get("DMEDIA_NOW", "").strip()
    if not raw:
        return SystemClock()
    try:
        t = float(raw)
    except ValueError:
        raise ClockError(f"DMEDIA_NOW must be unix seconds, got {raw[:40]!r}") from None
    if not math.isfinite(t) or not 0 <= t <= MAX_SIMULATED:
        raise ClockError(
            f"DMEDIA_NOW must be unix seconds between 0 and {MAX_SIMULATED}, got {raw[:40]!r}"
        )
    return OffsetClock(t) if ticking else FixedClock(t)
