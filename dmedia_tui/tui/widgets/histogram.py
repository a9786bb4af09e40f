"""Durability histogram: user files with 0, 1, 2 and 3+ copies, target marked."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.widgets import Static

from dmedia_tui.health import Bucket
from dmedia_tui.tui.data import LOADING, bar, fmt_size

_STYLES = {0: "bold red", 1: "red", 2: "yellow", 3: "green"}


class DurabilityHistogram(Static):
    """Bars scaled to the largest bucket; the 3+ row is the target."""

    def __init__(self, **kwargs) -> None:
        # Until the first data: an empty panel must not read as "nothing is at risk".
        super().__init__(Text(LOADING, "dim"), **kwargs)
        self.buckets: tuple[Bucket, ...] = ()

    def show_buckets(self, buckets: tuple[Bucket, ...]) -> None:
        if buckets == self.buckets:
            return
        first = not self.buckets
        self.buckets = buckets
        self.update(self._table(), layout=first)  # its size is set by the tcss

    def on_resize(self) -> None:
        if self.buckets:
            self.update(self._table(), layout=False)

    def _table(self) -> Table:
        width = max(4, self.size.width - 26) if self.size.width else 16
        top = max((b.files for b in self.buckets), default=0) or 1
        t = Table.grid(padding=(0, 1))
        t.add_column(width=2)
        t.add_column(width=width, no_wrap=True)
        t.add_column(justify="right", no_wrap=True)
        t.add_column(justify="right", no_wrap=True)
        t.add_column(no_wrap=True)
        for b in self.buckets:
            label = "3+" if b.durability == 3 else str(b.durability)
            filled = bar(b.files / top, width).rstrip("░") or ("▏" if b.files else "")
            t.add_row(
                label,
                Text(filled, _STYLES.get(b.durability, "")),
                f"{b.files:,}",
                fmt_size(b.bytes),
                Text("◀ target", "dim") if b.durability == 3 else "",
            )
        return t
