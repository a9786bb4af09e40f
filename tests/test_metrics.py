"""`status --short` and `dmedia-tui metrics`: parsed with prometheus_client's own text
parser, from stdout, from an atomically written textfile, and scraped from a real listener
subprocess. The engine's rates come from a real engine run."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dmedia_tui import metrics
from tests.conftest import NOW
from tests.integration.harness import Machine, canonical, flip_bit, make_camera_files

HOUR = 3600


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(data, name: str, **labels: str) -> float:
    return data[(name, tuple(sorted(labels.items())))]


@pytest.fixture
def lib(tmp_path: Path, mounts) -> tuple[Machine, list[Path], dict[str, str]]:
    m = Machine(tmp_path / "machines", "studio", str(tmp_path / "library.sqlite3"), NOW)
    paths, ids = [], {}
    for name in "abcd":
        p = mounts.new(name, 16)
        ids[name] = m.init_store(p, name, *mounts.same_fs_flag)
        paths.append(p)
    make_camera_files(tmp_path / "photos", 6, max_kb=40)
    m.ok("import", str(tmp_path / "photos"), "--store", "a")
    return m, paths, ids


def test_status_short_line_and_exit_codes(lib):
    m, paths, ids = lib
    r = m.run("status", "--short")
    assert r.exit_code == 1
    assert r.stdout == "INFO 1 · 6 files < 2 copies · verified 0 %\n"
    m.once(now=NOW + HOUR)
    r = m.run("status", "--short", now=NOW + HOUR)
    assert (r.exit_code, r.stdout) == (0, "OK · verified 100 %\n")
    fid = sorted(p.parent.name + p.name for p in (paths[1] / ".dmedia/files").glob("*/*"))[0]
    flip_bit(canonical(paths[1], fid))
    m.run("verify", "--all", now=NOW + 2 * HOUR)
    r = m.run("status", "--short", now=NOW + 2 * HOUR)
    assert r.exit_code == 2 and r.stdout.startswith("PANIC 1 · ") and r.stdout[-1] == "\n"
    assert len(r.stdout.splitlines()) == 1


def test_metrics_text_parses_and_says_what_status_says(lib):
    m, paths, ids = lib
    m.once(now=NOW + HOUR)
    fid = sorted(p.parent.name + p.name for p in (paths[2] / ".dmedia/files").glob("*/*"))[0]
    flip_bit(canonical(paths[2], fid))
    m.run("verify", "--all", now=NOW + 2 * HOUR)
    _, st = m.status(now=NOW + 3 * HOUR)
    r = m.ok("metrics", now=NOW + 3 * HOUR)
    data = samples(r.stdout)
    assert value(data, "dmedia_up") == 1
    for d in "0123":
        assert value(data, "dmedia_user_files", durability=d) == st["histogram"][d]
        assert value(data, "dmedia_user_bytes", durability=d) == st["histogram_bytes"][d]
    assert value(data, "dmedia_user_files_total") == 6
    assert value(data, "dmedia_alerts", code="DRIVE_FAILURE", severity="panic") == 1
    # Every code's series exists, active or not, under the severity it always has (a
    # label that changed when the alert appeared would start a new series).
    alert_series = {lab for name, lab in data if name == "dmedia_alerts"}
    assert alert_series == {
        (("code", code), ("severity", sev.name.lower()))
        for code, sev in metrics.ALERT_SEVERITY.items()
    }
    assert value(data, "dmedia_alerts", code="NO_KNOWN_COPY", severity="critical") == 0
    assert value(data, "dmedia_alerts", code="CLOCK_SKEW", severity="warning") == 0
    assert value(data, "dmedia_alerts", code="DRIVE_READ_ERRORS", severity="panic") == 0
    assert value(data, "dmedia_worst_severity") == 3
    assert value(data, "dmedia_status_exit_code") == 2
    c = ids["c"]
    assert value(data, "dmedia_store_state", store_id=c, label="c", state="failing") == 1
    assert value(data, "dmedia_store_state", store_id=c, label="c", state="ok") == 0
    assert value(data, "dmedia_store_online", store_id=c, label="c") == 1
    assert value(data, "dmedia_store_copy_weight", store_id=c, label="c") == 0
    a = ids["a"]
    assert value(data, "dmedia_store_never_verified_copies", store_id=a, label="a") == 0
    age = value(data, "dmedia_store_verification_oldest_age_seconds", store_id=a, label="a")
    assert age == HOUR  # `verify --all` ran an hour before this scrape (pinned clock)
    assert value(data, "dmedia_engine_up") == 0  # no engine running now
    assert ("dmedia_verified_bytes_total", ()) in data


def test_textfile_is_written_atomically(lib, tmp_path):
    m, _, _ = lib
    out = tmp_path / "textfile" / "dmedia.prom"
    out.parent.mkdir()
    out.write_text("old content\n")
    m.ok("metrics", "--textfile", str(out))
    data = samples(out.read_text())
    assert value(data, "dmedia_user_files", durability="1") == 6
    assert sorted(os.listdir(out.parent)) == ["dmedia.prom"]  # no temp file left behind


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_listener_serves_metrics_to_a_real_scrape(lib):
    m, _, _ = lib
    port = free_port()
    env = {**os.environ, **m.env()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dmedia_tui", "metrics", "--listen", f"127.0.0.1:{port}"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        body = None
        deadline = time.monotonic() + 30
        while body is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
                    body = r.read().decode()
            except OSError:
                time.sleep(0.1)
        assert body is not None, "the listener never answered"
        data = samples(body)
        assert value(data, "dmedia_user_files", durability="1") == 6
        assert value(data, "dmedia_alerts", code="LOW_DURABILITY", severity="info") == 1
        # A second scrape assesses again: a change in the library shows.
        m.once(now=NOW)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            data = samples(r.read().decode())
        assert value(data, "dmedia_user_files", durability="3") == 6
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and "Traceback" not in err


def test_listen_beyond_localhost_warns_and_bad_listen_is_one_line(lib):
    m, _, _ = lib
    r = m.run("metrics", "--listen", "nope")
    assert r.exit_code == 1 and r.stderr.strip() == (
        "dmedia-tui: --listen: expected [HOST:]PORT, got 'nope'"
    )


def test_engine_rates_from_a_real_engine_run(tmp_path, lib):
    from dmedia_tui.clock import FixedClock
    from dmedia_tui.config import Config
    from dmedia_tui.db import open_library
    from dmedia_tui.engine import Engine
    from dmedia_tui.metastore import MetaStore

    m, _, _ = lib
    cfg = Config.load(m.config_home / "dmedia-tui", m.data_home / "dmedia-tui")
    library = open_library(m.db_url)
    try:
        ms = MetaStore(library, cfg, FixedClock(NOW))
        engine = Engine(ms, watch_drives=False, watch_folders=False)
        stats = metrics.attach_stats(engine)
        summary = engine.run_once()
        stats.close()
    finally:
        library.close()
    size = sum(p.stat().st_size for p in (tmp_path / "photos").iterdir())
    got = metrics.read_stats(cfg.data_dir)
    assert summary.copies == 6 and summary.verified == 6 * 3  # files copied; copies verified
    # Each file was read once to write its two new copies (one read feeds every copy).
    assert got["copied_bytes_total"] == size
    assert got["verified_bytes_total"] == 3 * size  # the three copies of each, verified
    assert got["engine_up"] == 1
    assert metrics.read_stats(cfg.data_dir, now=time.time() + 3600)["verify_rate"] == 0.0


def test_every_alert_code_of_health_has_its_series():
    """A code health.py adds later must get its fixed-severity series here too."""
    from dmedia_tui import health

    codes = {v for k, v in vars(health).items() if k.isupper() and isinstance(v, str) and v == k}
    assert codes == set(metrics.ALERT_SEVERITY)
