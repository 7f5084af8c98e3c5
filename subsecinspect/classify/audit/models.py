"""Audit models: the kernel's PFN predicates and the alternatives proposed for them.

Each model is a pure function ``(AuditInput, pfn) -> tuple[Answer, ...]``: for every
question a walker asks (a predicate, or a walker pattern), whether the struct page of *pfn*
is handed out (read) and how many ``get_dev_pagemap()`` lookups answering it costs. The
kernel functions mirrored are ``pfn_valid()`` / ``pfn_section_valid()``
(include/linux/mmzone.h), ``pfn_to_online_page()`` (mm/memory_hotplug.c since v5.12, a
macro in include/linux/memory_hotplug.h for v4.13-v5.11), ``get_dev_pagemap()`` and
``pgmap_pfn_valid()`` (mm/memremap.c), the walkers ``kpageflags_read()``
(fs/proc/page.c, :func:`pfn_to_online_page` only) and ``memory_failure()``
(mm/memory-failure.c: ``pfn_to_online_page()``, else ``pfn_valid()`` +
``get_dev_pagemap()`` + ``memory_failure_dev_pagemap()``, which checks
``pgmap_pfn_valid()`` since v5.12). The alternatives are the proposals of the September -
November 2019 linux-mm threads ("/proc/kpageflags: do not use uninitialized struct pages",
"make pfn walker support ZONE_DEVICE") as kernel-semantics.md §7 records them.

Every answer is constant between the cuts :mod:`subsecinspect.classify.audit.tally`
computes, so a model is evaluated once per piece, never per PFN.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from subsecinspect.classify.classes import PageClass
from subsecinspect.classify.lifecycle import complete_and_live, effective_frontier
from subsecinspect.classify.predicates import get_dev_pagemap, pfn_to_online_page, pfn_valid
from subsecinspect.classify.predicates import pgmap_pfn_valid as _pgmap_pfn_valid
from subsecinspect.snapshot.index import SnapshotIndex
from subsecinspect.snapshot.model import Snapshot

__all__ = (
    "MODELS",
    "Answer",
    "AuditInput",
    "ModelSpec",
    "init_reserved",
    "kernel",
    "section_flag",
    "subsection_initialised",
    "subsection_zone_device",
)


@dataclass(frozen=True, slots=True)
class Answer:
    """One question's answer for a PFN: is its struct page handed out, at what lookup cost."""

    question: str
    page: bool
    lookups: int = 0


@dataclass(frozen=True, slots=True)
class AuditInput:
    """The snapshot and its index, shared by every model of one audit."""

    snapshot: Snapshot
    ix: SnapshotIndex

    def has(self, feature: str) -> bool:
        return self.snapshot.kernel.has(feature)


def _online_and_valid_sub(inp: AuditInput, pfn: int) -> bool:
    """``online_section()`` and ``pfn_section_valid()``: the common head of every
    out-of-line ``pfn_to_online_page()`` variant."""
    ix = inp.ix
    ms = ix.section(pfn)
    k = inp.snapshot.kernel
    if ms is None or not ms.online or ix.section_nr(pfn) >= 1 << (
            k.max_physmem_bits - k.section_size_bits):
        return False
    return bool(ix.subsection_bit(ms, pfn))


def _device_page(inp: AuditInput, pfn: int) -> tuple[bool, bool]:
    """(``get_dev_pagemap()`` non-NULL, and ``pgmap_pfn_valid()`` true for it)."""
    pg = get_dev_pagemap(inp.snapshot, pfn, inp.ix)
    if pg is None:
        return False, False
    return True, _pgmap_pfn_valid(inp.snapshot, pg, pfn)


def _taint_lookup(inp: AuditInput, pfn: int) -> int:
    """1 where the v5.12 ``pfn_to_online_page()`` calls ``get_dev_pagemap()``:
    ``online_device_section()`` (ONLINE and SECTION_TAINT_ZONE_DEVICE) after the
    subsection check."""
    ms = inp.ix.section(pfn)
    return int(ms is not None and ms.taint_zone_device and _online_and_valid_sub(inp, pfn))


def kernel(inp: AuditInput, pfn: int) -> tuple[Answer, ...]:
    """The running kernel, in the form this kernel has its predicates (detected from the
    snapshot's feature bits, never from the release): ``pfn_to_online_page()`` out of line
    with subsection validity and the SECTION_TAINT_ZONE_DEVICE slow path since 9f605f260594,
    9f9b02e5b346 and 1f90a3477df3 (v5.12), the ``online_section_nr()`` macro before;
    ``pgmap_pfn_valid()`` since 34dc45be4563 (v5.12, backported to 5.10.y), without which
    ``memory_failure_dev_pagemap()`` reads any struct page of the pgmap."""
    new = inp.has("pfn_to_online_page_fn")
    valid = pfn_valid(inp.snapshot, pfn, inp.ix)
    online = pfn_to_online_page(inp.snapshot, pfn, out_of_line=new, index=inp.ix)
    in_online = _taint_lookup(inp, pfn) if new else 0
    gdp, ppv = _device_page(inp, pfn)
    has_ppv = inp.has("pgmap_pfn_valid")
    out = [
        Answer("pfn_valid", valid),
        Answer("pfn_to_online_page", online, in_online),
        Answer("get_dev_pagemap", gdp, 1),
    ]
    if has_ppv:
        out.append(Answer("pgmap_pfn_valid", gdp and ppv, 1))
    out.append(Answer("walker:kpageflags", online, in_online))
    mf_device = not online and valid
    out.append(Answer("walker:memory_failure",
                      online or (mf_device and gdp and (ppv or not has_ppv)),
                      in_online + int(mf_device)))
    return tuple(out)


def init_reserved(inp: AuditInput, pfn: int) -> tuple[Answer, ...]:
    """Initialise the memmap of the altmap reserve (the driver's info block), so that case 5
    vanishes: Toshiki Fukasawa's "/proc/kpageflags: do not use uninitialized struct pages"
    (linux-mm, Aug-Sep 2019) with ``pfn_zone_device_reserved()``. The predicates stay the
    kernel's; only the truth changes (:data:`ModelSpec.initialised` adds C5)."""
    return kernel(inp, pfn)


def _device_walkers(inp: AuditInput, pfn: int, online: bool, online_lookups: int,
                    device: bool, device_lookups: int) -> list[Answer]:
    """A ZONE_DEVICE-aware walker (Fukasawa, "make pfn walker support ZONE_DEVICE", Nov
    2019): the online page, else the device page where *device* says ZONE_DEVICE and
    ``pgmap_pfn_valid()`` (pfn_first() arithmetic) says it is past the altmap."""
    valid = pfn_valid(inp.snapshot, pfn, inp.ix)
    gdp, ppv = _device_page(inp, pfn) if device else (False, False)
    dev_page = device and gdp and ppv
    n = online_lookups + (0 if online else device_lookups)
    return [Answer("walker:kpageflags", online or dev_page, n),
            Answer("walker:memory_failure", online or (valid and dev_page), n)]


def _hosts_device(inp: AuditInput, pfn: int) -> bool:
    return inp.ix.section_hosts_pgmap(inp.ix.section_nr(pfn))


def section_flag(inp: AuditInput, pfn: int) -> tuple[Answer, ...]:
    """A section-level ZONE_DEVICE flag set on every section that holds a pgmap range (not
    only its unaligned ends, as SECTION_TAINT_ZONE_DEVICE is), plus a ``get_dev_pagemap()``
    lookup to tell the device sub-sections of a shared section from RAM: the 2019 thread's
    section-flag idea, which Dan Williams called "entirely too much overhead" for the
    shared-section case."""
    flagged = _hosts_device(inp, pfn)
    head = _online_and_valid_sub(inp, pfn)
    gdp = get_dev_pagemap(inp.snapshot, pfn, inp.ix) is not None if flagged else False
    online = head and not gdp
    online_lookups = int(head and flagged)
    out = [Answer("pfn_valid", pfn_valid(inp.snapshot, pfn, inp.ix)),
           Answer("pfn_to_online_page", online, online_lookups),
           Answer("pfn_zone_device", flagged and gdp, int(flagged))]
    out += _device_walkers(inp, pfn, online, online_lookups, flagged, int(flagged))
    return tuple(out)


def _subsection_is_device(inp: AuditInput, pfn: int) -> bool:
    """The doubled ``subsection_map``'s bit: some pgmap_array entry covers this 2 MiB
    sub-section (pgmap ranges are sub-section aligned: memremap_compat_align())."""
    per = inp.ix.pages_per_subsection
    start = pfn - pfn % per
    return bool(inp.ix.hits_between(start, start + per))


def subsection_zone_device(inp: AuditInput, pfn: int) -> tuple[Answer, ...]:
    """Double ``usage->subsection_map`` so that every sub-section says whether it is
    ZONE_DEVICE (Dan Williams in the "mm: Introduce subsection_dev_map" thread, Nov 2019):
    ``pfn_to_online_page()`` needs no lookup, a device walker one per device PFN."""
    dev = _subsection_is_device(inp, pfn)
    online = _online_and_valid_sub(inp, pfn) and not dev
    out = [Answer("pfn_valid", pfn_valid(inp.snapshot, pfn, inp.ix)),
           Answer("pfn_to_online_page", online),
           Answer("pfn_zone_device", dev and pfn_valid(inp.snapshot, pfn, inp.ix))]
    out += _device_walkers(inp, pfn, online, 0, dev, int(dev))
    return tuple(out)


def _memmap_initialised_bit(inp: AuditInput, pfn: int) -> bool:
    """The proposed bit: set for a range's sub-sections when memmap_init_zone_device()
    returns for it (so: the range is complete and its ref live), cleared at
    memunmap_pages(). Before v5.10 (no ``nr_range``) the classifier's frontier stands in."""
    hit = inp.ix.hit(pfn)
    if hit is None:
        return False
    pg, rng = hit.claims[0]
    if rng is None:
        return False
    if pg.nr_range >= 0:
        return complete_and_live(pg, rng)
    frontier = effective_frontier(inp.ix, pg, rng)
    return not pg.ref_dying and (frontier is None or frontier >= rng.end_pfn)


def subsection_initialised(inp: AuditInput, pfn: int) -> tuple[Answer, ...]:
    """A per-sub-section "memmap initialised" bit on top of the v5.12 predicates, consulted
    by every device path after ``pgmap_pfn_valid()``: the only model that can close case 4
    (no patch of 2019 or later proposes it; kernel-semantics.md §7)."""
    online = pfn_to_online_page(inp.snapshot, pfn, out_of_line=True, index=inp.ix)
    online_lookups = _taint_lookup(inp, pfn)
    gdp, ppv = _device_page(inp, pfn)
    # The bit is tested first: a clear bit needs no get_dev_pagemap() lookup.
    init = _memmap_initialised_bit(inp, pfn)
    out = [Answer("pfn_valid", pfn_valid(inp.snapshot, pfn, inp.ix)),
           Answer("pfn_to_online_page", online, online_lookups),
           Answer("get_dev_pagemap", gdp, 1),
           Answer("pgmap_pfn_valid", gdp and ppv and init, int(init))]
    out += _device_walkers(inp, pfn, online, online_lookups, init, int(init))
    return tuple(out)


def _no_bytes(inp: AuditInput) -> int:
    return 0


def _one_map_per_usage(inp: AuditInput) -> int:
    """One more ``subsection_map`` (BITS_TO_LONGS(SUBSECTIONS_PER_SECTION) longs) in every
    allocated ``struct mem_section_usage``."""
    longs = -(-inp.snapshot.kernel.subsections_per_section // 64)
    return 8 * longs * sum(1 for s in inp.snapshot.sections if s.usage)


@dataclass(frozen=True, slots=True)
class ModelSpec:
    """A model: its answers per PFN, the metadata it adds, and what it initialises."""

    name: str
    evaluate: Callable[[AuditInput, int], tuple[Answer, ...]]
    extra_bytes: Callable[[AuditInput], int]
    #: Classes whose memmap this model initialises in addition to the kernel's.
    initialised: frozenset[PageClass] = frozenset()
    note: str = ""


#: The models by name, in report order.
MODELS: dict[str, ModelSpec] = {m.name: m for m in (
    ModelSpec("kernel", kernel, _no_bytes),
    ModelSpec("init-reserved", init_reserved, _no_bytes,
              frozenset({PageClass.C5_DEV_DRIVER_RESERVED}),
              "struct pages exist already (the vmemmap covers the reserve); costs init time"),
    ModelSpec("section-flag", section_flag, _no_bytes, note="one bit of section_mem_map's "
              "flag budget (PFN_SECTION_SHIFT can be 6)"),
    ModelSpec("subsection-zone-device", subsection_zone_device, _one_map_per_usage),
    ModelSpec("subsection-initialised", subsection_initialised, _one_map_per_usage),
)}
