"""The CouchDB design documents: the named queries of `couch.py` as JavaScript views.

Why it looks like this:
- Every map function starts with the same prelude, a line-by-line port of
  `dmedia_tui.durability` (valid store key = 24 characters of the sortable base32
  alphabet; `copies` counts only when it is an integer in 1..MAX_COPIES, never a boolean;
  origin "user" unless a string; bytes 0 unless an integer in 1..MAX_INT), so the views agree with
  the SQLite backend on every doc, malformed ones included. The contract suite in
  `tests/db/` proves it. CouchDB cannot share code between map functions without
  CommonJS `require`, which PouchDB does not support, so the prelude is pasted in.
- Only the built-in reduces `_sum` and `_count` are used: they run natively in CouchDB
  and are the only ones PouchDB Server knows (besides `_stats`).
- Keys end with the doc `_id`, so every row key is unique and paging is "start after
  this key" in every backend.
- Each design doc carries a `version`. `couch.py` replaces a design doc whose content
  differs from the one here, so bump VERSION whenever a view changes: the new views are
  then installed (and rebuilt by the server) the next time any program opens the library.
"""

from __future__ import annotations

from typing import Any

VERSION = 2

DOCS_DDOC = "dmedia"  # _design/dmedia in dmedia-1
LOG_DDOC = "log"  # _design/log in log-1

_PRELUDE = """
  var ALPHABET = "3456789ABCDEFGHIJKLMNOPQRSTUVWXY";
  var MAX_INT = 9007199254740991;  // durability.MAX_INT
  var MAX_COPIES = 10;  // durability.MAX_COPIES
  function isStoreId(s) {
    if (typeof s !== "string" || s.length !== 24) { return false; }
    for (var i = 0; i < s.length; i++) {
      if (ALPHABET.indexOf(s.charAt(i)) < 0) { return false; }
    }
    return true;
  }
  function isInt(v) {
    return typeof v === "number" && isFinite(v) && Math.floor(v) === v;
  }
  function isObject(v) {
    return v !== null && typeof v === "object" && !Array.isArray(v);
  }
  function fileInfo(doc) {
    var items = [];
    var stored = doc.stored;
    if (isObject(stored)) {
      for (var sid in stored) {
        if (!Object.prototype.hasOwnProperty.call(stored, sid) || !isStoreId(sid)) {
          continue;
        }
        var entry = stored[sid];
        var copies = 0;
        if (isObject(entry) && isInt(entry.copies) && entry.copies > 0
            && entry.copies <= MAX_COPIES) {
          copies = entry.copies;
        }
        var verified = null;
        if (isObject(entry) && isInt(entry.verified) && entry.verified >= 0
            && entry.verified <= MAX_INT) {
          verified = entry.verified;
        }
        items.push([sid, copies, verified]);
      }
    }
    items.sort(function (a, b) { return a[0] < b[0] ? -1 : (a[0] > b[0] ? 1 : 0); });
    var durability = 0;
    var parts = [];
    for (var j = 0; j < items.length; j++) {
      durability += items[j][1];
      parts.push(items[j][0] + ":" + items[j][1]);
    }
    return {
      origin: typeof doc.origin === "string" ? doc.origin : "user",
      bytes: (isInt(doc.bytes) && doc.bytes > 0 && doc.bytes <= MAX_INT) ? doc.bytes : 0,
      items: items,
      durability: durability,
      rank: Math.min(3, items.length) + Math.min(3, durability),
      placement: parts.join(",")
    };
  }
"""


def _file_map(body: str) -> str:
    return (
        "function (doc) {"
        + _PRELUDE
        + '  if (doc.type !== "dmedia/file") { return; }\n'
        + "  var f = fileInfo(doc);\n"
        + body
        + "}"
    )


def _log_map(field: str) -> str:
    return (
        "function (doc) {\n"
        f'  if (typeof doc.{field} === "string") {{ emit([doc.{field}, doc._id], null); }}\n'
        "}"
    )


def docs_design() -> dict[str, Any]:
    """`_design/dmedia`: file, store and machine views of `dmedia-1`."""
    return {
        "_id": f"_design/{DOCS_DDOC}",
        "language": "javascript",
        "version": VERSION,
        "views": {
            # [origin, placement, _id] -> [1, bytes]; group_level=2 gives the placement
            # summary (count, bytes), a key range gives files_by_placement.
            "placement": {
                "map": _file_map("  emit([f.origin, f.placement, doc._id], [1, f.bytes]);\n"),
                "reduce": "_sum",
            },
            # [store_id, rank, _id]: files on a store, most fragile first.
            "by_store": {
                "map": _file_map(
                    "  for (var i = 0; i < f.items.length; i++) {\n"
                    "    emit([f.items[i][0], f.rank, doc._id], null);\n"
                    "  }\n"
                ),
            },
            # [origin, rank, _id] for files below the target durability.
            "fragile": {
                "map": _file_map(
                    "  if (f.durability < 3) { emit([f.origin, f.rank, doc._id], null); }\n"
                ),
            },
            # [store_id, verified or null] -> bytes: copies to verify (null sorts first,
            # rows with equal keys come in doc-ID order); _count for verification stats.
            "copies": {
                "map": _file_map(
                    "  for (var i = 0; i < f.items.length; i++) {\n"
                    "    emit([f.items[i][0], f.items[i][2]], f.bytes);\n"
                    "  }\n"
                ),
                "reduce": "_count",
            },
            # type -> null: stores and machines (rows with equal keys in doc-ID order).
            "by_type": {
                "map": (
                    "function (doc) {\n"
                    '  if (typeof doc.type === "string") { emit(doc.type, null); }\n'
                    "}"
                ),
            },
        },
    }


def log_design() -> dict[str, Any]:
    """`_design/log`: event views of `log-1` ([field, _id], newest = highest _id)."""
    return {
        "_id": f"_design/{LOG_DDOC}",
        "language": "javascript",
        "version": VERSION,
        "views": {
            "by_type": {"map": _log_map("type")},
            "by_store": {"map": _log_map("store_id")},
            "by_file": {"map": _log_map("file_id")},
        },
    }
