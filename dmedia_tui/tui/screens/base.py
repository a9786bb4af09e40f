"""What the app's screens share: the app they run in, typed.

Screens only ever run inside DmediaApp, and they call into it (its MetaStore, its latest
data, its navigation). Textual types `Screen.app` as any App; `dmedia` is the same object
typed as the concrete class, so a misspelt call is a type error, not a crash at runtime.
The import is for the type checker only: the app imports the screens, never the reverse.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from textual.screen import Screen

if TYPE_CHECKING:
    from dmedia_tui.tui.app import DmediaApp


class AppScreen(Screen):
    """A screen of DmediaApp."""

    @property
    def dmedia(self) -> DmediaApp:
        """The running DmediaApp (the same object as `self.app`)."""
        return cast("DmediaApp", self.app)
