"""SVG snapshots of every screen at 120x40, the dashboard at 80x24 and 60x15 (compact).

The app runs on the deterministic real library of tests/tui/library.py (fixed clock, IDs
from a counter, pinned free space), with HOME and TZ pinned by conftest. Accept changes
after looking at them: `uv run pytest tests/tui/test_snapshots.py --snapshot-update`.
"""

from __future__ import annotations

from textual.widgets import DataTable

from dmedia_tui.tui.app import DmediaApp

BIG = (120, 40)
MEDIUM = (80, 24)  # the default terminal
SMALL = (60, 15)  # a tmux pane


async def settle(pilot) -> None:
    app = pilot.app
    await app.settle()
    await pilot.pause()
    await app.settle()
    await pilot.pause()
    # A DataTable sizes its columns for new rows on its next Idle; on a loaded machine the
    # snapshot was once taken first (CI: the store screen with 4-character columns).
    for _ in range(500):
        tables = list(app.screen.query(DataTable))
        if not any(t._require_update_dimensions or t._updated_cells for t in tables):
            break
        await pilot.pause(0.01)
    await pilot.pause()


def test_dashboard(snap_compare, tlib):
    assert snap_compare(DmediaApp(tlib.ms), terminal_size=BIG, run_before=settle)


def test_dashboard_compact(snap_compare, tlib):
    assert snap_compare(DmediaApp(tlib.ms), terminal_size=SMALL, run_before=settle)


def test_dashboard_default_terminal(snap_compare, tlib):
    assert snap_compare(DmediaApp(tlib.ms), terminal_size=MEDIUM, run_before=settle)


def test_dashboard_compact_second_alert_whole(snap_compare, tlib):
    """down moves to the next banner: it is shown whole, the others one line each."""

    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("down")
        await settle(pilot)

    assert snap_compare(DmediaApp(tlib.ms), terminal_size=SMALL, run_before=run_before)


def test_dashboard_read_only(snap_compare, tlib):
    assert snap_compare(DmediaApp(tlib.ms, read_only=True), terminal_size=BIG, run_before=settle)


def test_first_run(snap_compare, empty_lib):
    assert snap_compare(DmediaApp(empty_lib.ms), terminal_size=BIG, run_before=settle)


def test_store_screen(snap_compare, tlib):
    async def run_before(pilot) -> None:
        await settle(pilot)
        pilot.app.open_store(tlib.stores["usb-backup-2"])
        await settle(pilot)

    assert snap_compare(DmediaApp(tlib.ms), terminal_size=BIG, run_before=run_before)


def test_file_screen(snap_compare, tlib):
    async def run_before(pilot) -> None:
        await settle(pilot)
        pilot.app.open_file(tlib.files["MVI_5743.MOV"])
        await settle(pilot)

    assert snap_compare(DmediaApp(tlib.ms), terminal_size=BIG, run_before=run_before)


def test_events_screen(snap_compare, tlib):
    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("e")
        await settle(pilot)
        pilot.app.screen.query_one(DataTable).focus()
        await pilot.pause()

    assert snap_compare(DmediaApp(tlib.ms), terminal_size=BIG, run_before=run_before)


def test_alert_screen(snap_compare, tlib):
    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("exclamation_mark")
        await settle(pilot)

    assert snap_compare(DmediaApp(tlib.ms), terminal_size=BIG, run_before=run_before)


def test_help_screen(snap_compare, tlib):
    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("question_mark")
        await pilot.pause()

    assert snap_compare(DmediaApp(tlib.ms), terminal_size=BIG, run_before=run_before)


def test_confirm_purge(snap_compare, tlib):
    async def run_before(pilot) -> None:
        await settle(pilot)
        await pilot.press("down", "p")
        await settle(pilot)
        await pilot.pause()

    assert snap_compare(DmediaApp(tlib.ms), terminal_size=BIG, run_before=run_before)
