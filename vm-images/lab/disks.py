"""Small ext4 disks the lab hands to a guest: the per-VM project disk and file-transfer disks.

Both are built on the host with ``mkfs.ext4 -d`` (no root, no loop mounts) from a staging
directory that is removed afterwards.
"""

from __future__ import annotations

import compileall
import os
import py_compile
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from lab import qmp
from lab.images import KernelPaths

__all__ = ("GUEST_PYTHON", "build_file_disk", "build_project_disk", "make_ext4", "put_via_disk")

PROJECT_ROOT = Path(__file__).resolve().parents[2]
#: Python of the lab's rootfs (Debian bookworm: 3.11). The project disk carries .pyc files
#: compiled on the host when the host's Python has the same bytecode version: the disk is
#: read-only in the guest, so without them every guest run compiles the package from source
#: (seconds of a live classify under TCG: vm-images/README.md, project disk).
GUEST_PYTHON = (3, 11)


def make_ext4(stage: Path, img: Path, size_m: int, label: str | None = None) -> Path:
    """``mkfs.ext4 -d stage img`` without a journal; removes ``stage``."""
    cmd = ["mkfs.ext4", "-q", "-F", "-O", "^has_journal"]
    if label:
        cmd += ["-L", label]
    subprocess.run([*cmd, "-d", str(stage), str(img), f"{size_m}M"], check=True,
                   capture_output=True)  # fmt: skip
    shutil.rmtree(stage)
    return img


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def build_project_disk(run_dir: Path, paths: KernelPaths, with_project: bool) -> Path:
    """``run_dir/project.img`` (LABEL=labproject, mounted at /lab/project in the guest).

    ``boot/vmlinuz`` and ``boot/initrd.img`` of this kernel (for ``kexec -p``; reading them
    through fw_cfg is far too slow under TCG) and, with ``with_project``, this checkout's
    ``subsecinspect/``, ``bpf/`` and the lab package (byte-compiled, see :data:`GUEST_PYTHON`).
    """
    stage = run_dir / "project"
    (stage / "boot").mkdir(parents=True)
    _link_or_copy(paths.vmlinuz, stage / "boot" / "vmlinuz")
    _link_or_copy(paths.initramfs, stage / "boot" / "initrd.img")
    if with_project:
        ign = shutil.ignore_patterns("__pycache__", "*.pyc")
        # The tool, its BPF sources and the lab package (the guest side of churn runs
        # as ``python3 -m lab.churn``), all under PYTHONPATH=/lab/project in the guest.
        for src, dst in (("subsecinspect", "subsecinspect"), ("bpf", "bpf"),
                         ("vm-images/lab", "lab")):  # fmt: skip
            if (PROJECT_ROOT / src).is_dir():
                shutil.copytree(PROJECT_ROOT / src, stage / dst, ignore=ign)
        if sys.version_info[:2] == GUEST_PYTHON:
            # unchecked-hash: valid whatever the timestamps mkfs keeps; the disk is rebuilt
            # for every VM, so the .pyc can never be older than its source.
            for pkg in ("subsecinspect", "lab"):
                compileall.compile_dir(
                    stage / pkg, quiet=2, workers=1,
                    invalidation_mode=py_compile.PycInvalidationMode.UNCHECKED_HASH,
                )  # fmt: skip
    size_m = 32 + sum(f.stat().st_size for f in stage.rglob("*") if f.is_file()) // (1 << 20)
    return make_ext4(stage, run_dir / "project.img", max(64, size_m), label="labproject")


def build_file_disk(local: Path, run_dir: Path, tag: str) -> Path:
    """``run_dir/<tag>.img`` holding ``local`` as ``/f`` (for :meth:`LabVM.put`)."""
    stage = run_dir / tag
    stage.mkdir()
    _link_or_copy(local, stage / "f")
    return make_ext4(stage, run_dir / f"{tag}.img", (local.stat().st_size >> 20) + 16)


def put_via_disk(vm: Any, local: Path, remote: str, timeout: float, tag: str) -> None:
    """Copy ``local`` to ``remote`` in the running ``vm`` (a LabVM) on a hot-plugged disk.

    ext4 image with the file -> QMP blockdev-add + device_add virtio-blk (serial ``tag``)
    -> the guest finds /sys/block/vd*/serial == tag, mounts it read-only, copies, unmounts
    -> device_del (ACPI unplug) + blockdev-del, best effort. The image is always deleted.
    """
    img = build_file_disk(local, vm.run_dir, tag)
    try:
        vm.qmp("blockdev-add", driver="raw", **{"node-name": tag, "read-only": True},
               file={"driver": "file", "filename": str(img)})  # fmt: skip
        vm.qmp("device_add", driver="virtio-blk-pci", drive=tag, id=tag, serial=tag)
        q = shlex.quote(remote)
        script = (
            f"for i in $(seq 600); do for s in /sys/block/vd*/serial; do "
            f'[ "$(cat $s 2>/dev/null)" = {tag} ] && '
            f"dev=/dev/$(basename $(dirname $s)) && break 2; "
            f'done; sleep 0.1; done; [ -n "$dev" ] || {{ echo no disk {tag} >&2; exit 1; }}; '
            f"mkdir -p /run/lab/{tag} && mount -o ro $dev /run/lab/{tag} && "
            f"cp /run/lab/{tag}/f {q}; rc=$?; umount /run/lab/{tag}; exit $rc"
        )
        vm.run(script, timeout, check=True)
    finally:
        try:
            vm.qmp("device_del", id=tag)
            for _ in range(50):
                try:
                    vm.qmp("blockdev-del", **{"node-name": tag})
                    break
                except qmp.QMPError:
                    time.sleep(0.1)
        except qmp.QMPError:
            pass
        img.unlink(missing_ok=True)
