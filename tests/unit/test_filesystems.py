"""Shared storage is told from a local disk by the mount table, so that a watched folder on
NFS, SMB or a mounted bucket is polled by default (notifications miss other machines' files)."""

from __future__ import annotations

from pathlib import Path

from evflow.sensors import FileSensor
from evflow.sensors.filesystems import filesystem_of, shared_filesystem

# Lines as Linux writes them in /proc/self/mountinfo (a space in a mount point is \040).
MOUNTINFO = """\
22 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
25 22 0:21 / /proc rw,nosuid shared:12 - proc proc rw
40 22 0:35 / /mnt/share rw,relatime shared:20 - nfs4 files:/export rw,vers=4.2
41 40 0:36 / /mnt/share/local rw,relatime shared:21 - tmpfs tmpfs rw
42 22 0:37 / /srv/my\\040drive rw,relatime shared:22 - cifs //nas/drive rw
43 22 0:38 / /data/bucket rw shared:23 - fuse.s3fs s3fs rw
44 22 0:39 / /mnt/sharelike rw shared:24 - ext4 /dev/sdb1 rw
"""


def test_the_longest_mount_point_above_a_path_names_its_filesystem() -> None:
    assert filesystem_of(Path("/home/me/inbox"), MOUNTINFO) == "ext4"
    assert filesystem_of(Path("/mnt/share"), MOUNTINFO) == "nfs4"
    assert filesystem_of(Path("/mnt/share/inbox/2026"), MOUNTINFO) == "nfs4"
    assert filesystem_of(Path("/mnt/share/local/x"), MOUNTINFO) == "tmpfs"
    assert filesystem_of(Path("/srv/my drive/in"), MOUNTINFO) == "cifs"
    assert filesystem_of(Path("/data/bucket/landing"), MOUNTINFO) == "fuse.s3fs"
    # a mount point that merely starts with the same letters is another mount
    assert filesystem_of(Path("/mnt/sharelike/in"), MOUNTINFO) == "ext4"
    assert filesystem_of(Path("/x"), "garbage\nno separator here\n") is None


def test_a_folder_on_a_local_disk_is_watched_by_notification(tmp_path: Path) -> None:
    assert shared_filesystem(tmp_path) is None
    assert shared_filesystem(tmp_path / "not" / "yet" / "created") is None
    sensor = FileSensor(tmp_path / "inbox")
    assert sensor.polling is False
    assert "polling" not in sensor.describe()


def test_polling_as_asked_wins_over_the_filesystem(tmp_path: Path) -> None:
    sensor = FileSensor(tmp_path / "inbox", polling=True, poll_interval_s=2)
    assert sensor.polling is True
    assert "polling every 2s" in sensor.describe()
    assert FileSensor(tmp_path / "inbox", polling=False).polling is False
