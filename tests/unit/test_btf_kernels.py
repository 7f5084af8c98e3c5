"""The BTF reader and type finder on the real ``.BTF`` sections of the four lab kernels.

The blobs are taken from the lab cache's vmlinux files (not committed: 3-5 MB each). Every
type of every blob is decoded, and the layouts the readers use (struct page, mem_section,
dev_pagemap, ...) must equal what drgn reads from the same vmlinux's DWARF: member names,
bit offsets, bit-field sizes and sizes. Outside CI a kernel whose cache is absent is skipped
with the build command; under ``CI=true`` that is a failure, as in tests/vm/conftest.py.
"""

from __future__ import annotations

import os
import struct
from collections import Counter
from functools import cache
from pathlib import Path

import drgn
import pytest
from drgn import TypeKind, sizeof

from lab import images
from lab.matrix import load_matrix
from subsecinspect.debuginfo.btf import Btf
from subsecinspect.debuginfo.btf_records import BtfKind
from subsecinspect.debuginfo.btf_types import register_btf_types

KERNELS = load_matrix().ids
_PLATFORM = drgn.Platform(drgn.Architecture.X86_64,
                          drgn.PlatformFlags.IS_64_BIT | drgn.PlatformFlags.IS_LITTLE_ENDIAN)
#: The types the readers of subsecinspect/kernel look at (and a few they reach through them).
LAYOUTS = (
    "struct page", "struct mem_section", "struct mem_section_usage", "struct dev_pagemap",
    "struct vmem_altmap", "struct xa_node", "struct xarray", "struct pglist_data",
    "struct zone", "struct memory_block", "struct uts_namespace", "struct range",
    "struct percpu_ref", "nodemask_t", "enum memory_type", "enum pageflags", "enum zone_type",
)


def _vmlinux(kernel_id: str) -> Path:
    path = images.paths(kernel_id).vmlinux
    if not path.exists():
        msg = (f"no vmlinux of kernel {kernel_id} in the lab cache ({path}); build it with: "
               f"python -m lab.images build --kernel {kernel_id}")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"lab prerequisite missing in CI: {msg}", pytrace=False)
        pytest.skip(msg)
    return path


def elf_section(path: Path, name: str) -> bytes:
    """The bytes of ELF64 section *name* (what ``objcopy --dump-section`` writes)."""
    with open(path, "rb") as f:
        hdr = f.read(64)
        shoff, = struct.unpack_from("<Q", hdr, 40)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", hdr, 58)
        f.seek(shoff)
        shdrs = f.read(shentsize * shnum)

        def sh(i: int) -> tuple[int, int, int]:
            n, = struct.unpack_from("<I", shdrs, i * shentsize)
            off, size = struct.unpack_from("<QQ", shdrs, i * shentsize + 24)
            return n, off, size

        _, stroff, strsize = sh(shstrndx)
        f.seek(stroff)
        names = f.read(strsize)
        for i in range(shnum):
            n, off, size = sh(i)
            if names[n : names.index(b"\0", n)] == name.encode():
                f.seek(off)
                return f.read(size)
    raise AssertionError(f"{path} has no {name} section")


@cache
def _blob(kernel_id: str) -> bytes:
    return elf_section(_vmlinux(kernel_id), ".BTF")


@pytest.mark.parametrize("kernel_id", KERNELS)
def test_every_type_decodes(kernel_id: str) -> None:
    b = Btf(_blob(kernel_id))
    kinds: Counter[int] = Counter()
    decode = {
        BtfKind.INT: b.int_encoding, BtfKind.ARRAY: b.array, BtfKind.STRUCT: b.members,
        BtfKind.UNION: b.members, BtfKind.ENUM: b.enum_values, BtfKind.ENUM64: b.enum_values,
        BtfKind.FUNC_PROTO: b.params, BtfKind.VAR: b.var_linkage, BtfKind.DATASEC: b.datasec,
        BtfKind.DECL_TAG: b.decl_tag_component,
    }
    for t in b:
        kinds[t.kind] += 1
        if t.kind in decode:
            decode[t.kind](t.id)
    # What pahole emits for every lab kernel (x86_64 Debian configs).
    must = {BtfKind.INT, BtfKind.PTR, BtfKind.ARRAY, BtfKind.STRUCT, BtfKind.UNION,
            BtfKind.ENUM, BtfKind.FWD, BtfKind.TYPEDEF, BtfKind.VOLATILE, BtfKind.CONST,
            BtfKind.RESTRICT, BtfKind.FUNC, BtfKind.FUNC_PROTO}
    assert must <= set(kinds), sorted(must - set(kinds))
    if kernel_id != "5.10":
        # 6.x blobs: per-CPU VARs in a DATASEC (pahole >= 1.18), FLOAT, ENUM64 (v6.0).
        assert {BtfKind.VAR, BtfKind.DATASEC, BtfKind.FLOAT, BtfKind.ENUM64} <= set(kinds)
    print(kernel_id, {k: v for k, v in sorted(kinds.items())})
    # The enumerators the readers need.
    for name in ("PG_head", "PG_reserved", "ZONE_DEVICE", "__MAX_NR_ZONES"):
        assert b.enumerator(name) is not None, name


def _shape(t: drgn.Type, depth: int = 0) -> list[tuple[object, ...]]:
    """Members (recursing into anonymous ones): name, bit offset, bit-field size, size, kind."""
    t = t.unqualified()
    while t.kind == TypeKind.TYPEDEF:
        t = t.type
    if t.kind == TypeKind.ENUM:
        return [(e.name, e.value) for e in t.enumerators or ()]
    out: list[tuple[object, ...]] = []
    for m in t.members or ():
        mt = m.type
        # BTF has one spelling for foo[] and foo[0] (nelems 0): both are length 0 here.
        size = sizeof(mt) if mt.is_complete() else 0
        out.append((m.name, m.bit_offset, m.bit_field_size, size, mt.unaliased_kind()))
        if m.name is None and depth < 4:
            out.extend(_shape(mt, depth + 1))
    return out


@pytest.mark.parametrize("kernel_id", KERNELS)
def test_layouts_equal_dwarf(kernel_id: str) -> None:
    btf_prog = drgn.Program(_PLATFORM)
    register_btf_types(btf_prog, Btf(_blob(kernel_id)))
    dwarf = drgn.Program(_PLATFORM)
    dwarf.set_enabled_debug_info_finders([])
    vmlinux = str(_vmlinux(kernel_id))
    dwarf.extra_module(vmlinux, 0, create=True).try_file(vmlinux, force=True)
    compared = 0
    for name in (*LAYOUTS, "struct folio"):
        try:
            want = dwarf.type(name)
        except LookupError:
            with pytest.raises(LookupError):
                btf_prog.type(name)  # struct folio: not before v5.16, in neither
            continue
        got = btf_prog.type(name)
        if got.is_complete():
            assert sizeof(got) == sizeof(want), name
        assert _shape(got) == _shape(want), name
        compared += 1
    assert compared >= len(LAYOUTS)
