"""Injectable time. Policies take `now`; commands get it from a Clock.

`DMEDIA_NOW` (unix seconds) pins every command's clock, for test harnesses and demos;
tests pass a FixedClock and move it instead of sleeping through thresholds.
"""

from __future__ import annotations

import os
import time
from typing import Protocol


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


class ClockError(ValueError):
    pass


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
        raise ClockError(f"DMEDIA_NOW must be unix seconds, got {raw!r}") from None
    return OffsetClock(t) if ticking else FixedClock(t)
