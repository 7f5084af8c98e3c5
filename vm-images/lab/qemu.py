"""The QEMU command line of a lab guest: what :class:`~lab.vm.LabVM` boots.

Pure data in, argv out (no process, no file is touched), so that the command line can be
checked without QEMU (tests/unit/test_lab_scenarios.py) and is written next to each run as
``run/<name>/qemu.cmd``. Disks, serial lines and sockets are described in
:mod:`lab.vm`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

__all__ = ("Nvdimm", "QemuConfig", "parse_size", "qemu_command")


@dataclass(frozen=True, slots=True)
class Nvdimm:
    """One emulated NVDIMM: size and label area (``label_size=0``: label-less)."""

    size: str | int = "1G"
    label_size: str | int = "128K"


def parse_size(s: str | int) -> int:
    """``"1G"`` / ``"512M"`` / ``"128K"`` / bytes -> bytes (binary units, like QEMU)."""
    if isinstance(s, int):
        return s
    m = re.fullmatch(r"(\d+)([KMGT]?)i?B?", s.strip(), re.I)
    if not m:
        raise ValueError(f"bad size {s!r}")
    return int(m.group(1)) << (10 * " KMGT".index(m.group(2).upper() or " "))


@dataclass(frozen=True, slots=True)
class QemuConfig:
    """Everything the command line is made of (LabVM's parameters and its run files)."""

    vmlinuz: Path
    initramfs: Path
    rootfs_img: Path
    kernel_img: Path
    project_img: Path
    console_log: Path
    shell_sock: Path
    qmp_sock: Path
    mem: str = "1G"
    smp: int = 2
    slots: int = 0
    maxmem: str | int | None = None
    #: (NVDIMM, its backing file) pairs.
    nvdimms: Sequence[tuple[Nvdimm, Path]] = ()
    append: Sequence[str] = ()
    disks: Sequence[Path] = ()
    #: QEMU's gdbstub on this unix socket (and ``nokaslr``), or none.
    gdb_socket: Path | None = None
    job: Path | None = None
    icount: int | None = None
    extra: Sequence[str] = ()


def qemu_command(c: QemuConfig) -> list[str]:
    """The argv of ``qemu-system-x86_64`` for ``c`` (TCG; ``c.extra`` comes last and wins)."""
    mem = c.mem
    nv_total = sum(parse_size(n.size) for n, _ in c.nvdimms)
    slots = c.slots + len(c.nvdimms)
    if slots:
        maxmem = f"{parse_size(c.maxmem or parse_size(c.mem) + nv_total) >> 20}M"
        mem += f",slots={slots},maxmem={maxmem}"
    append = [
        "console=ttyS0",
        "loglevel=6",
        "panic=-1",
        *(["nokaslr"] if c.gdb_socket else []),
        *c.append,
    ]
    cmd = [
        "qemu-system-x86_64", "-nodefaults", "-display", "none", "-no-user-config",
        # icount needs the single-threaded TCG (one host thread for all vCPUs)
        "-accel", "tcg,thread=" + ("multi" if c.icount is None else "single"),
        "-cpu", "max", "-smp", str(c.smp),
        "-machine", "pc" + (",nvdimm=on" if c.nvdimms else ""), "-m", mem,
        "-kernel", str(c.vmlinuz), "-initrd", str(c.initramfs), "-append", " ".join(append),
        "-drive", f"file={c.rootfs_img},if=virtio,format=raw,snapshot=on",
        "-drive", f"file={c.kernel_img},if=virtio,format=raw,readonly=on",
        "-drive", f"file={c.project_img},if=virtio,format=raw,readonly=on",
    ]  # fmt: skip
    for d in c.disks:
        cmd += ["-drive", f"file={d},if=virtio,format=raw"]
    cmd += [
        "-serial", f"file:{c.console_log}",
        "-chardev", f"socket,id=sh,path={c.shell_sock},server=on,wait=off",
        "-serial", "chardev:sh",
        "-qmp", f"unix:{c.qmp_sock},server=on,wait=off",
        "-no-reboot", "-device", "vmcoreinfo",
    ]  # fmt: skip
    for i, (n, backing) in enumerate(c.nvdimms):
        cmd += [
            "-object",
            f"memory-backend-file,id=nvmem{i},share=on,mem-path={backing},size={n.size}",
            "-device",
            f"nvdimm,memdev=nvmem{i},id=nvdimm{i}"
            + (f",label-size={n.label_size}" if parse_size(n.label_size) else ""),
        ]
    if c.gdb_socket:
        cmd += ["-gdb", f"unix:{c.gdb_socket},server=on,wait=off"]
    if c.job:
        cmd += ["-fw_cfg", f"name=opt/lab/job,file={c.job}"]
    if c.icount is not None:
        cmd += ["-icount", f"shift={c.icount},sleep=off"]
    return cmd + list(c.extra)
