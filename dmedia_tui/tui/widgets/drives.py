"""Connected stores and their drives; failing ones marked."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from dmedia_tui.health import StoreRow, StoreState
from dmedia_tui.tui.widgets.repaint import repaint


def drives_text(
    rows: tuple[StoreRow, ...],
    source: str | None = None,
    smart: dict[str, tuple[str, str]] | None = None,
) -> Text:
    online = [r for r in rows if r.online]
    text = Text()
    if not online:
        text.append("no store connected", "dim")
    for i, r in enumerate(online):
        if i:
            text.append("\n")
        serial = r.drive_serial or ("internal" if r.internal else "-")
        text.append(f"{serial[:12]:<12} ")
        text.append(f"{r.label[:14]:<14}", "bold")
        if r.state == StoreState.FAILING:
            text.append(" ! FAILING", "bold red")
        elif r.removable:
            text.append(" usb", "dim")
        warn = (smart or {}).get(r.store_id)
        if warn is not None:  # SMART: failing, or a warning (bad sectors, cable, heat)
            style = "bold red" if warn[0] == "failing" else "yellow"
            text.append(f" SMART {warn[1][:40]}", style)
    if source:
        text.append(f"\nwatching drives via {source}", "dim")
    return text


class DrivesPanel(Static):
    def show_rows(
        self,
        rows: tuple[StoreRow, ...],
        source: str | None = None,
        smart: dict[str, tuple[str, str]] | None = None,
    ) -> None:
        repaint(self, drives_text(rows, source, smart))  # one line per drive, never wrapped
