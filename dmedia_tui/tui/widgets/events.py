"""The latest data-safety events, one line each."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from dmedia_tui.tui.data import EventLine, fmt_when
from dmedia_tui.tui.widgets.repaint import repaint

TYPE_STYLES = {
    "file/corrupt": "bold red",
    "file/missing": "red",
    "store/failing": "bold red",
    "store/purge": "magenta",
    "store/downgrade": "yellow",
    "doc/invalid": "yellow",
    "file/inconsistent": "yellow",
}


def event_text(e: EventLine, now: float) -> Text:
    t = Text(f"{fmt_when(e.time, now)} ")
    t.append(f"{e.short:<18}", TYPE_STYLES.get(e.short, "cyan"))
    t.append(e.subject)
    t.no_wrap = True
    t.overflow = "ellipsis"
    return t


class EventList(Static):
    def show_events(self, events: tuple[EventLine, ...], now: float) -> None:
        if not events:
            repaint(self, Text("no events yet", "dim"), fixed=True)
            return
        repaint(self, Text("\n").join(event_text(e, now) for e in events), fixed=True)
