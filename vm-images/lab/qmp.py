"""A small QMP (QEMU Machine Protocol) client, importable and usable as a CLI.

One connection per call: QEMU's QMP socket serves one client at a time, and gdb must be
able to run ``python3 -m lab.qmp SOCK dump FILE elf`` from its ``shell``
while the gdbstub holds the guest (lab-notes §9). Asynchronous events are skipped.

CLI::

    python -m lab.qmp SOCK dump FILE [elf|kdump-zlib|...]
    python -m lab.qmp SOCK execute COMMAND ['{"json": "arguments"}']
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = ("QMPError", "dump_guest_memory", "main", "qmp_execute", "sparse_sink")


class QMPError(RuntimeError):
    """QEMU answered with an error, or the socket failed or timed out."""


class _Conn:
    def __init__(self, path: Path, timeout: float) -> None:
        self.deadline = time.monotonic() + timeout
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        while True:
            try:
                self.sock.settimeout(max(0.1, self.deadline - time.monotonic()))
                self.sock.connect(str(path))
                break
            except (FileNotFoundError, ConnectionRefusedError) as e:
                if time.monotonic() > self.deadline:
                    raise QMPError(f"cannot connect to QMP socket {path}: {e}") from e
                time.sleep(0.1)
        self.buf = b""
        self.recv()  # greeting
        self.call("qmp_capabilities", {})

    def recv(self) -> dict[str, Any]:
        while b"\n" not in self.buf:
            self.sock.settimeout(max(0.1, self.deadline - time.monotonic()))
            try:
                chunk = self.sock.recv(65536)
            except TimeoutError as e:
                raise QMPError("QMP timed out") from e
            if not chunk:
                raise QMPError("QMP connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)  # type: ignore[no-any-return]

    def call(self, cmd: str, args: dict[str, Any]) -> Any:
        msg: dict[str, Any] = {"execute": cmd}
        if args:
            msg["arguments"] = args
        self.sock.sendall(json.dumps(msg).encode() + b"\n")
        while True:
            r = self.recv()
            if "event" in r:
                continue
            if "error" in r:
                err = r["error"]
                raise QMPError(f"QMP {cmd}: {err.get('class')}: {err.get('desc')}")
            return r.get("return")

    def close(self) -> None:
        self.sock.close()


def qmp_execute(sock: Path | str, cmd: str, /, timeout: float = 60.0, **args: Any) -> Any:
    """Execute one QMP command on the socket ``sock`` and return its ``return`` value.

    ``sock`` and ``cmd`` are positional-only, so that every other keyword, ``path`` too
    (``qom-set``'s object path), is a QMP argument.
    """
    conn = _Conn(Path(sock), timeout)
    try:
        return conn.call(cmd, args)
    finally:
        conn.close()


def dump_guest_memory(
    path: Path | str, out: Path | str, fmt: str = "elf", timeout: float = 300.0
) -> None:
    """``dump-guest-memory`` (synchronous) into ``out``: needs ``-device vmcoreinfo``.

    An ELF dump goes through :func:`sparse_sink`: it holds every byte of RAM and NVDIMM, and
    the untouched (zero) part of a sparse NVDIMM must not take disk space.
    """
    if fmt != "elf":
        qmp_execute(path, "dump-guest-memory", timeout=timeout, paging=False,
                    protocol=f"file:{Path(out).resolve()}", format=fmt)  # fmt: skip
        return
    with sparse_sink(out, timeout) as target:
        qmp_execute(path, "dump-guest-memory", timeout=timeout, paging=False,
                    protocol=f"file:{target}", format=fmt)  # fmt: skip


def _unblock(fifo: Path, dd: subprocess.Popen[bytes], patience: float = 10.0) -> None:
    """QEMU may never have opened the FIFO: a writer that opens and closes gives dd EOF.
    Opening fails (ENXIO) until dd has opened its end, so retry while dd runs."""
    deadline = time.monotonic() + patience
    while dd.poll() is None and time.monotonic() < deadline:
        try:
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
            return
        except OSError:
            time.sleep(0.02)


@contextlib.contextmanager
def sparse_sink(out: Path | str, timeout: float = 300.0) -> Iterator[Path]:
    """A FIFO for QEMU to write a dump into; the bytes land in ``out`` as a sparse file.

    ``dd conv=sparse`` seeks over all-zero blocks instead of writing them: an ELF dump of a
    guest with a 1 TiB sparse NVDIMM takes the disk space of its non-zero pages only. drgn,
    crash and makedumpfile read it like any file. Raises QMPError when the copy fails; ``out``
    is removed then.
    """
    out = Path(out).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    out.unlink(missing_ok=True)
    fifo = out.with_name(out.name + ".fifo")
    fifo.unlink(missing_ok=True)
    os.mkfifo(fifo, 0o600)
    dd = subprocess.Popen(
        ["dd", f"if={fifo}", f"of={out}", "bs=1M", "iflag=fullblock", "conv=sparse",
         "status=none"],
        stderr=subprocess.PIPE,
    )  # fmt: skip
    ok = False
    try:
        yield fifo
        ok = True
    finally:
        if not ok:
            _unblock(fifo, dd)
        try:
            rc = dd.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            dd.kill()
            rc = dd.wait()
        err = dd.stderr.read().decode(errors="replace").strip() if dd.stderr else ""
        if dd.stderr:
            dd.stderr.close()
        fifo.unlink(missing_ok=True)
        if not ok or rc != 0:
            out.unlink(missing_ok=True)
        if ok and rc != 0:
            raise QMPError(f"copying the dump into {out} failed (dd rc {rc}): {err}")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point (see the module docstring)."""
    a = list(sys.argv[1:] if argv is None else argv)
    try:
        if len(a) in (3, 4) and a[1] == "dump":
            dump_guest_memory(a[0], a[2], a[3] if len(a) == 4 else "elf")
            return 0
        if len(a) in (3, 4) and a[1] == "execute":
            ret = qmp_execute(a[0], a[2], **(json.loads(a[3]) if len(a) == 4 else {}))
            print(json.dumps(ret, indent=1))
            return 0
    except QMPError as e:
        print(f"qmp: error: {e}", file=sys.stderr)
        return 1
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
