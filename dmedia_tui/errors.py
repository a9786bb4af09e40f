"""The one base of every error dmedia-tui raises on purpose.

A `DmediaError` is a user-level failure: its message is one line, fit for stderr or a
banner, and it is never a bug. Every layer's error derives from it (`ProtocolError`,
`ConfigError`, `ClockError`, `SchemaError`, `DatabaseError`, `FileStoreError`,
`MetaStoreError`, `PeerError`, ...), each still defined where it is raised, so one
`except DmediaError` stands for "bad input or a failing environment, not a crash". The CLI
turns it into one line and an exit code (`cli._exit_code`: 3 when the library or this
machine's identity cannot be read, 1 otherwise); an exception that is not a DmediaError
(nor an OSError) reaching the CLI is a bug (exit 70, "internal error").

Some errors are also a builtin (`ConfigError` is a ValueError, `NotFound` a KeyError,
`StoreUnsafe` an OSError) because callers catch them as such; they keep that base.

This module imports nothing of the package: every layer may import it.
"""

from __future__ import annotations


class DmediaError(Exception):
    """An error for the user, not a bug: one line, the CLI's exit 1 unless it says 3."""
