"""Alert banners: one line per alert, coloured by severity, selectable."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Static

from dmedia_tui.health import DRIVE_FAILURE, Alert

_TITLES = {
    "INSUFFICIENT_STORAGE": "NOT ENOUGH STORAGE",
    "DISCONNECTED_ONLY_COPY": "ONLY COPY OFFLINE",
    "DRIVE_FAILURE": "DRIVE FAILURE",
    "LOW_DURABILITY": "LOW DURABILITY",
    "NO_KNOWN_COPY": "NO KNOWN COPY",
    "SHARED_FILESYSTEM": "SHARED FILESYSTEM",
    "METADATA_INVALID": "INVALID METADATA",
    "DATABASE_OFFLINE": "DATABASE OFFLINE",
}


def alert_title(alert: Alert) -> str:
    return _TITLES.get(alert.code, alert.code.replace("_", " "))


class AlertBanner(Static, can_focus=True):
    """One alert. Enter (or a click) asks the screen to open it."""

    BINDINGS = [Binding("enter", "open", "open alert", show=False)]

    class Selected(Message):
        def __init__(self, alert: Alert) -> None:
            self.alert = alert
            super().__init__()

    def __init__(self, alert: Alert, read_only: bool = False) -> None:
        super().__init__(classes=f"banner -{alert.severity.name.lower()}")
        self.alert = alert
        self.read_only = read_only

    def show_alert(self, alert: Alert) -> None:
        """Show another alert in this banner (same height: no relayout)."""
        if alert == self.alert:
            return
        self.remove_class(f"-{self.alert.severity.name.lower()}")
        self.alert = alert
        self.add_class(f"-{alert.severity.name.lower()}")
        self.refresh()

    def render(self) -> Table:
        a = self.alert
        text = Text.assemble(
            ("▌", "bold"),
            (f"{a.severity.name:<8} ", "bold"),
            (f"{alert_title(a)}  ", "bold"),
            a.message,
        )
        if a.action:
            text.append(f". {a.action}", "italic")
        text.no_wrap = True
        text.overflow = "ellipsis"
        grid = Table.grid(expand=True)
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        grid.add_column(no_wrap=True, justify="right")
        suffix = Text()
        if a.code == DRIVE_FAILURE and a.acknowledgeable and not self.read_only:
            suffix = Text(" [a] acknowledge", "bold")
        grid.add_row(text, suffix)
        return grid

    @property
    def plain(self) -> str:
        """The banner's text as shown, without styles (tests, tmux)."""
        a = self.alert
        ack = a.code == DRIVE_FAILURE and a.acknowledgeable and not self.read_only
        return f"{a.severity.name} {alert_title(a)} {a.message}. {a.action}" + (
            "  [a] acknowledge" if ack else ""
        )

    def action_open(self) -> None:
        self.post_message(self.Selected(self.alert))

    def on_click(self) -> None:
        self.post_message(self.Selected(self.alert))


class Banners(Vertical):
    """The stack of banners; rebuilt only when the alerts change."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._alerts: tuple[Alert, ...] | None = None
        self._banners: list[AlertBanner] = []
        self.read_only = False

    def show_alerts(self, alerts: tuple[Alert, ...]) -> None:
        if alerts == self._alerts:
            return
        if self._alerts is not None and len(self._banners) == len(alerts):
            # Same number of alerts (a count in a message moved): repaint the banners in
            # place; removing and mounting them would lay out the whole screen again.
            self._alerts = alerts
            for banner, alert in zip(self._banners, alerts, strict=True):
                banner.show_alert(alert)
            return
        self._alerts = alerts
        focused = self.screen.focused if self.is_mounted else None
        had_focus = isinstance(focused, AlertBanner)
        self.remove_children()
        banners = [AlertBanner(a, self.read_only) for a in alerts]
        self._banners = banners
        self.mount_all(banners)
        self.display = bool(alerts)
        if had_focus and banners:
            self.call_after_refresh(banners[0].focus)

    @property
    def alerts(self) -> tuple[Alert, ...]:
        return self._alerts or ()
