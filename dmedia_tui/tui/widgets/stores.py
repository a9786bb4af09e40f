"""The stores table: one row per store, its state, weight, space and verification age."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from dmedia_tui.health import StoreRow, StoreState
from dmedia_tui.tui.data import bar, fmt_age, fmt_count, fmt_size

STATE_STYLES = {
    StoreState.OK: "green",
    StoreState.DOWNGRADED: "yellow",
    StoreState.FAILING: "bold red",
    StoreState.OFFLINE: "dim",
    StoreState.STALE: "dim yellow",
}


def state_text(row: StoreRow, now: float) -> Text:
    label = row.state.value.upper()
    if row.state == StoreState.STALE and row.last_seen is not None:
        label += f" {fmt_age(row.last_seen, now)}"
    if row.state == StoreState.FAILING and row.failure_acknowledged:
        label += " (ack)"
    return Text(label, STATE_STYLES.get(row.state, ""))


def space_text(row: StoreRow) -> Text:
    if not row.bytes_total:
        return Text("?", "dim")
    used = 1 - row.bytes_avail / row.bytes_total
    t = Text(bar(used, 4), "cyan")
    t.append(f" {fmt_size(row.bytes_avail)}")
    return t


def verify_age(row: StoreRow, now: float) -> str:
    v = row.verification
    if v is None or not v.copies:
        return "-"
    if v.never:
        return f"{v.never:,} never"
    return fmt_age(v.oldest, now)


def _seen(r: StoreRow, now: float) -> str:
    """ "now", how long ago, or "unreachable" (its machine is on; its peer server is not
    answering this one)."""
    if r.unreachable_at:
        return "unreachable"
    return "now" if r.online else fmt_age(r.last_seen, now)


class StoresTable(DataTable):
    """Rows keyed by store ID so the cursor stays on its store across refreshes."""

    COLUMNS = ("store", "machine", "state", "×", "used / free", "files", "seen", "verif.")

    def __init__(self, **kwargs) -> None:
        super().__init__(cursor_type="row", zebra_stripes=False, cell_padding=1, **kwargs)
        self.rows_shown: tuple[StoreRow, ...] = ()

    def on_mount(self) -> None:
        self.add_columns(*self.COLUMNS)

    def _cells(self, r: StoreRow, now: float) -> tuple:
        return (
            Text.assemble(
                ("● ", "green") if r.online else ("○ ", "dim"),
                (r.label, "bold" if r.online else ""),
            ),
            r.machine_name or "-",
            state_text(r, now),
            str(r.copies),
            space_text(r),
            fmt_count(r.files),
            _seen(r, now),
            verify_age(r, now),
        )

    def show_rows(self, rows: tuple[StoreRow, ...], now: float) -> None:
        if rows == self.rows_shown:
            return
        old = self.rows_shown
        self.rows_shown = rows
        if [r.store_id for r in old] == [r.store_id for r in rows]:
            # Same stores in the same order: touch only the cells that changed.
            columns = list(self.columns)
            for before, after in zip(old, rows, strict=True):
                if before == after:
                    continue
                for col, a, b in zip(
                    columns, self._cells(before, now), self._cells(after, now), strict=True
                ):
                    if a != b:
                        self.update_cell(after.store_id, col, b)
            return
        keep = self.selected_store_id
        self.clear()
        for r in rows:
            self.add_row(*self._cells(r, now), key=r.store_id)
        if keep is not None and keep in {r.store_id for r in rows}:
            self.move_cursor(row=self.get_row_index(keep))

    @property
    def selected_store_id(self) -> str | None:
        if not self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        except Exception:
            return None
        return key.value
