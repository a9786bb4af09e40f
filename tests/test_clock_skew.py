"""Clock skew between machines (issue 10, defect 9), two config dirs on one library.

"studio" keeps true time; "laptop" runs a year ahead. The laptop once purged the studio's
online store (the studio's real heartbeat looked a year old to it), and the studio counted
the laptop's heartbeat as fresh for a year after it was switched off. Other machines are
now judged by what this machine saw change (liveness.py).
"""

from __future__ import annotations

from pathlib import Path

from tests.conftest import NOW
from tests.integration.harness import Machine, alert, make_camera_files, store_row

YEAR = 365 * 86400
DAY = 86400


def test_a_machine_a_year_ahead_never_purges_an_online_store_and_is_reported(
    tmp_path: Path, db_url: str
):
    studio = Machine(tmp_path / "m", "studio", db_url, NOW)
    laptop = Machine(tmp_path / "m", "laptop", db_url, NOW + YEAR)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    sa = studio.init_store(a, "studio-int")
    photos = tmp_path / "photos"
    make_camera_files(photos, 3)
    studio.ok("import", str(photos))
    sb = laptop.init_store(b, "laptop-int", "--same-filesystem")
    studio.once(now=NOW)
    # The studio stays on (a heartbeat a minute); the laptop, a year ahead, works too.
    for i in range(4):
        laptop.once(now=NOW + YEAR + 60 * i)
        studio.once(now=NOW + 60 * (i + 1))
    assert laptop.events("dmedia/store/purge", now=NOW + YEAR + 300) == []
    assert laptop.events("dmedia/store/downgrade", now=NOW + YEAR + 300) == []
    _, st = laptop.status(now=NOW + YEAR + 300)
    assert store_row(st, sa)["state"] == "ok", store_row(st, sa)
    # Both see the skew, naming the other machine.
    _, st = studio.status(now=NOW + 270)
    skew = alert(st, "CLOCK_SKEW")
    assert skew and skew["severity"] == "warning" and "laptop" in skew["message"]
    assert "ahead" in skew["message"] and "a year" in skew["message"], skew
    _, st = laptop.status(now=NOW + YEAR + 300)
    skew = alert(st, "CLOCK_SKEW")
    assert skew and "studio" in skew["message"] and "behind" in skew["message"], skew
    # The laptop is switched off: its heartbeat from the future is not fresh forever.
    studio.once(now=NOW + 600)
    _, st = studio.status(now=NOW + 600)
    assert store_row(st, sb)["state"] != "ok", store_row(st, sb)
    # ... and its store is downgraded after 3 days of the studio's time, purged after 8.
    studio.once(now=NOW + 4 * DAY)
    downgrades = studio.events("dmedia/store/downgrade", now=NOW + 4 * DAY)
    assert [e["store_id"] for e in downgrades] == [sb]
    studio.once(now=NOW + 9 * DAY)
    assert [e["store_id"] for e in studio.events("dmedia/store/purge", now=NOW + 9 * DAY)] == [sb]


def test_a_first_look_from_a_machine_ahead_acts_on_nothing_another_machine_lists(
    tmp_path: Path, db_url: str
):
    """The laptop's very first run, a year ahead: the studio's heartbeat looks a year old
    but has not been watched yet, so its store is left alone."""
    studio = Machine(tmp_path / "m", "studio", db_url, NOW)
    laptop = Machine(tmp_path / "m", "laptop", db_url, NOW + YEAR)
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    sa = studio.init_store(a, "studio-int")
    studio.once()
    laptop.init_store(b, "laptop-int", "--same-filesystem")
    laptop.once()
    laptop.once(now=NOW + YEAR + 10)
    assert laptop.events("dmedia/store/purge") == []
    _, st = laptop.status()
    assert store_row(st, sa)["state"] != "downgraded", store_row(st, sa)


def test_skew_is_reported_only_when_certain_and_future_heartbeats_are_clamped():
    from dmedia_tui.liveness import Observations

    def doc(rev: str, atime: float) -> dict:
        return {"_id": "M" * 24, "_rev": rev, "atime": atime, "hostname": "nas"}

    obs = Observations()
    obs.observe([doc("1-a", NOW)], NOW)
    # A heartbeat written any time between two looks a day apart: no false alarm.
    obs.observe([doc("2-b", NOW + 3600)], NOW + DAY)
    assert obs.skews([doc("2-b", NOW + 3600)], NOW + DAY) == []
    assert obs.effective_atime(doc("2-b", NOW + 3600), NOW + DAY) == NOW + 3600
    # A heartbeat dated a day before our previous look: its clock runs behind ours.
    obs.observe([doc("3-x", NOW)], NOW + DAY + 30)
    assert obs.effective_atime(doc("3-x", NOW), NOW + DAY + 30) == NOW + DAY
    # A heartbeat a year ahead: clamped to when it arrived, reported at once.
    far = doc("4-c", NOW + YEAR)
    obs.observe([far], NOW + DAY + 60)
    assert obs.effective_atime(far, NOW + DAY + 60) == NOW + DAY + 60
    assert obs.effective_atime(far, NOW + DAY + 900) == NOW + DAY + 60  # not fresh forever
    (s,) = obs.skews([far], NOW + DAY + 900)
    assert s.hostname == "nas" and YEAR - DAY - 120 < s.seconds < YEAR
