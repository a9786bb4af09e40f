"""The store actions' table (actions.py) in the real app: every row with a key or a palette
entry runs from there, asking first when the row says so; the read-only monitor offers none
of the rows that modify the library (no key, no footer, no palette entry, no help line).
"""

from __future__ import annotations

import pytest

from dmedia_tui.actions import MODIFYING, STORE_ACTIONS, StoreAction
from dmedia_tui.tui.app import DmediaApp
from dmedia_tui.tui.screens.confirm import ConfirmScreen
from dmedia_tui.tui.screens.dashboard import DashboardScreen
from dmedia_tui.tui.screens.help import HelpScreen
from tests.tui.test_app import (
    SIZE,
    _messages,
    _palette_text,
    select_store,
    store_doc,
    until,
    until_confirm,
)

# The failing store: every action has something to do there (ack needs a failure).
STORE = "usb-backup-2"


async def _ran(pilot, app: DmediaApp, tlib, action: StoreAction, before: list[str]) -> None:
    """What running `action` must show: its confirmation (then cancelled, nothing
    changed), or at once a notice of its own (done, or why it could not run)."""
    if action.confirm:
        await until_confirm(pilot, app)
        assert isinstance(app.screen, ConfirmScreen)
        title = str(app.screen.query_one("#confirm-title").render())
        assert title.startswith(f"{action.verb.capitalize()} store {STORE}"), title
        assert app.screen.description.startswith(f"{action.verb} {STORE}: ")
        doc = store_doc(tlib, STORE)
        await pilot.press("n")
        await until(pilot, lambda: f"{action.verb} cancelled" in _messages(app))
        assert store_doc(tlib, STORE) == doc
    else:
        await app.workers.wait_for_complete()
        await until(pilot, lambda: len(_messages(app)) > len(before))
        new = _messages(app)[len(before) :]
        if action.done:
            assert f"{action.done} {STORE}" in new, new
        else:  # verify: this app runs no engine, and says where to verify instead
            assert any("No engine" in m for m in new), new


@pytest.mark.parametrize("action", [a for a in STORE_ACTIONS if a.key], ids=lambda a: a.verb)
async def test_every_action_with_a_key_runs_from_its_key(tlib, action: StoreAction):
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        select_store(app, STORE)
        before = list(_messages(app))
        await pilot.press(action.key)
        await _ran(pilot, app, tlib, action, before)


@pytest.mark.parametrize("action", [a for a in STORE_ACTIONS if a.title], ids=lambda a: a.verb)
async def test_every_action_in_the_palette_runs_from_it(tlib, action: StoreAction):
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        select_store(app, STORE)
        before = list(_messages(app))
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*action.title)
        await until(pilot, lambda: action.title in _palette_text(app))
        await pilot.press("enter")
        await _ran(pilot, app, tlib, action, before)


async def test_the_read_only_monitor_offers_no_modifying_action_of_the_table(tlib):
    """Another engine holds the lock: every row that modifies is refused by its key,
    absent from the footer and the palette, and marked disabled on the help screen."""
    from dmedia_tui.engine import Engine

    holder = Engine(tlib.ms, watch_drives=False, watch_folders=False)
    assert holder.acquire_lock()
    try:
        app = DmediaApp(tlib.ms, Engine(tlib.ms, watch_drives=False, watch_folders=False))
        async with app.run_test(size=SIZE) as pilot:
            await app.settle()
            assert app.read_only
            before = {label: store_doc(tlib, label) for label in tlib.stores}
            select_store(app, STORE)
            for a in MODIFYING:
                assert app.check_action(a.verb, ()) is False, a.verb
                if a.key:
                    await pilot.press(a.key)
                    await pilot.pause()
                    assert isinstance(app.screen, DashboardScreen), a.verb
                    assert f"read-only monitor: {a.verb} is disabled here" in _messages(app)
            await app.workers.wait_for_complete()
            assert {label: store_doc(tlib, label) for label in tlib.stores} == before
            footer = {b.binding.key for b in app.active_bindings.values() if b.binding.show}
            assert not {a.key for a in MODIFYING} & footer

            await pilot.press("ctrl+p")
            await pilot.pause()
            await until(pilot, lambda: "Show events" in _palette_text(app))
            shown = _palette_text(app)
            for a in MODIFYING:
                assert not a.title or a.title not in shown, a.verb
            await pilot.press("escape")
            await pilot.pause()

            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            lines = str(app.screen.query_one("#help-keys").render()).splitlines()
            for a in MODIFYING:
                if a.key:
                    (line,) = [ln for ln in lines if ln.split(" ")[0] == a.key]
                    assert line.endswith("(disabled: read-only)"), line
    finally:
        holder.release_lock()
