"""Every key binding, in one place (`?` or F1)."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from dmedia_tui.actions import MODIFYING, STORE_ACTIONS

KEYS: tuple[tuple[str, str], ...] = (
    ("q / ctrl+q", "quit"),
    ("? / F1", "this help"),
    ("enter", "open the selected store, file, event or alert"),
    ("escape", "back"),
    ("!", "open the worst alert"),
    ("e", "event log (filter by type and store)"),
    # v d p a t: the store actions (actions.py)
    *((a.key, a.asks(a.key_help)) for a in STORE_ACTIONS if a.key),
    ("r", "refresh now"),
    ("page down", "next page of files (store screen)"),
    ("tab / shift+tab", "move between panels and banners"),
    ("up / down", "on a banner: the previous / next alert, shown whole"),
    ("ctrl+p", "command palette: actions, themes, screenshot"),
)

# The keys a read-only app refuses: those of the actions that change the library.
READ_ONLY_KEYS = frozenset(a.key for a in MODIFYING if a.key)


def help_table(read_only: bool) -> Text:
    t = Text()
    width = max(len(k) for k, _ in KEYS) + 2
    for i, (key, what) in enumerate(KEYS):
        if i:
            t.append("\n")
        if read_only and key in READ_ONLY_KEYS:
            what += " (disabled: read-only)"
        t.append(key.ljust(width), "bold cyan")
        t.append(what)
    return t


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark,f1", "close", "close")]

    def compose(self) -> ComposeResult:
        with VerticalScroll(id="help-box"):
            yield Static(help_table(getattr(self.app, "read_only", False)), id="help-keys")

    def on_mount(self) -> None:
        self.query_one("#help-box").border_title = "Keys"
        self.query_one("#help-box").border_subtitle = "escape closes"

    def action_close(self) -> None:
        self.dismiss(None)
