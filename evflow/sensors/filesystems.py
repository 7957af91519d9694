"""Which filesystem a folder is on, to tell shared storage from a local disk.

Change notifications (inotify) report only the changes made through this machine's kernel: on
a network or shared filesystem (NFS, SMB, a cloud bucket mounted through FUSE, a VM's shared
folder) files written by other machines never show up. A folder watched there must be polled,
so :class:`~evflow.sensors.file.FileSensor` polls by default when its folder is on one.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

__all__ = ["SHARED_FILESYSTEMS", "filesystem_of", "shared_filesystem"]

SHARED_FILESYSTEMS = frozenset(
    {
        "9p",
        "afs",
        "beegfs",
        "ceph",
        "cifs",
        "davfs",
        "fuse.gcsfuse",
        "fuse.glusterfs",
        "fuse.juicefs",
        "fuse.mountpoint-s3",
        "fuse.rclone",
        "fuse.s3fs",
        "fuse.sshfs",
        "fuse.vmhgfs-fuse",
        "glusterfs",
        "gpfs",
        "lustre",
        "ncpfs",
        "nfs",
        "nfs4",
        "prl_fs",
        "smb3",
        "smbfs",
        "vboxsf",
        "virtiofs",
    }
)
"""Filesystem types whose files other machines write: change notifications miss those."""

MOUNTINFO = "/proc/self/mountinfo"

_OCTAL = re.compile(r"\\([0-7]{3})")


def _unescape(field: str) -> str:
    """Mount points in mountinfo escape space, tab, newline and backslash as ``\\ooo``."""
    return _OCTAL.sub(lambda m: chr(int(m.group(1), 8)), field)


def filesystem_of(path: Path, mountinfo: str) -> str | None:
    """The type of the filesystem holding ``path`` (absolute, symlinks resolved), from the
    text of a ``/proc/<pid>/mountinfo``: that of the longest mount point above it."""
    best, best_type = -1, None
    for line in mountinfo.splitlines():
        fields, sep, rest = line.partition(" - ")
        parts = fields.split()
        if not sep or len(parts) < 5 or not rest:
            continue
        point = _unescape(parts[4])
        inside = point == "/" or path == Path(point) or Path(point) in path.parents
        if inside and len(point) > best:  # later mounts over the same point win on a tie
            best, best_type = len(point), rest.split()[0]
        elif inside and len(point) == best:
            best_type = rest.split()[0]
    return best_type


def shared_filesystem(path: Path) -> str | None:
    """The filesystem type if ``path`` (or its nearest existing parent) is on shared storage,
    else None; None too where the mount table cannot be read (not Linux)."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        with open(MOUNTINFO, encoding="utf-8", errors="replace") as f:
            table = f.read()
    except OSError:
        return None
    kind = filesystem_of(Path(os.path.realpath(probe)), table)
    return kind if kind in SHARED_FILESYSTEMS else None
