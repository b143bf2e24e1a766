"""What this host has for sandboxes: cores, memory, the disk under the data dir."""

from __future__ import annotations

import os
from pathlib import Path

from cove.core.ports import Capacity


def measure(data_dir: Path, sandboxes: int) -> Capacity:
    """This host's capacity now, with ``sandboxes`` on it."""
    total = free = 0
    for line in Path("/proc/meminfo").read_text().splitlines():
        key, _, value = line.partition(":")
        if key == "MemTotal":
            total = int(value.split()[0]) * 1024
        elif key == "MemAvailable":
            free = int(value.split()[0]) * 1024
    where = data_dir if data_dir.exists() else Path("/")
    fs = os.statvfs(where)
    return Capacity(cpu=os.cpu_count() or 1, memory=total, memory_free=free,
                    disk=fs.f_blocks * fs.f_frsize, disk_free=fs.f_bavail * fs.f_frsize,
                    sandboxes=sandboxes)  # fmt: skip
