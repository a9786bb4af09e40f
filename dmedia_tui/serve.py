"""The app in a browser: `dmedia-tui serve` runs the same Textual app behind textual-serve.

Every browser tab gets its own app process (textual-serve starts the command per
connection, with Textual's web driver). The app is started with `--read-only` unless
`allow_actions`: a browser is easy to leave open on a shared screen, and textual-serve
has no login, so whoever reaches the port sees the library (and, with actions, can
downgrade or purge stores). Listening beyond localhost is therefore warned about.
"""

from __future__ import annotations

import ipaddress
import shlex
import socket
import sys
from collections.abc import Sequence

from dmedia_tui.actions import MODIFYING

DEFAULT_PORT = 8472
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "ip6-localhost"}


def is_local(host: str) -> bool:
    """True when only this machine can connect (a loopback address or name)."""
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def app_command(db: str | None, allow_actions: bool) -> str:
    """The shell command textual-serve runs per browser tab: this Python, this library."""
    args: list[str] = [sys.executable, "-m", "dmedia_tui"]
    if db:
        args += ["--db", db]
    if not allow_actions:
        args.append("--read-only")
    return shlex.join(args)


def public_url(host: str, port: int) -> str:
    """The address browsers are sent to for the websocket (a wildcard host is not one)."""
    if host in ("0.0.0.0", "::", ""):
        host = socket.gethostname()
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def warnings(host: str, allow_actions: bool) -> list[str]:
    out = []
    if not is_local(host):
        out.append(
            f"warning: serving the app on {host}, beyond this machine, without a password: "
            "anyone who can reach this port sees your library"
            + (" and can act on it (--allow-actions)" if allow_actions else "")
        )
    if allow_actions:
        verbs = ", ".join(a.verb for a in MODIFYING)
        out.append(f"actions are allowed in the browser ({verbs})")
    return out


def make_server(
    command: str, host: str, port: int, url: str | None = None, title: str = "dmedia-tui"
):
    """A textual-serve Server (not started)."""
    from textual_serve.server import Server

    return Server(
        command, host=host, port=port, title=title, public_url=url or public_url(host, port)
    )


def serve(command: str, host: str, port: int, url: str | None = None) -> None:
    """Serve until SIGINT/SIGTERM."""
    make_server(command, host, port, url).serve()


def describe(host: str, port: int, allow_actions: bool, url: str | None) -> Sequence[str]:
    mode = "actions allowed" if allow_actions else "read-only"
    return [f"serving the dmedia-tui app ({mode}) at {url or public_url(host, port)}/"]
