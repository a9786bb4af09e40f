"""One-line summary for narrow panes: '1,234 files · 3: 1,000 2: 200 1: 30 0: 4'."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from dmedia_tui.health import Health
from dmedia_tui.tui.data import LOADING
from dmedia_tui.tui.widgets.repaint import repaint


def summary_line(health: Health) -> Text:
    by = {b.durability: b.files for b in health.histogram}
    text = Text(f"{health.files:,} files · ")
    for d, style in ((3, "green"), (2, "yellow"), (1, "red"), (0, "bold red")):
        text.append(f"{d}: ", "dim")
        text.append(f"{by.get(d, 0):,}", style)
        if d:
            text.append(" ")
    return text


class CompactSummary(Static):
    def __init__(self, **kwargs) -> None:
        super().__init__(Text(LOADING, "dim"), **kwargs)  # no counts before the first data

    def show_health(self, health: Health) -> None:
        repaint(self, summary_line(health), fixed=True)  # one line high (tcss)
