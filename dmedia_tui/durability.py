"""Durability, rank and placement of a file doc: the numbers every layer agrees on.

Pure functions over a `dmedia/file` doc that tolerate malformed input (junk store keys,
non-int, negative or absurd copies and sizes count as nothing), because both database backends index
with them and a bad doc must never stop the index. The CouchDB views in
`db/couch_views.py` compute the same values; the contract tests prove it.
"""

from __future__ import annotations

from typing import Any

from dmedia_tui.protocol import is_store_id
from dmedia_tui.views import MAX_COPIES as MAX_COPIES  # re-exported: the bounds of a doc
from dmedia_tui.views import MAX_INT as MAX_INT
from dmedia_tui.views import copy_count, whole

TARGET = 3

# What one `stored` entry contributes: the rule is views.copy_count (a whole number
# 0..MAX_COPIES, else 0), named here as the durability functions have always called it.
copies_of = copy_count


def stored_items(doc: dict[str, Any]) -> list[tuple[str, int]]:
    """Sorted (store_id, copies) for every valid store key of doc['stored']."""
    stored = doc.get("stored")
    if not isinstance(stored, dict):
        return []
    return sorted((sid, copies_of(v)) for sid, v in stored.items() if is_store_id(sid))


def durability(doc: dict[str, Any]) -> int:
    """Sum of `copies` over the valid entries of doc['stored']."""
    return sum(c for _, c in stored_items(doc))


def rank(doc: dict[str, Any]) -> int:
    """Work order for making copies, 0 (no copy anywhere) to 6 (three good copies)."""
    items = stored_items(doc)
    return min(TARGET, len(items)) + min(TARGET, sum(c for _, c in items))


def placement_key(doc: dict[str, Any]) -> str:
    """Where a file is and what each copy is worth: 'SID:copies,SID:copies' sorted."""
    return ",".join(f"{sid}:{c}" for sid, c in stored_items(doc))


def parse_placement(key: str) -> list[tuple[str, int]]:
    """Inverse of placement_key."""
    if not key:
        return []
    out = []
    for part in key.split(","):
        sid, _, c = part.partition(":")
        out.append((sid, int(c)))
    return out


def file_origin(doc: dict[str, Any]) -> str:
    o = doc.get("origin")
    return o if isinstance(o, str) else "user"


def file_bytes(doc: dict[str, Any]) -> int:
    b = whole(doc.get("bytes"))
    return b if b is not None and 0 < b <= MAX_INT else 0
