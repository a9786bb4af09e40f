"""Panels that refresh while the engine works repaint without laying out the screen."""

from __future__ import annotations

from rich.text import Text
from textual.app import App, ComposeResult
from textual.widgets import Static

from dmedia_tui.tui.widgets.repaint import repaint


class OneStatic(App[None]):
    def compose(self) -> ComposeResult:
        yield Static(id="panel")


async def test_repaint_lays_out_only_when_the_height_may_change():
    app = OneStatic()
    async with app.run_test(size=(40, 10)) as pilot:
        panel = app.query_one("#panel", Static)
        layouts: list[bool] = []
        real = panel.refresh

        def spy(*args, layout: bool = False, **kwargs):
            layouts.append(layout)
            return real(*args, layout=layout, **kwargs)

        panel.refresh = spy  # type: ignore[method-assign]
        assert repaint(panel, Text("verify 10 %"))  # first content: lay out
        assert not repaint(panel, Text("verify 10 %"))  # what is shown: nothing to do
        assert repaint(panel, Text("verify 20 %"))  # same height: repaint only
        assert repaint(panel, Text("verify 20 %\ncopy 5 %"))  # one line more: lay out
        assert repaint(panel, Text("one\ntwo\nthree"), fixed=True)  # CSS fixes the size
        assert layouts == [True, False, True, False]
        await pilot.pause()
        assert str(panel.render()) == "one\ntwo\nthree"
