"""Vmcores of lab guests: QEMU's ``dump-guest-memory`` and a real kdump inside the guest.

* :func:`dump_elf` / :func:`dump_qemu`: QMP ``dump-guest-memory`` (ELF, or QEMU 7.2's
  *flattened* kdump-zlib). ELF holds all guest RAM plus the NVDIMMs; it needs
  ``-device vmcoreinfo`` on the QEMU side and ``qemu_fw_cfg`` loaded in the guest.
* :func:`kdump`: what users' vmcores are. The guest boots with ``crashkernel=`` and a second
  virtio disk (:func:`make_dump_disk`, ext4 labelled ``labdump``); it loads the same vmlinuz
  and initramfs with ``kexec -p`` and panics with sysrq-c. The capture kernel's init (lab-images'
  guest init, hook ``lab.capture=SCRIPT`` on the capture command line, run when /proc/vmcore
  exists) runs the script written here: ``makedumpfile`` at each requested level onto the dump
  disk, then power-off. The host reads the files back with ``debugfs -R "dump /NAME OUT"``.

Delete every vmcore after use (:func:`remove_dumps`): an ELF dump is RAM + NVDIMM in size.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lab import qmp

__all__ = (
    "CRASHKERNEL",
    "DEFAULT_LEVELS",
    "DUMP_DISK_LABEL",
    "DumpError",
    "KdumpResult",
    "MakedumpfileLevel",
    "capture_script",
    "debugfs_read",
    "dump_elf",
    "dump_qemu",
    "kdump",
    "make_dump_disk",
    "remove_dumps",
)

#: Kernel argument reserving the capture kernel's memory (lab-notes §15: ~149 MiB usable).
CRASHKERNEL = "crashkernel=256M"
DUMP_DISK_LABEL = "labdump"
_GUEST_CAPTURE = "/root/lab-capture.sh"
_GUEST_MNT = "/run/labdump"


class DumpError(RuntimeError):
    """A dump could not be taken or read back (message names the step)."""


class _VM(Protocol):
    qmp_sock: Path

    def run(self, cmd: str, timeout: float = ...) -> Any: ...

    def qmp(self, cmd: str, **args: Any) -> Any: ...


@dataclass(frozen=True, slots=True)
class MakedumpfileLevel:
    """One makedumpfile run in the capture kernel: output file name and options."""

    name: str
    options: tuple[str, ...]


#: The two levels the lab takes: filtered (-d 31) and unfiltered (-d 0), both zlib-compressed.
DEFAULT_LEVELS = (
    MakedumpfileLevel("vmcore-c-d31", ("-c", "-d", "31")),
    MakedumpfileLevel("vmcore-c-d0", ("-c", "-d", "0")),
)


@dataclass(frozen=True, slots=True)
class KdumpResult:
    """The vmcores read back from the dump disk, with the capture log and timings."""

    vmcores: dict[str, Path]
    capture_log: str
    panic_to_exit_s: float


def dump_qemu(vm: _VM, path: Path, fmt: str = "elf", timeout: float = 60.0) -> Path:
    """QMP ``dump-guest-memory`` of the whole guest into ``path`` (``fmt``: elf, kdump-zlib).

    QEMU writes it synchronously (the guest is paused meanwhile); an ELF dump through
    :func:`~lab.qmp.sparse_sink`, so zero pages take no disk space
    (:func:`~lab.qmp.dump_guest_memory`). ``timeout``: for the QMP call.
    """
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.unlink(missing_ok=True)
    qmp.dump_guest_memory(vm.qmp_sock, path, fmt, timeout)
    if not path.exists() or path.stat().st_size == 0:
        raise DumpError(f"dump-guest-memory ({fmt}) left no file at {path}")
    return path


def dump_elf(vm: _VM, path: Path, timeout: float = 60.0) -> Path:
    """QMP ELF dump (the kind drgn 0.3.0 opens; lab-notes §7)."""
    return dump_qemu(vm, path, "elf", timeout)


def make_dump_disk(path: Path, vmlinuz: Path, initramfs: Path, size: int = 2 << 30) -> Path:
    """A sparse raw disk with ext4 labelled ``labdump`` holding ``vmlinuz`` and ``initramfs``.

    Attach it as an extra (not snapshot) virtio disk: the guest loads the capture kernel from it
    and the capture kernel writes the vmcores onto it.
    """
    path = Path(path)
    path.unlink(missing_ok=True)
    stage = path.with_name(path.name + ".d")
    subprocess.run(["rm", "-rf", str(stage)], check=True)
    stage.mkdir(parents=True)
    try:
        for src, name in ((vmlinuz, "vmlinuz"), (initramfs, "initramfs")):
            (stage / name).write_bytes(Path(src).read_bytes())
        with path.open("wb") as f:
            f.truncate(size)
        subprocess.run(
            ["mkfs.ext4", "-q", "-F", "-L", DUMP_DISK_LABEL, "-d", str(stage), str(path)],
            check=True,
            capture_output=True,
        )
    finally:
        subprocess.run(["rm", "-rf", str(stage)], check=True)
    return path


def capture_script(levels: Sequence[MakedumpfileLevel] = DEFAULT_LEVELS) -> str:
    """The script the capture kernel runs (via ``lab.capture=``): makedumpfile per level."""
    lines = [
        "set -u",
        f"mkdir -p {_GUEST_MNT}",
        f'mount "$(blkid -L {DUMP_DISK_LABEL})" {_GUEST_MNT} || exit 90',
        "rc=0",
    ]
    for lv in levels:
        opts = " ".join(shlex.quote(o) for o in lv.options)
        out = f"{_GUEST_MNT}/{lv.name}"
        lines += [
            "t0=$(cut -d' ' -f1 /proc/uptime)",
            f"makedumpfile {opts} /proc/vmcore {out}; r=$?; [ $r -eq 0 ] || rc=$r",
            f"echo \"@@LEVEL {lv.name} rc=$r t0=$t0 t1=$(cut -d' ' -f1 /proc/uptime) "
            f'size=$(stat -c %s {out} 2>/dev/null)@@"',
        ]
    lines += ["sync", f"umount {_GUEST_MNT}", "exit $rc"]
    return "\n".join(lines) + "\n"


def _capture_append(cmdline: str) -> str:
    """The capture command line: the running one minus crashkernel=/lab.capture=, plus kdump's."""
    keep = [
        a
        for a in cmdline.split()
        if not a.startswith(("crashkernel=", "lab.capture=")) and a not in ("quiet",)
    ]
    return " ".join(
        [
            *keep,
            "irqpoll",
            "nr_cpus=1",
            "reset_devices",
            "panic=-1",
            f"lab.capture={_GUEST_CAPTURE}",
        ]
    )


def debugfs_read(disk: Path, name: str, out: Path) -> Path:
    """Copy ``/name`` out of the ext4 image ``disk`` with ``debugfs -R dump`` (no mount)."""
    out.unlink(missing_ok=True)
    subprocess.run(
        ["debugfs", "-R", f"dump /{name} {out}", str(disk)], check=True, capture_output=True
    )
    if not out.exists() or out.stat().st_size == 0:
        raise DumpError(f"{name} is missing or empty on {disk}")
    return out


def kdump(
    vm: Any,
    disk: Path,
    outdir: Path,
    levels: Sequence[MakedumpfileLevel] = DEFAULT_LEVELS,
    timeout: float = 900,
) -> KdumpResult:
    """Crash a started guest and collect the capture kernel's makedumpfile output.

    The guest must have been booted with :data:`CRASHKERNEL` and ``disk`` (from
    :func:`make_dump_disk`) attached. The same vmlinuz and initramfs are loaded with
    ``kexec -p`` from that disk. ``vm`` must offer ``send()``, ``wait_exit()`` and
    ``serial_text()`` (lab-images' LabVM): the crash never returns a command frame, and QEMU
    exits when the capture kernel powers off.
    """
    res = vm.run("cat /sys/kernel/kexec_crash_size /proc/cmdline", timeout=30)
    size, cmdline = str(res.stdout).split("\n", 1)
    if int(size) == 0:
        raise DumpError(f"no crashkernel reservation (boot with {CRASHKERNEL})")
    script = capture_script(levels)
    load = (
        f"set -e; cat > {_GUEST_CAPTURE} <<'LABEOF'\n{script}LABEOF\n"
        f'mkdir -p {_GUEST_MNT}; mount "$(blkid -L {DUMP_DISK_LABEL})" {_GUEST_MNT}\n'
        f"kexec -p {_GUEST_MNT}/vmlinuz --initrd={_GUEST_MNT}/initramfs "
        f"--append={shlex.quote(_capture_append(cmdline.strip()))}\n"
        f"umount {_GUEST_MNT}; sync; cat /sys/kernel/kexec_crash_loaded"
    )
    res = vm.run(load, timeout=120)
    if res.rc != 0 or str(res.stdout).strip() != "1":
        raise DumpError(f"kexec -p failed (rc={res.rc}): {res.stdout}{res.stderr}")
    t0 = time.monotonic()
    vm.send("echo c > /proc/sysrq-trigger")
    vm.wait_exit(timeout)
    elapsed = time.monotonic() - t0
    log = vm.serial_text()
    if "@@CAPTURE-RC-0@@" not in log:
        raise DumpError(f"the capture kernel did not report success; ttyS1 said:\n{log[-3000:]}")
    outdir.mkdir(parents=True, exist_ok=True)
    cores = {lv.name: debugfs_read(disk, lv.name, outdir / lv.name) for lv in levels}
    return KdumpResult(cores, log, elapsed)


def remove_dumps(*paths: Path) -> None:
    """Delete vmcores (and dump disks): they are large and the disk is shared."""
    for p in paths:
        Path(p).unlink(missing_ok=True)
