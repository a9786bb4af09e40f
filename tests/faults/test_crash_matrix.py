"""Every step of import, copy, verify-quarantine, downgrade and purge, killed (SIGKILL at a
fault point), then recovered by `daemon --once` and checked independently (crash.check).

The normal suite runs FAST; `DMEDIA_FAULTS=full uv run pytest tests/faults` runs all of
them (README, "Tests"). The table of outcomes is printed at the end of the session.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.faults.crash import Lib, Scenario, run_scenario

POINTS = {
    "import": [
        "tmp.created",
        "tmp.write",
        "tmp.fsynced",
        "files.renamed",
        "files.committed",
        "import.doc_saved",
        "files.committed@2",
        "import.doc_saved@3",
        # inside a batch (import_batches: all written, all fsync-ed, all renamed, recorded)
        "import.batch_staged",
        "tmp.fsynced@2",
        "import.batch_synced",
        "files.renamed@2",
        "import.batch_renamed",
        "db.many_written",
    ],
    "copy": [
        "tmp.created",
        "tmp.write",
        "tmp.fsynced",
        "files.renamed",
        "files.committed",
        "files.renamed@2",
        "copy.written",
        "copy.doc_saved",
        # inside a batch (make_copies: all read into tmp/, fsync-ed, renamed, recorded)
        "tmp.fsynced@2",
        "copy.batch_synced",
        "copy.batch_renamed",
        "copy.doc_saved@2",
    ],
    "verify": [
        "quarantine.linked",
        "quarantine.moved",
        "quarantine.done",
        "corrupt.doc_marked",
        "corrupt.logged",
        "corrupt.flagged",
        "corrupt.failing_logged",
        "downgrade.store_marked",
        "downgrade.file",
        "downgrade.files_done",
        "downgrade.logged",
    ],
    "downgrade": [
        "downgrade.store_marked",
        "downgrade.file",
        "downgrade.file@2",
        "downgrade.files_done",
        "downgrade.logged",
    ],
    "downgrade-atime": [
        "downgrade.store_marked",
        "downgrade.file@2",
        "downgrade.files_done",
        "downgrade.logged",
    ],
    "purge": [
        "purge.store_marked",
        "purge.file",
        "purge.file@2",
        "purge.files_done",
        "purge.logged",
        "purge.forgotten",
        "purge.store_deleted",
    ],
}

FAST = {
    "import:tmp.write",
    "import:files.renamed",
    "import:import.batch_synced",
    "import:db.many_written",
    "copy:files.committed",
    "copy:copy.written",
    "copy:copy.batch_renamed",
    "verify:quarantine.linked",
    "verify:corrupt.doc_marked",
    "downgrade:downgrade.file",
    "purge:purge.file@2",
    "purge:purge.forgotten",
}

# Known defects, each a strict xfail: when the fix lands the case passes, the xfail
# turns into a failure, and whoever fixed it removes the line. None left (issue 10).
KNOWN: dict[str, str] = {}

FULL = os.environ.get("DMEDIA_FAULTS") == "full"


def _scenarios() -> list[pytest.param]:
    out = []
    for op, points in POINTS.items():
        for point in points:
            sc = Scenario(op, point, fast=f"{op}:{point}" in FAST)
            if not (sc.fast or FULL):
                continue
            marks = [pytest.mark.xfail(strict=True, reason=KNOWN[sc.id])] if sc.id in KNOWN else []
            out.append(pytest.param(sc, id=sc.id, marks=marks))
    return out


@pytest.mark.parametrize("scenario", _scenarios())
def test_crash_point_recovers(scenario: Scenario, tmp_path: Path) -> None:
    lib = Lib(tmp_path, int(time.time()))
    died, recovered, problems = run_scenario(lib, scenario)
    assert died.killed, f"{scenario.id} was never reached (exit {died.returncode}): {died.stderr}"
    assert recovered.returncode == 0, recovered.stderr
    assert problems == []
