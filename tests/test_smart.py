"""SMART: real `smartctl --json` outputs of real drives (tests/smart_fixtures, see its
README) judged ok / warning / failing, and a failing drive under a real store flagging it
before a copy rots.

No disk here speaks SMART, so the recordings are served by the stand-in `smartctl` in
tests/smart_fixtures, put first on PATH: dmedia-tui runs it exactly as it runs the real one.
The store scenario uses a real loop device with ext4 (root only; skipped otherwise).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from dmedia_tui import smart
from tests import blockdev
from tests.conftest import NOW
from tests.integration.harness import Machine, codes, make_camera_files, store_row

FIXTURES = Path(__file__).parent / "smart_fixtures"
HEALTHY = FIXTURES / "healthy-wdc-wd140edfz.json"
HEALTHY_NVME = FIXTURES / "healthy-nvme-intel-660p.json"
PREFAIL = FIXTURES / "prefail-wdc-wd4000fyyx-387-reallocated.json"
PREFAIL_NVME = FIXTURES / "prefail-nvme-samsung-970-media-errors.json"
FAILED = FIXTURES / "failed-hitachi-hds721050dle630.json"
CRC = FIXTURES / "crc-errors-samsung-840.json"

blockdevs = blockdev.blockdevs


def load(path: Path) -> smart.SmartReport:
    return smart.parse(json.loads(path.read_text()), "/dev/sdx")


@pytest.fixture
def standin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The stand-in smartctl first on PATH; returns a function mapping devices to fixtures."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    shutil.copy(FIXTURES / "smartctl", bindir / "smartctl")
    mapping = tmp_path / "smartctl-map.json"
    mapping.write_text("{}")
    monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("SMARTCTL_STANDIN_MAP", str(mapping))

    def serve(devices: dict[str, Path]) -> None:
        mapping.write_text(json.dumps({k: str(v) for k, v in devices.items()}))

    return serve


# --- parsing and judging real outputs ------------------------------------------------------


def test_healthy_drives_are_ok():
    r = load(HEALTHY)
    assert (r.model, r.serial, r.passed) == ("WDC WD140EDFZ-11A0VA0", "9RK1XXXX", True)
    assert (r.reallocated, r.pending, r.uncorrectable, r.crc_errors) == (0, 0, 0, 0)
    assert (r.power_on_hours, r.temperature) == (1730, 32)
    assert smart.judge(r).state == smart.OK
    n = load(HEALTHY_NVME)
    assert n.protocol == "NVMe" and n.media_errors == 0 and n.power_on_hours == 2401
    assert smart.judge(n).state == smart.OK


def test_prefail_drive_warns_and_fails_once_bad_sectors_grow():
    r = load(PREFAIL)
    assert r.passed is True and r.reallocated == 387 and r.power_on_hours == 37788
    v = smart.judge(r)
    assert v.state == smart.WARNING and v.reasons == ("387 reallocated sectors",)
    assert smart.judge(r, previous=r).state == smart.WARNING  # stable: a warning only
    worse = smart.SmartReport(**{**r.to_json(), "failing_attributes": (), "reallocated": 395})
    v = smart.judge(worse, previous=r)
    assert v.state == smart.FAILING and "reallocated sectors grew 387 -> 395" in v.reasons
    nv = smart.judge(load(PREFAIL_NVME))
    assert nv.state == smart.WARNING and nv.reasons == ("7 media errors",)


def test_failed_drive_is_failing():
    r = load(FAILED)
    assert r.passed is False and r.exit_status == 216
    assert (r.reallocated, r.pending, r.power_on_hours) == (1975, 8, 65592)
    assert r.temperature == 25  # not the packed raw value of attribute 194
    v = smart.judge(r)
    assert v.state == smart.FAILING
    assert v.reasons[:2] == ("SMART overall health: FAILED", "failing now: Reallocated_Sector_Ct")


def test_crc_errors_are_the_cable_not_the_drive():
    r = load(CRC)
    v = smart.judge(r, previous=r)
    assert r.crc_errors == 108 and v.state == smart.WARNING
    assert "check the cable" in v.reasons[0]


def test_stand_in_has_the_real_interface(standin):
    standin({"/dev/sdz": FAILED})
    r = smart.read("/dev/sdz")
    assert r.device == "/dev/sdz" and r.exit_status == 216 and r.passed is False
    unknown = smart.read("/dev/nope")
    assert unknown.exit_status == 2 and "No such device" in (unknown.error or "")
    assert smart.judge(unknown).state == smart.UNKNOWN


# --- a store on a failing drive ----------------------------------------------------------------


def test_failing_drive_flags_its_store_before_a_copy_rots(tmp_path, standin, blockdevs, mounts):
    """A store on a real (loop) drive whose SMART says FAILED: `daemon --once` flags the
    store (reason smart), logs it, raises DRIVE_FAILURE and copies its files elsewhere,
    while every copy on it still verifies."""
    m = Machine(tmp_path / "machines", "studio", str(tmp_path / "library.sqlite3"), NOW)
    disk = blockdevs.ext4("sick", "SICK", size="64M")
    sick = m.init_store(disk.mount_point, "sick")
    others = []
    for name in "bcd":
        p = mounts.new(name, 16)
        others.append(m.init_store(p, name, *mounts.same_fs_flag))
    make_camera_files(tmp_path / "photos", 4, max_kb=40)
    m.ok("import", str(tmp_path / "photos"), "--store", "sick")
    standin({disk.devname: PREFAIL})  # a drive with old, stable reallocated sectors
    m.once()
    code, st = m.status()
    assert "DRIVE_FAILURE" not in codes(st)
    readings = smart.load_readings(m.data_home / "dmedia-tui")
    assert readings[sick]["state"] == smart.WARNING
    assert readings[sick]["device"] == disk.devname

    standin({disk.devname: FAILED})
    m.once(now=NOW + 3600)
    code, st = m.status(now=NOW + 3600)
    assert code == 2 and "DRIVE_FAILURE" in codes(st)
    row = store_row(st, sick)
    assert row["state"] == "failing" and row["copies"] == 0
    failing = m.events("store/failing", now=NOW + 3600)
    assert [(e["store_id"], e["reason"]) for e in failing] == [(sick, "smart")]
    assert "SMART overall health: FAILED" in failing[0]["errors"]
    assert m.events("file/corrupt", now=NOW + 3600) == []  # no copy had to rot first
    assert st["histogram"]["3"] == 4  # copied to the other three stores meanwhile

    # Another round with the same reading: nothing new is logged.
    m.once(now=NOW + 7200)
    assert len(m.events("store/failing", now=NOW + 7200)) == 1


def test_growing_bad_sectors_fail_a_passing_drive(tmp_path, standin, blockdevs):
    m = Machine(tmp_path / "machines", "studio", str(tmp_path / "library.sqlite3"), NOW)
    disk = blockdevs.ext4("aging", "AGING", size="64M")
    sid = m.init_store(disk.mount_point, "aging")
    standin({disk.devname: PREFAIL})
    m.once()
    assert "DRIVE_FAILURE" not in codes(m.status()[1])
    data = json.loads(PREFAIL.read_text())
    for a in data["ata_smart_attributes"]["table"]:
        if a["id"] == 5:
            a["raw"]["value"] += 12
            a["raw"]["string"] = str(a["raw"]["value"])
    worse = tmp_path / "prefail-worse.json"
    worse.write_text(json.dumps(data))
    standin({disk.devname: worse})
    m.once(now=NOW + 3600)
    code, st = m.status(now=NOW + 3600)
    assert "DRIVE_FAILURE" in codes(st) and store_row(st, sid)["state"] == "failing"
    ev = m.events("store/failing", now=NOW + 3600)
    assert "reallocated sectors grew 387 -> 399" in ev[0]["errors"]
