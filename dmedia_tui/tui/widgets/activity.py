"""What the workers do now: current verify/copy with progress, rate sparkline, ETA."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Sparkline, Static

from dmedia_tui.tui.data import LOADING, bar, fmt_eta, fmt_rate
from dmedia_tui.tui.widgets.repaint import repaint


def activity_text(activities: Iterable[Any], rate: float | None) -> Text:
    """One line per running activity (engine.Activity-like objects)."""
    text = Text()
    for act in activities:
        if text:
            text.append("\n")
        text.append(f"{act.kind:<7}" if len(act.kind) < 7 else f"{act.kind} ", "bold")
        waiting = getattr(act, "waiting", None)
        if waiting:  # nothing can be done now: say what would unblock it
            text.append(waiting, "yellow")
            continue
        frac = act.fraction
        what = act.name or (act.file_id or "")[:12]
        text.append(f"{act.label} {what}"[:32].ljust(32))
        text.append(f" {bar(frac, 10)} {frac * 100:3.0f} %", "cyan")
        if act.queue_total:
            text.append(f"  {act.queue_done}/{act.queue_total}")
        if act.kind == "verify" and rate and act.total:
            text.append(f"  {fmt_eta((act.total - act.done) / rate)}", "dim")
        if act.kind == "pull" and act.done and act.total:
            pull_rate = act.done / max(1e-3, time.monotonic() - act.started)
            text.append(f"  {fmt_rate(pull_rate)}", "dim")
            text.append(f"  {fmt_eta((act.total - act.done) / pull_rate)}", "dim")
    if not text:
        text.append("idle", "dim")
    return text


class ActivityPanel(Vertical):
    _last: Text | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text(LOADING, "dim"), id="activity-text")  # idle once the app knows
        yield Static("", id="activity-rate")
        spark = Sparkline([], id="activity-spark")
        spark.display = False
        yield spark

    def show(self, activities: list[Any], rates: list[float], engine: bool = True) -> None:
        rate = rates[-1] if rates else None
        body = activity_text(activities, rate)
        if not engine:
            body = Text("no engine in this process", "dim")
        if body == self._last:
            return
        self._last = body
        # Progress moves twice a second while the engine works: repaint, no relayout
        # unless the number of activities changed (the text does not wrap, see tcss).
        repaint(self.query_one("#activity-text", Static), body)
        rate_text = Text(f"verify {fmt_rate(rate)}", "dim") if rate else Text("")
        repaint(self.query_one("#activity-rate", Static), rate_text, fixed=True)
        spark = self.query_one("#activity-spark", Sparkline)
        spark.data = list(rates)
        if spark.display != bool(rates):
            spark.display = bool(rates)
