"""One file: where its copies are, when each was verified, corrupt history, events."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, Static

from dmedia_tui.tui.data import FileData, fmt_age, fmt_datetime, fmt_size, load_file
from dmedia_tui.tui.screens.base import AppScreen
from dmedia_tui.tui.widgets.events import event_text
from dmedia_tui.tui.widgets.header import AppHeader


def locations_table(data: FileData) -> Table:
    t = Table(expand=True, box=None, header_style="bold")
    for col in ("store", "online", "copies", "verified", "mtime"):
        t.add_column(col, no_wrap=True)
    for loc in data.locations:
        verified = (
            f"{fmt_datetime(loc.verified)} ({fmt_age(loc.verified, data.now)})"
            if loc.verified
            else Text("never", "yellow")
        )
        t.add_row(
            loc.label + (" (pinned)" if loc.pinned else ""),
            Text("online", "green") if loc.online else Text("offline", "dim"),
            Text(str(loc.copies), "red" if loc.copies == 0 else ""),
            verified,
            fmt_datetime(loc.mtime),
        )
    if not data.locations:
        t.add_row(Text("no known copy", "bold red"), "", "", "", "")
    return t


def file_summary(data: FileData) -> Text:
    v = data.view
    t = Text()
    t.append(v.name or "(no name)", "bold")
    t.append(f"\n{v.id}\n", "dim")
    t.append(f"{fmt_size(v.bytes)} · origin {v.origin} · ")
    dur = v.durability
    t.append(f"durability {dur}", "green" if dur >= 3 else ("yellow" if dur == 2 else "bold red"))
    return t


def corrupt_text(data: FileData) -> Text:
    if not data.corrupt:
        return Text("no corrupt copy on record", "dim")
    t = Text()
    for label, when in data.corrupt:
        if t:
            t.append("\n")
        t.append("corrupt ", "bold red")
        t.append(f"on {label} at {fmt_datetime(when)} (quarantined)")
    return t


class FileScreen(AppScreen):
    BINDINGS = [Binding("escape", "app.pop_screen", "back")]

    def __init__(self, file_id: str) -> None:
        super().__init__()
        self.file_id = file_id
        self.data: FileData | None = None

    def compose(self) -> ComposeResult:
        yield AppHeader(id="header")
        yield Static(Text("loading…", "dim"), id="file-summary")
        yield Static(id="file-locations")
        yield Static(id="file-corrupt")
        yield Static(id="file-events")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#file-locations").border_title = "Locations"
        self.query_one("#file-corrupt").border_title = "Corrupt history"
        self.query_one("#file-events").border_title = "Events"
        self.load()

    @work(thread=True, exclusive=True, group="file")
    def load(self) -> None:
        app = self.dmedia
        online = set(app.online_ids)
        data = load_file(app.ms, self.file_id, online)
        app.call_from_thread(self._show, data)

    def _show(self, data: FileData | None) -> None:
        self.data = data
        if data is None:
            self.query_one("#file-summary", Static).update(
                Text(f"file {self.file_id} is not in the library", "bold")
            )
            return
        self.query_one("#file-summary", Static).update(file_summary(data))
        self.query_one("#file-locations", Static).update(locations_table(data))
        self.query_one("#file-corrupt", Static).update(corrupt_text(data))
        events = Text("\n").join(event_text(e, data.now) for e in data.events)
        self.query_one("#file-events", Static).update(events or Text("no events", "dim"))

    def context(self) -> tuple[str | None, str | None]:
        return None, self.file_id

    def refresh_data(self) -> None:
        self.load()
