"""One error base (errors.DmediaError) and the CLI's exit codes for it.

Every error the package raises on purpose derives from DmediaError, so the CLI catches one
base and maps it to an exit code: 3 when this machine's identity cannot be read (or, from
`status`, whenever the library cannot be judged), 1 otherwise. Whatever the error, the
user sees one line on stderr and no traceback. Real triggers run the real CLI on a real
library; the sweep over every subclass raises each one from inside a real command (the
only way to reach the ones no bad input can trigger today, such as a PeerError).
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest
from click.testing import CliRunner

import dmedia_tui
from dmedia_tui.cli import cli
from dmedia_tui.errors import DmediaError
from tests.conftest import NOW
from tests.integration.harness import Machine, Result


def _modules() -> list[object]:
    return [
        importlib.import_module(m.name)
        for m in pkgutil.walk_packages(dmedia_tui.__path__, "dmedia_tui.")
        if not m.name.endswith("__main__")
    ]


def _project_exceptions() -> list[type[BaseException]]:
    """Every exception class defined in the package (each module's own, public ones)."""
    out = []
    for mod in _modules():
        for name, obj in vars(mod).items():
            if (
                inspect.isclass(obj)
                and issubclass(obj, BaseException)
                and obj.__module__ == mod.__name__  # type: ignore[attr-defined]
                and not name.startswith("_")
            ):
                out.append(obj)
    return sorted(set(out), key=lambda c: (c.__module__, c.__qualname__))


def _name(c: type) -> str:
    return f"{c.__module__.removeprefix('dmedia_tui.')}.{c.__qualname__}"


# The CLI's own: the exception that carries the one line and the exit code to click. It is
# what a DmediaError becomes, so it is deliberately not one (it would be caught again).
NOT_DMEDIA = {"cli.UserError"}


def test_every_public_exception_of_the_package_is_a_dmedia_error():
    found = {_name(c): c for c in _project_exceptions()}
    assert set(found) >= {
        "protocol.ProtocolError",
        "config.ConfigError",
        "config.IdentityError",
        "clock.ClockError",
        "schema.SchemaError",
        "filestore.FileStoreError",
        "metastore.MetaStoreError",
        "db.base.DatabaseError",
        "peer.client.PeerError",
        "peer.identity.PeerIdentityError",
        "peer.server.ListenError",
        "notify.NotifyConfigError",
        "migrate.MigrateError",
        "rebuild.RebuildError",
        "demo.DemoError",
    }
    stray = sorted(
        n
        for n, c in found.items()
        if n not in NOT_DMEDIA and c is not DmediaError and not issubclass(c, DmediaError)
    )
    assert not stray, f"derive these from errors.DmediaError: {stray}"


def test_builtin_bases_callers_rely_on_are_kept():
    from dmedia_tui.clock import ClockError
    from dmedia_tui.config import ConfigError
    from dmedia_tui.db.base import NotFound
    from dmedia_tui.filestore import StoreUnsafe
    from dmedia_tui.notify import NotifyConfigError
    from dmedia_tui.protocol import ProtocolError
    from dmedia_tui.schema import SchemaError

    for c in (ClockError, ConfigError, NotifyConfigError, ProtocolError, SchemaError):
        assert issubclass(c, ValueError), c
    assert issubclass(NotFound, KeyError) and str(NotFound("doc x")) == "doc x"
    assert issubclass(StoreUnsafe, OSError)


# --- the exit code of each, from a real command ------------------------------------------


def _expected_code(c: type[BaseException]) -> int:
    """3: this machine's identity cannot be read, or the library went away while the
    command had it open (`Context.metastore`); 1: any other DmediaError."""
    from dmedia_tui.config import IdentityError
    from dmedia_tui.db import DatabaseOffline

    return 3 if issubclass(c, IdentityError | DatabaseOffline) else 1


def _instance(c: type[BaseException]) -> BaseException:
    """One of each, with a message that must reach the user's line."""
    params = list(inspect.signature(c.__init__).parameters)[1:]
    if params[:1] == ["message"] and len(params) == 3:  # TransferCorrupt(message, file, leaf)
        return c("boom here", "F" * 48, 0)  # type: ignore[call-arg]
    if params[:2] == ["doc_id", "problem"]:  # InvalidDoc
        return c("doc", "boom here")  # type: ignore[call-arg]
    return c("boom here")


def one_line(r: Result, code: int, *words: str) -> None:
    assert r.exit_code == code, f"exit {r.exit_code} != {code}\n{r.stdout}\n{r.stderr}"
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dmedia-tui: "), r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    for w in words:
        assert w in lines[0], lines[0]


@pytest.fixture
def machine(tmp_path: Path) -> Machine:
    m = Machine(tmp_path / "machines", "studio", str(tmp_path / "library.sqlite3"), NOW)
    s = tmp_path / "s"
    s.mkdir()
    m.init_store(s, "s")
    return m


DMEDIA_ERRORS = [c for c in _project_exceptions() if issubclass(c, DmediaError)]


@pytest.mark.parametrize("error", DMEDIA_ERRORS, ids=_name)
def test_each_dmedia_error_from_a_command_is_one_line_and_its_exit_code(
    machine, monkeypatch, error
):
    """Raised where a command asks the library (`store list` -> MetaStore.health), each
    error is one line with its own exit code; `status` says 3 for every one (it cannot
    tell). Before the one base, a SchemaError or PeerError got here as an internal error."""
    from dmedia_tui.metastore import MetaStore

    def fail(*_a, **_kw):
        raise _instance(error)

    monkeypatch.setattr(MetaStore, "health", fail)
    one_line(machine.run("store", "list"), _expected_code(error), "boom here")
    one_line(machine.run("status"), 3, "boom here")


def _run(machine: Machine, *args: str, **env: str) -> Result:
    r = CliRunner().invoke(cli, list(args), env={**machine.env(), **env})
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    return Result(r.exit_code, r.stdout, r.stderr)


def _bad_notify(machine: Machine) -> None:
    toml = machine.config_home / "dmedia-tui" / "config.toml"
    toml.write_text(toml.read_text() + '[notify]\nurls = "x"\nmin_severity = "loud"\n')


def _garble_identity(machine: Machine) -> None:
    (machine.config_home / "dmedia-tui" / "machine.json").write_text("garbage")


# (what, prepare, argv, extra env, exit code, words of the line)
REAL_TRIGGERS = [
    ("UnknownStore", None, ["store", "downgrade", "nosuch", "--yes"], {}, 1, "unknown store"),
    ("DemoError", None, ["demo", "{tmp}/demo", "--files", "1", "--build-only"], {}, 1, "17"),
    ("RebuildError", None, ["rebuild", "{tmp}/s"], {}, 1, "is not empty"),
    ("ClockError", None, ["store", "list"], {"DMEDIA_NOW": "soon"}, 1, "DMEDIA_NOW"),
    ("ConfigError", None, ["store", "list"], {"DMEDIA_DB_TIMEOUT": "x"}, 1, "DMEDIA_DB_TIMEOUT"),
    ("NotifyConfigError", _bad_notify, ["verify"], {}, 1, "loud"),
    ("IdentityError", _garble_identity, ["store", "list"], {}, 3, "machine.json"),
    ("DatabaseOffline", None, ["store", "list"], {"DMEDIA_DB": "{tmp}/absent.sqlite3"}, 3, ""),
]


@pytest.mark.parametrize(
    ("what", "prepare", "argv", "env", "code", "words"),
    REAL_TRIGGERS,
    ids=lambda v: v if isinstance(v, str) and v[:1].isupper() else "",
)
def test_real_bad_input_gives_one_line_and_its_exit_code(
    machine, tmp_path, what, prepare, argv, env, code, words
):
    if prepare is not None:
        prepare(machine)
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    env = {k: v.replace("{tmp}", str(tmp_path)) for k, v in env.items()}
    one_line(_run(machine, *argv, **env), code, words)


def test_the_entry_point_turns_a_stray_dmedia_error_into_one_line(monkeypatch, capsys):
    """`main()` is the last net: a DmediaError escaping a command without the decorator
    is still bad input (its exit code, one line), not an internal error (70)."""
    from dmedia_tui import cli as cli_mod
    from dmedia_tui.config import IdentityError
    from dmedia_tui.db import DatabaseError

    for error, code in ((DatabaseError("the library is gone"), 1), (IdentityError("who"), 3)):

        def boom(*_a, _e=error, **_kw):
            raise _e

        monkeypatch.setattr(cli_mod, "cli", boom)
        with pytest.raises(SystemExit) as exit_:
            cli_mod.main()
        assert exit_.value.code == code
        assert capsys.readouterr().err == f"dmedia-tui: {error}\n"
