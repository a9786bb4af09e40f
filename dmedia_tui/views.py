"""The doc model: what the library's docs say, read one way everywhere.

Docs come from a database other machines (and other versions) write to, so any field may
be missing or of the wrong type. Each kind of doc has ONE tolerant reader here, which
turns a raw dict into a frozen view (`FileView`, `StoreView`, `MachineView`) and never
raises; health, transitions, durability, the app's data layer and the CLI all read
through these, so a fact is decided in one place:

- a copy's count: `copy_count` (a whole number 0..MAX_COPIES, `2.0` is 2; anything else,
  and a bool, is 0: a damaged doc never claims safety);
- a store's weight: `StoreView.copies` is what its copies are worth while it is in good
  standing (the doc's `copies`; a doc without the field is worth DEFAULT_STORE_COPIES; null or
  any other junk is worth 0),
  `StoreView.weight` what a copy there is worth now (0 once downgraded or failing);
- whether it is trusted and may take new copies: `StoreView.trusted`,
  `StoreView.takes_new_copies`;
- its label: `store_label` (a non-empty string label, else the first 8 characters of
  its ID).

Docs stay dicts on the wire and in the database; every write still goes through the pure
functions of `transitions.py`. This module sits at the bottom of the layers (only
`protocol` below it) and does no I/O.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from dmedia_tui.protocol import is_store_id

# The `type` of each kind of doc in `dmedia-1` (log docs in `log-1` have their own types,
# listed in schema.LOG_TYPES).
TYPE_FILE = "dmedia/file"
TYPE_STORE = "dmedia/store"
TYPE_MACHINE = "dmedia/machine"

# The largest integer a doc may hold: JSON numbers are exact up to 2^53 - 1 in JavaScript
# (the CouchDB views), and sums of them stay far from SQLite's int64 limit.
MAX_INT = 2**53 - 1
# The most durability one copy can be worth (`store init --copies` allows 0..MAX_COPIES).
# A larger value is malformed and counts as nothing, so a damaged doc never claims safety.
MAX_COPIES = 10
# What a store doc without `copies` is worth: what `store init` writes by default and what
# the store's own `.dmedia/store.json` means without the field (FileStore.copies). The
# field is required (`check` reports its absence), but a store that lost it is still the
# store it was; a value that is there but is not a whole number 0..MAX_COPIES (null
# included) is junk and is worth 0.
DEFAULT_STORE_COPIES = 1


# --- values ----------------------------------------------------------------------------


def whole(value: Any) -> int | None:
    """value as an int when it is a whole number (2 or 2.0, never a bool), else None.

    JSON does not tell 2 from 2.0, and CouchDB's JavaScript views see both as 2, so the
    Python side must too, or the two backends would disagree about the same doc.
    """
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def copies_value(value: Any) -> int:
    """A `copies` number as it counts: a whole number 0..MAX_COPIES, else 0."""
    c = whole(value)
    return c if c is not None and 0 <= c <= MAX_COPIES else 0


def copy_count(entry: Any) -> int:
    """THE rule for what one `stored` entry contributes to its file's durability."""
    return copies_value(entry.get("copies")) if isinstance(entry, dict) else 0


def time_value(value: Any) -> float | None:
    """A unix time from a doc: a finite number (bools excluded), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def count_value(value: Any) -> int:
    """A count or size from a doc: a whole number 0..MAX_INT, else 0."""
    n = whole(value)
    return n if n is not None and 0 <= n <= MAX_INT else 0


def text_value(value: Any) -> str | None:
    """A non-empty string from a doc, else None."""
    return value if isinstance(value, str) and value else None


# --- store docs ------------------------------------------------------------------------


def store_label(doc: Any, store_id: str = "") -> str:
    """THE label rule: the doc's non-empty string `label`, else the first 8 characters of
    its ID (of `store_id` when there is no doc or no ID)."""
    if isinstance(doc, dict):
        label = text_value(doc.get("label"))
        if label is not None:
            return label
        doc_id = doc.get("_id")
        if isinstance(doc_id, str) and doc_id:
            return doc_id[:8]
    return store_id[:8]


@dataclass(frozen=True)
class StoreView:
    """A `dmedia/store` doc as every layer reads it."""

    id: str
    label: str
    copies: int  # what a copy there is worth while the store is in good standing
    atime: float | None
    bytes_total: int
    bytes_avail: int
    machine_id: str | None
    drive_serial: str | None
    removable: bool
    internal: bool
    no_new_copies: bool  # flagged: place no new copy there
    downgraded: bool  # by the user or a policy: its copies count 0
    purging: bool  # a purge is under way (MetaStore.purge_store): it is being forgotten
    failing: bool  # corrupt copies were found there (a `failure` mark)
    acknowledged: bool  # the user has seen the failure
    corrupt_count: int
    failure_reason: str | None

    @classmethod
    def of(cls, doc: Any) -> StoreView | None:
        """The view of a store doc; None when it is not an object with a string `_id`."""
        if not isinstance(doc, dict):
            return None
        sid = doc.get("_id")
        if not isinstance(sid, str) or not sid:
            return None
        failure = doc.get("failure")
        fdict = failure if isinstance(failure, dict) else {}
        return cls(
            id=sid,
            label=store_label(doc),
            copies=copies_value(doc["copies"]) if "copies" in doc else DEFAULT_STORE_COPIES,
            atime=time_value(doc.get("atime")),
            bytes_total=count_value(doc.get("bytes_total")),
            bytes_avail=count_value(doc.get("bytes_avail")),
            machine_id=text_value(doc.get("machine_id")),
            drive_serial=text_value(doc.get("drive_serial")),
            removable=doc.get("removable") is True,
            internal=doc.get("internal") is True,
            # Anything but an explicit false (or absence) counts as flagged: junk flags
            # make a store untrusted, never trusted.
            no_new_copies=doc.get("no_new_copies") not in (None, False),
            downgraded=doc.get("downgraded") is not None,
            purging=doc.get("purging") is not None,
            failing=failure is not None,
            acknowledged=fdict.get("acknowledged") is True,
            corrupt_count=count_value(fdict.get("corrupt_count")),
            failure_reason=text_value(fdict.get("reason")),
        )

    @property
    def trusted(self) -> bool:
        """Not flagged and not failing: the user has no reason to doubt the drive."""
        return not self.no_new_copies and not self.failing

    @property
    def weight(self) -> int:
        """What a copy on this store is worth now: 0 once downgraded or failing."""
        return 0 if self.downgraded or self.failing else self.copies

    @property
    def takes_new_copies(self) -> bool:
        """THE rule for placing a copy: trusted, not downgraded, not being purged (a copy
        placed there now would be forgotten with it), and a copy there is worth at least 1.
        Free space and "is it connected" are separate questions."""
        return self.trusted and not self.purging and self.weight >= 1


# --- file docs -------------------------------------------------------------------------


@dataclass(frozen=True)
class CopyView:
    """One entry of a file doc's `stored`: a copy on one store."""

    store_id: str
    copies: int  # copy_count: what it contributes to durability
    mtime: int | None
    verified: int | None
    pinned: bool


@dataclass(frozen=True)
class FileView:
    """A `dmedia/file` doc as the app and the CLI read it."""

    id: str
    name: str | None
    bytes: int  # 0 when malformed
    origin: str
    copies: tuple[CopyView, ...]  # one per valid store ID of `stored`, by store ID
    corrupt: tuple[tuple[str, float | None], ...]  # (store ID, when), by store ID

    @classmethod
    def of(cls, doc: Any) -> FileView | None:
        """The view of a file doc; None when it is not an object with a string `_id`."""
        if not isinstance(doc, dict):
            return None
        fid = doc.get("_id")
        if not isinstance(fid, str) or not fid:
            return None
        stored = doc.get("stored")
        corrupt = doc.get("corrupt")
        origin = doc.get("origin")
        return cls(
            id=fid,
            name=text_value(doc.get("name")),
            bytes=count_value(doc.get("bytes")),
            origin=origin if isinstance(origin, str) else "user",
            copies=tuple(
                _copy(sid, entry)
                for sid, entry in sorted(stored.items() if isinstance(stored, dict) else ())
                if is_store_id(sid)
            ),
            corrupt=tuple(
                (sid, time_value(mark.get("time")) if isinstance(mark, dict) else None)
                for sid, mark in sorted(corrupt.items() if isinstance(corrupt, dict) else ())
                if is_store_id(sid)
            ),
        )

    @property
    def durability(self) -> int:
        return sum(c.copies for c in self.copies)

    def copy_on(self, store_id: str) -> CopyView | None:
        return next((c for c in self.copies if c.store_id == store_id), None)


def _copy(store_id: str, entry: Any) -> CopyView:
    e = entry if isinstance(entry, dict) else {}
    mtime, verified = whole(e.get("mtime")), whole(e.get("verified"))
    return CopyView(
        store_id=store_id,
        copies=copy_count(entry),
        mtime=mtime if mtime is not None and mtime >= 0 else None,
        verified=verified if verified is not None and verified >= 0 else None,
        pinned=e.get("pinned") is True,
    )


# --- machine docs ----------------------------------------------------------------------


@dataclass(frozen=True)
class MachineView:
    """A `dmedia/machine` doc: who it is, its last heartbeat, the stores it has."""

    id: str
    hostname: str  # its non-empty `hostname`, else the first 8 characters of its ID
    atime: float | None
    stores: tuple[str, ...]  # valid store IDs only

    @classmethod
    def of(cls, doc: Any) -> MachineView | None:
        """The view of a machine doc; None when it is not an object with a string `_id`."""
        if not isinstance(doc, dict):
            return None
        mid = doc.get("_id")
        if not isinstance(mid, str) or not mid:
            return None
        raw = doc.get("stores")
        return cls(
            id=mid,
            hostname=text_value(doc.get("hostname")) or mid[:8],
            atime=time_value(doc.get("atime")),
            stores=tuple(s for s in raw if is_store_id(s)) if isinstance(raw, list | tuple) else (),
        )
