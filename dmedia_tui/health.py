"""Is the library safe? A pure function of the placement summary, store and machine docs.

`assess(...)` -> `Health(alerts, histogram, store_rows, ...)`. No I/O, no clock: `now`
and the set of online stores are arguments, so every rule is unit-tested exhaustively
(tests/test_health.py).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from dmedia_tui.config import Thresholds
from dmedia_tui.db.base import Doc, PlacementRow, VerificationStats

# Stable alert codes (scripts and harnesses match on these).
INSUFFICIENT_STORAGE = "INSUFFICIENT_STORAGE"
DISCONNECTED_ONLY_COPY = "DISCONNECTED_ONLY_COPY"
DRIVE_FAILURE = "DRIVE_FAILURE"
LOW_DURABILITY = "LOW_DURABILITY"
NO_KNOWN_COPY = "NO_KNOWN_COPY"
SHARED_FILESYSTEM = "SHARED_FILESYSTEM"
METADATA_INVALID = "METADATA_INVALID"
DATABASE_OFFLINE = "DATABASE_OFFLINE"


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


def online_store_ids(
    machines: list[Doc], now: float, thresholds: Thresholds, local: set[str] | frozenset[str] = frozenset()
) -> set[str]:
    """Stores connected to this machine, plus those a fresh machine doc lists."""
    raise NotImplementedError


def assess(
    summary: list[PlacementRow],
    stores: list[Doc],
    machines: list[Doc],
    now: float,
    online: set[str],
    thresholds: Thresholds | None = None,
    *,
    verification: dict[str, VerificationStats] | None = None,
    metadata_problems: int = 0,
    shared_filesystems: list[tuple[str, str]] | None = None,
) -> Health:
    """Everything the dashboard and `status` show, from docs alone."""
    raise NotImplementedError
