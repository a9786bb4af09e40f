"""The dashboard: banners, stores, durability, drives, activity, latest events."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.events import Resize
from textual.widgets import DataTable, Footer, Static

from dmedia_tui.health import DATABASE_OFFLINE
from dmedia_tui.tui.data import LOADING, DashboardData
from dmedia_tui.tui.screens.base import AppScreen
from dmedia_tui.tui.widgets.activity import ActivityPanel
from dmedia_tui.tui.widgets.banners import AlertBanner, Banners
from dmedia_tui.tui.widgets.drives import DrivesPanel
from dmedia_tui.tui.widgets.events import EventList
from dmedia_tui.tui.widgets.header import AppHeader
from dmedia_tui.tui.widgets.histogram import DurabilityHistogram
from dmedia_tui.tui.widgets.stores import StoresTable
from dmedia_tui.tui.widgets.summary import CompactSummary

FIRST_RUN = "No stores yet: dmedia-tui store init /media/drive"

COMPACT_WIDTH = 80
COMPACT_HEIGHT = 20
# Lines the full layout keeps for its panels (stores 6, drives/activity 6, events 4),
# and the compact one for its summary line; the header and footer take one each.
PANELS_MIN = 16
COMPACT_MIN = 1


def is_compact(width: int, height: int) -> bool:
    return width < COMPACT_WIDTH or height < COMPACT_HEIGHT


class DashboardScreen(AppScreen):
    """Receives DashboardData from the app and hands each panel its part."""

    AUTO_FOCUS = "#stores"  # actions target the selected store; banners are a tab away

    def __init__(self, compact: bool | None = None) -> None:
        super().__init__(id="dashboard")
        self.forced_compact = compact
        self.data: DashboardData | None = None

    def compose(self) -> ComposeResult:
        yield AppHeader(id="header")
        yield Banners(id="banners")
        yield CompactSummary(id="summary")
        yield Static(Text(LOADING, "dim"), id="first-run")
        with Vertical(id="main"):
            with Horizontal(id="top"):
                yield StoresTable(id="stores")
                yield DurabilityHistogram(id="histogram")
            with Horizontal(id="middle"):
                yield DrivesPanel(id="drives")
                yield ActivityPanel(id="activity")
            yield EventList(id="events")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#stores").border_title = "Stores"
        self.query_one("#histogram").border_title = "Durability (user files)"
        self.query_one("#drives").border_title = "Drives"
        self.query_one("#activity").border_title = "Activity"
        self.query_one("#events").border_title = "Events"
        self.query_one(Banners).read_only = self.dmedia.read_only
        self.query_one(Banners).display = False
        self._apply_compact(self.size.width, self.size.height)

    def on_resize(self, event: Resize) -> None:
        self._apply_compact(event.size.width, event.size.height)

    def _apply_compact(self, width: int, height: int) -> None:
        compact = self.forced_compact
        if compact is None:
            compact = is_compact(width, height)
        self.set_class(compact, "-compact")
        banners = self.query_one(Banners)
        banners.set_budget(height - 2 - (COMPACT_MIN if compact else PANELS_MIN))
        if compact:
            self._focus_what_is_visible()

    def _focus_what_is_visible(self) -> None:
        """Compact: the stores table is hidden, so keys must not act on its selection;
        focus goes to the banner shown whole (the one the keys then act on)."""
        focused = self.focused
        if isinstance(focused, AlertBanner) and focused.display:
            return
        whole = self.query_one(Banners).whole_banner
        if whole is not None:
            self.set_focus(whole)
        elif focused is not None and not isinstance(focused, AlertBanner):
            self.set_focus(None)

    def show(self, data: DashboardData) -> None:
        """Render fresh data (UI thread); panels whose input did not change are left alone.

        `self.data` becomes `data` only once every panel took it: if a widget is not
        composed yet (NoMatches partway), the app's retry compares with what was really
        shown, not with this data, and renders every panel.
        """
        previous = self.data
        h = data.health
        old = previous.health if previous else None
        self.query_one(Banners).show_alerts(h.alerts)
        if self.has_class("-compact"):
            self.call_after_refresh(self._focus_what_is_visible)
        if old is None or old.histogram != h.histogram or old.files != h.files:
            self.query_one(CompactSummary).show_health(h)
        offline = any(a.code == DATABASE_OFFLINE for a in h.alerts)
        empty = not h.store_rows and not h.files and not offline  # offline is not first run
        if old is None:
            self.query_one("#first-run", Static).update(Text(FIRST_RUN, "bold"))
        self.set_class(empty, "-first-run")
        self.query_one(StoresTable).show_rows(h.store_rows, h.now)
        self.query_one(DurabilityHistogram).show_buckets(h.histogram)
        if (
            previous is None
            or previous.health.store_rows != h.store_rows
            or previous.smart != data.smart
        ):
            engine = self.dmedia.engine
            self.query_one(DrivesPanel).show_rows(
                h.store_rows,
                getattr(engine, "drive_source", None) if engine else None,
                data.smart,
            )
        if previous is None or previous.events != data.events:
            self.query_one(EventList).show_events(data.events, h.now)
        self.data = data

    def show_activity(self, activities: list[Any], rates: list[float], engine: bool) -> None:
        self.query_one(ActivityPanel).show(activities, rates, engine)

    def context(self) -> tuple[str | None, str | None]:
        """The store (and file) the user is pointing at, for actions."""
        focused = self.focused
        if isinstance(focused, AlertBanner):
            return (focused.alert.store_ids[0] if focused.alert.store_ids else None), None
        if self.has_class("-compact"):  # the stores table is hidden: no silent target
            return None, None
        return self.query_one(StoresTable).selected_store_id, None

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "stores" and event.row_key.value:
            self.dmedia.open_store(event.row_key.value)

    def on_alert_banner_selected(self, event: AlertBanner.Selected) -> None:
        self.dmedia.open_alert(event.alert)
