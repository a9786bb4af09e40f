"""The event log, newest first, filtered by type and store."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Select

from dmedia_tui.schema import LOG_TYPES
from dmedia_tui.tui.data import EventLine, fmt_datetime, load_events
from dmedia_tui.tui.widgets.events import TYPE_STYLES
from dmedia_tui.tui.widgets.header import AppHeader

LIMIT = 500


class EventsScreen(Screen):
    BINDINGS = [Binding("escape", "app.pop_screen", "back")]

    def __init__(self, store_id: str | None = None, event_type: str | None = None) -> None:
        super().__init__()
        self.store_id = store_id
        self.event_type = event_type
        self.lines: tuple[EventLine, ...] = ()

    def compose(self) -> ComposeResult:
        yield AppHeader(id="header")
        data = getattr(self.app, "data", None)
        labels = sorted((data.labels if data else {}).items(), key=lambda kv: kv[1])
        with Horizontal(id="event-filters"):
            yield Select(
                [(t.removeprefix("dmedia/"), t) for t in sorted(LOG_TYPES)],
                prompt="every type",
                value=self.event_type or Select.NULL,
                id="filter-type",
            )
            yield Select(
                [(label, sid) for sid, label in labels],
                prompt="every store",
                value=self.store_id or Select.NULL,
                id="filter-store",
            )
        yield DataTable(id="event-table", cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#event-table", DataTable)
        table.add_columns("time", "type", "about")
        table.border_title = "Events, newest first"
        table.focus()
        self.load()

    def on_select_changed(self, event: Select.Changed) -> None:
        value = None if event.value is Select.NULL else str(event.value)
        if event.select.id == "filter-type":
            self.event_type = value
        else:
            self.store_id = value
        self.load()

    @work(thread=True, exclusive=True, group="events")
    def load(self) -> None:
        types = [self.event_type] if self.event_type else None
        data = getattr(self.app, "data", None)
        lines = load_events(
            self.app.ms,
            LIMIT,
            types=types,
            store_id=self.store_id,
            labels=data.labels if data else None,
        )
        self.app.call_from_thread(self._show, lines)

    def _show(self, lines: tuple[EventLine, ...]) -> None:
        self.lines = lines
        table = self.query_one("#event-table", DataTable)
        table.clear()
        for e in lines:
            table.add_row(
                fmt_datetime(e.time),
                Text(e.short, TYPE_STYLES.get(e.short, "cyan")),
                e.subject,
                key=e.id,
            )
        table.border_subtitle = f"{len(lines):,} events" + (
            " (newest)" if len(lines) >= LIMIT else ""
        )

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        line = next((e for e in self.lines if e.id == event.row_key.value), None)
        if line is None:
            return
        if line.file_id:
            self.app.open_file(line.file_id)
        elif line.store_id:
            self.app.open_store(line.store_id)

    def context(self) -> tuple[str | None, str | None]:
        table = self.query_one("#event-table", DataTable)
        if table.row_count and table.cursor_row < len(self.lines):
            line = self.lines[table.cursor_row]
            return line.store_id or self.store_id, line.file_id
        return self.store_id, None

    def refresh_data(self) -> None:
        self.load()
