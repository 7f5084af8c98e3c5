"""bpf(2) through ctypes: the few commands that load and run a program bcc compiled before.

bcc compiles C at every ``BPF()``; under TCG that is seconds to minutes (the tracer's
compile: README, Tracing), and ``import bcc`` alone maps libbcc with its LLVM. The live
memmap reader (:mod:`.memmap_read`) needs neither after its first run: it keeps the
instructions bcc produced and loads them again with the commands below, which is all
libbpf would do for it. The kernel's verifier checks the program at every load.

Layouts: ``union bpf_attr`` in include/uapi/linux/bpf.h (the fields used here are the
same from v5.10 on). x86_64 only, as the rest of the tool.
"""

from __future__ import annotations

import ctypes
import os
import struct

__all__ = (
    "BPF_MAP_TYPE_ARRAY",
    "BPF_PROG_TYPE_RAW_TRACEPOINT",
    "BpfError",
    "map_create",
    "map_lookup",
    "map_update",
    "prog_load",
    "prog_test_run",
)

_SYS_BPF = 321  # x86_64
_MAP_CREATE, _MAP_LOOKUP_ELEM, _MAP_UPDATE_ELEM, _PROG_LOAD, _PROG_TEST_RUN = 0, 1, 2, 5, 10
BPF_MAP_TYPE_ARRAY = 2
BPF_PROG_TYPE_RAW_TRACEPOINT = 17
#: ``sizeof(union bpf_attr)`` we pass: the kernel accepts a shorter or longer attr whose
#: bytes past what it knows are zero (kernel/bpf/syscall.c bpf_check_uarg_tail_zero()).
_ATTR_SIZE = 128
_LOG_SIZE = 1 << 20

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class BpfError(OSError):
    """A bpf(2) command failed; ``log`` holds the verifier's text for a refused program."""

    def __init__(self, what: str, err: int, log: str = "") -> None:
        super().__init__(err, f"{what}: {os.strerror(err)}")
        self.log = log


def _bpf(cmd: int, attr: ctypes.Array[ctypes.c_char], what: str) -> int:
    rc = _libc.syscall(_SYS_BPF, cmd, attr, _ATTR_SIZE)
    if rc < 0:
        raise BpfError(what, ctypes.get_errno())
    return int(rc)


def _attr(fmt: str, *values: int | bytes) -> ctypes.Array[ctypes.c_char]:
    buf = ctypes.create_string_buffer(_ATTR_SIZE)
    struct.pack_into(fmt, buf, 0, *values)
    return buf


def map_create(map_type: int, key_size: int, value_size: int, max_entries: int,
               name: str) -> int:
    """``BPF_MAP_CREATE``: a new map's file descriptor."""
    attr = _attr("<IIIIIII16s", map_type, key_size, value_size, max_entries, 0, 0, 0,
                 name.encode()[:15])
    return _bpf(_MAP_CREATE, attr, f"creating map {name}")


def map_update(fd: int, key: ctypes.Array[ctypes.c_char] | ctypes.c_uint32,
               value: ctypes.Array[ctypes.c_char]) -> None:
    """``BPF_MAP_UPDATE_ELEM`` (``BPF_ANY``)."""
    attr = _attr("<IIQQQ", fd, 0, ctypes.addressof(key), ctypes.addressof(value), 0)
    _bpf(_MAP_UPDATE_ELEM, attr, "updating a map")


def map_lookup(fd: int, key: ctypes.Array[ctypes.c_char] | ctypes.c_uint32,
               value: ctypes.Array[ctypes.c_char]) -> None:
    """``BPF_MAP_LOOKUP_ELEM`` into *value* (sized by the caller)."""
    attr = _attr("<IIQQQ", fd, 0, ctypes.addressof(key), ctypes.addressof(value), 0)
    _bpf(_MAP_LOOKUP_ELEM, attr, "reading a map")


def prog_load(prog_type: int, insns: bytes, name: str, license: str = "GPL") -> int:
    """``BPF_PROG_LOAD``: the program's file descriptor.

    Loaded without a verifier log first: a log that fills its buffer fails the load with
    ENOSPC even when the program is fine on kernels whose verifier log does not rotate
    (seen on Debian 5.10 and 6.1: the unrolled reader's trace overflows 64 KiB; v6.4 made
    the log rotating). Only a refused program is
    loaded again, with the log, to say why.

    :raises BpfError: refused; ``log`` has the verifier's output (its last lines).
    """
    code = ctypes.create_string_buffer(insns, len(insns))
    lic = ctypes.create_string_buffer(license.encode())
    attr = _attr("<IIQQIIQII16s", prog_type, len(insns) // 8, ctypes.addressof(code),
                 ctypes.addressof(lic), 0, 0, 0, 0, 0, name.encode()[:15])
    rc = _libc.syscall(_SYS_BPF, _PROG_LOAD, attr, _ATTR_SIZE)
    if rc >= 0:
        return int(rc)
    err = ctypes.get_errno()
    log = ctypes.create_string_buffer(_LOG_SIZE)
    # log_level 1 only: on kernels without rotation the buffer keeps the first part of
    # the trace, so the reason may be cut; the error code is the kernel's first answer.
    attr = _attr("<IIQQIIQII16s", prog_type, len(insns) // 8, ctypes.addressof(code),
                 ctypes.addressof(lic), 1, _LOG_SIZE, ctypes.addressof(log), 0, 0,
                 name.encode()[:15])
    rc2 = _libc.syscall(_SYS_BPF, _PROG_LOAD, attr, _ATTR_SIZE)
    if rc2 >= 0:  # refused without a log, accepted with one: report the first answer
        os.close(int(rc2))
    raise BpfError(f"loading program {name}", err, log.value.decode(errors="replace"))


def prog_test_run(fd: int) -> int:
    """``BPF_PROG_TEST_RUN`` with no context (a raw tracepoint program that reads none).

    :return: the program's return value.
    """
    attr = _attr("<II", fd, 0)
    _bpf(_PROG_TEST_RUN, attr, "running the program")
    return int(struct.unpack_from("<I", attr, 4)[0])
