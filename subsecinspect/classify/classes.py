"""Page classes: the labels of kernel-semantics.md §0 and the classifier's result types.

:class:`PageClass` names what is known about the struct page of a PFN
(Hildenbrand's five cases from the "/proc/kpageflags: do not use uninitialized
struct pages" thread, 2019, plus the extra states found in the kernel source).
:class:`Classification` is the result of :func:`subsecinspect.classify.decide.classify`:
sorted, maximal :class:`ClassRange` objects that cover every PFN once.
"""

from __future__ import annotations

import bisect
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = (
    "MEMMAP_DEPENDENT",
    "ClassRange",
    "ClassSummary",
    "Classification",
    "Confidence",
    "EvidenceValue",
    "PageClass",
    "evidence_items",
)

#: Evidence values are JSON scalars; kernel addresses are "0x..." strings.
EvidenceValue = str | int | bool


class PageClass(enum.StrEnum):
    """What the struct page of a PFN is; the value is the JSON string."""

    #: No section, section not present, or NULL root.
    HOLE = "HOLE"
    #: SECTION_MARKED_PRESENT without SECTION_HAS_MEM_MAP (boot, or teardown).
    NO_MEMMAP = "NO_MEMMAP"
    #: Early (boot) section, subsection not populated by memblock: reserved, not RAM.
    EARLY_HOLE = "EARLY_HOLE"
    #: Online section, subsection valid, no dev_pagemap.
    ONLINE_RAM = "ONLINE_RAM"
    #: Online section, but ``PageOffline()``: the struct page is initialised, the page
    #: itself has no memory behind it (virtio-mem's unplugged sub-blocks, balloons).
    RAM_LOGICALLY_OFFLINE = "RAM_LOGICALLY_OFFLINE"
    #: memmap_on_memory: the first pages of a hot-added block that hold its own memmap
    #: (``PageVmemmapSelfHosted()``): read the struct page's flags only.
    RAM_VMEMMAP_SELF_HOSTED = "RAM_VMEMMAP_SELF_HOSTED"
    #: Case 1: hot-added (or offlined) RAM that is not online; memmap is garbage.
    C1_OFFLINE_RAM = "C1_OFFLINE_RAM"
    #: Case 2: ZONE_DEVICE with an initialised memmap.
    C2_DEV_VALID = "C2_DEV_VALID"
    #: Case 3: subsection not present in a partially present non-early section.
    C3_SUBSECTION_GAP = "C3_SUBSECTION_GAP"
    #: Case 4: dev_pagemap registered, memmap not (yet) initialised.
    C4_DEV_INITIALISING = "C4_DEV_INITIALISING"
    #: Extra: dev_pagemap being torn down (memunmap_pages()).
    C4b_DEV_TEARDOWN = "C4b_DEV_TEARDOWN"
    #: Case 5: altmap ``reserve`` pages, never initialised.
    C5_DEV_DRIVER_RESERVED = "C5_DEV_DRIVER_RESERVED"
    #: Extra: altmap ``free`` pages that hold the memmap itself.
    C5b_DEV_ALTMAP_MEMMAP = "C5b_DEV_ALTMAP_MEMMAP"
    #: A live race was seen while reading (the section changed between two reads).
    IN_FLUX = "IN_FLUX"
    #: The memmap the class depends on is not in the dump (kdump never dumps pmem).
    MEMMAP_NOT_CAPTURED = "MEMMAP_NOT_CAPTURED"
    #: The memmap the class depends on cannot be read (e.g. --map=dev via /proc/kcore).
    MEMMAP_UNREADABLE = "MEMMAP_UNREADABLE"
    #: Damaged or inconsistent structures (section map, pgmap_array).
    CORRUPT = "CORRUPT"


#: Classes that are decided by reading struct pages (the fingerprint), and so
#: are replaced by MEMMAP_UNREADABLE / MEMMAP_NOT_CAPTURED when the reader
#: could not read that memmap. C5 is pure altmap arithmetic, C3/C4-by-subsection,
#: C4b, C1 and the RAM/hole classes come from section and pgmap metadata only.
MEMMAP_DEPENDENT = frozenset(
    {PageClass.C2_DEV_VALID, PageClass.C4_DEV_INITIALISING, PageClass.C5b_DEV_ALTMAP_MEMMAP}
)


class Confidence(enum.StrEnum):
    """How a fingerprint took part in the decision; absent when metadata alone decides."""

    #: The lifecycle (``nr_range``) bounds the range and the fingerprint found the frontier.
    FINGERPRINT = "fingerprint"
    #: No ``nr_range`` (< v5.10): the fingerprint alone decides (§4.4 caveat).
    FINGERPRINT_ONLY = "fingerprint_only"
    #: A fingerprint was needed but no memmap evidence exists.
    UNVERIFIED = "unverified"
    #: The lifecycle says "initialised" but a fingerprint sample failed.
    DISPUTED = "disputed"


def evidence_items(**kw: EvidenceValue | None) -> tuple[tuple[str, EvidenceValue], ...]:
    """Evidence as a sorted, hashable tuple; keys whose value is ``None`` are left out."""
    return tuple(sorted((k, v) for k, v in kw.items() if v is not None))


@dataclass(frozen=True, slots=True)
class ClassRange:
    """PFNs ``[start_pfn, end_pfn)`` that share one class and one evidence."""

    start_pfn: int
    end_pfn: int
    cls: PageClass
    evidence_items: tuple[tuple[str, EvidenceValue], ...] = ()
    confidence: Confidence | None = None

    @property
    def evidence(self) -> Mapping[str, EvidenceValue]:
        return dict(self.evidence_items)

    @property
    def nr_pages(self) -> int:
        return self.end_pfn - self.start_pfn

    def same_kind(self, other: ClassRange) -> bool:
        """Equal class, evidence and confidence: adjacent ranges of one kind are merged."""
        return (
            self.cls is other.cls
            and self.evidence_items == other.evidence_items
            and self.confidence is other.confidence
        )


@dataclass(frozen=True, slots=True)
class ClassSummary:
    """Pages, bytes and number of ranges of one class."""

    cls: PageClass
    pages: int
    bytes: int
    ranges: int


@dataclass(frozen=True, slots=True)
class Classification:
    """Sorted, maximal ranges covering ``[0, end_pfn)`` exactly once."""

    ranges: tuple[ClassRange, ...]
    #: End of the highest present section (0 when nothing is present).
    end_pfn: int
    page_size: int
    _starts: tuple[int, ...] = field(default=(), repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_starts", tuple(r.start_pfn for r in self.ranges))

    def summary(self) -> tuple[ClassSummary, ...]:
        """Per class that occurs, in :class:`PageClass` order."""
        pages: dict[PageClass, int] = {}
        count: dict[PageClass, int] = {}
        for r in self.ranges:
            pages[r.cls] = pages.get(r.cls, 0) + r.nr_pages
            count[r.cls] = count.get(r.cls, 0) + 1
        return tuple(
            ClassSummary(c, pages[c], pages[c] * self.page_size, count[c])
            for c in PageClass
            if c in pages
        )

    def lookup(self, pfn: int) -> ClassRange | None:
        """The range holding *pfn*, or ``None`` beyond ``end_pfn``."""
        i = bisect.bisect_right(self._starts, pfn) - 1
        if i < 0 or pfn >= self.ranges[i].end_pfn:
            return None
        return self.ranges[i]
