"""BTF: a lazy reader of the kernel's BPF Type Format blob.

Mirrors the format of Documentation/bpf/btf.rst and include/uapi/linux/btf.h
(``struct btf_header``, ``struct btf_type`` and the per-kind trailers): the
``.BTF`` section of vmlinux, ``/sys/kernel/btf/vmlinux`` on a live kernel, or
the same bytes read from a vmcore between ``__start_BTF`` and ``__stop_BTF``.

Opening a blob costs one pass over the type section (the start of every type
and its name offset, from a ``u32`` view of the bytes); names are indexed on
first lookup and a type's trailer (members, enumerators, parameters) is decoded
only when asked for. Every offset and type id is bounds-checked: a damaged or
truncated blob raises :class:`BtfError`, never an ``IndexError`` or a loop.
"""

from __future__ import annotations

import struct
from array import array
from collections.abc import Iterator

from subsecinspect.debuginfo.btf_records import (
    KIND_NAMES,
    BtfKind,
    BtfMember,
    BtfParam,
    BtfType,
    BtfVarSecinfo,
)
from subsecinspect.errors import DebugInfoError

__all__ = ("BTF_MAGIC", "Btf", "BtfError")

#: include/uapi/linux/btf.h: ``#define BTF_MAGIC 0xeB9F`` (read little-endian).
BTF_MAGIC = 0xEB9F
_HDR = struct.Struct("<HBBIIIII")  # magic, version, flags, hdr_len, type/str off+len
#: Highest type id the format can express (``BTF_MAX_TYPE``).
_MAX_TYPE = 0x000FFFFF


class BtfError(DebugInfoError):
    """The BTF blob is damaged, truncated or of an unknown version."""


_BASE = {1: 1, 3: 3, 14: 1, 17: 1}
_PER_VLEN = {4: 3, 5: 3, 6: 2, 13: 2, 15: 3, 19: 3}
_EXTRA = [
    (_BASE.get(k, 0), _PER_VLEN.get(k, 0)) if 1 <= k <= 19 else None for k in range(32)
]


def _parse_header(data: memoryview) -> tuple[int, int, bytes]:
    if len(data) < _HDR.size:
        raise BtfError(f"BTF blob of {len(data)} bytes is shorter than its header")
    magic, version, _flags, hdr_len, type_off, type_len, str_off, str_len = _HDR.unpack_from(
        data
    )
    if magic == 0x9FEB:
        raise BtfError("big-endian BTF is not supported")
    if magic != BTF_MAGIC:
        raise BtfError(f"not BTF: magic {magic:#06x} (expected {BTF_MAGIC:#06x})")
    if version != 1:
        raise BtfError(f"unknown BTF version {version}")
    if hdr_len < _HDR.size or hdr_len > len(data):
        raise BtfError(f"BTF header length {hdr_len} is out of bounds")
    body = len(data) - hdr_len
    for what, off, ln in (("type", type_off, type_len), ("string", str_off, str_len)):
        if off + ln > body:
            raise BtfError(
                f"truncated BTF: the {what} section ends at {hdr_len + off + ln}, "
                f"the blob has {len(data)} bytes"
            )
    if type_len % 4 or type_off % 4:
        raise BtfError("BTF type section is not 4-byte aligned")
    if str_len == 0 or data[hdr_len + str_off] != 0:
        raise BtfError("BTF string section does not start with the empty string")
    if data[hdr_len + str_off + str_len - 1] != 0:
        raise BtfError("BTF string section is not NUL-terminated")
    strs = bytes(data[hdr_len + str_off : hdr_len + str_off + str_len])
    return hdr_len + type_off, hdr_len + type_off + type_len, strs


class Btf:
    """A parsed BTF blob: type ids ``1..nr_types`` (0 is ``void``).

    :param data: the blob (``bytes`` or anything with the buffer protocol).
    :param offsets: a previous :meth:`scan_result` of the same bytes (the cache of
        :mod:`subsecinspect.debuginfo.btfcache`), which skips the scan.
    :raises BtfError: damaged or truncated.
    """

    def __init__(
        self, data: bytes | bytearray | memoryview, offsets: tuple[array, array] | None = None
    ) -> None:
        self._blob = data if isinstance(data, bytes) else bytes(data)
        self._raw = memoryview(self._blob)
        # The type section's byte span in the blob: enumerator() searches it in place.
        self._t0, self._t1, self._strs = _parse_header(self._raw)
        self._w = self._raw[self._t0 : self._t1].cast("I")
        if offsets is not None and len(offsets[0]) == len(offsets[1]) and len(offsets[0]) > 0:
            self._offs, self._name_offs = offsets
        else:
            self._offs, self._name_offs = self._scan(self._w)
        #: Lookups already answered (name -> type ids; enumerator -> (id, value) or None):
        #: what the per-build-ID cache keeps, so that a warm run searches nothing.
        self.memo_names: dict[str, list[int]] = {}
        self.memo_enums: dict[str, tuple[int, int] | None] = {}
        self._enum_index: dict[str, tuple[int, int]] | None = None
        self._name_bytes: bytes | None = None
        self._str_at: dict[int, str] = {}

    def scan_result(self) -> tuple[array, array]:
        """``(word offset, name offset)`` of every type id: what the cache stores."""
        return self._offs, self._name_offs

    @staticmethod
    def _scan(w: memoryview) -> tuple[array, array]:
        """Word offset and name offset of every type, in id order (one pass)."""
        offs = array("I", [0])
        names = array("I", [0])
        n = len(w)
        i = 0
        extra = _EXTRA
        append_off = offs.append
        append_name = names.append
        while i < n:
            if i + 3 > n:
                raise BtfError(f"truncated BTF: type {len(offs)} is cut at its header")
            info = w[i + 1]
            e = extra[(info >> 24) & 0x1F]
            if e is None:
                raise BtfError(
                    f"BTF type {len(offs)} has unknown kind {(info >> 24) & 0x1F} "
                    f"(at byte {4 * i} of the type section)"
                )
            append_off(i)
            append_name(w[i])
            i += 3 + e[0] + e[1] * (info & 0xFFFF)
        if i > n:
            raise BtfError(f"truncated BTF: type {len(offs) - 1} runs past the type section")
        if len(offs) - 1 > _MAX_TYPE:
            raise BtfError(f"BTF has {len(offs) - 1} types, more than the format allows")
        return offs, names

    # ------------------------------------------------------------------ strings and headers

    @property
    def nr_types(self) -> int:
        """Number of types (the highest type id)."""
        return len(self._offs) - 1

    def string(self, off: int) -> str:
        """The NUL-terminated string at *off* of the string section."""
        s = self._str_at.get(off)
        if s is None:
            if off >= len(self._strs):
                raise BtfError(f"BTF string offset {off} is past the string section")
            end = self._strs.index(b"\0", off)  # the section ends with NUL: always found
            s = self._str_at[off] = self._strs[off:end].decode("utf-8", "replace")
        return s

    def _check_id(self, type_id: int) -> int:
        if not 0 < type_id < len(self._offs):
            raise BtfError(f"BTF type id {type_id} is out of range (1..{self.nr_types})")
        return self._offs[type_id]

    def type(self, type_id: int) -> BtfType:
        """The header of type *type_id*.

        :raises BtfError: no such id.
        """
        i = self._check_id(type_id)
        w = self._w
        info = w[i + 1]
        return BtfType(
            id=type_id,
            kind=(info >> 24) & 0x1F,
            name=self.string(w[i]),
            vlen=info & 0xFFFF,
            kind_flag=bool(info >> 31),
            size_or_type=w[i + 2],
        )

    def kind(self, type_id: int) -> int:
        """``BTF_INFO_KIND`` of *type_id* without decoding the rest."""
        return (self._w[self._check_id(type_id) + 1] >> 24) & 0x1F

    def __iter__(self) -> Iterator[BtfType]:
        for tid in range(1, len(self._offs)):
            yield self.type(tid)

    # ------------------------------------------------------------------ names

    def _string_offsets(self, name: str) -> list[int]:
        """Every offset of the string section where *name* starts as a whole string.

        A search of the section (C speed) instead of an index of all names: a lookup
        costs ~0.2 ms on the 2 MB string section of 6.1, and opening a blob builds
        nothing. Writers (pahole, libbpf's strset) dedup strings and never share
        suffixes, so a name used by a type starts after a NUL.
        """
        needle = b"\0" + name.encode() + b"\0"
        out = []
        pos = self._strs.find(needle)
        while pos >= 0:
            out.append(pos + 1)
            pos = self._strs.find(needle, pos + 1)
        return out

    @staticmethod
    def _word_hits(words: bytes, value: int, start: int = 0, end: int | None = None
                   ) -> Iterator[int]:
        """Indexes of the u32 words of ``words[start:end]`` that hold *value*."""
        needle = struct.pack("<I", value)
        end = len(words) if end is None else end
        pos = words.find(needle, start, end)
        while pos >= 0:
            if (pos - start) % 4 == 0:
                yield (pos - start) // 4
                pos = words.find(needle, pos + 4, end)
            else:
                pos = words.find(needle, pos + 1, end)

    def find(self, name: str, kinds: frozenset[int] | set[int] | None = None) -> list[int]:
        """Ids of the types called *name*, of one of *kinds* if given, in id order."""
        ids = self.memo_names.get(name)
        if ids is None:
            if self._name_bytes is None:
                self._name_bytes = self._name_offs.tobytes()
            found: list[int] = []
            for off in self._string_offsets(name):
                found.extend(self._word_hits(self._name_bytes, off))
            ids = self.memo_names[name] = sorted(found)
        if kinds is None:
            return list(ids)
        return [t for t in ids if self.kind(t) in kinds]

    def enumerator(self, name: str) -> tuple[int, int] | None:
        """``(enum type id, value)`` of the enumerator *name* (lowest enum id), or ``None``.

        The first miss of the memo indexes every ENUM/ENUM64 once (25 ms on 6.1's 1,765
        enums, where one search of the type section for a name offset costs ~5 ms).
        """
        if name in self.memo_enums:
            return self.memo_enums[name]
        if self._enum_index is None:
            index: dict[str, tuple[int, int]] = {}
            w, offs = self._w, self._offs
            for tid in range(1, len(offs)):
                if (w[offs[tid] + 1] >> 24) & 0x1F in (BtfKind.ENUM, BtfKind.ENUM64):
                    for ename, value in self.enum_values(tid):
                        index.setdefault(ename, (tid, value))
            self._enum_index = index
        hit = self.memo_enums[name] = self._enum_index.get(name)
        return hit

    # ------------------------------------------------------------------ trailers

    def _trailer(self, type_id: int, kinds: tuple[int, ...]) -> tuple[int, int, int]:
        """``(word index after the header, vlen, info)``; checks the kind."""
        i = self._check_id(type_id)
        info = self._w[i + 1]
        kind = (info >> 24) & 0x1F
        if kind not in kinds:
            raise BtfError(
                f"BTF type {type_id} is a {KIND_NAMES.get(kind, kind)}, "
                f"not {'/'.join(KIND_NAMES[k] for k in kinds)}"
            )
        return i + 3, info & 0xFFFF, info

    def int_encoding(self, type_id: int) -> tuple[int, int, int]:
        """INT: ``(encoding, bit offset, bits)``; encoding bits SIGNED 1, CHAR 2, BOOL 4."""
        j, _, _ = self._trailer(type_id, (BtfKind.INT,))
        v = self._w[j]
        return (v >> 24) & 0x0F, (v >> 16) & 0xFF, v & 0xFF

    def array(self, type_id: int) -> tuple[int, int, int]:
        """ARRAY: ``(element type, index type, nelems)``."""
        j, _, _ = self._trailer(type_id, (BtfKind.ARRAY,))
        w = self._w
        return w[j], w[j + 1], w[j + 2]

    def members(self, type_id: int) -> list[BtfMember]:
        """STRUCT/UNION members; with ``kind_flag`` the offset word packs the bit-field size."""
        j, vlen, info = self._trailer(type_id, (BtfKind.STRUCT, BtfKind.UNION))
        w = self._w
        kflag = info >> 31
        out = []
        for k in range(j, j + 3 * vlen, 3):
            off = w[k + 2]
            if kflag:
                out.append(BtfMember(self.string(w[k]), w[k + 1], off & 0xFFFFFF, off >> 24))
            else:
                out.append(BtfMember(self.string(w[k]), w[k + 1], off, 0))
        return out

    def enum_values(self, type_id: int) -> list[tuple[str, int]]:
        """ENUM/ENUM64 ``(name, value)``; signed when ``kind_flag`` is set (v6.0)."""
        j, vlen, info = self._trailer(type_id, (BtfKind.ENUM, BtfKind.ENUM64))
        w = self._w
        signed = bool(info >> 31)
        out = []
        if (info >> 24) & 0x1F == BtfKind.ENUM:
            for k in range(j, j + 2 * vlen, 2):
                v = w[k + 1]
                # Before v6.0 (6089fb325cf7) kind_flag was always 0 and btf_enum.val an
                # __s32, so a negative enumerator of an old blob reads as a large value.
                if signed and v & 0x80000000:
                    v -= 1 << 32
                out.append((self.string(w[k]), v))
        else:
            for k in range(j, j + 3 * vlen, 3):
                v = w[k + 1] | w[k + 2] << 32
                if signed and v >> 63:
                    v -= 1 << 64
                out.append((self.string(w[k]), v))
        return out

    def params(self, type_id: int) -> list[BtfParam]:
        """FUNC_PROTO parameters (the return type is ``size_or_type``)."""
        j, vlen, _ = self._trailer(type_id, (BtfKind.FUNC_PROTO,))
        w = self._w
        return [BtfParam(self.string(w[k]), w[k + 1]) for k in range(j, j + 2 * vlen, 2)]

    def var_linkage(self, type_id: int) -> int:
        """VAR: ``btf_var.linkage`` (0 static, 1 global, 2 extern)."""
        j, _, _ = self._trailer(type_id, (BtfKind.VAR,))
        return self._w[j]

    def datasec(self, type_id: int) -> list[BtfVarSecinfo]:
        """DATASEC entries: each VAR's type id, offset in the section and size."""
        j, vlen, _ = self._trailer(type_id, (BtfKind.DATASEC,))
        w = self._w
        return [BtfVarSecinfo(w[k], w[k + 1], w[k + 2]) for k in range(j, j + 3 * vlen, 3)]

    def decl_tag_component(self, type_id: int) -> int:
        """DECL_TAG: ``component_idx`` (-1 for the whole declaration)."""
        j, _, _ = self._trailer(type_id, (BtfKind.DECL_TAG,))
        v = self._w[j]
        return v - (1 << 32) if v & 0x80000000 else v
