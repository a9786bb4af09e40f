"""Verification reads the drive, not the page cache: a copy whose bytes rotted on the
drive while the kernel still holds its good pages in RAM is found corrupt.

A real ext4 on a loop device: the rot is written into the image file under the mounted
filesystem, which keeps serving the cached, good pages of the copy to plain reads."""

from __future__ import annotations

import os

from dmedia_tui.filestore import FileStore, VerifyStatus
from tests import blockdev
from tests.blockdev import BlockDevs

blockdevs = blockdev.blockdevs  # the loop-device fixture


def _rot_on_the_drive(disk: blockdev.LoopDisk, data: bytes) -> None:
    """Flip one byte of `data` where it lies in the disk's image, behind the filesystem."""
    os.sync()
    image = disk.image.read_bytes()
    at = image.find(data[:4096])
    assert at >= 0 and image.find(data[:4096], at + 1) == -1  # found once: that is the copy
    fd = os.open(disk.image, os.O_RDWR)
    try:
        os.pwrite(fd, bytes([image[at + 100] ^ 0xFF]), at + 100)
        os.fsync(fd)
    finally:
        os.close(fd)


def test_rot_under_a_warm_page_cache_is_found_corrupt(blockdevs: BlockDevs) -> None:
    disk = blockdevs.ext4("rot", "ROTTEST")
    assert disk.mount_point is not None
    store = FileStore.create(disk.mount_point)
    data = os.urandom(256 * 1024)
    fid = store.import_bytes(data).content_hash.id
    path = store.file_path(fid)
    assert path.read_bytes() == data  # every page of the copy now in RAM
    _rot_on_the_drive(disk, data)
    assert path.read_bytes() == data  # a plain read is still served from RAM: stale
    result = store.verify(fid)
    assert result.status == VerifyStatus.CORRUPT
    assert result.quarantine is not None and result.quarantine.read_bytes() != data


def test_a_copy_verified_after_a_read_is_read_from_the_drive_again(blockdevs: BlockDevs) -> None:
    """Verify leaves no page of the copy cached: the next verification after rot reads the
    drive too, even with nothing else touching memory in between."""
    disk = blockdevs.ext4("rot2", "ROTTEST2")
    assert disk.mount_point is not None
    store = FileStore.create(disk.mount_point)
    data = os.urandom(128 * 1024)
    fid = store.import_bytes(data).content_hash.id
    assert store.verify(fid).status == VerifyStatus.OK
    _rot_on_the_drive(disk, data)
    assert store.verify(fid).status == VerifyStatus.CORRUPT
