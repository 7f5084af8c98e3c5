"""BTF records: the kinds of Documentation/bpf/btf.rst and the decoded type headers and trailers.

What :class:`subsecinspect.debuginfo.btf.Btf` hands out (include/uapi/linux/btf.h:
``BTF_KIND_*``, ``struct btf_type``, ``struct btf_member``, ``struct btf_param``,
``struct btf_var_secinfo``), kept apart from the reader so both it and the type finder
(:mod:`subsecinspect.debuginfo.btf_types`) import them from one place.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ("KIND_NAMES", "BtfKind", "BtfMember", "BtfParam", "BtfType", "BtfVarSecinfo")


class BtfKind:
    """``BTF_KIND_*`` (include/uapi/linux/btf.h); ENUM64 is v6.0 (6089fb325cf7)."""

    UNKN = 0
    INT = 1
    PTR = 2
    ARRAY = 3
    STRUCT = 4
    UNION = 5
    ENUM = 6
    FWD = 7
    TYPEDEF = 8
    VOLATILE = 9
    CONST = 10
    RESTRICT = 11
    FUNC = 12
    FUNC_PROTO = 13
    VAR = 14
    DATASEC = 15
    FLOAT = 16
    DECL_TAG = 17
    TYPE_TAG = 18
    ENUM64 = 19


KIND_NAMES = {v: k for k, v in vars(BtfKind).items() if not k.startswith("_")}

# Words after the 3-word struct btf_type: _BASE[kind] + _PER_VLEN[kind] * vlen (btf.rst §2.2).


@dataclass(frozen=True, slots=True)
class BtfType:
    """One ``struct btf_type`` header, decoded."""

    id: int
    kind: int
    name: str
    vlen: int
    kind_flag: bool
    #: ``size`` (INT, ENUM, STRUCT, UNION, DATASEC, FLOAT, ENUM64) or ``type`` (the rest).
    size_or_type: int

    @property
    def kind_name(self) -> str:
        """``"STRUCT"``, ``"INT"``, ..."""
        return KIND_NAMES.get(self.kind, f"kind{self.kind}")


@dataclass(frozen=True, slots=True)
class BtfMember:
    """``struct btf_member``; *bit_field_size* is 0 when not a bit field."""

    name: str
    type: int
    bit_offset: int
    bit_field_size: int


@dataclass(frozen=True, slots=True)
class BtfParam:
    """``struct btf_param`` of a FUNC_PROTO (type 0 as the last one means ``...``)."""

    name: str
    type: int


@dataclass(frozen=True, slots=True)
class BtfVarSecinfo:
    """``struct btf_var_secinfo`` of a DATASEC."""

    type: int
    offset: int
    size: int
