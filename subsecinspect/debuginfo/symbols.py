"""Kernel symbols without vmlinux: kallsyms (live or built-in) or a System.map.

Mirrors what ``kernel/kallsyms.c`` exposes: ``/proc/kallsyms`` on a live kernel
(read by drgn's C loader), the built-in tables ``kallsyms_names`` /
``kallsyms_offsets`` ... that VMCOREINFO locates in a dump since Linux kernel
commit f09bddbd8661 ("vmcoreinfo: add kallsyms_num_syms symbol") (in v6.0),
through drgn 0.3.0's :func:`drgn.helpers.linux.kallsyms.load_vmlinux_kallsyms`,
and ``/boot/System.map-<release>`` (link-time addresses, shifted by the
VMCOREINFO ``KERNELOFFSET`` of a KASLR kernel). Each becomes a
:class:`drgn.SymbolIndex` registered with ``Program.register_symbol_finder``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable

import drgn
from drgn import Program, Symbol, SymbolBinding, SymbolIndex, SymbolKind

from subsecinspect.debuginfo.kallsyms import find_builtin_kallsyms
from subsecinspect.debuginfo.kglobals import GLOBAL_TYPES
from subsecinspect.errors import DebugInfoError

__all__ = (
    "WANTED",
    "SymbolSource",
    "load_symbols",
    "read_system_map",
    "vmcoreinfo",
)

#: nm(1) type letters of data symbols (System.map); the rest are functions or absolute.
_DATA_TYPES = frozenset("bBdDrRgGsSvV")
_MAP_LINE = re.compile(rb"^([0-9a-fA-F]+) (\S) (\S+)$", re.M)


#: Symbols looked up by name: the readers' globals and feature witnesses
#: (kernel/features.py ``has_symbol``), BTF's bounds and the build-ID notes. Any other
#: name, and every lookup by address, loads the whole table (drgn's loader) once.
WANTED = frozenset({
    *GLOBAL_TYPES, "__start_BTF", "__stop_BTF", "__start_notes", "__stop_notes", "_stext",
    "pfn_to_online_page", "pgmap_pfn_valid", "section_to_node_table",
    # drgn's own "vmemmap" object asks for it (x86_64, libdrgn linux_kernel.c).
    "vmemmap_populate",
})


class SymbolSource:
    """The kernel's symbols: a few names known up front, the rest on demand.

    :param origin: ``"kallsyms:vmcoreinfo"``, ``"kallsyms:/proc/kallsyms"`` or
        ``"system.map:PATH"``.
    :param known: name -> address of the names already looked up (absent: not a symbol).
    :param searched: the names *known* is complete for.
    :param full: makes the whole index when another name or an address is asked for.
    """

    def __init__(self, origin: str, known: dict[str, int], searched: frozenset[str],
                 full: Callable[[], SymbolIndex]) -> None:
        self.origin = origin
        self.known = known
        self.searched = searched
        self._full_fn = full
        self._full: SymbolIndex | None = None
        #: kallsyms name -> index, for the per-build-ID cache (built-in tables only).
        self.memo: dict[str, int] = {}

    def full(self) -> SymbolIndex:
        """Every symbol (built on first use)."""
        if self._full is None:
            self._full = self._full_fn()
        return self._full

    def address(self, prog: Program, name: str) -> int | None:
        """Address of *name*, ``None`` if it is not a symbol."""
        if name in self.searched:
            return self.known.get(name)
        found = self.full()(prog, name, None, True)
        return found[0].address if found else None

    def __call__(self, prog: Program, name: str | None, address: int | None,
                 one: bool) -> list[Symbol]:
        """``register_symbol_finder`` callback."""
        if name is not None and address is None and name in self.searched:
            addr = self.known.get(name)
            if addr is None:
                return []
            # Size and kind are unknown without the whole table: has_symbol() needs neither.
            return [Symbol(name, addr, 0, SymbolBinding.GLOBAL, SymbolKind.UNKNOWN)]
        return list(self.full()(prog, name, address, one))


def vmcoreinfo(prog: Program) -> dict[str, str]:
    """The VMCOREINFO note as ``KEY -> value`` (``SYMBOL(mem_section)``, ``OSRELEASE``, ...)."""
    try:
        text = prog["VMCOREINFO"].string_().decode("ascii", "replace")
    except (KeyError, LookupError, drgn.FaultError):
        return {}
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key] = value
    return out


def read_system_map(path: str, offset: int) -> SymbolIndex:
    """A System.map as a symbol index, every address shifted by *offset* (KERNELOFFSET).

    :raises DebugInfoError: unreadable, or no symbol line in it.
    """
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise DebugInfoError(f"cannot read System.map {path}: {e.strerror or e}") from None
    rows = sorted(
        (int(a, 16), t.decode(), n.decode(errors="replace")) for a, t, n in _MAP_LINE.findall(data)
    )
    if not rows:
        raise DebugInfoError(f"{path} is not a System.map (no 'address type name' lines)")
    syms = []
    for i, (addr, typ, name) in enumerate(rows):
        # System.map has no sizes: a symbol runs to the next one (how kallsyms sizes them too).
        nxt = next((r[0] for r in rows[i + 1 : i + 8] if r[0] > addr), addr)
        kind = SymbolKind.OBJECT if typ in _DATA_TYPES else (
            SymbolKind.FUNC if typ in "tTwW" else SymbolKind.UNKNOWN)
        binding = SymbolBinding.GLOBAL if typ.isupper() else SymbolBinding.LOCAL
        shift = offset if typ not in "aA" else 0  # absolute symbols do not move with KASLR
        syms.append(Symbol(name, addr + shift, nxt - addr, binding, kind))
    return SymbolIndex(syms)


def _kaslr_offset(info: dict[str, str]) -> int:
    try:
        return int(info.get("KERNELOFFSET", "0"), 16)
    except ValueError:
        return 0


def _drgn_kallsyms(prog: Program) -> SymbolIndex:
    from drgn.helpers.linux.kallsyms import load_vmlinux_kallsyms

    try:
        return load_vmlinux_kallsyms(prog)
    except (OSError, ValueError, LookupError, drgn.FaultError) as e:
        raise DebugInfoError(f"cannot read kallsyms: {e}; pass -m/--system-map or -s/--vmlinux"
                             ) from None


def _from_index(origin: str, index: SymbolIndex, prog: Program, names: frozenset[str]
                ) -> SymbolSource:
    known = {}
    for n in names:
        found = index(prog, n, None, True)
        if found:
            known[n] = found[0].address
    return SymbolSource(origin, known, names, lambda: index)


def load_symbols(prog: Program, *, system_map: str | None = None,
                 memo: dict[str, int] | None = None) -> SymbolSource:
    """The kernel's symbols, registered on *prog* as its first symbol finder.

    *system_map* if given; else the built-in kallsyms tables that VMCOREINFO locates
    (dumps, and live kernels through /proc/kcore: no text formatting, no
    ``kptr_restrict``); else, live, ``/proc/kallsyms``.

    :raises DebugInfoError: kallsyms unavailable (a v5.x dump without the VMCOREINFO
        kallsyms entries), hidden (all addresses 0), or an unusable System.map.
    """
    info = vmcoreinfo(prog)
    names = WANTED | {k[7:-1] for k in info if k.startswith("SYMBOL(")}
    live = bool(prog.flags & drgn.ProgramFlags.IS_LIVE)
    if system_map is not None:
        index = read_system_map(system_map, _kaslr_offset(info))
        source = _from_index(f"system.map:{os.path.abspath(system_map)}", index, prog, names)
    elif "SYMBOL(kallsyms_num_syms)" in info:
        known, source_memo = find_builtin_kallsyms(prog, info, names, memo)
        source = SymbolSource("kallsyms:vmcoreinfo", known, names, lambda: _drgn_kallsyms(prog))
        source.memo = source_memo
    elif live:
        source = _from_index("kallsyms:/proc/kallsyms", _drgn_kallsyms(prog), prog, names)
    else:
        raise DebugInfoError(
            "this dump's VMCOREINFO has no kallsyms tables (they are there since v6.0, "
            "f09bddbd8661); pass -m/--system-map /boot/System.map-<release> of the dumped "
            "kernel, or -s/--vmlinux"
        )
    addr = source.address(prog, "init_uts_ns")
    if addr is None:
        raise DebugInfoError(f"{source.origin} has no init_uts_ns: not a kernel symbol table")
    if addr == 0:
        raise DebugInfoError(
            "kallsyms addresses are hidden (all 0: not root, or kernel.kptr_restrict); "
            "run as root with kptr_restrict <= 1, or pass -m/--system-map"
        )
    prog.register_symbol_finder("subsecinspect-symbols", source, enable_index=0)
    return source
