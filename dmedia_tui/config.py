"""Where things live, every threshold, and who this machine is.

- `config.toml` in the platformdirs config dir (XDG_CONFIG_HOME honoured) is the user's:
  thresholds, the default database, this machine's display name. We only read it (and
  write a commented default the first time).
- `machine.json` (this machine's ID and hostname) and `stores.json` (store folders this
  machine knows) beside it are the program's own, written atomically.

Two config dirs sharing one database therefore behave as two machines: that is how the
integration tests and the demo simulate a second computer.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import netrc
import os
import stat
import threading
import urllib.parse
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import platformdirs

from dmedia_tui import protocol
from dmedia_tui.durability import TARGET
from dmedia_tui.errors import DmediaError

APP_NAME = "dmedia-tui"
DAY = 86400
DB_TIMEOUT = 30.0  # seconds a CouchDB request may go unanswered ([database] timeout)
DB_TIMEOUT_ENV = "DMEDIA_DB_TIMEOUT"


class ConfigError(DmediaError, ValueError):
    """The configuration cannot be read or makes no sense (one line, for the user)."""


@dataclass(frozen=True)
class Thresholds:
    """Every policy threshold, in one place (seconds unless named otherwise)."""

    low_durability: int = 2  # user files below this many good copies: LOW_DURABILITY
    store_downgrade_after: int = 3 * DAY  # store unseen this long: its copies count 0
    store_purge_after: int = 8 * DAY  # store unseen this long: forgotten
    verify_due_after: int = 15 * DAY  # a copy not verified this long is due
    verify_downgrade_after: int = 30 * DAY  # ... and this long: it counts 0
    reserve_fraction: float = 0.01  # free space kept on every store, of its size
    reserve_max_bytes: int = 4_000_000_000  # ... at most this much
    heartbeat_interval: int = 60  # machine doc + store atimes refreshed this often
    heartbeat_fresh: int = 180  # a machine doc younger than this counts as online
    housekeeping_interval: int = 60  # policies run this often in the engine
    schema_check_interval: int = 6 * 3600  # the full schema/consistency pass
    verify_retry_after: int = 600  # an unreadable copy is retried after this long
    io_error_log_interval: int = 600  # per store: at most one dmedia/file/unreadable this often
    read_error_window: int = DAY  # a store's I/O error count restarts after a quiet window
    read_error_alert: int = 10  # this many I/O errors within the window: DRIVE_READ_ERRORS

    @property
    def target_copies(self) -> int:
        """Copies every user file should have: durability.TARGET, not a setting.

        The rank the copier works by, the durability buckets 0/1/2/3+ and the database
        indexes (SQLite rank column, CouchDB views) are all built on 3; a setting that
        only some of them followed would make them disagree, so config.toml refuses it.
        """
        return TARGET

    def reserve_for(self, bytes_total: int) -> int:
        """Free space that new copies must leave on a store of `bytes_total`."""
        return int(min(self.reserve_max_bytes, max(0, bytes_total) * self.reserve_fraction))

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> Thresholds:
        known = {f.name: f for f in dataclasses.fields(cls)}
        values: dict[str, Any] = {}
        for key, value in data.items():
            if key == "target_copies":
                if value == TARGET and not isinstance(value, bool):
                    continue  # says what is true anyway
                raise ConfigError(
                    f"[thresholds] target_copies = {value!r}: the target is fixed at {TARGET} "
                    "copies (ranks, durability buckets and database indexes are built on it); "
                    "remove the key"
                )
            if key in RETIRED_THRESHOLDS:
                raise ConfigError(f"[thresholds] {key}: {RETIRED_THRESHOLDS[key]}; remove the key")
            if key not in known:
                raise ConfigError(f"unknown threshold {key!r} in [thresholds]")
            want = float if known[key].type in ("float", float) else int
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"threshold {key} must be a number >= 0, got {value!r}")
            values[key] = want(value)
        return cls(**values)


# Keys a previous version accepted, and why they are gone (refused like unknown keys).
RETIRED_THRESHOLDS = {
    "recently_seen": "no longer a setting: a store counts as storage until "
    "store_downgrade_after, the same boundary at which it is downgraded",
}

# The top-level keys of config.toml. Any other key is refused (one line naming it):
# a misspelt data-safety setting must never run silently with its default.
# [notify] is read and checked by notify.py.
KNOWN_KEYS = ("db", "hostname", "database", "thresholds", "peer", "notify")


DEFAULT_PEER_PORT = 8476


@dataclass(frozen=True)
class PeerSettings:
    """`[peer]`: the server that lets this library's other machines pull copies from here.

    enabled: "auto" (listen once the library knows another machine: a single-machine user
    opens no port), "on" or "off" (true / false in TOML). listen: "HOST:PORT" (port 0:
    any free port; the address actually bound is published). discovery: mDNS on the LAN.
    """

    enabled: str = "auto"
    listen: str = f"0.0.0.0:{DEFAULT_PEER_PORT}"
    discovery: bool = True

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> PeerSettings:
        known = {"enabled", "listen", "discovery"}
        for key in data:
            if key not in known:
                raise ConfigError(f"unknown setting {key!r} in [peer]")
        enabled = data.get("enabled", "auto")
        if isinstance(enabled, bool):
            enabled = "on" if enabled else "off"
        if enabled not in ("auto", "on", "off"):
            raise ConfigError(f'[peer] enabled must be true, false or "auto", got {enabled!r}')
        listen = data.get("listen", cls.listen)
        host, sep, port = listen.rpartition(":") if isinstance(listen, str) else ("", "", "")
        if not sep or not host or not port.isdigit() or int(port) > 65535:
            raise ConfigError(f'[peer] listen must be "HOST:PORT", got {listen!r}')
        discovery = data.get("discovery", True)
        if not isinstance(discovery, bool):
            raise ConfigError(f"[peer] discovery must be true or false, got {discovery!r}")
        return cls(enabled, listen, discovery)


DEFAULT_CONFIG_TOML = """\
# dmedia-tui configuration. Every key is optional; the defaults are shown.

# The library database: a path to an SQLite file, or http(s)://host:5984/ for CouchDB.
# --db and DMEDIA_DB override it. CouchDB credentials come from a netrc file
# ("machine host login USER password PASS", mode 600): ~/.netrc, or the one named below.
# db = "{default_db}"

# The name other machines show for this one ("boot <name>").
# hostname = "{hostname}"

[database]
# netrc = "~/.config/dmedia-tui/netrc"
# timeout = 30    # seconds a CouchDB server may leave a request unanswered (DMEDIA_DB_TIMEOUT)

[thresholds]
# low_durability = 2
# store_downgrade_after = 259200    # 3 days, in seconds
# store_purge_after = 691200        # 8 days
# verify_due_after = 1296000        # 15 days
# verify_downgrade_after = 2592000  # 30 days
# reserve_fraction = 0.01           # free space kept on every store...
# reserve_max_bytes = 4000000000    # ...at most 4 GB
# heartbeat_interval = 60
# heartbeat_fresh = 180

[peer]
# enabled = "auto"                  # listen once the library knows another machine
# listen = "0.0.0.0:{peer_port}"        # the port to open in a firewall for the other machines
# discovery = true                  # mDNS on the LAN (_dmedia-tui._tcp)

[notify]
# When an alert appears, gets worse or clears (`dmedia-tui notify test` sends one).
# urls = ["ntfys://ntfy.sh/dmedia-pick-a-secret-topic"]   # any apprise URLs: mailto://...
# command = "/usr/local/bin/on-dmedia-alert"   # once per change, the alert as JSON on stdin
# desktop = true                    # notify-send (default: where it and a session bus exist)
# min_severity = "warning"          # info | warning | panic | critical
# repeat_after = 3600               # "worse" at most this often per alert, in seconds
# retry_after = 300                 # a backend that failed is tried again after this
# quiet_hours = "22:00-07:00"       # nothing below critical then; one summary afterwards
# interval = 60                     # the running engine looks at least this often
"""


def _timeout(value: Any, where: str) -> float:
    """A timeout in seconds: a number > 0 (a string from the environment is parsed)."""
    try:
        seconds = float(value) if isinstance(value, str) else value
    except ValueError:
        seconds = None
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not 0 < seconds < float("inf")  # NaN fails too
    ):
        raise ConfigError(f"{where} must be a number of seconds > 0, got {value!r}")
    return float(seconds)


class IdentityError(ConfigError):
    """machine.json exists but is damaged: the CLI exits 3 (cannot tell who we are)."""


_IDENTITY_HINT = (
    " (this machine's identity is damaged: restore the file from a backup, or delete it to"
    " start as a new machine)"
)


# Changes to machine.json and stores.json are made one at a time, by the threads of this
# process (this lock) and by other processes on the machine (an flock on .config.lock):
# two engine threads creating the identity at once each made their own, and a purge that
# forgot a store while `store init` remembered another lost one of the two.
_CONFIG_LOCK = threading.Lock()


@contextlib.contextmanager
def _config_locked(config_dir: Path) -> Iterator[None]:
    config_dir.mkdir(parents=True, exist_ok=True)
    with _CONFIG_LOCK:
        fd = os.open(config_dir / ".config.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # and the flock with it


def _atomic_write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _read_json(path: Path, default: Any) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        return default
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read {path}: {e}") from None


@dataclass
class Config:
    """This machine's view of the library: paths, thresholds, identity, known stores."""

    config_dir: Path
    data_dir: Path
    thresholds: Thresholds = field(default_factory=Thresholds)
    db_setting: str | None = None
    hostname_setting: str | None = None
    db_timeout_setting: float | None = None
    netrc_setting: str | None = None  # [database] netrc: where CouchDB credentials live
    peer: PeerSettings = field(default_factory=PeerSettings)

    # --- loading ---------------------------------------------------------------------

    @classmethod
    def load(
        cls,
        config_dir: str | os.PathLike[str] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
    ) -> Config:
        cdir = Path(config_dir) if config_dir else Path(platformdirs.user_config_dir(APP_NAME))
        ddir = Path(data_dir) if data_dir else Path(platformdirs.user_data_dir(APP_NAME))
        toml_path = cdir / "config.toml"
        data: dict[str, Any] = {}
        try:
            f = open(toml_path, "rb")  # noqa: SIM115 (closed below)
        except FileNotFoundError:
            f = None
        except OSError as e:
            raise ConfigError(f"cannot read {toml_path}: {e}") from None
        if f is not None:
            import tomllib  # only with a config file: ~1 ms of every start

            with f:
                try:
                    data = tomllib.load(f)
                except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
                    raise ConfigError(f"cannot read {toml_path}: {e}") from None
        for key in data:
            if key not in KNOWN_KEYS:
                raise ConfigError(
                    f"{toml_path}: unknown key {key!r} (known: {', '.join(KNOWN_KEYS)})"
                )
        raw_thresholds = data.get("thresholds", {}) or {}
        if not isinstance(raw_thresholds, dict):
            raise ConfigError(f"{toml_path}: [thresholds] must be a table")
        try:
            thresholds = Thresholds.from_mapping(raw_thresholds)
        except ConfigError as e:
            raise ConfigError(f"{toml_path}: {e}") from None
        raw_peer = data.get("peer", {}) or {}
        if not isinstance(raw_peer, dict):
            raise ConfigError(f"{toml_path}: [peer] must be a table")
        try:
            peer = PeerSettings.from_mapping(raw_peer)
        except ConfigError as e:
            raise ConfigError(f"{toml_path}: {e}") from None
        db = data.get("db")
        host = data.get("hostname")
        if db is not None and not isinstance(db, str):
            raise ConfigError(f"{toml_path}: db must be a string")
        if host is not None and not isinstance(host, str):
            raise ConfigError(f"{toml_path}: hostname must be a string")
        database = data.get("database", {}) or {}
        if not isinstance(database, dict):
            raise ConfigError(f"{toml_path}: [database] must be a table")
        for key in database:
            if key not in ("timeout", "netrc"):
                raise ConfigError(
                    f"{toml_path}: unknown key {key!r} in [database] (known: timeout, netrc)"
                )
        timeout = database.get("timeout")
        if timeout is not None:
            timeout = _timeout(timeout, f"{toml_path}: [database] timeout")
        netrc_path = database.get("netrc")
        if netrc_path is not None and not isinstance(netrc_path, str):
            raise ConfigError(f"{toml_path}: [database] netrc must be a string (a path)")
        return cls(
            cdir,
            ddir,
            thresholds,
            db,
            host,
            db_timeout_setting=timeout,
            netrc_setting=netrc_path,
            peer=peer,
        )

    def write_default_config(self) -> Path:
        """Write a commented config.toml if there is none; return its path."""
        path = self.config_dir / "config.toml"
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(
                DEFAULT_CONFIG_TOML.format(
                    default_db=self.default_db_path,
                    hostname=self.hostname,
                    peer_port=DEFAULT_PEER_PORT,
                ),
                encoding="utf-8",
            )
        return path

    # --- paths -----------------------------------------------------------------------

    @property
    def default_db_path(self) -> Path:
        return self.data_dir / "library.sqlite3"

    @property
    def lock_dir(self) -> Path:
        return self.data_dir / "locks"

    def db_url(self, cli_value: str | None = None, environ: Mapping[str, str] | None = None) -> str:
        """--db beats DMEDIA_DB beats config.toml's `db` beats the default SQLite file.

        A CouchDB URL without a user name gets the login of its host from a netrc file
        (`[database] netrc`, else ~/.netrc), so no password has to be on a command line.
        """
        env = os.environ if environ is None else environ
        url = cli_value or env.get("DMEDIA_DB") or self.db_setting or str(self.default_db_path)
        return self.with_credentials(url, env)

    def with_credentials(self, url: str, environ: Mapping[str, str] | None = None) -> str:
        """`url` with the netrc login of its host added (unchanged when it has a user name,
        is not http(s), or no netrc entry matches)."""
        if not url.startswith(("http://", "https://")):
            return url
        try:
            parts = urllib.parse.urlsplit(url)
            host = parts.hostname
        except ValueError:
            return url  # the library reports the bad URL
        if parts.username is not None or not host:
            return url
        login = self._netrc_login(host, os.environ if environ is None else environ)
        if login is None:
            return url
        user, password = (urllib.parse.quote(x, safe="") for x in login)
        netloc = f"{user}:{password}@{parts.netloc}" if password else f"{user}@{parts.netloc}"
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))

    def _netrc_login(self, host: str, env: Any) -> tuple[str, str] | None:
        explicit = self.netrc_setting is not None
        if explicit:
            path = Path(os.path.expanduser(str(self.netrc_setting)))
            if not path.is_absolute():
                path = self.config_dir / path
        else:
            home = env.get("HOME") or os.path.expanduser("~")
            path = Path(home) / ".netrc"
        try:
            st = os.stat(path)
        except FileNotFoundError:
            if explicit:
                raise ConfigError(f"[database] netrc: no such file: {path}") from None
            return None
        except OSError as e:
            raise ConfigError(f"cannot read {path}: {e.strerror or e}") from None
        if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise ConfigError(f"{path} holds passwords but other users can read it: chmod 600")
        try:
            auth = netrc.netrc(str(path)).authenticators(host)
        except (netrc.NetrcParseError, OSError, UnicodeDecodeError) as e:
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise ConfigError(f"cannot read {path}: {msg}") from None
        if not auth:
            return None
        login, _account, password = auth
        return login, password or ""

    def db_timeout(self, environ: dict[str, str] | None = None) -> float:
        """Seconds a database request may go unanswered before the command fails:
        DMEDIA_DB_TIMEOUT beats config.toml's [database] timeout beats 30 s."""
        env = os.environ if environ is None else environ
        raw = env.get(DB_TIMEOUT_ENV)
        if raw:
            return _timeout(raw, DB_TIMEOUT_ENV)
        return self.db_timeout_setting or DB_TIMEOUT

    # --- this machine ----------------------------------------------------------------

    @property
    def _machine_path(self) -> Path:
        return self.config_dir / "machine.json"

    def _machine(self) -> dict[str, Any]:
        """This machine's identity, created when there is none. A damaged machine.json is
        an error, never silently replaced: a new identity would orphan every store this
        machine lists and make its heartbeat a stranger's."""
        path = self._machine_path
        data = self._read_machine()
        if data is None:
            with _config_locked(self.config_dir):
                data = self._read_machine()  # made meanwhile by another thread or process
                if data is None:
                    data = {"machine_id": protocol.random_id(), "hostname": os.uname().nodename}
                    _atomic_write_json(path, data)
        if not isinstance(data, dict) or not protocol.is_store_id(data.get("machine_id")):
            raise IdentityError(f"{path}: no valid machine_id{_IDENTITY_HINT}")
        return data

    def _read_machine(self) -> Any:
        try:
            return _read_json(self._machine_path, None)
        except ConfigError as e:
            raise IdentityError(f"{e}{_IDENTITY_HINT}") from None

    @property
    def machine_id(self) -> str:
        """This machine's ID (24 characters), created on first use."""
        return self._machine()["machine_id"]

    def known_machine_id(self) -> str | None:
        """This machine's ID if it has one already, else None (never creates one: for
        read-only commands, which must write nothing)."""
        if not self._machine_path.exists():
            return None
        return self._machine()["machine_id"]  # a damaged file: IdentityError, never replaced

    @property
    def hostname(self) -> str:
        return self.hostname_setting or str(self._machine().get("hostname") or "localhost")

    # --- store folders this machine knows --------------------------------------------

    @property
    def _stores_path(self) -> Path:
        return self.config_dir / "stores.json"

    def known_stores(self) -> dict[str, str]:
        """{store_id: folder} of every store this machine has initialised or seen."""
        data = _read_json(self._stores_path, {})
        if not isinstance(data, dict):
            raise ConfigError(f"{self._stores_path}: expected a JSON object")
        return {
            k: str(v) for k, v in data.items() if protocol.is_store_id(k) and isinstance(v, str)
        }

    def remember_store(self, store_id: str, folder: str | os.PathLike[str]) -> None:
        protocol.check_store_id(store_id)
        with _config_locked(self.config_dir):
            data = self.known_stores()
            data[store_id] = str(Path(folder).resolve())
            _atomic_write_json(self._stores_path, data)

    def forget_store(self, store_id: str) -> None:
        with _config_locked(self.config_dir):
            data = self.known_stores()
            if data.pop(store_id, None) is not None:
                _atomic_write_json(self._stores_path, data)
