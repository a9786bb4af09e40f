"""The pure state transitions of file and store docs.

Each function takes a doc, changes it in place and returns it, so it composes with
``Database.update(doc_id, fn, *args)`` (re-read, apply, save, retry on conflict). A function
returns None when it has nothing to change, so that `update` skips the write; which ones
do is said in their docstrings.

Malformed docs never make them raise. Like the original Dmedia's `get_rank`, they clean the
`stored` dict of the doc they touch: keys that are not store IDs are dropped, a value that
is not an object becomes ``{copies: 0, mtime: 0}`` (still a place to look), `copies` that is
not a whole number >= 0 becomes 0 (2.0 becomes 2: cleaning never changes what a copy
counts), a float `mtime`/`verified` becomes an int, a junk `verified` or
`pinned` is dropped. Keys starting with ``x_`` (in the doc, in `stored`, in a stored value)
are never dropped or changed. A store ID *argument* that is not a valid ID is a caller bug
and raises protocol.InvalidID, since writing it would corrupt the doc.

Decisions (where the original Dmedia left a choice):
- `mark_copied` marks only the source verified. A destination copy was written from
  verified bytes but nobody has read it back from its own drive yet (a bad sector or a
  bit flip on the write path would go unseen), so it stays never-verified, which puts it
  first in the verification queue. The original did the same.
- `merge_file_conflict`: see its docstring.
- `touch_store` clears a downgrade whose reason is `REASON_STALE` (the store was only
  downgraded because nobody saw it; now it is seen). Copies on it stay at 0 until each is
  re-verified. Any other downgrade, and every failure, needs the user (`trust_store`).
"""

from __future__ import annotations

import copy as _copy
import math
from collections.abc import Mapping
from typing import Any, TypeGuard

from dmedia_tui.protocol import check_store_id, is_store_id
from dmedia_tui.views import StoreView, whole

Doc = dict[str, Any]

# Reasons for store downgrades and failures (the `reason` field and the log events).
REASON_STALE = "atime"  # not seen connected for the downgrade threshold (its atime is old)
REASON_CORRUPT = "corrupt"  # a corrupt copy was found on it
REASON_FILESTORE_MISSING = "filestore_missing"  # its drive is back but the FileStore is gone
REASON_USER = "user"  # the user asked
REASON_IO_ERRORS = "io_errors"  # reads (or writes) kept failing with I/O errors
REASON_SMART = "smart"  # the drive's SMART verdict is failing (smart.py)


# --- cleaning --------------------------------------------------------------------------


def _is_x(key: Any) -> bool:
    return isinstance(key, str) and key.startswith("x_")


def _int_or_none(value: Any) -> int | None:
    """An int >= 0 from an int or a finite float >= 0 (bools excluded), else None."""
    t = type(value)
    if t is int and value >= 0:
        return value
    if t is float and math.isfinite(value) and value >= 0:
        return int(value)
    return None


def _is_time(value: Any) -> TypeGuard[float]:
    """A unix time a doc may keep as it is: a finite int or float >= 0 (bools excluded)."""
    return type(value) in (int, float) and math.isfinite(value) and value >= 0


def _clean_value(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        return {"copies": 0, "mtime": 0}
    # A whole number stays what it is (2.0 becomes 2: it counts 2, views.copy_count), so
    # cleaning never changes what a copy counts; anything else becomes 0.
    c = whole(value.get("copies"))
    value["copies"] = c if c is not None and c >= 0 else 0
    value["mtime"] = _int_or_none(value.get("mtime")) or 0
    if "verified" in value:
        v = _int_or_none(value["verified"])
        if v is None:
            del value["verified"]
        else:
            value["verified"] = v
    if "pinned" in value and value["pinned"] is not True:
        del value["pinned"]
    return value


def clean_stored(doc: Doc) -> dict[str, Any]:
    """Make doc['stored'] a clean dict (see the module docstring) and return it."""
    stored = doc.get("stored")
    if not isinstance(stored, dict):
        stored = {}
    else:
        for key in list(stored):
            if is_store_id(key):
                stored[key] = _clean_value(stored[key])
            elif not _is_x(key):
                del stored[key]
    doc["stored"] = stored
    return stored


def _clean_corrupt(doc: Doc) -> dict[str, Any]:
    """Make doc['corrupt'] a clean dict of store_id -> {time} (possibly empty) and return it."""
    corrupt = doc.get("corrupt")
    if not isinstance(corrupt, dict):
        return {}
    for key in list(corrupt):
        if is_store_id(key):
            value = corrupt[key]
            if not isinstance(value, dict):
                corrupt[key] = {"time": 0}
            else:
                t = value.get("time")
                if not _is_time(t):
                    value["time"] = 0
        elif not _is_x(key):
            del corrupt[key]
    return corrupt


def _set_corrupt(doc: Doc, corrupt: dict[str, Any]) -> None:
    """`corrupt` is a non-empty object when present."""
    if corrupt:
        doc["corrupt"] = corrupt
    else:
        doc.pop("corrupt", None)


def _entry(stored: dict[str, Any], store_id: str) -> dict[str, Any]:
    value = stored.get(store_id)
    if value is None:
        value = stored[store_id] = {}
    return value


# --- file docs -------------------------------------------------------------------------


def mark_added(doc: Doc, store_id: str, copies: int, mtime: int | float) -> Doc | None:
    """A new copy was written (or found) on a store: it has not been verified yet.

    Sets copies and mtime, pops `verified`, keeps `pinned`. None if doc is not an object.
    """
    check_store_id(store_id)
    if not isinstance(doc, dict):
        return None
    value = _entry(clean_stored(doc), store_id)
    value["copies"] = _int_or_none(copies) or 0
    value["mtime"] = _int_or_none(mtime) or 0
    value.pop("verified", None)
    return doc


def merge_import(
    doc: Doc, store_id: str, weight: int, mtime: int, origin: str, now: float
) -> Doc | None:
    """A file imported into a store: the copy added (if the doc does not list it there)
    and `origin` raised to "user" (never lowered); `atime` set when anything changed.
    None when nothing changes."""
    stored = stored_ if isinstance(stored_ := doc.get("stored"), dict) else {}
    changed = False
    if store_id not in stored:
        mark_added(doc, store_id, weight, mtime)
        changed = True
    if origin == "user" and doc.get("origin") != "user":
        doc["origin"] = "user"
        changed = True
    if changed:
        doc["atime"] = int(now)
        return doc
    return None


def mark_verified(
    doc: Doc, store_id: str, copies: int, mtime: int | float, now: float
) -> Doc | None:
    """The copy's bytes were read back and hashed to the file ID at `now`."""
    check_store_id(store_id)
    if not isinstance(doc, dict):
        return None
    value = _entry(clean_stored(doc), store_id)
    value["copies"] = _int_or_none(copies) or 0
    value["mtime"] = _int_or_none(mtime) or 0
    value["verified"] = _int_or_none(now) or 0
    return doc


def mark_corrupt(doc: Doc, store_id: str, now: float) -> Doc | None:
    """The copy's bytes did not hash to the ID (it was quarantined): forget it, remember why."""
    check_store_id(store_id)
    if not isinstance(doc, dict):
        return None
    clean_stored(doc).pop(store_id, None)
    corrupt = _clean_corrupt(doc)
    corrupt[store_id] = {"time": now if type(now) in (int, float) else 0}
    _set_corrupt(doc, corrupt)
    return doc


def mark_missing(doc: Doc, store_id: str) -> Doc | None:
    """The copy is not on the store: remove the location."""
    check_store_id(store_id)
    if not isinstance(doc, dict):
        return None
    clean_stored(doc).pop(store_id, None)
    return doc


def mark_missing_if_present(doc: Doc, store_id: str) -> Doc | None:
    """`mark_missing`, but None (no write) when the doc does not list the store."""
    stored = doc.get("stored")
    if isinstance(stored, dict) and store_id in stored:
        return mark_missing(doc, store_id)
    return None


def mark_copied(
    doc: Doc,
    now: float,
    src_id: str,
    src_copies: int,
    src_mtime: int | float,
    dsts: Mapping[str, tuple[int, int | float]],
) -> Doc | None:
    """The file was copied from `src_id` (verified while read) to every store of `dsts`.

    `dsts` maps store_id -> (copies, mtime). The source gets verified=int(now); the
    destinations are added never-verified (see the module docstring).
    """
    check_store_id(src_id)
    for sid in dsts:
        check_store_id(sid)
    if not isinstance(doc, dict):
        return None
    mark_verified(doc, src_id, src_copies, src_mtime, now)
    for sid, (copies, mtime) in dsts.items():
        mark_added(doc, sid, copies, mtime)
    return doc


def mark_mismatched(doc: Doc, store_id: str, mtime: int | float) -> Doc | None:
    """The copy's mtime changed behind our back: it counts 0 until verified again."""
    check_store_id(store_id)
    if not isinstance(doc, dict):
        return None
    value = _entry(clean_stored(doc), store_id)
    value["copies"] = 0
    value["mtime"] = _int_or_none(mtime) or 0
    value.pop("verified", None)
    return doc


def downgrade_copy(doc: Doc, store_id: str) -> Doc | None:
    """The copy counts 0 (e.g. not verified for too long); location and `verified` are kept."""
    check_store_id(store_id)
    if not isinstance(doc, dict):
        return None
    value = clean_stored(doc).get(store_id)
    if isinstance(value, dict):
        value["copies"] = 0
    return doc


def downgrade_store_in_file(doc: Doc, store_id: str) -> Doc | None:
    """Like downgrade_copy, but None when there is nothing to change (no entry, or already 0).

    The location and `verified` are kept: the verification queue must take copies worth 0
    first so that they regain their weight once the store is back.
    """
    check_store_id(store_id)
    if not isinstance(doc, dict):
        return None
    value = clean_stored(doc).get(store_id)
    if not isinstance(value, dict) or value["copies"] == 0:
        return None
    value["copies"] = 0
    return doc


def purge_store_in_file(doc: Doc, store_id: str) -> Doc | None:
    """Forget the store's copy entirely; None when the file had no entry for it."""
    check_store_id(store_id)
    if not isinstance(doc, dict):
        return None
    stored = clean_stored(doc)
    if store_id not in stored:
        return None
    del stored[store_id]
    return doc


def _newest(value: Mapping[str, Any]) -> int:
    return max(value.get("mtime", 0), value.get("verified", 0))


def _merge_value(va: dict[str, Any], vb: dict[str, Any]) -> dict[str, Any]:
    if va["mtime"] != vb["mtime"]:
        # The file changed on that store in between: the older entry describes a file
        # that is no longer there, so the entry with the newer mtime wins whole.
        newer, older = (va, vb) if va["mtime"] > vb["mtime"] else (vb, va)
        merged = _copy.deepcopy(newer)
        for k, v in older.items():
            if _is_x(k):
                merged.setdefault(k, _copy.deepcopy(v))
    else:
        merged = _copy.deepcopy(va)
        for k, v in vb.items():
            if _is_x(k):
                merged.setdefault(k, _copy.deepcopy(v))
        if va["copies"] == vb["copies"]:
            verified = [v["verified"] for v in (va, vb) if "verified" in v]
            if verified:
                merged["verified"] = max(verified)
        else:
            # The sides disagree on what the copy is worth: keep the lower weight and drop
            # `verified`, so that the copy is verified soon and gets its true weight back.
            merged["copies"] = min(va["copies"], vb["copies"])
            merged.pop("verified", None)
    if va.get("pinned") is True or vb.get("pinned") is True:
        merged["pinned"] = True
    return merged


def merge_file_conflict(a: Any, b: Any) -> Doc:
    """Merge two conflicting revisions of one file doc (a wins where a choice is arbitrary).

    - `stored`: union. For a store in both: the entry with the newer `mtime` wins whole;
      with equal mtimes, equal copies keep the newest `verified`, different copies keep the
      lower value and drop `verified` (re-verify soon). `pinned` if either side pinned it.
    - `corrupt`: union, the latest time per store. A store marked corrupt on one side and
      absent from that side's `stored` loses its `stored` entry from the other side unless
      that entry is newer (max of mtime and verified) than the corrupt mark: the copy was
      quarantined, an older entry describes bytes that are gone.
    - `atime`: the max. `origin`: "user" if either side says so (the protective choice).
    - Everything else (including `_rev` and `x_*` keys) from `a`, plus keys only `b` has.
    Never mutates its arguments; always returns a dict.
    """
    if not isinstance(a, dict):
        a = b if isinstance(b, dict) else {}
    if not isinstance(b, dict):
        b = a
    a, b = _copy.deepcopy(a), _copy.deepcopy(b)
    sa, sb = clean_stored(a), clean_stored(b)
    ca, cb = _clean_corrupt(a), _clean_corrupt(b)

    merged = dict(a)
    for k, v in b.items():
        merged.setdefault(k, v)

    stored: dict[str, Any] = {}
    for sid in sa.keys() | sb.keys():
        if sid in sa and sid in sb:
            stored[sid] = sa[sid] if _is_x(sid) else _merge_value(sa[sid], sb[sid])
        else:
            stored[sid] = sa[sid] if sid in sa else sb[sid]

    corrupt: dict[str, Any] = dict(cb)
    corrupt.update(ca)
    for sid in ca.keys() & cb.keys():
        if not _is_x(sid) and cb[sid]["time"] > ca[sid]["time"]:
            corrupt[sid] = cb[sid]
    for side_stored, side_corrupt in ((sa, ca), (sb, cb)):
        for sid, mark in side_corrupt.items():
            if _is_x(sid) or sid in side_stored or sid not in stored:
                continue
            if _newest(stored[sid]) <= mark["time"]:
                del stored[sid]

    merged["stored"] = stored
    _set_corrupt(merged, corrupt)
    atimes = [t for t in (_int_or_none(a.get("atime")), _int_or_none(b.get("atime"))) if t]
    if atimes:
        merged["atime"] = max(atimes)
    if a.get("origin") == "user" or b.get("origin") == "user":
        merged["origin"] = "user"
    return merged


# --- store docs ------------------------------------------------------------------------


def downgrade_store(
    store_doc: Doc,
    now: float,
    reason: str,
    event: str | None = None,
    count: int | None = None,
) -> Doc | None:
    """Copies on the store count 0 from now on. None if it is already downgraded (the
    first time and reason are kept: that is when the trouble began).

    With `event` (the log ID its `dmedia/store/downgrade` event will have) the mark is
    also the intent of the work still to do: `pending` until every copy on the store is
    zeroed and that event is logged (downgrade_done). A crash in between leaves the mark
    pending, and the next run finishes the job (MetaStore.finish_interrupted), logging
    the event under that ID once. `count`: the copies that counted there when it began.
    """
    if not isinstance(store_doc, dict):
        return None
    if isinstance(store_doc.get("downgraded"), dict):
        return None
    mark: dict[str, Any] = {"time": now, "reason": reason}
    if event is not None:
        mark.update(event=event, pending=True)
        if count is not None:
            mark["count"] = _int_or_none(count) or 0
    store_doc["downgraded"] = mark
    return store_doc


def pending_downgrade(store_doc: Any) -> dict[str, Any] | None:
    """The `downgraded` mark of a downgrade begun but not finished (see downgrade_store),
    or None (not downgraded, finished, or a mark too damaged to finish by its event)."""
    if not isinstance(store_doc, dict):
        return None
    mark = store_doc.get("downgraded")
    if not isinstance(mark, dict) or mark.get("pending") is not True:
        return None
    return mark if isinstance(mark.get("event"), str) else None


def downgrade_done(store_doc: Doc, event: str) -> Doc | None:
    """The downgrade whose event is `event` is finished: its mark is no longer pending.

    None when there is nothing to clear (finished already, trusted or re-seen meanwhile,
    or another downgrade's mark).
    """
    if not isinstance(store_doc, dict):
        return None
    mark = store_doc.get("downgraded")
    if not isinstance(mark, dict) or mark.get("event") != event or "pending" not in mark:
        return None
    del mark["pending"]
    return store_doc


def begin_purge(
    store_doc: Doc, now: float, reason: str, event: str, count: int, fields: Mapping[str, Any]
) -> Doc | None:
    """Mark the store as being purged (the intent, recorded before any file doc changes).

    The store doc is deleted last, once every file forgot the store and the
    `dmedia/store/purge` event (log ID `event`, with `count` and `fields`) is logged; a
    crash in between leaves this mark and the next run finishes the purge. None when a
    purge is already under way (its mark is kept: that purge is the one finished).
    """
    if not isinstance(store_doc, dict):
        return None
    if isinstance(store_doc.get("purging"), dict):
        return None
    store_doc["purging"] = {
        "time": now,
        "reason": reason,
        "event": event,
        "count": _int_or_none(count) or 0,
        "fields": dict(fields),
    }
    return store_doc


def pending_purge(store_doc: Any) -> dict[str, Any] | None:
    """The `purging` mark of a purge begun but not finished, or None."""
    if not isinstance(store_doc, dict):
        return None
    mark = store_doc.get("purging")
    if not isinstance(mark, dict) or not isinstance(mark.get("event"), str):
        return None
    return mark


def flag_failing(
    store_doc: Doc, now: float, reason: str, corrupt_count_increment: int = 1
) -> Doc | None:
    """The drive is suspect: never place a new copy there, and tell the user.

    If it is already failing, the count grows and the first time and reason are kept; a
    previous acknowledgement is withdrawn (the drive got worse: the user must hear it).
    The caller also calls downgrade_store (DESIGN.md §2: downgraded at once and flagged).
    """
    if not isinstance(store_doc, dict):
        return None
    store_doc["no_new_copies"] = True
    failure = store_doc.get("failure")
    inc = _int_or_none(corrupt_count_increment) or 0
    if isinstance(failure, dict):
        failure["corrupt_count"] = (_int_or_none(failure.get("corrupt_count")) or 0) + inc
        t = failure.get("time")
        if not _is_time(t):
            failure["time"] = now
        if not isinstance(failure.get("reason"), str):
            failure["reason"] = reason
        failure["acknowledged"] = False
        failure.pop("acknowledged_time", None)
    else:
        store_doc["failure"] = {
            "time": now,
            "reason": reason,
            "corrupt_count": inc,
            "acknowledged": False,
        }
    return store_doc


def acknowledge_failure(store_doc: Doc, now: float) -> Doc | None:
    """The user has seen the failure: the banner goes, the store stays FAILING.

    None when the store is not failing or already acknowledged.
    """
    if not isinstance(store_doc, dict):
        return None
    failure = store_doc.get("failure")
    if not isinstance(failure, dict) or failure.get("acknowledged") is True:
        return None
    failure["acknowledged"] = True
    failure["acknowledged_time"] = now
    return store_doc


def trust_store(store_doc: Doc) -> Doc | None:
    """The user vouches for the store: clear no_new_copies, downgraded, failure and the
    I/O error count (counting starts again, so one more error does not flag it at once).

    Copies on it stay at 0 until each is verified again. None when nothing was set.
    """
    if not isinstance(store_doc, dict):
        return None
    nnc = store_doc.get("no_new_copies")
    changed = nnc is not None and nnc is not False
    changed |= store_doc.pop("downgraded", None) is not None
    changed |= store_doc.pop("failure", None) is not None
    changed |= store_doc.pop("read_errors", None) is not None
    store_doc["no_new_copies"] = False
    return store_doc if changed else None


def touch_store(
    store_doc: Doc, now: float, bytes_total: int, bytes_avail: int, machine_id: str | None
) -> Doc | None:
    """The store was seen connected at `now` on `machine_id`, with this much space.

    Always returns the doc (atime changes). Clears a downgrade whose reason is REASON_STALE.
    """
    if not isinstance(store_doc, dict):
        return None
    store_doc["atime"] = _int_or_none(now) or 0
    store_doc["bytes_total"] = _int_or_none(bytes_total) or 0
    store_doc["bytes_avail"] = _int_or_none(bytes_avail) or 0
    store_doc["machine_id"] = machine_id
    downgraded = store_doc.get("downgraded")
    if isinstance(downgraded, dict) and downgraded.get("reason") == REASON_STALE:
        del store_doc["downgraded"]
    return store_doc


def is_store_trusted(store_doc: Any) -> bool:
    """No `no_new_copies` flag and no `failure` (views.StoreView.trusted). Junk flags count
    as untrusted."""
    view = StoreView.of(store_doc)
    return view is not None and view.trusted


def takes_new_copies(store_doc: Any) -> bool:
    """Can this store take a new copy? THE rule: the copier (MetaStore.destinations), the
    import (MetaStore.import_destination) and health's INSUFFICIENT_STORAGE all ask it.

    Yes only when it is trusted (no `failure`, no `no_new_copies`), not `downgraded` (by the
    user or by a policy: a copy written there would count 0), not being purged, and a copy
    there is worth at least 1. Free space and "is it connected" are separate questions
    for the caller. The rule itself is views.StoreView.takes_new_copies, which health
    reads too.
    """
    # A new condition goes into StoreView.takes_new_copies, never here: health reads the
    # view, not this function, and the two must not disagree.
    view = StoreView.of(store_doc)
    return view is not None and view.takes_new_copies


def store_copies_weight(store_doc: Any) -> int:
    """What a copy on this store is worth now (views.StoreView.weight): 0 if downgraded,
    failing or not a store doc; a doc without `copies` is worth DEFAULT_STORE_COPIES."""
    view = StoreView.of(store_doc)
    return view.weight if view is not None else 0
