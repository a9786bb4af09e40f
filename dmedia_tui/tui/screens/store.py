"""One store: details, verification ages, and its files, most fragile first, paged."""

from __future__ import annotations

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import DataTable, Footer, Static

from dmedia_tui.health import StoreRow
from dmedia_tui.tui.data import PAGE, FileRow, bar, fmt_age, fmt_datetime, fmt_size, load_files_page
from dmedia_tui.tui.screens.base import AppScreen
from dmedia_tui.tui.widgets.header import AppHeader
from dmedia_tui.tui.widgets.stores import space_text, state_text

DUR_STYLES = {0: "bold red", 1: "red", 2: "yellow"}


def store_details(row: StoreRow, now: float) -> Table:
    t = Table.grid(padding=(0, 2))
    t.add_column(style="dim")
    t.add_column()
    t.add_column(style="dim")
    t.add_column()
    kind = "internal" if row.internal else ("removable" if row.removable else "fixed")
    t.add_row("store", row.store_id, "state", state_text(row, now))
    online = "yes" if row.online else "no"
    if row.unreachable_at:
        online = (
            f"no: {row.machine_name or 'its machine'} is on, unreachable at {row.unreachable_at}"
        )
    t.add_row("machine", row.machine_name or "-", "online", online)
    t.add_row("drive", f"{row.drive_serial or '-'} ({kind})", "copy weight", str(row.copies))
    t.add_row("space free", space_text(row), "size", fmt_size(row.bytes_total))
    t.add_row("files", f"{row.files:,} ({row.user_files:,} user)", "bytes", fmt_size(row.bytes))
    seen = "now" if row.online else f"{fmt_datetime(row.last_seen)} ({fmt_age(row.last_seen, now)})"
    t.add_row("last seen", seen, "corrupt found", f"{row.corrupt_count:,}")
    return t


def verification_text(row: StoreRow, now: float) -> Text:
    v = row.verification
    if v is None or not v.copies:
        return Text("no copies to verify", "dim")
    frac = v.never / v.copies
    t = Text("never verified ")
    t.append(bar(frac, 20), "red" if v.never else "green")
    t.append(f" {v.never:,} of {v.copies:,} ({frac * 100:.0f} %)\n")
    t.append("verified: oldest ")
    t.append(fmt_age(v.oldest, now), "bold")
    t.append(" · median ")
    t.append(fmt_age(v.median, now), "bold")
    t.append(" · newest ")
    t.append(fmt_age(v.newest, now), "bold")
    t.append("  ago", "dim")
    return t


class StoreScreen(AppScreen):
    PAGE_SIZE = PAGE

    BINDINGS = [
        Binding("escape", "app.pop_screen", "back"),
        Binding("pagedown", "more", "more", show=False),
    ]

    def __init__(self, store_id: str) -> None:
        super().__init__()
        self.store_id = store_id
        self.row: StoreRow | None = None
        self.files: list[FileRow] = []
        self.exhausted = False
        self._loading = False

    def compose(self) -> ComposeResult:
        yield AppHeader(id="header")
        yield Static(id="store-details")
        yield Static(id="store-verification")
        table: DataTable = DataTable(id="files", cursor_type="row")
        yield table
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one("#files", DataTable)
        table.add_columns("name", "dur.", "stores", "here", "verified", "size", "origin")
        table.border_title = "Files, most fragile first"
        self.refresh_store()
        self.load_page()

    def refresh_store(self) -> None:
        """Take this store's row from the app's latest health (no query)."""
        data = self.dmedia.data
        if data is None:
            return
        row = next((r for r in data.health.store_rows if r.store_id == self.store_id), None)
        details = self.query_one("#store-details", Static)
        if row is None:
            details.update(Text(f"store {self.store_id} is no longer in the library", "bold"))
            return
        self.row = row
        details.border_title = f"Store {row.label}"
        shown: RenderableType = store_details(row, data.health.now)
        warn = getattr(data, "smart", {}).get(row.store_id)
        if warn is not None:  # the drive's SMART state (dmedia_tui/smart.py)
            style = "bold red" if warn[0] == "failing" else "yellow"
            shown = Group(shown, Text(f"SMART {warn[0]}: {warn[1]}", style))
        details.update(shown)
        self.query_one("#store-verification", Static).update(
            verification_text(row, data.health.now)
        )

    @work(thread=True, exclusive=True, group="page")
    def load_page(self) -> None:
        after = self.files[-1].key if self.files else None
        rows = load_files_page(self.dmedia.ms, self.store_id, after, self.PAGE_SIZE)
        self.app.call_from_thread(self._add_page, rows)

    def _add_page(self, rows: tuple[FileRow, ...]) -> None:
        self._loading = False
        self.exhausted = len(rows) < self.PAGE_SIZE
        table = self.query_one("#files", DataTable)
        now = self.dmedia.ms.now()
        for r in rows:
            self.files.append(r)
            table.add_row(
                r.name[:40],
                Text(str(r.durability), DUR_STYLES.get(r.durability, "green")),
                str(r.stores),
                str(r.copies_here),
                fmt_age(r.verified, now) if r.verified else "never",
                fmt_size(r.bytes),
                r.origin,
                key=r.id,
            )
        if not self.files:
            table.border_subtitle = "no files"
        else:
            more = "" if self.exhausted else " (more: page down)"
            table.border_subtitle = f"{len(self.files):,} shown{more}"

    def action_more(self) -> None:
        table = self.query_one("#files", DataTable)
        if not self.exhausted and not self._loading:
            self._loading = True
            self.load_page()
        table.action_page_down()

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        """Load the next page when the cursor nears the end (scrolling)."""
        last = event.cursor_row >= len(self.files) - 1 > 0
        if last and not self.exhausted and not self._loading:
            self._loading = True
            self.load_page()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value:
            self.dmedia.open_file(event.row_key.value)

    def context(self) -> tuple[str | None, str | None]:
        return self.store_id, None

    def refresh_data(self) -> None:
        self.refresh_store()
