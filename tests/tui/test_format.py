"""The pure helpers the widgets share: numbers, ages, bars, event lines, the summary."""

from __future__ import annotations

from dmedia_tui.health import Bucket, Health
from dmedia_tui.tui.data import bar, event_line, fmt_age, fmt_count, fmt_size, fmt_when
from dmedia_tui.tui.screens.dashboard import is_compact
from dmedia_tui.tui.widgets.header import header_text
from dmedia_tui.tui.widgets.summary import summary_line
from tests.tui.library import NOW


def test_sizes_counts_and_ages():
    assert fmt_size(0) == "0 B"
    assert fmt_size(1_200_000_000_000) == "1.2 TB"
    assert [fmt_count(n) for n in (999, 41_000, 2_500_000)] == ["999", "41k", "2.5M"]
    ages = [fmt_age(NOW - d, NOW) for d in (10, 300, 7200, 3 * 86400)]
    assert ages == ["now", "5m", "2h", "3d"]
    assert fmt_age(None, NOW) == "never"


def test_event_times_show_the_date_when_older_than_a_day():
    assert fmt_when(NOW - 3600, NOW) == "11:00 "
    assert fmt_when(NOW - 2 * 86400, NOW) == "23 Nov"


def test_bar_is_always_its_width():
    assert bar(0.5, 6) == "███░░░"
    assert bar(-1, 4) == "░░░░" and bar(7, 4) == "████"


def test_event_line_names_the_file_and_the_store():
    sid, fid = "3" * 24, "A" * 48
    doc = {"_id": "x", "type": "dmedia/file/corrupt", "time": NOW, "file_id": fid, "store_id": sid}
    line = event_line(doc, {sid: "usb-backup-2"}, {fid: "MVI_5751.MOV"})
    assert (line.short, line.subject) == ("file/corrupt", "MVI_5751.MOV on usb-backup-2")
    doc = {
        "_id": "y",
        "type": "dmedia/store/purge",
        "time": NOW,
        "store_id": sid,
        "reason": "atime",
        "count": 1,
    }
    assert event_line(doc, {}, {}).subject == "33333333 (atime, 1 file)"


def test_summary_line_for_compact_panes():
    buckets = (Bucket(0, 4, 1), Bucket(1, 30, 1), Bucket(2, 200, 1), Bucket(3, 1000, 1))
    health = Health((), buckets, (), 1234, 4, NOW)
    assert summary_line(health).plain == "1,234 files · 3: 1,000 2: 200 1: 30 0: 4"


def test_compact_threshold():
    assert is_compact(60, 15) and is_compact(79, 40) and is_compact(120, 19)
    assert not is_compact(80, 24) and not is_compact(120, 40)


def test_header_badge_comes_first_so_narrow_panes_keep_it():
    text = header_text("~/lib.sqlite3", "studio", "engine running", True).plain
    assert text.index("SIMULATED TIME") < text.index("library")
    assert "SIMULATED" not in header_text("x", "y", "read-only", False).plain


def test_header_gives_the_library_path_less_room_than_the_engine_state():
    lib = "~/.local/share/dmedia-tui/library.sqlite3"
    monitor = "read-only monitor: another engine runs"
    for width, state in ((120, monitor), (80, monitor), (60, "engine running")):
        text = header_text(lib, "studio", state, True, width).plain
        assert len(text) <= width, (width, text)
        assert text.endswith(state) and "SIMULATED TIME" in text, (width, text)
    wide = header_text(lib, "studio", "engine running", False, 120).plain
    assert lib in wide and "machine studio" in wide
    shown = header_text(lib, "studio", monitor, False, 120).plain
    assert "…" in shown and "dmedia-tui/library.sqlite3 · machine studio" in shown
    assert "machine studio · engine running" in header_text(
        lib, "studio", "engine running", True, 80
    )
