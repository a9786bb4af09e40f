"""What the user may do to a store, in one table: the CLI, the app's keys, its palette and
help screen, and the MetaStore all read it.

Each `StoreAction` says its verb (the CLI's `store VERB`, the app's action name, the first
word of its preview), whether it asks first (the app shows its `ActionPreview` in a
confirmation; the CLI shows it and asks, or refuses off a terminal without `--yes`),
whether it changes the library (a read-only app or browser offers it nowhere: no key, no
palette entry), the MetaStore operation that runs it, and the words each place shows.
Adding an action means one row here, one MetaStore operation and, if it has a key, one
`action_<verb>` of the app (tests/test_actions.py checks that every row is reachable).

Pure data: this module imports nothing of the package, so every layer may use it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StoreAction:
    """One action on a store (or, for verify, on what is selected)."""

    verb: str  # `store VERB` in the CLI, `action_VERB` in the app, a preview's first word
    key: str | None  # the app's key (None: no key, deliberately)
    confirm: bool  # weakens safety or forgets copies: show the preview and ask first
    modifies: bool  # changes the library: a read-only monitor offers it nowhere
    operation: str | None  # the MetaStore method (store_id) -> ...; None: the engine's work
    cli: tuple[str, ...]  # the CLI command that runs it
    cli_help: str | None  # its help, for the commands made from this table (`store VERB`)
    title: str | None  # the palette's entry (None: not in the palette, deliberately)
    hint: str  # what it does, in the palette (" (asks first)" is added when it asks)
    key_help: str  # what its key does, on the help screen (idem)
    footer: bool = True  # the key is shown in the app's footer
    done: str = ""  # the app's notice once it ran: "{done} LABEL"
    changes: str = ""  # its preview: "N files would {changes}"
    loses_durability: bool = False  # the preview names the durability lost
    forgets_copies: bool = False  # the preview names the user files left with no copy
    store_wide: bool = False  # goes through every file on the store: shows its progress

    def asks(self, text: str) -> str:
        """`text`, saying "(asks first)" when the action does."""
        return f"{text} (asks first)" if self.confirm else text


VERIFY = StoreAction(
    verb="verify",
    key="v",
    confirm=False,
    modifies=True,  # the engine records what it finds; a read-only app has no engine
    operation=None,  # Engine.request_verify: the app asks its engine, the CLI runs one
    cli=("verify",),
    cli_help=None,  # `verify` is a command of its own (--store, --all)
    title="Verify selected store now",
    hint="verify the copies on the selected store",
    key_help="verify the selected store (or file) now",
)
DOWNGRADE = StoreAction(
    verb="downgrade",
    key="d",
    confirm=True,
    modifies=True,
    operation="downgrade_store",
    cli=("store", "downgrade"),
    cli_help="Make every copy on STORE count 0 (locations stay tracked).",
    title="Downgrade selected store",
    hint="copies there count 0",
    key_help="downgrade the selected store",
    done="downgraded",
    changes="count 0 copies",
    loses_durability=True,
    store_wide=True,
)
PURGE = StoreAction(
    verb="purge",
    key="p",
    confirm=True,
    modifies=True,
    operation="purge_store",
    cli=("store", "purge"),
    cli_help="Forget STORE and its copies (files on disk are never deleted).",
    title="Purge selected store",
    hint="forget the store and its copies",
    key_help="purge the selected store",
    done="purged",
    changes="forget the store and its copies (files on disk are kept)",
    loses_durability=True,
    forgets_copies=True,
    store_wide=True,
)
ACK = StoreAction(
    verb="ack",
    key="a",
    confirm=False,  # hides a banner; the store stays FAILING and takes no new copies
    modifies=True,
    operation="acknowledge_failure",
    cli=("store", "ack"),
    cli_help="Acknowledge STORE's failure: the banner goes, the store stays FAILING.",
    title="Acknowledge drive failure",
    hint="hide the failure banner; the store stays FAILING",
    key_help="acknowledge the selected store's drive failure",
    done="failure acknowledged for",
    changes="hide the failure banner (the store stays FAILING)",
)
TRUST = StoreAction(
    verb="trust",
    key="t",
    confirm=True,  # lets new copies go to a store that was flagged
    modifies=True,
    operation="trust_store",
    cli=("store", "trust"),
    cli_help="Clear STORE's flags: new copies allowed, copies count once verified (asks).",
    title="Trust selected store again",
    hint="clear the store's safety flags",
    key_help="trust the selected store again",
    footer=False,
    done="trusted again:",
    changes="allow new copies again (copies count once re-verified)",
)

STORE_ACTIONS: tuple[StoreAction, ...] = (VERIFY, DOWNGRADE, PURGE, ACK, TRUST)
MODIFYING: tuple[StoreAction, ...] = tuple(a for a in STORE_ACTIONS if a.modifies)
_BY_VERB = {a.verb: a for a in STORE_ACTIONS}


def store_action(action: StoreAction | str) -> StoreAction:
    """The action named by its verb (or the action itself); KeyError for an unknown one."""
    return action if isinstance(action, StoreAction) else _BY_VERB[action]


@dataclass(frozen=True)
class ActionPreview:
    """What a store action would change, shown before the user confirms."""

    action: str  # its verb
    store_id: str
    label: str
    files: int  # file docs with an entry for the store
    copies: int  # durability that would be lost (sum of copies on it)
    user_files_only_there: int  # user files whose only recorded copy is on this store

    def describe(self) -> str:
        a = _BY_VERB.get(self.action)
        what = a.changes if a is not None and a.changes else self.action
        s = f"{self.action} {self.label}: {self.files} files would {what}"
        if a is not None and a.loses_durability and self.copies:
            s += f"; durability lost: {self.copies}"
        if a is not None and a.forgets_copies and self.user_files_only_there:
            s += f"; {self.user_files_only_there} user files have no other known copy"
        return s
