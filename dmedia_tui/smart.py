"""Drive health from SMART (`smartctl --json`), so a dying drive is flagged before a copy rots.

`read(device)` runs `smartctl --json -a DEVICE` (smartmontools 7+) and parses what matters
into a `SmartReport`: the overall verdict, reallocated / pending / offline-uncorrectable
sectors, CRC (cable) errors, NVMe media errors and critical warnings, power-on hours and
temperature. `judge(report, previous)` turns it into a verdict:

- `failing`: the drive's own SMART verdict is FAILED (or smartctl's exit status says so),
  a pre-fail attribute is below its threshold now, an NVMe critical warning other than
  temperature is set, or a bad-sector count (reallocated, pending, uncorrectable, NVMe
  media errors) grew since the last reading. Bad sectors that keep appearing are how
  drives die; copies there rot next.
- `warning`: bad-sector counts above zero but stable, CRC errors (usually the cable or a
  USB bridge, not the platter), a temperature above the drive's limit (or 60 C).
- `ok`, or `unknown` when smartctl cannot tell (no SMART, a USB bridge that hides it).

`SmartMonitor` runs on an engine (one subscription, like notify.py): after drive changes
and every `interval` it reads the drives of the connected stores, keeps the readings in
`smart.json` in the data dir (the app and `status` show the warnings from there), and a
`failing` drive sets its store's `failure` with reason `smart` (logged as
`dmedia/store/failing`, store downgraded: its copies count 0, so new copies are made
elsewhere while it still reads), which raises DRIVE_FAILURE.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from dmedia_tui import transitions

log = logging.getLogger("dmedia_tui.smart")

OK, WARNING, FAILING, UNKNOWN = "ok", "warning", "failing", "unknown"
REASON_SMART = transitions.REASON_SMART  # its one definition is with the other reasons
DEFAULT_TEMP_LIMIT = 60
# smartctl exit status bits (man smartctl, "EXIT STATUS")
EXIT_CMDLINE, EXIT_OPEN, EXIT_SMART_CMD = 1, 2, 4
EXIT_DISK_FAILING, EXIT_PREFAIL_NOW, EXIT_PREFAIL_PAST = 8, 16, 32

BAD_SECTOR_FIELDS = ("reallocated", "pending", "uncorrectable", "media_errors")


@dataclass(frozen=True)
class SmartReport:
    device: str
    model: str | None = None
    serial: str | None = None
    protocol: str | None = None  # ATA | NVMe | SCSI
    passed: bool | None = None  # the drive's own overall verdict
    reallocated: int | None = None  # ATA 5
    pending: int | None = None  # ATA 197
    uncorrectable: int | None = None  # ATA 198 (else 187)
    crc_errors: int | None = None  # ATA 199
    media_errors: int | None = None  # NVMe media_errors
    nvme_critical_warning: int | None = None
    failing_attributes: tuple[str, ...] = ()  # pre-fail attributes below threshold now
    power_on_hours: int | None = None
    temperature: int | None = None
    temperature_limit: int | None = None
    exit_status: int = 0
    error: str | None = None  # smartctl could not read the drive

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["failing_attributes"] = list(self.failing_attributes)
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> SmartReport:
        known = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        known["failing_attributes"] = tuple(known.get("failing_attributes") or ())
        return cls(**known)


@dataclass(frozen=True)
class Verdict:
    state: str  # ok | warning | failing | unknown
    reasons: tuple[str, ...] = ()

    @property
    def line(self) -> str:
        return "; ".join(self.reasons) if self.reasons else self.state


def _int(v: Any) -> int | None:
    return v if isinstance(v, int) and not isinstance(v, bool) and v >= 0 else None


def parse(data: Mapping[str, Any], device: str = "") -> SmartReport:
    """A SmartReport from `smartctl --json -a` output (ATA, NVMe and SCSI)."""
    sc = v if isinstance(v := data.get("smartctl"), dict) else {}
    dev = v if isinstance(v := data.get("device"), dict) else {}
    status = v if isinstance(v := data.get("smart_status"), dict) else {}
    attrs: dict[int, dict[str, Any]] = {}
    table = (data.get("ata_smart_attributes") or {}).get("table") or []
    for a in table:
        if isinstance(a, dict) and isinstance(a.get("id"), int):
            attrs[a["id"]] = a

    def raw(attr_id: int) -> int | None:
        a = attrs.get(attr_id)
        if a is None:
            return None
        r = v if isinstance(v := a.get("raw"), dict) else {}
        value = _int(r.get("value"))
        # Some attributes pack several counters in the 48-bit raw value; the low 16 bits
        # are the count (smartctl's own "string" shows the same number first).
        if value is not None and value > 0xFFFF and isinstance(r.get("string"), str):
            first = r["string"].split()[0] if r["string"].split() else ""
            value = int(first) if first.isdigit() else value & 0xFFFF
        return value

    nvme = data.get("nvme_smart_health_information_log")
    nvme = nvme if isinstance(nvme, dict) else {}
    temp = v if isinstance(v := data.get("temperature"), dict) else {}
    poh = v if isinstance(v := data.get("power_on_time"), dict) else {}
    failing_now = tuple(
        str(a.get("name") or a["id"])
        for a in attrs.values()
        if a.get("when_failed") == "now"
        and isinstance(a.get("flags"), dict)
        and a["flags"].get("prefailure")
    )
    uncorrectable = raw(198)
    if uncorrectable is None:
        uncorrectable = raw(187)
    limit = _int(temp.get("op_limit_max")) or _int(temp.get("limit_max"))
    messages = v if isinstance(v := sc.get("messages"), list) else []
    errors = [
        m.get("string") for m in messages if isinstance(m, dict) and m.get("severity") == "error"
    ]
    passed = status.get("passed")
    return SmartReport(
        device=device or str(dev.get("name") or ""),
        model=data.get("model_name") if isinstance(data.get("model_name"), str) else None,
        serial=data.get("serial_number") if isinstance(data.get("serial_number"), str) else None,
        protocol=dev.get("protocol") if isinstance(dev.get("protocol"), str) else None,
        passed=passed if isinstance(passed, bool) else None,
        reallocated=raw(5),
        pending=raw(197),
        uncorrectable=uncorrectable,
        crc_errors=raw(199),
        media_errors=_int(nvme.get("media_errors")),
        nvme_critical_warning=_int(nvme.get("critical_warning")),
        failing_attributes=failing_now,
        power_on_hours=_int(poh.get("hours")) if poh else _int(nvme.get("power_on_hours")),
        temperature=_int(temp.get("current")),
        temperature_limit=limit,
        exit_status=_int(sc.get("exit_status")) or 0,
        error="; ".join(str(e) for e in errors if e) or None,
    )


def judge(report: SmartReport, previous: SmartReport | None = None) -> Verdict:
    """ok / warning / failing / unknown, with the reasons a person can act on."""
    failing: list[str] = []
    warn: list[str] = []
    if report.passed is False or report.exit_status & EXIT_DISK_FAILING:
        failing.append("SMART overall health: FAILED")
    if report.failing_attributes:
        failing.append("failing now: " + ", ".join(report.failing_attributes))
    cw = report.nvme_critical_warning
    if cw:
        if cw & ~0x02:
            failing.append(f"NVMe critical warning 0x{cw:02x}")
        else:
            warn.append("NVMe temperature warning")
    names = {
        "reallocated": "reallocated sectors",
        "pending": "pending sectors",
        "uncorrectable": "uncorrectable sectors",
        "media_errors": "media errors",
    }
    for f in BAD_SECTOR_FIELDS:
        now = getattr(report, f)
        if not now:
            continue
        before = getattr(previous, f) if previous is not None else None
        if before is not None and now > before:
            failing.append(f"{names[f]} grew {before} -> {now}")
        else:
            warn.append(f"{now} {names[f]}")
    if report.crc_errors:
        before = previous.crc_errors if previous is not None else None
        grew = (
            f" (+{report.crc_errors - before})"
            if before is not None and report.crc_errors > before
            else ""
        )
        warn.append(f"{report.crc_errors} CRC errors{grew}: check the cable or USB bridge")
    limit = report.temperature_limit or DEFAULT_TEMP_LIMIT
    if report.temperature is not None and report.temperature > limit:
        warn.append(f"temperature {report.temperature} C (limit {limit} C)")
    if failing:
        return Verdict(FAILING, tuple(failing + warn))
    if warn:
        return Verdict(WARNING, tuple(warn))
    if report.passed is None and report.reallocated is None and report.media_errors is None:
        return Verdict(UNKNOWN, (report.error or "no SMART data",))
    return Verdict(OK)


def smartctl_program() -> str | None:
    return shutil.which("smartctl")


def read(device: str, program: str | None = None, timeout: float = 60) -> SmartReport:
    """Run `smartctl --json -a DEVICE`; a report with `error` set when it cannot tell."""
    prog = program or smartctl_program()
    if prog is None:
        return SmartReport(device, error="smartctl is not installed (Debian: smartmontools)")
    try:
        r = subprocess.run(
            [prog, "--json", "-a", device], capture_output=True, text=True, timeout=timeout
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        return SmartReport(device, error=f"smartctl: {e}")
    try:
        data = json.loads(r.stdout)
    except ValueError:
        return SmartReport(device, exit_status=r.returncode, error="smartctl printed no JSON")
    if not isinstance(data, dict):
        return SmartReport(device, exit_status=r.returncode, error="smartctl printed no JSON")
    report = parse(data, device)
    if r.returncode & (EXIT_CMDLINE | EXIT_OPEN) and report.error is None:
        report = SmartReport(**{**asdict(report), "error": f"smartctl exit {r.returncode}"})
    if report.exit_status != r.returncode:  # trust the real exit code over the JSON copy
        report = SmartReport(**{**asdict(report), "exit_status": r.returncode})
    return report


def device_for_store(path: str | os.PathLike[str]) -> str | None:
    """The whole drive (/dev/sdb for a store on /dev/sdb1) holding a store folder."""
    from dmedia_tui import drives

    try:
        p = drives.partition_for_path(path)
    except Exception as e:
        log.info("no drive for %s: %s", path, e)
        return None
    if p is None:
        return None
    return f"/dev/{p.disk}" if p.disk else p.devname


# --- readings kept between runs --------------------------------------------------------


def readings_path(data_dir: Path) -> Path:
    return Path(data_dir) / "smart.json"


def load_readings(data_dir: Path) -> dict[str, dict[str, Any]]:
    """{store_id: {"report": {...}, "state", "reasons", "time"}} as last written."""
    try:
        data = json.loads(readings_path(data_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def save_readings(data_dir: Path, readings: dict[str, dict[str, Any]]) -> None:
    path = readings_path(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(readings, indent=1, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def warnings_by_store(data_dir: Path) -> dict[str, tuple[str, str]]:
    """{store_id: (state, one line)} for stores whose drive is not plainly ok (for the UI)."""
    out = {}
    for sid, r in load_readings(data_dir).items():
        if isinstance(r, dict) and r.get("state") in (WARNING, FAILING):
            out[sid] = (r["state"], "; ".join(r.get("reasons") or []))
    return out


# --- applying a verdict ------------------------------------------------------------------


def apply(ms: Any, store_id: str, report: SmartReport, verdict: Verdict) -> bool:
    """A failing drive flags its store (reason `smart`) and downgrades it; True if flagged now.

    A store already failing for SMART is flagged again only when the drive got worse
    (a count grew), which also withdraws an earlier acknowledgement.
    """
    if verdict.state != FAILING:
        return False
    store = ms.store_doc(store_id)
    if store is None:
        return False
    failure = store.get("failure") if isinstance(store.get("failure"), dict) else None
    grew = any("grew" in r for r in verdict.reasons)
    if failure is not None and not grew:
        return False  # already flagged; nothing new to say
    return bool(ms.flag_store_failing(store_id, REASON_SMART, list(verdict.reasons)))


@dataclass
class SmartMonitor:
    """Reads the drives of the connected stores on an engine (one subscription point)."""

    ms: Any
    connected: Callable[[], Mapping[str, Any]]  # store_id -> FileStore (has .path)
    interval: float = 3600.0
    program: str | None = None
    readings: dict[str, dict[str, Any]] = field(default_factory=dict)
    _wake: threading.Event = field(default_factory=threading.Event)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _unsubscribe: Callable[[], Any] | None = None

    def check(self) -> dict[str, Verdict]:
        """Read every connected store's drive once (a drive shared by stores, once)."""
        data_dir = self.ms.config.data_dir
        self.readings = load_readings(data_dir)
        out: dict[str, Verdict] = {}
        by_device: dict[str, SmartReport] = {}
        for sid, fs in sorted(self.connected().items()):
            device = device_for_store(fs.path)
            if device is None:
                continue  # tmpfs, overlay, network: no drive to ask
            report = by_device.get(device) or read(device, self.program)
            by_device[device] = report
            prev_raw = (self.readings.get(sid) or {}).get("report")
            previous = SmartReport.from_json(prev_raw) if isinstance(prev_raw, dict) else None
            if previous is not None and previous.serial != report.serial:
                previous = None  # another drive now: no growth to compare
            verdict = judge(report, previous)
            out[sid] = verdict
            if verdict.state == UNKNOWN and previous is not None:
                continue  # keep the last good reading as the baseline
            self.readings[sid] = {
                "device": device,
                "report": report.to_json(),
                "state": verdict.state,
                "reasons": list(verdict.reasons),
                "time": self.ms.now(),
            }
            if verdict.state in (WARNING, FAILING):
                log.warning(
                    "SMART %s for store %s (%s): %s", verdict.state, sid, device, verdict.line
                )
            try:
                apply(self.ms, sid, report, verdict)
            except Exception as e:
                log.warning("cannot flag store %s after SMART: %s", sid, e)
        save_readings(data_dir, self.readings)
        return out

    def attach(self, engine: Any) -> SmartMonitor:
        self._unsubscribe = engine.subscribe(self._on_event)
        return self

    def _on_event(self, event: Any) -> None:
        kind = getattr(event, "kind", None)
        data = getattr(event, "data", None)
        drives_changed = kind == "drives" or (
            kind == "changed" and isinstance(data, dict) and data.get("added")
        )
        if self._thread is None and not self._stop.is_set() and kind != "activity":
            self._thread = threading.Thread(target=self._loop, name="dmedia-smart", daemon=True)
            self._thread.start()
        elif drives_changed:
            self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.check()
            except Exception as e:
                log.warning("SMART check failed: %s", e)
            self._wake.wait(self.interval)
            self._wake.clear()

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None


def attach(engine: Any) -> SmartMonitor | None:
    """SMART checks on an engine where smartctl is installed (None otherwise)."""
    if smartctl_program() is None:
        log.info("smartctl not found: no SMART checks (Debian: apt install smartmontools)")
        return None
    return SmartMonitor(engine.ms, lambda: dict(engine.connected)).attach(engine)


def check_once(ms: Any, connected: Mapping[str, Any]) -> dict[str, Verdict]:
    """One synchronous SMART pass (daemon --once)."""
    if smartctl_program() is None:
        return {}
    return SmartMonitor(ms, lambda: connected).check()
