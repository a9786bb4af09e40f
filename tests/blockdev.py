"""Real block devices for tests: loop devices over sparse images, formatted and mounted.

Needs root and util-linux/e2fsprogs (`losetup`, `mkfs.ext4`, `mount`); tests that use
these helpers skip with a clear reason otherwise. Everything set up is torn down even when
a test fails (umount, then `losetup -d`), and every loop device is ours by its backing file.

The kernel here has no partition tables (`losetup -P` makes no loopNpM), so a "drive with
two partitions" is two loop devices over byte ranges of one image (`-o`/`--sizelimit`).

`udevd()` starts systemd-udevd in the foreground (so we own its pid) when the `udev` package
is installed and no udevd runs yet, and stops it and removes what it created afterwards.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

UDEVD = "/lib/systemd/systemd-udevd"


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(args), capture_output=True, text=True, check=check, timeout=60)


def require_block_devices() -> None:
    """Skip the calling test unless loop devices can be made here."""
    if os.geteuid() != 0:
        pytest.skip("needs root to create loop devices")
    for tool in ("losetup", "mkfs.ext4", "mount", "umount", "truncate"):
        if shutil.which(tool) is None:
            pytest.skip(f"needs {tool} (util-linux / e2fsprogs)")
    if not os.path.exists("/dev/loop-control"):
        pytest.skip("no /dev/loop-control: the kernel has no loop device support")


class LoopDisk:
    """One loop device over (a byte range of) an image file."""

    def __init__(self, image: Path, offset: int = 0, size: int | None = None) -> None:
        self.image = image
        args = ["losetup", "-f", "--show"]
        if offset:
            args += ["-o", str(offset)]
        if size:
            args += ["--sizelimit", str(size)]
        self.devname = _run(*args, str(image)).stdout.strip()
        self.mount_point: Path | None = None

    def mkfs(self, label: str, fstype: str = "ext4") -> None:
        if fstype == "ext4":
            _run("mkfs.ext4", "-q", "-F", "-L", label, self.devname)
        elif fstype == "exfat":
            if shutil.which("mkfs.exfat") is None:
                pytest.skip("needs mkfs.exfat (exfatprogs)")
            _run("mkfs.exfat", "-L", label, self.devname)
        else:
            raise ValueError(fstype)

    def mount(self, mount_point: Path) -> Path:
        mount_point.mkdir(parents=True, exist_ok=True)
        _run("mount", self.devname, str(mount_point))
        self.mount_point = mount_point
        return mount_point

    def mount_fuse_exfat(self, mount_point: Path) -> Path:
        if shutil.which("mount.exfat-fuse") is None:
            pytest.skip("needs mount.exfat-fuse (exfat-fuse)")
        mount_point.mkdir(parents=True, exist_ok=True)
        _run("mount.exfat-fuse", self.devname, str(mount_point))
        self.mount_point = mount_point
        return mount_point

    def umount(self) -> None:
        if self.mount_point is None:
            return
        for _ in range(50):
            if _run("umount", str(self.mount_point), check=False).returncode == 0:
                break
            time.sleep(0.1)  # a just-closed fd or a udev probe can keep it busy briefly
        else:
            _run("umount", "-l", str(self.mount_point), check=False)
        self.mount_point = None

    def detach(self) -> None:
        if self.devname:
            _run("losetup", "-d", self.devname, check=False)
            self.devname = ""

    def close(self) -> None:
        try:
            self.umount()
        finally:
            self.detach()


class BlockDevs:
    """Factory for loop disks in one test; `close()` undoes everything it made."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.disks: list[LoopDisk] = []

    def image(self, name: str, size: str = "64M") -> Path:
        path = self.workdir / f"{name}.img"
        _run("truncate", "-s", size, str(path))
        return path

    def disk(self, image: Path, offset: int = 0, size: int | None = None) -> LoopDisk:
        d = LoopDisk(image, offset, size)
        self.disks.append(d)
        return d

    def ext4(self, name: str, label: str, size: str = "64M", mount: bool = True) -> LoopDisk:
        """A fresh image, loop device, ext4 with `label`, mounted under workdir/name."""
        d = self.disk(self.image(name, size))
        d.mkfs(label)
        if mount:
            d.mount(self.workdir / "mnt" / name)
        return d

    def close(self) -> None:
        errors = []
        for d in reversed(self.disks):
            try:
                d.close()
            except Exception as e:  # keep cleaning the others
                errors.append(e)
        self.disks.clear()
        if errors:
            raise errors[0]


@pytest.fixture
def blockdevs(tmp_path: Path) -> Iterator[BlockDevs]:
    """Loop devices for this test (skips unless root with the tools); always cleaned up."""
    require_block_devices()
    devs = BlockDevs(tmp_path)
    try:
        yield devs
    finally:
        devs.close()


def udev_running() -> bool:
    return os.path.exists("/run/udev/control")


@contextlib.contextmanager
def udevd() -> Iterator[None]:
    """Run systemd-udevd for the duration (skip when the `udev` package is missing).

    If a udevd already runs it is used and left alone. Otherwise we start one in the
    foreground, stop it by its pid afterwards and remove /run/udev and /dev/disk if they
    did not exist before.
    """
    if os.geteuid() != 0:
        pytest.skip("needs root to run udevd")
    if udev_running():
        yield
        return
    if not os.path.exists(UDEVD) or shutil.which("udevadm") is None:
        pytest.skip("udev not installed (apt-get install udev)")
    had_run, had_disk = os.path.exists("/run/udev"), os.path.exists("/dev/disk")
    proc = subprocess.Popen(
        [UDEVD], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
    )
    try:
        for _ in range(100):
            if udev_running() or proc.poll() is not None:
                break
            time.sleep(0.05)
        if proc.poll() is not None:
            pytest.skip("systemd-udevd did not start")
        _run("udevadm", "trigger", "--subsystem-match=block", "--action=add", check=False)
        _run("udevadm", "settle", "--timeout=20", check=False)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
        if not had_run:
            shutil.rmtree("/run/udev", ignore_errors=True)
        if not had_disk:
            shutil.rmtree("/dev/disk", ignore_errors=True)


def settle(*devnames: str) -> None:
    """Make udev (re)read these devices and wait until it is done (no-op without udev).

    udev only re-probes a device on a "change" event; a mkfs done before udev had set its
    inotify watch on the new loop device goes unnoticed, hence the explicit trigger.
    """
    if not udev_running() or shutil.which("udevadm") is None:
        return
    if devnames:
        _run("udevadm", "trigger", "--action=change", *devnames, check=False)
    _run("udevadm", "settle", "--timeout=20", check=False)
