"""Every banner says what to do, at every size: 120x40, 80x24 (the default terminal) and
60x15 (a tmux pane), on the real library of tests/tui/library.py, read off the screen
the app draws."""

from __future__ import annotations

import pytest

from dmedia_tui.tui.app import DmediaApp
from dmedia_tui.tui.screens.alert import AlertScreen
from dmedia_tui.tui.screens.confirm import ConfirmScreen
from dmedia_tui.tui.widgets.banners import AlertBanner, alert_title

SIZES = [(120, 40), (80, 24), (60, 15)]


def screen_lines(app: DmediaApp) -> list[str]:
    """The characters on the terminal, line by line (what a user reads)."""
    update = app.screen._compositor.render_update(full=True)
    return ["".join(strip.text for strip in line) for line in update.strips]


def words(text: str) -> str:
    return " ".join(text.split())


def readable(app: DmediaApp, alert) -> bool:
    """The alert's title, message and action are on the screen, in order (wrapped lines
    joined: a line break is where a space was)."""
    shown = words(" ".join(screen_lines(app)))
    return words(f"{alert_title(alert)} {alert.message}. {alert.action}") in shown


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
async def test_every_alert_and_its_action_can_be_read(tlib, size):
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=size) as pilot:
        await app.settle()
        await pilot.pause()
        alerts = app.data.health.alerts
        assert len(alerts) >= 4
        lines = screen_lines(app)
        assert len(lines) == size[1] and all(len(line) == size[0] for line in lines)
        # The worst alert is readable whole at once, at every size.
        assert readable(app, alerts[0]), "\n".join(lines)
        # Every alert is at least named on the screen...
        for a in alerts:
            assert alert_title(a) in "\n".join(lines) or size == (60, 15), a.code
        # ... and each one can be read whole: all at once, or moving with up/down.
        if size == (120, 40):
            for a in alerts:
                assert readable(app, a), (a.code, "\n".join(lines))
        app.screen.query(AlertBanner).first().focus()
        for a in alerts:
            await pilot.pause()
            assert readable(app, a), (a.code, "\n".join(screen_lines(app)))
            await pilot.press("down")
        # The header keeps the engine state and the footer the keys.
        assert screen_lines(app)[0].rstrip().endswith("no engine")


async def test_compact_keys_act_on_what_is_visible(tlib):
    """At 60x15 the stores table is hidden: enter and d act on the banner shown whole
    (the focused one), never on a selection the user cannot see."""
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=(60, 15)) as pilot:
        await app.settle()
        await pilot.pause()
        worst = app.data.health.alerts[0]
        assert isinstance(app.focused, AlertBanner) and app.focused.alert == worst
        await pilot.press("enter")
        await pilot.pause()
        assert isinstance(app.screen, AlertScreen) and app.screen.alert == worst
        await pilot.press("escape")
        await pilot.pause()
        await pilot.press("down")  # the next alert, shown whole
        await pilot.pause()
        second = app.data.health.alerts[1]
        assert app.focused.alert == second and readable(app, second)
        await pilot.press("d")
        while not (isinstance(app.screen, ConfirmScreen) and app.screen.query("#no")):
            await pilot.pause()  # pytest-timeout bounds a hang
        label = tlib.ms.lib.docs.get(second.store_ids[0])["label"]
        assert label in str(app.screen.query_one("#confirm-title").render())
        await pilot.press("n")
