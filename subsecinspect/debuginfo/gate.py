"""The sanity gate of BTF mode: VMCOREINFO must agree with BTF and the symbols.

VMCOREINFO (kernel/vmcore_info.c, kernel/crash_core.c before v6.9, and
arch/x86/kernel/vmcore_info_64.c) is written by the dumped kernel itself, so it
is the reference: every ``SIZE(s)`` and ``OFFSET(s.m)`` of a type BTF has, every
``SYMBOL(x)`` the symbol source has, ``OSRELEASE`` against ``init_uts_ns`` read
through BTF types at the symbol's address, and ``BUILD-ID`` against the GNU
build-ID note between ``__start_notes`` and ``__stop_notes`` in kernel memory.
One disagreement stops the run with one line: a System.map of another build or
the BTF of another kernel would otherwise give a silently wrong answer.
"""

from __future__ import annotations

import struct

import drgn
from drgn import Program, offsetof, sizeof

from subsecinspect.debuginfo.objects import BtfObjectFinder
from subsecinspect.debuginfo.symbols import SymbolSource, vmcoreinfo
from subsecinspect.errors import DebugInfoError

__all__ = ("check_gate", "check_symbols", "mem_section_type")

#: VMCOREINFO_SYMBOL_ARRAY names: the entry is the array's value, not its address.
_ARRAY_SYMBOLS = frozenset({"mem_section", "node_data", "prb"})


def _type_of(prog: Program, name: str) -> drgn.Type | None:
    # SIZE(page) is "struct page"; SIZE(nodemask_t), SIZE(atomic_long_t) are typedefs.
    for spelling in (f"struct {name}", name, f"union {name}"):
        try:
            return prog.type(spelling)
        except (LookupError, SyntaxError, ValueError):
            continue
    return None


def mem_section_type(prog: Program, info: dict[str, str], finder: BtfObjectFinder) -> None:
    """Decide ``mem_section``'s C type from VMCOREINFO; record it in *finder*.

    ``VMCOREINFO_SYMBOL_ARRAY(mem_section)`` writes ``(unsigned long)mem_section``: the
    pointer's value with SPARSEMEM_EXTREME (``struct mem_section **``, v4.15+), the
    array's own address without it (``struct mem_section [NR_SECTION_ROOTS][...]``).

    :raises DebugInfoError: neither, so the symbols are not this kernel's.
    """
    want = info.get("SYMBOL(mem_section)")
    addr = finder.symbols.address(prog, "mem_section")
    if want is None or addr is None:
        return
    v = int(want, 16)
    if v == addr:
        per_root = 4096 // sizeof(prog.type("struct mem_section"))
        finder.declared["mem_section"] = f"struct mem_section [][{per_root}]"
        return
    try:
        ptr = struct.unpack("<Q", prog.read(addr, 8))[0]
    except drgn.FaultError:
        ptr = None
    if ptr != v:
        raise DebugInfoError(
            f"{finder.symbols.origin} does not match the target: mem_section is at "
            f"{addr:#x} (holding {ptr:#x} if readable), VMCOREINFO says {v:#x}; pass the "
            "System.map of this build" if ptr is not None else
            f"{finder.symbols.origin} does not match the target: mem_section at {addr:#x} "
            "is unreadable; pass the System.map of this build"
        )


def _build_id_note(prog: Program, finder: BtfObjectFinder) -> bytes | None:
    start = finder.symbols.address(prog, "__start_notes")
    stop = finder.symbols.address(prog, "__stop_notes")
    if start is None or stop is None or not 0 < stop - start < 1 << 16:
        return None
    try:
        notes = prog.read(start, stop - start)
    except drgn.FaultError:
        return None
    pos = 0
    while pos + 12 <= len(notes):
        namesz, descsz, ntype = struct.unpack_from("<III", notes, pos)
        dpos = pos + 12 + (namesz + 3) // 4 * 4
        if ntype == 3 and notes[pos + 12 : pos + 12 + namesz].rstrip(b"\0") == b"GNU":
            return notes[dpos : dpos + descsz]
        pos = dpos + (descsz + 3) // 4 * 4
    return None


def check_symbols(prog: Program, symbols: SymbolSource, info: dict[str, str]) -> int:
    """Every ``SYMBOL(x)`` of VMCOREINFO against *symbols*; how many agreed.

    Run before anything is read at a symbol's address (``__start_BTF``): a System.map of
    another build then stops here, with its name in the message.

    :raises DebugInfoError: the first disagreement.
    """
    checked = 0
    for key, value in info.items():
        if not key.startswith("SYMBOL(") or key[7:-1] in _ARRAY_SYMBOLS:
            continue
        name = key[7:-1]
        addr = symbols.address(prog, name)
        if addr is not None and addr != int(value, 16):
            raise DebugInfoError(
                f"{symbols.origin} does not match the target: {name} at {addr:#x}, VMCOREINFO "
                f"says {int(value, 16):#x}; pass the System.map of this build"
            )
        checked += addr is not None
    return checked


def check_gate(prog: Program, finder: BtfObjectFinder) -> int:
    """Compare VMCOREINFO with BTF and the symbols; return how many entries agreed.

    :raises DebugInfoError: the first disagreement, or no VMCOREINFO at all.
    """
    info = vmcoreinfo(prog)
    if not info:
        raise DebugInfoError("no VMCOREINFO: BTF mode cannot check its types and symbols")
    mem_section_type(prog, info, finder)
    checked = check_symbols(prog, finder.symbols, info)
    for key, value in info.items():
        if key.startswith("SIZE(") or key.startswith("OFFSET("):
            inner = key[key.index("(") + 1 : -1]
            tname, _, member = inner.partition(".")
            t = _type_of(prog, tname)
            if t is None:
                continue
            try:
                got = offsetof(t, member) if member else sizeof(t)
            except (LookupError, ValueError, TypeError):
                raise DebugInfoError(
                    f"BTF does not match the target: VMCOREINFO {key}={value}, but BTF's "
                    f"{t} has no such member; this is another kernel's BTF"
                ) from None
            if got != int(value):
                raise DebugInfoError(
                    f"BTF does not match the target: VMCOREINFO {key}={value}, BTF says {got}"
                )
            checked += 1
    origin = finder.symbols.origin
    want = info.get("OSRELEASE")
    if want is not None:
        try:
            got = prog["init_uts_ns"].name.release.string_().decode(errors="replace")
        except (KeyError, LookupError, drgn.FaultError) as e:
            raise DebugInfoError(f"cannot read init_uts_ns through BTF: {e}") from None
        if got != want:
            raise DebugInfoError(
                f"{origin} does not match the target: the kernel is {want}, "
                f"init_uts_ns reads {got!r}; pass the System.map of this build"
            )
        checked += 1
    build_id = info.get("BUILD-ID")
    if build_id is not None:
        note = _build_id_note(prog, finder)
        if note is not None and note.hex() != build_id.lower():
            raise DebugInfoError(
                f"{origin} does not match the target: build ID {note.hex()} in memory, "
                f"VMCOREINFO says {build_id}"
            )
        checked += note is not None
    return checked
