"""Shared steps of the lab builders: cache location, timed steps, stamps, atomic renames.

Used by :mod:`lab.images` (kernels, initramfs) and :mod:`lab.rootfs`.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from lab.matrix import KERNELS_TOML

__all__ = (
    "GUEST_DIR",
    "BuildError",
    "cache_dir",
    "log",
    "mkfs",
    "replace_dir",
    "run",
    "sha",
    "stamp_ok",
    "step",
    "write_stamp",
)

#: vm-images/guest: the guest and build scripts (their hashes are part of the cache keys).
GUEST_DIR = KERNELS_TOML.parent / "guest"


class BuildError(RuntimeError):
    """A lab image could not be built (message is one line, says what to do)."""


def cache_dir() -> Path:
    """``$SUBSECINSPECT_LAB_CACHE`` or ``~/.cache/subsecinspect-lab``."""
    env = os.environ.get("SUBSECINSPECT_LAB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "subsecinspect-lab"


def log(msg: str) -> None:
    print(f"lab-images: {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def step(what: str) -> Iterator[None]:
    t0 = time.monotonic()
    yield
    log(f"{what}: {time.monotonic() - t0:.1f}s")


def run(cmd: Sequence[str | Path], **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise BuildError with the tail of its stderr."""
    p = subprocess.run([str(c) for c in cmd], text=True, capture_output=True, **kw)  # type: ignore[call-overload]
    if p.returncode != 0:
        tail = " | ".join((p.stderr or p.stdout).strip().splitlines()[-3:])
        raise BuildError(f"{Path(str(cmd[0])).name} failed (rc {p.returncode}): {tail}")
    return p  # type: ignore[no-any-return]


def sha(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.read_bytes() if isinstance(p, Path) else json.dumps(p, sort_keys=True).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def stamp_ok(d: Path, key: str) -> bool:
    try:
        return bool(json.loads((d / "stamp.json").read_text())["key"] == key)
    except (OSError, ValueError, KeyError):
        return False


def write_stamp(d: Path, key: str, **info: object) -> None:
    (d / "stamp.json").write_text(json.dumps({"key": key, **info}, indent=1) + "\n")


def replace_dir(tmp: Path, final: Path) -> None:
    """Atomically put ``tmp`` at ``final`` (the old one is renamed away, then deleted)."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def mkfs(src: Path, img: Path, label: str) -> None:
    """Pack ``src`` into a sparse ext4 image with ``mkfs.ext4 -d`` (no loop mount)."""
    used = int(run(["du", "-sm", src]).stdout.split()[0])
    size = used + used // 5 + 64
    img.unlink(missing_ok=True)
    run(
        [
            "mkfs.ext4",
            "-q",
            "-F",
            "-L",
            label,
            "-m",
            "0",
            "-O",
            "^has_journal",
            "-d",
            src,
            img,
            f"{size}M",
        ]
    )
