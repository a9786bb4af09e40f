"""The integration harness the seed TODO asks for: libraries, machines, faults, the CLI.

A `Machine` is a config dir + data dir sharing one library URL with the others; every
command runs through the real CLI (click's runner, in-process, with the machine's
environment), and assertions read `status --json` and `events --json` like an outside
harness would. Faults are injected on the real files of real FileStores.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from dmedia_tui.cli import cli


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


class Machine:
    """One simulated computer: its own config dir (identity, known stores) and data dir."""

    def __init__(self, root: Path, name: str, db_url: str, now: float) -> None:
        self.name = name
        self.db_url = db_url
        self.now = now
        self.config_home = root / name / "config"
        self.data_home = root / name / "data"
        self.config_home.mkdir(parents=True, exist_ok=True)
        (self.config_home / "dmedia-tui").mkdir(exist_ok=True)
        (self.config_home / "dmedia-tui" / "config.toml").write_text(f'hostname = "{name}"\n')

    def env(self, now: float | None = None) -> dict[str, str]:
        return {
            "XDG_CONFIG_HOME": str(self.config_home),
            "XDG_DATA_HOME": str(self.data_home),
            "DMEDIA_DB": self.db_url,
            "DMEDIA_NOW": str(int(self.now if now is None else now)),
        }

    def run(self, *args: str, now: float | None = None, input: str | None = None) -> Result:
        runner = CliRunner()
        r = runner.invoke(cli, list(args), env=self.env(now), input=input, catch_exceptions=True)
        if r.exception is not None and not isinstance(r.exception, SystemExit):
            raise AssertionError(f"dmedia-tui {' '.join(args)} raised {r.exception!r}\n{r.stderr}")
        return Result(r.exit_code, r.stdout, r.stderr)

    def ok(self, *args: str, now: float | None = None) -> Result:
        r = self.run(*args, now=now)
        assert r.exit_code == 0, f"dmedia-tui {' '.join(args)} -> {r.exit_code}\n{r.stderr}"
        return r

    def status(self, now: float | None = None) -> tuple[int, dict[str, Any]]:
        r = self.run("status", "--json", now=now)
        assert r.exit_code in (0, 1, 2), f"status failed: {r.exit_code} {r.stderr}"
        return r.exit_code, r.json()

    def events(self, *types: str, now: float | None = None) -> list[dict[str, Any]]:
        args = ["events", "--json"]
        for t in types:
            args += ["--type", t]
        r = self.ok(*args, now=now)
        return [json.loads(line) for line in r.stdout.splitlines() if line.strip()]

    def init_store(self, path: Path, label: str, *extra: str) -> str:
        r = self.ok("store", "init", str(path), "--label", label, "--json", *extra)
        return r.json()["store"]["_id"]

    def once(self, now: float | None = None) -> dict[str, int]:
        return self.ok("daemon", "--once", "--json", now=now).json()


def alert(status: dict[str, Any], code: str) -> dict[str, Any] | None:
    for a in status["alerts"]:
        if a["code"] == code:
            return a
    return None


def codes(status: dict[str, Any]) -> set[str]:
    return {a["code"] for a in status["alerts"]}


def store_row(status: dict[str, Any], store_id: str) -> dict[str, Any]:
    for s in status["stores"]:
        if s["_id"] == store_id:
            return s
    raise AssertionError(f"store {store_id} not in status")


def make_camera_files(
    folder: Path, n: int, seed: int = 7, max_kb: int = 600, min_kb: int = 1
) -> list[Path]:
    """n small files with camera-like names and distinct random contents."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = ["MVI_{:04d}.MOV", "IMG_{:04d}.CR2", "DSC_{:04d}.JPG", "GOPR{:04d}.MP4"]
    out = []
    for i in range(n):
        p = folder / names[i % len(names)].format(1000 + i)
        p.write_bytes(rng.randbytes(rng.randint(min_kb, max_kb) * 1024 + rng.randint(0, 1023)))
        out.append(p)
    return out


def canonical(store: Path, file_id: str) -> Path:
    return store / ".dmedia" / "files" / file_id[:2] / file_id[2:]


def quarantined(store: Path, file_id: str) -> list[Path]:
    q = store / ".dmedia" / "corrupt"
    return sorted(p for p in q.glob(f"{file_id}*")) if q.exists() else []


def flip_bit(path: Path, offset: int | None = None) -> None:
    os.chmod(path, 0o644)
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0x01
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: int) -> None:
    os.chmod(path, 0o644)
    with open(path, "r+b") as f:
        f.truncate(keep)


class Mounts:
    """tmpfs mounts as separate filesystems when root; plain folders otherwise."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.mounted: list[Path] = []
        self.real = os.geteuid() == 0 and shutil.which("mount") is not None

    def new(self, name: str, size_mb: int = 64) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        if self.real:
            r = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(path)],
                capture_output=True,
            )
            if r.returncode == 0:
                self.mounted.append(path)
            else:
                self.real = False
        return path

    @property
    def same_fs_flag(self) -> tuple[str, ...]:
        return () if self.real else ("--same-filesystem",)

    def cleanup(self) -> None:
        for p in reversed(self.mounted):
            subprocess.run(["umount", "-l", str(p)], capture_output=True)
        self.mounted.clear()
