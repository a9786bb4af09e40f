"""Alert banners: every alert says what is wrong and what to do, at every terminal size.

A banner's text is its severity, title, message and action. When every banner fits the
room the screen gives them (`Banners.budget`), each is shown whole, wrapped over as many
lines as it needs. When they do not, one banner is shown whole (the worst, or the one the
user moved to with tab / up / down) and the others one line each, cut at the end; if even
those lines do not fit, the last line says how many more there are. Nothing is ever cut in
the middle of the banner that is shown whole, so its action is always readable.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text
from textual.binding import Binding
from textual.containers import Vertical
from textual.events import Resize
from textual.message import Message
from textual.widgets import Static

from dmedia_tui import health
from dmedia_tui.health import DRIVE_FAILURE, Alert

_TITLES = {
    health.INSUFFICIENT_STORAGE: "NOT ENOUGH STORAGE",
    health.DISCONNECTED_ONLY_COPY: "ONLY COPY OFFLINE",
    health.DRIVE_FAILURE: "DRIVE FAILURE",
    health.LOW_DURABILITY: "LOW DURABILITY",
    health.NO_KNOWN_COPY: "NO KNOWN COPY",
    health.SHARED_FILESYSTEM: "SHARED FILESYSTEM",
    health.METADATA_INVALID: "INVALID METADATA",
    health.DATABASE_OFFLINE: "DATABASE OFFLINE",
}
ACK_HINT = "[a] acknowledge"
_MEASURE = Console(width=1000, color_system=None, legacy_windows=False)


def alert_title(alert: Alert) -> str:
    return _TITLES.get(alert.code, alert.code.replace("_", " "))


PREFIX = 10  # '▌PANIC    ': the severity column; wrapped lines are indented past it


def banner_prefix(alert: Alert) -> Text:
    return Text.assemble(("▌", "bold"), (f"{alert.severity.name:<8} ", "bold"))


def banner_body(alert: Alert, ack: bool) -> Text:
    """'TITLE  message. Action  [a] acknowledge'."""
    text = Text.assemble((f"{alert_title(alert)}  ", "bold"), alert.message)
    if alert.action:
        text.append(". ")
        text.append(alert.action, "italic")
    if ack:
        text.append(f"  {ACK_HINT}", "bold")
    return text


def banner_text(alert: Alert, ack: bool) -> Text:
    """The whole banner on one line: '▌PANIC    TITLE  message. Action'."""
    return banner_prefix(alert) + banner_body(alert, ack)


def wrapped_lines(text: Text, width: int) -> int:
    """How many lines `text` takes wrapped at `width` cells."""
    return max(1, len(text.wrap(_MEASURE, max(1, width))))


class AlertBanner(Static, can_focus=True):
    """One alert. Enter (or a click) asks the screen to open it."""

    BINDINGS = [
        Binding("enter", "open", "open alert", show=False),
        Binding("down", "step(1)", "next alert", show=False),
        Binding("up", "step(-1)", "previous alert", show=False),
    ]

    class Selected(Message):
        def __init__(self, alert: Alert) -> None:
            self.alert = alert
            super().__init__()

    def __init__(self, alert: Alert, read_only: bool = False) -> None:
        super().__init__(classes=f"banner -{alert.severity.name.lower()}")
        self.alert = alert
        self.read_only = read_only
        self.whole = True  # shown whole (wrapped), or one line cut at the end

    @property
    def acknowledgeable(self) -> bool:
        a = self.alert
        return a.code == DRIVE_FAILURE and a.acknowledgeable and not self.read_only

    def show_alert(self, alert: Alert) -> None:
        """Show another alert in this banner."""
        if alert == self.alert:
            return
        self.remove_class(f"-{self.alert.severity.name.lower()}")
        self.alert = alert
        self.add_class(f"-{alert.severity.name.lower()}")
        self.refresh()

    def set_whole(self, whole: bool, height: int) -> None:
        self.whole = whole
        self.set_class(whole, "-whole")
        if self.styles.height is None or self.styles.height.value != height:
            self.styles.height = height
        self.refresh()

    def lines_at(self, width: int) -> int:
        return wrapped_lines(banner_body(self.alert, self.acknowledgeable), width - PREFIX)

    def render(self) -> Table:
        if self.whole:  # the severity, then the rest wrapped beside it
            grid = Table.grid(expand=True)
            grid.add_column(width=PREFIX, no_wrap=True)
            grid.add_column(ratio=1)
            grid.add_row(banner_prefix(self.alert), banner_body(self.alert, self.acknowledgeable))
            return grid
        text = banner_text(self.alert, False)
        text.no_wrap = True
        text.overflow = "ellipsis"
        grid = Table.grid(expand=True)
        grid.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        grid.add_column(no_wrap=True, justify="right")
        grid.add_row(text, Text(f" {ACK_HINT}", "bold") if self.acknowledgeable else Text())
        return grid

    @property
    def plain(self) -> str:
        """The banner's whole text, without styles (tests, tmux)."""
        return banner_text(self.alert, self.acknowledgeable).plain

    def action_open(self) -> None:
        self.post_message(self.Selected(self.alert))

    def action_step(self, step: int) -> None:
        parent = self.parent
        if isinstance(parent, Banners):
            parent.step(self, step)

    def on_focus(self) -> None:
        parent = self.parent
        if isinstance(parent, Banners):
            parent.show_whole(self)

    def on_click(self) -> None:
        self.post_message(self.Selected(self.alert))


class Banners(Vertical):
    """The stack of banners; rebuilt only when the number of alerts changes.

    `budget` (lines) is set by the screen from the terminal size; see the module doc.
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self._alerts: tuple[Alert, ...] | None = None
        self._banners: list[AlertBanner] = []
        self._more = Static(classes="banner-more")
        self.read_only = False
        self.budget = 8
        self.whole_index = 0  # the banner shown whole when not all of them fit

    def show_alerts(self, alerts: tuple[Alert, ...]) -> None:
        if alerts == self._alerts:
            return
        if self._alerts is not None and len(self._banners) == len(alerts):
            # Same number of alerts (a count in a message moved): repaint the banners in
            # place; removing and mounting them would lay out the whole screen again.
            self._alerts = alerts
            for banner, alert in zip(self._banners, alerts, strict=True):
                banner.show_alert(alert)
            self.fit()
            return
        self._alerts = alerts
        focused = self.screen.focused if self.is_mounted else None
        had_focus = isinstance(focused, AlertBanner)
        self.remove_children()
        banners = [AlertBanner(a, self.read_only) for a in alerts]
        self._banners = banners
        self.whole_index = 0
        self._more = Static(classes="banner-more")
        self.mount_all([*banners, self._more])
        self.display = bool(alerts)
        self.fit()
        if had_focus and banners:
            self.call_after_refresh(banners[0].focus)

    @property
    def alerts(self) -> tuple[Alert, ...]:
        return self._alerts or ()

    @property
    def banners(self) -> list[AlertBanner]:
        return list(self._banners)

    @property
    def whole_banner(self) -> AlertBanner | None:
        if not self._banners:
            return None
        return self._banners[min(self.whole_index, len(self._banners) - 1)]

    def set_budget(self, lines: int) -> None:
        lines = max(1, lines)
        if lines != self.budget:
            self.budget = lines
            self.fit()

    def show_whole(self, banner: AlertBanner) -> None:
        if banner in self._banners:
            self.whole_index = self._banners.index(banner)
            self.fit()

    def step(self, banner: AlertBanner, step: int) -> None:
        if banner not in self._banners:
            return
        i = (self._banners.index(banner) + step) % len(self._banners)
        self.whole_index = i
        self.fit()
        self._banners[i].focus()

    def on_resize(self, _: Resize) -> None:
        self.fit()

    def fit(self) -> None:
        """Give each banner its height for the current width and budget (see module doc)."""
        banners = self._banners
        if not banners:
            return
        width = (self.size.width or (self.screen.size.width if self.is_mounted else 80)) - 2
        # Wrapping a banner's text costs ~1 ms: measure only until the budget is spent
        # (dozens of alerts, e.g. every store offline, would wrap them all on each fit).
        heights: list[int] = []
        for b in banners:
            heights.append(b.lines_at(width))
            if sum(heights) > self.budget:
                break
        else:
            for b, h in zip(banners, heights, strict=True):
                b.display = True
                b.set_whole(True, h)
            self._more.display = False
            return
        i = min(self.whole_index, len(banners) - 1)
        whole = heights[i] if i < len(heights) else banners[i].lines_at(width)
        room = self.budget - whole  # lines left for the others, one each
        others = [j for j in range(len(banners)) if j != i]
        shown = set(others if room >= len(others) else others[: max(0, room - 1)])
        for j, b in enumerate(banners):
            if j == i:
                b.display = True
                b.set_whole(True, whole)
            else:
                b.display = j in shown
                b.set_whole(False, 1)
        hidden = len(others) - len(shown)
        self._more.display = hidden > 0
        if hidden:
            self._more.update(
                Text(f" +{hidden} more alert{'s' if hidden != 1 else ''}: up/down to read", "bold")
            )
