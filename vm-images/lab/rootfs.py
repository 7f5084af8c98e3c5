"""The shared guest root image and the initramfs userland (busybox).

``rootfs/rootfs.img``: ``debootstrap --variant=minbase bookworm`` with :data:`ROOTFS_PACKAGES`,
plus the :data:`WHEELS` installed with ``pip --target`` for the guest's CPython 3.11, packed with
``mkfs.ext4 -d`` by vm-images/guest/build-rootfs.sh. ``busybox/busybox``: from bookworm's
busybox-static, fetched through the private apt configuration.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

from lab import apt
from lab import buildutil as bu
from lab.buildutil import GUEST_DIR, BuildError, cache_dir

__all__ = ("ROOTFS_PACKAGES", "WHEELS", "build_rootfs", "busybox")

#: Debian packages of the shared root, on top of debootstrap's minbase.
ROOTFS_PACKAGES = (
    "python3",
    "ndctl",
    "daxctl",
    "python3-bpfcc",
    "bpfcc-tools",
    "bpftrace",
    "kmod",
    "procps",
    "kexec-tools",
    "makedumpfile",
    "util-linux",
    "e2fsprogs",
    "iproute2",
)
#: PyPI requirements installed into the root (``pip --target``): drgn is the pinned one.
WHEELS = ("drgn==0.3.0", "rich==15.0.0", "typer==0.29.2")
_WHEEL_PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64")


def busybox() -> tuple[Path, str]:
    """Debian bookworm's busybox-static binary (fetched once via the private apt)."""
    d = cache_dir() / "busybox"
    stamp = d / "stamp.json"
    if stamp.exists() and (d / "busybox").exists():
        return d / "busybox", str(json.loads(stamp.read_text())["version"])
    tmp = cache_dir() / "tmp" / "busybox"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    ver = apt.candidate(cache_dir() / "apt", "busybox-static", suite="bookworm")
    deb = apt.download(cache_dir() / "apt", [("busybox-static", ver)], tmp)["busybox-static"]
    bu.run(["dpkg-deb", "-x", deb, tmp / "x"])
    (tmp / "out").mkdir()
    shutil.copy2(tmp / "x" / "bin" / "busybox", tmp / "out" / "busybox")
    (tmp / "out" / "stamp.json").write_text(json.dumps({"version": ver}) + "\n")
    bu.replace_dir(tmp / "out", d)
    shutil.rmtree(tmp, ignore_errors=True)
    return d / "busybox", ver


def _wheels() -> Path:
    """Download the pinned wheels for the guest's CPython 3.11 (kept; a few MB)."""
    d = cache_dir() / "wheels" / bu.sha(WHEELS, _WHEEL_PLATFORMS)
    if (d / "done").exists():
        return d
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    plat = [a for p in _WHEEL_PLATFORMS for a in ("--platform", p)]
    with bu.step("pip download wheels"):
        bu.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--only-binary=:all:",
                "--python-version",
                "3.11",
                "--implementation",
                "cp",
                *plat,
                "-d",
                d,
                *WHEELS,
            ]
        )
    (d / "done").touch()
    return d


def build_rootfs(force: bool = False) -> None:
    """debootstrap minbase bookworm + tools + wheels -> rootfs/rootfs.img (shared)."""
    final = cache_dir() / "rootfs"
    script = GUEST_DIR / "build-rootfs.sh"
    key = bu.sha(ROOTFS_PACKAGES, WHEELS, script)
    if not force and bu.stamp_ok(final, key):
        bu.log("rootfs up to date")
        return
    wheels = _wheels()
    tmp = cache_dir() / "tmp" / "rootfs"
    shutil.rmtree(tmp, ignore_errors=True)
    out = tmp / "out"
    out.mkdir(parents=True)
    t0 = time.monotonic()
    with bu.step("rootfs total"):
        p = subprocess.run(
            [
                str(script),
                str(tmp),
                str(out / "rootfs.img"),
                str(wheels),
                ",".join(ROOTFS_PACKAGES),
                " ".join(WHEELS),
            ],
            text=True,
            env={**os.environ, "PYTHON": sys.executable},
        )
        if p.returncode != 0:
            raise BuildError(f"build-rootfs.sh failed (rc {p.returncode}); log in {tmp}")
    (tmp / "packages.txt").rename(out / "packages.txt")
    bu.write_stamp(out, key, built_s=round(time.monotonic() - t0, 1))
    bu.replace_dir(out, final)
    shutil.rmtree(tmp, ignore_errors=True)
