"""Picture: one line per section, one character per subsection, coloured by class.

A subsection whose PFNs fall into several classes is drawn as ``*`` in the
colour of the class that covers most of it. Without explicit bounds only the
sections listed in the snapshot are drawn.
"""

from __future__ import annotations

from rich.text import Text

from subsecinspect.classify.classes import Classification, PageClass
from subsecinspect.render.tables import CLASS_STYLES
from subsecinspect.snapshot.model import Snapshot

__all__ = ("CLASS_CHARS", "section_picture", "subsection_cover")

#: One character per class; the legend is printed under the picture.
CLASS_CHARS: dict[PageClass, str] = {
    PageClass.HOLE: " ",
    PageClass.NO_MEMMAP: "n",
    PageClass.EARLY_HOLE: "e",
    PageClass.ONLINE_RAM: "R",
    PageClass.RAM_LOGICALLY_OFFLINE: "o",
    PageClass.RAM_VMEMMAP_SELF_HOSTED: "v",
    PageClass.C1_OFFLINE_RAM: "1",
    PageClass.C2_DEV_VALID: "2",
    PageClass.C3_SUBSECTION_GAP: "3",
    PageClass.C4_DEV_INITIALISING: "4",
    PageClass.C4b_DEV_TEARDOWN: "t",
    PageClass.C5_DEV_DRIVER_RESERVED: "5",
    PageClass.C5b_DEV_ALTMAP_MEMMAP: "m",
    PageClass.IN_FLUX: "~",
    PageClass.MEMMAP_NOT_CAPTURED: "x",
    PageClass.MEMMAP_UNREADABLE: "u",
    PageClass.CORRUPT: "!",
}


def subsection_cover(classification: Classification, start: int, end: int
                     ) -> dict[PageClass, int]:
    """Pages of each class in PFNs ``[start, end)`` (past ``end_pfn``: HOLE)."""
    cover: dict[PageClass, int] = {}
    pfn = start
    while pfn < end:
        r = classification.lookup(pfn)
        if r is None:
            cover[PageClass.HOLE] = cover.get(PageClass.HOLE, 0) + end - pfn
            break
        stop = min(r.end_pfn, end)
        cover[r.cls] = cover.get(r.cls, 0) + stop - pfn
        pfn = stop
    return cover


def section_picture(
    snapshot: Snapshot,
    classification: Classification,
    *,
    first_section: int | None = None,
    last_section: int | None = None,
) -> Text:
    """Sections ``first_section..last_section`` (default: every listed section)."""
    k = snapshot.kernel
    pps = k.pages_per_section
    per = k.pages_per_subsection
    nrs = sorted(s.section_nr for s in snapshot.sections)
    lo = first_section if first_section is not None else (nrs[0] if nrs else 0)
    hi = last_section if last_section is not None else (nrs[-1] if nrs else -1)
    listed = set(nrs)
    out = Text()
    seen: set[PageClass] = set()
    for nr in range(lo, hi + 1):
        if first_section is None and last_section is None and nr not in listed:
            continue
        out.append(f"{nr:6d} {nr << k.section_size_bits:#14x} ")
        for i in range(k.subsections_per_section):
            a = nr * pps + i * per
            cover = subsection_cover(classification, a, a + per)
            cls = max(cover, key=lambda c: cover[c])
            seen.add(cls)
            char = "*" if len(cover) > 1 else CLASS_CHARS[cls]
            out.append(char, style=CLASS_STYLES[cls])
        out.append("\n")
    out.append("legend: ")
    for cls in PageClass:
        if cls in seen:
            out.append(f"{CLASS_CHARS[cls]!r}", style=CLASS_STYLES[cls])
            out.append(f"={cls.value} ")
    out.append("'*'=mixed (colour of the larger part)\n")
    return out
