"""Open a target kernel: live ``/proc/kcore`` or a vmcore (+ vmlinux) into a ``drgn.Program``.

This is the only place a :class:`drgn.Program` is made. Every failure becomes
one :mod:`subsecinspect.errors` exception with an actionable message: not
root, no /proc/kcore, missing or mismatched vmlinux (VMCOREINFO BUILD-ID and
OSRELEASE are checked against the file), truncated or unrecognised vmcores
(QEMU's flattened kdump format included).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import struct
from dataclasses import dataclass
from typing import TYPE_CHECKING, BinaryIO

from subsecinspect.errors import DebugInfoError, OptionError, TargetError
from subsecinspect.snapshot.model import TargetInfo

if TYPE_CHECKING:
    import drgn

__all__ = (
    "DEBUGINFO_MODES",
    "DRGN_PLUGINS_DEFAULT",
    "KCORE",
    "DumpFile",
    "elf_build_id",
    "inspect_dump",
    "open_target",
)

KCORE = "/proc/kcore"
#: ``--debuginfo`` values: DWARF when found else BTF, a vmlinux only, BTF + kallsyms only.
DEBUGINFO_MODES = ("auto", "dwarf", "btf")
_ELF_MAGIC = b"\x7fELF"
_KDUMP_MAGIC = b"KDUMP   "
_FLAT_MAGIC = b"makedumpfile"
_PT_LOAD = 1
_ET_CORE = 4
#: drgn (since 0.0.31) loads its plugins at every ``set_kernel()`` / ``set_core_dump()``:
#: importlib.metadata's entry-point scan and its own CLI commands, registered as plugins
#: (``builtin_commands``, ``crash_commands``): most of a TCG guest's start-up (README §
#: Performance: ``(a')``, drgn's load without plugins, against ``(a)``), for
#: commands subsecinspect never runs. :func:`open_target` therefore sets
#: ``DRGN_DISABLE_PLUGINS=*`` unless the environment already sets it: ``DRGN_PLUGINS=name``
#: still enables a named plugin, and ``DRGN_DISABLE_PLUGINS=`` (empty) loads them all.
DRGN_PLUGINS_DEFAULT = "*"


@dataclass(frozen=True, slots=True)
class DumpFile:
    """What the vmcore header says: its format and physical coverage."""

    format: str  # "elf" or "kdump"
    #: Physical ``(start, end)`` byte ranges held (ELF PT_LOAD with file data).
    segments: tuple[tuple[int, int], ...] = ()
    max_pfn: int | None = None


def _elf_phdrs(f: BinaryIO, size: int) -> list[tuple[int, int, int, int, int, int]]:
    """``(p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz)`` of an ELF64 LE file."""
    hdr = f.read(64)
    if len(hdr) < 64 or hdr[4] != 2 or hdr[5] != 1:
        raise TargetError("unsupported ELF vmcore (only 64-bit little-endian)")
    e_phoff, = struct.unpack_from("<Q", hdr, 32)
    e_phentsize, e_phnum = struct.unpack_from("<HH", hdr, 54)
    if e_phnum == 0xFFFF:  # PN_XNUM: the real count is in section 0's sh_info
        e_shoff, = struct.unpack_from("<Q", hdr, 40)
        f.seek(e_shoff)
        sh0 = f.read(64)
        e_phnum = struct.unpack_from("<I", sh0, 44)[0]
    f.seek(e_phoff)
    data = f.read(e_phentsize * e_phnum)
    if len(data) < e_phentsize * e_phnum:
        raise TargetError(f"truncated vmcore: program headers end past {size} bytes")
    out = []
    for i in range(e_phnum):
        p_type, _flags, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz = struct.unpack_from(
            "<IIQQQQQ", data, i * e_phentsize
        )
        out.append((p_type, p_offset, p_vaddr, p_paddr, p_filesz, p_memsz))
    return out


def inspect_dump(path: str) -> DumpFile:
    """Recognise a vmcore and check that it is complete.

    :raises TargetError: unreadable, unrecognised, flattened or truncated.
    """
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            magic = f.read(16)
            if magic.startswith(_ELF_MAGIC):
                if len(magic) < 16:
                    raise TargetError(f"truncated vmcore {path}: {size} bytes")
                f.seek(0)
                hdr = f.read(18)
                if len(hdr) < 18 or struct.unpack_from("<H", hdr, 16)[0] != _ET_CORE:
                    raise TargetError(f"{path} is an ELF file but not a core dump")
                f.seek(0)
                phdrs = _elf_phdrs(f, size)
                need = max((o + fs for t, o, _, _, fs, _ in phdrs if t == _PT_LOAD), default=0)
                if need > size:
                    raise TargetError(
                        f"truncated vmcore {path}: its segments need {need} bytes, "
                        f"the file has {size}"
                    )
                segs = tuple(
                    sorted((pa, pa + fs) for t, _, _, pa, fs, _ in phdrs
                           if t == _PT_LOAD and fs and pa != (1 << 64) - 1)
                )
                max_pfn = max((b for _, b in segs), default=0) >> 12 if segs else None
                return DumpFile("elf", segs, max_pfn)
            if magic.startswith(_KDUMP_MAGIC):
                f.seek(0)
                hdr = f.read(4096)
                # struct disk_dump_header: signature[8], header_version, utsname
                # (6 x 65), timestamp (16, padded), status, block_size,
                # sub_hdr_size, bitmap_blocks, max_mapnr (makedumpfile diskdump_mod.h).
                off = 8 + 4 + 6 * 65
                off = (off + 7) // 8 * 8 + 16
                if len(hdr) < off + 20:
                    raise TargetError(f"truncated vmcore {path}: kdump header incomplete")
                _status, block_size, sub_hdr, bitmap_blocks, max_mapnr = struct.unpack_from(
                    "<iiiiI", hdr, off
                )
                need = block_size * (1 + sub_hdr + bitmap_blocks)
                if block_size <= 0 or size < need:
                    raise TargetError(
                        f"truncated vmcore {path}: kdump header and bitmaps need "
                        f"{need} bytes, the file has {size}"
                    )
                return DumpFile("kdump", (), max_mapnr or None)
            if magic.startswith(_FLAT_MAGIC):
                raise TargetError(
                    f"{path} is in makedumpfile's flattened format, which drgn cannot read; "
                    "take an ELF dump (QEMU dump-guest-memory format elf) or a kdump written "
                    "by makedumpfile directly to a file"
                )
    except OSError as e:
        raise TargetError(f"cannot read vmcore {path}: {e.strerror or e}") from None
    raise TargetError(f"{path} is not a vmcore (neither ELF core nor kdump-compressed)")


def elf_build_id(path: str) -> bytes | None:
    """The GNU build ID note of an ELF file (vmlinux), read from its section headers."""
    try:
        with open(path, "rb") as f:
            hdr = f.read(64)
            if not hdr.startswith(_ELF_MAGIC) or hdr[4] != 2:
                return None
            e_shoff, = struct.unpack_from("<Q", hdr, 40)
            e_shentsize, e_shnum = struct.unpack_from("<HH", hdr, 58)
            f.seek(e_shoff)
            shdrs = f.read(e_shentsize * e_shnum)
            for i in range(e_shnum):
                sh_type = struct.unpack_from("<I", shdrs, i * e_shentsize + 4)[0]
                if sh_type != 7:  # SHT_NOTE
                    continue
                sh_offset, sh_size = struct.unpack_from("<QQ", shdrs, i * e_shentsize + 24)
                f.seek(sh_offset)
                notes = f.read(sh_size)
                pos = 0
                while pos + 12 <= len(notes):
                    namesz, descsz, ntype = struct.unpack_from("<III", notes, pos)
                    name = notes[pos + 12 : pos + 12 + namesz]
                    dpos = pos + 12 + (namesz + 3) // 4 * 4
                    if ntype == 3 and name.rstrip(b"\0") == b"GNU":
                        return notes[dpos : dpos + descsz]
                    pos = dpos + (descsz + 3) // 4 * 4
    except OSError:
        return None
    return None


class _NoVmlinuxError(DebugInfoError):
    """drgn's search found no vmlinux (``--debuginfo auto`` then uses BTF)."""


def _release_check(prog: drgn.Program, vmlinux: str | None) -> None:
    """VMCOREINFO OSRELEASE must equal ``init_uts_ns`` read at the vmlinux's address."""
    import drgn

    try:
        want = prog["UTS_RELEASE"].string_().decode(errors="replace")
    except (KeyError, LookupError, drgn.FaultError):
        return
    try:
        got = prog["init_uts_ns"].name.release.string_().decode(errors="replace")
    except (KeyError, LookupError, drgn.FaultError):
        got = "<unreadable>"
    if got != want:
        raise DebugInfoError(
            f"{vmlinux or 'the debug info'} does not match the target: the kernel is {want}, "
            f"its init_uts_ns reads {got!r}"
        )


def _load_debug_info(prog: drgn.Program, vmlinux: str | None) -> None:
    import drgn

    if vmlinux is not None and not os.path.isfile(vmlinux):
        raise DebugInfoError(f"vmlinux not found: {vmlinux}")
    try:
        # Only the main module (vmlinux): module debug info is not needed
        # and asking for it makes drgn print "missing debugging symbols".
        if vmlinux is not None:
            prog.load_debug_info([vmlinux])
        else:
            prog.load_debug_info(main=True)
    except drgn.MissingDebugInfoError:
        pass  # module debug info is optional; the main module is checked below
    except (OSError, ValueError, drgn.BadDataError) as e:
        raise DebugInfoError(f"cannot load debug info: {e}") from None
    main = prog.main_module()
    if not main.wants_debug_file():
        _release_check(prog, vmlinux)
        return
    try:
        release = prog["UTS_RELEASE"].string_().decode(errors="replace")
    except (KeyError, LookupError, drgn.FaultError):
        release = "unknown"
    if vmlinux is None:
        raise _NoVmlinuxError(
            f"no vmlinux with debug info found for kernel {release}; pass -s/--vmlinux PATH "
            "or --debuginfo btf"
        )
    have = elf_build_id(vmlinux)
    want = main.build_id
    if have is not None and want is not None and have != want:
        raise DebugInfoError(
            f"{vmlinux} does not match the target: build ID {have.hex()} vs the kernel's "
            f"{want.hex()} (kernel {release})"
        )
    # No build ID to compare (old VMCOREINFO without BUILD-ID): force the file
    # and check OSRELEASE against what it reads.
    try:
        main.try_file(vmlinux, force=True)
    except (OSError, ValueError) as e:
        raise DebugInfoError(f"cannot use {vmlinux}: {e}") from None
    if main.wants_debug_file():
        raise DebugInfoError(f"{vmlinux} has no debug info (is it the -dbg vmlinux?)")
    _release_check(prog, vmlinux)


def _choose_debug_info(
    prog: drgn.Program, vmlinux: str | None, debuginfo: str, system_map: str | None
) -> str:
    """Load DWARF or BTF + kallsyms as *debuginfo* (auto|dwarf|btf) says; the provenance."""
    if debuginfo not in DEBUGINFO_MODES:
        raise OptionError(f"--debuginfo must be one of {', '.join(DEBUGINFO_MODES)}")
    if debuginfo == "btf" and vmlinux is not None:
        raise OptionError("-s/--vmlinux and --debuginfo btf exclude each other")
    if system_map is not None and (vmlinux is not None or debuginfo == "dwarf"):
        raise OptionError("-m/--system-map is for BTF mode (no -s, --debuginfo auto or btf)")
    if debuginfo == "auto" and vmlinux is None and system_map is None:
        try:
            _load_debug_info(prog, None)
        except _NoVmlinuxError:
            debuginfo = "btf"
        else:
            return f"dwarf:{prog.main_module().debug_file_path or 'drgn search'}"
    if debuginfo == "btf" or system_map is not None:
        from subsecinspect.debuginfo.source import load_btf_debuginfo

        return load_btf_debuginfo(prog, system_map=system_map)
    _load_debug_info(prog, vmlinux)
    return f"dwarf:{prog.main_module().debug_file_path or vmlinux or 'drgn search'}"


def open_target(
    target: str | None,
    vmlinux: str | None = None,
    debuginfo: str = "auto",
    system_map: str | None = None,
) -> tuple[drgn.Program, TargetInfo]:
    """Open *target* (default /proc/kcore) and load debug info.

    *debuginfo*: ``dwarf`` (a vmlinux: *vmlinux* or drgn's search), ``btf`` (the
    kernel's BTF + kallsyms, or *system_map*: :mod:`subsecinspect.debuginfo`) or
    ``auto`` (DWARF when found, else BTF).

    :return: ``(drgn.Program, TargetInfo)``; ``TargetInfo.debuginfo`` says which was used.
    :raises TargetError: cannot open the live kernel or the vmcore.
    :raises DebugInfoError: no vmlinux, or one that does not match.
    """
    import drgn

    # drgn logs debug-info misses ("provided file ... did not match any loaded modules")
    # to stderr; this function reports them itself, as one line.
    logging.getLogger("drgn").setLevel(logging.CRITICAL)
    os.environ.setdefault("DRGN_DISABLE_PLUGINS", DRGN_PLUGINS_DEFAULT)
    path = target or KCORE
    if vmlinux is not None and not os.path.isfile(vmlinux):
        raise DebugInfoError(f"vmlinux not found: {vmlinux}")
    prog = drgn.Program()
    if os.path.realpath(path) == KCORE:
        if not os.path.exists(KCORE):
            raise TargetError(f"no {KCORE} (kernel built without CONFIG_PROC_KCORE?)")
        if os.geteuid() != 0:
            raise TargetError(f"cannot open {KCORE}: permission denied (run as root)")
        try:
            prog.set_kernel()
        except (OSError, ValueError, drgn.FaultError, drgn.BadDataError) as e:
            raise TargetError(f"cannot open the live kernel: {e}") from None
        info = TargetInfo(kind="live", path=KCORE, format="kcore")
    else:
        if not os.path.exists(path):
            raise TargetError(f"no such vmcore: {path}")
        dump = inspect_dump(path)
        try:
            prog.set_core_dump(path)
        except (OSError, ValueError, drgn.FaultError, drgn.BadDataError) as e:
            msg = str(e)
            hint = ""
            if "VMCOREINFO" in msg or "vmcoreinfo" in msg:
                hint = " (QEMU dumps need -device vmcoreinfo and qemu_fw_cfg in the guest)"
            raise TargetError(f"cannot open vmcore {path}: {msg}{hint}") from None
        if not prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL:
            raise TargetError(
                f"cannot open vmcore {path}: no VMCOREINFO note, so not a Linux kernel dump "
                "(QEMU dumps need -device vmcoreinfo and qemu_fw_cfg in the guest)"
            )
        info = TargetInfo(kind="vmcore", path=os.path.abspath(path), format=dump.format,
                          dump_max_pfn=dump.max_pfn)
    info = dataclasses.replace(
        info, debuginfo=_choose_debug_info(prog, vmlinux, debuginfo, system_map)
    )
    return prog, info
