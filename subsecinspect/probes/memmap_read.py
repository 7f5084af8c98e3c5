"""Front end of ``bpf/memmap_read.bpf.c``: read kernel virtual memory through BPF.

The one user is :mod:`subsecinspect.kernel.livemem`, which serves the device-resident
memmaps that ``/proc/kcore`` cannot (README, "Live reads of device memmaps"). The program
is a raw tracepoint program that is never attached: each read writes the request into a
map and runs the program once with ``BPF_PROG_TEST_RUN`` (:mod:`.bpfsys`), so nothing of
ours is ever hooked into the kernel, and :meth:`MemmapReader.close` (or the process's exit)
unloads it. Each block comes back with one ``bpf_probe_read_kernel()`` return code per
chunk: a fault is a code, never zeros.

bcc compiles the C once per source, kernel release and user: its instructions are cached
under ``$XDG_CACHE_HOME/subsecinspect/bpf`` (default ``~/.cache``) with the places that
name a map, and later runs load them with bpf(2) alone (no clang, no ``import bcc``; the
verifier checks them at every load). The layouts of the request and the block are
``bpf/memmap_read.h``; :class:`Request` and :class:`Block` mirror them
(tests/readers/test_livemem_source.py parses the header).
"""

from __future__ import annotations

import ctypes
import errno
import hashlib
import json
import os
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

from subsecinspect.probes import bpfsys
from subsecinspect.probes.bcc_env import captured_stderr, compile_abandonable, first_error
from subsecinspect.probes.loading import bpf_dir

__all__ = (
    "CHUNK",
    "CHUNKS",
    "NOT_ASKED",
    "Block",
    "MemmapReader",
    "ReaderUnavailable",
    "Request",
    "errno_text",
    "unavailable_reason",
)

_SRC, _HDR, _FUNC = "memmap_read.bpf.c", "memmap_read.h", "memmap_read"
_MAPS = ("memmap_req", "memmap_block")
#: ``MEMMAP_READ_CHUNK``, ``MEMMAP_READ_CHUNKS``, ``MEMMAP_READ_NOT_ASKED`` (bpf/memmap_read.h).
CHUNK = 4096
CHUNKS = 64
NOT_ASKED = 1
_LOCKDOWN = "/sys/kernel/security/lockdown"
#: Bumped when the cache file's meaning changes.
_CACHE_FORMAT = 1
#: ``BPF_LD | BPF_IMM | BPF_DW`` with ``src_reg = BPF_PSEUDO_MAP_FD``: a map reference.
_LD_IMM64, _PSEUDO_MAP_FD = 0x18, 1


class Request(ctypes.Structure):
    """``struct memmap_read_req``."""

    _fields_ = (("addr", ctypes.c_uint64), ("nchunks", ctypes.c_uint32),
                ("seq", ctypes.c_uint32))  # fmt: skip


class Block(ctypes.Structure):
    """``struct memmap_read_block``."""

    _fields_ = (("rc", ctypes.c_int32 * CHUNKS), ("seq", ctypes.c_uint32),
                ("pad", ctypes.c_uint32), ("data", ctypes.c_uint8 * (CHUNKS * CHUNK)))  # fmt: skip


class ReaderUnavailable(Exception):
    """The BPF reader cannot run here; ``str()`` says why, in a few words."""


class _Refused(Exception):
    """bcc could not compile the program (its message is the argument)."""


def errno_text(rc: int) -> str:
    """``-14`` -> ``"EFAULT"`` (the name of a ``bpf_probe_read_kernel()`` error)."""
    return errno.errorcode.get(-rc, f"errno {-rc}")


def unavailable_reason() -> str:
    """Why the reader cannot run on this system, or ``""`` if nothing is known against it.

    Root (loading a tracing program needs CAP_BPF and CAP_PERFMON, or CAP_SYS_ADMIN), and
    kernel lockdown (``confidentiality`` refuses ``bpf_probe_read_kernel()``,
    security/lockdown/lockdown.c LOCKDOWN_BPF_READ_KERNEL). bcc is asked only when the
    program is not cached yet.
    """
    if os.geteuid() != 0:
        return "not root (loading a BPF program needs CAP_BPF/CAP_SYS_ADMIN)"
    try:
        with open(_LOCKDOWN) as f:
            if "[confidentiality]" in f.read():
                return "kernel lockdown=confidentiality forbids bpf_probe_read_kernel()"
    except OSError:
        pass
    return ""


def _cache_file(source: bytes) -> Path:
    key = hashlib.sha256(source + os.uname().release.encode()
                         + str(_CACHE_FORMAT).encode()).hexdigest()[:20]  # fmt: skip
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "subsecinspect" / "bpf" / f"{_FUNC}-{key}.json"


def _source() -> bytes:
    """The C the program is built from (its cache key).

    :raises ReaderUnavailable: the sources are not installed (a wheel unpacked without its
        data files has no ``share/subsecinspect/bpf``).
    """
    d = bpf_dir()
    try:
        return (d / _SRC).read_bytes() + b"\0" + (d / _HDR).read_bytes()
    except OSError as e:
        raise ReaderUnavailable(f"its BPF source is not installed ({e.strerror}: "
                                f"{e.filename})") from None


def _compile(stop: Callable[[], int | None]) -> tuple[bytes, list[tuple[int, str]]]:
    """bcc -> the function's instructions and ``(instruction index, map name)`` pairs."""
    try:
        from bcc import BPF
    except ImportError:
        raise ReaderUnavailable("bcc is not installed (Debian: python3-bpfcc)") from None
    from subsecinspect.probes.bcc_env import headers_missing

    missing = headers_missing()
    if missing:
        raise ReaderUnavailable(missing)
    src = str(bpf_dir() / _SRC).encode()

    def build() -> tuple[bytes, list[tuple[int, str]]]:
        try:
            b = BPF(src_file=src, cflags=[f"-I{bpf_dir()}"])
        except Exception as e:
            raise _Refused(str(e)) from None
        try:
            insns = bytes(b.dump_func(_FUNC.encode()))
            names = {b[name].map_fd: name for name in _MAPS}
        finally:
            b.cleanup()  # the maps die with it; the cached copy names them
        relocs = []
        for i in range(len(insns) // 8):
            code, regs, _off, imm = struct.unpack_from("<BBhi", insns, i * 8)
            if code == _LD_IMM64 and regs >> 4 == _PSEUDO_MAP_FD:
                relocs.append((i, names[imm]))
        return insns, relocs

    with captured_stderr() as log:
        try:
            out: tuple[bytes, list[tuple[int, str]]] = compile_abandonable(build, stop)
        except _Refused as e:
            raise ReaderUnavailable(f"BPF program {_FUNC} refused"
                                    f"{first_error(log.text) or f': {e}'}") from None
    return out


def _load_program(stop: Callable[[], int | None]) -> tuple[bytes, list[tuple[int, str]]]:
    """The cached instructions, compiling (and caching) them first if needed."""
    path = _cache_file(_source())
    try:
        d = json.loads(path.read_text())
        return bytes.fromhex(d["insns"]), [(int(i), str(n)) for i, n in d["maps"]]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    insns, relocs = _compile(stop)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"insns": insns.hex(), "maps": relocs}))
        os.replace(tmp, path)  # a reader never sees half a file
    except OSError:
        pass  # an unwritable cache only costs the next run a compile
    return insns, relocs


def _raise_memlock() -> None:
    """Lift RLIMIT_MEMLOCK, as bcc does when it is imported: before v5.11 (memcg accounting
    of BPF memory) maps are charged against it, and the 256 KiB block map exceeds the
    default (Debian 5.10 refused it with EPERM once bcc, which lifts it, was not imported)."""
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK,
                           (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (OSError, ValueError):
        pass  # the map creation then says EPERM itself


def _verifier_reason(log: str) -> str:
    """``" (<the verifier's verdict>)"``: its last line before the ``processed N insns``
    statistics (kernel/bpf/verifier.c prints the reason last), or ``""``."""
    lines = [ln.strip() for ln in log.splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith(("processed ", "verification time"))]
    return f" ({lines[-1][:200]})" if lines else ""


class MemmapReader:
    """A loaded ``memmap_read`` program; :meth:`read` copies blocks of kernel memory."""

    def __init__(self, prog_fd: int, map_fds: dict[str, int]) -> None:
        self._prog: int | None = prog_fd
        self._maps = map_fds
        self._key = ctypes.c_uint32(0)
        self._req = Request()
        self._blk = Block()
        self._seq = 0
        #: BPF calls made and bytes asked for (the snapshot's stats).
        self.calls = 0
        self.bytes = 0

    @classmethod
    def load(cls, stop: Callable[[], int | None] = lambda: None) -> MemmapReader:
        """Load the program (compiling it with bcc if it is not cached) and its two maps.

        *stop* is polled while bcc compiles: a signal number makes the load give up
        (:class:`~subsecinspect.probes.bcc_env.CompileAbandoned`); KeyboardInterrupt and
        SIGTERM do too, and the compiling thread releases what bcc made.

        :raises ReaderUnavailable: not possible here, or the program was refused.
        """
        reason = unavailable_reason()
        if reason:
            raise ReaderUnavailable(reason)
        insns, relocs = _load_program(stop)
        _raise_memlock()
        fds: dict[str, int] = {}
        try:
            fds["memmap_req"] = bpfsys.map_create(bpfsys.BPF_MAP_TYPE_ARRAY, 4,
                                                  ctypes.sizeof(Request), 1, "memmap_req")
            fds["memmap_block"] = bpfsys.map_create(bpfsys.BPF_MAP_TYPE_ARRAY, 4,
                                                    ctypes.sizeof(Block), 1, "memmap_block")
            code = bytearray(insns)
            for i, name in relocs:
                struct.pack_into("<i", code, i * 8 + 4, fds[name])
            prog = bpfsys.prog_load(bpfsys.BPF_PROG_TYPE_RAW_TRACEPOINT, bytes(code), _FUNC)
        except bpfsys.BpfError as e:
            for fd in fds.values():
                os.close(fd)
            raise ReaderUnavailable(f"BPF program {_FUNC} refused: {e.strerror}"
                                    f"{_verifier_reason(e.log)}") from None
        reader = cls(prog, fds)
        try:
            reader._ask(0, 0)  # the program answers its own sequence number
        except BaseException:
            reader.close()
            raise
        return reader

    def _ask(self, address: int, nchunks: int) -> Block:
        assert self._prog is not None, "reader closed"
        self._seq = (self._seq + 1) & 0xFFFFFFFF
        self._req.addr, self._req.nchunks, self._req.seq = address, nchunks, self._seq
        try:
            bpfsys.map_update(self._maps["memmap_req"], self._key, self._req)  # type: ignore[arg-type]
            bpfsys.prog_test_run(self._prog)
            bpfsys.map_lookup(self._maps["memmap_block"], self._key, self._blk)  # type: ignore[arg-type]
        except bpfsys.BpfError as e:
            raise ReaderUnavailable(str(e)) from None
        if self._blk.seq != self._seq:
            raise ReaderUnavailable(f"BPF program {_FUNC} did not answer its request")
        return self._blk

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
        """Unload the program and its maps (idempotent)."""
        fds: list[Any] = [self._prog, *self._maps.values()]
        self._prog, self._maps = None, {}
        for fd in fds:
            if fd is not None:
                os.close(fd)
