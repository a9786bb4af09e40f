"""Judging other machines by what we saw change, not by their clocks (clock skew).

Every machine writes its own clock into the docs it touches: a machine doc's `atime` is
its heartbeat, a store doc's `atime` is when its machine last saw it connected. Comparing
those times with our clock fails both ways when clocks disagree:
- a machine running a year ahead writes heartbeats "from the future": compared with our
  clock they stay fresh for a year after it is switched off;
- seen from the machine running ahead, every other machine's real heartbeat is a year
  old, so its policies would purge stores that are online right now.

So this machine remembers (a small JSON file in its data dir) the `_rev`, `atime` and the
local time it first saw each revision of every other machine's doc and every store doc.
A doc that changed under our eyes was written about when we saw the change, whatever its
clock says. The rules (DESIGN.md §2, "policies"):
- effective atime, in our clock, = the doc's atime, except that an atime ahead of ours by
  more than SKEW_THRESHOLD is clamped to the local time we first saw that revision; and a
  new atime whose arrival we witnessed (it replaced one we had seen), dated more than
  SKEW_THRESHOLD before our previous look, counts as written at that look (it was not
  there yet, so the writer's clock runs behind; looks days apart raise no such doubt).
  Edits that leave `atime` alone (flags, a downgrade, maybe our own) say nothing about
  the writer being alive and are not witnessed. Freshness and store ages use the
  effective atime.
- a policy never downgrades or purges a store listed by another machine whose doc we
  first saw in its current revision less than `heartbeat_fresh` ago: its heartbeat just
  arrived, or we have not watched it long enough to tell a machine that is off from one
  whose clock differs from ours.
- skew: a witnessed revision was written between our previous look and the moment we saw
  it, so the other clock's offset lies in [atime - first_seen, atime - previous_look];
  it is reported (CLOCK_SKEW) only when that whole interval is beyond SKEW_THRESHOLD,
  so infrequent looks never raise a false alarm. An atime ahead of our clock by more than
  the threshold is reported at once (a lower bound).
A machine meeting the library for the first time while another machine is already off
can only judge that one by its own clock (nothing changes to witness).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dmedia_tui.views import MachineView

SKEW_THRESHOLD = 600  # seconds: clocks within 10 minutes of ours are "the same time"


@dataclass(frozen=True)
class Skew:
    """Another machine's clock offset from ours (positive: it runs ahead)."""

    machine_id: str
    hostname: str
    seconds: float


def _num(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        return float(value)
    return None


class Observations:
    """What this machine saw of other docs, and when (by its own clock)."""

    def __init__(self, state: dict[str, Any] | None = None) -> None:
        self.state: dict[str, dict[str, Any]] = {}
        for k, v in (state or {}).items():
            if isinstance(k, str) and isinstance(v, dict) and _num(v.get("first")) is not None:
                self.state[k] = v

    @classmethod
    def load(cls, path: Path) -> Observations:
        """The remembered observations; a missing or damaged file starts afresh (it is a
        cache of what we saw, never the only copy of anything)."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return cls()
        return cls(data if isinstance(data, dict) else None)

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.state, sort_keys=True), encoding="utf-8")
        os.replace(tmp, path)

    def observe(self, docs: Iterable[dict[str, Any]], now: float) -> None:
        """Record each doc's revision; a new revision of a doc seen before is witnessed."""
        present = set()
        for doc in docs:
            doc_id, rev = doc.get("_id"), doc.get("_rev")
            if not isinstance(doc_id, str) or not isinstance(rev, str):
                continue
            present.add(doc_id)
            old = self.state.get(doc_id)
            atime = _num(doc.get("atime"))
            if old is not None and (old.get("rev") == rev or old.get("atime") == atime):
                # Same revision, or an edit that is no heartbeat (a flag, a downgrade:
                # maybe our own): nothing new about the writer's liveness.
                old["rev"], old["look"] = rev, now
                continue
            self.state[doc_id] = {
                "rev": rev,
                "atime": atime,
                "first": now,
                "prev": old.get("look", old.get("first")) if old else None,
                "look": now,
                "witnessed": old is not None,
            }
        for doc_id in [k for k in self.state if k not in present]:
            del self.state[doc_id]

    def _current(self, doc: dict[str, Any]) -> dict[str, Any] | None:
        seen = self.state.get(doc.get("_id"))  # type: ignore[arg-type]
        return seen if seen is not None and seen.get("rev") == doc.get("_rev") else None

    def effective_atime(self, doc: dict[str, Any], now: float) -> float | None:
        """The doc's atime in our clock (see the module docstring)."""
        atime = _num(doc.get("atime"))
        if atime is None:
            return None
        seen = self._current(doc)
        first = seen["first"] if seen is not None else now
        if atime > now + SKEW_THRESHOLD:
            atime = min(first, now)
        prev = seen.get("prev") if seen is not None and seen.get("witnessed") else None
        if prev is not None and prev - atime > SKEW_THRESHOLD:
            # Not there at our previous look, yet dated long before it: the writer's clock
            # runs behind ours. It was written after that look, whatever it says.
            atime = prev
        return atime

    def judged(self, docs: Iterable[dict[str, Any]], now: float) -> list[dict[str, Any]]:
        """Copies of docs whose `atime` is the effective atime (for health's freshness)."""
        out = []
        for doc in docs:
            if isinstance(doc, dict) and "atime" in doc:
                eff = self.effective_atime(doc, now)
                doc = {**doc, "atime": eff if eff is not None else doc["atime"]}
            out.append(doc)
        return out

    def settled(self, doc: dict[str, Any], now: float, window: float) -> bool:
        """True when we have watched this revision for at least `window` seconds."""
        seen = self._current(doc)
        return seen is not None and now - seen["first"] >= window

    def skews(self, machines: Iterable[dict[str, Any]], now: float) -> list[Skew]:
        """Machines whose clocks are certainly more than SKEW_THRESHOLD from ours."""
        out = []
        for doc in machines:
            atime = _num(doc.get("atime")) if isinstance(doc, dict) else None
            m = MachineView.of(doc)
            if atime is None or m is None:
                continue
            host = m.hostname
            seen = self._current(doc)
            skew = None
            if seen is not None and seen.get("witnessed") and seen.get("prev") is not None:
                low, high = atime - seen["first"], atime - seen["prev"]
                if low > SKEW_THRESHOLD:
                    skew = low
                elif high < -SKEW_THRESHOLD:
                    skew = high
            elif atime - now > SKEW_THRESHOLD:
                skew = atime - now
            if skew is not None:
                out.append(Skew(m.id, host, skew))
        return out
