"""The command line: the same facts and actions as the app, for people and for scripts.

Every command takes `--db` (or DMEDIA_DB) and honours DMEDIA_NOW. Errors are one line on
stderr and a non-zero exit, never a traceback. `status` exits 0 healthy, 1 low
durability (informational alerts) only, 2 any panic, 3 cannot read the library.
"""

from __future__ import annotations

import json
import logging
import sys
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    import logging.handlers

from dmedia_tui import __version__
from dmedia_tui.actions import MODIFYING, STORE_ACTIONS, StoreAction
from dmedia_tui.clock import Clock, ClockError, clock_from_env
from dmedia_tui.config import Config, ConfigError, IdentityError
from dmedia_tui.db import DatabaseError, DatabaseOffline, is_couch_url, open_library
from dmedia_tui.errors import DmediaError
from dmedia_tui.filestore import walk_files
from dmedia_tui.metastore import (
    MetaStore,
    UnknownStore,
    failure_warning,
    store_label,
)

log = logging.getLogger("dmedia_tui")

EXIT_OK, EXIT_LOW, EXIT_PANIC, EXIT_UNREADABLE = 0, 1, 2, 3
EXIT_USAGE = 2  # click's own code for a wrong command line


class UserError(click.ClickException):
    """One line on stderr, exit 1 (or the given code)."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        # click declares exit_code a ClassVar; a per-instance code is what sys.exit gets.
        self.exit_code = exit_code  # type: ignore[misc]

    def show(self, file: Any = None) -> None:
        click.echo(f"dmedia-tui: {self.format_message()}", err=True)


@dataclass
class Context:
    db: str | None
    read_only: bool = False
    _config: Config | None = None
    warned: set[str] = field(default_factory=set)  # options already warned about

    @property
    def config(self) -> Config:
        if self._config is None:
            try:
                self._config = Config.load()
            except ConfigError as e:
                raise UserError(str(e)) from None
            except (ValueError, TypeError, AttributeError, OSError) as e:
                # Config.load should only raise ConfigError; never let bad input escape.
                raise UserError(f"cannot read the configuration: {e}") from None
        return self._config

    def clock(self, ticking: bool = False) -> Clock:
        try:
            return clock_from_env(ticking=ticking)
        except ClockError as e:
            raise UserError(str(e)) from None

    @contextmanager
    def metastore(
        self, *, ticking: bool = False, unreadable_exit: int = EXIT_UNREADABLE, create: bool = False
    ) -> Iterator[MetaStore]:
        """The library, opened. Only `store init` passes create=True: any other command on a
        missing, empty or damaged library refuses (exit 3) rather than start a new one."""
        _warn_password(self.db, "--db", self.warned)
        url = self.config.db_url(self.db)
        try:
            lib = open_library(url, create=create, timeout=self.db_timeout())
        except DatabaseError as e:
            raise UserError(f"{e}{_open_hint(url, str(e))}", unreadable_exit) from None
        try:
            yield MetaStore(lib, self.config, self.clock(ticking))
        except DatabaseOffline as e:
            raise UserError(f"{e}{_open_hint(url, str(e))}", unreadable_exit) from None
        except DatabaseError as e:
            raise UserError(str(e)) from None
        finally:
            lib.close()

    def db_timeout(self) -> float:
        """[database] timeout / DMEDIA_DB_TIMEOUT; a bad value is a one-line error (exit
        1 like any bad setting; status turns every failure into 3)."""
        try:
            return self.config.db_timeout()
        except ConfigError as e:
            raise UserError(str(e)) from None


def _warn_password(value: str | None, option: str, warned: set[str]) -> None:
    """A password in an argument is visible to every user (ps, /proc/PID/cmdline): say so
    (once), and where it belongs instead. The password itself is never printed."""
    if option in warned:
        return
    if _has_password(value):
        warned.add(option)
        click.echo(
            f"dmedia-tui: warning: the password in {option} is visible to other users of this "
            "machine (ps, /proc/PID/cmdline); put it in ~/.netrc (or DMEDIA_DB, config.toml)",
            err=True,
        )


def _has_password(value: str | None) -> bool:
    """A CouchDB URL that carries a password (never printed: only said to be there)."""
    if not value or not is_couch_url(value):
        return False
    try:
        return urllib.parse.urlsplit(value).password is not None
    except ValueError:
        return False


def _open_hint(url: str, error: str) -> str:
    """What to do when the library cannot be opened: start one, or rebuild a lost one."""
    if is_couch_url(url):
        if "does not exist" in error:
            return " (a new library starts with: dmedia-tui store init PATH --db URL)"
        return ""
    if not Path(url).exists():
        return " (a new library starts with: dmedia-tui store init PATH)"
    if error.endswith("file is empty") or "damaged" in error:
        return " (rebuild it from its stores: dmedia-tui rebuild --db NEW_PATH)"
    return ""


pass_ctx = click.make_pass_decorator(Context)


def _set_db(click_ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    obj = click_ctx.find_object(Context)
    if value is not None and obj is not None:
        obj.db = value


# `dmedia-tui status --db X` works as well as `dmedia-tui --db X status`.
_db_option = click.option(
    "--db",
    metavar="URL",
    expose_value=False,
    is_eager=True,
    callback=_set_db,
    help="Library: SQLite path or http(s):// CouchDB URL (as before the command).",
)


def _exit_code(e: DmediaError) -> int:
    """The exit code of an error that ends a command: 3 when this machine's identity cannot
    be read (nothing can be told about the library), 1 for every other DmediaError."""
    return EXIT_UNREADABLE if isinstance(e, IdentityError) else 1


def _handle_errors(fn):
    """Turn the core's typed errors into one line on stderr (never a traceback)."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DmediaError as e:
            raise UserError(str(e), _exit_code(e)) from None
        except OSError as e:
            raise UserError(f"{e.strerror or e}: {e.filename or ''}".rstrip(": ")) from None

    return wrapper


def _emit_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


def _size(n: int | None) -> str:
    import humanize  # only when a size is shown: ~1 ms of every start

    return humanize.naturalsize(n or 0) if n is not None else "-"


def _ago(t: float | None, now: float) -> str:
    if not t:
        return "never"
    import humanize

    return humanize.naturaldelta(max(0.0, now - t)) + " ago"


# --- the group ---------------------------------------------------------------------------


@click.group(invoke_without_command=True, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--db",
    metavar="URL",
    help="Library: SQLite path or http(s):// CouchDB URL "
    "(default: DMEDIA_DB, config.toml, then the embedded library).",
)
@click.option("--read-only", is_flag=True, help="App: monitor only, no actions, no workers.")
@click.version_option(__version__, prog_name="dmedia-tui")
@click.pass_context
def cli(click_ctx: click.Context, db: str | None, read_only: bool) -> None:
    """Keep a media library safe: 3 verified copies of every file you cannot replace.

    With no command, opens the full-screen app on the configured library.
    """
    click_ctx.obj = Context(db=db, read_only=read_only)
    _setup_logging()
    if click_ctx.invoked_subcommand is None:
        _run_app(click_ctx.obj)


def _setup_logging(level: int = logging.WARNING) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr
        )


def app_log_handler(
    path: Path, max_bytes: int = 5_000_000, backups: int = 3
) -> logging.handlers.RotatingFileHandler:
    """The app's log file: timestamped records, rotated at `max_bytes` (`backups` kept)."""
    import logging.handlers  # the app's only: not at every CLI start (socket, pickle...)

    handler = logging.handlers.RotatingFileHandler(
        path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8"
    )
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return handler


@_handle_errors
def _run_app(ctx: Context, config: Config | None = None, db: str | None = None) -> None:
    from dmedia_tui.engine import Engine
    from dmedia_tui.tui.app import run_app

    if config is not None:
        ctx._config = config
    if db is not None:
        ctx.db = db
    _check_notify_config(ctx)  # before the app takes the terminal
    # The app owns the terminal: log to a file instead of stderr.
    logfile = ctx.config.data_dir / "dmedia-tui.log"
    logfile.parent.mkdir(parents=True, exist_ok=True)
    root = logging.getLogger()
    for h in list(root.handlers):
        root.removeHandler(h)
    root.addHandler(app_log_handler(logfile))
    root.setLevel(logging.INFO)
    with ctx.metastore(ticking=True) as ms:
        engine = None
        if not ctx.read_only:
            engine = Engine(ms)
        monitors = _attach_monitors(engine)  # notify, SMART, rates: see the end of this file
        try:
            code = run_app(ms, engine, read_only=ctx.read_only)
        finally:
            _close_monitors(monitors)
    sys.exit(code or 0)


# --- demo ----------------------------------------------------------------------------


@cli.command()
@click.argument("directory", required=False, type=click.Path(file_okay=False, path_type=Path))
@click.option("--files", default=400, show_default=True, help="How many files to create.")
@click.option("--build-only", is_flag=True, help="Build the sandbox and exit (no app).")
@pass_ctx
@_handle_errors
def demo(ctx: Context, directory: Path | None, files: int, build_only: bool) -> None:
    """Build a sandbox library in DIRECTORY (default: a new temp dir) and open the app on it.

    Several stores as folders, another machine that is off, an unplugged drive, a failing
    drive whose corrupt copies the first scan finds, hundreds of camera files at every
    durability. Nothing outside DIRECTORY is touched.
    """
    import tempfile

    from dmedia_tui.demo import build_demo

    if directory is None:
        directory = Path(tempfile.mkdtemp(prefix="dmedia-demo-"))
    elif directory.exists() and any(directory.iterdir()):
        raise UserError(f"{directory} is not empty: give a new or empty folder")
    directory.mkdir(parents=True, exist_ok=True)
    now = ctx.clock().now()
    built = build_demo(directory, now, files=files)
    click.echo(built.summary(), err=True)
    if build_only:
        click.echo(str(directory))
        return
    config = Config.load(built.config_dir, built.data_dir)
    try:
        _run_app(ctx, config=config, db=str(built.db_path))
    finally:
        click.echo(f"demo library left in {directory}", err=True)


# --- store ---------------------------------------------------------------------------


@cli.group()
def store() -> None:
    """Create, list and manage stores (folders, usually drive roots, holding copies)."""


@store.command("init")
@click.argument("path", type=click.Path(path_type=Path))
@click.option(
    "--copies",
    default=1,
    show_default=True,
    type=click.IntRange(0, 10),
    help="Durability a copy on this store is worth.",
)
@click.option("--label", help="A name for the store (default: the folder name).")
@click.option(
    "--same-filesystem", is_flag=True, help="Allow a store on a filesystem that already holds one."
)
@click.option("--json", "as_json", is_flag=True)
@_db_option
@pass_ctx
@_handle_errors
def store_init(
    ctx: Context, path: Path, copies: int, label: str | None, same_filesystem: bool, as_json: bool
) -> None:
    """Make PATH a store of this library (an existing store there is re-attached)."""
    if not path.exists():
        raise UserError(f"no such folder: {path} (create it or mount the drive first)")
    if not path.is_dir():
        raise UserError(f"not a folder: {path}")
    with ctx.metastore(create=True) as ms:
        fs, doc, created = ms.init_store(path, copies, label, same_filesystem)
    warning = failure_warning(doc)
    if warning:
        click.echo(f"dmedia-tui: {warning}", err=True)
    if as_json:
        _emit_json({"created": created, "path": str(fs.path), "store": doc})
    else:
        verb = "created" if created else "re-attached"
        click.echo(f"{verb} store {store_label(doc)} ({doc['_id']}) at {fs.path}")


@store.command("list")
@click.option("--json", "as_json", is_flag=True)
@_db_option
@pass_ctx
@_handle_errors
def store_list(ctx: Context, as_json: bool) -> None:
    """Every store of the library, with its state as seen from this machine."""
    with ctx.metastore() as ms:
        h = ms.health()
        known = ms.config.known_stores()
    if as_json:
        rows = [{**r.to_json(), "path": known.get(r.store_id)} for r in h.store_rows]
        _emit_json(rows)
        return
    if not h.store_rows:
        click.echo("no stores yet: dmedia-tui store init /media/<drive>")
        return
    click.echo(f"{'ID':24}  {'LABEL':16} {'STATE':10} {'×':>2} {'FILES':>8} {'FREE':>10}  PATH")
    for r in h.store_rows:
        click.echo(
            f"{r.store_id:24}  {r.label[:16]:16} {r.state.value:10} {r.copies:>2} "
            f"{r.files:>8} {_size(r.bytes_avail):>10}  {known.get(r.store_id, '-')}"
        )


def _store_action(ctx: Context, name: str, action: StoreAction, yes: bool, dry_run: bool) -> None:
    with ctx.metastore() as ms:
        doc = ms.resolve_store(name)
        sid = doc["_id"]
        if dry_run:
            click.echo(ms.preview(action, sid).describe())
            return
        # Downgrade and purge weaken durability; trust lets new copies go to a store that
        # was flagged: those ask (actions.py), showing what they change (off a terminal: --yes).
        if action.confirm and not yes:
            preview = ms.preview(action, sid)  # counts every file on the store: only here
            if not sys.stdin.isatty():
                raise UserError(f"refusing without --yes (not a terminal); {preview.describe()}")
            click.echo(preview.describe())
            if not click.confirm("Proceed?", default=False):
                raise UserError("nothing changed", 1)
        if action.store_wide and sys.stderr.isatty():
            _run_with_bar(ms, action, sid, f"{action.verb} {store_label(doc)}")
        else:
            ms.run_action(action, sid)
        click.echo(f"{action.verb}: {store_label(doc)} ({sid}) done")


def _run_with_bar(ms: MetaStore, action: StoreAction, sid: str, label: str) -> None:
    """A store-wide action with a bar on stderr (at a million files it takes most of a
    minute). The bar is ended as soon as every file is done, so the event the action
    logs next starts a line of its own."""
    bar = click.progressbar(length=max(1, ms.files_on(sid)), label=label, file=sys.stderr)
    ended = False

    def end() -> None:
        nonlocal ended
        if not ended:
            ended = True
            bar.render_finish()

    def progress(done: int, total: int) -> None:
        if ended:
            return
        bar.length = max(1, total)
        bar.update(done - bar.pos)
        if done >= total:
            end()

    bar.render_progress()  # at 0 % now: the first batch takes a second at a million files
    try:
        ms.run_action(action, sid, progress)
    finally:
        end()


def _make_store_action(action: StoreAction) -> None:
    @click.argument("store_name", metavar="STORE")
    @click.option("--yes", "-y", is_flag=True, help="Do not ask.")
    @click.option("--dry-run", is_flag=True, help="Only show what would change.")
    @_db_option
    @pass_ctx
    @_handle_errors
    def command(ctx: Context, store_name: str, yes: bool, dry_run: bool) -> None:
        _store_action(ctx, store_name, action, yes, dry_run)

    command.__doc__ = action.cli_help
    store.command(action.verb)(command)


# `store downgrade`, `purge`, `ack`, `trust`: every action of the table that runs on a store.
for _action in STORE_ACTIONS:
    if _action.cli == ("store", _action.verb):
        _make_store_action(_action)


# --- import / verify / check / daemon ------------------------------------------------------


@cli.command("import")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--store", "store_name", help="Store to copy into (default: the one with most room).")
@click.option(
    "--origin",
    default="user",
    show_default=True,
    type=click.Choice(["user", "paid", "render", "proxy", "cache", "download"]),
)
@click.option("--json", "as_json", is_flag=True)
@_db_option
@pass_ctx
@_handle_errors
def import_(
    ctx: Context, paths: tuple[Path, ...], store_name: str | None, origin: str, as_json: bool
) -> None:
    """Hash and copy files (folders recursively) into a store and record them."""
    for p in paths:
        if not p.exists():
            raise UserError(f"no such file or folder: {p}")
    with ctx.metastore() as ms:
        fs = ms.import_destination(store_name)
        show = sys.stderr.isatty() and not as_json
        if show:
            total = sum(p.stat().st_size for p in walk_files(paths))
            with click.progressbar(length=total, label="importing", file=sys.stderr) as bar:
                report = ms.import_paths(paths, fs, origin, on_file=lambda _p, n: bar.update(n))
        else:
            report = ms.import_paths(paths, fs, origin)
    if as_json:
        _emit_json({"store_id": fs.id, **report.to_json()})
    else:
        skipped = f", {len(report.skipped)} skipped (not regular files)" if report.skipped else ""
        click.echo(
            f"imported {report.files} files ({_size(report.bytes)}) into {fs.path}: "
            f"{report.new} new, {report.duplicates} already known, "
            f"{report.empty} empty skipped{skipped}"
        )
        for s in report.skipped[:20]:
            click.echo(f"dmedia-tui: skipped {s['path']}: {s['reason']}", err=True)
        if len(report.skipped) > 20:
            click.echo(f"dmedia-tui: ... and {len(report.skipped) - 20} more skipped", err=True)
    for err in report.errors:  # with --json too: scripts see them in the JSON, people here
        click.echo(f"dmedia-tui: {err}", err=True)
    if report.errors:
        sys.exit(1)


@cli.command()
@click.option("--store", "store_name", help="Only this store.")
@click.option("--all", "all_", is_flag=True, help="Every copy, not only the due ones.")
@click.option("--json", "as_json", is_flag=True)
@_db_option
@pass_ctx
@_handle_errors
def verify(ctx: Context, store_name: str | None, all_: bool, as_json: bool) -> None:
    """Verify copies on connected stores (due ones, or --all), handling what is found."""
    from dmedia_tui.engine import Engine

    _check_notify_config(ctx)
    with ctx.metastore() as ms:
        # The connected stores are presence.py's (known folders and mounted drives), as
        # for every command; no watcher thread runs (`verify` is one pass).
        engine = Engine(ms, watch_folders=False)
        sid = ms.resolve_store(store_name)["_id"] if store_name else None
        found = engine.refresh_connected(only=sid)
        if sid and sid not in found:
            raise UserError(f"store {store_name} is not connected to this machine")
        if all_:
            engine.request_verify(sid)
        summary = engine.verify_until_done(limit=500).to_json()
        _notify_once(engine)  # notifications: see the end of this file
    if as_json:
        _emit_json(summary)
    else:
        click.echo(
            f"verified {summary['verified']}, corrupt {summary['corrupt']}, "
            f"missing {summary['missing']}, unreadable {summary['unreadable']}"
        )
    sys.exit(2 if summary["corrupt"] else 0)


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@_db_option
@pass_ctx
@_handle_errors
def check(ctx: Context, as_json: bool) -> None:
    """Schema and consistency pass over every doc; new problems go to log-1."""
    with ctx.metastore() as ms:
        # With the storage's own check (every page of an SQLite library: too slow for
        # every open), run beside the walk of the docs.
        report = ms.check(storage=True)
    data = report.__dict__
    if as_json:
        _emit_json(data)
    else:
        click.echo(
            f"checked {report.docs} docs: {report.invalid} invalid, "
            f"{report.inconsistent} inconsistent ({report.logged} newly logged)"
        )
    sys.exit(1 if report.invalid or report.inconsistent else 0)


@cli.command()
@click.option("--once", is_flag=True, help="Work until the present backlog is empty, then exit.")
@click.option("--json", "as_json", is_flag=True, help="With --once: print a JSON summary.")
@click.option("-v", "--verbose", is_flag=True)
@_db_option
@pass_ctx
@_handle_errors
def daemon(ctx: Context, once: bool, as_json: bool, verbose: bool) -> None:
    """Run the workers headless (logs to stderr): verify, copy, watch drives, policies."""
    import signal
    import threading

    from dmedia_tui.engine import Engine

    logging.getLogger().setLevel(logging.INFO if verbose or not once else logging.WARNING)
    _timestamped_stderr_logging()  # the journal and plain stderr both get times
    _check_notify_config(ctx)
    with ctx.metastore(ticking=not once) as ms:
        # --once scans the partitions once per housekeeping pass (a wiped drive is purged,
        # a store on a drive mounted somewhere new is found) but starts no watcher.
        engine = Engine(ms, watch_drives=True, watch_folders=not once)
        if not engine.acquire_lock():
            raise UserError("another dmedia-tui engine already runs for this library here")
        monitors = _attach_monitors(engine, once)  # notify, SMART, rates: see end of file
        try:
            if once:
                _smart_once(engine)
                summary = engine.run_once()
                if as_json:
                    _emit_json(summary.to_json())
                else:
                    s = summary
                    click.echo(
                        f"verified {s.verified}, corrupt {s.corrupt}, missing {s.missing}, "
                        f"unreadable {s.unreadable}, copies made {s.copies}, "
                        f"stores purged {s.purged}, policy events {s.events}",
                        err=True,
                    )
                return
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            engine.start()
            log.info("engine running (library %s)", ms.library_url)
            sd = _systemd_ready(engine)  # READY=1 and watchdog pings under systemd
            stop.wait()
            sd.stopping()
        finally:
            engine.stop()
            _close_monitors(monitors, final_check=once)


# --- peers (issue 12) ----------------------------------------------------------------------


@cli.group()
def peer() -> None:
    """The machines of this library and how they reach each other (copies travel between
    machines over mutual TLS; see the README)."""


@peer.command("list")
@click.option("--json", "as_json", is_flag=True)
@_db_option
@pass_ctx
@_handle_errors
def peer_list(ctx: Context, as_json: bool) -> None:
    """Every machine: hostname, certificate fingerprint, addresses, online, this one."""
    from dmedia_tui.peer.service import list_machines

    with ctx.metastore(create=False) as ms:
        machines = list_machines(ms)
    if as_json:
        _emit_json([m.to_json() for m in machines])
        return
    if not machines:
        click.echo("no machines yet: run dmedia-tui daemon (or the app) on each machine")
        return
    click.echo(f"{'':2}{'HOSTNAME':16} {'ONLINE':7} {'FINGERPRINT':18} ADDRESSES")
    for m in machines:
        fp = f"{m.fingerprint[:16]}…" if m.fingerprint else "-"
        click.echo(
            f"{'*' if m.this else ' ':2}{m.hostname[:16]:16} {'yes' if m.online else 'no':7} "
            f"{fp:18} {' '.join(m.addresses) or '-'}"
        )


# --- status / events ---------------------------------------------------------------------


@cli.command()
@click.option("--json", "as_json", is_flag=True)
@click.option("--short", is_flag=True, help="One line, for a tmux status bar or polybar.")
@_db_option
@pass_ctx
def status(ctx: Context, as_json: bool, short: bool) -> None:
    """Is the library safe? Exit 0 healthy, 1 low durability only, 2 panic, 3 unreadable."""
    try:
        with ctx.metastore() as ms:
            h = ms.health(with_verification=short)
    except UserError as e:
        # Any failure is "cannot tell": exit 1 or 2 would read as a health verdict.
        raise UserError(e.message, EXIT_UNREADABLE) from None
    except (DmediaError, OSError) as e:
        raise UserError(str(e), EXIT_UNREADABLE) from None
    if as_json:
        _emit_json(h.to_json())
    elif short:
        from dmedia_tui.metrics import short_line

        click.echo(short_line(h, ms.thresholds.low_durability))
    else:
        _print_status(h)
    sys.exit(h.exit_code)


def _print_status(h) -> None:
    click.echo(f"{h.files} user files, {_size(h.bytes)}")
    labels = {0: "0", 1: "1", 2: "2", 3: "3+"}
    for b in h.histogram:
        click.echo(
            f"  durability {labels[b.durability]:>2}: {b.files:>8} files {_size(b.bytes):>10}"
        )
    for r in h.store_rows:
        where = "online" if r.online else "offline"
        if r.unreachable_at:
            where = f"offline (on, unreachable at {r.unreachable_at})"
        click.echo(f"  store {r.label:16} {r.state.value:10} {r.files:>8} files {where}")
    if not h.store_rows:
        click.echo("no stores yet: dmedia-tui store init /media/<drive>")
    elif not h.alerts:
        click.echo("OK: every user file has enough copies")
    for a in h.alerts:
        click.echo(f"{a.severity.name:8} {a.code}: {a.message}")
        click.echo(f"         -> {a.action}")


def _parse_since(value: str | None, now: float) -> float | None:
    if value is None:
        return None
    v = value.strip()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if v and v[-1] in units and v[:-1].replace(".", "", 1).isdigit():
        return now - float(v[:-1]) * units[v[-1]]
    try:
        return float(v)
    except ValueError:
        pass
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        raise UserError(
            f"--since: expected unix seconds, an ISO date or 10m/2h/3d, got {value!r}"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.timestamp()


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="JSON Lines, one log doc per line.")
@click.option("--since", help="Unix seconds, ISO date, or an age like 30m, 2h, 3d.")
@click.option(
    "--type",
    "types",
    multiple=True,
    help="Event type, e.g. dmedia/file/corrupt or file/corrupt (repeatable).",
)
@click.option("--store", "store_name", help="Only events about this store.")
@click.option("--limit", type=click.IntRange(1), help="At most this many (the newest).")
@_db_option
@pass_ctx
@_handle_errors
def events(
    ctx: Context,
    as_json: bool,
    since: str | None,
    types: tuple[str, ...],
    store_name: str | None,
    limit: int | None,
) -> None:
    """The data-safety events of log-1, oldest first."""
    from dmedia_tui.schema import LOG_TYPES

    full_types = []
    for t in types:
        full = t if t.startswith("dmedia/") else f"dmedia/{t}"
        if full not in LOG_TYPES:
            raise UserError(
                f"unknown event type {t!r}; known: "
                + ", ".join(sorted(x.removeprefix("dmedia/") for x in LOG_TYPES))
            )
        full_types.append(full)
    with ctx.metastore() as ms:
        now = ms.now()
        since_t = _parse_since(since, now)
        sid = None
        if store_name:
            try:
                sid = ms.resolve_store(store_name)["_id"]
            except UnknownStore:
                sid = _purged_store_id(ms, store_name)  # its events remain
        rows = _collect_events(ms, since_t, full_types or None, sid, limit)
    for ev in rows:
        if as_json:
            click.echo(json.dumps(ev, sort_keys=True, default=str))
        else:
            t = _event_time(ev.get("time"))
            what = str(ev.get("type", "")).removeprefix("dmedia/")
            detail = " ".join(
                f"{k}={ev[k]}"
                for k in ("label", "store_id", "file_id", "reason", "count")
                if ev.get(k) is not None
            )
            click.echo(f"{t}  {what:18} {detail}")


def _event_time(value: Any) -> str:
    """A log doc's time for people; a junk one (a damaged or foreign doc) shows as such."""
    try:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise TypeError
        return datetime.fromtimestamp(value, UTC).strftime("%Y-%m-%d %H:%M:%S")
    except (TypeError, ValueError, OverflowError, OSError):
        return f"{'(bad time)':19}"


def _purged_store_id(ms: MetaStore, name: str) -> str:
    """The ID of a purged store named by ID, unique ID prefix or label (from its purge event)."""
    from dmedia_tui.schema import LOG_STORE_PURGE

    purged: dict[str, str] = {}
    for ev in ms.iter_events(types=[LOG_STORE_PURGE]):
        if ev.get("store_id"):
            purged[ev["store_id"]] = ev.get("label") or ""
    if name in purged:
        return name
    for matches in (
        {sid for sid, label in purged.items() if label == name},
        {sid for sid in purged if sid.startswith(name.upper())},
    ):
        if len(matches) == 1:
            return matches.pop()
        if len(matches) > 1:
            raise UserError(f"{len(matches)} purged stores match {name!r}: use the store ID")
    raise UserError(f"unknown store {name!r} (see: dmedia-tui store list)")


def _collect_events(ms: MetaStore, since: float | None, types, store_id, limit) -> list[dict]:
    """The matching events, oldest first: the newest `limit`, or all of them."""
    if limit:
        rows = ms.events(limit, newest_first=True, since=since, types=types, store_id=store_id)
        return list(reversed(rows))
    return list(ms.iter_events(since=since, types=types, store_id=store_id))


# --- rebuild -------------------------------------------------------------------------------


@cli.command()
@click.argument("folders", nargs=-1, type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True)
@_db_option
@pass_ctx
@_handle_errors
def rebuild(ctx: Context, folders: tuple[Path, ...], as_json: bool) -> None:
    """Re-create a lost library from the stores' own contents (every copy re-hashed).

    FOLDERS are store folders (default: every store folder this machine knows). The
    library (--db) must be new or empty: an emptied library file is replaced, anything
    else is refused. File names, origins and the event history cannot be recovered.
    """
    from dmedia_tui.rebuild import bytes_to_hash, check_target_empty
    from dmedia_tui.rebuild import rebuild as run_rebuild

    for f in folders:
        if not f.is_dir():
            raise UserError(f"not a folder: {f}")
    url = ctx.config.db_url(ctx.db)
    if not is_couch_url(url):
        _clear_emptied_library(Path(url))
    targets = [str(f) for f in folders] or list(ctx.config.known_stores().values())
    if not targets:
        raise UserError("no store folders known on this machine: name them (rebuild FOLDER...)")
    with ctx.metastore(create=True) as ms:
        check_target_empty(ms)
        if sys.stderr.isatty() and not as_json:
            total = bytes_to_hash(targets)
            with click.progressbar(length=total, label="hashing", file=sys.stderr) as bar:
                report = run_rebuild(ms, targets, progress=lambda _f, n: bar.update(n))
        else:
            report = run_rebuild(ms, targets)
        where = ms.library_url
    if as_json:
        _emit_json({"library": where, **report.to_json()})
    else:
        click.echo(
            f"rebuilt {where} from {len(report.stores)} stores: {report.files} files, "
            f"{report.copies} copies ({_size(report.bytes)} hashed), "
            f"{report.corrupt} corrupt copies quarantined"
        )
    for err in report.errors:
        click.echo(f"dmedia-tui: {err}", err=True)
    if report.errors:
        sys.exit(1)


def _clear_emptied_library(path: Path) -> None:
    """An SQLite library emptied to 0 bytes holds nothing: rebuild may start a new one there.
    A WAL beside it that still holds data is not thrown away."""
    try:
        if not path.is_file() or path.stat().st_size != 0:
            return
        for suffix in ("-wal", "-shm"):
            side = Path(f"{path}{suffix}")
            if side.exists() and side.stat().st_size and suffix == "-wal":
                raise UserError(f"{side} still holds data: move it aside first", EXIT_UNREADABLE)
        for suffix in ("-wal", "-shm", ""):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    except OSError as e:
        raise UserError(f"cannot replace the empty library {path}: {e}", EXIT_UNREADABLE) from None


# --- migrate -------------------------------------------------------------------------------


@cli.command()
@click.option("--to", "to_url", required=True, metavar="URL", help="Target library (CouchDB URL).")
@click.option(
    "--overwrite", is_flag=True, help="Replace target docs whose content differs (default: keep)."
)
@click.option("--json", "as_json", is_flag=True)
@_db_option
@pass_ctx
@_handle_errors
def migrate(ctx: Context, to_url: str, overwrite: bool, as_json: bool) -> None:
    """Copy this library (files, stores, machines and the log-1 history) into URL.

    Idempotent and resumable: docs already there are skipped, so run it again after an
    interruption. Then use the new library with --db URL (or DMEDIA_DB, config.toml).
    """
    from dmedia_tui.migrate import count_docs
    from dmedia_tui.migrate import migrate as run_migrate

    _warn_password(ctx.db, "--db", ctx.warned)
    try:
        source = open_library(ctx.config.db_url(ctx.db), create=False, timeout=ctx.db_timeout())
    except DatabaseError as e:
        raise UserError(f"source: {e}{_open_hint(ctx.config.db_url(ctx.db), str(e))}", 3) from None
    try:
        _warn_password(to_url, "--to", ctx.warned)
        to_url = ctx.config.with_credentials(to_url)
        try:
            target = open_library(to_url, create=True, timeout=ctx.db_timeout())
        except DatabaseError as e:
            raise UserError(f"target: {e}") from None
        try:
            if sys.stderr.isatty() and not as_json:
                with click.progressbar(
                    length=count_docs(source), label="migrating", file=sys.stderr
                ) as bar:
                    report = run_migrate(
                        source, target, overwrite=overwrite, progress=lambda _db, n: bar.update(n)
                    )
            else:
                report = run_migrate(source, target, overwrite=overwrite)
        finally:
            target.close()
    finally:
        source.close()
    if as_json:
        _emit_json(report.to_json())
    else:
        parts = [
            f"{d.name}: {d.copied} copied, {d.same} already there"
            + (f", {d.overwritten} overwritten" if d.overwritten else "")
            for d in report.dbs
        ]
        click.echo(f"migrated {report.source} -> {report.target}: " + "; ".join(parts))
    if report.differing:
        ids = ", ".join(i for d in report.dbs for i in d.differing_ids)
        click.echo(
            f"dmedia-tui: {report.differing} docs differ in the target and were kept "
            f"(rerun with --overwrite to replace them): {ids}",
            err=True,
        )
    for d in report.dbs:
        for err in d.errors:
            click.echo(f"dmedia-tui: {err}", err=True)
    if report.differing or report.failed:
        sys.exit(1)


# --- what watches a running engine: notify.py, smart.py, metrics.py ------------------------


def _attach_monitors(engine: Any, once: bool = False) -> list[Any]:
    """Each subscribes to the engine's events and runs on threads of its own."""
    if engine is None:
        return []
    from dmedia_tui import metrics

    mons = [] if once else [_attach_smart(engine), metrics.attach_stats(engine)]
    return [m for m in [*mons, _attach_notifier(engine)] if m is not None]


def _close_monitors(monitors: list[Any], final_check: bool = False) -> None:
    """Close them in order; the notifier (last) checks once more when asked."""
    for m in monitors:
        if hasattr(m, "check_health"):  # the notifier
            m.close(final_check=final_check)
        else:
            m.close()


# --- notifications (dmedia_tui/notify.py) -------------------------------------------------


def _check_notify_config(ctx: Context) -> None:
    """A command that runs the engine refuses a bad [notify] table (one line, exit 1), like
    any bad setting: alerts nobody receives because of a typo must not pass unnoticed."""
    from dmedia_tui import notify

    notify.make_backends(notify.NotifySettings.load(ctx.config.config_dir))  # or raises


def _attach_notifier(engine: Any) -> Any:
    """The configured notifier on an engine (None without [notify] backends)."""
    if engine is None:
        return None
    from dmedia_tui import notify

    return notify.attach(engine)


def _notify_once(engine: Any) -> None:
    """One synchronous notification check after a one-shot engine run (`verify`)."""
    n = _attach_notifier(engine)
    if n is not None:
        n.close(final_check=True)


@cli.group("notify")
def notify_group() -> None:
    """Notifications when an alert appears, worsens or clears ([notify] in config.toml)."""


@notify_group.command("test")
@_db_option
@pass_ctx
@_handle_errors
def notify_test(ctx: Context) -> None:
    """Send one test notification through every configured backend."""
    from dmedia_tui import notify

    settings = notify.NotifySettings.load(ctx.config.config_dir)
    backends = notify.make_backends(settings)
    if not backends:
        raise UserError(
            f"no notification backend configured: add [notify] urls = [...] or command = "
            f'"..." to {ctx.config.config_dir / "config.toml"}'
        )
    now = ctx.clock().now()
    change = notify.test_message(settings, now)
    context = {"machine": ctx.config.hostname, "time": now, "test": True}
    failed = 0
    for b in backends:
        try:
            b.send([change], context, False)
        except Exception as e:
            failed += 1
            click.echo(f"dmedia-tui: {b.name}: failed: {notify._one_line(e)}", err=True)
        else:
            click.echo(f"{b.name}: sent")
    if failed:
        sys.exit(1)


# --- SMART (dmedia_tui/smart.py) ----------------------------------------------------------


def _attach_smart(engine: Any) -> Any:
    """SMART checks of the connected stores' drives on a running engine (needs smartctl)."""
    if engine is None:
        return None
    from dmedia_tui import smart

    return smart.attach(engine)


def _smart_once(engine: Any) -> None:
    """`daemon --once`: read the drives first, so a failing one gets no new copies and its
    files are copied elsewhere in the same run."""
    from dmedia_tui import smart

    smart.check_once(engine.ms, engine.refresh_connected())


# --- metrics (dmedia_tui/metrics.py) ---------------------------------------------------------


def _parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", value
    host = host.strip("[]") or "127.0.0.1"
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise UserError(f"--listen: expected [HOST:]PORT, got {value!r}")
    return host, int(port)


@cli.command("metrics")
@click.option(
    "--textfile",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write this .prom file atomically (node_exporter's textfile collector).",
)
@click.option("--listen", metavar="[HOST:]PORT", help="Serve /metrics here until stopped.")
@_db_option
@pass_ctx
@_handle_errors
def metrics_cmd(ctx: Context, textfile: Path | None, listen: str | None) -> None:
    """Prometheus metrics: durability buckets, alerts by code, stores, verification, rates.

    Without an option, prints them. With --textfile, writes them atomically (run it from
    cron or a systemd timer next to node_exporter). With --listen, serves /metrics and
    assesses the library at every scrape."""
    import signal
    import threading

    from prometheus_client import generate_latest

    from dmedia_tui import metrics

    if textfile is not None and listen is not None:
        raise UserError("give --textfile or --listen, not both")
    with ctx.metastore(unreadable_exit=EXIT_UNREADABLE, create=False) as ms:

        def assess() -> tuple[Any, dict[str, Any]]:
            h = ms.health(with_verification=True)
            return h, metrics.read_stats(ms.config.data_dir, ms.now())

        registry = metrics.registry_for(assess)
        if listen is not None:
            host, port = _parse_listen(listen)
            if host not in ("127.0.0.1", "localhost", "::1"):
                click.echo(
                    f"dmedia-tui: warning: serving metrics beyond localhost on {host}", err=True
                )
            try:
                server, _thread = metrics.serve(host, port, registry)
            except OSError as e:
                raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
            click.echo(f"serving http://{host}:{server.server_port}/metrics", err=True)
            stop = threading.Event()
            signal.signal(signal.SIGTERM, lambda *_: stop.set())
            signal.signal(signal.SIGINT, lambda *_: stop.set())
            stop.wait()
            server.shutdown()
            return
        if textfile is not None:
            if textfile.suffix != ".prom":
                click.echo(
                    "dmedia-tui: note: node_exporter only reads files ending in .prom", err=True
                )
            metrics.write_textfile(textfile, registry)
            return
        click.echo(generate_latest(registry).decode(), nl=False)


# --- the app in a browser (dmedia_tui/serve.py) ------------------------------------------


@cli.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8472, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--allow-actions",
    is_flag=True,
    help=f"Let the browser {', '.join(a.verb for a in MODIFYING)}.",
)
@click.option("--public-url", help="The URL browsers use, behind a proxy (default: from host).")
@_db_option
@pass_ctx
@_handle_errors
def serve_cmd(
    ctx: Context, host: str, port: int, allow_actions: bool, public_url: str | None
) -> None:
    """Serve the app to web browsers (textual-serve): read-only unless --allow-actions.

    Every browser tab runs its own app process on this library. There is no login:
    listen beyond localhost only on a network you trust (a warning says so)."""
    import socket

    from dmedia_tui import serve

    for line in serve.warnings(host, allow_actions):
        click.echo(f"dmedia-tui: {line}", err=True)
    try:  # a clear error now rather than a traceback from inside the web server
        with socket.create_server((host, port), reuse_port=False):
            pass
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    for line in serve.describe(host, port, allow_actions, public_url):
        click.echo(line, err=True)
    serve.serve(serve.app_command(ctx.db, allow_actions), host, port, public_url)


# --- the service (dmedia_tui/service.py) ------------------------------------------------


def _timestamped_stderr_logging() -> None:
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) is sys.stderr:
            h.setFormatter(fmt)


def _systemd_ready(engine: Any) -> Any:
    """Tell systemd (Type=notify) the workers run; ping its watchdog while they live."""
    from dmedia_tui.service import SdNotifier

    threads = list(getattr(engine, "_threads", []))
    sd = SdNotifier(alive=lambda: bool(threads) and all(t.is_alive() for t in threads))
    sd.ready(status=f"engine running on {engine.ms.library_url}")
    return sd


def _service_report(rep: Any) -> None:
    for line in rep.lines:
        click.echo(line)
    if not rep.ok:
        if rep.problem:
            raise UserError(rep.problem)
        sys.exit(1)


@cli.group("service")
def service_group() -> None:
    """Run `dmedia-tui daemon` as a systemd user service (Type=notify, watchdog, restart)."""


@service_group.command("install")
@click.option("--print", "print_only", is_flag=True, help="Only print the unit; change nothing.")
@click.option("--no-start", is_flag=True, help="Enable it for the next login, do not start it now.")
@_db_option
@pass_ctx
@_handle_errors
def service_install(ctx: Context, print_only: bool, no_start: bool) -> None:
    """Write ~/.config/systemd/user/dmedia-tui.service and enable it (where systemd runs).

    A --db given here (or DMEDIA_DB) is written into the unit, so the service keeps
    the library you chose."""
    import os

    from dmedia_tui import service

    env = {}
    _warn_password(ctx.db, "--db", ctx.warned)
    db = ctx.db or os.environ.get("DMEDIA_DB")
    if db:
        env["DMEDIA_DB"] = db
        if _has_password(db):
            click.echo(
                "dmedia-tui: note: the unit holds the library's password (the file is "
                "readable by you only); a login in ~/.netrc keeps it out of the unit",
                err=True,
            )
    for var in ("XDG_CONFIG_HOME", "XDG_DATA_HOME"):
        if os.environ.get(var):
            env[var] = os.environ[var]
    if print_only:
        click.echo(service.unit_text(environment=env), nl=False)
        return
    _service_report(service.install(environment=env, start=not no_start))


@service_group.command("uninstall")
@_handle_errors
def service_uninstall() -> None:
    """Stop and disable the service and remove its unit file."""
    from dmedia_tui import service

    _service_report(service.uninstall())


@service_group.command("status")
@_db_option
@pass_ctx
@_handle_errors
def service_status(ctx: Context) -> None:
    """Is the unit installed and active; does an engine run for this library here?"""
    from dmedia_tui import service
    from dmedia_tui.engine import Engine

    pid = None
    try:
        with ctx.metastore(create=False) as ms:
            pid = service.engine_lock_holder(Engine(ms).lock_path())
    except UserError as e:
        click.echo(f"library: {e.format_message()}")
    _service_report(service.status(engine_pid=pid))


EXIT_INTERNAL = 70  # EX_SOFTWARE: a bug, not bad input


def main() -> None:
    """Console entry point: a bug still ends in one line (DMEDIA_DEBUG=1 shows the traceback)."""
    import os

    try:
        cli(prog_name="dmedia-tui")
    except KeyboardInterrupt:
        click.echo("dmedia-tui: interrupted", err=True)
        sys.exit(130)
    except DmediaError as e:  # a command without _handle_errors: still bad input, not a bug
        click.echo(f"dmedia-tui: {e}", err=True)
        sys.exit(_exit_code(e))
    except Exception as e:
        if os.environ.get("DMEDIA_DEBUG"):
            raise
        click.echo(
            f"dmedia-tui: internal error: {type(e).__name__}: {e} "
            "(run again with DMEDIA_DEBUG=1 for the traceback)",
            err=True,
        )
        sys.exit(EXIT_INTERNAL)


if __name__ == "__main__":  # pragma: no cover
    main()
