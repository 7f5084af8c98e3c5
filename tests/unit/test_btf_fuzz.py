"""Fuzzing the BTF reader and the drgn type finder: damaged blobs give BtfError, never another
exception or a hang (hypothesis; the blob is the every-kind one of btfbuild.py)."""

from __future__ import annotations

import drgn
from btfbuild import every_kind_blob
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from subsecinspect.debuginfo.btf import Btf, BtfError
from subsecinspect.debuginfo.btf_records import BtfKind
from subsecinspect.debuginfo.btf_types import BtfTypeFinder

BLOB, _ = every_kind_blob()
_PLATFORM = drgn.Platform(drgn.Architecture.X86_64,
                          drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN)


def _exercise(data: bytes) -> None:
    """Everything a run does with a blob: open, every header, trailer, name, drgn type."""
    try:
        b = Btf(data)
        finder = BtfTypeFinder(drgn.Program(_PLATFORM), b)
        for t in b:
            b.find(t.name)
            kind = t.kind
            if kind in (BtfKind.STRUCT, BtfKind.UNION):
                b.members(t.id)
            elif kind in (BtfKind.ENUM, BtfKind.ENUM64):
                for name, _ in b.enum_values(t.id):
                    b.enumerator(name)
            elif kind == BtfKind.DATASEC:
                b.datasec(t.id)
            if kind not in (BtfKind.DATASEC, BtfKind.DECL_TAG):
                ty = finder.type_of(t.id)
                if ty.kind in (drgn.TypeKind.STRUCT, drgn.TypeKind.UNION) and ty.members:
                    for m in ty.members:
                        m.type  # noqa: B018  (forces the lazy member type)
    except BtfError:
        pass


@settings(max_examples=300, deadline=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(st.integers(0, len(BLOB) - 1), st.integers(0, 255)), max_size=8))
def test_flipped_bytes(flips: list[tuple[int, int]]) -> None:
    data = bytearray(BLOB)
    for pos, value in flips:
        data[pos] = value
    _exercise(bytes(data))


@settings(max_examples=200, deadline=2000)
@given(st.integers(0, len(BLOB)))
def test_truncated(length: int) -> None:
    _exercise(BLOB[:length])


@settings(max_examples=200, deadline=2000)
@given(st.binary(max_size=512))
def test_garbage(data: bytes) -> None:
    _exercise(data)


def test_self_referencing_typedef_is_an_error() -> None:
    from btfbuild import BtfBuilder

    b = BtfBuilder()
    b.add(BtfKind.TYPEDEF, "loop", size_or_type=2)
    b.add(BtfKind.CONST, size_or_type=1)
    finder = BtfTypeFinder(drgn.Program(_PLATFORM), Btf(b.build()))
    try:
        finder.type_of(1)
    except BtfError as e:
        assert "refers to itself" in str(e) or "chain" in str(e)
    else:
        raise AssertionError("a typedef loop built a type")
