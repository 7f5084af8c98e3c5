"""Predicates: what the kernel's own PFN predicates answer, from a snapshot.

Pure re-implementations of ``pfn_valid()`` (include/linux/mmzone.h, generic
SPARSEMEM), ``pfn_to_online_page()`` (mm/memory_hotplug.c since v5.12; a
macro in include/linux/memory_hotplug.h for v4.13-v5.11), ``get_dev_pagemap()``
and ``pgmap_pfn_valid()`` (mm/memremap.c), evaluated on the snapshot's
structures. :func:`kernel_answers` compares them with the classifier's verdict
and marks where the kernel would be wrong (kernel-semantics.md §5.2).
"""

from __future__ import annotations

from dataclasses import dataclass

from subsecinspect.classify.classes import PageClass
from subsecinspect.snapshot.index import SnapshotIndex
from subsecinspect.snapshot.model import DevPagemap, Snapshot

__all__ = (
    "PredicateAnswer",
    "get_dev_pagemap",
    "kernel_answers",
    "pfn_to_online_page",
    "pfn_valid",
    "pgmap_pfn_valid",
)

#: Classes whose memmap was initialised (a struct page that is safe to read).
_INITIALISED = frozenset({
    PageClass.ONLINE_RAM, PageClass.C2_DEV_VALID, PageClass.EARLY_HOLE,
    PageClass.RAM_LOGICALLY_OFFLINE, PageClass.RAM_VMEMMAP_SELF_HOSTED,
})
#: Classes whose memmap is garbage, not yet initialised, or being torn down.
_GARBAGE = frozenset({
    PageClass.C1_OFFLINE_RAM, PageClass.C4_DEV_INITIALISING, PageClass.C4b_DEV_TEARDOWN,
    PageClass.C5_DEV_DRIVER_RESERVED,
})
#: Classes where the memmap's state is not known.
_UNKNOWN = frozenset({
    PageClass.MEMMAP_UNREADABLE, PageClass.MEMMAP_NOT_CAPTURED, PageClass.IN_FLUX,
    PageClass.CORRUPT,
})


def _ix(snapshot: Snapshot, index: SnapshotIndex | None) -> SnapshotIndex:
    return index if index is not None else SnapshotIndex(snapshot)


def _nr_mem_sections(snapshot: Snapshot) -> int:
    k = snapshot.kernel
    return 1 << (k.max_physmem_bits - k.section_size_bits)


def pfn_valid(snapshot: Snapshot, pfn: int, index: SnapshotIndex | None = None) -> bool:
    """Generic ``pfn_valid()``: valid_section() and (early_section() or pfn_section_valid()).

    ``pfn_section_valid()`` answers 0 for a NULL/unreadable usage (the v6.8
    RCU form); before v5.3 the check was section-granular.
    """
    ix = _ix(snapshot, index)
    if ix.section_nr(pfn) >= _nr_mem_sections(snapshot):
        return False
    ms = ix.section(pfn)
    if ms is None or not ms.valid:
        return False
    return ms.early or bool(ix.subsection_bit(ms, pfn))


def get_dev_pagemap(
    snapshot: Snapshot, pfn: int, index: SnapshotIndex | None = None
) -> DevPagemap | None:
    """``get_dev_pagemap(pfn, NULL)``: ``xa_load(&pgmap_array, pfn)`` + ``percpu_ref_tryget_live``.

    Non-NULL for every registered PFN, including altmap pages and PFNs whose
    memmap is not initialised yet; NULL once memunmap_pages() killed the ref.
    """
    hit = _ix(snapshot, index).hit(pfn)
    if hit is None:
        return None
    pg = hit.claims[0][0]
    return None if pg.ref_dying else pg


def pfn_to_online_page(
    snapshot: Snapshot, pfn: int, *, out_of_line: bool | None = None,
    index: SnapshotIndex | None = None,
) -> bool:
    """Does ``pfn_to_online_page()`` return a page (``True``) or NULL (``False``)?

    *out_of_line* selects the v5.12+ function (online_section,
    pfn_section_valid, then get_dev_pagemap() in ONLINE+TAINT sections) or the
    v4.13-v5.11 macro (online_section_nr only). ``None`` picks by the kernel's
    "pfn_to_online_page_fn" feature. Since Linux kernel commit 9f605f260594
    ("mm: move pfn_to_online_page() out of line") (in v5.12).
    """
    ix = _ix(snapshot, index)
    if out_of_line is None:
        out_of_line = snapshot.kernel.has("pfn_to_online_page_fn")
    if ix.section_nr(pfn) >= _nr_mem_sections(snapshot):
        return False
    ms = ix.section(pfn)
    if ms is None or not ms.online:
        return False
    if not out_of_line:
        return True
    if not ix.subsection_bit(ms, pfn):
        return False
    if not (ms.online and ms.taint_zone_device):  # online_device_section()
        return True
    return get_dev_pagemap(snapshot, pfn, ix) is None


def pgmap_pfn_valid(snapshot: Snapshot, pgmap: DevPagemap, pfn: int) -> bool:
    """``pgmap_pfn_valid()`` (v5.12+): ``pfn >= pfn_first()`` in the containing range.

    Mirrors the source: only ranges ``i < pgmap->nr_range`` are searched, so
    during memremap_pages() the range in progress answers ``false``.
    """
    del snapshot  # the answer depends on the pgmap only
    limit = pgmap.nr_range if pgmap.nr_range >= 0 else len(pgmap.ranges)
    for r in sorted(pgmap.ranges, key=lambda r: r.index):
        if r.index >= limit:
            break
        if r.start_pfn <= pfn < r.end_pfn:
            first = r.start_pfn
            if r.index == 0 and pgmap.altmap.valid:
                first += pgmap.altmap.reserve + pgmap.altmap.free
            return pfn >= first
    return False


@dataclass(frozen=True, slots=True)
class PredicateAnswer:
    """One predicate's answer for a PFN, judged against the verdict.

    ``correct`` is ``True`` (✓), ``False`` (✗, the kernel would get the
    memmap's state wrong), or ``None`` (~: debatable, or n/a on this kernel).
    """

    name: str
    answer: str
    correct: bool | None
    note: str = ""


def _judge_page(returns_page: bool, cls: PageClass) -> tuple[bool | None, str]:
    """A predicate that hands out a struct page is right iff that page is initialised."""
    if returns_page:
        if cls in _INITIALISED:
            return True, ""
        if cls in _GARBAGE:
            return False, "hands out a struct page that is not initialised"
        return None, "struct page of uncertain state"
    if cls is PageClass.C2_DEV_VALID:
        return True, "NULL by design for ZONE_DEVICE"
    return (False, "hides an initialised page") if cls is PageClass.ONLINE_RAM else (True, "")


def kernel_answers(
    snapshot: Snapshot, pfn: int, cls: PageClass, index: SnapshotIndex | None = None
) -> tuple[PredicateAnswer, ...]:
    """The §5.2 row for *pfn*: each predicate's answer on this kernel, and whether it is right."""
    ix = _ix(snapshot, index)
    k = snapshot.kernel
    out = []
    valid = pfn_valid(snapshot, pfn, ix)
    ok, note = _judge_page(valid, cls)
    if valid and cls is PageClass.EARLY_HOLE:
        note = "boot memmap, reserved, not RAM"
    out.append(PredicateAnswer("pfn_valid", "1" if valid else "0", ok, note))
    new = k.has("pfn_to_online_page_fn")
    online = pfn_to_online_page(snapshot, pfn, out_of_line=new, index=ix)
    ok, note = _judge_page(online, cls)
    if online and cls is PageClass.EARLY_HOLE:
        ok, note = False, "reports a reserved non-RAM page as online"
    elif online and cls in (PageClass.C2_DEV_VALID, PageClass.C5b_DEV_ALTMAP_MEMMAP):
        ok, note = None, "reports a ZONE_DEVICE page as online (collision section)"
    which = "pfn_to_online_page (>= v5.12)" if new else "pfn_to_online_page (v5.3-v5.11 macro)"
    out.append(PredicateAnswer(which, "page" if online else "NULL", ok, note))
    pg = get_dev_pagemap(snapshot, pfn, ix)
    if pg is not None:
        if cls in _GARBAGE:
            ok, note = False, "returns the pgmap although the memmap is not initialised"
        elif cls is PageClass.C5b_DEV_ALTMAP_MEMMAP:
            ok, note = None, "altmap memmap page: initialised, but page->pgmap is bogus"
        else:
            ok, note = (True, "") if cls is PageClass.C2_DEV_VALID else (None, "")
        out.append(PredicateAnswer("get_dev_pagemap", f"{pg.address:#x}", ok, note))
        if k.has("pgmap_pfn_valid"):
            v = pgmap_pfn_valid(snapshot, pg, pfn)
            if v:
                ok = cls is PageClass.C2_DEV_VALID
                note = "" if ok else "says valid, memmap not initialised"
            else:
                ok = cls is not PageClass.C2_DEV_VALID
                note = "" if ok else "says invalid although the memmap is initialised"
            out.append(PredicateAnswer("pgmap_pfn_valid", "true" if v else "false", ok, note))
        else:
            out.append(PredicateAnswer("pgmap_pfn_valid", "n/a", None, "absent before v5.12"))
    else:
        ok = None if cls in _UNKNOWN else cls is not PageClass.C2_DEV_VALID
        note = "" if ok is not False else "ref dying or lookup failed"
        out.append(PredicateAnswer("get_dev_pagemap", "NULL", ok, note))
    return tuple(out)
