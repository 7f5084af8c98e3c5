"""drgn types from BTF: a type finder for ``Program.register_type_finder``.

Mirrors how the kernel's BTF encodes C (Documentation/bpf/btf.rst, what pahole's
``btf_encoder`` emits from DWARF) back into the drgn types the DWARF index would
give, so that the readers in :mod:`subsecinspect.kernel` run unchanged: member
offsets, sizes, bit fields, enumerators and typedef chains are those of the
kernel. A structure's member types are built only when a member is looked at.

Where BTF says less than DWARF, the type says less too: ``foo[]`` and ``foo[0]``
are both ``nelems == 0`` and built as length 0 (DWARF: ``[]`` has no length;
6.1's ``mm_struct.cpu_bitmap[]`` is one, ``dev_pagemap.ranges[0]`` and
``mem_section_usage.pageblock_flags[0]`` are not, so no rule tells them apart),
integer type names are BTF's spelling (``long unsigned int``), and there is no source file to match.
"""

from __future__ import annotations

from collections.abc import Callable

from drgn import (
    Object,
    Program,
    Qualifiers,
    Type,
    TypeEnumerator,
    TypeKind,
    TypeKindSet,
    TypeMember,
    TypeParameter,
)

from subsecinspect.debuginfo.btf import Btf, BtfError
from subsecinspect.debuginfo.btf_records import BtfKind

__all__ = (
    "BtfTypeFinder",
    "register_btf_types",
)

#: drgn kind -> the BTF kinds that can define a type of that kind by name.
_BY_DRGN_KIND = {
    TypeKind.STRUCT: (BtfKind.STRUCT,),
    TypeKind.UNION: (BtfKind.UNION,),
    TypeKind.ENUM: (BtfKind.ENUM, BtfKind.ENUM64),
    TypeKind.TYPEDEF: (BtfKind.TYPEDEF,),
    TypeKind.INT: (BtfKind.INT,),
    TypeKind.BOOL: (BtfKind.INT,),
    TypeKind.FLOAT: (BtfKind.FLOAT,),
}
_QUALIFIER = {
    BtfKind.CONST: Qualifiers.CONST,
    BtfKind.VOLATILE: Qualifiers.VOLATILE,
    BtfKind.RESTRICT: Qualifiers.RESTRICT,
}
#: A chain of qualifiers/typedefs this long is a loop in a damaged blob (real ones are < 10).
_MAX_CHAIN = 64
_INT_NAMES = {1: "char", 2: "short", 4: "int", 8: "long"}
#: Sizes of INT (up to __int128), ENUM/ENUM64 and FLOAT (long double is 10-16 bytes).
_SIZES = frozenset({1, 2, 4, 8, 10, 12, 16})


class BtfTypeFinder:
    """Builds and caches drgn types of one :class:`Btf` for one program.

    :param prog: the program the types belong to.
    :param btf: the kernel's BTF.
    """

    def __init__(self, prog: Program, btf: Btf) -> None:
        self.prog = prog
        self.btf = btf
        self._cache: dict[int, Type] = {}
        self._building: set[int] = set()

    # ------------------------------------------------------------------ the finder callback

    def __call__(
        self, prog: Program, kinds: TypeKindSet, name: str, filename: str | None
    ) -> Type | None:
        """``register_type_finder`` callback: the type called *name* of one of *kinds*."""
        wanted: list[int] = []
        for k in kinds:
            wanted.extend(_BY_DRGN_KIND.get(k, ()))
        if not wanted:
            return None
        ids = self.btf.find(name, set(wanted))
        if not ids:
            return None
        want_bool = TypeKind.BOOL in kinds and TypeKind.INT not in kinds
        for tid in ids:
            t = self.type_of(tid)
            if t.kind in kinds and (not want_bool or t.kind == TypeKind.BOOL):
                return t
        return None

    # ------------------------------------------------------------------ construction

    def type_of(self, type_id: int) -> Type:
        """The drgn type of BTF type *type_id* (0 is ``void``).

        :raises BtfError: a damaged type (bad id, loop of qualifiers or typedefs).
        """
        t = self._cache.get(type_id)
        if t is not None:
            return t
        if type_id == 0:
            t = self.prog.void_type()
        else:
            if type_id in self._building:
                raise BtfError(f"BTF type {type_id} refers to itself")
            self._building.add(type_id)
            try:
                t = self._build(type_id)
            except (ValueError, TypeError, OverflowError) as e:
                # drgn refuses what no compiler emits (a bit field wider than its type,
                # an integer of 2^24 bytes): the blob is damaged.
                raise BtfError(f"BTF type {type_id} is not a valid C type: {e}") from None
            finally:
                self._building.discard(type_id)
        self._cache[type_id] = t
        return t

    def _lazy(self, type_id: int, bit_field_size: int = 0) -> Callable[[], Type | Object]:
        def thunk() -> Type | Object:
            t = self.type_of(type_id)
            try:
                # drgn makes an absent object of the member's type anyway; made here, its
                # refusal (a bit field wider than its type) is a BtfError.
                return Object(self.prog, t, bit_field_size=bit_field_size or None)
            except (ValueError, TypeError, OverflowError) as e:
                raise BtfError(f"BTF member of type {type_id}: {e}") from None
        return thunk

    def _build(self, type_id: int) -> Type:
        b = self.btf
        bt = b.type(type_id)
        prog = self.prog
        name = bt.name or None
        k = bt.kind
        if k in (BtfKind.INT, BtfKind.ENUM, BtfKind.ENUM64, BtfKind.FLOAT) and (
            bt.size_or_type not in _SIZES
        ):
            # kernel/bpf/btf.c (btf_int_check_meta(), btf_enum_check_meta()) refuses these.
            raise BtfError(f"BTF type {type_id} ({bt.kind_name}) has size {bt.size_or_type}")
        if k == BtfKind.INT:
            enc, _off, _bits = b.int_encoding(type_id)
            if enc & 4:
                return prog.bool_type(bt.name or "_Bool", bt.size_or_type)
            return prog.int_type(bt.name or "int", bt.size_or_type, bool(enc & 1))
        if k == BtfKind.FLOAT:
            return prog.float_type(bt.name or "double", bt.size_or_type)
        if k == BtfKind.PTR:
            return prog.pointer_type(self.type_of(bt.size_or_type))
        if k == BtfKind.ARRAY:
            elem, _index, nelems = b.array(type_id)
            return prog.array_type(self.type_of(elem), nelems)
        if k in (BtfKind.STRUCT, BtfKind.UNION):
            btf_members = b.members(type_id)
            members = [
                TypeMember(self._lazy(m.type, m.bit_field_size), m.name or None, m.bit_offset)
                for m in btf_members
            ]
            make = prog.struct_type if k == BtfKind.STRUCT else prog.union_type
            return make(name, bt.size_or_type, members)
        if k in (BtfKind.ENUM, BtfKind.ENUM64):
            size = bt.size_or_type
            values = b.enum_values(type_id)
            signed = bt.kind_flag or any(v < 0 for _, v in values)
            base = _INT_NAMES.get(size, "long")
            compat = prog.int_type(base if signed else f"unsigned {base}", size or 4, signed)
            return prog.enum_type(name, compat, [TypeEnumerator(n, v) for n, v in values])
        if k == BtfKind.FWD:
            return prog.union_type(name) if bt.kind_flag else prog.struct_type(name)
        if k == BtfKind.TYPEDEF:
            return prog.typedef_type(bt.name, self.type_of(bt.size_or_type))
        if k in _QUALIFIER or k == BtfKind.TYPE_TAG:
            return self._qualified(type_id)
        if k == BtfKind.FUNC_PROTO:
            params = b.params(type_id)
            variadic = bool(params) and params[-1].type == 0
            if variadic:
                params = params[:-1]
            return prog.function_type(
                self.type_of(bt.size_or_type),
                [TypeParameter(self._lazy(p.type), p.name or None) for p in params],
                variadic,
            )
        if k == BtfKind.FUNC:
            return self.type_of(bt.size_or_type)
        if k == BtfKind.VAR:
            return self.type_of(bt.size_or_type)
        raise BtfError(f"BTF type {type_id} ({bt.kind_name}) is not a C type")

    def _qualified(self, type_id: int) -> Type:
        """CONST/VOLATILE/RESTRICT (and TYPE_TAG, which C does not see) down to a type."""
        quals = Qualifiers.NONE
        tid = type_id
        for _ in range(_MAX_CHAIN):
            k = self.btf.kind(tid) if tid else BtfKind.UNKN
            if k in _QUALIFIER:
                quals |= _QUALIFIER[k]
            elif k != BtfKind.TYPE_TAG:
                break
            tid = self.btf.type(tid).size_or_type
        else:
            raise BtfError(f"BTF type {type_id}: qualifier chain longer than {_MAX_CHAIN}")
        if tid in self._building:
            raise BtfError(f"BTF type {type_id} refers to itself")
        base = self.type_of(tid)
        return base.qualified(base.qualifiers | quals) if quals else base


def register_btf_types(
    prog: Program, btf: Btf, *, name: str = "subsecinspect-btf"
) -> BtfTypeFinder:
    """Register a :class:`BtfTypeFinder` of *btf* as *prog*'s first type finder."""
    finder = BtfTypeFinder(prog, btf)
    try:
        prog.register_type_finder(name, finder, enable_index=0)
    except ValueError as e:  # a second registration under the same name
        raise BtfError(f"cannot register the BTF type finder: {e}") from None
    return finder
