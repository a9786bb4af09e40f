"""The store actions' table (actions.py) is what the CLI, the app and the MetaStore run.

Every row must be reachable where its flags say (a CLI command, an app key, a palette
entry, a MetaStore operation) and nowhere else by accident; what a row says (asks first,
modifies) must be what each place does. The app side, on a real app, is in
tests/tui/test_actions_app.py.
"""

from __future__ import annotations

import click
import pytest

from dmedia_tui.actions import MODIFYING, STORE_ACTIONS, ActionPreview, StoreAction, store_action
from dmedia_tui.cli import cli
from dmedia_tui.metastore import MetaStore
from dmedia_tui.tui import commands
from dmedia_tui.tui.app import DmediaApp
from dmedia_tui.tui.screens import help as help_screen
from tests.conftest import NOW
from tests.integration.harness import Machine

ids = [a.verb for a in STORE_ACTIONS]


def _command(path: tuple[str, ...]) -> click.Command | None:
    cmd: click.Command | None = cli
    ctx = click.Context(cli)
    for name in path:
        if not isinstance(cmd, click.Group):
            return None
        cmd = cmd.get_command(ctx, name)
    return cmd


def test_the_table_names_each_action_once():
    assert [a.verb for a in STORE_ACTIONS] == ["verify", "downgrade", "purge", "ack", "trust"]
    assert len({a.key for a in STORE_ACTIONS if a.key}) == len([a for a in STORE_ACTIONS if a.key])
    assert store_action("purge") is store_action(store_action("purge"))
    with pytest.raises(KeyError):
        store_action("format")


@pytest.mark.parametrize("action", STORE_ACTIONS, ids=ids)
def test_every_action_is_reachable_where_the_table_says(action: StoreAction):
    # At least one way to run it: a CLI command, a key or a palette entry.
    assert action.cli or action.key or action.title, action
    # The CLI: its command exists; the table's own commands carry the table's help.
    if action.cli:
        cmd = _command(action.cli)
        assert cmd is not None, action.cli
        if action.cli_help is not None:
            assert cmd.help == action.cli_help
    # The app: a key bound to action_<verb>, shown in the footer as the table says.
    bindings = {b.key: b for b in DmediaApp.BINDINGS if not b.action.startswith("refuse")}
    if action.key:
        assert bindings[action.key].action == action.verb
        assert bindings[action.key].show == action.footer
        assert callable(getattr(DmediaApp, f"action_{action.verb}", None))
        assert any(k == action.key for k, _ in help_screen.KEYS)
    else:
        assert action.verb not in {b.action for b in bindings.values()}
    # The palette: an entry that runs the same app action.
    palette = {verb: (title, hint) for title, verb, hint in commands.COMMANDS}
    if action.title:
        assert palette[action.verb][0] == action.title
        assert palette[action.verb][1].endswith("(asks first)") == action.confirm
        assert callable(getattr(DmediaApp, f"action_{action.verb}", None))
    else:
        assert action.verb not in palette
    # The operation the CLI and the app both run (verify's is the engine's).
    if action.operation is not None:
        assert callable(getattr(MetaStore, action.operation, None))


def test_read_only_hides_exactly_the_modifying_actions():
    modifying = {a.verb for a in MODIFYING}
    assert modifying == {a.verb for a in STORE_ACTIONS if a.modifies}
    assert modifying == commands.READ_ONLY_HIDDEN
    refused = {b.action for b in DmediaApp.BINDINGS if b.action.startswith("refuse")}
    assert refused == {f"refuse('{a.verb}')" for a in MODIFYING if a.key}
    assert {a.key for a in MODIFYING if a.key} == help_screen.READ_ONLY_KEYS
    text = help_screen.help_table(read_only=True).plain.splitlines()
    for a in MODIFYING:
        if a.key:
            (line,) = [line for line in text if line.split(" ")[0] == a.key]
            assert line.endswith("(disabled: read-only)"), line


@pytest.mark.parametrize("action", [a for a in STORE_ACTIONS if a.operation], ids=lambda a: a.verb)
def test_every_store_action_previews_in_its_own_words(action: StoreAction):
    p = ActionPreview(action.verb, "S" * 24, "usb", files=3, copies=2, user_files_only_there=1)
    text = p.describe()
    assert text.startswith(f"{action.verb} usb: 3 files would {action.changes}")
    assert ("durability lost: 2" in text) == action.loses_durability
    assert ("1 user files have no other known copy" in text) == action.forgets_copies


# --- the CLI does what the row says ----------------------------------------------------


@pytest.fixture
def machine(tmp_path) -> Machine:
    m = Machine(tmp_path / "machines", "studio", str(tmp_path / "library.sqlite3"), NOW)
    s = tmp_path / "s"
    s.mkdir()
    m.init_store(s, "s")
    return m


@pytest.mark.parametrize("action", [a for a in STORE_ACTIONS if a.confirm], ids=lambda a: a.verb)
def test_the_cli_asks_before_each_action_that_asks(machine, action: StoreAction):
    """Off a terminal (CliRunner's stdin), an action that asks refuses without --yes,
    naming its preview; with --yes it runs."""
    r = machine.run("store", action.verb, "s")
    assert r.exit_code == 1
    assert "refusing without --yes" in r.stderr and f"{action.verb} s: " in r.stderr
    r = machine.run("store", action.verb, "s", "--yes")
    assert r.exit_code == 0 and r.stdout.startswith(f"{action.verb}: s ("), r.stderr


def test_the_cli_runs_an_action_that_does_not_ask_at_once(machine):
    """ack asks nothing: without --yes it goes straight to the MetaStore (which refuses a
    store with no failure, in one line: proof that it ran)."""
    (ack,) = [a for a in STORE_ACTIONS if a.cli == ("store", a.verb) and not a.confirm]
    r = machine.run("store", ack.verb, "s")
    assert r.exit_code == 1 and "no failure to acknowledge" in r.stderr, r.stderr
    assert "refusing without --yes" not in r.stderr
