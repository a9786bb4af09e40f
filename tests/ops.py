"""One import and one verification, through the calls production makes.

MetaStore has no single-file import or verify of its own: `dmedia-tui import` goes through
MetaStore.import_paths, and the engine's verify worker, rebuild and adopt_orphans verify
with FileStore.verify then MetaStore.apply_verify_result. Tests that need one file
imported or one copy verified use these, so they test what users run.
"""

from __future__ import annotations

from pathlib import Path

from dmedia_tui.filestore import FileStore, VerifyResult
from dmedia_tui.metastore import MetaStore
from dmedia_tui.protocol import Progress


def import_one(ms: MetaStore, src: Path, fs: FileStore, origin: str = "user") -> tuple[str, bool]:
    """Import one file as `dmedia-tui import` does: (file ID, new to the library)."""
    report = ms.import_paths([src], fs, origin=origin)
    assert not report.errors, report.errors
    (file_id,) = report.file_ids
    return file_id, bool(report.new)


def verify_one(
    ms: MetaStore, fs: FileStore, file_id: str, progress: Progress | None = None
) -> VerifyResult:
    """Verify one copy as the engine's verify worker does, and apply the outcome."""
    result = fs.verify(file_id, progress=progress)
    ms.apply_verify_result(fs, result)
    return result
