"""Resolving the conflicting revisions CouchDB replication leaves behind.

Two machines that edit one doc while apart (or within one replication delay) both win
locally; replication keeps both revisions, picks the same winner everywhere, and lists
the other as `_conflicts`. Nothing may be lost in that: a copy recorded on one side only,
a corrupt mark, a failure flag. So every conflicted doc of `dmedia-1` is folded into one:

- `dmedia/file`: `transitions.merge_file_conflict` (union of `stored`, every corrupt mark).
- `dmedia/store`: the revision with the newest `atime` wins, and the safety flags of every
  side are kept: `no_new_copies` if any side set it, the `failure` of any side (the earliest
  time, the highest corrupt count, acknowledged only if every failing side acknowledged),
  and the earliest `downgraded` (a stale-only downgrade lifts itself at the next sighting).
- `dmedia/machine` (each is written by its own machine only): the newest `atime` wins.
- Any other doc is left alone (nothing here knows what it would be safe to drop).

The merge is saved on the winning revision and the other revisions are deleted in one
`_bulk_docs`. Revisions are folded in the order the server gives (the winner first, then
`_conflicts`), which is the same on every replica, and every merge is commutative on what
matters, so two machines resolving the same conflict at once write equal docs: their two
resolutions conflict again after replication and the next pass merges them into one.
Log docs are never edited, so `log-1` has nothing to resolve.
"""

from __future__ import annotations

import copy
import logging
import math
from dataclasses import dataclass, field
from typing import Any

from dmedia_tui import transitions
from dmedia_tui.db.base import Conflict, DatabaseError, DatabaseOffline, Doc, Library, NotFound
from dmedia_tui.views import TYPE_FILE, TYPE_MACHINE, TYPE_STORE

log = logging.getLogger("dmedia_tui.conflicts")

FILE, STORE, MACHINE = TYPE_FILE, TYPE_STORE, TYPE_MACHINE


@dataclass
class ResolveReport:
    """What one pass did: docs merged, docs left for the next pass, docs not ours."""

    resolved: list[str] = field(default_factory=list)
    retry: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, list[str]]:
        return {"resolved": self.resolved, "retry": self.retry, "skipped": self.skipped}


def _num(value: Any) -> float | None:
    if type(value) in (int, float) and math.isfinite(value):
        return value
    return None


def _atime(doc: Doc) -> float:
    t = _num(doc.get("atime"))
    return t if t is not None else -1.0


def _merge_failure(fa: Any, fb: Any) -> Any:
    """Both failures folded: the first time, the highest count, acknowledged only if both."""
    if not isinstance(fa, dict) or not isinstance(fb, dict):
        # A malformed flag still means "failing": keep whichever side says so.
        keep = fa if isinstance(fa, dict) else fb if isinstance(fb, dict) else fa
        return copy.deepcopy(keep if keep is not None else fb)
    ta, tb = _num(fa.get("time")), _num(fb.get("time"))
    first, other = (fb, fa) if ta is None or (tb is not None and tb < ta) else (fa, fb)
    merged = copy.deepcopy(first)
    counts = [c for c in (fa.get("corrupt_count"), fb.get("corrupt_count")) if type(c) is int]
    if counts:
        merged["corrupt_count"] = max(counts)
    if not (fa.get("acknowledged") is True and fb.get("acknowledged") is True):
        merged["acknowledged"] = False
        merged.pop("acknowledged_time", None)
    for k, v in other.items():
        merged.setdefault(k, copy.deepcopy(v))
    return merged


def _merge_downgrade(da: Any, db: Any) -> Any:
    if not isinstance(da, dict) or not isinstance(db, dict):
        return copy.deepcopy(da if isinstance(da, dict) else db)
    ta, tb = _num(da.get("time")), _num(db.get("time"))
    return copy.deepcopy(db if ta is None or (tb is not None and tb < ta) else da)


def merge_store_conflict(a: Doc, b: Doc) -> Doc:
    """Two revisions of a store doc: the newest `atime` wins, every safety flag is kept."""
    newer, older = (b, a) if _atime(b) > _atime(a) else (a, b)
    merged = copy.deepcopy(newer)
    merged["_rev"] = a.get("_rev")
    if a.get("no_new_copies") is True or b.get("no_new_copies") is True:
        merged["no_new_copies"] = True
    failure = _merge_failure(a.get("failure"), b.get("failure"))
    if failure is not None:
        merged["failure"] = failure
    downgraded = _merge_downgrade(a.get("downgraded"), b.get("downgraded"))
    if downgraded is not None:
        merged["downgraded"] = downgraded
    # A purge under way on either side is finished, whatever the other side saw since.
    purging = next((p for p in (a.get("purging"), b.get("purging")) if isinstance(p, dict)), None)
    if purging is not None:
        merged["purging"] = copy.deepcopy(purging)
    for k, v in older.items():
        if k.startswith("x_"):
            merged.setdefault(k, copy.deepcopy(v))
    return merged


def merge_machine_conflict(a: Doc, b: Doc) -> Doc:
    """Two revisions of a machine doc: the latest heartbeat is the truth."""
    merged = copy.deepcopy(b if _atime(b) > _atime(a) else a)
    merged["_rev"] = a.get("_rev")
    return merged


def merge_revisions(revisions: list[Doc]) -> Doc | None:
    """Fold every live revision of one doc (the winner first) into one; None: not ours."""
    if not revisions:
        return None
    types = {r.get("type") for r in revisions}
    if len(types) != 1:
        return None
    kind = types.pop()
    if kind == FILE:
        fold = transitions.merge_file_conflict
    elif kind == STORE:
        fold = merge_store_conflict
    elif kind == MACHINE:
        fold = merge_machine_conflict
    else:
        return None
    merged = revisions[0]
    for other in revisions[1:]:
        merged = fold(merged, other)
    merged["_id"] = revisions[0]["_id"]
    merged["_rev"] = revisions[0]["_rev"]
    merged.pop("_conflicts", None)
    return merged


def resolve_doc(lib: Library, doc_id: str) -> bool | None:
    """Resolve one doc: True merged, False nothing to do, None not a doc we may merge.

    Conflict (the doc moved on meanwhile) propagates: the caller retries later.
    """
    try:
        revisions = lib.docs.leaves(doc_id)
    except NotFound:
        return False
    if len(revisions) < 2:
        return False
    merged = merge_revisions(revisions)
    if merged is None:
        return None
    losers = [r["_rev"] for r in revisions[1:]]
    lib.docs.resolve(merged, losers)
    if merged.get("type") == FILE and any(isinstance(r.get("corrupt"), dict) for r in revisions):
        log.info("merged %d revisions of %s, corrupt marks kept", len(revisions), doc_id)
    else:
        log.info("merged %d revisions of %s", len(revisions), doc_id)
    return True


def resolve_conflicts(lib: Library, limit: int | None = None) -> ResolveReport:
    """Merge every conflicted doc of `dmedia-1`. Idempotent; a no-op on SQLite.

    A doc that moves on while it is merged is left for the next pass (it stays a
    candidate of `lib.conflicted_ids()`), as is one whose save fails.
    """
    report = ResolveReport()
    for doc_id in lib.conflicted_ids():
        if limit is not None and len(report.resolved) >= limit:
            report.retry.append(doc_id)
            continue
        try:
            done = resolve_doc(lib, doc_id)
        except Conflict:
            report.retry.append(doc_id)
            continue
        except DatabaseOffline:
            raise
        except DatabaseError as e:
            log.warning("cannot resolve the conflicts of %s: %s", doc_id, e)
            report.retry.append(doc_id)
            continue
        if done is None:
            report.skipped.append(doc_id)
        elif done:
            report.resolved.append(doc_id)
    return report
