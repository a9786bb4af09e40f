"""The library's health as numbers: a one-line status and Prometheus metrics.

- `short_line(health)`: one line for a tmux status bar or polybar,
  `PANIC 2 · 48 files < 2 copies · verified 41 %`.
- `HealthCollector`: a prometheus_client collector that assesses the library on every
  scrape (health is computed from the placement summary, so a scrape costs what
  `status` costs): durability buckets, alert counts by code, per-store state, bytes,
  verification ages, and the engine's transfer and verify rates.
- The engine's rates come from `EngineStats`, a subscriber on the running engine (app or
  daemon) that sums verified and copied bytes from its progress events and writes them
  every few seconds to `engine-stats.json` in the data dir; `metrics` (another process)
  reads that file, and reports the rates as 0 once the file is stale.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from dmedia_tui.health import (
    CLOCK_SKEW,
    DATABASE_OFFLINE,
    DISCONNECTED_ONLY_COPY,
    DRIVE_FAILURE,
    DRIVE_READ_ERRORS,
    INSUFFICIENT_STORAGE,
    LOW_DURABILITY,
    METADATA_INVALID,
    NO_KNOWN_COPY,
    SHARED_FILESYSTEM,
    STORE_UNSAFE,
    Health,
    Severity,
    StoreState,
)

# Every code with the severity health.py gives it: each (code, severity) series exists
# whether or not the alert is active, so a dashboard's series never changes its labels.
ALERT_SEVERITY = {
    NO_KNOWN_COPY: Severity.CRITICAL,
    INSUFFICIENT_STORAGE: Severity.PANIC,
    DISCONNECTED_ONLY_COPY: Severity.PANIC,
    DRIVE_FAILURE: Severity.PANIC,
    STORE_UNSAFE: Severity.PANIC,
    DRIVE_READ_ERRORS: Severity.PANIC,
    SHARED_FILESYSTEM: Severity.WARNING,
    METADATA_INVALID: Severity.WARNING,
    DATABASE_OFFLINE: Severity.WARNING,
    CLOCK_SKEW: Severity.WARNING,
    LOW_DURABILITY: Severity.INFO,
}
ALERT_CODES = tuple(ALERT_SEVERITY)
STATS_FILE = "engine-stats.json"
STATS_STALE_AFTER = 120.0  # seconds: an engine that wrote nothing for this long is gone


# --- the one-line status ----------------------------------------------------------------


def short_line(health: Health, low: int = 2) -> str:
    """`PANIC 2 · 48 files < 2 copies · verified 41 %` (parts with nothing to say omitted)."""
    worst = health.worst
    parts: list[str] = []
    if worst is None:
        parts.append("OK")
    else:
        n = sum(1 for a in health.alerts if a.severity == worst)
        label = {Severity.CRITICAL: "CRITICAL", Severity.PANIC: "PANIC"}.get(worst)
        label = label or ("WARN" if worst == Severity.WARNING else "INFO")
        parts.append(f"{label} {n}")
    fragile = sum(b.files for b in health.histogram if b.durability < low)
    if fragile:
        parts.append(f"{fragile:,} file{'s' if fragile != 1 else ''} < {low} copies")
    copies = never = 0
    for r in health.store_rows:
        if r.verification is not None and r.online:
            copies += r.verification.copies
            never += r.verification.never
    if copies:
        parts.append(f"verified {100 * (copies - never) // copies} %")
    if not health.store_rows:
        parts.append("no stores")
    return " · ".join(parts)


# --- engine rates ---------------------------------------------------------------------------


class EngineStats:
    """Bytes verified and copied by a running engine, written to the data dir periodically."""

    def __init__(self, path: Path, every: float = 5.0) -> None:
        self.path = Path(path)
        self.every = every
        self.verified_bytes = 0
        self.copied_bytes = 0
        self._window: list[tuple[float, int, int]] = []  # (monotonic, verified, copied)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], Any] | None = None

    def on_event(self, event: Any) -> None:
        """Engine subscriber: only arithmetic, never I/O (the worker must not wait)."""
        if getattr(event, "kind", None) != "activity":
            if self._thread is None and not self._stop.is_set():
                self._thread = threading.Thread(target=self._loop, name="dmedia-stats")
                self._thread.daemon = True
                self._thread.start()
            return
        act = event.data
        if not isinstance(getattr(act, "done", None), int):
            return  # an activity that ended (None) or a kind this does not know
        with self._lock:
            # What was counted is kept on the Activity itself (one per file and worker):
            # a table keyed by id() would confuse a new Activity with a dead one.
            delta = max(0, act.done - getattr(act, "_counted_by_stats", 0))
            act._counted_by_stats = act.done
            if act.kind == "verify":
                self.verified_bytes += delta
            elif act.kind == "copy":
                self.copied_bytes += delta

    def snapshot(self) -> dict[str, Any]:
        now = time.monotonic()
        with self._lock:
            v, c = self.verified_bytes, self.copied_bytes
        self._window.append((now, v, c))
        self._window = [w for w in self._window if now - w[0] <= 60.0]
        t0, v0, c0 = self._window[0]
        span = now - t0
        return {
            "time": time.time(),
            "pid": os.getpid(),
            "verified_bytes_total": v,
            "copied_bytes_total": c,
            "verify_rate": (v - v0) / span if span > 0 else 0.0,
            "copy_rate": (c - c0) / span if span > 0 else 0.0,
        }

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.snapshot()), encoding="utf-8")
        os.replace(tmp, self.path)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.write()
            except OSError:
                pass
            self._stop.wait(self.every)

    def attach(self, engine: Any) -> EngineStats:
        self._unsubscribe = engine.subscribe(self.on_event)
        return self

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        try:
            self.write()  # final totals; the rates go stale with the file's time
        except OSError:
            pass


def attach_stats(engine: Any) -> EngineStats:
    return EngineStats(Path(engine.ms.config.data_dir) / STATS_FILE).attach(engine)


def read_stats(data_dir: Path, now: float | None = None) -> dict[str, Any]:
    """The running engine's last stats; rates 0 when the file is stale or absent."""
    try:
        data = json.loads((Path(data_dir) / STATS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        data = {}
    if not isinstance(data, dict):
        data = {}
    now = time.time() if now is None else now
    fresh = isinstance(data.get("time"), int | float) and now - data["time"] < STATS_STALE_AFTER
    out = {k: data.get(k, 0) or 0 for k in ("verified_bytes_total", "copied_bytes_total")}
    out["verify_rate"] = float(data.get("verify_rate") or 0) if fresh else 0.0
    out["copy_rate"] = float(data.get("copy_rate") or 0) if fresh else 0.0
    out["engine_up"] = 1 if fresh else 0
    return out


# --- Prometheus -------------------------------------------------------------------------


class HealthCollector:
    """Assesses the library at every collect(); `assess` returns (Health, engine stats)."""

    def __init__(self, assess: Callable[[], tuple[Health, dict[str, Any]]]) -> None:
        self.assess = assess

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        started = time.monotonic()
        try:
            health, stats = self.assess()
            up = 1
        except Exception:
            health, stats, up = None, {}, 0
        g = GaugeMetricFamily
        yield g("dmedia_up", "1 when the library could be read", value=up)
        if health is None:
            return
        files = g(
            "dmedia_user_files", "User files by durability (3 = 3 or more)", labels=["durability"]
        )
        size = g(
            "dmedia_user_bytes", "User bytes by durability (3 = 3 or more)", labels=["durability"]
        )
        for b in health.histogram:
            files.add_metric([str(b.durability)], b.files)
            size.add_metric([str(b.durability)], b.bytes)
        yield files
        yield size
        yield g("dmedia_user_files_total", "User files in the library", value=health.files)
        yield g("dmedia_user_bytes_total", "User bytes in the library", value=health.bytes)
        alerts = g("dmedia_alerts", "Active alerts by code", labels=["code", "severity"])
        counts = {(code, sev.name.lower()): 0 for code, sev in ALERT_SEVERITY.items()}
        for a in health.alerts:  # a code health adds later shows too
            key = (a.code, a.severity.name.lower())
            counts[key] = counts.get(key, 0) + 1
        for (code, sev), n in counts.items():
            alerts.add_metric([code, sev], n)
        yield alerts
        yield g(
            "dmedia_worst_severity",
            "Worst active alert: 0 none, 1 info, 2 warning, 3 panic, 4 critical",
            value=int(health.worst or 0),
        )
        yield g(
            "dmedia_status_exit_code", "What `dmedia-tui status` exits with", value=health.exit_code
        )
        labels = ["store_id", "label"]
        state = g(
            "dmedia_store_state", "1 for the store's current state", labels=[*labels, "state"]
        )
        online = g("dmedia_store_online", "1 when the store is online", labels=labels)
        weight = g("dmedia_store_copy_weight", "Durability a copy there counts now", labels=labels)
        total = g("dmedia_store_size_bytes", "Size of the store's filesystem", labels=labels)
        avail = g("dmedia_store_avail_bytes", "Free bytes on the store's filesystem", labels=labels)
        sfiles = g("dmedia_store_files", "Files with a copy on the store", labels=labels)
        sbytes = g("dmedia_store_bytes", "Bytes of the copies on the store", labels=labels)
        vcopies = g("dmedia_store_verified_copies", "Copies verified at least once", labels=labels)
        never = g("dmedia_store_never_verified_copies", "Copies never verified", labels=labels)
        oldest = g(
            "dmedia_store_verification_oldest_age_seconds",
            "Age of the oldest verification on the store",
            labels=labels,
        )
        median = g(
            "dmedia_store_verification_median_age_seconds",
            "Median verification age on the store",
            labels=labels,
        )
        for r in health.store_rows:
            lv = [r.store_id, r.label]
            for s in StoreState:
                state.add_metric([*lv, s.value], 1 if r.state == s else 0)
            online.add_metric(lv, 1 if r.online else 0)
            weight.add_metric(lv, r.copies)
            total.add_metric(lv, r.bytes_total)
            avail.add_metric(lv, r.bytes_avail)
            sfiles.add_metric(lv, r.files)
            sbytes.add_metric(lv, r.bytes)
            v = r.verification
            if v is not None:
                vcopies.add_metric(lv, v.copies - v.never)
                never.add_metric(lv, v.never)
                if v.oldest is not None:
                    oldest.add_metric(lv, max(0.0, health.now - v.oldest))
                if v.median is not None:
                    median.add_metric(lv, max(0.0, health.now - v.median))
        yield from (state, online, weight, total, avail, sfiles, sbytes, vcopies, never)
        yield from (oldest, median)
        yield g(
            "dmedia_engine_up",
            "1 while an engine reports its rates",
            value=stats.get("engine_up", 0),
        )
        yield g(
            "dmedia_verify_rate_bytes_per_second",
            "Verification throughput of the running engine (last minute)",
            value=stats.get("verify_rate", 0.0),
        )
        yield g(
            "dmedia_copy_rate_bytes_per_second",
            "Copy throughput of the running engine (last minute)",
            value=stats.get("copy_rate", 0.0),
        )
        yield CounterMetricFamily(
            "dmedia_verified_bytes",
            "Bytes verified by the engine since it started",
            value=stats.get("verified_bytes_total", 0),
        )
        yield CounterMetricFamily(
            "dmedia_copied_bytes",
            "Bytes read to make copies since the engine started (one read feeds every copy)",
            value=stats.get("copied_bytes_total", 0),
        )
        yield g(
            "dmedia_scrape_duration_seconds",
            "Time taken to assess the library for this scrape",
            value=time.monotonic() - started,
        )


def registry_for(assess: Callable[[], tuple[Health, dict[str, Any]]]) -> Any:
    from prometheus_client import CollectorRegistry

    reg = CollectorRegistry(auto_describe=False)
    reg.register(HealthCollector(assess))
    return reg


def write_textfile(path: str | os.PathLike[str], registry: Any) -> None:
    """Atomic write for node_exporter's textfile collector (temp file, then rename)."""
    from prometheus_client import write_to_textfile

    write_to_textfile(str(path), registry)


def serve(host: str, port: int, registry: Any) -> tuple[Any, Any]:
    """Serve /metrics on host:port in a thread; returns (server, thread)."""
    from prometheus_client import start_http_server

    return start_http_server(port, addr=host, registry=registry)
