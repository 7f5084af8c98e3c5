"""Out-of-tree kernel modules of the lab tests, built per lab kernel: the one build path.

A module is a directory under ``tests/kmod/`` named after it (``tests/kmod/NAME/``: its C
source and a ``Kbuild`` with ``obj-m := NAME.o``); :func:`build` ``(kernel_id, NAME)`` returns
its ``.ko`` for that kernel. Two cached steps of ``vm-images/guest/build-kmod.sh``:

* **prepare**: a Debian build chroot per suite, ``$CACHE/kmod/chroot/<suite>/`` (debootstrap
  once), with the headers of each kernel unpacked into its ``/usr/src`` (the headers' Makefiles
  use absolute paths, lab-notes §16). The suite is the kernel's own compiler where bookworm
  lacks it: trixie's gcc-14 for 7.2 (its kbuild needs trixie's glibc), bookworm's gcc-12 for
  the others (5.10 builds with ``CC=gcc``: its headers name gcc-10);
* **module**: ``make`` in a fresh directory of the chroot, stripped into
  ``$CACHE/kmod/out/<kernel_id>/<NAME>/<NAME>.ko``, rebuilt only when :func:`module_key`
  changes (kernel release, chroot suite, the module directory's files, the build script).

Builds of one chroot hold ``$CACHE/kmod/chroot/<suite>.lock``: test runs on the same machine
share the cache. (The ``$CACHE/kmod/chroot-<suite>/`` of the earlier per-module scripts is not
reused: they took no lock.)
"""

from __future__ import annotations

import contextlib
import fcntl
import subprocess
from collections.abc import Iterator
from pathlib import Path

from lab import apt
from lab.buildutil import GUEST_DIR, cache_dir, sha, stamp_ok, write_stamp
from lab.images import built_kernel

__all__ = (
    "KMOD_DIR",
    "KmodError",
    "build",
    "chroot_dir",
    "chroot_suite",
    "header_sources",
    "module_cmd",
    "module_key",
    "module_path",
    "prepare_cmd",
)

#: Where the modules' directories live (tests/kmod/<name>/).
KMOD_DIR = Path(__file__).resolve().parents[2] / "tests" / "kmod"
SCRIPT = GUEST_DIR / "build-kmod.sh"


class KmodError(RuntimeError):
    """A module could not be built (the message holds the tail of the build's stderr)."""


def chroot_suite(kernel_suite: str) -> str:
    """The build chroot's suite for a kernel from ``kernel_suite``."""
    return "trixie" if kernel_suite.startswith(("trixie", "sid", "forky")) else "bookworm"


def header_sources(kernel_suite: str) -> list[str]:
    """apt source lines of the suite holding the kernel's headers (the lab's own archive list)."""
    lines = [f"deb {url} {s} main" for url, s in apt.SUITES if s == kernel_suite]
    if not lines:
        raise KmodError(f"suite {kernel_suite!r} is not in lab.apt.SUITES")
    return lines


def chroot_dir(suite: str) -> Path:
    return cache_dir() / "kmod" / "chroot" / suite


def module_path(kernel_id: str, name: str) -> Path:
    """Where the built ``name``.ko of ``kernel_id`` is cached (with stamp.json beside it)."""
    return cache_dir() / "kmod" / "out" / kernel_id / name / f"{name}.ko"


def _sources(src: Path) -> list[Path]:
    files = sorted(p for p in src.iterdir() if p.is_file())
    if not any(p.name == "Kbuild" for p in files):
        raise KmodError(f"{src} holds no Kbuild: not a module directory")
    return files


def module_key(kver: str, suite: str, src: Path) -> str:
    """Cache key of one module build: what the built .ko depends on."""
    files = _sources(src)
    return sha(kver, suite, [p.name for p in files], *files, SCRIPT)


def prepare_cmd(chroot: Path, suite: str, kver: str, sources: list[str]) -> list[str]:
    return ["sh", str(SCRIPT), "prepare", str(chroot), suite, kver, *sources]


def module_cmd(chroot: Path, kver: str, src: Path, name: str, out: Path) -> list[str]:
    return ["sh", str(SCRIPT), "module", str(chroot), kver, str(src), name, str(out)]


@contextlib.contextmanager
def _locked(chroot: Path) -> Iterator[None]:
    chroot.parent.mkdir(parents=True, exist_ok=True)
    with open(chroot.with_name(chroot.name + ".lock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _run(cmd: list[str], what: str) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.splitlines()[-15:])
        raise KmodError(f"{what} failed (rc {proc.returncode}):\n{tail}")


def build(kernel_id: str, name: str, src: Path | None = None, force: bool = False) -> Path:
    """Build (or reuse) ``name``.ko for ``kernel_id`` from ``src`` (default tests/kmod/NAME).

    Needs root, debootstrap and access to deb.debian.org on first use of a chroot (about 60 s,
    vm-images/README.md "Kernel modules"); seconds per module afterwards.

    :raises KmodError: the chroot or the module could not be built.
    """
    src = KMOD_DIR / name if src is None else src
    k = built_kernel(kernel_id)
    suite = chroot_suite(k.suite)
    ko = module_path(kernel_id, name)
    key = module_key(k.kver, suite, src)
    if not force and ko.exists() and stamp_ok(ko.parent, key):
        return ko
    chroot = chroot_dir(suite)
    with _locked(chroot):
        _run(prepare_cmd(chroot, suite, k.kver, header_sources(k.suite)),
             f"preparing the {suite} chroot for {k.kver}")
        _run(module_cmd(chroot, k.kver, src, name, ko), f"building {name}.ko for {k.kver}")
    if not ko.exists():
        raise KmodError(f"building {name}.ko for {k.kver} left no {ko}")
    write_stamp(ko.parent, key, kver=k.kver, chroot=suite, src=str(src))
    return ko
