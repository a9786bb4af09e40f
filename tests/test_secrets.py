"""CouchDB passwords stay off command lines (issue 10, defect 10).

A password in `--db http://user:pass@...` is visible to every user in /proc/PID/cmdline.
Credentials come from a netrc file (~/.netrc or `[database] netrc`), DMEDIA_DB or
config.toml; a password given on the command line works but is warned about, and the
password itself never appears in any output.
"""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import pytest

from tests.conftest import NOW
from tests.integration.harness import Machine


def with_user(url: str, user: str, password: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit(parts._replace(netloc=f"{user}:{password}@{parts.netloc}"))


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    h = tmp_path / "home"
    h.mkdir()
    monkeypatch.setenv("HOME", str(h))
    return h


def test_a_password_on_the_command_line_is_warned_about_and_never_printed(
    tmp_path, couch_server, home
):
    url = couch_server.fresh_url()
    m = Machine(tmp_path / "machines", "studio", url, NOW)
    s = tmp_path / "s"
    s.mkdir()
    m.init_store(s, "s")
    secret = "Sup3rSecretPw"
    # The test server has no such user: refused (exit 3), warned, the password unprinted.
    r = m.run("--db", with_user(url, "admin", secret), "store", "list")
    assert r.exit_code == 3, r.stderr
    assert "warning: the password in --db is visible to other users" in r.stderr
    assert "~/.netrc" in r.stderr and "not authorized" in r.stderr
    assert secret not in r.stdout + r.stderr
    # Without a password on the command line: no warning.
    r = m.run("store", "list")
    assert r.exit_code == 0 and "warning" not in r.stderr


def test_credentials_come_from_netrc(tmp_path, home, monkeypatch):
    from dmedia_tui.config import Config

    netrc = home / ".netrc"
    netrc.write_text("machine couch.local login alice password s3cr#t/pw\n")
    os.chmod(netrc, 0o600)
    cfg = Config.load(tmp_path / "cfg", tmp_path / "data")
    url = cfg.db_url(None, {"DMEDIA_DB": "http://couch.local:5984/", "HOME": str(home)})
    parts = urllib.parse.urlsplit(url)
    assert (parts.username, urllib.parse.unquote(parts.password)) == ("alice", "s3cr#t/pw")
    # A URL that names its user keeps it; other hosts get nothing.
    keep = cfg.db_url("http://bob:x@couch.local:5984/", {"HOME": str(home)})
    assert keep == "http://bob:x@couch.local:5984/"
    other = cfg.db_url("http://elsewhere:5984/", {"HOME": str(home)})
    assert other == "http://elsewhere:5984/"
    # [database] netrc names another file; a file others can read is refused.
    (tmp_path / "cfg").mkdir(exist_ok=True)
    (tmp_path / "cfg" / "config.toml").write_text('[database]\nnetrc = "my-netrc"\n')
    mine = tmp_path / "cfg" / "my-netrc"
    mine.write_text("machine couch.local login carol password pw2\n")
    os.chmod(mine, 0o644)
    cfg = Config.load(tmp_path / "cfg", tmp_path / "data")
    from dmedia_tui.config import ConfigError

    with pytest.raises(ConfigError, match="other users can read it"):
        cfg.db_url("http://couch.local:5984/", {"HOME": str(home)})
    os.chmod(mine, 0o600)
    url = cfg.db_url("http://couch.local:5984/", {"HOME": str(home)})
    assert urllib.parse.urlsplit(url).username == "carol"


def test_the_cli_uses_netrc_and_a_bad_netrc_is_one_line(tmp_path, couch_server, home):
    url = couch_server.fresh_url()
    host = urllib.parse.urlsplit(url).hostname
    m = Machine(tmp_path / "machines", "studio", url, NOW)
    s = tmp_path / "s"
    s.mkdir()
    m.init_store(s, "s")
    from click.testing import CliRunner

    from dmedia_tui.cli import cli

    env = {**m.env(), "HOME": str(home)}
    netrc = home / ".netrc"
    # The login of the URL's host is sent: the test server knows no such user and says so,
    # which proves the netrc entry was used (and no password is on any command line).
    netrc.write_text(f"machine {host} login nobody password wrongpw\n")
    os.chmod(netrc, 0o600)
    r = CliRunner().invoke(cli, ["store", "list"], env=env)
    assert r.exit_code == 3 and "not authorized" in r.stderr, r.stderr
    assert "wrongpw" not in r.stdout + r.stderr and "warning" not in r.stderr
    netrc.write_text("machine elsewhere login nobody password wrongpw\n")  # another host
    r = CliRunner().invoke(cli, ["store", "list"], env=env)
    assert r.exit_code == 0, r.stderr
    netrc.write_text("machine\n")  # garbled
    r = CliRunner().invoke(cli, ["status"], env=env)
    assert r.exit_code == 3 and r.stderr.count("\n") == 1 and ".netrc" in r.stderr, r.stderr


def test_readme_examples_put_no_password_on_a_command_line():
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    for line in readme.splitlines():
        if line.lstrip().startswith("dmedia-tui") or "--db http" in line or "--to http" in line:
            assert "user:pass@" not in line, line
