"""The top line: library, machine, engine state, and a simulated-time badge.

When the line is too long for the terminal the library path gives way first (its start
is elided: the file name stays), then the machine's name: the engine state (is this app
working or only watching?) and the simulated-time badge always show.
"""

from __future__ import annotations

from rich.text import Text
from textual.widget import Widget

ELLIPSIS = "…"


def _tail(s: str, room: int) -> str:
    """`s` in at most `room` cells, its end kept ('…/dmedia-tui/library.sqlite3')."""
    if len(s) <= room:
        return s
    return ELLIPSIS + s[len(s) - room + 1 :] if room > 1 else ""


def header_text(
    library: str, machine: str, engine_state: str, simulated: bool, width: int | None = None
) -> Text:
    """' dmedia-tui  [SIMULATED TIME]  library L · machine M · state', fitted to `width`."""
    state_style = "bold green" if engine_state == "engine running" else "bold yellow"
    t = Text.assemble((" dmedia-tui ", "bold reverse"))
    if simulated:  # first, so a narrow pane still shows it
        t.append(" ")
        t.append(" SIMULATED TIME ", "bold black on yellow")
    t.append("  ")
    fields = [("library ", library), ("machine ", machine)]
    if width is not None:
        room = width - len(t) - len(engine_state)
        machine_cost = len("machine ") + len(machine) + len(" · ")
        library_room = room - machine_cost - len("library ") - len(" · ")
        if library_room >= 12:  # room for '…/library.sqlite3' at least
            fields[0] = ("library ", _tail(library, library_room))
        elif room >= machine_cost:
            fields = fields[1:]  # the library goes first
        else:
            fields = []  # then the machine
    for label, value in fields:
        t.append(label)
        t.append(value, "bold")
        t.append(" · ")
    t.append(engine_state, state_style)
    t.no_wrap = True
    t.overflow = "ellipsis"
    return t


class AppHeader(Widget):
    """Reads what to show from the app (attributes down); fits it to its width."""

    def refresh_header(self) -> None:
        self.refresh()

    def render(self) -> Text:
        app = self.app
        return header_text(
            getattr(app, "library_name", "?"),
            getattr(app, "machine_name", "?"),
            getattr(app, "engine_state", "?"),
            getattr(app, "simulated", False),
            self.size.width or None,
        )
