"""Lab image builder: Debian kernels, initramfs and the shared guest root, in one cache.

``python -m subsecinspect.lab.images build [--kernel ID ...] [--force]`` fetches the
packages of vm-images/kernels.toml with ``apt-get download`` through a PRIVATE apt
configuration (``$CACHE/apt``; the machine's own apt setup is never touched), extracts
vmlinuz, the modules tree, only the vmlinux of the -dbg package and the headers, and packs
what the guest needs into ext4 images built with ``mkfs.ext4 -d`` (no loop mounts).

Cache layout (``$SUBSECINSPECT_LAB_CACHE``, default ``~/.cache/subsecinspect-lab``)::

    apt/                 private apt.conf, sources.list, lists, state
    kernels/<id>/        vmlinuz, vmlinux (host copy for drgn), config, kernel.img,
                         initramfs.cpio.gz, initramfs-modules/, headers/, stamp.json
    rootfs/              rootfs.img (shared by every kernel), packages.txt, stamp.json
    wheels/<key>/        the PyPI wheels installed into the root image
    busybox/             busybox (from Debian's busybox-static), stamp.json
    run/<name>/          per-VM scratch directories (subsecinspect.lab.vm)

Every product carries a stamp (hash of its inputs: package versions, the matrix entry, the
recipe number and the build scripts); it is rebuilt only when that changes, built in a
temporary directory and renamed into place.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from subsecinspect.lab import apt
from subsecinspect.lab.matrix import KERNELS_TOML, Kernel, load_matrix

__all__ = (
    "GUEST_DIR",
    "ROOTFS_PACKAGES",
    "WHEELS",
    "BuildError",
    "KernelPaths",
    "build",
    "cache_dir",
    "ensure_built",
    "main",
    "paths",
)

GUEST_DIR = KERNELS_TOML.parent / "guest"

#: Bump to rebuild the per-kernel products (layout of kernels/<id>/ changed).
KERNEL_RECIPE = 1
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


class BuildError(RuntimeError):
    """A lab image could not be built (message is one line, says what to do)."""


@dataclass(frozen=True, slots=True)
class KernelPaths:
    """Where the cached files of one lab kernel live (see the module docstring)."""

    kernel_id: str
    kver: str
    dir: Path
    vmlinuz: Path
    initramfs: Path
    vmlinux: Path
    kernel_img: Path
    rootfs_img: Path
    config: Path
    headers: Path

    def missing(self) -> list[Path]:
        """The files a boot needs that are not there yet."""
        need = (self.vmlinuz, self.initramfs, self.vmlinux, self.kernel_img, self.rootfs_img)
        return [p for p in need if not p.exists()]


def cache_dir() -> Path:
    """``$SUBSECINSPECT_LAB_CACHE`` or ``~/.cache/subsecinspect-lab``."""
    env = os.environ.get("SUBSECINSPECT_LAB_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "subsecinspect-lab"


def paths(kernel_id: str) -> KernelPaths:
    """The cache paths of kernel ``kernel_id`` (whether built or not)."""
    k = load_matrix().get(kernel_id)
    d = cache_dir() / "kernels" / k.id
    return KernelPaths(
        kernel_id=k.id,
        kver=k.kver,
        dir=d,
        vmlinuz=d / "vmlinuz",
        initramfs=d / "initramfs.cpio.gz",
        vmlinux=d / "vmlinux",
        kernel_img=d / "kernel.img",
        rootfs_img=cache_dir() / "rootfs" / "rootfs.img",
        config=d / "config",
        headers=d / "headers",
    )


# ---------------------------------------------------------------------------- helpers


def _log(msg: str) -> None:
    print(f"lab-images: {msg}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _step(what: str) -> Iterator[None]:
    t0 = time.monotonic()
    yield
    _log(f"{what}: {time.monotonic() - t0:.1f}s")


def _run(cmd: Sequence[str | Path], **kw: object) -> subprocess.CompletedProcess[str]:
    """Run a command; on failure raise BuildError with the tail of its stderr."""
    p = subprocess.run([str(c) for c in cmd], text=True, capture_output=True, **kw)  # type: ignore[call-overload]
    if p.returncode != 0:
        tail = " | ".join((p.stderr or p.stdout).strip().splitlines()[-3:])
        raise BuildError(f"{Path(str(cmd[0])).name} failed (rc {p.returncode}): {tail}")
    return p  # type: ignore[no-any-return]


def _sha(*parts: object) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(p.read_bytes() if isinstance(p, Path) else json.dumps(p, sort_keys=True).encode())
        h.update(b"\0")
    return h.hexdigest()[:16]


def _stamp_ok(d: Path, key: str) -> bool:
    try:
        return bool(json.loads((d / "stamp.json").read_text())["key"] == key)
    except (OSError, ValueError, KeyError):
        return False


def _write_stamp(d: Path, key: str, **info: object) -> None:
    (d / "stamp.json").write_text(json.dumps({"key": key, **info}, indent=1) + "\n")


def _replace_dir(tmp: Path, final: Path) -> None:
    """Atomically put ``tmp`` at ``final`` (the old one is renamed away, then deleted)."""
    old = final.with_name(final.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists():
        final.rename(old)
    tmp.rename(final)
    shutil.rmtree(old, ignore_errors=True)


def _mkfs(src: Path, img: Path, label: str) -> None:
    """Pack ``src`` into a sparse ext4 image with ``mkfs.ext4 -d`` (no loop mount)."""
    used = int(_run(["du", "-sm", src]).stdout.split()[0])
    size = used + used // 5 + 64
    img.unlink(missing_ok=True)
    _run(
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


# ---------------------------------------------------------------------------- kernels


def _kernel_key(k: Kernel, schema: int) -> str:
    return _sha(schema, KERNEL_RECIPE, k.key_fields(), GUEST_DIR / "build-initramfs-modules.sh")


def _initramfs_key(k: Kernel, bb_version: str) -> str:
    return _sha(
        k.kver,
        bb_version,
        GUEST_DIR / "initramfs-init.sh",
        GUEST_DIR / "init.sh",
        GUEST_DIR / "shell-server.py",
    )


def _common_headers_dir(src: Path, kver: str) -> Path:
    """The ``linux-headers-*-common`` directory (where include/linux/kconfig.h lives)."""
    dirs = [
        d
        for d in src.iterdir()
        if d.name.startswith("linux-headers-") and d.name.endswith("-common")
    ]
    if len(dirs) != 1:
        raise BuildError(f"{kver}: expected one linux-headers-*-common dir, found {dirs}")
    return dirs[0]


def build_kernel(k: Kernel, schema: int, force: bool = False) -> None:
    """Fetch and unpack one kernel into kernels/<id>/ (see the module docstring)."""
    final = paths(k.id).dir
    key = _kernel_key(k, schema)
    if not force and _stamp_ok(final, key):
        _log(f"[{k.id}] kernel up to date ({k.kver})")
        return
    tmp = cache_dir() / "tmp" / f"kernel-{k.id}"
    shutil.rmtree(tmp, ignore_errors=True)
    debs, tree, img, out = tmp / "debs", tmp / "tree", tmp / "img", tmp / "out"
    for d in (debs, tree, img, out):
        d.mkdir(parents=True)
    t0 = time.monotonic()
    with _step(f"[{k.id}] apt-get download {len(k.packages)} packages"):
        files = apt.download(
            cache_dir() / "apt",
            [(p, k.version) for p in k.packages],
            debs,
            current_glob=k.current_glob,
            kernel_id=k.id,
        )
    with _step(f"[{k.id}] unpack image + depmod"):
        for p in k.image:
            _run(["dpkg-deb", "-x", files[p], tree])
            files[p].unlink()
        if k.modules_dir.startswith("usr/") and not (tree / "lib").exists():
            (tree / "lib").symlink_to("usr/lib")  # depmod -b looks in DIR/lib/modules
        _run(["depmod", "-b", tree, k.kver])
        shutil.copy2(tree / k.vmlinuz, out / "vmlinuz")
        for cfg in (f"boot/config-{k.kver}", f"{k.modules_dir}/config"):
            if (tree / cfg).exists():
                shutil.copy2(tree / cfg, out / "config")
    with _step(f"[{k.id}] extract vmlinux from {k.dbg}"):
        dbg = files[k.dbg]
        cmd = f"dpkg-deb --fsys-tarfile '{dbg}' | tar -x -C '{tmp}' './{k.dbg_vmlinux}'"
        _run(["bash", "-o", "pipefail", "-c", cmd])
        (tmp / k.dbg_vmlinux).rename(out / "vmlinux")
        dbg.unlink()
    with _step(f"[{k.id}] unpack headers"):
        hdr = out / "headers"
        for p in (*k.headers, *k.kbuild):
            _run(["dpkg-deb", "-x", files[p], hdr])
            files[p].unlink()
    with _step(f"[{k.id}] initramfs modules"):
        _run(
            [
                GUEST_DIR / "build-initramfs-modules.sh",
                tree,
                k.kver,
                out / "initramfs-modules",
                *k.initramfs_modules,
            ]
        )
    with _step(f"[{k.id}] kernel.img"):
        # Guest view: /lib/modules/<kver>, /usr/src/linux-headers-*, the vmlinux where drgn
        # looks by default; bcc needs both build (flavour) and source (-common) links.
        mods = img / "lib" / "modules" / k.kver
        mods.parent.mkdir(parents=True)
        (tree / k.modules_dir).rename(mods)
        src = img / "usr" / "src"
        src.parent.mkdir(parents=True)
        _run(["cp", "-al", hdr / "usr" / "src", src])
        for link in ("build", "source"):
            (mods / link).unlink(missing_ok=True)
        (mods / "build").symlink_to(f"/usr/src/linux-headers-{k.kver}")
        (mods / "source").symlink_to(f"/usr/src/{_common_headers_dir(src, k.kver).name}")
        boot = img / "usr" / "lib" / "debug" / "boot"
        boot.mkdir(parents=True)
        os.link(out / "vmlinux", boot / f"vmlinux-{k.kver}")
        _mkfs(img, out / "kernel.img", "labkernel")
    shutil.rmtree(tree)
    shutil.rmtree(img)
    _write_stamp(out, key, kernel=k.key_fields(), built_s=round(time.monotonic() - t0, 1))
    _replace_dir(out, final)
    shutil.rmtree(tmp, ignore_errors=True)
    _log(f"[{k.id}] kernel built in {time.monotonic() - t0:.1f}s")


def _busybox() -> tuple[Path, str]:
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
    _run(["dpkg-deb", "-x", deb, tmp / "x"])
    (tmp / "out").mkdir()
    shutil.copy2(tmp / "x" / "bin" / "busybox", tmp / "out" / "busybox")
    (tmp / "out" / "stamp.json").write_text(json.dumps({"version": ver}) + "\n")
    _replace_dir(tmp / "out", d)
    shutil.rmtree(tmp, ignore_errors=True)
    return d / "busybox", ver


def build_initramfs(k: Kernel, force: bool = False) -> None:
    """busybox + the kernel's virtio modules + /init + the guest init (cpio, gzip)."""
    p = paths(k.id)
    bb, bb_ver = _busybox()
    key = _initramfs_key(k, bb_ver)
    stamp = p.dir / "initramfs.stamp"
    if not force and p.initramfs.exists() and stamp.exists() and stamp.read_text() == key:
        return
    with _step(f"[{k.id}] initramfs"):
        tmp = cache_dir() / "tmp" / f"initramfs-{k.id}"
        shutil.rmtree(tmp, ignore_errors=True)
        root = tmp / "root"
        (root / "bin").mkdir(parents=True)
        shutil.copy2(bb, root / "bin" / "busybox")
        shutil.copytree(p.dir / "initramfs-modules", root / "modules")
        (root / "modules" / "modules.order").rename(root / "modules.order")
        shutil.copy2(GUEST_DIR / "initramfs-init.sh", root / "init")
        shutil.copy2(GUEST_DIR / "init.sh", root / "lab-init.sh")
        shutil.copy2(GUEST_DIR / "shell-server.py", root / "lab-shell.py")
        cpio = "find . | LC_ALL=C sort | cpio -o -H newc -R 0:0 --quiet | gzip -9"
        cmd = f"{cpio} > '{tmp / 'initramfs.cpio.gz'}'"
        _run(["bash", "-o", "pipefail", "-c", cmd], cwd=root)
        (tmp / "initramfs.cpio.gz").rename(p.initramfs)
        stamp.write_text(key)
        shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------- rootfs


def _wheels() -> Path:
    """Download the pinned wheels for the guest's CPython 3.11 (kept; a few MB)."""
    d = cache_dir() / "wheels" / _sha(WHEELS, _WHEEL_PLATFORMS)
    if (d / "done").exists():
        return d
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    plat = [a for p in _WHEEL_PLATFORMS for a in ("--platform", p)]
    with _step("pip download wheels"):
        _run(
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
    key = _sha(ROOTFS_PACKAGES, WHEELS, script)
    if not force and _stamp_ok(final, key):
        _log("rootfs up to date")
        return
    wheels = _wheels()
    tmp = cache_dir() / "tmp" / "rootfs"
    shutil.rmtree(tmp, ignore_errors=True)
    out = tmp / "out"
    out.mkdir(parents=True)
    t0 = time.monotonic()
    with _step("rootfs total"):
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
        )
        if p.returncode != 0:
            raise BuildError(f"build-rootfs.sh failed (rc {p.returncode}); log in {tmp}")
    (tmp / "packages.txt").rename(out / "packages.txt")
    _write_stamp(out, key, built_s=round(time.monotonic() - t0, 1))
    _replace_dir(out, final)
    shutil.rmtree(tmp, ignore_errors=True)


# ---------------------------------------------------------------------------- entry points


@contextlib.contextmanager
def _lock() -> Iterator[None]:
    cache_dir().mkdir(parents=True, exist_ok=True)
    with open(cache_dir() / ".build.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def build(kernel_ids: Sequence[str] = (), force: bool = False, rootfs: bool = True) -> None:
    """Build what is missing or stale for ``kernel_ids`` (all when empty) and the root."""
    m = load_matrix()
    ids = list(kernel_ids) or list(m.ids)
    with _lock(), _step("build total"):
        apt.ensure_config(cache_dir() / "apt")
        for kid in ids:
            k = m.get(kid)
            build_kernel(k, m.schema, force)
            build_initramfs(k, force)
        if rootfs:
            build_rootfs(force)


def ensure_built(kernel_id: str) -> KernelPaths:
    """:func:`paths`, building first what is missing or stale (the stamps decide)."""
    build([kernel_id])
    return paths(kernel_id)


def clean() -> None:
    """Remove every product of the builder from the cache (keeps nothing)."""
    for sub in ("apt", "kernels", "rootfs", "wheels", "busybox", "tmp", "run"):
        shutil.rmtree(cache_dir() / sub, ignore_errors=True)
    (cache_dir() / ".build.lock").unlink(missing_ok=True)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``build [--kernel ID ...] [--force]``, ``paths ID``, ``clean``."""
    ap = argparse.ArgumentParser(
        prog="python -m subsecinspect.lab.images",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build what is missing (idempotent)")
    b.add_argument(
        "--kernel", action="append", default=[], metavar="ID", help="kernel id (repeatable)"
    )
    b.add_argument("--force", action="store_true", help="rebuild even if the stamps match")
    b.add_argument("--no-rootfs", action="store_true", help="skip the shared root image")
    pa = sub.add_parser("paths", help="print the cache paths of a kernel as JSON")
    pa.add_argument("kernel_id")
    sub.add_parser("clean", help="delete everything the builder put in the cache")
    args = ap.parse_args(argv)
    try:
        if args.cmd == "build":
            build(args.kernel, args.force, rootfs=not args.no_rootfs)
        elif args.cmd == "paths":
            p = paths(args.kernel_id)
            doc = {f: str(getattr(p, f)) for f in p.__slots__}
            print(json.dumps({**doc, "missing": [str(x) for x in p.missing()]}, indent=1))
        else:
            clean()
    except (BuildError, apt.AptError, ValueError) as e:
        print(f"lab-images: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
