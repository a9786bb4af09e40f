"""One alert: what is wrong, which stores and how many files, what to do."""

from __future__ import annotations

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.widgets import Footer, OptionList, Static
from textual.widgets.option_list import Option

from dmedia_tui.health import Alert
from dmedia_tui.tui.data import fmt_size
from dmedia_tui.tui.screens.base import AppScreen
from dmedia_tui.tui.widgets.banners import alert_title
from dmedia_tui.tui.widgets.header import AppHeader
from dmedia_tui.views import FileView

FILES_SHOWN = 200


def alert_text(alert: Alert) -> Text:
    t = Text()
    t.append(f"{alert.severity.name}  {alert_title(alert)}", "bold")
    t.append(f"  ({alert.code})\n\n", "dim")
    t.append(alert.message + "\n\n")
    t.append("What to do: ", "bold")
    t.append(alert.action or "nothing: it resolves itself")
    if alert.files:
        t.append(f"\n\nFiles concerned: {alert.files:,}")
        if alert.bytes:
            t.append(f" ({fmt_size(alert.bytes)})")
    if alert.acknowledgeable:
        t.append("\n\nPress a to acknowledge: the banner goes, the store stays FAILING.", "italic")
    return t


class AlertScreen(AppScreen):
    """Alerts listed on the left when several; the chosen one explained."""

    BINDINGS = [Binding("escape", "app.pop_screen", "back")]

    def __init__(self, alert: Alert) -> None:
        super().__init__()
        self.alert = alert

    def compose(self) -> ComposeResult:
        yield AppHeader(id="header")
        yield Static(
            alert_text(self.alert), id="alert-text", classes=f"-{self.alert.severity.name.lower()}"
        )
        data = self.dmedia.data
        labels = data.labels if data else {}
        options = [
            Option(f"{labels.get(sid, sid[:8] + ' (unknown)')}  {sid}", id=sid)
            for sid in self.alert.store_ids
        ]
        stores = OptionList(*options, id="alert-stores")
        stores.border_title = "Stores concerned (enter: open)"
        stores.display = bool(options)
        yield stores
        files = OptionList(id="alert-files")
        files.border_title = "Files concerned (enter: open)"
        files.display = bool(self.alert.placements)
        yield files
        yield Footer()

    def on_mount(self) -> None:
        if self.alert.placements:
            self._load_files()

    @work(thread=True, exclusive=True, group="alert-files")
    def _load_files(self) -> None:
        docs = self.dmedia.ms.files_for_alert(self.alert, limit=FILES_SHOWN)
        self.app.call_from_thread(self._show_files, docs)

    def _show_files(self, docs: list[dict]) -> None:
        files = self.query_one("#alert-files", OptionList)
        files.clear_options()
        for view in filter(None, map(FileView.of, docs)):  # a malformed field shows as nothing
            name = view.name or view.id[:12]
            files.add_option(Option(f"{name:<28} {fmt_size(view.bytes):>9}", id=view.id))
        if self.alert.files > len(docs):
            files.border_subtitle = f"first {len(docs):,} of {self.alert.files:,}"

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        if not event.option.id:
            return
        if event.option_list.id == "alert-files":
            self.dmedia.open_file(event.option.id)
        else:
            self.dmedia.open_store(event.option.id)

    def context(self) -> tuple[str | None, str | None]:
        stores = self.query_one("#alert-stores", OptionList)
        if stores.highlighted is not None and self.alert.store_ids:
            return self.alert.store_ids[stores.highlighted], None
        return (self.alert.store_ids[0] if self.alert.store_ids else None), None

    def refresh_data(self) -> None:
        """Close when the alert is gone (e.g. acknowledged)."""
        data = self.dmedia.data
        if data is not None and self.alert not in data.health.alerts:
            same = [a for a in data.health.alerts if a.code == self.alert.code]
            if same:
                self.alert = same[0]
                self.query_one("#alert-text", Static).update(alert_text(self.alert))
            else:
                self.query_one("#alert-text", Static).update(
                    Text("This alert is resolved.", "bold green")
                )
