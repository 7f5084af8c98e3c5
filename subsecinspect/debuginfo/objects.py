"""Kernel globals without DWARF: an object finder over BTF and the kernel's symbols.

BTF describes types, and of the variables only the per-CPU ones (a VAR in the
``.data..percpu`` DATASEC, pahole's default since v5.x); the globals the readers
of :mod:`subsecinspect.kernel` use have a kallsyms address but no type: their C
declarations are the table of :mod:`subsecinspect.debuginfo.kglobals`, resolved
against the BTF of the target (a VAR, where there is one, wins). Enumerators
come from BTF enums (``PG_head``, ``ZONE_DEVICE``, ``SECTION_*_BIT`` since v6.0);
macros are not in BTF, exactly as they are not in
DWARF, and the readers already carry them (features.py, pagemap.py).
"""

from __future__ import annotations

from drgn import FindObjectFlags, Object, Program, Type

from subsecinspect.debuginfo.btf_records import BtfKind
from subsecinspect.debuginfo.btf_types import BtfTypeFinder
from subsecinspect.debuginfo.kglobals import GLOBAL_TYPES
from subsecinspect.debuginfo.symbols import SymbolSource

__all__ = ("BtfObjectFinder",)

class BtfObjectFinder:
    """``register_object_finder`` callback: enumerators, functions and the listed globals."""

    def __init__(self, prog: Program, types: BtfTypeFinder, symbols: SymbolSource) -> None:
        self.prog = prog
        self.types = types
        self.symbols = symbols
        self.declared: dict[str, str] = dict(GLOBAL_TYPES)
        self._types: dict[str, Type] = {}

    def _global_type(self, name: str) -> Type | None:
        t = self._types.get(name)
        if t is None:
            btf = self.types.btf
            var = btf.find(name, {BtfKind.VAR})
            if var:
                t = self.types.type_of(var[0])
            elif name in self.declared:
                t = self.prog.type(self.declared[name])
            else:
                return None
            self._types[name] = t
        return t

    def __call__(
        self, prog: Program, name: str, flags: FindObjectFlags, filename: str | None
    ) -> Object | None:
        # The listed globals first: their names are no enumerators, and the search
        # for one is what a lookup of a global would otherwise pay.
        if flags & FindObjectFlags.VARIABLE:
            t = self._global_type(name)
            if t is not None:
                addr = self.symbols.address(prog, name)
                if addr is not None:
                    return Object(prog, t, address=addr)
        if flags & FindObjectFlags.CONSTANT:
            hit = self.types.btf.enumerator(name)
            if hit is not None:
                return Object(prog, self.types.type_of(hit[0]), hit[1])
        if flags & FindObjectFlags.FUNCTION:
            fn = self.types.btf.find(name, {BtfKind.FUNC})
            if fn:
                addr = self.symbols.address(prog, name)
                if addr is not None:
                    return Object(prog, self.types.type_of(fn[0]), address=addr)
        return None
