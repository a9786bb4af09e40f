"""The command palette's own commands: every action, by name (ctrl+p)."""

from __future__ import annotations

from functools import partial

from textual.command import DiscoveryHit, Hit, Hits, Provider

from dmedia_tui.actions import MODIFYING, STORE_ACTIONS

COMMANDS: tuple[tuple[str, str, str], ...] = (
    # The store actions (actions.py): verify, downgrade, purge, ack, trust.
    *((a.title, a.verb, a.asks(a.hint)) for a in STORE_ACTIONS if a.title),
    ("Show events", "events", "the event log, filtered by type and store"),
    ("Show worst alert", "alert", "what is wrong and what to do"),
    ("Refresh now", "refresh", "recompute the dashboard"),
    ("Help: keys", "help", "every key binding"),
)

READ_ONLY_HIDDEN = frozenset(a.verb for a in MODIFYING)


class DmediaCommands(Provider):
    """Offers the app's actions; modifying ones are left out in read-only mode."""

    def _commands(self) -> list[tuple[str, str, str]]:
        read_only = getattr(self.app, "read_only", False)
        return [c for c in COMMANDS if not (read_only and c[1] in READ_ONLY_HIDDEN)]

    def _run(self, action: str) -> None:
        self.app.call_later(self.app.run_action, action)

    async def discover(self) -> Hits:
        for name, action, help in self._commands():
            yield DiscoveryHit(name, partial(self._run, action), help=help)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for name, action, help in self._commands():
            score = matcher.match(name)
            if score > 0:
                yield Hit(score, matcher.highlight(name), partial(self._run, action), help=help)
