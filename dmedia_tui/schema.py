"""The document schema: constructors that build valid docs, validators that list every problem.

Constructors are pure (`now` is an argument) and return plain dicts; they check their own
output and raise `SchemaError` rather than hand back a doc that `check_doc` would reject.

Validators never raise, whatever JSON they are given (None, lists, strings, nested junk):
they return every problem found as a one-line string naming the field path, e.g.
``stored.3G4H...: copies must be an int >= 0, got -1``; an empty list means valid. They are
plain Python (no pydantic) because the schema check walks every doc of the library and the
messages must name the path inside dicts keyed by store ID. Measured on a loaded 2-CPU box:
about 100k file docs/s for `check_doc` and about 120k/s for `check_file_consistency` (one
blake3 root hash and base64 per doc); `file_doc_sound`, both verdicts at once for the
common case of the check pass (a clean file doc), about 150k/s.

Rules common to every doc: `_id` is a str, `type` matches ``dmedia/[a-z]+(/[a-z]+)*``,
`time` is a finite number >= 0. Keys starting with ``x_`` (at any depth) belong to other
applications: they are never reported and never touched. Unknown keys are not reported
either, so newer versions can add fields; bools never count as ints. Design docs
(``_design/...``, ``_local/...``) and deleted docs are not checked.
"""

from __future__ import annotations

import base64
import binascii
import math
import os
import re
import unicodedata
from collections.abc import Mapping
from typing import Any, TypeGuard

from dmedia_tui import protocol
from dmedia_tui.durability import MAX_COPIES, MAX_INT
from dmedia_tui.errors import DmediaError
from dmedia_tui.protocol import DIGEST_B32LEN, RANDOM_B32LEN, ContentHash, is_id
from dmedia_tui.views import TYPE_FILE, TYPE_MACHINE, TYPE_STORE

# log-1 event types: data-safety events only (DESIGN.md §2).
LOG_FILE_CORRUPT = "dmedia/file/corrupt"
LOG_FILE_MISSING = "dmedia/file/missing"
LOG_FILE_INCONSISTENT = "dmedia/file/inconsistent"  # _id / bytes / leaf_hashes do not tie
LOG_FILE_UNREADABLE = "dmedia/file/unreadable"  # I/O error reading a copy: retried, not corrupt
LOG_DOC_INVALID = "dmedia/doc/invalid"
LOG_STORE_DOWNGRADE = "dmedia/store/downgrade"
LOG_STORE_PURGE = "dmedia/store/purge"
LOG_STORE_FAILING = "dmedia/store/failing"
LOG_STORE_TRUST = "dmedia/store/trust"  # the user cleared a store's safety flags
LOG_STORE_ACK = "dmedia/store/ack"  # the user acknowledged a store's failure
# The result of a schema/consistency pass, logged when it differs from the last one: the
# newest says how many docs are invalid / inconsistent now, for every machine.
LOG_CHECK_RESULT = "dmedia/check/result"
LOG_TRANSFER_DONE = "dmedia/transfer/done"  # a copy pulled from a peer
LOG_TRANSFER_FAILED = "dmedia/transfer/failed"  # unreachable, dropped: not corruption
LOG_TRANSFER_CORRUPT = "dmedia/transfer/corrupt"  # a leaf from a peer did not match
# A peer this machine must pull from stopped answering (once per outage), and answered
# again: while the newest of the two says unreachable, its stores are not online here.
LOG_PEER_UNREACHABLE = "dmedia/peer/unreachable"
LOG_PEER_REACHABLE = "dmedia/peer/reachable"
LOG_TYPES = frozenset(
    {
        LOG_TRANSFER_DONE,
        LOG_TRANSFER_FAILED,
        LOG_TRANSFER_CORRUPT,
        LOG_PEER_UNREACHABLE,
        LOG_PEER_REACHABLE,
        LOG_FILE_CORRUPT,
        LOG_FILE_MISSING,
        LOG_FILE_INCONSISTENT,
        LOG_FILE_UNREADABLE,
        LOG_DOC_INVALID,
        LOG_STORE_DOWNGRADE,
        LOG_STORE_PURGE,
        LOG_STORE_FAILING,
        LOG_STORE_TRUST,
        LOG_STORE_ACK,
        LOG_CHECK_RESULT,
    }
)
# Log types whose subject is one copy of one file: file_id and store_id must be valid IDs.
_LOG_COPY_TYPES = frozenset({LOG_FILE_CORRUPT, LOG_FILE_MISSING, LOG_FILE_UNREADABLE})

# "user" files are irreplaceable: only they count toward the panic conditions.
ORIGINS = ("user", "paid", "render", "proxy", "cache", "download")
_ORIGINS = frozenset(ORIGINS)

# Store doc fields (DESIGN.md §2), with the value create_store gives when not told.
# None means "unknown" for the string fields.
STORE_FIELDS: dict[str, Any] = {
    "atime": None,  # replaced by int(now)
    "bytes_total": 0,
    "bytes_avail": 0,
    "machine_id": None,
    "label": None,
    "drive_serial": None,
    "drive_model": None,
    "partition_uuid": None,
    "removable": False,
    "internal": False,
    "no_new_copies": False,
}
# Optional store doc fields create_store accepts (absent unless given), all str or None:
#   filesystem_id    identity of the filesystem holding the store (to refuse two stores on
#                    one filesystem: their copies would not be independent); str or int
#   mount_path       where the filesystem was mounted when last seen
#   relative_path    the store folder relative to mount_path ("" = the root of the drive)
#   filesystem_type  e.g. "ext4"; filesystem_label: the filesystem's label
#   drive_bus        e.g. "usb", "ata", "nvme"; drive_vendor, drive_wwn: udev facts
#   partition_label  the GPT partition name
STORE_OPTIONAL_FIELDS = frozenset(
    {
        "filesystem_id",
        "mount_path",
        "relative_path",
        "filesystem_type",
        "filesystem_label",
        "drive_bus",
        "drive_vendor",
        "drive_wwn",
        "partition_label",
    }
)
_STORE_STR_FIELDS = (
    "machine_id",
    "label",
    "drive_serial",
    "drive_model",
    "partition_uuid",
    *sorted(STORE_OPTIONAL_FIELDS - {"filesystem_id"}),
)

_STORE_BOOL_FIELDS = ("removable", "internal", "no_new_copies")

_TYPE_RE = re.compile(r"dmedia/[a-z]+(?:/[a-z]+)*")
_EXT_RE = re.compile(r"[a-z0-9]+(?:\.[a-z0-9]+)?")
_B64_RE = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


# db.base.DAMAGED: the key of the placeholder a backend's page() gives for a damaged row.
DAMAGED = "_damaged"

_KNOWN_TYPES = frozenset({TYPE_FILE, TYPE_STORE, TYPE_MACHINE, *LOG_TYPES})


class SchemaError(DmediaError, ValueError):
    """A constructor was given values that would make an invalid doc."""


# --- small predicates ------------------------------------------------------------------


def _got(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _is_int(value: Any, minimum: int = 0, maximum: int = MAX_INT) -> TypeGuard[int]:
    """An int in [minimum, maximum]: every integer of a doc fits JSON/JavaScript exactly
    (2^53 - 1), so both backends index it and no sum of them overflows SQLite's int64."""
    return type(value) is int and minimum <= value <= maximum


def _is_number(value: Any) -> bool:
    """A finite real number in [0, 2^53 - 1] (bools excluded)."""
    t = type(value)
    return (t is int or (t is float and math.isfinite(value))) and 0 <= value <= MAX_INT


def _int_range_msg(value: Any, maximum: int, minimum: int = 0) -> str:
    """'must be an int >= 0, got -1' or 'must be at most 10, got 1000000'."""
    if type(value) is int and value > maximum:
        return f"must be at most {maximum}, got {_got(value)}"
    return f"must be an int >= {minimum}, got {_got(value)}"


def label_problem(label: Any) -> str | None:
    """Why `label` cannot name a store, or None. A label is shown on one line of a
    terminal: no control characters (newline, ESC...), no lone surrogates (a file name
    that was not UTF-8), not blank, at most 100 characters."""
    if not isinstance(label, str):
        return f"must be a str, got {_got(label)}"
    if not label.strip():
        return "must not be blank"
    if len(label) > 100:
        return f"must be at most 100 characters, got {len(label)}"
    for ch in label:
        if unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp"):
            return f"must not contain control characters, got {_got(label)}"
    return None


def safe_label(name: str) -> str:
    """A usable label made from a folder name: control characters become '?'."""
    clean = "".join(
        "?" if unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp") else ch for ch in name
    )[:100]
    return clean if clean.strip() else "store"


def name_fields(name: str) -> dict[str, str]:
    """`name` (and, when it is not UTF-8, `name_b64`) of a file doc from a file name as
    the OS gave it (str with surrogate escapes for undecodable bytes).

    JSON cannot carry bytes that are not UTF-8: `name` gets a readable form (U+FFFD for
    each bad byte) and `name_b64` the exact bytes, so the name is never lost."""
    raw = os.fsencode(name)
    try:
        return {"name": raw.decode("utf-8")}
    except UnicodeDecodeError:
        return {
            "name": raw.decode("utf-8", "replace"),
            "name_b64": base64.b64encode(raw).decode("ascii"),
        }


def _skip(key: Any) -> bool:
    return isinstance(key, str) and key.startswith("x_")


# --- validators ------------------------------------------------------------------------


def _check_common(doc: dict[str, Any], out: list[str]) -> None:
    _id = doc.get("_id")
    if not isinstance(_id, str) or not _id:
        out.append(f"_id: must be a non-empty str, got {_got(_id)}")
    t = doc.get("type")
    if not isinstance(t, str) or (t not in _KNOWN_TYPES and not _TYPE_RE.fullmatch(t)):
        out.append(f"type: must match dmedia/[a-z]+(/[a-z]+)*, got {_got(t)}")
    time = doc.get("time")
    if type(time) is int and time >= 0:
        pass
    elif "time" not in doc:
        out.append("time: missing")
    elif not _is_number(time):
        out.append(f"time: must be a number >= 0, got {_got(doc['time'])}")
    rev = doc.get("_rev")
    if rev is not None and not isinstance(rev, str):
        out.append(f"_rev: must be a str, got {_got(rev)}")


def _not_dict(doc: Any) -> list[str] | None:
    if isinstance(doc, dict):
        return None
    return [f"doc: must be a JSON object, got {type(doc).__name__} {_got(doc)}"]


def _check_type(doc: dict[str, Any], expected: str, out: list[str]) -> None:
    t = doc.get("type")
    if t != expected and isinstance(t, str) and _TYPE_RE.fullmatch(t):
        out.append(f"type: must be {expected!r}, got {_got(t)}")


def _check_stored_value(sid: str, value: Any, out: list[str]) -> None:
    path = f"stored.{sid}"
    if not isinstance(value, dict):
        out.append(f"{path}: must be an object, got {_got(value)}")
        return
    if "copies" not in value:
        out.append(f"{path}: copies missing")
    elif not _is_int(value["copies"], 0, MAX_COPIES):
        out.append(f"{path}: copies {_int_range_msg(value['copies'], MAX_COPIES)}")
    if "mtime" not in value:
        out.append(f"{path}: mtime missing")
    elif not _is_int(value["mtime"]):
        out.append(f"{path}: mtime {_int_range_msg(value['mtime'], MAX_INT)}")
    if "verified" in value and not _is_int(value["verified"]):
        out.append(f"{path}: verified {_int_range_msg(value['verified'], MAX_INT)}")
    if "pinned" in value and value["pinned"] is not True:
        out.append(f"{path}: pinned must be true when present, got {_got(value['pinned'])}")


# Store IDs already seen valid: a library has few stores and millions of file docs, so
# remembering them saves most of the alphabet checks (bounded, in case of junk floods).
_VALID_STORE_IDS: set[str] = set()


def _is_store_id(key: Any) -> bool:
    if key in _VALID_STORE_IDS:
        return True
    if is_id(key, RANDOM_B32LEN):
        if len(_VALID_STORE_IDS) >= 10_000:
            _VALID_STORE_IDS.clear()
        _VALID_STORE_IDS.add(key)
        return True
    return False


def _check_store_key(where: str, key: Any, out: list[str]) -> bool:
    if _is_store_id(key):
        return True
    if not _skip(key):
        out.append(f"{where}: key {_got(key)} is not a valid store ID")
    return False


def _stored_value_ok(value: Any) -> bool:
    """The fast test of the common case; _check_stored_value explains any failure."""
    if type(value) is not dict:
        return False
    c = value.get("copies")
    m = value.get("mtime")
    if type(c) is not int or not 0 <= c <= MAX_COPIES or type(m) is not int:
        return False
    if not 0 <= m <= MAX_INT:
        return False
    if len(value) == 2:
        return True
    v = value.get("verified", 0)
    return type(v) is int and 0 <= v <= MAX_INT and value.get("pinned", True) is True


def check_file(doc: Any) -> list[str]:
    """Every problem of a `dmedia/file` doc (common rules included)."""
    if not isinstance(doc, dict):
        return _not_dict(doc) or []
    out: list[str] = []
    _check_common(doc, out)
    if out:
        _check_type(doc, TYPE_FILE, out)
    elif doc["type"] != TYPE_FILE:
        out.append(f"type: must be {TYPE_FILE!r}, got {_got(doc['type'])}")
    _id = doc.get("_id")
    if type(_id) is str and _id and not is_id(_id, DIGEST_B32LEN):
        out.append(f"_id: must be a {DIGEST_B32LEN}-character file ID, got {_got(_id)}")
    b = doc.get("bytes")
    if not _is_int(b, 1):
        if "bytes" not in doc:
            out.append("bytes: missing")
        else:
            out.append(f"bytes: {_int_range_msg(b, MAX_INT, 1)}")
    origin = doc.get("origin")
    if type(origin) is not str or origin not in _ORIGINS:
        out.append(f"origin: must be one of {', '.join(ORIGINS)}, got {_got(origin)}")
    atime = doc.get("atime")
    if not _is_int(atime):
        if "atime" not in doc:
            out.append("atime: missing")
        else:
            out.append(f"atime: {_int_range_msg(atime, MAX_INT)}")
    lh = doc.get("leaf_hashes")
    if type(lh) is not str or not lh or not _B64_RE.fullmatch(lh):
        out.append(f"leaf_hashes: must be a non-empty base64 str, got {_got(lh)}")
    stored = doc.get("stored")
    if not isinstance(stored, dict):
        out.append(f"stored: must be an object, got {_got(stored)}")
    else:
        for sid, value in stored.items():
            if sid in _VALID_STORE_IDS and _stored_value_ok(value):
                continue
            if _check_store_key("stored", sid, out):
                _check_stored_value(sid, value, out)
    if "corrupt" in doc:
        corrupt = doc["corrupt"]
        if not isinstance(corrupt, dict) or not corrupt:
            out.append(f"corrupt: must be a non-empty object when present, got {_got(corrupt)}")
        else:
            for sid, value in corrupt.items():
                if not _check_store_key("corrupt", sid, out):
                    continue
                if not isinstance(value, dict) or not _is_number(value.get("time")):
                    out.append(f"corrupt.{sid}: must be {{time: number >= 0}}, got {_got(value)}")
    name = doc.get("name")
    if name is not None and type(name) is not str:
        out.append(f"name: must be a str, got {_got(name)}")
    nb = doc.get("name_b64")
    if nb is not None and (type(nb) is not str or not nb or not _B64_RE.fullmatch(nb)):
        out.append(f"name_b64: must be a non-empty base64 str, got {_got(nb)}")
    ext = doc.get("ext")
    if ext is not None and (type(ext) is not str or not _EXT_RE.fullmatch(ext)):
        out.append(f"ext: must be a lower-case extension without leading dot, got {_got(ext)}")
    return out


def _check_optional_time_dict(doc: dict[str, Any], key: str, out: list[str]) -> dict | None:
    value = doc.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        out.append(f"{key}: must be an object, got {_got(value)}")
        return None
    if not _is_number(value.get("time")):
        out.append(f"{key}.time: must be a number >= 0, got {_got(value.get('time'))}")
    reason = value.get("reason")
    if not isinstance(reason, str):
        out.append(f"{key}.reason: must be a str, got {_got(reason)}")
    return value


def check_store(doc: Any) -> list[str]:
    """Every problem of a `dmedia/store` doc (common rules included)."""
    bad = _not_dict(doc)
    if bad:
        return bad
    out: list[str] = []
    _check_common(doc, out)
    _check_type(doc, TYPE_STORE, out)
    _id = doc.get("_id")
    if isinstance(_id, str) and _id and not is_id(_id, RANDOM_B32LEN):
        out.append(f"_id: must be a {RANDOM_B32LEN}-character store ID, got {_got(_id)}")
    if "copies" not in doc:
        out.append("copies: missing")
    elif not _is_int(doc["copies"], 0, MAX_COPIES):
        out.append(f"copies: {_int_range_msg(doc['copies'], MAX_COPIES)}")
    for key in ("atime", "bytes_total", "bytes_avail"):
        if key in doc and not _is_int(doc[key]):
            out.append(f"{key}: {_int_range_msg(doc[key], MAX_INT)}")
    for key in _STORE_STR_FIELDS:
        value = doc.get(key)
        if value is not None and not isinstance(value, str):
            out.append(f"{key}: must be a str or null, got {_got(value)}")
    label = doc.get("label")
    if isinstance(label, str) and label_problem(label):
        out.append(f"label: {label_problem(label)}")
    fsid = doc.get("filesystem_id")
    if fsid is not None and not isinstance(fsid, str) and type(fsid) is not int:
        out.append(f"filesystem_id: must be a str, an int or null, got {_got(fsid)}")
    mid = doc.get("machine_id")
    if isinstance(mid, str) and not is_id(mid, RANDOM_B32LEN):
        out.append(f"machine_id: must be a {RANDOM_B32LEN}-character machine ID, got {_got(mid)}")
    for key in _STORE_BOOL_FIELDS:
        if key in doc and type(doc[key]) is not bool:
            out.append(f"{key}: must be true or false, got {_got(doc[key])}")
    for key in ("downgraded", "purging"):
        mark = _check_optional_time_dict(doc, key, out)
        if mark is None:
            continue
        if "event" in mark and not is_id(mark["event"], RANDOM_B32LEN):
            out.append(f"{key}.event: must be a log ID, got {_got(mark['event'])}")
        if "pending" in mark and type(mark["pending"]) is not bool:
            out.append(f"{key}.pending: must be true or false, got {_got(mark['pending'])}")
        if "count" in mark and not _is_int(mark["count"]):
            out.append(f"{key}.count: {_int_range_msg(mark['count'], MAX_INT)}")
    failure = _check_optional_time_dict(doc, "failure", out)
    if failure is not None:
        if not _is_int(failure.get("corrupt_count")):
            count = failure.get("corrupt_count")
            out.append(f"failure.corrupt_count: {_int_range_msg(count, MAX_INT)}")
        if "acknowledged" in failure and type(failure["acknowledged"]) is not bool:
            out.append(
                f"failure.acknowledged: must be true or false, got {_got(failure['acknowledged'])}"
            )
        if "acknowledged_time" in failure and not _is_number(failure["acknowledged_time"]):
            out.append(
                "failure.acknowledged_time: must be a number >= 0, "
                f"got {_got(failure['acknowledged_time'])}"
            )
    return out


def check_machine(doc: Any) -> list[str]:
    """Every problem of a `dmedia/machine` doc (common rules included)."""
    bad = _not_dict(doc)
    if bad:
        return bad
    out: list[str] = []
    _check_common(doc, out)
    _check_type(doc, TYPE_MACHINE, out)
    _id = doc.get("_id")
    if isinstance(_id, str) and _id and not is_id(_id, RANDOM_B32LEN):
        out.append(f"_id: must be a {RANDOM_B32LEN}-character machine ID, got {_got(_id)}")
    hostname = doc.get("hostname")
    if not isinstance(hostname, str):
        out.append(f"hostname: must be a str, got {_got(hostname)}")
    if "atime" not in doc:
        out.append("atime: missing")
    elif not _is_int(doc["atime"]):
        out.append(f"atime: {_int_range_msg(doc['atime'], MAX_INT)}")
    stores = doc.get("stores")
    if not isinstance(stores, list):
        out.append(f"stores: must be a list of store IDs, got {_got(stores)}")
    else:
        for i, sid in enumerate(stores):
            if not is_id(sid, RANDOM_B32LEN):
                out.append(f"stores[{i}]: must be a store ID, got {_got(sid)}")
    if "peer" in doc:
        _check_machine_peer(doc["peer"], out)
    return out


def _check_machine_peer(peer: Any, out: list[str]) -> None:
    """`peer: {fingerprint, addresses, cert}` (DESIGN.md §6), published on heartbeat."""
    if not isinstance(peer, dict):
        out.append(f"peer: must be an object, got {_got(peer)}")
        return
    fp = peer.get("fingerprint")
    if not (isinstance(fp, str) and len(fp) == 64 and all(c in "0123456789abcdef" for c in fp)):
        out.append(f"peer.fingerprint: must be 64 lowercase hex digits, got {_got(fp)}")
    addrs = peer.get("addresses")
    if not isinstance(addrs, list) or not all(
        isinstance(a, str) and a.rpartition(":")[2].isdigit() for a in addrs
    ):
        out.append(f"peer.addresses: must be a list of host:port strings, got {_got(addrs)}")
    cert = peer.get("cert")
    if cert is not None and not isinstance(cert, str):
        out.append(f"peer.cert: must be a PEM certificate string, got {_got(cert)}")


def check_log(doc: Any) -> list[str]:
    """Every problem of a `log-1` event doc."""
    bad = _not_dict(doc)
    if bad:
        return bad
    out: list[str] = []
    _check_common(doc, out)
    _id = doc.get("_id")
    if isinstance(_id, str) and _id and not is_id(_id, RANDOM_B32LEN):
        out.append(f"_id: must be a {RANDOM_B32LEN}-character log ID, got {_got(_id)}")
    t = doc.get("type")
    if not isinstance(t, str):
        t = None
    elif _TYPE_RE.fullmatch(t) and t not in LOG_TYPES:
        out.append(f"type: not a log event type, got {_got(t)}")
    mid = doc.get("machine_id")
    if not is_id(mid, RANDOM_B32LEN):
        out.append(f"machine_id: must be a {RANDOM_B32LEN}-character machine ID, got {_got(mid)}")
    fid, sid = doc.get("file_id"), doc.get("store_id")
    if t in _LOG_COPY_TYPES:
        if not is_id(fid, DIGEST_B32LEN):
            out.append(f"file_id: must be a file ID, got {_got(fid)}")
        if not is_id(sid, RANDOM_B32LEN):
            out.append(f"store_id: must be a store ID, got {_got(sid)}")
    elif isinstance(t, str) and t.startswith("dmedia/store/") and not is_id(sid, RANDOM_B32LEN):
        out.append(f"store_id: must be a store ID, got {_got(sid)}")
    if "count" in doc and not _is_int(doc["count"]):
        out.append(f"count: {_int_range_msg(doc['count'], MAX_INT)}")
    reason = doc.get("reason")
    if reason is not None and not isinstance(reason, str):
        out.append(f"reason: must be a str, got {_got(reason)}")
    errors = doc.get("errors")
    if errors is not None and (
        not isinstance(errors, list) or not all(isinstance(e, str) for e in errors)
    ):
        out.append(f"errors: must be a list of str, got {_got(errors)}")
    return out


_CHECKERS = {TYPE_FILE: check_file, TYPE_STORE: check_store, TYPE_MACHINE: check_machine}


def check_doc(doc: Any) -> list[str]:
    """Every problem of any doc of `dmedia-1` or `log-1`, dispatching on its `type`.

    Docs of other `dmedia/...` types (from other tools or newer versions) get the common
    rules only.
    """
    bad = _not_dict(doc)
    if bad:
        return bad
    if isinstance(doc.get(DAMAGED), str):  # a stored row the backend could not decode
        return [f"doc: damaged: {doc[DAMAGED]}"]
    _id = doc.get("_id")
    if doc.get("_deleted") is True or (
        isinstance(_id, str) and _id.startswith(("_design/", "_local/"))
    ):
        return []
    t = doc.get("type")
    if not isinstance(t, str):
        t = None
    checker = _CHECKERS.get(t)
    if checker is not None:
        return checker(doc)
    if t in LOG_TYPES:
        return check_log(doc)
    out: list[str] = []
    _check_common(doc, out)
    return out


def check_file_consistency(doc: Any) -> list[str]:
    """The cryptographic tie of `_id`, `bytes` and `leaf_hashes`: [] or one message.

    The message names the distinct failure: bad base64, a length that is not a multiple of
    30, a leaf count that does not fit `bytes`, or a root hash that is not `_id`.
    """
    if not isinstance(doc, dict):
        return [f"doc: must be a JSON object, got {type(doc).__name__}"]
    file_id, size, lh = doc.get("_id"), doc.get("bytes"), doc.get("leaf_hashes")
    if not is_id(file_id, DIGEST_B32LEN):
        return [f"_id: not a file ID, got {_got(file_id)}"]
    if not _is_int(size, 1):
        return [f"bytes: must be an int >= 1, got {_got(size)}"]
    if not isinstance(lh, str):
        return [f"leaf_hashes: not valid base64, got {_got(lh)}"]
    try:
        raw = protocol.decode_leaf_hashes(lh)
    except protocol.ProtocolError:
        return [f"leaf_hashes: not valid base64, got {_got(lh)}"]
    try:
        protocol.check_root_hash(file_id, size, raw)
    except protocol.LeafHashesLengthError:
        return [f"leaf_hashes: {len(raw)} bytes, not a multiple of {protocol.DIGEST_BYTES}"]
    except protocol.LeafCountError:
        n, expected = len(raw) // protocol.DIGEST_BYTES, protocol.leaf_count(size)
        return [f"leaf_hashes: {n} leaf hashes for {size} bytes, expected {expected}"]
    except protocol.RootHashError:
        return ["_id: root hash of bytes and leaf_hashes does not match the file ID"]
    except protocol.ProtocolError as e:  # any future distinct failure
        return [f"_id: {e}"]
    return []


# Extensions already seen valid (a library has a few dozen), as _VALID_STORE_IDS.
_VALID_EXTS: set[str] = set()


def file_doc_sound(doc: Any) -> bool:
    """True only when `check_doc(doc)` and `check_file_consistency(doc)` both find
    nothing: the common case of the check pass (a clean file doc) in one pass, the root
    hash compared as a number. False says nothing about what is wrong: the full
    validators then name it. Anything unusual (a `corrupt` mark, `name_b64`, a store ID
    not seen valid yet, a key missing) is left to them. Never raises.
    """
    if type(doc) is not dict:
        return False
    try:
        if doc["type"] != TYPE_FILE or DAMAGED in doc or "corrupt" in doc or "name_b64" in doc:
            return False
        t = doc["time"]
        if type(t) is int:
            if t < 0:
                return False
        elif type(t) is not float or not 0 <= t <= MAX_INT:  # NaN and inf fail too
            return False
        size = doc["bytes"]
        atime = doc["atime"]
        if type(size) is not int or type(atime) is not int:
            return False
        if not (1 <= size <= MAX_INT and 0 <= atime <= MAX_INT):
            return False
        origin = doc["origin"]
        if type(origin) is not str or origin not in _ORIGINS:
            return False
        stored = doc["stored"]
        if type(stored) is not dict:
            return False
        valid_sids = _VALID_STORE_IDS
        for sid, value in stored.items():
            if sid not in valid_sids or type(value) is not dict:
                return False
            c = value["copies"]
            m = value["mtime"]
            if type(c) is not int or type(m) is not int:
                return False
            if not (0 <= c <= MAX_COPIES and 0 <= m <= MAX_INT):
                return False
            if len(value) != 2:
                v = value.get("verified", 0)
                if type(v) is not int or not 0 <= v <= MAX_INT:
                    return False
                if value.get("pinned", True) is not True:
                    return False
        rev = doc.get("_rev")
        if rev is not None and type(rev) is not str:
            return False
        name = doc.get("name")
        if name is not None and type(name) is not str:
            return False
        ext = doc.get("ext")
        if ext is not None and ext not in _VALID_EXTS:
            if type(ext) is not str or not _EXT_RE.fullmatch(ext):
                return False
            if len(_VALID_EXTS) >= 1000:
                _VALID_EXTS.clear()
            _VALID_EXTS.add(ext)
        lh = doc["leaf_hashes"]
        if type(lh) is not str:
            return False
        # Base64 of whole 30-byte digests has no padding: strict mode refuses any
        # character but the 64, and 4 of them make 3 bytes.
        raw = binascii.a2b_base64(lh, strict_mode=True)
        if len(raw) * 4 != len(lh) * 3:
            return False
        if len(raw) != protocol.DIGEST_BYTES * (-(-size // protocol.LEAF_SIZE)):
            return False
        return protocol.root_hash_matches(doc["_id"], size, raw)
    except (KeyError, ValueError, TypeError):  # binascii.Error is a ValueError
        return False


# --- constructors ----------------------------------------------------------------------


def _raise_if(problems: list[str], what: str) -> None:
    if problems:
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise SchemaError(f"invalid {what}: {problems[0]}{more}")


def ext_of(name: str) -> str | None:
    """The lower-case extension of a file name ('MVI_5751.MOV' -> 'mov'), or None."""
    ext = os.path.splitext(name)[1][1:].lower()
    return ext if ext and _EXT_RE.fullmatch(ext) else None


def create_stored_value(copies: int, mtime: int | float, verified: float | None = None) -> dict:
    """One `stored[store_id]` value: what a copy is worth, its mtime, when it was verified."""
    value: dict[str, Any] = {"copies": copies, "mtime": _int_time(mtime, "mtime")}
    if verified is not None:
        value["verified"] = _int_time(verified, "verified")
    out: list[str] = []
    _check_stored_value("value", value, out)
    _raise_if(out, "stored value")
    return value


def _int_time(value: Any, what: str) -> int:
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        raise SchemaError(f"{what} must be a number >= 0, got {_got(value)}")
    return int(value)


def create_file(
    now: float,
    content_hash: ContentHash | tuple[str, int, bytes],
    stored: Mapping[str, Mapping[str, Any]],
    origin: str = "user",
    name: str | None = None,
    ext: str | None = None,
) -> dict:
    """A new `dmedia/file` doc. `ext` defaults to the lower-case extension of `name`."""
    if isinstance(content_hash, ContentHash):
        file_id, size, leaf_hashes = (
            content_hash.id,
            content_hash.file_size,
            content_hash.leaf_hashes,
        )
    else:
        file_id, size, leaf_hashes = content_hash
    doc: dict[str, Any] = {
        "_id": file_id,
        "type": TYPE_FILE,
        "time": now,
        "atime": _int_time(now, "now"),
        "bytes": size,
        "origin": origin,
        "leaf_hashes": protocol.encode_leaf_hashes(leaf_hashes),
        "stored": {sid: dict(value) for sid, value in stored.items()},
    }
    if name is not None:
        doc.update(name_fields(name) if isinstance(name, str) else {"name": name})
        if ext is None and isinstance(name, str):
            ext = ext_of(doc["name"])
    if ext is not None:
        doc["ext"] = ext.lower() if isinstance(ext, str) else ext
    _raise_if(check_file(doc), "file doc")
    return doc


def create_store(
    now: float, store_id: str, copies: int = 1, label: str | None = None, **fields: Any
) -> dict:
    """A new `dmedia/store` doc with every field of DESIGN.md §2.

    `fields` may set any of STORE_FIELDS, any of STORE_OPTIONAL_FIELDS, or `x_*` keys;
    anything else is a SchemaError (a typo must not silently become a field).
    """
    unknown = sorted(
        k
        for k in fields
        if k not in STORE_FIELDS and k not in STORE_OPTIONAL_FIELDS and not _skip(k)
    )
    if unknown:
        raise SchemaError(f"unknown store field(s): {', '.join(unknown)}")
    doc: dict[str, Any] = {"_id": store_id, "type": TYPE_STORE, "time": now, "copies": copies}
    for key, default in STORE_FIELDS.items():
        doc[key] = fields.pop(key, default)
    if doc["atime"] is None:
        doc["atime"] = _int_time(now, "now")
    if label is not None:
        doc["label"] = label
    doc.update(fields)
    _raise_if(check_store(doc), "store doc")
    return doc


def create_machine(
    now: float,
    machine_id: str,
    hostname: str,
    stores: list[str],
    peer: dict[str, Any] | None = None,
) -> dict:
    """A `dmedia/machine` doc: this machine's heartbeat, the stores connected to it and,
    when given, how its peers reach and trust it."""
    doc = {
        "_id": machine_id,
        "type": TYPE_MACHINE,
        "time": now,
        "atime": _int_time(now, "now"),
        "hostname": hostname,
        "stores": list(stores),
    }
    if peer is not None:
        doc["peer"] = peer
    _raise_if(check_machine(doc), "machine doc")
    return doc


def create_log(
    now: float, type: str, machine_id: str, *, log_id: str | None = None, **fields: Any
) -> dict:
    """A `log-1` event doc; its `_id` sorts by `now`. Log docs are never edited.

    `log_id`: an ID chosen in advance (recorded with the intent of a long operation), so
    that logging the event again after a crash is a conflict, not a second event.
    """
    reserved = {"_id", "_rev", "type", "time", "machine_id"} & fields.keys()
    if reserved:
        raise SchemaError(f"create_log sets {', '.join(sorted(reserved))} itself")
    _id = protocol.log_id(now) if log_id is None else log_id
    doc = {"_id": _id, "type": type, "time": now, "machine_id": machine_id}
    doc.update(fields)
    _raise_if(check_log(doc), "log doc")
    return doc
