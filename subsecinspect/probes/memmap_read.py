"""Front end of ``bpf/memmap_read.bpf.c``: read kernel virtual memory through BPF.

The one user is :mod:`subsecinspect.kernel.livemem`, which serves the device-resident
memmaps that ``/proc/kcore`` cannot (README, "Live reads of device memmaps"). The program
is loaded only when such a memmap exists, attached to the reader's own ``getppid()``
(``syscalls:sys_enter_getppid``, filtered by tgid) and detached by :meth:`MemmapReader.close`,
which every caller runs in a ``finally``. Each block comes back with one
``bpf_probe_read_kernel()`` return code per chunk: a fault is a code, never zeros.

The layout of the request and the block is ``bpf/memmap_read.h``; the constants below
mirror it (tests/unit/test_probes_memmap_read.py parses the header).
"""

from __future__ import annotations

import ctypes
import errno
import os
from collections.abc import Callable
from typing import Any

from subsecinspect.probes.bcc_env import (
    captured_stderr,
    compile_abandonable,
    first_error,
    headers_missing,
)

__all__ = (
    "CHUNK",
    "CHUNKS",
    "NOT_ASKED",
    "MemmapReader",
    "ReaderUnavailable",
    "errno_text",
    "unavailable_reason",
)

_SRC = "memmap_read.bpf.c"
#: ``MEMMAP_READ_CHUNK``, ``MEMMAP_READ_CHUNKS``, ``MEMMAP_READ_NOT_ASKED`` (bpf/memmap_read.h).
CHUNK = 4096
CHUNKS = 64
NOT_ASKED = 1
_LOCKDOWN = "/sys/kernel/security/lockdown"
_TRACEFS_EVENT = (
    "/sys/kernel/tracing/events/syscalls/sys_enter_getppid",
    "/sys/kernel/debug/tracing/events/syscalls/sys_enter_getppid",
)
_BPF_DISABLED = "/proc/sys/kernel/unprivileged_bpf_disabled"


class ReaderUnavailable(Exception):
    """The BPF reader cannot run here; ``str()`` says why, in a few words."""


class _Refused(Exception):
    """bcc could not compile or load the program (its message is the argument)."""


def errno_text(rc: int) -> str:
    """``-14`` -> ``"EFAULT"`` (the name of a ``bpf_probe_read_kernel()`` error)."""
    return errno.errorcode.get(-rc, f"errno {-rc}")


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def unavailable_reason() -> str:
    """Why the reader cannot be loaded on this system, or ``""`` if nothing is known against it.

    Checked before bcc is asked: root (loading a tracing program needs CAP_BPF and
    CAP_PERFMON or CAP_SYS_ADMIN), bcc, the syscall tracepoint, kernel lockdown (in
    ``confidentiality`` mode ``bpf_probe_read_kernel()`` is refused,
    security/lockdown/lockdown.c LOCKDOWN_BPF_READ_KERNEL), the headers bcc compiles
    against.
    """
    if os.geteuid() != 0:
        return "not root (loading a BPF program needs CAP_BPF/CAP_SYS_ADMIN)"
    try:
        import bcc  # noqa: F401
    except ImportError:
        return "bcc is not installed (Debian: python3-bpfcc)"
    if "[confidentiality]" in _read(_LOCKDOWN):
        return "kernel lockdown=confidentiality forbids bpf_probe_read_kernel()"
    if not any(os.path.isdir(p) for p in _TRACEFS_EVENT):
        return "no syscalls:sys_enter_getppid tracepoint (tracefs not mounted?)"
    return headers_missing()


class MemmapReader:
    """A loaded ``memmap_read`` program; :meth:`read` copies blocks of kernel memory."""

    def __init__(self, bpf: Any) -> None:
        self._bpf: Any = bpf
        self._req = bpf["memmap_req"]
        self._blk = bpf["memmap_block"]
        self._zero = ctypes.c_int(0)
        self._seq = 0
        #: BPF calls made and bytes asked for (the snapshot's stats).
        self.calls = 0
        self.bytes = 0

    @classmethod
    def load(cls, stop: Callable[[], int | None] = lambda: None) -> MemmapReader:
        """Compile, load and attach the program.

        *stop* is polled while bcc compiles (long under TCG): a signal number makes the
        load give up (:class:`~subsecinspect.probes.bcc_env.CompileAbandoned`); so does a
        KeyboardInterrupt or SIGTERM, and a program the abandoned compile still loads is
        cleaned up by the compiling thread.

        :raises ReaderUnavailable: not possible here, or the program was refused.
        """
        reason = unavailable_reason()
        if reason:
            raise ReaderUnavailable(reason)
        from bcc import BPF

        from subsecinspect.probes.subsec_trace import bpf_dir

        src = str(bpf_dir() / _SRC).encode()
        cflags = [f"-I{bpf_dir()}", f"-DREADER_TGID={os.getpid()}"]
        abandoned = False

        def build() -> Any:
            try:
                b = BPF(src_file=src, cflags=cflags)
            except Exception as e:  # clang or the verifier said no
                raise _Refused(str(e)) from None
            if abandoned:  # the caller gave up meanwhile: leave nothing loaded
                b.cleanup()
            return b

        with captured_stderr() as log:
            try:
                bpf = compile_abandonable(build, stop)
            except _Refused as e:
                detail = first_error(log.text) or f": {e}"
                raise ReaderUnavailable(f"BPF program memmap_read refused{detail}") from None
            except BaseException:  # a signal (KeyboardInterrupt, SIGTERM, CompileAbandoned)
                abandoned = True
                raise
        reader = cls(bpf)
        try:
            reader._check()
        except BaseException:
            reader.close()
            raise
        return reader

    def _check(self) -> None:
        """One empty request: the program must answer (the tracepoint fires for us)."""
        self._ask(0, 0)

    def _ask(self, address: int, nchunks: int) -> Any:
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        req = self._req.Leaf()
        req.addr, req.nchunks, req.seq = address, nchunks, self._seq
        self._req[self._zero] = req
        os.getppid()  # the trigger (see bpf/memmap_read.bpf.c)
        blk = self._blk[self._zero]
        if blk.seq != self._seq:
            raise ReaderUnavailable("BPF program memmap_read did not run for its request")
        return blk

    def read(self, address: int, nchunks: int) -> tuple[bytes, tuple[int, ...]]:
        """*nchunks* chunks of :data:`CHUNK` bytes from the kernel virtual *address*.

        :return: the bytes and one return code per chunk (0, or ``-errno``; a failed
            chunk's bytes are zero and must not be used).
        """
        if not 0 < nchunks <= CHUNKS or address % CHUNK:
            raise ValueError(f"bad BPF read request {address:#x} x {nchunks}")
        blk = self._ask(address, nchunks)
        self.calls += 1
        self.bytes += nchunks * CHUNK
        data = ctypes.string_at(ctypes.addressof(blk.data), nchunks * CHUNK)
        return data, tuple(blk.rc[:nchunks])

    def close(self) -> None:
        """Detach and unload (idempotent)."""
        if self._bpf is not None:
            bpf, self._bpf = self._bpf, None
            bpf.cleanup()
