"""The crash-point hook itself: it kills exactly where and when DMEDIA_FAULT says."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

SCRIPT = """
from dmedia_tui.faults import fault_point
for i in range(1, 4):
    fault_point("other")
    print("before", i, flush=True)
    fault_point("here")
    print("after", i, flush=True)
"""


def _run(fault: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DMEDIA_FAULT"}
    if fault is not None:
        env["DMEDIA_FAULT"] = fault
    return subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=60
    )


def test_unset_or_other_name_does_nothing() -> None:
    for fault in (None, "", "elsewhere"):
        r = _run(fault)
        assert r.returncode == 0, r.stderr
        assert r.stdout.split("\n")[-2] == "after 3"


def test_named_point_kills_the_process_there() -> None:
    r = _run("here")
    assert r.returncode == -signal.SIGKILL
    assert r.stdout == "before 1\n"


def test_nth_hit() -> None:
    r = _run("here@2")
    assert r.returncode == -signal.SIGKILL
    assert r.stdout == "before 1\nafter 1\nbefore 2\n"
