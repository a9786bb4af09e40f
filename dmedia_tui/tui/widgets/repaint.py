"""Update a Static without a full-screen relayout when its size cannot change.

`Static.update` lays out the whole screen by default, which costs the UI thread tens of
milliseconds while the engine keeps the CPU busy; a panel that refreshes twice a second
would make every keypress around it late. A relayout is only needed when the widget's
height may change: its height comes from its content (`fixed=False`) and the number of
lines moved. Content that equals what is shown is not drawn again at all.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static


def line_count(text: Text) -> int:
    return text.plain.count("\n") + 1


def repaint(widget: Static, content: Text, fixed: bool = False) -> bool:
    """Show `content` in `widget` (UI thread); False when it was already shown.

    `fixed`: the widget's size is set by CSS, so any content fits without a relayout.
    Otherwise `content` must not wrap (no_wrap) for its line count to be its height.
    """
    shown: Text | None = getattr(widget, "_repaint_shown", None)
    if shown is not None and shown == content:
        return False
    layout = shown is None or (not fixed and line_count(shown) != line_count(content))
    widget._repaint_shown = content  # type: ignore[attr-defined]
    widget.update(content, layout=layout)
    return True
