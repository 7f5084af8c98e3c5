"""Lab image builder: Debian kernels, initramfs and the shared guest root, in one cache.

``python -m lab.images build [--kernel ID ...] [--force]`` fetches the
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
    run/<name>/          per-VM scratch directories (lab.vm)

Every product carries a stamp (hash of its inputs: package versions, the matrix entry, the
recipe number and the build scripts); it is rebuilt only when that changes, built in a
temporary directory and renamed into place.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import shutil
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from lab import apt
from lab import buildutil as bu
from lab import rootfs as rootfs_mod
from lab.buildutil import GUEST_DIR, BuildError, cache_dir
from lab.matrix import Kernel, load_matrix

__all__ = (
    "BuildError",
    "KernelPaths",
    "build",
    "build_initramfs",
    "build_kernel",
    "built_kernel",
    "cache_dir",
    "clean",
    "ensure_built",
    "main",
    "paths",
)

#: Bump to rebuild the per-kernel products (layout of kernels/<id>/ changed).
KERNEL_RECIPE = 1


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


def built_kernel(kernel_id: str) -> Kernel:
    """The kernel as built: the matrix entry, or the ABI the build followed it to.

    When a pin has left the archive :func:`build_kernel` builds the newest ABI of the same
    series and records it in the stamp; everything that needs ``uname -r`` or package names
    asks here, not the matrix.
    """
    k = load_matrix().get(kernel_id)
    try:
        doc = json.loads((cache_dir() / "kernels" / k.id / "stamp.json").read_text())
        pinned = json.loads(json.dumps(k.key_fields()))  # tuples as the stamp has them
        return Kernel.from_fields(doc["kernel"]) if doc.get("pinned") == pinned else k
    except (OSError, ValueError, KeyError, TypeError):
        return k


def paths(kernel_id: str) -> KernelPaths:
    """The cache paths of kernel ``kernel_id`` (whether built or not)."""
    k = built_kernel(kernel_id)
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


# ---------------------------------------------------------------------------- kernels


def _kernel_key(k: Kernel, schema: int) -> str:
    return bu.sha(schema, KERNEL_RECIPE, k.key_fields(), GUEST_DIR / "build-initramfs-modules.sh")


def _initramfs_key(k: Kernel, bb_version: str) -> str:
    return bu.sha(
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


def _follow(k: Kernel) -> Kernel:
    """``k`` if the archive still has every pinned package, else the series' newest ABI.

    Debian's security suites keep only the newest ABI of a series, and version-less names
    such as ``linux-kbuild-6.1`` only their newest version, so a pin goes stale without
    anything changing here. The newest ABI matching ``current_glob`` in the pinned suite
    whose packages are all listed is taken, with a notice; none such is an :class:`AptError`
    naming the pin and what the archive has.
    """
    d = cache_dir() / "apt"
    apt.update(d)

    def complete(c: Kernel) -> bool:
        return all(c.version in {v for v, _ in apt.versions(d, p)} for p in c.packages)

    if complete(k):
        return k
    apt.update(d, max_age_s=0)
    if complete(k):
        return k
    for name in apt.matching(d, k.current_glob):
        kver = name.removeprefix("linux-image-").removesuffix("-dbg")
        for version, suite in apt.versions(d, name):
            if suite != k.suite:
                continue
            try:
                c = k.rebased(kver, version)
            except ValueError:
                continue
            if complete(c):
                bu.log(
                    f"[{k.id}] pin {k.kver} ({k.version}) left the archive: following the "
                    f"series to {c.kver} ({c.version}); update vm-images/kernels.toml"
                )
                return c
    wanted = [(p, k.version) for p in k.packages]
    why = apt.diagnose(d, wanted, k.current_glob, k.id)
    raise apt.AptError(why or f"kernel {k.id}: no complete ABI of the series in {k.suite}")


def build_kernel(k: Kernel, schema: int, force: bool = False) -> None:
    """Fetch and unpack one kernel into kernels/<id>/ (see the module docstring).

    ``k`` is the matrix entry; the stamp records it as ``pinned`` and the kernel actually
    built (:func:`_follow`) as ``kernel`` (read back by :func:`built_kernel`).
    """
    final = cache_dir() / "kernels" / k.id
    key = _kernel_key(k, schema)
    if not force and bu.stamp_ok(final, key):
        bu.log(f"[{k.id}] kernel up to date ({built_kernel(k.id).kver})")
        return
    pinned, k = k, _follow(k)
    tmp = cache_dir() / "tmp" / f"kernel-{k.id}"
    shutil.rmtree(tmp, ignore_errors=True)
    debs, tree, img, out = tmp / "debs", tmp / "tree", tmp / "img", tmp / "out"
    for d in (debs, tree, img, out):
        d.mkdir(parents=True)
    t0 = time.monotonic()
    with bu.step(f"[{k.id}] apt-get download {len(k.packages)} packages"):
        files = apt.download(
            cache_dir() / "apt",
            [(p, k.version) for p in k.packages],
            debs,
            current_glob=k.current_glob,
            kernel_id=k.id,
        )
    with bu.step(f"[{k.id}] unpack image + depmod"):
        for p in k.image:
            bu.run(["dpkg-deb", "-x", files[p], tree])
            files[p].unlink()
        if k.modules_dir.startswith("usr/") and not (tree / "lib").exists():
            (tree / "lib").symlink_to("usr/lib")  # depmod -b looks in DIR/lib/modules
        bu.run(["depmod", "-b", tree, k.kver])
        shutil.copy2(tree / k.vmlinuz, out / "vmlinuz")
        for cfg in (f"boot/config-{k.kver}", f"{k.modules_dir}/config"):
            if (tree / cfg).exists():
                shutil.copy2(tree / cfg, out / "config")
    with bu.step(f"[{k.id}] extract vmlinux from {k.dbg}"):
        dbg = files[k.dbg]
        cmd = f"dpkg-deb --fsys-tarfile '{dbg}' | tar -x -C '{tmp}' './{k.dbg_vmlinux}'"
        bu.run(["bash", "-o", "pipefail", "-c", cmd])
        (tmp / k.dbg_vmlinux).rename(out / "vmlinux")
        dbg.unlink()
    with bu.step(f"[{k.id}] unpack headers"):
        hdr = out / "headers"
        for p in (*k.headers, *k.kbuild):
            bu.run(["dpkg-deb", "-x", files[p], hdr])
            files[p].unlink()
    with bu.step(f"[{k.id}] initramfs modules"):
        bu.run(
            [
                GUEST_DIR / "build-initramfs-modules.sh",
                tree,
                k.kver,
                out / "initramfs-modules",
                *k.initramfs_modules,
            ]
        )
    with bu.step(f"[{k.id}] kernel.img"):
        # Guest view: /lib/modules/<kver>, /usr/src/linux-headers-*, the vmlinux where drgn
        # looks by default; bcc needs both build (flavour) and source (-common) links.
        mods = img / "lib" / "modules" / k.kver
        mods.parent.mkdir(parents=True)
        (tree / k.modules_dir).rename(mods)
        src = img / "usr" / "src"
        src.parent.mkdir(parents=True)
        bu.run(["cp", "-al", hdr / "usr" / "src", src])
        for link in ("build", "source"):
            (mods / link).unlink(missing_ok=True)
        (mods / "build").symlink_to(f"/usr/src/linux-headers-{k.kver}")
        (mods / "source").symlink_to(f"/usr/src/{_common_headers_dir(src, k.kver).name}")
        boot = img / "usr" / "lib" / "debug" / "boot"
        boot.mkdir(parents=True)
        os.link(out / "vmlinux", boot / f"vmlinux-{k.kver}")
        bu.mkfs(img, out / "kernel.img", "labkernel")
    shutil.rmtree(tree)
    shutil.rmtree(img)
    bu.write_stamp(
        out,
        key,
        pinned=pinned.key_fields(),
        kernel=k.key_fields(),
        built_s=round(time.monotonic() - t0, 1),
    )
    bu.replace_dir(out, final)
    shutil.rmtree(tmp, ignore_errors=True)
    bu.log(f"[{k.id}] kernel built in {time.monotonic() - t0:.1f}s")


def build_initramfs(k: Kernel, force: bool = False) -> None:
    """busybox + the kernel's virtio modules + /init + the guest init (cpio, gzip)."""
    p = paths(k.id)
    bb, bb_ver = rootfs_mod.busybox()
    key = _initramfs_key(k, bb_ver)
    stamp = p.dir / "initramfs.stamp"
    if not force and p.initramfs.exists() and stamp.exists() and stamp.read_text() == key:
        return
    with bu.step(f"[{k.id}] initramfs"):
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
        bu.run(["bash", "-o", "pipefail", "-c", cmd], cwd=root)
        (tmp / "initramfs.cpio.gz").rename(p.initramfs)
        stamp.write_text(key)
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
    with _lock(), bu.step("build total"):
        apt.ensure_config(cache_dir() / "apt")
        for kid in ids:
            build_kernel(m.get(kid), m.schema, force)
            build_initramfs(built_kernel(kid), force)
        if rootfs:
            rootfs_mod.build_rootfs(force)


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
        prog="python -m lab.images",
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
