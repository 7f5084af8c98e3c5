"""ZONE_DEVICE memmap evidence: readability of each pgmap range and its initialised frontier.

Mirrors what ``memmap_init_zone_device()`` (mm/mm_init.c; mm/page_alloc.c
before 5.18) leaves behind: it initialises ``[pfn_first(), range end)`` in
ascending PFN order one compound page at a time, so the initialised part is a
prefix whose end is found by binary search with
:func:`subsecinspect.snapshot.pageinit.find_frontier` (kernel-semantics §4.3 step 5.4,
§4.4). Readability is decided per (section ∩ range) piece, because x86
populates a piece's vmemmap in one way: 2 MiB blocks from the altmap (on the
device) for whole sections, base pages from RAM otherwise, or the boot memmap
of an early section (``section_activate()``, ``vmemmap_populate()``); and only
a sample of the pieces is probed, bisecting where two samples differ, because
the statuses form runs (:func:`_readability`).
"""

from __future__ import annotations

from collections.abc import Callable
from itertools import pairwise

import drgn
from drgn import Object, Program

from subsecinspect.kernel.pages import PageReader
from subsecinspect.snapshot.model import (
    DevPagemap,
    KernelInfo,
    MemmapStatus,
    PageSample,
    PgmapRange,
    RangeMemmap,
    TargetInfo,
    ZoneSpan,
)
from subsecinspect.snapshot.pageinit import (
    altmap_free_fingerprint,
    data_first_pfn,
    find_frontier,
    page_address,
    zone_device_memmap_initialised,
)

__all__ = (
    "Readability",
    "read_range_memmaps",
)

Span = tuple[int, int, MemmapStatus]


class Readability:
    """Decides why a struct page could not be read (kernel-semantics §1, lab-notes §6, §15).

    Live (/proc/kcore): any fault is UNREADABLE (kcore maps System RAM only).
    Dumps: positively, if the vmemmap address translates through the dump's
    page tables the struct page exists but was not captured (NOT_CAPTURED:
    Persistent Memory is never in a kdump; pages excluded by the dump level);
    if it does not translate, the vmemmap is unmapped (UNREADABLE). If the page
    tables themselves are missing, drgn's error text decides.
    """

    def __init__(self, prog: Program, ki: KernelInfo, target: TargetInfo) -> None:
        self.prog = prog
        self.ki = ki
        self.live = target.kind == "live"
        self._init_mm: Object | None = None

    def _translate(self, addr: int) -> int | None:
        from drgn.helpers.linux.mm import follow_phys

        if self._init_mm is None:
            self._init_mm = self.prog["init_mm"].address_of_()
        return follow_phys(self._init_mm, addr).value_()

    def status_of_fault(self, pfn: int, error: str) -> MemmapStatus:
        if self.live:
            return MemmapStatus.UNREADABLE
        try:
            self._translate(page_address(self.ki, pfn))
        except drgn.FaultError as e:
            # "address is not mapped": the vmemmap itself is unpopulated. A
            # page-table page missing from the dump reads as excluded/out of bounds.
            text = str(e).lower()
            if "excluded" in text or "out-of-bounds" in text:
                return MemmapStatus.NOT_CAPTURED
            return MemmapStatus.UNREADABLE
        except (KeyError, LookupError, ValueError, NotImplementedError):
            lowered = error.lower()
            if "excluded" in lowered or "out-of-bounds" in lowered:
                return MemmapStatus.NOT_CAPTURED
            return MemmapStatus.UNREADABLE
        return MemmapStatus.NOT_CAPTURED


def _probe(reader: PageReader, rd: Readability, pfn: int) -> tuple[MemmapStatus, str]:
    try:
        reader.raw(pfn)
    except drgn.FaultError as e:
        return rd.status_of_fault(pfn, str(e)), str(e)
    return MemmapStatus.READ, ""


def _append(spans: list[Span], start: int, end: int, st: MemmapStatus) -> None:
    if start >= end:
        return
    if spans and spans[-1][1] == start and spans[-1][2] == st:
        spans[-1] = (spans[-1][0], end, st)
    else:
        spans.append((start, end, st))


#: Every how many (section ∩ range) pieces :func:`_readability` probes; between two
#: probed pieces that agree nothing changes (see there), elsewhere it bisects.
SAMPLE_STRIDE = 64

_Pair = tuple[MemmapStatus, str, MemmapStatus, str]


def _readability(
    reader: PageReader, rd: Readability, start: int, end: int
) -> tuple[list[Span], str]:
    """Readability spans of ``[start, end)``; subsection granularity where a piece is mixed.

    A piece is one section ∩ ``[start, end)``. A probed piece reads its first PFN and
    the first PFN of its last subsection; if both agree the whole piece has that
    status, else each subsection is probed. Not every piece is probed: the first
    two, the last two and every :data:`SAMPLE_STRIDE`-th are, and between two probed
    pieces ``i < j`` the pieces in between are taken to have the status where ``i`` ends
    when ``j`` starts with that same status; otherwise the middle piece is probed
    and both halves are decided the same way, down to neighbouring pieces. So every
    change of status that shows at a probed piece is found at its exact piece.

    Why the statuses form runs: the memmap of one range is populated in one
    ``__add_pages()`` -> ``section_activate()`` pass, section by section, and on
    x86 ``vmemmap_populate()`` backs every full section the same way (2 MiB blocks
    from the pgmap's altmap if it has one, with no fallback, else from RAM), only
    partial head/tail sections with base pages from RAM; a dump captures or drops
    those backing pages by physical range (RAM yes, persistent memory no; makedumpfile's zero-page
    exclusion can only hit memmap past the initialised frontier, a suffix), and
    live /proc/kcore maps the vmemmap of System RAM only. Each of these changes
    the status at most once or twice per range, at boundaries that then hold for
    a whole run of sections, never for an island between two agreeing samples.
    """
    ki = reader.ki
    pps, ppsub = ki.pages_per_section, ki.pages_per_subsection
    first_sec = start // pps
    n = (end - 1) // pps - first_sec + 1 if end > start else 0

    def piece(i: int) -> tuple[int, int]:
        """Piece *i*: section ``first_sec + i`` ∩ ``[start, end)``."""
        return max(start, (first_sec + i) * pps), min(end, (first_sec + i + 1) * pps)

    pairs: dict[int, _Pair] = {}

    def pair(i: int) -> _Pair:
        if i not in pairs:
            a, b = piece(i)
            last_sub = max(a, (b - 1) // ppsub * ppsub)
            st_a, err_a = _probe(reader, rd, a)
            st_b, err_b = (st_a, err_a) if last_sub == a else _probe(reader, rd, last_sub)
            pairs[i] = (st_a, err_a, st_b, err_b)
        return pairs[i]

    def between(i: int, j: int) -> None:
        """Probe what is needed strictly between the probed pieces *i* < *j*."""
        while j - i > 1 and pair(i)[2] != pair(j)[0]:
            m = (i + j) // 2
            pair(m)
            between(i, m)
            i = m

    # The head and tail pieces may be partial sections (populated differently): they and
    # their neighbours, the first and last full sections, are always probed.
    probed = sorted({*range(1, n, SAMPLE_STRIDE), 0, n - 2, n - 1} & set(range(n)))
    for i in probed:
        pair(i)
    for i, j in pairwise(probed):
        between(i, j)
    spans: list[Span] = []
    first_error = ""
    prev = -1
    for i in sorted(pairs):
        if i > prev + 1:  # unprobed pieces between two that agree: the status carries on
            _append(spans, piece(prev + 1)[0], piece(i)[0], pairs[prev][2])
        prev = i
        a, b = piece(i)
        st_a, err_a, st_b, err_b = pairs[i]
        first_error = first_error or err_a or err_b
        if st_a == st_b:
            _append(spans, a, b, st_a)
            continue
        last_sub = max(a, (b - 1) // ppsub * ppsub)
        sub = a
        while sub < b:
            sub_end = min(b, (sub // ppsub + 1) * ppsub)
            st, err = (
                (st_a, err_a) if sub == a
                else (st_b, err_b) if sub == last_sub
                else _probe(reader, rd, sub)
            )
            first_error = first_error or err
            _append(spans, sub, sub_end, st)
            sub = sub_end
    return spans, first_error


def _frontier(
    passes: Callable[[int], bool], first: int, end: int, step: int, spans: list[Span]
) -> int | None:
    """First failing PFN, searching only readable spans in order.

    Compound ranges are searched on the head grid (``step = 1 << vmemmap_shift``) and
    then page by page inside the compound page before the failing head, because
    memmap_init_compound() initialises a compound page's tails after its head.
    """
    readable = [(max(a, first), b) for a, b, st in spans if st is MemmapStatus.READ and b > first]
    if not readable:
        return None
    for a, b in readable:
        grid_a = first + -(-(a - first) // step) * step
        if grid_a >= b:
            continue
        grid_last = first + (b - 1 - first) // step * step
        if not passes(grid_a):
            return grid_a
        if passes(grid_last):
            # The tail of the last compound page in this span.
            if step > 1 and not passes(b - 1):
                return find_frontier(grid_last + 1, b, passes)
            continue
        f = find_frontier(grid_a + step, grid_last + 1, passes, step)
        if step > 1 and f > grid_a:
            return find_frontier(f - step + 1, f, passes)
        return f
    return end


def _range_memmap(
    reader: PageReader,
    rd: Readability,
    pg: DevPagemap,
    r: PgmapRange,
    zones: tuple[ZoneSpan, ...],
) -> RangeMemmap:
    ki = reader.ki
    first = data_first_pfn(pg, r)
    spans, first_error = _readability(reader, rd, r.start_pfn, r.end_pfn)
    samples: list[PageSample] = []

    def sample(pfn: int) -> PageSample:
        s = reader.sample(pfn)
        if s.status is not MemmapStatus.READ:
            s = PageSample(pfn=pfn, status=rd.status_of_fault(pfn, s.error), error=s.error)
        samples.append(s)
        return s

    def passes(pfn: int) -> bool:
        return bool(zone_device_memmap_initialised(sample(pfn), pg, ki, zones))

    step = 1 << pg.vmemmap_shift if pg.vmemmap_shift else 1
    frontier = _frontier(passes, first, r.end_pfn, step, spans) if first < r.end_pfn else None
    free_fp = ""
    alt = pg.altmap
    if r.index == 0 and alt.valid and alt.free:
        lo = alt.base_pfn + alt.reserve
        probes = [sample(p) for p in sorted({lo, lo + alt.free - 1})]
        if all(p.status is MemmapStatus.READ for p in probes):
            ok = all(altmap_free_fingerprint(p, ki) for p in probes)
            free_fp = "lru_self" if ok else "other"
    return RangeMemmap(
        pgmap=pg.address,
        range_index=r.index,
        first_pfn=first,
        end_pfn=r.end_pfn,
        frontier_pfn=frontier,
        readability=tuple(spans),
        samples=tuple(samples),
        altmap_free_fingerprint=free_fp,
        error=first_error,
    )


def read_range_memmaps(
    reader: PageReader,
    target: TargetInfo,
    pgmaps: list[DevPagemap],
    zones: tuple[ZoneSpan, ...],
) -> tuple[list[RangeMemmap], list[str]]:
    """Memmap evidence for every range of every live (not dying) pgmap."""
    rd = Readability(reader.prog, reader.ki, target)
    out: list[RangeMemmap] = []
    warnings: list[str] = []
    for pg in pgmaps:
        if pg.ref_dying:
            continue  # C4b: the memmap may already be freed; nothing to decide from it.
        for r in pg.ranges:
            mm = _range_memmap(reader, rd, pg, r, zones)
            out.append(mm)
            bad = [(a, b, st) for a, b, st in mm.readability if st is not MemmapStatus.READ]
            if bad:
                n = sum(b - a for a, b, _ in bad)
                kinds = sorted({st.value for _, _, st in bad})
                warnings.append(
                    f"pgmap {pg.address:#x} range {r.index}: memmap of {n} pages "
                    f"{'/'.join(kinds)}" + (f" ({mm.error})" if mm.error else "")
                )
    return out, warnings
