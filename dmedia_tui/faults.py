"""Test-only crash points: kill this process at a named step of a data-safety operation.

`fault_point("files.renamed")` does nothing unless the environment variable
`DMEDIA_FAULT` names that point when the process starts; then the process SIGKILLs itself
right there (no cleanup handler, no `finally`, no flush: as a power cut or `kill -9`).
`DMEDIA_FAULT=name@N` dies at the N-th time that point is reached (N >= 1), so a test
can kill the second file of an import or the third batch of a downgrade.

The fault harness (tests/faults/) runs the real CLI with each point set, then recovers
and checks the stores and the library independently. The variable is read once, at
import: in production a fault point costs one comparison.
"""

from __future__ import annotations

import os
import signal
import threading

ENV = "DMEDIA_FAULT"


def _parse(value: str | None) -> tuple[str | None, int]:
    if not value:
        return None, 0
    name, sep, nth = value.partition("@")
    if sep and nth.isdigit() and int(nth) >= 1:
        return name, int(nth)
    return value, 1


_TARGET, _NTH = _parse(os.environ.get(ENV))
_hits = 0
_lock = threading.Lock()


def fault_point(name: str) -> None:
    """Die here (SIGKILL) if DMEDIA_FAULT names this point; otherwise do nothing."""
    if _TARGET is None or name != _TARGET:
        return
    global _hits
    with _lock:
        _hits += 1
        if _hits >= _NTH:
            os.kill(os.getpid(), signal.SIGKILL)
