"""The BTF reader on hand-made blobs: every kind decoded, every damage a BtfError (exit 4)."""

from __future__ import annotations

import struct

import pytest
from btfbuild import BtfBuilder, every_kind_blob

from subsecinspect.debuginfo.btf import Btf, BtfError
from subsecinspect.debuginfo.btf_records import BtfKind, BtfMember, BtfVarSecinfo
from subsecinspect.errors import DebugInfoError

BLOB, IDS = every_kind_blob()


def test_btf_error_is_a_debug_info_error() -> None:
    assert issubclass(BtfError, DebugInfoError) and BtfError.exit_code == 4


def test_every_kind_is_decoded() -> None:
    b = Btf(BLOB)
    assert b.nr_types == len(IDS)
    kinds = {t.kind for t in b}
    assert kinds == set(range(1, 20)), sorted(set(range(1, 20)) - kinds)
    assert b.int_encoding(IDS["int"]) == (1, 0, 32)
    assert b.int_encoding(IDS["bool"]) == (4, 0, 8)
    assert b.array(IDS["array"]) == (IDS["ulong"], IDS["int"], 4)
    assert b.members(IDS["struct"]) == [
        BtfMember("a", IDS["ulong"], 0, 0),
        BtfMember("b", IDS["int"], 64, 3),
        BtfMember("c", IDS["int"], 67, 5),
        BtfMember("d", IDS["array"], 128, 0),
    ]
    assert [m.bit_field_size for m in b.members(IDS["union"])] == [0, 0]
    assert b.enum_values(IDS["enum"]) == [("E_NEG", -1), ("E_ONE", 1)]
    assert b.enum_values(IDS["enum64"]) == [("E_BIG", 0x0123456789ABCDEF)]
    assert [(p.name, p.type) for p in b.params(IDS["proto"])] == [("n", IDS["ulong"]), ("", 0)]
    assert b.type(IDS["func"]).size_or_type == IDS["proto"]
    assert b.var_linkage(IDS["var"]) == 1
    assert b.datasec(IDS["datasec"]) == [BtfVarSecinfo(IDS["var"], 0, 4)]
    assert b.decl_tag_component(IDS["decl_tag"]) == 1
    assert b.type(IDS["fwd"]).name == "opaque"


def test_names_and_enumerators() -> None:
    b = Btf(BLOB)
    assert b.find("s") == [IDS["struct"]]
    assert b.find("s", {BtfKind.UNION}) == []
    assert b.find("nope") == []
    assert b.enumerator("E_ONE") == (IDS["enum"], 1)
    assert b.enumerator("E_BIG") == (IDS["enum64"], 0x0123456789ABCDEF)
    # "a" is a member name, "n" a parameter name: neither is an enumerator.
    assert b.enumerator("a") is None and b.enumerator("n") is None


def test_wrong_kind_trailer_is_refused() -> None:
    with pytest.raises(BtfError, match="is a INT, not STRUCT/UNION"):
        Btf(BLOB).members(IDS["int"])


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda d: d[:10], "shorter than its header"),
        (lambda d: b"\xeb\x9f" + d[2:], "big-endian"),
        (lambda d: b"\x00\x00" + d[2:], "not BTF: magic"),
        (lambda d: d[:2] + b"\x02" + d[3:], "unknown BTF version"),
        (lambda d: d[:-5], "truncated BTF"),
        (lambda d: d[:4] + struct.pack("<I", 1 << 30) + d[8:], "header length"),
    ],
)
def test_damaged_headers(mutate: object, message: str) -> None:
    with pytest.raises(BtfError, match=message):
        Btf(mutate(BLOB))  # type: ignore[operator]


def test_unknown_kind_and_overrun() -> None:
    b = BtfBuilder()
    b.add(25, "x")
    with pytest.raises(BtfError, match="unknown kind 25"):
        Btf(b.build())
    b = BtfBuilder()
    b.add(BtfKind.STRUCT, "big", vlen=1000, size_or_type=8)  # members missing
    with pytest.raises(BtfError, match="runs past the type section"):
        Btf(b.build())


def test_bad_ids_and_strings() -> None:
    b = BtfBuilder()
    b.add(BtfKind.PTR, size_or_type=99)
    btf = Btf(b.build())
    with pytest.raises(BtfError, match="out of range"):
        btf.type(99)
    with pytest.raises(BtfError, match="out of range"):
        btf.type(0)
    with pytest.raises(BtfError, match="past the string section"):
        btf.string(10_000)


def test_header_may_be_longer() -> None:
    """A newer writer may append header fields: hdr_len says where the sections start."""
    b = BtfBuilder()
    b.add(BtfKind.INT, "int", size_or_type=4, words=(32,))
    assert Btf(b.build(hdr_extra=b"\0" * 8)).find("int") == [1]
