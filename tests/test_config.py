"""Config: paths, thresholds, machine identity, known stores; the injectable clock."""

from __future__ import annotations

import json
import re

import pytest

from dmedia_tui.clock import FixedClock, OffsetClock, SystemClock, clock_from_env
from dmedia_tui.config import DAY, Config, ConfigError, Thresholds
from dmedia_tui.protocol import is_store_id, random_id


def test_defaults_follow_xdg(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "c"))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "d"))
    cfg = Config.load()
    assert cfg.config_dir == tmp_path / "c" / "dmedia-tui"
    assert cfg.default_db_path == tmp_path / "d" / "dmedia-tui" / "library.sqlite3"
    assert cfg.thresholds == Thresholds()
    assert cfg.thresholds.store_downgrade_after == 3 * DAY
    assert cfg.thresholds.store_purge_after == 8 * DAY


def test_db_url_precedence(tmp_path):
    (tmp_path / "config.toml").write_text('db = "/from/toml.sqlite3"\n')
    cfg = Config.load(tmp_path, tmp_path / "data")
    assert cfg.db_url(None, {}) == "/from/toml.sqlite3"
    assert cfg.db_url(None, {"DMEDIA_DB": "/env"}) == "/env"
    assert cfg.db_url("/cli", {"DMEDIA_DB": "/env"}) == "/cli"


def test_database_timeout_precedence(tmp_path):
    """30 s unless config.toml's [database] timeout says otherwise; DMEDIA_DB_TIMEOUT wins."""
    cfg = Config.load(tmp_path / "c", tmp_path / "d")
    assert cfg.db_timeout({}) == 30.0
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "config.toml").write_text("[database]\ntimeout = 5\n")
    cfg = Config.load(tmp_path / "c", tmp_path / "d")
    assert cfg.db_timeout({}) == 5.0
    assert cfg.db_timeout({"DMEDIA_DB_TIMEOUT": "0.25"}) == 0.25
    with pytest.raises(ConfigError, match="DMEDIA_DB_TIMEOUT"):
        cfg.db_timeout({"DMEDIA_DB_TIMEOUT": "inf"})
    (tmp_path / "c" / "config.toml").write_text("[database]\ntimout = 5\n")
    with pytest.raises(ConfigError, match=r"unknown key 'timout' in \[database\]"):
        Config.load(tmp_path / "c", tmp_path / "d")
    (tmp_path / "c" / "config.toml").write_text("database = 3\n")
    with pytest.raises(ConfigError, match=r"\[database\] must be a table"):
        Config.load(tmp_path / "c", tmp_path / "d")


def test_thresholds_from_toml_and_bad_values(tmp_path):
    (tmp_path / "config.toml").write_text(
        "[thresholds]\nstore_downgrade_after = 60\nreserve_fraction = 0.5\n"
    )
    t = Config.load(tmp_path, tmp_path).thresholds
    assert t.store_downgrade_after == 60 and t.reserve_fraction == 0.5
    assert t.reserve_for(1000) == 500
    assert Thresholds().reserve_for(10**15) == 4_000_000_000  # capped at 4 GB
    assert Thresholds().reserve_for(10**9) == 10**7  # 1 %
    for bad in (
        "[thresholds]\nnope = 1\n",
        "[thresholds]\nheartbeat_fresh = -1\n",
        "[thresholds]\nheartbeat_fresh = true\n",
        "thresholds = 1\n",
        "x = \n",
    ):
        (tmp_path / "config.toml").write_text(bad)
        with pytest.raises(ConfigError):
            Config.load(tmp_path, tmp_path)


def test_an_unreadable_config_file_is_one_clear_error(tmp_path):
    """Not TOML text (bytes that are not UTF-8) or not a file at all: a ConfigError naming
    the file, never a traceback, whether the open or the parse fails."""
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "config.toml").write_bytes(b"hostname = '\xff\xfe'\n")
    (tmp_path / "b" / "config.toml").mkdir(parents=True)
    for folder in ("a", "b"):
        with pytest.raises(ConfigError, match=r"cannot read .*config\.toml"):
            Config.load(tmp_path / folder, tmp_path / "data")


def _at_once(n: int, fn) -> list:
    """fn() on n threads released together; their results (or exceptions) in order."""
    import threading

    start = threading.Barrier(n)
    out: list = [None] * n

    def run(i: int) -> None:
        start.wait()
        try:
            out[i] = fn()
        except Exception as e:  # noqa: BLE001 - the test compares what each thread got
            out[i] = e

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def test_threads_asking_a_new_machine_its_id_at_once_get_one_id(tmp_path):
    """The engine's threads start together on a machine's first run: each made its own
    identity (or failed on a shared tmp file name), and the ID some of them used was not
    the one machine.json kept."""
    for attempt in range(5):
        config = Config.load(tmp_path / f"c{attempt}", tmp_path / f"d{attempt}")
        ids = _at_once(8, lambda config=config: config.machine_id)
        assert all(is_store_id(i) for i in ids), ids
        assert set(ids) == {Config.load(config.config_dir, config.data_dir).machine_id}


def test_processes_asking_a_new_machine_its_id_at_once_get_one_id(tmp_path):
    """The app and a cron `daemon --once` on a machine's first day: each process made its
    own identity and the last rename won, so the other ran under an ID nobody keeps."""
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import sys\n"
        "from dmedia_tui.config import Config\n"
        "config = Config.load(sys.argv[1], sys.argv[2])\n"
        "print('ready', flush=True)\n"
        "sys.stdin.readline()  # all go together\n"
        "print(config.machine_id)\n"
    )
    repo = str(Path(__file__).resolve().parent.parent)
    cdir, ddir = tmp_path / "c", tmp_path / "d"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", script, str(cdir), str(ddir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={"PYTHONPATH": repo, "PATH": "/usr/bin:/bin"},
        )
        for _ in range(4)
    ]
    for p in procs:
        assert p.stdout is not None and p.stdout.readline() == "ready\n"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    ids = {p.communicate(timeout=60)[0].strip() for p in procs}
    assert ids == {Config.load(cdir, ddir).machine_id}


def test_stores_remembered_and_forgotten_at_once_are_all_kept(tmp_path):
    """Each change to stores.json reads it, changes one entry and writes it back: made at
    once by two threads (or processes), one change was lost, or a write failed."""
    config = Config.load(tmp_path / "c", tmp_path / "d")
    old = [random_id() for _ in range(4)]
    for sid in old:
        config.remember_store(sid, tmp_path / sid)
    new = [random_id() for _ in range(8)]
    changes = [lambda s=s: config.remember_store(s, tmp_path / s) for s in new]
    changes += [lambda s=s: config.forget_store(s) for s in old]
    results = _at_once(len(changes), lambda: changes.pop()())
    assert results == [None] * len(results)
    assert set(config.known_stores()) == set(new)


def test_two_config_dirs_are_two_machines(tmp_path):
    a = Config.load(tmp_path / "a", tmp_path / "da")
    b = Config.load(tmp_path / "b", tmp_path / "db")
    assert is_store_id(a.machine_id) and is_store_id(b.machine_id)
    assert a.machine_id != b.machine_id
    assert Config.load(tmp_path / "a", tmp_path / "da").machine_id == a.machine_id


def test_known_stores_round_trip_and_ignore_junk(tmp_path):
    cfg = Config.load(tmp_path, tmp_path)
    sid = random_id()
    cfg.remember_store(sid, tmp_path / "store")
    (tmp_path / "junk.json").write_text("{}")
    assert cfg.known_stores() == {sid: str((tmp_path / "store").resolve())}
    cfg.forget_store(sid)
    assert cfg.known_stores() == {}
    (tmp_path / "stores.json").write_text(json.dumps({"not-an-id": "/x", sid: 5}))
    assert cfg.known_stores() == {}
    (tmp_path / "stores.json").write_text("[1, 2]")
    with pytest.raises(ConfigError):
        cfg.known_stores()


def test_default_config_file_is_written_once_and_parses(tmp_path):
    cfg = Config.load(tmp_path, tmp_path / "data")
    path = cfg.write_default_config()
    text = path.read_text()
    assert "store_purge_after" in text
    assert Config.load(tmp_path, tmp_path / "data").thresholds == Thresholds()
    path.write_text("# mine\n")
    cfg.write_default_config()
    assert path.read_text() == "# mine\n"


def test_default_config_notify_table_documents_every_key_and_uncomments_cleanly(tmp_path):
    from dmedia_tui import notify

    cfg = Config.load(tmp_path, tmp_path / "data")
    text = cfg.write_default_config().read_text()
    section = text[text.index("[notify]") :]
    keys = re.findall(r"^# (\w+) = ", section, re.M)
    assert set(keys) == {f for f in notify.NotifySettings.__dataclass_fields__} - {
        "settle",
        "command_timeout",
    }
    uncommented = re.sub(r"^# (\w+ = )", r"\1", section, flags=re.M)
    (tmp_path / "config.toml").write_text(uncommented)
    s = notify.NotifySettings.load(tmp_path)
    assert s.urls == ("ntfys://ntfy.sh/dmedia-pick-a-secret-topic",) and s.desktop is True
    assert s.quiet_hours == (22 * 60, 7 * 60) and s.repeat_after == 3600


def test_clock_from_env():
    assert isinstance(clock_from_env({}), SystemClock)
    fixed = clock_from_env({"DMEDIA_NOW": "1000"})
    assert isinstance(fixed, FixedClock) and fixed.now() == 1000 and fixed.simulated
    ticking = clock_from_env({"DMEDIA_NOW": "1000"}, ticking=True)
    assert isinstance(ticking, OffsetClock) and 1000 <= ticking.now() < 1010
    with pytest.raises(ValueError):
        clock_from_env({"DMEDIA_NOW": "yesterday"})
    c = FixedClock(5)
    c.advance(10)
    assert c.now() == 15


@pytest.mark.parametrize("value", ["2", "4", "0", "true", "'3'"])
def test_target_copies_other_than_three_is_refused_naming_the_key(tmp_path, value):
    # The target is durability.TARGET: ranks, buckets and indexes are built on it, so a
    # setting that only some parts would follow is refused rather than half-honoured.
    (tmp_path / "config.toml").write_text(f"[thresholds]\ntarget_copies = {value}\n")
    with pytest.raises(ConfigError, match="target_copies.*fixed at 3"):
        Config.load(tmp_path, tmp_path)


def test_target_copies_three_is_accepted(tmp_path):
    (tmp_path / "config.toml").write_text("[thresholds]\ntarget_copies = 3\n")
    assert Config.load(tmp_path, tmp_path).thresholds.target_copies == 3


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("hostnme = 'x'\n", "unknown key .hostnme"),
        ("[treshold]\nheartbeat_fresh = 1\n", "treshold"),
        ("[thresholds]\nstore_downgrade_afer = 1\n", "unknown threshold .store_downgrade_afer"),
        ("[thresholds]\nrecently_seen = 1\n", "recently_seen"),
    ],
)
def test_unknown_keys_anywhere_are_refused_naming_the_key(tmp_path, text, key):
    (tmp_path / "config.toml").write_text(text)
    with pytest.raises(ConfigError, match=key) as e:
        Config.load(tmp_path, tmp_path)
    assert str(tmp_path / "config.toml") in str(e.value)
