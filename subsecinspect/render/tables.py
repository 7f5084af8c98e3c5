"""Rich tables for the terminal: summary, ranges, sections, pgmaps and the explain panel.

Every function returns a rich renderable; the CLI prints it. Only data goes
here, so the same renderables work on stdout or in a captured Console.
"""

from __future__ import annotations

from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from subsecinspect.classify.classes import Classification, ClassRange, PageClass
from subsecinspect.classify.explain import Explanation
from subsecinspect.snapshot.model import Snapshot

__all__ = (
    "CLASS_STYLES",
    "explain_panel",
    "human_size",
    "pgmaps_table",
    "ranges_table",
    "sections_table",
    "short_evidence",
    "summary_table",
)

#: One style per class, shared with :mod:`subsecinspect.render.picture`.
CLASS_STYLES: dict[PageClass, str] = {
    PageClass.HOLE: "dim",
    PageClass.NO_MEMMAP: "dim yellow",
    PageClass.EARLY_HOLE: "grey62",
    PageClass.ONLINE_RAM: "green",
    PageClass.RAM_LOGICALLY_OFFLINE: "dark_sea_green",
    PageClass.RAM_VMEMMAP_SELF_HOSTED: "bright_green",
    PageClass.C1_OFFLINE_RAM: "yellow",
    PageClass.C2_DEV_VALID: "cyan",
    PageClass.C3_SUBSECTION_GAP: "blue",
    PageClass.C4_DEV_INITIALISING: "bold red",
    PageClass.C4b_DEV_TEARDOWN: "red",
    PageClass.C5_DEV_DRIVER_RESERVED: "magenta",
    PageClass.C5b_DEV_ALTMAP_MEMMAP: "bright_magenta",
    PageClass.IN_FLUX: "bold yellow",
    PageClass.MEMMAP_NOT_CAPTURED: "orange3",
    PageClass.MEMMAP_UNREADABLE: "orange3",
    PageClass.CORRUPT: "bold white on red",
}

_JUDGEMENT = {True: ("✓", "green"), False: ("✗", "bold red"), None: ("~", "yellow")}


def human_size(nbytes: int) -> str:
    """Binary units, e.g. ``192 MiB``; exact values stay in the JSON."""
    size = float(nbytes)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f} {unit}" if size == int(size) else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def _plain(*cells: str) -> list[Text]:
    """Cells as literal text: strings from a snapshot or a dump (a zone name, a pgmap type,
    a warning) must never be parsed as rich markup (``[/]`` would raise MarkupError)."""
    return [Text(c) for c in cells]


def _cls_text(cls: PageClass) -> Text:
    return Text(cls.value, style=CLASS_STYLES[cls])


def summary_table(classification: Classification) -> Table:
    """Pages, bytes and ranges per class."""
    t = Table(title="Summary", title_justify="left")
    t.add_column("class")
    t.add_column("pages", justify="right")
    t.add_column("size", justify="right")
    t.add_column("ranges", justify="right")
    for s in classification.summary():
        t.add_row(_cls_text(s.cls), *_plain(f"{s.pages:,}", human_size(s.bytes), str(s.ranges)))
    return t


def short_evidence(r: ClassRange, limit: int = 60) -> str:
    """Evidence as ``key=value`` pairs, most telling keys first, cut to *limit* characters."""
    first = ("reason", "lifecycle_class", "block_state", "pgmap_type", "lifecycle",
             "fingerprint", "pgmap")
    ev = r.evidence
    keys = [k for k in first if k in ev] + [k for k in sorted(ev) if k not in first]
    text = ", ".join(f"{k}={str(ev[k]).removeprefix('MEMORY_DEVICE_')}" for k in keys)
    if r.confidence is not None:
        text = f"[{r.confidence.value}] {text}"
    return text if len(text) <= limit else text[: limit - 1] + "…"


def ranges_table(classification: Classification, *, max_evidence: int = 60) -> Table:
    """One row per range: PFNs, physical addresses, size, class, short evidence."""
    shift = classification.page_size.bit_length() - 1
    t = Table(title="Ranges", title_justify="left")
    for name, just in (("start_pfn", "right"), ("end_pfn", "right"), ("phys", "left"),
                       ("size", "right"), ("class", "left"), ("evidence", "left")):
        t.add_column(name, justify=just)  # type: ignore[arg-type]
    for r in classification.ranges:
        phys = f"{r.start_pfn << shift:#x}-{(r.end_pfn << shift) - 1:#x}"
        t.add_row(*_plain(f"{r.start_pfn:#x}", f"{r.end_pfn:#x}", phys,
                          human_size(r.nr_pages << shift)), _cls_text(r.cls),
                  *_plain(short_evidence(r, max_evidence)))
    return t


def _smap_chars(smap: int | None, nsub: int) -> str:
    if smap is None:
        return "?" * nsub
    return "".join("1" if smap >> i & 1 else "." for i in range(nsub))


def sections_table(snapshot: Snapshot) -> Table:
    """Section number, physical start, flags and the subsection map (bit 0 first)."""
    k = snapshot.kernel
    nsub = k.subsections_per_section
    t = Table(title="Sections", title_justify="left")
    for name in ("nr", "phys_start", "flags", "subsection_map (bit0 = low 2 MiB)", "state"):
        t.add_column(name, justify="right" if name == "nr" else "left")
    for s in sorted(snapshot.sections, key=lambda s: s.section_nr):
        if s.subsection_map is None:
            state = "unavailable"
        else:
            n = bin(s.subsection_map & ((1 << nsub) - 1)).count("1")
            state = "FULL" if n == nsub else f"PARTIAL {n}/{nsub}"
        notes = [] if s.map_consistent else ["CORRUPT"]
        if s.in_flux:
            notes.append("IN_FLUX")
        t.add_row(*_plain(str(s.section_nr), f"{s.section_nr << k.section_size_bits:#x}",
                          "|".join(s.flags) or "-", _smap_chars(s.subsection_map, nsub),
                          " ".join([state, *notes])))
    return t


def pgmaps_table(snapshot: Snapshot) -> Table:
    """One row per dev_pagemap with its ranges, altmap and lifecycle state."""
    shift = snapshot.kernel.page_shift
    t = Table(title="dev_pagemaps", title_justify="left")
    for name in ("address", "type", "ranges", "altmap base/reserve/free/align/alloc",
                 "vmemmap_shift", "nr_range", "ref"):
        t.add_column(name)
    for pg in snapshot.pgmaps:
        ranges = "\n".join(
            f"[{r.index}] {r.start_pfn << shift:#x}-{(r.end_pfn << shift) - 1:#x}"
            f"{'' if r.complete else ' (in progress)'}" for r in pg.ranges)
        a = pg.altmap
        alt = (f"{a.base_pfn:#x}/{a.reserve}/{a.free}/{a.align}/{a.alloc}" if a.valid
               else "-")
        t.add_row(*_plain(f"{pg.address:#x}", pg.type.removeprefix("MEMORY_DEVICE_"), ranges,
                          alt, str(pg.vmemmap_shift), str(pg.nr_range)),
                  Text("dying", style="red") if pg.ref_dying else Text("live", style="green"))
    return t


def explain_panel(explanation: Explanation) -> Panel:
    """The chain of evidence, the verdict and the kernel predicates' answers."""
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    for step in explanation.steps:
        facts.add_row(Text(step.title, style="bold underline"), "")
        for key, value in step.items:
            facts.add_row(*_plain(f"  {key}", str(value)))
    v = explanation.verdict
    verdict = Text.assemble("verdict: ", _cls_text(v.cls),
                            f"  range {v.start_pfn:#x}-{v.end_pfn:#x}  ",
                            short_evidence(v, 200))
    preds = Table(title="what the kernel's predicates answer", title_justify="left")
    for name in ("predicate", "answer", "", "note"):
        preds.add_column(name)
    for p in explanation.predicates:
        mark, style = _JUDGEMENT[p.correct]
        preds.add_row(*_plain(p.name, p.answer), Text(mark, style=style), *_plain(p.note))
    return Panel(Group(facts, Text(""), verdict, Text(""), preds),
                 title=f"PFN {explanation.pfn:#x} (phys {explanation.phys_addr:#x})")
