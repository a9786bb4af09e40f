"""The full-screen app: hosts the engine, refreshes views when the library changes.

Data flow: one refresh thread polls `update_seq()` of both databases every POLL seconds
(a primary-key lookup) and recomputes the dashboard only when a token moved or the engine
said something changed; the result is posted to the UI thread as a message. Engine events
arrive on worker threads and only set flags, so workers never wait for the UI. While the
engine works flat out (a "changed" event per verified copy), recomputations are coalesced
to one per COALESCE seconds: each one costs the UI thread a repaint, and keypresses must
not queue behind a dozen of them a second. A refresh the user (or a test) asks for is never
held back. Actions call the core (MetaStore / Engine) in thread workers; destructive ones
ask first.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from textual import work
from textual.app import App
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.logging import TextualHandler
from textual.message import Message
from textual.worker import WorkerCancelled

from dmedia_tui.actions import ACK, DOWNGRADE, MODIFYING, PURGE, STORE_ACTIONS, TRUST, StoreAction
from dmedia_tui.health import DRIVE_FAILURE, Alert, database_offline
from dmedia_tui.tui.commands import DmediaCommands
from dmedia_tui.tui.data import DashboardData, load_dashboard
from dmedia_tui.tui.screens.alert import AlertScreen
from dmedia_tui.tui.screens.confirm import ConfirmScreen
from dmedia_tui.tui.screens.dashboard import DashboardScreen
from dmedia_tui.tui.screens.events import EventsScreen
from dmedia_tui.tui.screens.file import FileScreen
from dmedia_tui.tui.screens.help import HelpScreen
from dmedia_tui.tui.screens.store import StoreScreen
from dmedia_tui.tui.widgets.header import AppHeader

if TYPE_CHECKING:
    from dmedia_tui.engine import Engine, EngineEvent
    from dmedia_tui.metastore import MetaStore

POLL = 0.5  # seconds between update_seq() polls
COALESCE = 1.0  # at least this many seconds between recomputations nobody asked for

ENGINE_RUNNING = "engine running"
ENGINE_MONITOR = "read-only monitor: another engine runs"
READ_ONLY = "read-only"
NO_ENGINE = "no engine"

# What a read-only app refuses (actions.py decides which actions modify the library).
MODIFYING_VERBS = frozenset(a.verb for a in MODIFYING)


def short_path(url: str) -> str:
    home = os.path.expanduser("~")
    if home and home != "/" and url.startswith(home + os.sep):
        return "~" + url[len(home) :]
    return url


class DataReady(Message):
    """Fresh dashboard data from the refresh thread."""

    def __init__(self, data: DashboardData, generation: int) -> None:
        self.data = data
        self.generation = generation
        super().__init__()


class ActivityTick(Message):
    """The engine's activity changed; take engine.activity_snapshot() on the UI thread."""


class DmediaApp(App[int]):
    """dmedia-tui. `ms`: the MetaStore; `engine`: started here when the lock is ours."""

    # Relative to this file: the styles are package data (dmedia_tui/tui/styles/), in the
    # source tree and in the wheel alike.
    CSS_PATH = ["styles/app.tcss", "styles/dashboard.tcss", "styles/screens.tcss"]
    TITLE = "dmedia-tui"
    COMMANDS = App.COMMANDS | {DmediaCommands}
    BINDINGS = [
        Binding("q", "quit", "quit"),
        Binding("question_mark", "help", "help"),
        Binding("f1", "help", "help", show=False),
        Binding("e", "events", "events"),
        Binding("exclamation_mark", "alert", "alert", show=False),
        Binding("r", "refresh", "refresh", show=False),
        # v d p a t: the store actions' keys (actions.py); each runs `action_<verb>`.
        *(Binding(a.key, a.verb, a.verb, show=a.footer) for a in STORE_ACTIONS if a.key),
        # In read-only mode the modifying ones are hidden and these answer instead.
        *(Binding(a.key, f"refuse('{a.verb}')", show=False) for a in MODIFYING if a.key),
    ]

    def __init__(
        self,
        ms: MetaStore,
        engine: Engine | None = None,
        read_only: bool = False,
        compact: bool | None = None,
        poll: float = POLL,
        coalesce: float = COALESCE,
    ) -> None:
        super().__init__()
        self.ms = ms
        self.engine = engine
        self.read_only = read_only
        self.compact = compact
        self.poll = poll
        self.coalesce = coalesce
        self.data: DashboardData | None = None
        self.library_name = short_path(ms.library_url)
        self.machine_name = ms.hostname
        self.simulated = bool(getattr(ms.clock, "simulated", False))
        self.engine_state = READ_ONLY if read_only else NO_ENGINE
        self.engine_running = False
        self.online_ids: set[str] = set()
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._changed = threading.Event()
        self._urgent = threading.Event()  # a refresh was requested: do not coalesce it
        self._next_allowed = 0.0  # time.monotonic() before which engine changes wait
        self._activity = threading.Event()
        self._activity_shown = False
        self._requested = 0
        self._applied = -1
        self._pending: DataReady | None = None
        self._thread: threading.Thread | None = None
        self._unsubscribe: Any = None
        self.refreshes = 0  # dashboard recomputations (tests and bench read it)

    # --- lifecycle -----------------------------------------------------------------------

    async def on_mount(self) -> None:
        # What is imported and built so far (Python, Textual, dmedia_tui, the app) lives
        # as long as the process: out of the collector's full passes, which otherwise walk
        # it all again and again while Textual builds and paints the first screen.
        gc.freeze()
        if self.engine is not None and not self.read_only:
            if self.engine.acquire_lock():
                self._unsubscribe = self.engine.subscribe(self._on_engine_event)
                self.engine.start()
                self.engine_running = True
                self.engine_state = ENGINE_RUNNING
            else:
                # Another engine owns this library here: watch it, change nothing (the
                # keys, the palette, the help screen and the banners all read read_only).
                self.engine_state = ENGINE_MONITOR
                self.read_only = True
        # The first load starts before the dashboard is composed: its queries run while
        # Textual builds the screen, and its data is applied once the widgets exist.
        self._thread = threading.Thread(target=self._refresh_loop, name="dmedia-tui-refresh")
        self._thread.daemon = True
        self._thread.start()
        await self.push_screen(DashboardScreen(self.compact))

    async def action_quit(self) -> None:
        self._stop.set()  # no more refreshes while the widgets go away
        await super().action_quit()

    def on_unmount(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self.engine is not None and self.engine_running:
            self.engine.stop()
            self.engine_running = False
        if self._thread is not None:
            self._thread.join(5)

    # --- refresh -------------------------------------------------------------------------

    def _on_engine_event(self, event: EngineEvent) -> None:
        """Called on engine threads: set flags only, never block the worker."""
        if event.kind == "activity":
            self._activity.set()
        else:
            self._changed.set()
            if time.monotonic() >= self._next_allowed:
                self._wake.set()  # otherwise the refresh loop picks it up when due

    def request_refresh(self) -> int:
        """Recompute soon even if no token moved; returns the generation to wait for."""
        self._requested += 1
        self._urgent.set()
        self._changed.set()
        self._wake.set()
        return self._requested

    def _local(self) -> Iterable[str] | None:
        if self.engine is not None and self.engine_running:
            return self.engine.connected_ids()  # None until the engine has looked once
        return None  # the MetaStore looks for connected FileStores itself

    def _refresh_loop(self) -> None:
        last: tuple[str, str] | None = None
        while not self._stop.is_set():
            try:
                token = self.ms.change_token()
            except Exception as e:  # the database went away: say so, keep polling
                token = None
                self._changed.clear()
                data = DashboardData(database_offline(str(e), self.ms.now()))
                self.post_message(DataReady(data, self._requested))
            pending = token is not None and (token != last or self._changed.is_set())
            wait = self.poll
            if pending:
                early = self._next_allowed - time.monotonic()
                if early > 0 and not self._urgent.is_set():
                    wait = min(wait, early)  # coalesce: come back when it is due
                else:
                    # Clear first, then read the generation: a request arriving in
                    # between sets the flags again and gets its own pass.
                    self._urgent.clear()
                    self._changed.clear()
                    generation = self._requested
                    try:
                        data = load_dashboard(self.ms, self._local())
                        last = token
                    except Exception as e:
                        data = DashboardData(database_offline(str(e), self.ms.now()))
                    self._next_allowed = time.monotonic() + self.coalesce
                    self.post_message(DataReady(data, generation))
            if self._activity.is_set() or self._activity_shown:
                self._activity.clear()
                self.post_message(ActivityTick())
            self._wake.wait(wait)
            self._wake.clear()

    def on_data_ready(self, message: DataReady) -> None:
        self._pending = message  # the newest data received; older pending data is stale
        self._apply_pending()

    def _apply_pending(self) -> None:
        message, self._pending = self._pending, None
        if message is None or self._stop.is_set():
            return
        try:
            self._apply(message)
        except (NoMatches, LookupError):
            # The app is closing (its screens are going away), or the dashboard was not
            # composed yet when its first data came: then keep it and try again shortly,
            # or that data (and settle()) would wait for the library to change, on an
            # idle one forever. Newer data arriving meanwhile takes its place.
            if not self._stop.is_set():
                if self._pending is None:
                    self._pending = message
                self.set_timer(0.01, self._apply_pending)

    def _apply(self, message: DataReady) -> None:
        self.data = message.data
        self.refreshes += 1
        self.online_ids = {r.store_id for r in message.data.health.store_rows if r.online}
        self.dashboard.show(message.data)
        if self.refreshes == 1:
            self._show_activity()
            # What exists now (Textual, the widgets, the first data) lives as long as the
            # app: keep it out of the collector's full passes, which would otherwise walk
            # it all (~30 ms with the UI thread stopped) while the engine allocates.
            gc.freeze()
        for screen in self.screen_stack:
            if screen is not self.dashboard and hasattr(screen, "refresh_data"):
                screen.refresh_data()
        self._applied = max(self._applied, message.generation)

    def on_activity_tick(self, _: ActivityTick) -> None:
        # A tick posted just before the app closed may arrive once the dashboard is gone.
        with contextlib.suppress(NoMatches, LookupError):
            self._show_activity()

    def _show_activity(self) -> None:
        engine = self.engine
        if engine is None or not self.engine_running:
            self._activity_shown = False
            self.dashboard.show_activity([], [], engine=False)
            return
        acts, rates = engine.activity_snapshot()
        self._activity_shown = bool(acts)
        self.dashboard.show_activity(acts, rates, engine=True)

    async def settle(self) -> None:
        """Wait until a refresh requested now has been applied (tests, bench)."""
        import asyncio

        generation = self.request_refresh()
        while self._applied < generation:
            await asyncio.sleep(0.01)
        while any(w.is_running for w in self.workers):
            with contextlib.suppress(WorkerCancelled):
                await self.workers.wait_for_complete()
        await asyncio.sleep(0)

    @property
    def dashboard(self) -> DashboardScreen:
        for screen in self.screen_stack:
            if isinstance(screen, DashboardScreen):
                return screen
        raise LookupError("no dashboard")

    # --- navigation ----------------------------------------------------------------------

    def open_store(self, store_id: str) -> None:
        self.push_screen(StoreScreen(store_id))

    def open_file(self, file_id: str) -> None:
        self.push_screen(FileScreen(file_id))

    def open_alert(self, alert: Alert) -> None:
        self.push_screen(AlertScreen(alert))

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_events(self) -> None:
        if isinstance(self.screen, EventsScreen):
            return
        store_id = self._target()[0] if isinstance(self.screen, StoreScreen) else None
        self.push_screen(EventsScreen(store_id=store_id))

    def action_alert(self) -> None:
        alerts = self.data.health.alerts if self.data else ()
        if not alerts:
            self.notify("No alerts: the library is healthy.")
            return
        self.open_alert(alerts[0])

    def action_refresh(self) -> None:
        self.request_refresh()

    def on_screen_resume(self) -> None:
        for widget in self.screen.query(AppHeader):
            widget.refresh_header()

    # --- actions -------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in MODIFYING_VERBS:
            return not self.read_only
        if action == "refuse":
            return self.read_only
        return True

    def action_refuse(self, action: str) -> None:
        who = "read-only monitor" if self.engine_state == ENGINE_MONITOR else "read-only"
        where = " here" if self.engine_state == ENGINE_MONITOR else ""
        self.notify(f"{who}: {action} is disabled{where}", severity="warning")

    def _target(self) -> tuple[str | None, str | None]:
        context = getattr(self.screen, "context", None)
        return context() if callable(context) else (None, None)

    def _label(self, store_id: str) -> str:
        labels = self.data.labels if self.data else {}
        return labels.get(store_id, store_id[:8])

    def action_verify(self) -> None:
        store_id, file_id = self._target()
        if self.engine is None or not self.engine_running:
            self.notify(
                "No engine runs in this app (another process holds it): "
                "use dmedia-tui verify there",
                severity="warning",
            )
            return
        self.engine.request_verify(store_id=store_id, file_id=file_id)
        what = f"file {file_id[:12]}" if file_id else (self._label(store_id) if store_id else "all")
        self.notify(f"verifying {what} next")

    def action_downgrade(self) -> None:
        self._store_action(DOWNGRADE)

    def action_purge(self) -> None:
        self._store_action(PURGE)

    def action_ack(self) -> None:
        """Acknowledge the selected store's failure; with none selected (or a store that
        is not failing), the one unacknowledged DRIVE_FAILURE banner if there is just one."""
        store_id = self._target()[0]
        failing = [
            a.store_ids[0]
            for a in (self.data.health.alerts if self.data else ())
            if a.code == DRIVE_FAILURE and a.store_ids
        ]
        if store_id not in failing and len(failing) == 1:
            self._run_store_action(ACK, failing[0])
            return
        self._store_action(ACK)

    def action_trust(self) -> None:
        self._store_action(TRUST)

    def _store_action(self, action: StoreAction) -> None:
        store_id = self._target()[0]
        if store_id is None:
            self.notify(f"{action.verb}: select a store first", severity="warning")
            return
        if action.confirm:
            self._preview(action, store_id)
        else:
            self._run_store_action(action, store_id)

    @work(thread=True, group="action")
    def _preview(self, action: StoreAction, store_id: str) -> None:
        try:
            preview = self.ms.preview(action, store_id)
        except Exception as e:
            self.call_from_thread(self._error, action.verb, e)
            return
        self.call_from_thread(self._ask, action, store_id, preview.describe())

    def _ask(self, action: StoreAction, store_id: str, description: str) -> None:
        title = f"{action.verb.capitalize()} store {self._label(store_id)}?"

        def done(confirmed: bool | None) -> None:
            if confirmed:
                self._run_store_action(action, store_id)
            else:
                self.notify(f"{action.verb} cancelled")

        self.push_screen(ConfirmScreen(title, description), done)

    @work(thread=True, group="action")
    def _run_store_action(self, action: StoreAction, store_id: str) -> None:
        try:
            # A store-wide one shows in the activity panel while it runs (the engine's
            # MetaStore.store_pass): at a million files, most of a minute.
            self.ms.run_action(action, store_id)
        except Exception as e:
            self.call_from_thread(self._error, action.verb, e)
            return
        label = self._label(store_id)
        self.call_from_thread(self.notify, f"{action.done} {label}")
        self.call_from_thread(self.request_refresh)

    def _error(self, action: str, error: Exception) -> None:
        message = str(error) or type(error).__name__
        self.notify(f"{action} failed: {message}", severity="error", timeout=8)


@contextlib.contextmanager
def _logging_off_the_screen() -> Iterator[None]:
    """Textual draws on stderr: log records must not land there while the app runs.

    The stderr handlers (of the dmedia_tui logger and of the root logger) are set aside
    for the duration; every other handler, such as the CLI's rotating log file on the
    root logger, keeps receiving the records, and Textual's devtools console gets them too.
    """
    logger = logging.getLogger("dmedia_tui")
    root = logging.getLogger()
    aside: list[tuple[logging.Logger, logging.Handler]] = [
        (lg, h)
        for lg in (logger, root)
        for h in lg.handlers
        if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is sys.stderr
    ]
    for lg, h in aside:
        lg.removeHandler(h)
    handler = TextualHandler(stderr=False, stdout=False)
    logger.addHandler(handler)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        for lg, h in aside:
            lg.addHandler(h)


def run_app(ms: MetaStore, engine: Engine | None = None, read_only: bool = False) -> int:
    """Run the app in the terminal until the user quits; its exit code (0 on a normal quit)."""
    app = DmediaApp(ms, engine, read_only=read_only)
    with _logging_off_the_screen():
        app.run()
    return int(app.return_code or 0)
