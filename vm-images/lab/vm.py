"""LabVM: boot one lab kernel in QEMU/TCG and drive it over a serial line and QMP.

Disks (virtio-blk, in this order): vda = the shared root (``snapshot=on``: writes are thrown
away), vdb = the kernel disk (modules, headers, vmlinux; read-only), vdc = the per-VM disk
(LABEL=labproject, mounted at /lab/project: ``boot/`` = this kernel's vmlinuz + initramfs for
``kexec -p``, linked as /lab/boot; with ``project=True`` also this checkout's ``subsecinspect/``
and ``bpf/``, put on ``PYTHONPATH``), then the ``disks=`` in order (see :meth:`LabVM.disk_dev`).

Serial lines: ttyS0 = kernel console -> ``run/<name>/console.log``; ttyS1 = command channel
(protocol in vm-images/lab/channel.py). Every QEMU is killed and reaped by its pid in
:meth:`LabVM.stop`, on ``__exit__`` and at interpreter exit.
"""

from __future__ import annotations

import atexit
import base64
import itertools
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from lab import images, qmp, rundirs
from lab.channel import Channel, LabBootError, LabError, LabTimeout, Result
from lab.disks import build_project_disk, put_via_disk
from lab.qemu import Nvdimm, QemuConfig, parse_size, qemu_command

__all__ = ("LabBootError", "LabError", "LabTimeout", "LabVM", "Nvdimm", "Result", "parse_size")

#: The kernel died before the guest's userspace answered: QEMU's multi-threaded TCG
#: occasionally loses a cross-modifying-code race with the kernel's text patching at boot
#: (seen once on 7.2: ``Oops: int3`` in a static-branch site). Such a boot is retried once.
_BOOT_DEATH = re.compile(r"Kernel panic - not syncing|Oops: |BUG: ")
_LIVE: set[LabVM] = set()  # strong refs: a dropped LabVM is still reaped at exit
_SEQ = itertools.count(1)


class LabVM:
    """One QEMU guest running a lab kernel (see the module docstring).

    :param kernel: a kernel id of vm-images/kernels.toml ("5.10", "6.1", "6.12", "7.2").
    :param nvdimms: NVDIMMs (``Nvdimm``, ``(size, label_size)`` or a size); each gets a fresh
        sparse backing file in the run dir, deleted by :meth:`stop`.
    :param append: extra kernel arguments (e.g. ``memmap=208M!1104M``, ``crashkernel=256M``).
    :param slots, maxmem: DIMM slots / maximum memory for hot-add (NVDIMMs count too).
    :param disks: extra raw disk images (writable), after root, kernel and project disks.
    :param gdbstub: QEMU's gdbstub on the unix socket :attr:`gdb_socket` (gdb: ``target remote
        unix::SOCK``... see gdb docs) and boot with nokaslr.
    :param job: a script run in batch mode (fw_cfg ``opt/lab/job``); use :meth:`run_batch`.
    :param icount: QEMU's instruction counting, ``-icount shift=N,sleep=off`` on single-threaded
        TCG: the guest's clocks advance by 2**N ns per instruction executed (and jump over idle
        time), so guest-measured durations count instructions and no longer depend on the load
        of the host. For benchmarks that compare two runs in one guest (bench_trace.py,
        bench_classify.py); the guest is slower in wall time (one host thread). Needs
        ``smp=1``: with two vCPUs QEMU 7.2's round-robin icount livelocks the boot (6.1 spins
        in ``__schedule`` on both from 0.03 s on, no console output).
    """

    def __init__(
        self,
        kernel: str = "6.1",
        *,
        name: str | None = None,
        mem: str = "1G",
        smp: int = 2,
        nvdimms: Sequence[Nvdimm | tuple[str | int, str | int] | str | int] = (),
        append: Sequence[str] = (),
        slots: int = 0,
        maxmem: str | int | None = None,
        disks: Sequence[str | Path] = (),
        gdbstub: bool = False,
        project: bool = True,
        job: str | Path | None = None,
        boot_timeout: float = 120.0,
        qemu_args: Sequence[str] = (),
        icount: int | None = None,
    ) -> None:
        self.kernel = kernel
        self.paths = images.paths(kernel)
        self.name = name or f"{kernel}-{os.getpid()}-{next(_SEQ)}"
        self.mem, self.smp, self.append, self.slots, self.maxmem = (
            mem,
            smp,
            list(append),
            slots,
            maxmem,
        )
        self.nvdimms = [
            n if isinstance(n, Nvdimm) else Nvdimm(*n) if isinstance(n, tuple) else Nvdimm(n)
            for n in nvdimms
        ]
        self.disks = [Path(d).resolve() for d in disks]
        self.gdbstub, self.project, self.boot_timeout = gdbstub, project, boot_timeout
        self.job = Path(job).resolve() if job else None
        self.qemu_args = list(qemu_args)
        if icount is not None and smp != 1:
            raise ValueError("LabVM(icount=...) needs smp=1 (QEMU's round-robin icount "
                             "livelocks a 2-vCPU boot)")
        self.icount = icount
        self.run_dir = images.cache_dir() / "run" / self.name
        self.gdb_socket = self.run_dir / "gdb.sock"
        self.proc: subprocess.Popen[bytes] | None = None
        self._chan: Channel | None = None
        self._claim: int | None = None  # flock fd on run/<name>.lock (lab/rundirs.py)

    # ------------------------------------------------------------------ files and command line

    @property
    def console_log(self) -> Path:
        return self.run_dir / "console.log"

    @property
    def qmp_socket(self) -> Path:
        return self.run_dir / "qmp.sock"

    qmp_sock = qmp_socket

    def nvdimm_file(self, i: int) -> Path:
        return self.run_dir / f"nvdimm{i}.img"

    def disk_dev(self, i: int) -> str:
        """Guest device of ``disks[i]`` (``/dev/vdc`` or ``/dev/vdd``...)."""
        return "/dev/vd" + "abcdefghijklmnop"[3 + i]

    def command_line(self) -> list[str]:
        """The full QEMU command line (also written to ``run/<name>/qemu.cmd``)."""
        p = self.paths
        return qemu_command(
            QemuConfig(
                vmlinuz=p.vmlinuz,
                initramfs=p.initramfs,
                rootfs_img=p.rootfs_img,
                kernel_img=p.kernel_img,
                project_img=self.run_dir / "project.img",
                console_log=self.console_log,
                shell_sock=self.run_dir / "shell.sock",
                qmp_sock=self.qmp_sock,
                mem=self.mem,
                smp=self.smp,
                slots=self.slots,
                maxmem=self.maxmem,
                nvdimms=[(n, self.nvdimm_file(i)) for i, n in enumerate(self.nvdimms)],
                append=self.append,
                disks=self.disks,
                gdb_socket=self.gdb_socket if self.gdbstub else None,
                job=self.job,
                icount=self.icount,
                extra=self.qemu_args,
            )
        )

    # ------------------------------------------------------------------ lifecycle

    def _launch(self) -> None:
        missing = self.paths.missing()
        if missing:
            raise LabError(
                f"lab cache incomplete ({missing[0]}): run "
                f"`python -m lab.images build --kernel {self.kernel}`"
            )
        if self._claim is None:
            root = self.run_dir.parent
            rundirs.prune(root)
            self.name, self._claim = rundirs.claim(root, self.name)
            self.run_dir = root / self.name
            self.gdb_socket = self.run_dir / "gdb.sock"
        shutil.rmtree(self.run_dir, ignore_errors=True)
        self.run_dir.mkdir(parents=True)
        for i, n in enumerate(self.nvdimms):
            with open(self.nvdimm_file(i), "wb") as f:  # fresh sparse backing file
                f.truncate(parse_size(n.size))
        build_project_disk(self.run_dir, self.paths, self.project)
        cmd = self.command_line()
        (self.run_dir / "qemu.cmd").write_text(shlex.join(cmd) + "\n")
        # QEMU gets SIGKILL when the thread that started it dies: atexit does not run on
        # SIGTERM/SIGKILL (e.g. under `timeout`), and a killed test run must not leave guests.
        cmd = ["setpriv", "--pdeathsig", "KILL", "--", *cmd]
        log = open(self.run_dir / "qemu.log", "wb")
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )
        log.close()
        _LIVE.add(self)
        deadline = time.monotonic() + 10
        while True:
            try:
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.connect(str(self.run_dir / "shell.sock"))
                break
            except OSError:
                s.close()
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise LabBootError(self._why("QEMU did not open its serial socket")) from None
                time.sleep(0.05)
        self._chan = Channel(s, self.run_dir / "ttyS1.log", self._why, batch=bool(self.job))

    def start(self) -> LabVM:
        """Boot and wait until the guest's command channel answers (interactive mode).

        A boot whose kernel dies before userspace answers (:data:`_BOOT_DEATH` on the
        console) is retried once; the dead boot's console is kept as
        ``<run dir>.failed-boot.log`` and the retry is announced on stderr.
        """
        if self.job:
            raise LabError("a VM with job= runs in batch mode: use run_batch()")
        for attempt in (1, 2):
            self._launch()
            try:
                self._channel().wait_event("READY", self.boot_timeout, "boot")
                self._resync()
                return self
            except LabBootError:
                self.stop()
                if attempt == 2 or not self._kernel_died():
                    raise
                kept = self.run_dir.with_name(self.run_dir.name + ".failed-boot.log")
                shutil.copy2(self.console_log, kept)
                print(
                    f"lab: {self.name}: the kernel died during boot (console kept in {kept});"
                    " retrying once",
                    file=sys.stderr,
                )
            except BaseException:
                self.stop()
                raise
        raise AssertionError("unreachable")

    def _kernel_died(self) -> bool:
        """The console shows a panic/oops (the kernel died, not a lab or guest-script fault)."""
        try:
            return bool(_BOOT_DEATH.search(self.console_log.read_text(errors="replace")))
        except OSError:
            return False

    def _resync(self) -> None:
        """The first bytes after READY can be lost: retry a no-op until one answers."""
        for _ in range(10):
            h = self._channel().send("true", prefix=b"\n\n")
            try:
                self.wait(h, timeout=5)
                return
            except LabTimeout:
                continue
        raise LabBootError(self._why("the guest command channel never answered"))

    def stop(self) -> None:
        """Kill QEMU (by pid, whole process group) and reap it; delete NVDIMM/project files."""
        if self.proc is not None and self.proc.poll() is None:
            try:
                qmp.qmp_execute(self.qmp_sock, "quit", timeout=2)
            except (qmp.QMPError, OSError):
                pass
            try:
                self.proc.wait(timeout=3)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self._chan is not None:
            self._chan.close()
        for f in [*self.run_dir.glob("nvdimm*.img"), self.run_dir / "project.img"]:
            f.unlink(missing_ok=True)
        if self._claim is not None:
            rundirs.release(self._claim)
            self._claim = None
        _LIVE.discard(self)

    def __enter__(self) -> LabVM:
        return self if self.job else self.start()

    def __exit__(
        self, et: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ serial channel

    def _channel(self) -> Channel:
        if self._chan is None:
            raise LabError(f"vm {self.name} was not started")
        return self._chan

    def _why(self, msg: str) -> str:
        tail = ""
        if self.console_log.exists():
            tail = " | ".join(
                self.console_log.read_text(errors="replace").strip().splitlines()[-12:]
            )
        rc = self.proc.poll() if self.proc else None
        return f"{msg} (vm {self.name}, qemu rc {rc}; console {self.console_log}): {tail}"

    def send(self, cmd: str) -> int:
        """Start ``cmd`` (bash) in the guest without waiting; returns a handle for :meth:`wait`."""
        return self._channel().send(cmd)

    def wait(self, handle: int, timeout: float = 60.0) -> Result:
        """Collect the result of :meth:`send`; raise LabTimeout after ``timeout`` seconds."""
        return self._channel().wait(handle, timeout)

    def run(self, cmd: str, timeout: float = 60.0, check: bool = False) -> Result:
        """Run ``cmd`` with bash in the guest (cwd /root, stdin /dev/null) and wait for it."""
        r = self.wait(self.send(cmd), timeout)
        return r.check() if check else r

    def put(
        self, local: str | Path, remote: str, mode: int | None = None, timeout: float = 120.0
    ) -> None:
        """Copy a host file into the guest.

        Up to 32 KiB it goes over ttyS1 (the emulated UART takes only ~10 KB/s host -> guest
        under TCG); bigger files go on a small ext4 disk hot-plugged over QMP
        (:func:`lab.disks.put_via_disk`).
        """
        data = Path(local).read_bytes()
        q = shlex.quote(remote)
        if len(data) > 32 * 1024:
            put_via_disk(self, Path(local), remote, timeout, tag=f"put{next(_SEQ)}")
        else:
            b64 = base64.b64encode(data).decode()
            self.run(f"base64 -d > {q} <<'@@EOF@@'\n{b64}\n@@EOF@@", timeout, check=True)
        if mode is not None:
            self.run(f"chmod {mode:o} {q}", timeout, check=True)

    def get(self, remote: str, timeout: float = 120.0) -> bytes:
        """The bytes of a (small) guest file."""
        return self.run(f"cat {shlex.quote(remote)}", timeout, check=True).raw

    def qmp(self, cmd: str, /, timeout: float = 60.0, **args: Any) -> Any:
        """Execute one QMP command (e.g. ``vm.qmp("query-memory-devices")``).

        Every keyword but ``timeout`` is a QMP argument, ``path`` included:
        ``vm.qmp("qom-set", path="vm0", property="requested-size", value=200 << 20)``.
        """
        return qmp.qmp_execute(self.qmp_sock, cmd, timeout=timeout, **args)

    def dump(self, out: str | Path, fmt: str = "elf", timeout: float = 300.0) -> Path:
        """QMP ``dump-guest-memory`` into ``out`` (RAM + NVDIMM: keep the guest small)."""
        qmp.dump_guest_memory(self.qmp_sock, out, fmt, timeout)
        return Path(out)

    def serial_text(self) -> str:
        """Everything the guest wrote on ttyS1 so far (also in ``run/<name>/ttyS1.log``)."""
        return (self.run_dir / "ttyS1.log").read_bytes().decode(errors="replace")

    def wait_exit(self, timeout: float = 300.0) -> int:
        """Wait until QEMU exits by itself (guest power-off, ``-no-reboot``); returns its rc.

        Then cleans up like :meth:`stop`. Raises LabTimeout (and kills QEMU) on expiry.
        """
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise LabTimeout(self._why(f"QEMU still running after {timeout:.0f}s")) from None
        self.stop()
        return rc

    def run_batch(self, timeout: float = 300.0) -> Result:
        """Batch mode (``job=``): boot, run the job, power off. stdout+stderr are merged."""
        if not self.job:
            raise LabError("run_batch() needs job=")
        self._launch()
        try:
            ev = self._channel().wait_event("JOB-RC-", timeout, "batch job")
            rc = int(ev.rsplit("-", 1)[1])
            assert self.proc is not None
            self.proc.wait(timeout=30)
        finally:
            self.stop()
        out = self._channel().batch_output()
        return Result(out.decode(errors="replace"), "", rc, out)


@atexit.register
def _reap_all() -> None:
    for vm in list(_LIVE):
        vm.stop()
