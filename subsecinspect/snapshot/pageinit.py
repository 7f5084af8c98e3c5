"""Fingerprint: is a ZONE_DEVICE struct page initialised?

Nothing in the kernel marks a ZONE_DEVICE memmap as initialised, so this
module recognises what ``memmap_init_zone_device()`` →
``__init_zone_device_page()`` (mm/mm_init.c, mm/page_alloc.c before 5.18)
and ``memmap_init_range()`` for the altmap ``free`` pages leave behind
(kernel-semantics.md §2.4, §4.4). Everything here is a pure function of raw
struct page words held in a :class:`~subsecinspect.snapshot.model.PageSample`; the
readers (:mod:`subsecinspect.kernel`) call it to binary-search the initialised
frontier of a range with :func:`find_frontier`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from subsecinspect.snapshot.model import (
    DevPagemap,
    KernelInfo,
    MemmapStatus,
    PageSample,
    PgmapRange,
    ZoneSpan,
)

__all__ = (
    "FingerprintResult",
    "altmap_free_fingerprint",
    "compound_head_address",
    "data_first_pfn",
    "find_frontier",
    "page_address",
    "page_node",
    "page_pfn",
    "page_zone",
    "zone_device_memmap_initialised",
)

#: ``page_init_poison()`` fills struct pages with 0xff (CONFIG_DEBUG_VM).
_POISON = (1 << 64) - 1
#: A compound page never spans more struct pages than this (MAX_PAGE_ORDER
#: is at most 18 on the largest configurations; PUD-sized devdax is order 18).
_MAX_COMPOUND_PAGES = 1 << 18


def page_address(kernel: KernelInfo, pfn: int) -> int:
    """``pfn_to_page(pfn)`` under SPARSEMEM_VMEMMAP: ``vmemmap + pfn * sizeof(struct page)``."""
    return kernel.vmemmap + pfn * kernel.struct_page_size


def data_first_pfn(pg: DevPagemap, rng: PgmapRange) -> int:
    """``pfn_first()`` (mm/memremap.c): the first data PFN of a pgmap range.

    The range start, plus ``vmem_altmap_offset()`` (reserve + free) for range 0 with an
    altmap: the pages below it are the driver reserve and the memmap itself.
    """
    if rng.index == 0 and pg.altmap.valid:
        return rng.start_pfn + pg.altmap.reserve + pg.altmap.free
    return rng.start_pfn


def page_pfn(kernel: KernelInfo, address: int) -> int | None:
    """``page_to_pfn()``; ``None`` if *address* is not the start of a struct page."""
    offset = address - kernel.vmemmap
    if offset < 0 or offset % kernel.struct_page_size:
        return None
    return offset // kernel.struct_page_size


def page_zone(kernel: KernelInfo, flags: int) -> int:
    """``page_zonenum()``: the zone field of ``page->flags``."""
    return (flags >> kernel.zones_pgshift) & kernel.zones_mask


def page_node(kernel: KernelInfo, flags: int) -> int:
    """``page_to_nid()`` when the node is in page->flags (no NODE_NOT_IN_PAGE_FLAGS)."""
    return (flags >> kernel.nodes_pgshift) & kernel.nodes_mask


def compound_head_address(kernel: KernelInfo, pfn: int, slot: int) -> int | None:
    """The head struct page of a tail page whose pgmap slot is *slot*.

    Mirrors ``compound_head()``. Two encodings exist and both are tried:

    * up to 6.x: ``page->compound_head = head | 1`` → ``slot - 1``;
    * 7.x: ``compound_info`` holds a mask with bit 0 set (e.g.
      ``0xffffffffffff8001``) → ``page_address(pfn) & slot``.

    A decoding is accepted only if it names a struct page at or below this
    page and at most ``2**18`` pages before it. Returns ``None`` if bit 0 of
    *slot* is clear (not a tail) or neither decoding is plausible.
    """
    if not slot & 1:
        return None
    here = page_address(kernel, pfn)
    for head in (slot - 1, here & slot):
        head_pfn = page_pfn(kernel, head)
        if head_pfn is not None and 0 < pfn - head_pfn < _MAX_COMPOUND_PAGES:
            return head
    return None


@dataclass(frozen=True, slots=True)
class FingerprintResult:
    """The verdict of a fingerprint check, with what was seen.

    ``reason`` is ``"ok"`` when initialised, else the first failed check:
    ``"unreadable"``, ``"poisoned"``, ``"no_zone_device"``, ``"zone"``,
    ``"node"``, ``"zone_span"``, ``"pgmap_slot"`` or ``"tail_head"``.
    """

    initialised: bool
    reason: str
    zone: int | None = None
    nid: int | None = None
    tail: bool = False
    #: Soft signals (reported, never required), e.g. "PG_reserved", "mapcount=-1".
    soft: tuple[str, ...] = ()
    detail: str = ""

    def __bool__(self) -> bool:
        return self.initialised


def _soft_signals(sample: PageSample, kernel: KernelInfo) -> tuple[str, ...]:
    soft = []
    if sample.flags >> kernel.pg_reserved & 1:
        soft.append("PG_reserved")
    mapcount = sample.mapcount - (1 << 32) if sample.mapcount >= 1 << 31 else sample.mapcount
    soft.append(f"mapcount={mapcount}")
    soft.append(f"refcount={sample.refcount}")
    return tuple(soft)


def _fail(reason: str, detail: str, **kw: object) -> FingerprintResult:
    return FingerprintResult(False, reason, detail=detail, **kw)  # type: ignore[arg-type]


def _zone_and_node(
    sample: PageSample, kernel: KernelInfo, zones: Sequence[ZoneSpan]
) -> FingerprintResult | None:
    """Checks 1-2 of §4.4, shared by both fingerprints; ``None`` means passed."""
    if sample.status is not MemmapStatus.READ:
        text = f"struct page {sample.status.value}: {sample.error}".rstrip(": ")
        return _fail("unreadable", text)
    if sample.flags == _POISON:
        return _fail("poisoned", "page->flags == ~0UL (page_init_poison, CONFIG_DEBUG_VM)")
    if kernel.zone_device is None:
        return _fail("no_zone_device", "kernel has no ZONE_DEVICE")
    zone = page_zone(kernel, sample.flags)
    nid = page_node(kernel, sample.flags)
    if zone != kernel.zone_device:
        return _fail("zone", f"zone field {zone} != ZONE_DEVICE {kernel.zone_device}",
                     zone=zone, nid=nid)
    if nid >= kernel.nr_node_ids:
        return _fail("node", f"node field {nid} >= nr_node_ids {kernel.nr_node_ids}",
                     zone=zone, nid=nid)
    spans = [z for z in zones if z.nid == nid and z.zone_idx == kernel.zone_device]
    if spans and not any(z.start_pfn <= sample.pfn < z.end_pfn for z in spans):
        return _fail("zone_span", f"pfn outside node {nid}'s ZONE_DEVICE span", zone=zone, nid=nid)
    return None


def zone_device_memmap_initialised(
    sample: PageSample,
    pgmap: DevPagemap,
    kernel: KernelInfo,
    zones: Sequence[ZoneSpan],
) -> FingerprintResult:
    """§4.4: does *sample* look like ``__init_zone_device_page()`` ran for *pgmap*?

    Checks, in order: the sample was read; ``flags != ~0UL`` (poison); zone
    field == ZONE_DEVICE; node field < nr_node_ids; the PFN lies in that node's
    ZONE_DEVICE span (skipped when *zones* holds no span for the node); the
    pgmap slot is exactly ``pgmap.address``, or, for a tail (bit 0 set), the
    head decoded by :func:`compound_head_address` lies in the same pgmap range,
    has ``PG_head`` and zone ZONE_DEVICE in ``sample.head_flags``, and its slot
    ``sample.head_pgmap_slot`` is exactly ``pgmap.address``.

    Stops being sufficient with an altmap whose device holds a previous boot's
    memmap and a pgmap at the same slab address (§4.4 caveat); the classifier
    combines it with ``nr_range`` on ≥ v5.10.
    """
    failed = _zone_and_node(sample, kernel, zones)
    if failed is not None:
        return failed
    zone = page_zone(kernel, sample.flags)
    nid = page_node(kernel, sample.flags)
    soft = _soft_signals(sample, kernel)
    slot = sample.pgmap_slot
    if slot == pgmap.address:
        return FingerprintResult(True, "ok", zone, nid, False, soft,
                                 f"zone DEVICE, node {nid}, page->pgmap == {pgmap.address:#x}")
    if not slot & 1:
        return _fail("pgmap_slot", f"pgmap slot {slot:#x} != pgmap {pgmap.address:#x}",
                     zone=zone, nid=nid, soft=soft)
    head = compound_head_address(kernel, sample.pfn, slot)
    head_pfn = None if head is None else page_pfn(kernel, head)
    in_range = head_pfn is not None and any(
        r.start_pfn <= head_pfn < r.end_pfn and r.start_pfn <= sample.pfn < r.end_pfn
        for r in pgmap.ranges
    )
    hflags = sample.head_flags
    ok = (
        in_range
        and hflags is not None
        and hflags != _POISON
        and (hflags >> kernel.pg_head) & 1 == 1
        and page_zone(kernel, hflags) == kernel.zone_device
        and sample.head_pgmap_slot == pgmap.address
    )
    if not ok:
        return _fail("tail_head", f"tail slot {slot:#x}: head {head_pfn!r} not a valid head of "
                     f"pgmap {pgmap.address:#x}", zone=zone, nid=nid, tail=True, soft=soft)
    return FingerprintResult(True, "ok", zone, nid, True, soft,
                             f"tail of head pfn {head_pfn:#x} whose pgmap == {pgmap.address:#x}")


def altmap_free_fingerprint(sample: PageSample, kernel: KernelInfo) -> FingerprintResult:
    """C5b: did ``memmap_init_range()`` (from ``move_pfn_range_to_zone()``) init this altmap page?

    ``__init_single_page()`` leaves zone ZONE_DEVICE and ``lru`` self-linked,
    so the pgmap slot (the word after ``flags``) holds the page's own address
    plus ``offsetof(struct page, lru)``. These pages never get a pgmap.
    """
    failed = _zone_and_node(sample, kernel, ())
    if failed is not None:
        return failed
    want = page_address(kernel, sample.pfn) + kernel.page_lru_offset
    zone = page_zone(kernel, sample.flags)
    nid = page_node(kernel, sample.flags)
    soft = _soft_signals(sample, kernel)
    if sample.pgmap_slot != want:
        return _fail("pgmap_slot", f"slot {sample.pgmap_slot:#x} != &page->lru {want:#x}",
                     zone=zone, nid=nid, soft=soft)
    return FingerprintResult(True, "ok", zone, nid, False, soft,
                             "zone DEVICE, lru self-linked (altmap memmap page)")


def find_frontier(
    first_pfn: int, end_pfn: int, passes: Callable[[int], bool], step: int = 1
) -> int:
    """First PFN of ``first_pfn + k*step`` in ``[first_pfn, end_pfn)`` that fails *passes*.

    Assumes the initialised part is a prefix (memmap_init_zone_device() walks
    PFNs upwards one compound page at a time). Returns *end_pfn* if every probe
    passes. Calls *passes* O(log((end_pfn - first_pfn) / step)) times.
    """
    if step < 1:
        raise ValueError("step must be >= 1")
    lo, hi = 0, -(-(end_pfn - first_pfn) // step)  # probe indices; hi = first failing index
    while lo < hi:
        mid = (lo + hi) // 2
        if passes(first_pfn + mid * step):
            lo = mid + 1
        else:
            hi = mid
    return min(first_pfn + lo * step, end_pfn)
