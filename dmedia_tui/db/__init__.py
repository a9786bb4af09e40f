"""Database backends behind one interface: embedded SQLite (default) or CouchDB."""

from __future__ import annotations

from dmedia_tui.db.base import (
    DAMAGED,
    DOCS_DB,
    LOG_DB,
    Change,
    Changes,
    Conflict,
    CopyDue,
    Database,
    DatabaseError,
    DatabaseOffline,
    Doc,
    InvalidDoc,
    Library,
    NotFound,
    PlacementRow,
    UpdateBatch,
    VerificationStats,
)


def is_couch_url(url: str) -> bool:
    return url.startswith(("http://", "https://"))


def open_library(url: str, *, create: bool = True, timeout: float | None = None) -> Library:
    """Open (and by default create) the library at a path or an http(s) CouchDB URL.

    `timeout`: seconds a CouchDB server may leave a request unanswered (default 30).
    Raises DatabaseOffline with a one-line message when it cannot.
    """
    if is_couch_url(url):
        from dmedia_tui.db.couch import TIMEOUT, CouchLibrary

        return CouchLibrary(url, create=create, timeout=timeout or TIMEOUT)
    from dmedia_tui.db.sqlite import SQLiteLibrary

    return SQLiteLibrary(url, create=create)


__all__ = [
    "DAMAGED",
    "DOCS_DB",
    "LOG_DB",
    "Change",
    "Changes",
    "Conflict",
    "CopyDue",
    "Database",
    "DatabaseError",
    "DatabaseOffline",
    "Doc",
    "InvalidDoc",
    "Library",
    "NotFound",
    "PlacementRow",
    "UpdateBatch",
    "VerificationStats",
    "is_couch_url",
    "open_library",
]
