"""Pilot tests: every screen and action of the app, on a real library."""

from __future__ import annotations

import asyncio

from textual.widgets import Button, DataTable, OptionList, Select

from dmedia_tui.health import DRIVE_FAILURE, StoreState
from dmedia_tui.tui.app import ENGINE_MONITOR, DmediaApp
from dmedia_tui.tui.screens.alert import AlertScreen
from dmedia_tui.tui.screens.confirm import ConfirmScreen
from dmedia_tui.tui.screens.dashboard import FIRST_RUN, DashboardScreen
from dmedia_tui.tui.screens.events import EventsScreen
from dmedia_tui.tui.screens.file import FileScreen
from dmedia_tui.tui.screens.help import HelpScreen
from dmedia_tui.tui.screens.store import StoreScreen
from dmedia_tui.tui.widgets.banners import AlertBanner
from dmedia_tui.tui.widgets.stores import StoresTable
from tests.ops import verify_one

SIZE = (120, 40)


def text_of(widget) -> str:
    return str(widget.render())


def select_store(app: DmediaApp, label: str) -> None:
    table = app.screen.query_one(StoresTable)
    sid = next(r.store_id for r in table.rows_shown if r.label == label)
    table.focus()
    table.move_cursor(row=table.get_row_index(sid))


async def until(pilot, predicate) -> None:
    """Let the app run until predicate() holds (pytest-timeout bounds a hang)."""
    while not predicate():
        await asyncio.sleep(0.01)


async def until_confirm(pilot, app) -> None:
    """Until the confirm dialog is up with its buttons (the screen is pushed before its
    widgets are composed: reading them at once failed under load)."""
    await until(pilot, lambda: isinstance(app.screen, ConfirmScreen) and app.screen.query("#no"))
    await pilot.pause()


def store_doc(tlib, label: str) -> dict:
    return tlib.ms.lib.docs.get(tlib.stores[label])


async def test_dashboard_shows_alerts_stores_histogram_events(tlib):
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        screen = app.screen
        assert isinstance(screen, DashboardScreen)
        banners = list(screen.query(AlertBanner))
        codes = [b.alert.code for b in banners]
        assert DRIVE_FAILURE in codes and "DISCONNECTED_ONLY_COPY" in codes
        failure = next(b for b in banners if b.alert.code == DRIVE_FAILURE)
        assert "[a] acknowledge" in failure.plain
        assert failure.has_class("-panic")
        table = screen.query_one(StoresTable)
        assert table.row_count == 3
        assert [r.label for r in table.rows_shown] == ["laptop-ssd", "studio-int", "usb-backup-2"]
        hist = screen.query_one("#histogram").buckets
        assert [b.files for b in hist] == [0, 11, 4, 0]
        events = str(screen.query_one("#events").render())
        assert "file/corrupt" in events and "MVI_5743.MOV on usb-backup-2" in events
        header = str(screen.query_one("#header").render())
        assert "~/lib/library.sqlite3" in header and "studio" in header
        assert "SIMULATED TIME" in header and "no engine" in header
        await pilot.press("q")
    assert app.return_code == 0


async def test_idle_app_recomputes_nothing_until_the_library_changes(tlib):
    app = DmediaApp(tlib.ms, poll=0.01)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        before = app.refreshes
        for _ in range(20):  # about 20 polls with nothing changed
            await pilot.pause(0.01)
        assert app.refreshes == before
        # Another writer (here: the same library through the core) moves update_seq.
        tlib.ms.downgrade_store(tlib.stores["studio-int"], reason="test")
        await until(pilot, lambda: app.refreshes > before)
        row = next(r for r in app.data.health.store_rows if r.label == "studio-int")
        assert row.state == StoreState.DOWNGRADED


async def test_engine_changes_are_coalesced_but_requested_refreshes_are_not(tlib):
    """A busy engine says "changed" per verified copy; each recompute costs the UI a
    repaint, so within the coalescing interval they wait, while `r` is served at once."""
    from dmedia_tui.engine import EngineEvent

    app = DmediaApp(tlib.ms, poll=0.01, coalesce=3600)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        before = app.refreshes
        tlib.ms.downgrade_store(tlib.stores["studio-int"], reason="test")
        for _ in range(20):  # about 20 polls, each with an engine change
            app._on_engine_event(EngineEvent("changed"))
            await pilot.pause(0.01)
        assert app.refreshes == before  # held back: the interval has not passed
        await pilot.press("r")
        await until(pilot, lambda: app.refreshes > before)
        row = next(r for r in app.data.health.store_rows if r.label == "studio-int")
        assert row.state == StoreState.DOWNGRADED


async def test_banners_with_a_changed_count_are_repainted_in_place(tlib):
    """While the engine verifies, alert messages change (counts) far more often than the
    set of alerts: the banners stay mounted, and keep their focus, and show the news."""
    import dataclasses

    from dmedia_tui.health import Severity
    from dmedia_tui.tui.widgets.banners import Banners

    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        banners = app.screen.query_one(Banners)
        before = list(app.screen.query(AlertBanner))
        assert len(before) >= 2
        before[-1].focus()
        changed = tuple(
            dataclasses.replace(a, message=f"{i} changed", severity=Severity.INFO)
            for i, a in enumerate(banners.alerts)
        )
        banners.show_alerts(changed)
        await pilot.pause()
        after = list(app.screen.query(AlertBanner))
        assert after == before and app.screen.focused is before[-1]
        assert [b.alert for b in after] == list(changed)
        assert all(b.has_class("-info") and not b.has_class("-critical") for b in after)
        assert "0 changed" in after[0].plain
        # One alert fewer: the stack is rebuilt.
        banners.show_alerts(changed[1:])
        await pilot.pause()
        assert [b.alert for b in app.screen.query(AlertBanner)] == list(changed[1:])


async def test_store_screen_pages_files_most_fragile_first(tlib, monkeypatch):
    monkeypatch.setattr(StoreScreen, "PAGE_SIZE", 5)
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        select_store(app, "studio-int")
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, StoreScreen)
        assert screen.store_id == tlib.stores["studio-int"]
        assert len(screen.files) == 5
        durs = [f.durability for f in screen.files]
        assert durs == sorted(durs)
        await pilot.press("pagedown")
        await app.workers.wait_for_complete()
        await pilot.pause()
        await pilot.press("pagedown")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert len(screen.files) == 12 and screen.exhausted
        assert len({f.id for f in screen.files}) == 12
        details = str(screen.query_one("#store-verification").render())
        assert "8 of 12" in details
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)


async def test_file_screen_shows_locations_corrupt_history_and_events(tlib):
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        app.open_file(tlib.files["MVI_5743.MOV"])
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, FileScreen)
        assert [loc.label for loc in screen.data.locations] == ["studio-int"]
        corrupt = str(screen.query_one("#file-corrupt").render())
        assert "corrupt on usb-backup-2" in corrupt
        events = str(screen.query_one("#file-events").render())
        assert "file/corrupt" in events


async def test_enter_on_a_file_row_opens_the_file(tlib):
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        app.open_store(tlib.stores["laptop-ssd"])
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        app.screen.query_one(DataTable).focus()
        await pilot.press("enter")
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, FileScreen)
        assert app.screen.file_id == app.screen_stack[-2].files[0].id


async def test_events_screen_loads_the_next_page_near_the_end(tlib, monkeypatch):
    import dmedia_tui.tui.screens.events as events_mod

    monkeypatch.setattr(events_mod, "PAGE", 3)
    for _ in range(8):
        tlib.ms.log_event("dmedia/store/trust", store_id=tlib.stores["studio-int"])
    every = [d["_id"] for d in tlib.ms.lib.events(1000, newest_first=True)]
    assert len(every) > 6
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        await pilot.press("e")
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        shown = [e.id for e in screen.lines]
        assert 3 <= len(shown) < len(every) and shown == every[: len(shown)]  # pages, in order
        table = screen.query_one("#event-table", DataTable)
        while len(screen.lines) < len(every):
            before = len(screen.lines)
            table.move_cursor(row=len(screen.lines) - 1)
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause()
            assert len(screen.lines) > before
        assert [e.id for e in screen.lines] == every  # newest first, no gap, no repeat


async def test_events_screen_filters_by_type_and_store(tlib):
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        await pilot.press("e")
        await app.workers.wait_for_complete()
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, EventsScreen)
        all_types = {e.type for e in screen.lines}
        assert {"dmedia/file/corrupt", "dmedia/store/failing"} <= all_types
        screen.query_one("#filter-type", Select).value = "dmedia/file/corrupt"
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert screen.lines and {e.type for e in screen.lines} == {"dmedia/file/corrupt"}
        screen.query_one("#filter-type", Select).clear()
        screen.query_one("#filter-store", Select).value = tlib.stores["studio-int"]
        await pilot.pause()
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert all(e.store_id == tlib.stores["studio-int"] for e in screen.lines)


async def test_enter_on_banner_and_bang_open_the_alert_screen(tlib):
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        await pilot.press("exclamation_mark")
        assert isinstance(app.screen, AlertScreen)
        assert app.screen.alert == app.data.health.alerts[0]
        await pilot.press("escape")
        banner = next(
            b for b in app.screen.query(AlertBanner) if b.alert.code == "DISCONNECTED_ONLY_COPY"
        )
        banner.focus()
        await pilot.press("enter")
        assert isinstance(app.screen, AlertScreen)
        assert app.screen.alert.code == "DISCONNECTED_ONLY_COPY"
        assert "Boot kestrel" in str(app.screen.query_one("#alert-text").render())


async def test_alert_screen_lists_the_files_concerned_and_opens_one(tlib):
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        alert = next(a for a in app.data.health.alerts if a.code == "DISCONNECTED_ONLY_COPY")
        app.open_alert(alert)
        await pilot.pause()
        await app.screen.workers.wait_for_complete()
        await pilot.pause()
        files = app.screen.query_one("#alert-files", OptionList)
        shown = {files.get_option_at_index(i).id for i in range(files.option_count)}
        laptop_only = {tlib.files[f"IMG_{100 + i}.CR2"] for i in range(3)}
        assert shown == laptop_only and alert.files == 3
        files.focus()
        files.highlighted = 0
        await pilot.press("enter")
        assert isinstance(app.screen, FileScreen)
        assert app.screen.file_id in laptop_only


async def test_a_malformed_file_doc_does_not_break_the_alert_screen(tlib):
    """The alert screen formatted the raw `bytes` and `name` of each file: one doc with
    `bytes: "12x"` raised in the UI thread and took the app down."""
    bad = tlib.files["IMG_100.CR2"]
    doc = tlib.ms.lib.docs.get(bad)
    doc.update(bytes="12x", name=["not", "a", "name"])
    tlib.ms.lib.docs.save(doc)
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        alert = next(a for a in app.data.health.alerts if a.code == "DISCONNECTED_ONLY_COPY")
        app.open_alert(alert)
        await pilot.pause()
        await app.screen.workers.wait_for_complete()
        await pilot.pause()
        files = app.screen.query_one("#alert-files", OptionList)
        shown = {
            files.get_option_at_index(i).id: str(files.get_option_at_index(i).prompt)
            for i in range(files.option_count)
        }
        assert len(shown) == 3 and shown[bad].split() == [bad[:12], "0", "B"]


async def _downgrade_with_y(pilot, app: DmediaApp, label: str, asked=None) -> None:
    """Select the store, press d, answer y (after `asked(confirm screen)`), wait."""
    await app.settle()
    select_store(app, label)
    await pilot.press("d")
    await until_confirm(pilot, app)
    if asked is not None:
        asked(app.screen)
    await pilot.press("y")
    await app.workers.wait_for_complete()
    await app.settle()


async def test_downgrade_confirmed_with_y(tlib):
    app = DmediaApp(tlib.ms)

    def asked(confirm):
        assert "downgrade studio-int: 12 files would count 0 copies" in confirm.description
        assert app.focused is confirm.query_one("#no", Button)

    async with app.run_test(size=SIZE) as pilot:
        await _downgrade_with_y(pilot, app, "studio-int", asked)
        assert store_doc(tlib, "studio-int").get("downgraded")
        row = next(r for r in app.data.health.store_rows if r.label == "studio-int")
        assert row.state == StoreState.DOWNGRADED


async def test_a_downgrade_shows_in_the_activity_panel_while_it_runs(tlib):
    """With an engine, a store-wide action the user confirmed is an activity (at a million
    files it runs most of a minute): its progress counts up to the store's files, and the
    activity is gone once the action is done."""
    from dmedia_tui.engine import Engine
    from dmedia_tui.tui.widgets.activity import activity_text

    engine = Engine(tlib.ms, watch_drives=False, watch_folders=False)
    seen: list[tuple[int, int, str]] = []
    engine.subscribe(
        lambda ev: (
            seen.append((ev.data.done, ev.data.total, str(activity_text([ev.data], None))))
            if ev.kind == "activity" and getattr(ev.data, "kind", None) == "downgrade"
            else None
        )
    )
    app = DmediaApp(tlib.ms, engine)
    async with app.run_test(size=SIZE) as pilot:
        await _downgrade_with_y(pilot, app, "studio-int")
        assert store_doc(tlib, "studio-int").get("downgraded")
        assert seen[0][:2] == (0, 0) and seen[-1][:2] == (12, 12)
        assert seen[-1][2].startswith("downgrade studio-int ") and "100 %  12/12" in seen[-1][2]
        acts, _ = engine.activity_snapshot()
        assert not [a for a in acts if a.kind == "downgrade"]


async def test_purge_defaults_to_no_enter_cancels(tlib):
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        select_store(app, "studio-int")
        await pilot.press("p")
        await until_confirm(pilot, app)
        assert "user files have no other known copy" in app.screen.description
        await pilot.press("enter")  # focus is on No
        await pilot.pause()
        assert isinstance(app.screen, DashboardScreen)
        await app.workers.wait_for_complete()
        assert tlib.ms.lib.docs.get_or_none(tlib.stores["studio-int"]) is not None


async def test_purge_confirmed_by_clicking_yes(tlib):
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        select_store(app, "usb-backup-2")
        await pilot.press("p")
        await until_confirm(pilot, app)
        await pilot.click("#yes")
        await app.workers.wait_for_complete()
        await app.settle()
        assert tlib.ms.lib.docs.get_or_none(tlib.stores["usb-backup-2"]) is None
        assert "usb-backup-2" not in [r.label for r in app.data.health.store_rows]


async def test_trust_asks_and_clears_flags(tlib):
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        select_store(app, "usb-backup-2")
        await pilot.press("t")
        await until_confirm(pilot, app)
        await pilot.press("y")
        await app.workers.wait_for_complete()
        await app.settle()
        doc = store_doc(tlib, "usb-backup-2")
        assert not doc.get("failure") and not doc.get("no_new_copies")


async def test_acknowledge_removes_the_failure_banner(tlib):
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        banner = next(b for b in app.screen.query(AlertBanner) if b.alert.code == DRIVE_FAILURE)
        banner.focus()
        await pilot.press("a")
        await app.workers.wait_for_complete()
        await app.settle()
        await pilot.pause()
        codes = [b.alert.code for b in app.screen.query(AlertBanner)]
        assert DRIVE_FAILURE not in codes
        row = next(r for r in app.data.health.store_rows if r.label == "usb-backup-2")
        assert row.state == StoreState.FAILING and row.failure_acknowledged


async def test_ack_with_a_healthy_store_selected_acks_the_one_failing_drive(tlib):
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        select_store(app, "studio-int")
        await pilot.press("a")
        await app.workers.wait_for_complete()
        await app.settle()
        await pilot.pause()
        assert DRIVE_FAILURE not in [b.alert.code for b in app.screen.query(AlertBanner)]
        assert store_doc(tlib, "usb-backup-2")["failure"]["acknowledged"] is True
        assert "failure" not in store_doc(tlib, "studio-int")


async def test_read_only_refuses_every_modifying_action(tlib):
    app = DmediaApp(tlib.ms, read_only=True)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        select_store(app, "studio-int")
        before = store_doc(tlib, "studio-int")
        for key in "vdpat":
            await pilot.press(key)
            await pilot.pause()
            assert isinstance(app.screen, DashboardScreen)
        await app.workers.wait_for_complete()
        assert store_doc(tlib, "studio-int") == before
        messages = [n.message for n in app._notifications]
        assert "read-only: purge is disabled" in messages
        assert "read-only: downgrade is disabled" in messages
        footer_keys = {b.binding.key for b in app.active_bindings.values() if b.binding.show}
        assert not {"d", "p", "a", "v"} & footer_keys
        banner = next(b for b in app.screen.query(AlertBanner) if b.alert.code == DRIVE_FAILURE)
        assert "[a] acknowledge" not in banner.plain
        assert "read-only" in str(app.screen.query_one("#header").render())


async def test_help_screen_lists_every_binding(tlib):
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        for key in ("question_mark", "f1"):
            await pilot.press(key)
            assert isinstance(app.screen, HelpScreen)
            text = str(app.screen.query_one("#help-keys").render())
            for needle in (
                "quit",
                "verify",
                "downgrade",
                "purge",
                "acknowledge",
                "trust",
                "event log",
                "ctrl+p",
            ):
                assert needle in text
            await pilot.press("escape")
            assert isinstance(app.screen, DashboardScreen)


async def test_compact_layout_follows_the_terminal_size(tlib):
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=(60, 15)) as pilot:
        await app.settle()
        screen = app.screen
        assert screen.has_class("-compact")
        assert screen.query_one("#stores").styles.display == "none"
        assert screen.query_one("#events").styles.display == "none"
        summary = str(screen.query_one("#summary").render())
        assert summary.startswith("15 files · 3: 0 2: 4 1: 11 0: 0")
        # Focus moves to the banner shown once the frame after the data is drawn (a key
        # pressed before acts on nothing: under load, CI once pressed it too early).
        await until(pilot, lambda: isinstance(screen.focused, AlertBanner))
        await pilot.press("d")  # acts on the banner shown (laptop-ssd), never the hidden table
        await until_confirm(pilot, app)
        assert "laptop-ssd" in str(app.screen.query_one("#confirm-title").render())
        await pilot.press("n")
        await pilot.pause()
        await pilot.resize_terminal(120, 40)
        await pilot.pause()
        assert not screen.has_class("-compact")
        await pilot.resize_terminal(100, 18)
        await pilot.pause()
        assert screen.has_class("-compact")


async def test_first_run_message_on_an_empty_library(empty_lib):
    app = DmediaApp(empty_lib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        await pilot.pause()
        assert app.screen.has_class("-first-run")
        assert FIRST_RUN in str(app.screen.query_one("#first-run").render())


async def test_command_palette_offers_the_actions(tlib):
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        select_store(app, "studio-int")
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*"downgrade")
        await until(pilot, lambda: "Downgrade selected store" in _palette_text(app))
        await pilot.press("enter")
        await until_confirm(pilot, app)
        await pilot.press("n")
        assert not store_doc(tlib, "studio-int").get("downgraded")


def _palette_text(app) -> str:
    from textual.command import CommandList

    try:
        options = app.screen.query_one(CommandList)
    except Exception:
        return ""
    return " ".join(str(options.get_option_at_index(i).prompt) for i in range(options.option_count))


async def test_verify_with_a_running_engine(tlib):
    from dmedia_tui.engine import Engine

    engine = Engine(tlib.ms, watch_drives=False, watch_folders=False)
    app = DmediaApp(tlib.ms, engine)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        assert "engine running" in str(app.screen.query_one("#header").render())
        sid = tlib.stores["studio-int"]
        await until(pilot, lambda: sid in engine.connected)
        requests = []
        real = engine.request_verify
        engine.request_verify = lambda **kw: (requests.append(kw), real(**kw))  # spy only
        select_store(app, "studio-int")
        await pilot.press("v")
        assert requests == [{"store_id": sid, "file_id": None}]

        # What the engine then does with the request is the engine's business (its own
        # tests); the activity panel shows whatever it reports.
        assert "verifying studio-int next" in [n.message for n in app._notifications]
    assert not engine._threads  # stopped with the app


def _banner_facts(app: DmediaApp) -> list[tuple[str, tuple[str, ...]]]:
    return sorted((b.alert.code, b.alert.store_ids) for b in app.screen.query(AlertBanner))


async def test_before_the_engine_first_looks_its_stores_are_not_called_offline(tlib, monkeypatch):
    """Until the engine has looked at which stores are connected, its `connected` is empty
    because nothing is known yet. The first dashboard must not take that for "nothing is
    connected": it said studio-int and usb-backup-2 were offline and raised a false "only
    copy on a disconnected drive" at every start, until the engine's first look."""
    import threading

    from dmedia_tui.engine import Engine

    truth = DmediaApp(tlib.ms)  # no engine: the MetaStore looks for itself
    async with truth.run_test(size=SIZE) as pilot:
        await truth.settle()
        expected = _banner_facts(truth)
        await pilot.press("q")
    local = {tlib.stores["studio-int"], tlib.stores["usb-backup-2"]}
    assert not any(local & set(ids) for code, ids in expected if code == "DISCONNECTED_ONLY_COPY")

    engine = Engine(tlib.ms, watch_drives=False, watch_folders=False)
    first_look = threading.Event()
    real_refresh = engine._refresh

    def held_refresh(*args, **kwargs):  # the real look, once the test lets it happen
        first_look.wait(60)
        return real_refresh(*args, **kwargs)

    monkeypatch.setattr(engine, "_refresh", held_refresh)
    app = DmediaApp(tlib.ms, engine)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        assert app.engine_running and engine.connected_ids() is None  # not looked yet
        assert _banner_facts(app) == expected
        online = {r.label for r in app.screen.query_one(StoresTable).rows_shown if r.online}
        assert online == {"studio-int", "usb-backup-2"}

        first_look.set()
        await until(pilot, lambda: engine.connected_ids() is not None)
        assert engine.connected_ids() == local
        await app.settle()
        assert _banner_facts(app) == expected
        await pilot.press("q")


async def test_messages_that_arrive_after_the_dashboard_is_gone_are_dropped(tlib):
    """The refresh thread may post a tick or data just before the app closes; handled
    once the screens are gone, they must not raise (a LookupError ended a run once)."""
    from dmedia_tui.tui.app import ActivityTick, DataReady

    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE):
        await app.settle()
        data = app.data
    assert not [s for s in app.screen_stack if isinstance(s, DashboardScreen)]
    app.on_activity_tick(ActivityTick())
    app._stop.clear()  # as if the refresh thread's data came in before it saw the stop
    app.on_data_ready(DataReady(data, 99))


async def test_second_engine_makes_a_read_only_monitor(tlib):
    from dmedia_tui.engine import Engine

    holder = Engine(tlib.ms, watch_drives=False, watch_folders=False)
    assert holder.acquire_lock()
    try:
        app = DmediaApp(tlib.ms, Engine(tlib.ms, watch_drives=False, watch_folders=False))
        async with app.run_test(size=SIZE) as pilot:
            await app.settle()
            assert ENGINE_MONITOR in str(app.screen.query_one("#header").render())
            await pilot.press("v")
            await pilot.pause()
            assert "read-only monitor: verify is disabled here" in _messages(app)
    finally:
        holder.release_lock()


async def test_read_only_monitor_offers_no_modifying_action(tlib):
    """Another engine holds the lock: no key, palette entry or help line may change the
    library from this app (it is a monitor of that engine, like --read-only)."""
    from dmedia_tui.engine import Engine

    holder = Engine(tlib.ms, watch_drives=False, watch_folders=False)
    assert holder.acquire_lock()
    try:
        app = DmediaApp(tlib.ms, Engine(tlib.ms, watch_drives=False, watch_folders=False))
        async with app.run_test(size=SIZE) as pilot:
            await app.settle()
            before = {label: store_doc(tlib, label) for label in tlib.stores}
            select_store(app, "usb-backup-2")
            for key in "dpta":
                await pilot.press(key)
                await pilot.pause()
                assert isinstance(app.screen, DashboardScreen), key
            await app.workers.wait_for_complete()
            assert {label: store_doc(tlib, label) for label in tlib.stores} == before
            for action in ("downgrade", "purge", "trust", "ack"):
                assert f"read-only monitor: {action} is disabled here" in _messages(app)
            footer = {b.binding.key for b in app.active_bindings.values() if b.binding.show}
            assert not {"v", "d", "p", "a", "t"} & footer
            banner = next(b for b in app.screen.query(AlertBanner) if b.alert.code == DRIVE_FAILURE)
            assert "[a] acknowledge" not in banner.plain

            await pilot.press("ctrl+p")
            await pilot.pause()
            await until(pilot, lambda: "Show events" in _palette_text(app))
            shown = _palette_text(app)
            for name in ("Purge", "Downgrade", "Trust", "Verify"):
                assert name not in shown
            await pilot.press("escape")
            await pilot.pause()

            await pilot.press("question_mark")
            assert isinstance(app.screen, HelpScreen)
            help_text = str(app.screen.query_one("#help-keys").render())
            for line in help_text.splitlines():
                if line.split(" ")[0] in ("v", "d", "p", "a", "t"):
                    assert "(disabled: read-only)" in line, line
    finally:
        holder.release_lock()


def _messages(app) -> list[str]:
    return [n.message for n in app._notifications]


async def test_database_error_is_shown_not_raised(tlib):
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        tlib.ms.lib.close()
        await until(
            pilot,
            lambda: (
                app.data is not None
                and app.data.health.alerts
                and app.data.health.alerts[0].code == "DATABASE_OFFLINE"
            ),
        )
        await asyncio.sleep(0)
        await pilot.pause()
        # An unreadable library is not an empty one: no "No stores yet" advice.
        assert not app.screen.has_class("-first-run")
        from rich.console import Console

        console = Console(width=200, color_system=None)
        with console.capture() as shown:
            console.print(app.screen.query_one(AlertBanner).render())
        assert "CRITICAL DATABASE OFFLINE" in shown.get()


async def test_a_couchdb_that_stops_answering_shows_database_offline(couch_server, tmp_path):
    """The server keeps its sockets open and sends nothing: the dashboard says
    DATABASE_OFFLINE within the library's timeout instead of freezing on the last data."""
    import time

    from dmedia_tui.clock import FixedClock
    from dmedia_tui.config import Config
    from dmedia_tui.db.couch import CouchLibrary
    from dmedia_tui.metastore import MetaStore
    from tests.conftest import NOW
    from tests.couchserver import BlackHole

    hole = BlackHole(forward_to=("127.0.0.1", couch_server.port))
    prefix = couch_server.fresh_url().split("?", 1)[1]
    lib = CouchLibrary(f"{hole.url}?{prefix}", timeout=2)
    ms = MetaStore(lib, Config.load(tmp_path / "config", tmp_path / "data"), FixedClock(NOW))
    try:
        app = DmediaApp(ms)
        async with app.run_test(size=SIZE) as pilot:
            await app.settle()
            assert not app.data.health.alerts  # an empty library, answering
            hole.hang()
            start = time.monotonic()

            def offline() -> bool:
                assert time.monotonic() - start < 30, "no DATABASE_OFFLINE after 30 s"
                alerts = app.data.health.alerts
                return bool(alerts) and alerts[0].code == "DATABASE_OFFLINE"

            await until(pilot, offline)
            await pilot.pause()
            banner = app.screen.query_one(AlertBanner)
            assert "DATABASE OFFLINE" in banner.plain and "timed out" in banner.plain
    finally:
        lib.close()
        hole.close()


async def test_mouse_click_on_a_banner_and_a_store_row(tlib):
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        await pilot.pause()
        assert app.focused is app.screen.query_one(StoresTable)  # actions target a store
        banner = next(b for b in app.screen.query(AlertBanner) if b.alert.code == DRIVE_FAILURE)
        assert await pilot.click(banner)
        assert isinstance(app.screen, AlertScreen) and app.screen.alert.code == DRIVE_FAILURE
        await pilot.press("escape")
        table = app.screen.query_one(StoresTable)
        row = table.get_row_index(tlib.stores["usb-backup-2"])
        await pilot.click(table, offset=(4, row + 2))  # border, header
        await pilot.click(table, offset=(4, row + 2))  # border, header
        await app.workers.wait_for_complete()
        await pilot.pause()
        assert isinstance(app.screen, StoreScreen)
        assert app.screen.store_id == tlib.stores["usb-backup-2"]


async def test_a_verification_elsewhere_updates_the_stores_table_in_place(tlib):
    sid = tlib.stores["studio-int"]
    fs = tlib.ms.connected_filestores()[sid]
    tlib.ms.VERIFICATION_STATS_TTL = 0  # the core caches verification ages for the dashboard
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await app.settle()
        table = app.screen.query_one(StoresTable)
        column = list(table.columns)[-1]
        assert table.get_cell(sid, column) == "8 never"
        for name in ("MVI_5744.MOV", "MVI_5745.MOV"):
            verify_one(tlib.ms, fs, tlib.files[name])  # as another process would
        await until(pilot, lambda: table.get_cell(sid, column) == "6 never")
        assert table.row_count == 3


async def test_until_the_first_data_the_dashboard_says_loading_not_safe(tlib, monkeypatch):
    """The first frame comes before the first data: the histogram, the compact summary
    and the activity panel say "loading…" (an empty histogram would read as nothing at
    risk), and the data replaces it when it comes."""
    import threading

    from dmedia_tui.tui import app as app_module
    from dmedia_tui.tui.widgets.activity import ActivityPanel
    from dmedia_tui.tui.widgets.histogram import DurabilityHistogram
    from dmedia_tui.tui.widgets.summary import CompactSummary

    release = threading.Event()
    real = app_module.load_dashboard

    def held(*args):
        release.wait(30)
        return real(*args)

    monkeypatch.setattr(app_module, "load_dashboard", held)
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.screen.query(DurabilityHistogram))
        await pilot.pause()
        hist = app.screen.query_one(DurabilityHistogram)
        assert text_of(hist) == "loading…"
        assert text_of(app.screen.query_one(CompactSummary)) == "loading…"
        assert "loading…" in str(app.screen.query_one("#activity-text").render())
        assert app.refreshes == 0
        release.set()
        await app.settle()
        assert hist.buckets == app.data.health.histogram
        assert sum(b.files for b in hist.buckets) > 0
        assert "loading" not in text_of(hist)
        assert "loading" not in text_of(app.screen.query_one(CompactSummary))
        panel = app.screen.query_one(ActivityPanel)
        assert "loading" not in str(panel.query_one("#activity-text").render())


async def test_data_cut_off_midway_through_the_dashboard_is_shown_whole_on_the_retry(
    tlib, monkeypatch
):
    """A widget not composed yet (NoMatches) partway through DashboardScreen.show: the
    retry must render every panel, not compare the data with itself and skip the rest
    (the events panel would stay empty until the library changed)."""
    from textual.css.query import NoMatches

    from dmedia_tui.tui.widgets.events import EventList

    real = EventList.show_events
    calls = []

    def not_composed_the_first_time(self, events, now):
        calls.append(events)
        if len(calls) == 1:
            raise NoMatches("the events panel is not composed yet")
        return real(self, events, now)

    monkeypatch.setattr(EventList, "show_events", not_composed_the_first_time)
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE):
        await app.settle()  # the retry applied, and a refresh after it (same events)
        assert len(calls) >= 2, "the retry skipped the events panel"
        # (the retry may carry newer data than the cut-off one: either way it is shown)
        assert calls[-1] == app.dashboard.data.events


async def test_first_data_that_comes_before_the_dashboard_is_composed_is_kept(tlib, monkeypatch):
    """The first load starts before the dashboard is composed; data that comes too early
    is applied once the widgets exist, not computed a second time."""
    from textual.css.query import NoMatches

    from dmedia_tui.tui import app as app_module

    real_apply = DmediaApp._apply
    applied = []

    def not_composed_the_first_time(self, message):
        applied.append(message)
        if len(applied) == 1:
            raise NoMatches("the dashboard is not composed yet")
        return real_apply(self, message)

    loads = []
    real_load = app_module.load_dashboard

    def counted(*args):
        loads.append(1)
        return real_load(*args)

    monkeypatch.setattr(DmediaApp, "_apply", not_composed_the_first_time)
    monkeypatch.setattr(app_module, "load_dashboard", counted)
    app = DmediaApp(tlib.ms)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: app.refreshes >= 1)
        assert applied[1] is applied[0]  # the same data, applied on the second try
        assert len(loads) == 1
