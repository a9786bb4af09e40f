"""Is the library safe? A pure function of the placement summary, store and machine docs.

`assess(...)` -> `Health(alerts, histogram, store_rows, ...)`. No I/O, no clock: `now`
and the set of online stores are arguments, so every rule is unit-tested exhaustively
(tests/test_health.py).

The alerts, worst first (each rule is written out in the docstring of its function):
- NO_KNOWN_COPY (critical): user files recorded on no store at all.
- INSUFFICIENT_STORAGE (panic): recently seen stores cannot hold target copies of all
  user files (`_storage_alert`: a capacity bound in durability-bytes).
- DISCONNECTED_ONLY_COPY (panic): user files whose every recorded copy is on a store that
  is not online; one alert per set of places (machine to boot / drive to plug).
- DRIVE_FAILURE (panic): a store with `failure`, until acknowledged.
- SHARED_FILESYSTEM, METADATA_INVALID (warning); LOW_DURABILITY (info: work in progress).
`Health.exit_code`: 0 no alert, 1 only info/warnings, 2 any panic or worse.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import humanize

from dmedia_tui.config import DAY, Thresholds
from dmedia_tui.db.base import Doc, PlacementRow, VerificationStats
from dmedia_tui.protocol import is_store_id
from dmedia_tui.transitions import REASON_IO_ERRORS, REASON_SMART
from dmedia_tui.views import MachineView, StoreView, store_label, time_value

# Stable alert codes (scripts and harnesses match on these).
INSUFFICIENT_STORAGE = "INSUFFICIENT_STORAGE"
DISCONNECTED_ONLY_COPY = "DISCONNECTED_ONLY_COPY"
DRIVE_FAILURE = "DRIVE_FAILURE"
LOW_DURABILITY = "LOW_DURABILITY"
NO_KNOWN_COPY = "NO_KNOWN_COPY"
SHARED_FILESYSTEM = "SHARED_FILESYSTEM"
METADATA_INVALID = "METADATA_INVALID"
DATABASE_OFFLINE = "DATABASE_OFFLINE"
STORE_UNSAFE = "STORE_UNSAFE"
DRIVE_READ_ERRORS = "DRIVE_READ_ERRORS"


class Severity(enum.IntEnum):
    INFO = 1  # work in progress, nothing to do
    WARNING = 2  # look when convenient
    PANIC = 3  # the user must act
    CRITICAL = 4  # data may already be lost


class StoreState(enum.StrEnum):
    OK = "ok"
    DOWNGRADED = "downgraded"
    FAILING = "failing"
    OFFLINE = "offline"
    STALE = "stale"


@dataclass(frozen=True)
class Alert:
    code: str
    severity: Severity
    message: str  # one line: what is wrong
    action: str  # one line: what to do
    store_ids: tuple[str, ...] = ()
    files: int = 0
    bytes: int = 0
    acknowledgeable: bool = False
    # The placement keys of the files concerned (for drill-down: files_by_placement).
    placements: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "severity": self.severity.name.lower(),
            "message": self.message,
            "action": self.action,
            "store_ids": list(self.store_ids),
            "files": self.files,
            "bytes": self.bytes,
        }


@dataclass(frozen=True)
class Bucket:
    """User files with this durability (3 means 3 or more)."""

    durability: int
    files: int
    bytes: int


@dataclass(frozen=True)
class StoreRow:
    store_id: str
    label: str
    state: StoreState
    online: bool
    copies: int  # the weight of a copy there (0 when downgraded or failing)
    machine_id: str | None
    machine_name: str | None
    removable: bool
    internal: bool
    drive_serial: str | None
    bytes_total: int
    bytes_avail: int
    files: int  # every file with an entry for this store
    bytes: int
    user_files: int
    last_seen: int | None  # store atime
    failure_acknowledged: bool = False
    corrupt_count: int = 0
    verification: VerificationStats | None = None
    # Connected on a machine that is on but whose peer server does not answer this one:
    # the address tried (the store is not online here).
    unreachable_at: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "_id": self.store_id,
            "label": self.label,
            "state": self.state.value,
            "online": self.online,
            "copies": self.copies,
            "machine_id": self.machine_id,
            "machine": self.machine_name,
            "removable": self.removable,
            "internal": self.internal,
            "drive_serial": self.drive_serial,
            "bytes_total": self.bytes_total,
            "bytes_avail": self.bytes_avail,
            "files": self.files,
            "bytes": self.bytes,
            "user_files": self.user_files,
            "last_seen": self.last_seen,
            "failure_acknowledged": self.failure_acknowledged,
            "corrupt_count": self.corrupt_count,
            "unreachable_at": self.unreachable_at,
        }


@dataclass(frozen=True)
class Health:
    alerts: tuple[Alert, ...]
    histogram: tuple[Bucket, Bucket, Bucket, Bucket]
    store_rows: tuple[StoreRow, ...]
    files: int  # user files
    bytes: int  # user bytes
    now: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def worst(self) -> Severity | None:
        return max((a.severity for a in self.alerts), default=None)

    @property
    def exit_code(self) -> int:
        """0 healthy, 1 low durability (or other info/warnings) only, 2 any panic."""
        worst = self.worst
        if worst is None:
            return 0
        return 2 if worst >= Severity.PANIC else 1

    def to_json(self) -> dict[str, Any]:
        return {
            "alerts": [a.to_json() for a in self.alerts],
            "histogram": {str(b.durability): b.files for b in self.histogram},
            "histogram_bytes": {str(b.durability): b.bytes for b in self.histogram},
            "stores": [r.to_json() for r in self.store_rows],
            "files": self.files,
            "bytes": self.bytes,
            "time": self.now,
        }


# --- reading docs defensively ----------------------------------------------------------
#
# Docs come from a database other machines (and other versions) write to. A field with the
# wrong type is treated as absent, never as an exception: health must always render.

STALE_AFTER = DAY  # a store not online and unseen longer than this shows as STALE


def _int(value: Any, default: int = 0) -> int:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value):
        return int(value)
    return default


def _parse_placement(key: Any, valid: dict[str, bool] | None = None) -> list[tuple[str, int]]:
    """durability.parse_placement, but junk parts are skipped instead of raising.

    `valid` memoises store ID validation across the rows of one summary."""
    if not isinstance(key, str) or not key:
        return []
    valid = {} if valid is None else valid
    out: dict[str, int] = {}
    for part in key.split(","):
        sid, sep, c = part.partition(":")
        ok = valid.get(sid)
        if ok is None:
            ok = valid[sid] = is_store_id(sid)
        if not sep or not ok:
            continue
        try:
            copies = int(c)
        except ValueError:
            copies = 0
        out[sid] = out.get(sid, 0) + max(0, copies)
    return sorted(out.items())


def _fresh(atime: float | None, now: float, window: float) -> bool:
    """Seen within `window` seconds of now (inclusive). A time in the future (another
    machine's clock runs ahead, or this command runs with DMEDIA_NOW in the past) counts as
    fresh: wrongly calling a connected store offline would send the user on an errand."""
    return atime is not None and now - atime <= window


def _files(n: int) -> str:
    return f"{n:,} file" if n == 1 else f"{n:,} files"


def _have(n: int) -> str:
    return "has" if n == 1 else "have"


def _be(n: int) -> str:
    return "is" if n == 1 else "are"


def _size(n: int) -> str:
    return humanize.naturalsize(n)


def _sort_alerts(alerts: list[Alert]) -> tuple[Alert, ...]:
    """Worst first, then by code, then most files first (deterministic to the last tie)."""
    return tuple(
        sorted(alerts, key=lambda a: (-a.severity, a.code, -a.files, a.store_ids, a.message))
    )


# --- online stores ---------------------------------------------------------------------


def online_store_ids(
    machines: list[Doc],
    now: float,
    thresholds: Thresholds,
    local: set[str] | frozenset[str] = frozenset(),
    this_machine: str | None = None,
    unreachable: Mapping[str, str] | None = None,
) -> set[str]:
    """Stores we can count on reaching right now.

    `local` (the stores this machine has connected, as found on its disks now) plus every
    valid store ID listed in `stores` of *another* machine's doc whose heartbeat `atime` is
    at most `thresholds.heartbeat_fresh` seconds old (the boundary itself is fresh; future
    times are fresh too, see `_fresh`). The doc of `this_machine` is skipped: for its own
    stores, what the disk says now beats what its last heartbeat said (a folder that
    vanished is offline at once). Malformed machine docs and junk entries are ignored.
    A machine in `unreachable` (its peer server stopped answering this one: ID -> the
    address tried) is on, but its stores cannot feed this machine: they are not online.
    """
    online = set(local)
    cut_off = unreachable or {}
    for doc in machines if isinstance(machines, list | tuple) else ():
        m = MachineView.of(doc)
        if m is None or (this_machine is not None and m.id == this_machine):
            continue
        if m.id in cut_off:
            continue
        if _fresh(m.atime, now, thresholds.heartbeat_fresh):
            online.update(m.stores)
    return online


# --- the assessment --------------------------------------------------------------------


@dataclass(frozen=True)
class _Group:
    """One placement group of the summary, parsed (durability and stores computed once)."""

    placement: tuple[tuple[str, int], ...]
    count: int
    bytes: int
    user: bool = True
    durability: int = field(init=False)
    store_ids: frozenset[str] = field(init=False)

    @property
    def key(self) -> str:
        """The placement key as the database groups by it (durability.placement_key)."""
        return ",".join(f"{sid}:{c}" for sid, c in self.placement)

    def __post_init__(self) -> None:
        object.__setattr__(self, "durability", sum(c for _, c in self.placement))
        object.__setattr__(self, "store_ids", frozenset(sid for sid, _ in self.placement))


def _groups(summary: Any) -> list[_Group]:
    """Every group of the summary, parsed; malformed and empty rows are skipped."""
    out = []
    valid: dict[str, bool] = {}
    for row in summary if isinstance(summary, list | tuple) else ():
        count = max(0, _int(getattr(row, "count", 0)))
        if count:
            placement = tuple(_parse_placement(getattr(row, "placement", ""), valid))
            size = max(0, _int(getattr(row, "bytes", 0)))
            out.append(_Group(placement, count, size, getattr(row, "origin", None) == "user"))
    return out


def _histogram(groups: list[_Group]) -> tuple[Bucket, Bucket, Bucket, Bucket]:
    files = [0, 0, 0, 0]
    size = [0, 0, 0, 0]
    for g in groups:
        b = min(3, g.durability)
        files[b] += g.count
        size[b] += g.bytes
    return tuple(Bucket(i, files[i], size[i]) for i in range(4))  # type: ignore[return-value]


_ORDINALS = {1: "first", 2: "second", 3: "third", 4: "fourth", 5: "fifth"}


def _filesystems(pairs: Any) -> dict[str, str]:
    """Store ID -> a representative of its filesystem, from pairs of stores that share one
    ((a, b) + (b, c) -> {a, b, c}). Stores in no pair are their own filesystem (absent)."""
    parent: dict[str, str] = {}

    def find(x: str) -> str:
        while parent.setdefault(x, x) != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for pair in pairs if isinstance(pairs, list | tuple | set) else ():
        if not (isinstance(pair, list | tuple) and len(pair) == 2):
            continue
        a, b = pair
        if not (isinstance(a, str) and isinstance(b, str)) or a == b:
            continue
        ra, rb = find(a), find(b)
        if ra != rb:
            parent[max(ra, rb)] = min(ra, rb)
    return {x: find(x) for x in parent}


def recently_seen(s: StoreView, online: set[str], now: float, th: Thresholds) -> bool:
    """Does the store count as storage now? Online, or seen less than
    `store_downgrade_after` ago: the same boundary as the downgrade policy
    (MetaStore.run_time_policies downgrades at age >= store_downgrade_after), so at no
    instant is a store both due for downgrade and counted as recent storage."""
    if s.id in online:
        return True
    return s.atime is not None and now - s.atime < th.store_downgrade_after


def _storage_alert(
    groups: list[_Group],
    stores: dict[str, StoreView],
    now: float,
    online: set[str],
    th: Thresholds,
    extra: dict[str, Any],
    shared: dict[str, str] | None = None,
) -> Alert | None:
    """INSUFFICIENT_STORAGE: can the recently seen stores hold `target` copies of every
    user file?

    The rule, in durability-bytes (a copy of b bytes on a store of weight w is worth w*b):
    let U = total bytes of user files and k = target_copies. The library needs k*U.
    Storage is counted per *place*: a filesystem (stores that share one, see `shared`,
    are one place: their free space is there once, and copies on them fail together) or
    a store on its own filesystem. A store counts when it is recent (`recently_seen`):
    - a place with a store that takes new copies (transitions.takes_new_copies: not
      failing, not `no_new_copies`, not downgraded, weight >= 1), of best weight w, can
      hold each user file at most once, in the space its user copies already use plus
      its free space above the reserve (counted once), so it offers
      min(w, k) * min(U, held + max(0, avail - reserve(total)));
    - a place whose stores take no new copies offers only what the present copies on its
      stores that are not failing are counted for (per file, the best one of the place:
      min(copies, k) * bytes; a downgraded store's copies count 0);
    - stores not seen recently offer nothing (they are downgraded at that same age).
    The alert fires when the offers sum to less than k*U. Summing per file shows the
    condition is necessary (no placement can do better), and with weights of 1 it is also
    sufficient up to whole-file granularity: this is the classic bound for spreading k
    replicas over bins that may each hold one replica of an item. "Too few distinct
    places" is the special case: n weight-1 places offer at most n*U < k*U.
    Files with no known copy still count in U: they need room once found. No user files,
    no alert (nothing to protect, so even an empty library with one store is healthy).
    """
    k = th.target_copies
    shared = shared or {}
    total_u = sum(g.bytes for g in groups)

    def place(sid: str) -> str:
        return shared.get(sid, sid)

    held: dict[str, int] = {}
    counted: dict[str, int] = {}
    for g in groups:
        best: dict[str, int] = {}
        for sid, c in g.placement:
            s = stores.get(sid)
            p = place(sid)
            best.setdefault(p, 0)
            if s is not None and not s.failing:
                best[p] = max(best[p], min(c, k))
        for p, c in best.items():
            held[p] = held.get(p, 0) + g.bytes
            counted[p] = counted.get(p, 0) + c * g.bytes
    members: dict[str, list[StoreView]] = {}
    for sid, s in stores.items():
        if recently_seen(s, online, now, th):
            members.setdefault(place(sid), []).append(s)
    offer = 0
    trusted_ids: list[str] = []
    places = 0
    for p, ss in members.items():
        takers = [s for s in ss if s.takes_new_copies]
        if takers:
            w = min(k, max(s.weight for s in takers))
            free = max(max(0, s.bytes_avail - th.reserve_for(s.bytes_total)) for s in takers)
            offer += w * min(total_u, held.get(p, 0) + free)
            trusted_ids += [s.id for s in takers]
            places += 1
        else:
            offer += counted.get(p, 0)
    need = k * total_u
    extra["storage"] = {"need": need, "offered": offer, "trusted_recent": sorted(trusted_ids)}
    if total_u == 0 or offer >= need:
        return None
    deficit = need - offer
    n = places
    drives = -(-deficit // total_u)  # a new weight-1 drive offers at most U
    if drives > 1:
        where = f"on at least {drives} more drives"
    elif n < k:
        where = f"on a {_ORDINALS.get(n + 1, f'{n + 1}th')} drive"
    else:
        where = "of free space on drives without these files, or another drive"
    note = f"only {n} trusted drive{'s' if n != 1 else ''} seen recently; " if n < k else ""
    return Alert(
        code=INSUFFICIENT_STORAGE,
        severity=Severity.PANIC,
        message=f"Not enough storage for {k} copies: {note}need {_size(deficit)} more {where}",
        action=(
            "Add a drive: dmedia-tui store init /media/<drive>"
            if n < k or drives > 1
            else "Free space on a drive, or add one: dmedia-tui store init /media/<drive>"
        ),
        store_ids=tuple(sorted(trusted_ids)),
        files=sum(g.count for g in groups if g.durability < k),
        bytes=deficit,
    )


def _place(
    sid: str, stores: dict[str, StoreView], held: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """Who must act to bring store `sid` online: a machine to boot or a drive to plug, or
    the machine that has it connected but cannot be reached (`held`: store -> machine)."""
    if held and sid in held:
        return ("unreachable", held[sid])
    s = stores.get(sid)
    if s is None:
        return ("unknown", sid)
    if s.removable and not s.internal:
        return ("drive", sid)
    if s.machine_id is None:
        return ("unknown", sid)
    return ("machine", s.machine_id)


def _place_advice(
    place: tuple[str, str],
    sids: list[str],
    stores: dict[str, StoreView],
    machines: dict[str, MachineView],
    fresh_hosts: list[str],
    fresh_ids: set[str],
    this_machine: str | None = None,
    unreachable: Mapping[str, str] | None = None,
) -> str:
    """One place's advice. The machine running the command (`this_machine`) is on by
    definition: its own stores get "connect ... here", never "boot" it; `fresh_hosts` are
    the other machines running now."""
    kind, key = place
    if kind == "unreachable":
        m = machines.get(key)
        name = m.hostname if m is not None else key[:8]
        where = (unreachable or {}).get(key) or "its published addresses"
        return f"{name} is on but cannot be reached at {where}: check its firewall"
    if kind == "drive":
        s = stores[key]
        serial = f" (serial {s.drive_serial})" if s.drive_serial else ""
        if this_machine is not None:
            me = machines.get(this_machine)
            here = f"in here ({me.hostname})" if me is not None else "in here"
            others = f" or into one of: {', '.join(fresh_hosts)}" if fresh_hosts else ""
            return f"plug {s.label}{serial} {here}{others}"
        into = f"one of: {', '.join(fresh_hosts)}" if fresh_hosts else "this machine"
        return f"plug {s.label}{serial} into {into}"
    if kind == "machine":
        labels = ", ".join(stores[sid].label for sid in sids)
        if key == this_machine:
            return f"connect {labels} here (mount its drive, or bring its folder back)"
        m = machines.get(key)
        if m is None:
            return f"boot the machine {labels} was last connected to ({key[:8]})"
        if key in fresh_ids:
            return f"connect {labels} on {m.hostname} (it is running but does not see it)"
        return f"boot {m.hostname}"
    known = stores.get(key)
    if known is not None:
        return f"reconnect {known.label}"
    return f"reconnect the drive that held store {key[:8]} (its record is gone)"


def _disconnected_alerts(
    groups: list[_Group],
    stores: dict[str, StoreView],
    machines: dict[str, MachineView],
    online: set[str],
    fresh_hosts: list[str],
    fresh_ids: set[str],
    this_machine: str | None = None,
    unreachable: Mapping[str, str] | None = None,
    held: Mapping[str, str] | None = None,
) -> list[Alert]:
    """DISCONNECTED_ONLY_COPY: user files with entries only on stores that are not online.

    Any entry is a place to look, even one counted 0 (downgraded or on a failing drive), and
    so is a store whose doc is gone. The offline stores are mapped to *places*: a removable
    drive (plug it into a running machine), or the machine an internal or fixed drive
    belongs to (boot it). Files are grouped by the set of places that could bring them back,
    one alert per set; any one of those places is enough, so the advice joins them with "or".
    """
    by_places: dict[frozenset[tuple[str, str]], tuple[set[str], int, int]] = {}
    keys: dict[frozenset[tuple[str, str]], list[str]] = {}
    for g in groups:
        sids = g.store_ids
        if not sids or sids & online:
            continue
        places = frozenset(_place(sid, stores, held) for sid in sids)
        ids, n, b = by_places.get(places, (set(), 0, 0))
        by_places[places] = (ids | sids, n + g.count, b + g.bytes)
        keys.setdefault(places, []).append(g.key)
    alerts = []
    for places, (ids, n, b) in by_places.items():
        labels = ", ".join(
            sorted(stores[sid].label if sid in stores else f"{sid[:8]} (unknown)" for sid in ids)
        )
        which = "which is offline" if len(ids) == 1 else "which are all offline"
        advice = []
        for place in sorted(places):
            in_place = sorted(sid for sid in ids if _place(sid, stores, held) == place)
            advice.append(
                _place_advice(
                    place,
                    in_place,
                    stores,
                    machines,
                    fresh_hosts,
                    fresh_ids,
                    this_machine,
                    unreachable,
                )
            )
        action = " or ".join(advice)
        alerts.append(
            Alert(
                code=DISCONNECTED_ONLY_COPY,
                severity=Severity.PANIC,
                message=f"{_files(n)} ({_size(b)}) {_be(n)} only on {labels}, {which}",
                action=action[:1].upper() + action[1:],
                store_ids=tuple(sorted(ids)),
                files=n,
                bytes=b,
                placements=tuple(sorted(keys[places])),
            )
        )
    return alerts


def _no_known_copy_alert(groups: list[_Group]) -> Alert | None:
    """NO_KNOWN_COPY: user files recorded nowhere (every entry removed, e.g. by a purge)."""
    n = sum(g.count for g in groups if not g.placement)
    b = sum(g.bytes for g in groups if not g.placement)
    if not n:
        return None
    return Alert(
        code=NO_KNOWN_COPY,
        severity=Severity.CRITICAL,
        message=f"{_files(n)} ({_size(b)}) {_have(n)} no known copy on any store",
        action=(
            "Reconnect every drive that may hold them so they are found again, "
            "and look in each store's .dmedia/corrupt quarantine"
        ),
        files=n,
        bytes=b,
        placements=("",),
    )


# What a failure reason means to the person reading the banner (others shown as stored).
_FAILURE_WORDS = {
    REASON_SMART: f"{REASON_SMART}: the drive reports it is failing",
    REASON_IO_ERRORS: f"{REASON_IO_ERRORS}: its reads keep failing",
}


def _failure_alert(s: StoreView, files: int, size: int) -> Alert:
    """DRIVE_FAILURE for one unacknowledged failing store."""
    serial = f" (serial {s.drive_serial})" if s.drive_serial else ""
    if s.corrupt_count:
        what = f"{s.corrupt_count:,} corrupt cop{'y' if s.corrupt_count == 1 else 'ies'} found"
    else:
        why = _FAILURE_WORDS.get(s.failure_reason or "", s.failure_reason)
        what = f"marked failing ({why or 'no reason recorded'})"
    return Alert(
        code=DRIVE_FAILURE,
        severity=Severity.PANIC,
        message=f"{s.label}{serial}: {what}; the drive may be failing",
        action=(
            "Stop using this drive for any data (dmedia-tui no longer trusts it); "
            f"acknowledge: dmedia-tui store ack {s.id}"
        ),
        store_ids=(s.id,),
        files=files,
        bytes=size,
        acknowledgeable=True,
    )


def _low_durability_alert(
    groups: list[_Group],
    th: Thresholds,
    online: set[str] | None = None,
    advise: Any = None,
) -> Alert | None:
    """LOW_DURABILITY: user files with fewer than `low_durability` good copies (work to do).

    The action tells the truth about who can act: files with a copy on an online store
    are being copied; files whose every recorded copy is on offline stores cannot be, so
    the action names the places to connect (`advise(store_ids)` -> advice, the same
    words as DISCONNECTED_ONLY_COPY). Files with no recorded copy are NO_KNOWN_COPY's.
    """
    low = [g for g in groups if g.durability < th.low_durability]
    n = sum(g.count for g in low)
    if not n:
        return None
    b = sum(g.bytes for g in low)
    good = f"{th.low_durability} good cop{'y' if th.low_durability == 1 else 'ies'}"
    online = online if online is not None else set()
    stuck = [g for g in low if g.store_ids and not g.store_ids & online]
    action = "dmedia-tui is making copies; keep drives connected"
    if all(not g.store_ids for g in low):
        action = "No copy of them is known: see the NO KNOWN COPY alert"
    elif stuck and advise is not None:
        where = advise(frozenset().union(*(g.store_ids for g in stuck)))
        stuck_n = sum(g.count for g in stuck)
        if stuck_n == sum(g.count for g in low if g.store_ids):
            action = f"{where[:1].upper()}{where[1:]}: their only copies are offline"
        else:
            action = (
                f"{where[:1].upper()}{where[1:]} for the {_files(stuck_n)} whose only copies "
                "are offline; dmedia-tui is copying the others"
            )
    return Alert(
        code=LOW_DURABILITY,
        severity=Severity.INFO,
        message=f"{_files(n)} ({_size(b)}) {_have(n)} fewer than {good}",
        action=action,
        files=n,
        bytes=b,
        placements=tuple(sorted(g.key for g in low)),
    )


def _shared_alerts(pairs: Any, stores: dict[str, StoreView]) -> list[Alert]:
    """SHARED_FILESYSTEM: stores on one filesystem are not independent copies.

    Pairs are joined into groups (a, b) + (b, c) -> {a, b, c}: one alert per filesystem.
    """
    groups: dict[str, list[str]] = {}
    for x, root in _filesystems(pairs).items():
        groups.setdefault(root, []).append(x)
    alerts = []
    for members in groups.values():
        if len(members) < 2:
            continue
        key = tuple(sorted(members))
        labels = [stores[x].label if x in stores else store_label(None, x) for x in key]
        names = ", ".join(labels[:-1]) + " and " + labels[-1]
        alerts.append(
            Alert(
                code=SHARED_FILESYSTEM,
                severity=Severity.WARNING,
                message=f"{names} are on the same filesystem: their copies fail together",
                action="Keep one store per drive: move the others to other drives, then purge "
                "the old stores",
                store_ids=key,
            )
        )
    return sorted(alerts, key=lambda a: a.store_ids)


def _metadata_alert(problems: Any) -> Alert | None:
    """METADATA_INVALID: the schema/consistency check found invalid or inconsistent docs.

    `problems`: a count, or {"invalid": n, "inconsistent": m} (the newest check result).
    """
    if isinstance(problems, Mapping):
        invalid = max(0, _int(problems.get("invalid")))
        inconsistent = max(0, _int(problems.get("inconsistent")))
    else:
        invalid, inconsistent = max(0, _int(problems)), 0
    n = invalid + inconsistent
    if not n:
        return None
    parts = []
    if invalid:
        parts.append(f"{invalid:,} document{'s' if invalid != 1 else ''} failed the schema check")
    if inconsistent:
        parts.append(
            f"{inconsistent:,} file doc{'s' if inconsistent != 1 else ''} whose ID, size and "
            "leaf hashes do not tie"
        )
    return Alert(
        code=METADATA_INVALID,
        severity=Severity.WARNING,
        message="; ".join(parts),
        action="List them: dmedia-tui events --type dmedia/doc/invalid "
        "--type dmedia/file/inconsistent "
        "(nothing was rewritten; fix or restore those docs, then dmedia-tui check)",
        files=n,
    )


def store_safety_alerts(
    h: Health,
    unsafe: dict[str, str],
    stores: list[Doc],
    now: float,
    thresholds: Thresholds | None = None,
) -> Health:
    """`h` with the alerts about stores as this machine finds them on disk added.

    STORE_UNSAFE (panic): a store's folder holds a link (or a non-folder) where its layout
    has a folder: it is never read or written (links are never followed out of a store)
    until fixed. `unsafe`: store_id -> the reason (from the FileStore).
    DRIVE_READ_ERRORS (panic): a store whose doc counts `read_error_alert` or more I/O
    errors (EIO, permission, a write EIO) within `read_error_window` of now: the drive
    keeps failing reads; copy its files elsewhere. The operations flag such a store failing
    (reason `io_errors`), and then DRIVE_FAILURE speaks for it instead; this alert remains
    for counts the operations did not flag (a threshold lowered since). Pure, like assess.
    """
    th = thresholds or Thresholds()
    labels = {}
    docs = {}
    failing = set()
    for doc in stores if isinstance(stores, list | tuple) else ():
        s = StoreView.of(doc)
        if s is not None:
            labels[s.id] = s.label
            docs[s.id] = doc
            if s.failing:
                failing.add(s.id)
    alerts = list(h.alerts)
    for sid, reason in sorted((unsafe or {}).items()):
        alerts.append(
            Alert(
                code=STORE_UNSAFE,
                severity=Severity.PANIC,
                message=f"store {labels.get(sid) or store_label(None, sid)} is not used: {reason}",
                action="remove the link (or move the thing) inside its .dmedia folder; "
                "nothing outside the store was touched",
                store_ids=(sid,),
            )
        )
    for sid, doc in sorted(docs.items()):
        errs = doc.get("read_errors")
        if not isinstance(errs, dict) or sid in failing:
            continue  # a failing store has its own banner (DRIVE_FAILURE), or was acknowledged
        count, last = _int(errs.get("count")), time_value(errs.get("last"))
        if (
            count >= max(1, th.read_error_alert)
            and last is not None
            and (now - last <= th.read_error_window)
        ):
            alerts.append(
                Alert(
                    code=DRIVE_READ_ERRORS,
                    severity=Severity.PANIC,
                    message=f"store {labels[sid]} failed {count} reads or writes since "
                    f"{_ago_text(now, time_value(errs.get('first')) or last)}",
                    action=f"check the drive of {labels[sid]} (cable, SMART) and copy its "
                    "files to another store",
                    store_ids=(sid,),
                )
            )
    if len(alerts) == len(h.alerts):
        return h
    return dataclasses.replace(h, alerts=_sort_alerts(alerts))


def _ago_text(now: float, t: float) -> str:
    return humanize.naturaldelta(max(0.0, now - t)) + " ago"


def database_offline(reason: str, now: float = 0.0) -> Health:
    """The Health to show when the library cannot be read at all (`status` exits 3)."""
    alert = Alert(
        code=DATABASE_OFFLINE,
        severity=Severity.CRITICAL,
        message=f"Cannot read the library: {reason}",
        action="Check the --db setting (or DMEDIA_DB) and that the database is reachable",
    )
    empty = tuple(Bucket(i, 0, 0) for i in range(4))
    return Health((alert,), empty, (), 0, 0, now)  # type: ignore[arg-type]


def _store_state(s: StoreView, online: bool, now: float) -> StoreState:
    """FAILING > DOWNGRADED (downgraded or no_new_copies) > OFFLINE (not online, seen in the
    last STALE_AFTER) > STALE (not online, seen longer ago or never) > OK."""
    if s.failing:
        return StoreState.FAILING
    if s.downgraded or s.no_new_copies:
        return StoreState.DOWNGRADED
    if not online:
        return StoreState.OFFLINE if _fresh(s.atime, now, STALE_AFTER) else StoreState.STALE
    return StoreState.OK


def assess(
    summary: list[PlacementRow],
    stores: list[Doc],
    machines: list[Doc],
    now: float,
    online: set[str],
    thresholds: Thresholds | None = None,
    *,
    verification: dict[str, VerificationStats] | None = None,
    metadata_problems: int | Mapping[str, int] = 0,
    shared_filesystems: list[tuple[str, str]] | None = None,
    machine_id: str | None = None,
    unreachable: Mapping[str, str] | None = None,
) -> Health:
    """Everything the dashboard and `status` show, from docs alone.

    Pure: the same arguments give the same Health; no I/O, no clock. Only `origin == "user"`
    files feed the histogram, the totals and the alerts about files. Durability is the sum
    of `copies` in the placement as recorded (the metastore already zeroes copies on
    downgraded and failing stores, so nothing is adjusted twice); copies on stores that are
    merely offline still count: durability is about copies existing, and a copy being
    unreachable is DISCONNECTED_ONLY_COPY's business. See each `_*_alert` for its rule.
    Malformed docs and rows are read as "field absent", never raise.
    `machine_id` is the machine running the command: it is on (its stores get "connect
    here", never "boot" advice). `shared_filesystems` pairs make one place of the stores
    of one filesystem for INSUFFICIENT_STORAGE (and raise SHARED_FILESYSTEM).
    `unreachable` (machine ID -> address tried) names machines that are on but whose peer
    server does not answer this one: their stores' only copies get that advice, and their
    rows say so.
    """
    th = thresholds or Thresholds()
    online = set(online) if isinstance(online, set | frozenset | list | tuple) else set()
    every = _groups(summary)
    user = [g for g in every if g.user]

    store_map: dict[str, StoreView] = {}
    for doc in stores if isinstance(stores, list | tuple) else ():
        s = StoreView.of(doc)
        if s is not None and s.id not in store_map:
            store_map[s.id] = s
    machine_map: dict[str, MachineView] = {}
    for doc in machines if isinstance(machines, list | tuple) else ():
        m = MachineView.of(doc)
        if m is not None and m.id not in machine_map:
            machine_map[m.id] = m
    fresh_ids = {m.id for m in machine_map.values() if _fresh(m.atime, now, th.heartbeat_fresh)}
    if machine_id is not None:
        fresh_ids.add(machine_id)  # the machine running this is on, whatever its heartbeat
    fresh_hosts = sorted({machine_map[i].hostname for i in fresh_ids - {machine_id}})
    shared = _filesystems(shared_filesystems)
    cut_off = {k: v for k, v in (unreachable or {}).items() if k in fresh_ids and k in machine_map}
    held = {sid: mid for mid in cut_off for sid in machine_map[mid].stores}

    def advise(sids: frozenset[str]) -> str:
        """Where to go to bring these stores online (one place each), joined with "; "."""
        places = sorted({_place(sid, store_map, held) for sid in sids})
        return "; ".join(
            _place_advice(
                p,
                sorted(x for x in sids if _place(x, store_map, held) == p),
                store_map,
                machine_map,
                fresh_hosts,
                fresh_ids,
                machine_id,
                cut_off,
            )
            for p in places
        )

    # Per-store totals from the summary (all origins, and user files alone).
    per_store: dict[str, list[int]] = {}  # sid -> [files, bytes, user files, user bytes]
    for g in every:
        for sid, _ in g.placement:
            t = per_store.setdefault(sid, [0, 0, 0, 0])
            t[0] += g.count
            t[1] += g.bytes
    for g in user:
        for sid, _ in g.placement:
            t = per_store.setdefault(sid, [0, 0, 0, 0])
            t[2] += g.count
            t[3] += g.bytes

    extra: dict[str, Any] = {"online": sorted(online & (store_map.keys() | per_store.keys()))}
    alerts: list[Alert] = []
    for maybe in (
        _storage_alert(user, store_map, now, online, th, extra, shared),
        _no_known_copy_alert(user),
        _low_durability_alert(user, th, online, advise),
        _metadata_alert(metadata_problems),
    ):
        if maybe is not None:
            alerts.append(maybe)
    alerts += _disconnected_alerts(
        user, store_map, machine_map, online, fresh_hosts, fresh_ids, machine_id, cut_off, held
    )
    alerts += _shared_alerts(shared_filesystems, store_map)
    for s in store_map.values():
        if s.failing and not s.acknowledged:
            t = per_store.get(s.id, [0, 0, 0, 0])
            alerts.append(_failure_alert(s, t[2], t[3]))

    verification = verification if isinstance(verification, dict) else {}
    rows = []
    for s in store_map.values():
        t = per_store.get(s.id, [0, 0, 0, 0])
        is_online = s.id in online
        state = _store_state(s, is_online, now)
        m = machine_map.get(s.machine_id) if s.machine_id else None
        rows.append(
            StoreRow(
                store_id=s.id,
                label=s.label,
                state=state,
                online=is_online,
                copies=s.weight,
                machine_id=s.machine_id,
                machine_name=m.hostname if m else None,
                removable=s.removable,
                internal=s.internal,
                drive_serial=s.drive_serial,
                bytes_total=s.bytes_total,
                bytes_avail=s.bytes_avail,
                files=t[0],
                bytes=t[1],
                user_files=t[2],
                last_seen=int(s.atime) if s.atime is not None else None,
                failure_acknowledged=s.failing and s.acknowledged,
                corrupt_count=s.corrupt_count,
                verification=verification.get(s.id),
                unreachable_at=cut_off.get(held[s.id]) if s.id in held else None,
            )
        )
    rows.sort(key=lambda r: (r.label.lower(), r.store_id))
    for sid in sorted(per_store.keys() - store_map.keys()):
        t = per_store[sid]
        rows.append(
            StoreRow(
                store_id=sid,
                label="(unknown store)",
                state=StoreState.STALE,
                online=sid in online,
                copies=0,
                machine_id=None,
                machine_name=None,
                removable=False,
                internal=False,
                drive_serial=None,
                bytes_total=0,
                bytes_avail=0,
                files=t[0],
                bytes=t[1],
                user_files=t[2],
                last_seen=None,
                verification=verification.get(sid),
            )
        )

    histogram = _histogram(user)
    return Health(
        alerts=_sort_alerts(alerts),
        histogram=histogram,
        store_rows=tuple(rows),
        files=sum(b.files for b in histogram),
        bytes=sum(b.bytes for b in histogram),
        now=now,
        extra=extra,
    )


# --- clock skew --------------------------------------------------------------------------

CLOCK_SKEW = "CLOCK_SKEW"


def with_clock_skew(h: Health, skews: list[tuple[str, float]]) -> Health:
    """`h` plus one CLOCK_SKEW warning per (hostname, seconds ahead of this machine; negative:
    behind). Times from such a machine are judged by what this machine saw change, not by
    its clock (see liveness.py), but its events and ages read wrong: say so."""
    alerts = [
        Alert(
            code=CLOCK_SKEW,
            severity=Severity.WARNING,
            message=f"the clock of {host} runs {humanize.naturaldelta(abs(secs))} "
            f"{'ahead of' if secs > 0 else 'behind'} this machine's",
            action=f"Set the time on {host} (or here): enable NTP (timedatectl set-ntp true)",
        )
        for host, secs in skews
    ]
    if not alerts:
        return h
    return dataclasses.replace(h, alerts=_sort_alerts([*h.alerts, *alerts]))


def shared_filesystems(stores: list[Doc]) -> list[tuple[str, str]]:
    """Pairs of stores on one filesystem of one machine (by partition UUID or device)."""
    seen: dict[tuple[Any, Any], str] = {}
    pairs = []
    for s in stores:
        key_val = s.get("partition_uuid") or s.get("filesystem_id")
        if not key_val:
            continue
        key = (s.get("machine_id"), key_val)
        if key in seen:
            pairs.append((seen[key], s["_id"]))
        else:
            seen[key] = s["_id"]
    return pairs
