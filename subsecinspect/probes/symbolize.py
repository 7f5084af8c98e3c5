"""Kernel address -> symbol for the stacks of ``subsecinspect trace``, from /proc/kallsyms.

The kernel's own ``kallsyms_lookup()`` / ``sprint_symbol()`` (kernel/kallsyms.c) answer
with ``name+0xoff/0xsize [module]``; user space only has /proc/kallsyms, which lists every
symbol's start (core kernel, then each module, then the pseudo-modules: the ftrace
trampolines ``[__builtin__ftrace]``, the kprobe insn slots ``[__builtin__kprobes]``, BPF
programs and trampolines ``[bpf]``).  :class:`SymbolTable` bisects over the sorted starts.

A table read before a module was loaded resolves that module's addresses to whatever lies
below them in module space: in CI, ``bw_read_page`` of the bad walker (loaded after the
tracer started) came out as ``ftrace_trampoline+0x10ef``.  :class:`KernelSymbols` therefore
re-reads /proc/kallsyms (at most once per ``min_interval`` seconds) when an address is
outside core kernel text and not covered by a real module: its nearest symbol is a
pseudo-module's, or none, or the module's last one (where the module ends is unknown), or
it lies outside the module's extent from /proc/modules.

Pure apart from the reader callable it is given (tests pass canned texts and a clock).
"""

from __future__ import annotations

import bisect
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from subsecinspect.probes.procfs import TEXT_TYPES, parse_kallsyms, read_or_empty

__all__ = ("PSEUDO_MODULES", "KernelSymbols", "Symbol", "SymbolTable", "read_proc")

#: Module names of /proc/kallsyms that are not modules (kernel/trace/ftrace.c,
#: kernel/kprobes.c, kernel/bpf/core.c: ``bpf_get_kallsym()``).
PSEUDO_MODULES = frozenset({"__builtin__ftrace", "__builtin__kprobes", "bpf"})
_MODULES_LINE = re.compile(r"^(\S+) (\d+) .* (0x[0-9a-f]+)(?: \(.*\))?$")


@dataclass(frozen=True, slots=True)
class Symbol:
    """One text symbol: its start, name and module (``""`` for the core kernel)."""

    addr: int
    name: str
    module: str = ""

    @property
    def pseudo(self) -> bool:
        return self.module in PSEUDO_MODULES


class SymbolTable:
    """Sorted text symbols of one /proc/kallsyms read (plus /proc/modules extents)."""

    def __init__(self, kallsyms: str, modules: str = "") -> None:
        syms: list[Symbol] = []
        stext = etext = 0
        for addr, kind, name, module in parse_kallsyms(kallsyms):
            if name == "_stext":
                stext = addr
            elif name == "_etext":
                etext = addr
            if addr and kind in TEXT_TYPES:
                syms.append(Symbol(addr, name, module))
        syms.sort(key=lambda s: s.addr)
        self.symbols = syms
        self._addrs = [s.addr for s in syms]
        self.core_text = (stext, etext)
        #: module -> [start, end) from /proc/modules (root only: else the addresses are 0).
        self.extents: dict[str, tuple[int, int]] = {}
        for line in modules.splitlines():
            m = _MODULES_LINE.match(line.strip())
            if m and int(m[3], 16):
                base = int(m[3], 16)
                self.extents[m[1]] = (base, base + int(m[2]))

    def __len__(self) -> int:
        return len(self.symbols)

    def lookup(self, addr: int) -> tuple[Symbol | None, int]:
        """The symbol whose start is the highest at or below ``addr``, and the offset."""
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0:
            return None, 0
        s = self.symbols[i]
        return s, addr - s.addr

    def in_core_text(self, addr: int) -> bool:
        lo, hi = self.core_text
        return bool(lo and hi) and lo <= addr < hi

    def covered(self, addr: int) -> bool:
        """Does this table name ``addr`` for sure: core text, or between two symbols of
        one real module (and inside its /proc/modules extent when that is known)?

        Past a module's last symbol nothing tells where it ends (since v6.4 /proc/modules
        gives the text base but the size of all its regions, which can span a module loaded
        later: 7.2 named the bad walker ``cleanup_module+0x21ff [qemu_fw_cfg]``), so such an
        address is not covered: worth one more read of /proc/kallsyms.
        """
        if self.in_core_text(addr):
            return True
        i = bisect.bisect_right(self._addrs, addr) - 1
        if i < 0 or i + 1 >= len(self.symbols):
            return False
        sym, nxt = self.symbols[i], self.symbols[i + 1]
        if not sym.module or sym.pseudo or nxt.module != sym.module:
            return False
        ext = self.extents.get(sym.module)
        return ext is None or ext[0] <= addr < ext[1]

    def frame(self, addr: int) -> str:
        """``name+0xoff`` (core kernel) or ``name+0xoff [module]``; ``0x...`` if unknown."""
        sym, off = self.lookup(addr)
        if sym is None:
            return f"{addr:#x}"
        where = f" [{sym.module}]" if sym.module else ""
        return f"{sym.name}+{off:#x}{where}"


def read_proc() -> tuple[str, str]:
    """The texts of /proc/kallsyms and /proc/modules (``""`` for one that cannot be read)."""
    return read_or_empty("/proc/kallsyms"), read_or_empty("/proc/modules")


class KernelSymbols:
    """Symbolises kernel addresses, re-reading /proc/kallsyms when a module may be missing.

    :param read: returns ``(kallsyms text, modules text)``, called at most once per
        ``min_interval`` seconds (the first time lazily, unless ``kallsyms`` is given).
    :param kallsyms: an initial /proc/kallsyms text (saves the first read).
    """

    def __init__(
        self,
        read: Callable[[], tuple[str, str]] = read_proc,
        min_interval: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
        kallsyms: str | None = None,
        modules: str = "",
    ) -> None:
        self._read = read
        self._clock = clock
        self.min_interval = min_interval
        self.reads = 0
        self._table: SymbolTable | None = None
        self._read_at = float("-inf")
        if kallsyms is not None:
            self._table = SymbolTable(kallsyms, modules)
            self._read_at = clock()
        #: Frames of addresses that a re-read could not improve (final answers).
        self._final: dict[int, str] = {}

    def _reload(self) -> SymbolTable:
        text, modules = self._read()
        self.reads += 1
        self._read_at = self._clock()
        self._table = SymbolTable(text, modules)
        return self._table

    def frame(self, addr: int) -> str:
        """One stack frame, e.g. ``bw_read_page+0x1c [bad_walker]`` or ``kthread+0xe3``."""
        if addr in self._final:
            return self._final[addr]
        table = self._table if self._table is not None else self._reload()
        if table.covered(addr):
            return table.frame(addr)
        seen_at = self._clock()
        if seen_at - self._read_at >= self.min_interval:
            table = self._reload()
        if self._read_at >= seen_at or table.covered(addr):
            # read after the address existed: nothing newer to learn about it
            self._final[addr] = table.frame(addr)
        return table.frame(addr)

    def stack(self, addrs: list[int]) -> list[str]:
        return [self.frame(a) for a in addrs]
