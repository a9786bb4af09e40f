"""The top line: library, machine, engine state, and a simulated-time badge."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


def header_text(library: str, machine: str, engine_state: str, simulated: bool) -> Text:
    t = Text.assemble((" dmedia-tui ", "bold reverse"))
    if simulated:  # first, so a narrow pane still shows it
        t.append(" ")
        t.append(" SIMULATED TIME ", "bold black on yellow")
    t.append("  library ")
    t.append(library, "bold")
    t.append(" · machine ")
    t.append(machine, "bold")
    t.append(" · ")
    t.append(engine_state, "bold green" if engine_state == "engine running" else "bold yellow")
    t.no_wrap = True
    t.overflow = "ellipsis"
    return t


class AppHeader(Static):
    """Reads what to show from the app (attributes down)."""

    def on_mount(self) -> None:
        self.refresh_header()

    def refresh_header(self) -> None:
        app = self.app
        self.update(
            header_text(
                getattr(app, "library_name", "?"),
                getattr(app, "machine_name", "?"),
                getattr(app, "engine_state", "?"),
                getattr(app, "simulated", False),
            )
        )
