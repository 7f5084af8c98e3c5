"""ZONE_DEVICE registrations: ``pgmap_array``, ``struct dev_pagemap``, ``struct vmem_altmap``.

Mirrors mm/memremap.c (``pgmap_array``, ``memremap_pages()``, ``pagemap_range()``,
``get_dev_pagemap()``, ``pfn_first()``) and include/linux/memremap.h. The
xarray is walked with raw reads so that an unreadable node (a kdump that
dropped slab pages, lab-notes §15) costs only its subtree and a warning.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

import drgn
from drgn import Object, Program, TypeKind, offsetof, sizeof

from subsecinspect.kernel.features import PGMAP_ALTMAP_VALID, memory_type_names
from subsecinspect.snapshot.model import Altmap, DevPagemap, KernelInfo, PgmapRange

__all__ = (
    "PERCPU_REF_DEAD",
    "pgmap_live_state",
    "read_pgmaps",
    "xa_spans",
)

#: include/linux/percpu-refcount.h: ``__PERCPU_REF_DEAD = 1LU << 1`` (a #define).
PERCPU_REF_DEAD = 1 << 1
#: lib/xarray.c: ``XA_ZERO_ENTRY = xa_mk_internal(257)``, ``XA_RETRY_ENTRY = xa_mk_internal(256)``.
_XA_ZERO_ENTRY = 1030
_XA_RETRY_ENTRY = 1026


def _is_node(v: int) -> bool:
    return v & 3 == 2 and v > 4096


def _is_sibling(v: int) -> bool:
    return v & 3 == 2 and v < 256


def xa_spans(
    prog: Program, xa_addr: int
) -> tuple[list[tuple[int, int, int]], list[str]]:
    """Every entry of an XArray as ``(first_index, last_index, entry)``.

    Multi-index entries (``xa_store_range()`` with CONFIG_XARRAY_MULTI) are a
    canonical slot followed by sibling slots; their span is returned whole.
    Mirrors ``xas_find()``/``xa_is_sibling()`` in lib/xarray.c.

    :param xa_addr: ``struct xarray *``
    :return: (spans sorted by first index, warnings about unreadable nodes)
    """
    node_t = prog.type("struct xa_node")
    off_shift = offsetof(node_t, "shift")
    off_count = offsetof(node_t, "count")
    off_array = offsetof(node_t, "array")
    off_slots = offsetof(node_t, "slots")
    nslots = node_t.member("slots").type.length or 64
    node_size = sizeof(node_t)
    xa_t = prog.type("struct xarray")
    warnings: list[str] = []
    spans: list[tuple[int, int, int]] = []
    try:
        head = prog.read_u64(xa_addr + offsetof(xa_t, "xa_head"))
    except drgn.FaultError as e:
        return [], [f"pgmap_array at {xa_addr:#x} is unreadable: {e}"]
    if not _is_node(head):
        if head and head not in (_XA_ZERO_ENTRY, _XA_RETRY_ENTRY) and head & 3 == 0:
            spans.append((0, 0, head))
        return spans, warnings

    seen: set[int] = set()
    chunk_shift = nslots.bit_length() - 1  # XA_CHUNK_SHIFT

    def walk(node: int, base: int, parent_shift: int) -> Iterator[tuple[int, int, int]]:
        if node in seen:
            warnings.append(f"pgmap_array node {node:#x} is reached twice (damaged xarray)")
            return
        seen.add(node)
        try:
            data = prog.read(node, node_size)
        except drgn.FaultError as e:
            warnings.append(
                f"pgmap_array node {node:#x} (indices from {base:#x}) is unreadable: {e}; "
                "ZONE_DEVICE ranges under it are missing"
            )
            return
        shift = data[off_shift]
        array = struct.unpack_from("<Q", data, off_array)[0]
        # XA_CHUNK_SHIFT steps downwards from the root; every node points back to its
        # xarray (xa_node.array) and holds at least one entry (empty nodes are freed).
        problem = ""
        if shift >= parent_shift or shift % chunk_shift != 0:
            problem = f"shift {shift} under {parent_shift}"
        elif array != xa_addr:
            problem = f"array {array:#x} is not the xarray {xa_addr:#x}"
        elif data[off_count] == 0:
            problem = "count 0"
        if problem:
            warnings.append(
                f"pgmap_array node {node:#x} is damaged ({problem}); "
                "ZONE_DEVICE ranges under it are missing"
            )
            return
        slots = struct.unpack_from(f"<{nslots}Q", data, off_slots)
        step = 1 << shift
        i = 0
        while i < nslots:
            v = slots[i]
            index = base + i * step
            if _is_node(v):
                yield from walk(v - 2, index, shift)
                i += 1
                continue
            if v == 0 or _is_sibling(v) or v in (_XA_ZERO_ENTRY, _XA_RETRY_ENTRY):
                i += 1
                continue
            j = i + 1
            while j < nslots and _is_sibling(slots[j]) and (slots[j] >> 2) == i:
                j += 1
            yield index, base + j * step - 1, v
            i = j

    spans.extend(walk(head - 2, 0, 64 + chunk_shift))
    spans.sort()
    return spans, warnings


def _merge(spans: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for a, b in sorted(spans):
        if out and a <= out[-1][1] + 1:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return tuple(out)


class _Damaged(Exception):
    """A dev_pagemap field has a value the kernel never writes (garbage or a freed object)."""


#: memremap_pages() callers pass a handful of ranges (dax: 1, device-private: a few).
_MAX_NR_RANGE = 1024
#: vmemmap_shift is a compound order: at most PUD order.
_MAX_VMEMMAP_SHIFT = 18


def _ref_count_ptr(pgmap: Object) -> int:
    ref = pgmap.ref
    # Before the pgmap ref was embedded (v5.10-era "mm/memremap_pages: ..." —
    # 5.10 still has struct percpu_ref *ref, lab-notes §14), follow the pointer.
    if ref.type_.unaliased_kind() == TypeKind.POINTER:
        if not ref.value_():
            return 0
        ref = ref[0]
    return ref.percpu_count_ptr.value_()


def _altmap(pgmap: Object) -> Altmap:
    a = pgmap.altmap
    t = a.type_
    flags = pgmap.flags.value_()
    # Older kernels had a bool altmap_valid instead of PGMAP_ALTMAP_VALID.
    valid = (
        bool(pgmap.altmap_valid.value_())
        if pgmap.type_.has_member("altmap_valid")
        else bool(flags & PGMAP_ALTMAP_VALID)
    )
    return Altmap(
        base_pfn=a.base_pfn.value_(),
        end_pfn=a.end_pfn.value_() if t.has_member("end_pfn") else 0,
        reserve=a.reserve.value_(),
        free=a.free.value_(),
        align=a.align.value_(),
        alloc=a.alloc.value_(),
        valid=valid,
        inaccessible=bool(a.inaccessible.value_()) if t.has_member("inaccessible") else False,
    )


def _range_at(pgmap: Object, address: int, i: int) -> Object:
    """``pgmap->ranges[i]`` past DWARF's bound: ``ranges[]`` is a flexible array.

    :param address: the ``struct dev_pagemap *`` (*pgmap* is a value copy).
    """
    t = pgmap.type_
    elem = t.member("ranges").type.type
    base = address + offsetof(t, "ranges")
    return Object(pgmap.prog_, elem, address=base + i * sizeof(elem)).read_()


def _range_pfns(ki: KernelInfo, r: Object) -> tuple[int, int]:
    start = r.start.value_()
    end = r.end.value_()  # inclusive last byte
    return start >> ki.page_shift, (end >> ki.page_shift) + 1


def _ranges(
    ki: KernelInfo, pgmap: Object, address: int, spans: tuple[tuple[int, int], ...]
) -> tuple[int, tuple[PgmapRange, ...]]:
    t = pgmap.type_
    if not t.has_member("nr_range"):
        # Before "mm/memremap_pages: convert to 'struct range'" (v5.10) a
        # single struct resource res; no progress counter.
        start, end = _range_pfns(ki, pgmap.res)
        return -1, (PgmapRange(0, start, end, complete=False),)
    nr_range = pgmap.nr_range.value_()
    if not 0 <= nr_range <= _MAX_NR_RANGE:
        raise _Damaged(f"nr_range is {nr_range}")
    max_pfn = 1 << (ki.max_physmem_bits - ki.page_shift)
    out: list[PgmapRange] = []
    for i in range(nr_range):
        start, end = _range_pfns(ki, _range_at(pgmap, address, i))
        if not start < end <= max_pfn:
            raise _Damaged(f"ranges[{i}] is [{start:#x}, {end:#x})")
        if spans and not any(a < end and b >= start for a, b in spans):
            raise _Damaged(f"ranges[{i}] [{start:#x}, {end:#x}) is not in pgmap_array")
        out.append(PgmapRange(i, start, end, complete=True))
    # memremap_pages() counts nr_range up as ranges complete (0 during the
    # first pagemap_range()); xa_store_range() already happened for range
    # nr_range, so xarray indices outside the complete ranges belong to it.
    uncovered = [
        (a, b)
        for a, b in spans
        if not any(r.start_pfn <= a and b < r.end_pfn for r in out)
    ]
    if uncovered and nr_range >= 0:
        start, end = _range_pfns(ki, _range_at(pgmap, address, nr_range))
        if start < end <= max_pfn and any(a < end and b >= start for a, b in uncovered):
            out.append(PgmapRange(nr_range, start, end, complete=False))
    # pagemap_range() stores each range in pgmap_array before anything else and
    # pgmap_array_delete() removes it last: a range outside the spans is damage.
    for r in out:
        if spans and not any(a <= r.start_pfn and r.end_pfn - 1 <= b for a, b in spans):
            raise _Damaged(
                f"ranges[{r.index}] [{r.start_pfn:#x}, {r.end_pfn:#x}) is not in pgmap_array"
            )
    # pgmap_array only ever holds this pgmap over its own ranges (pagemap_range()
    # stores ranges[i] before the memmap is set up): anything else is damage.
    stray = [
        (a, b) for a, b in spans if not any(r.start_pfn <= a and b < r.end_pfn for r in out)
    ]
    if stray:
        a, b = stray[0]
        raise _Damaged(f"pgmap_array maps [{a:#x}, {b + 1:#x}) to it, outside its ranges")
    return nr_range, tuple(out)


def read_pgmaps(prog: Program, ki: KernelInfo) -> tuple[list[DevPagemap], list[str], int]:
    """Every ``struct dev_pagemap`` reachable from ``pgmap_array``.

    :return: (pgmaps sorted by first PFN, warnings, number of unreadable xarray
        nodes or root: ZONE_DEVICE ranges may be missing when it is not 0)
    """
    try:
        xa = prog["pgmap_array"].address_of_().value_()
    except (KeyError, LookupError):
        return [], [], 0
    raw, warnings = xa_spans(prog, xa)
    damaged = len(warnings)
    by_ptr: dict[int, list[tuple[int, int]]] = {}
    for a, b, v in raw:
        by_ptr.setdefault(v, []).append((a, b))
    types = memory_type_names(prog)
    pgmaps: list[DevPagemap] = []
    for ptr, spans_l in by_ptr.items():
        spans = _merge(spans_l)
        try:
            pg = Object(prog, "struct dev_pagemap *", ptr)[0].read_()
            nr_range, ranges = _ranges(ki, pg, ptr, spans)
            shift = pg.vmemmap_shift.value_() if pg.type_.has_member("vmemmap_shift") else 0
            if shift > _MAX_VMEMMAP_SHIFT:
                raise _Damaged(f"vmemmap_shift is {shift}")
            tval = pg.type.value_()
            if types and tval not in types:
                raise _Damaged(f"type {tval} is not an enum memory_type value")
            pgmaps.append(
                DevPagemap(
                    address=ptr,
                    type=types.get(tval, f"unknown({tval})"),
                    flags=pg.flags.value_(),
                    nr_range=nr_range,
                    ranges=ranges,
                    altmap=_altmap(pg),
                    vmemmap_shift=shift,
                    ref_dying=bool(_ref_count_ptr(pg) & PERCPU_REF_DEAD),
                    xa_spans=spans,
                )
            )
        except (drgn.FaultError, _Damaged) as e:
            what = "is damaged" if isinstance(e, _Damaged) else "is unreadable"
            warnings.append(
                f"dev_pagemap at {ptr:#x} (pgmap_array PFNs {spans[0][0]:#x}-{spans[-1][1]:#x}) "
                f"{what}: {e}"
            )
            pgmaps.append(
                DevPagemap(
                    address=ptr, type="UNREADABLE", flags=0, nr_range=-1, ranges=(),
                    altmap=Altmap(0, 0, 0, 0, 0, 0, False), xa_spans=spans,
                )
            )
    pgmaps.sort(key=lambda p: p.xa_spans[0][0] if p.xa_spans else 0)
    return pgmaps, warnings, damaged


def pgmap_live_state(prog: Program, address: int) -> tuple[int, int] | None:
    """``(nr_range, ref.percpu_count_ptr)`` for the live guard, ``None`` if unreadable."""
    try:
        pg = Object(prog, "struct dev_pagemap *", address)[0].read_()
        nr = pg.nr_range.value_() if pg.type_.has_member("nr_range") else -1
        return nr, _ref_count_ptr(pg)
    except drgn.FaultError:
        return None
