"""``classify --picture FILE.svg``: the memory map as SVG, for bug reports.

One row per listed section (its number and physical address on the left), one
:data:`CELL` x :data:`CELL` square per sub-section filled with the colour of the class that
covers most of it (:data:`SVG_COLOURS`; a mixed sub-section gets a dashed outline), the
classified ranges it touches as its tooltip (``<title>``), and a legend of the classes drawn.
Pure: a string from a snapshot and its classification.
"""

from __future__ import annotations

from xml.sax.saxutils import escape

from subsecinspect.classify.classes import Classification, PageClass
from subsecinspect.render.picture import subsection_cover
from subsecinspect.snapshot.model import Snapshot

__all__ = ("CELL", "LABEL_WIDTH", "SVG_COLOURS", "cell_origin", "svg_picture")

#: Side of one sub-section cell, in pixels; rows are CELL + 2 apart.
CELL = 12
#: Width of the section labels left of the cells.
LABEL_WIDTH = 190
_ROW = CELL + 2
_TOP = 24

#: One fill per class, distinct at a glance (safe classes green/grey, unsafe warm).
SVG_COLOURS: dict[PageClass, str] = {
    PageClass.HOLE: "#ffffff",
    PageClass.NO_MEMMAP: "#9e9e9e",
    PageClass.EARLY_HOLE: "#cfd8dc",
    PageClass.ONLINE_RAM: "#2e7d32",
    PageClass.C1_OFFLINE_RAM: "#ef6c00",
    PageClass.C2_DEV_VALID: "#1565c0",
    PageClass.C3_SUBSECTION_GAP: "#6a1b9a",
    PageClass.C4_DEV_INITIALISING: "#c62828",
    PageClass.C4b_DEV_TEARDOWN: "#ad1457",
    PageClass.C5_DEV_DRIVER_RESERVED: "#f9a825",
    PageClass.C5b_DEV_ALTMAP_MEMMAP: "#00838f",
    PageClass.IN_FLUX: "#ffee58",
    PageClass.MEMMAP_NOT_CAPTURED: "#795548",
    PageClass.MEMMAP_UNREADABLE: "#000000",
    PageClass.CORRUPT: "#ff00ff",
}


def cell_origin(row: int, subsection: int) -> tuple[int, int]:
    """Top-left pixel of the cell of sub-section *subsection* in row *row* (0-based)."""
    return LABEL_WIDTH + subsection * CELL, _TOP + row * _ROW


def _tooltip(classification: Classification, start: int, end: int) -> str:
    parts = []
    pfn = start
    while pfn < end:
        r = classification.lookup(pfn)
        if r is None:
            parts.append(f"{pfn:#x}-{end:#x} HOLE")
            break
        parts.append(f"{r.start_pfn:#x}-{r.end_pfn:#x} {r.cls.value}")
        pfn = r.end_pfn
    return f"PFN {start:#x}-{end:#x}: " + "; ".join(parts)


def svg_picture(snapshot: Snapshot, classification: Classification) -> str:
    """The SVG document (UTF-8 text) of every section the snapshot lists."""
    k = snapshot.kernel
    nrs = sorted(s.section_nr for s in snapshot.sections)
    n = k.subsections_per_section
    width = LABEL_WIDTH + n * CELL + 10
    seen: list[PageClass] = []
    body: list[str] = []
    for row, nr in enumerate(nrs):
        x0, y = cell_origin(row, 0)
        body.append(f'<text x="4" y="{y + CELL - 2}">{nr:6d} {nr << k.section_size_bits:#x}'
                    "</text>")
        for i in range(n):
            a = nr * k.pages_per_section + i * k.pages_per_subsection
            b = a + k.pages_per_subsection
            cover = subsection_cover(classification, a, b)
            cls = max(cover, key=lambda c: cover[c])
            if cls not in seen:
                seen.append(cls)
            dash = ' stroke-dasharray="2,1"' if len(cover) > 1 else ""
            body.append(f'<rect x="{x0 + i * CELL}" y="{y}" width="{CELL}" height="{CELL}" '
                        f'fill="{SVG_COLOURS[cls]}" stroke="#607d8b" stroke-width="0.5"{dash}>'
                        f"<title>{escape(_tooltip(classification, a, b))}</title></rect>")
    y = _TOP + len(nrs) * _ROW + 10
    legend = [cls for cls in PageClass if cls in seen]
    for j, cls in enumerate(legend):
        ly = y + j * _ROW
        body.append(f'<rect x="4" y="{ly}" width="{CELL}" height="{CELL}" '
                    f'fill="{SVG_COLOURS[cls]}" stroke="#607d8b" stroke-width="0.5"/>'
                    f'<text x="{CELL + 10}" y="{ly + CELL - 2}">{cls.value}</text>')
    height = y + len(legend) * _ROW + 10
    title = escape(f"subsecinspect: {k.release} ({snapshot.target.kind})")
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="monospace" font-size="11">\n<title>{title}</title>\n'
            f'<rect width="{width}" height="{height}" fill="#ffffff"/>\n'
            f'<text x="4" y="14">{title}</text>\n' + "\n".join(body) + "\n</svg>\n")
