"""What the screens show, loaded off the UI thread, and how numbers are written.

The screens never query the database themselves: a loader here calls the core's methods
(MetaStore, Library named queries) in a worker thread and returns plain frozen data, which
the UI thread then renders. Formatting helpers are pure so widgets and tests agree.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import humanize

from dmedia_tui.durability import rank
from dmedia_tui.health import Health
from dmedia_tui.smart import warnings_by_store
from dmedia_tui.views import FileView, store_label, text_value, time_value

if TYPE_CHECKING:
    from dmedia_tui.metastore import MetaStore

Doc = dict[str, Any]

EVENTS_ON_DASHBOARD = 10
LOADING = "loading…"  # what a panel says until its first data has come
PAGE = 100


# --- formatting ------------------------------------------------------------------------


def fmt_size(n: int | None) -> str:
    """Bytes as '1.2 TB' (decimal units, like drive labels)."""
    if not n:
        return "0 B"
    return humanize.naturalsize(n, format="%.1f")


def fmt_count(n: int) -> str:
    """Counts as '41k' when space is short."""
    if n < 10_000:
        return f"{n:,}"
    if n < 1_000_000:
        return f"{n / 1000:.0f}k"
    return f"{n / 1_000_000:.1f}M"


def fmt_age(then: float | None, now: float) -> str:
    """How long ago, short: 'now', '5m', '3h', '2d', 'never'."""
    if then is None:
        return "never"
    delta = now - then
    if delta < 60:
        return "now"
    if delta < 3600:
        return f"{int(delta // 60)}m"
    if delta < 86400:
        return f"{int(delta // 3600)}h"
    return f"{int(delta // 86400)}d"


def fmt_when(t: float | None, now: float) -> str:
    """Clock time for the last day, else the date: 6 cells, e.g. '13:58 ' or '23 Nov'."""
    if t is None:
        return "--:-- "
    if abs(now - t) < 20 * 3600:
        return time.strftime("%H:%M ", time.localtime(t))
    return time.strftime("%d %b", time.localtime(t))


def fmt_datetime(t: float | None) -> str:
    if t is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))


def bar(fraction: float, width: int) -> str:
    """A left-filled bar of full and light blocks, `width` cells."""
    fraction = min(1.0, max(0.0, fraction))
    full = round(fraction * width)
    return "█" * full + "░" * (width - full)


def short_type(event_type: str) -> str:
    """'dmedia/file/corrupt' -> 'file/corrupt'."""
    return event_type.removeprefix("dmedia/")


def fmt_eta(seconds: float | None) -> str:
    if seconds is None or seconds < 0:
        return ""
    if seconds < 60:
        return f"ETA {int(seconds)} s"
    if seconds < 3600:
        return f"ETA {int(seconds // 60)} min"
    return f"ETA {seconds / 3600:.1f} h"


def fmt_rate(bps: float) -> str:
    return f"{fmt_size(int(bps))}/s"


# --- events ----------------------------------------------------------------------------


@dataclass(frozen=True)
class EventLine:
    """One log doc as a line: when, what, about whom."""

    id: str
    time: float | None
    type: str
    subject: str
    file_id: str | None = None
    store_id: str | None = None

    @property
    def short(self) -> str:
        return short_type(self.type)


def event_line(doc: Doc, labels: dict[str, str], names: dict[str, str]) -> EventLine:
    """Describe a log doc for a one-line list, using store labels and file names."""
    fid = doc.get("file_id") if isinstance(doc.get("file_id"), str) else None
    sid = doc.get("store_id") if isinstance(doc.get("store_id"), str) else None
    parts = []
    if fid:
        parts.append(names.get(fid) or fid[:12])
    if sid:
        label = labels.get(sid) or text_value(doc.get("label")) or store_label(None, sid)
        parts.append(f"on {label}" if fid else str(label))
    extra = []
    if doc.get("reason"):
        extra.append(str(doc["reason"]))
    if isinstance(doc.get("count"), int) and not fid:
        n = doc["count"]
        extra.append(f"{n:,} file" if n == 1 else f"{n:,} files")
    subject = " ".join(parts) or str(doc.get("doc_id") or "")
    if extra:
        subject += f" ({', '.join(extra)})"
    t = doc.get("time")
    return EventLine(
        id=str(doc.get("_id", "")),
        time=time_value(t),
        type=str(doc.get("type", "?")),
        subject=subject,
        file_id=fid,
        store_id=sid,
    )


def _names(ms: MetaStore, file_ids: Iterable[str]) -> dict[str, str]:
    ids = sorted(set(file_ids))
    if not ids:
        return {}
    out = {}
    for fid, doc in zip(ids, ms.docs(ids), strict=True):
        if doc and isinstance(doc.get("name"), str):
            out[fid] = doc["name"]
    return out


def _labels(ms: MetaStore) -> dict[str, str]:
    return {s["_id"]: store_label(s) for s in ms.stores()}


def load_events(
    ms: MetaStore,
    limit: int = 200,
    *,
    types: list[str] | None = None,
    store_id: str | None = None,
    file_id: str | None = None,
    labels: dict[str, str] | None = None,
    cursor: str | None = None,
) -> tuple[EventLine, ...]:
    """Newest first, described; `cursor`: the ID of the last event of the previous page."""
    docs = ms.events(
        limit, newest_first=True, types=types, store_id=store_id, file_id=file_id, cursor=cursor
    )
    labels = labels if labels is not None else _labels(ms)
    names = _names(ms, (d["file_id"] for d in docs if isinstance(d.get("file_id"), str)))
    return tuple(event_line(d, labels, names) for d in docs)


# --- dashboard -------------------------------------------------------------------------


@dataclass(frozen=True)
class DashboardData:
    health: Health
    events: tuple[EventLine, ...] = ()
    labels: dict[str, str] = field(default_factory=dict)
    # SMART warnings of drives holding stores: {store_id: (warning|failing, reasons)}
    smart: dict[str, tuple[str, str]] = field(default_factory=dict)


def load_dashboard(ms: MetaStore, local: Iterable[str] | None) -> DashboardData:
    """Everything the dashboard shows, in one pass (run in a worker thread)."""
    health = ms.health(local=local, with_verification=True)
    labels = {r.store_id: r.label for r in health.store_rows}
    events = load_events(ms, EVENTS_ON_DASHBOARD, labels=labels)
    return DashboardData(health, events, labels, warnings_by_store(ms.config.data_dir))


# --- store and file detail -------------------------------------------------------------


@dataclass(frozen=True)
class FileRow:
    id: str
    name: str
    bytes: int
    durability: int
    stores: int
    copies_here: int
    verified: int | None
    origin: str
    key: tuple[int, str]  # (rank, _id): the paging cursor


def file_row(doc: Doc, store_id: str) -> FileRow | None:
    """The row of a file doc (read through FileView: a malformed field shows as nothing,
    it never fails the page); None when it is not a doc at all."""
    view = FileView.of(doc)
    if view is None:
        return None
    here = view.copy_on(store_id)
    return FileRow(
        id=view.id,
        name=view.name or view.id[:16],
        bytes=view.bytes,
        durability=view.durability,
        stores=len(view.copies),
        copies_here=here.copies if here else 0,
        verified=here.verified if here else None,
        origin=view.origin,
        key=(rank(doc), view.id),
    )


def load_files_page(
    ms: MetaStore, store_id: str, after: tuple[int, str] | None = None, limit: int = PAGE
) -> tuple[FileRow, ...]:
    """One page of the files on a store, most fragile first."""
    rows = (file_row(d, store_id) for d in ms.files_by_store(store_id, limit, after))
    return tuple(r for r in rows if r is not None)


@dataclass(frozen=True)
class Location:
    store_id: str
    label: str
    copies: int
    mtime: int | None
    verified: int | None
    pinned: bool
    online: bool


@dataclass(frozen=True)
class FileData:
    doc: Doc
    view: FileView
    locations: tuple[Location, ...]
    corrupt: tuple[tuple[str, float | None], ...]  # (store label, time)
    events: tuple[EventLine, ...]
    now: float


def load_file(ms: MetaStore, file_id: str, online: set[str] | None = None) -> FileData | None:
    """A file doc with its locations, corrupt history and events; None if unknown."""
    doc = ms.file_doc(file_id)
    view = FileView.of(doc)
    if doc is None or view is None:
        return None
    labels = _labels(ms)
    online = online or set()

    def label(sid: str) -> str:
        return labels.get(sid) or store_label(None, sid)

    locs = tuple(
        Location(
            c.store_id,
            label(c.store_id),
            c.copies,
            c.mtime,
            c.verified,
            c.pinned,
            c.store_id in online,
        )
        for c in sorted(view.copies, key=lambda c: labels.get(c.store_id, c.store_id))
    )
    corrupt = tuple((label(sid), when) for sid, when in view.corrupt)
    events = load_events(ms, 50, file_id=file_id, labels=labels)
    return FileData(doc, view, locs, corrupt, events, ms.now())
