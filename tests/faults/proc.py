"""Run the real `dmedia-tui` in a child process (for kill -9 and concurrency tests).

`cli(machine, "import", ..., fault="import.before_record")` runs `python -m dmedia_tui`
with the machine's environment and DMEDIA_FAULT set, so dmedia_tui.faults.fault_point
kills the child with SIGKILL at exactly that step. Returns the CompletedProcess.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from typing import Any

KILLED = -signal.SIGKILL


def cli_env(machine: Any, fault: str | None = None, now: float | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "DMEDIA_FAULT"}
    env.update(machine.env(now))
    if fault:
        env["DMEDIA_FAULT"] = fault
    return env


def cli(
    machine: Any, *args: str, fault: str | None = None, now: float | None = None, timeout=120
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dmedia_tui", *args],
        env=cli_env(machine, fault, now),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
