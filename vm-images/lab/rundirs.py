"""The lab's per-VM run directories (``<cache>/run/<name>/``): claimed, never shared; pruned.

Lab tests give their guests fixed names (``test-cli-6.1``) so that the console log of the
last run is easy to find. Two test runs on one machine (two developers, or a developer beside
CI) must still not share a directory: the second would delete the first's sockets and disks.
A name is *claimed* with an ``flock`` on ``run/<name>.lock``; if another live process holds
it, the VM runs as ``<name>-<pid>`` instead. Old run directories are pruned.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
import time
from pathlib import Path

__all__ = ("MAX_AGE_DAYS", "claim", "prune", "release")

#: Run directories (logs of finished guests) not touched for this long are deleted.
MAX_AGE_DAYS = 7.0


def claim(root: Path, name: str) -> tuple[str, int]:
    """Lock ``name`` (or ``name-<pid>`` when another process holds it): (name, lock fd)."""
    root.mkdir(parents=True, exist_ok=True)
    for cand in (name, f"{name}-{os.getpid()}"):
        fd = os.open(root / f"{cand}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return cand, fd
        except BlockingIOError:
            os.close(fd)
    raise RuntimeError(f"run directory {name!r} is held twice by process {os.getpid()}")


def release(fd: int) -> None:
    """Drop a claim (the lock file stays; it is just a name)."""
    with contextlib.suppress(OSError):
        os.close(fd)


def prune(root: Path, max_age_days: float = MAX_AGE_DAYS) -> list[Path]:
    """Delete run directories (and failed-boot logs) older than ``max_age_days`` whose name
    nobody holds; returns what was deleted."""
    if not root.is_dir():
        return []
    cutoff = time.time() - max_age_days * 86400
    gone: list[Path] = []
    for p in root.iterdir():
        if p.suffix == ".lock":
            continue
        try:
            if p.stat().st_mtime >= cutoff:
                continue
        except OSError:
            continue
        name = p.name.removesuffix(".failed-boot.log")
        lock = root / f"{name}.lock"
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        try:
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
            lock.unlink(missing_ok=True)
            gone.append(p)
        finally:
            os.close(fd)
    return gone
