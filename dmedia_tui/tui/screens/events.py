"""The event log, newest first, filtered by type and store."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import DataTable, Footer, Select

from dmedia_tui.schema import LOG_TYPES
from dmedia_tui.tui.data import EventLine, fmt_datetime, load_events
from dmedia_tui.tui.screens.base import AppScreen
from dmedia_tui.tui.widgets.events import TYPE_STYLES
from dmedia_tui.tui.widgets.header import AppHeader

PAGE = 200  # events fetched at a time; the next page loads when the cursor nears the end


class EventsScreen(AppScreen):
    BINDINGS = [Binding("escape", "app.pop_screen", "back")]

    def __init__(self, store_id: str | None = None, event_type: str | None = None) -> None:
        super().__init__()
        self.store_id = store_id
        self.event_type = event_type
        self.lines: tuple[EventLine, ...] = ()
        self._more = False

    def compose(self) -> ComposeResult:
        yield AppHeader(id="header")
        data = self.dmedia.data
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
    def load(self, limit: int | None = None) -> None:
        """(Re)load from the newest event, keeping as many rows as are shown now."""
        n = limit or max(PAGE, len(self.lines))
        self.app.call_from_thread(self._show, self._fetch(n, None), False, n)

    @work(thread=True, exclusive=True, group="events")
    def load_more(self) -> None:
        if not self.lines or not self._more:
            return
        self.app.call_from_thread(self._show, self._fetch(PAGE, self.lines[-1].id), True, PAGE)

    def _fetch(self, limit: int, cursor: str | None) -> tuple[EventLine, ...]:
        data = self.dmedia.data
        return load_events(
            self.dmedia.ms,
            limit,
            types=[self.event_type] if self.event_type else None,
            store_id=self.store_id,
            labels=data.labels if data else None,
            cursor=cursor,
        )

    def _show(self, lines: tuple[EventLine, ...], append: bool, asked: int) -> None:
        table = self.query_one("#event-table", DataTable)
        if not append:
            self.lines = ()
            table.clear()
        self.lines += lines
        self._more = len(lines) >= asked
        for e in lines:
            table.add_row(
                fmt_datetime(e.time),
                Text(e.short, TYPE_STYLES.get(e.short, "cyan")),
                e.subject,
                key=e.id,
            )
        more = " (more below)" if self._more else ""
        table.border_subtitle = f"{len(self.lines):,} events{more}"

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if self._more and event.cursor_row >= len(self.lines) - 5:
            self.load_more()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        line = next((e for e in self.lines if e.id == event.row_key.value), None)
        if line is None:
            return
        if line.file_id:
            self.dmedia.open_file(line.file_id)
        elif line.store_id:
            self.dmedia.open_store(line.store_id)

    def context(self) -> tuple[str | None, str | None]:
        table = self.query_one("#event-table", DataTable)
        if table.row_count and table.cursor_row < len(self.lines):
            line = self.lines[table.cursor_row]
            return line.store_id or self.store_id, line.file_id
        return self.store_id, None

    def refresh_data(self) -> None:
        self.load()
