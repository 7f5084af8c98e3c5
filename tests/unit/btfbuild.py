"""A hand-made BTF blob builder for the parser tests (the layout of Documentation/bpf/btf.rst)."""

from __future__ import annotations

import struct

from subsecinspect.debuginfo.btf_records import BtfKind

__all__ = ("BtfBuilder", "every_kind_blob")


class BtfBuilder:
    """Types are appended in id order (the first is id 1); strings are deduplicated."""

    def __init__(self) -> None:
        self.strings = bytearray(b"\0")
        self._str_at: dict[str, int] = {"": 0}
        self.types: list[bytes] = []

    def s(self, text: str) -> int:
        if text not in self._str_at:
            self._str_at[text] = len(self.strings)
            self.strings += text.encode() + b"\0"
        return self._str_at[text]

    def add(self, kind: int, name: str = "", vlen: int = 0, kflag: bool = False,
            size_or_type: int = 0, words: tuple[int, ...] = ()) -> int:
        info = (int(kflag) << 31) | (kind << 24) | vlen
        self.types.append(struct.pack(f"<III{len(words)}I", self.s(name), info, size_or_type,
                                      *[w & 0xFFFFFFFF for w in words]))
        return len(self.types)

    def build(self, *, hdr_extra: bytes = b"") -> bytes:
        types = b"".join(self.types)
        hdr_len = 24 + len(hdr_extra)
        hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, hdr_len, 0, len(types), len(types),
                          len(self.strings))
        return hdr + hdr_extra + types + bytes(self.strings)


def every_kind_blob() -> tuple[bytes, dict[str, int]]:
    """A blob with one type of every kind (ids by role), modelled on what pahole emits."""
    b = BtfBuilder()
    ids: dict[str, int] = {}
    K = BtfKind
    ids["int"] = b.add(K.INT, "int", size_or_type=4, words=((1 << 24) | 32,))
    ids["ulong"] = b.add(K.INT, "long unsigned int", size_or_type=8, words=(64,))
    ids["bool"] = b.add(K.INT, "_Bool", size_or_type=1, words=((4 << 24) | 8,))
    ids["ptr"] = b.add(K.PTR, size_or_type=ids["ulong"])
    ids["array"] = b.add(K.ARRAY, words=(ids["ulong"], ids["int"], 4))
    # struct s { unsigned long a; int b:3; int c:5; unsigned long d[4]; }  (kind_flag set)
    ids["struct"] = b.add(K.STRUCT, "s", vlen=4, kflag=True, size_or_type=48, words=(
        b.s("a"), ids["ulong"], 0,
        b.s("b"), ids["int"], (3 << 24) | 64,
        b.s("c"), ids["int"], (5 << 24) | 67,
        b.s("d"), ids["array"], 128,
    ))
    ids["union"] = b.add(K.UNION, "u", vlen=2, size_or_type=8, words=(
        b.s("x"), ids["int"], 0, b.s("y"), ids["ulong"], 0,
    ))
    ids["enum"] = b.add(K.ENUM, "e", vlen=2, kflag=True, size_or_type=4, words=(
        b.s("E_NEG"), -1, b.s("E_ONE"), 1,
    ))
    ids["enum64"] = b.add(K.ENUM64, "e64", vlen=1, size_or_type=8, words=(
        b.s("E_BIG"), 0x89ABCDEF, 0x01234567,
    ))
    ids["fwd"] = b.add(K.FWD, "opaque")
    ids["typedef"] = b.add(K.TYPEDEF, "s_t", size_or_type=ids["struct"])
    ids["volatile"] = b.add(K.VOLATILE, size_or_type=ids["int"])
    ids["const"] = b.add(K.CONST, size_or_type=ids["volatile"])
    ids["restrict"] = b.add(K.RESTRICT, size_or_type=ids["ptr"])
    ids["proto"] = b.add(K.FUNC_PROTO, vlen=2, size_or_type=ids["int"], words=(
        b.s("n"), ids["ulong"], 0, 0,  # (unsigned long n, ...)
    ))
    ids["func"] = b.add(K.FUNC, "f", vlen=1, size_or_type=ids["proto"])
    ids["var"] = b.add(K.VAR, "v", size_or_type=ids["int"], words=(1,))
    ids["datasec"] = b.add(K.DATASEC, ".data..percpu", vlen=1, size_or_type=4,
                           words=(ids["var"], 0, 4))
    ids["float"] = b.add(K.FLOAT, "double", size_or_type=8)
    ids["decl_tag"] = b.add(K.DECL_TAG, "user", size_or_type=ids["struct"], words=(1,))
    ids["type_tag"] = b.add(K.TYPE_TAG, "percpu", size_or_type=ids["int"])
    ids["ptr_tagged"] = b.add(K.PTR, size_or_type=ids["type_tag"])
    return b.build(), ids
