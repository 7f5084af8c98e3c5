"""Tally: every model's answers over a snapshot, judged against the classification.

The judge (kernel-semantics.md §5.2): an answer that hands out the struct page of a PFN
whose memmap is not initialised (C1, C4, C4b, C5, or no memmap at all: HOLE, NO_MEMMAP,
C3) is **unsafe**; an answer that hides an initialised page the question exists to find
(:data:`WANTED`) is **over-cautious**; anything else is **right**, and classes whose
memmap state is unknown (IN_FLUX, MEMMAP_*, CORRUPT) are **uncertain**.

The work is per piece, never per PFN: the classification's ranges, the section runs of
:func:`~subsecinspect.classify.runs.section_runs` (partial sections cut per sub-section),
the pgmap cuts of :func:`~subsecinspect.classify.runs.global_cuts` and the sub-section
and section bounds around every ``pgmap_array`` hit (also where no section exists);
every model answer is constant inside a piece.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from itertools import pairwise

from subsecinspect.classify.audit.models import MODELS, AuditInput, ModelSpec
from subsecinspect.classify.classes import Classification, PageClass
from subsecinspect.classify.runs import global_cuts, section_runs, subsection_cuts
from subsecinspect.snapshot.index import SnapshotIndex
from subsecinspect.snapshot.model import Snapshot

__all__ = (
    "INITIALISED",
    "UNCERTAIN",
    "WANTED",
    "Audit",
    "ClassTally",
    "ModelAudit",
    "QuestionTally",
    "answer_spans",
    "audit",
    "judge",
    "pieces",
)

#: Classes whose struct page is initialised (C5b and the self-hosted vmemmap of
#: memmap_on_memory: flags only; a logically offline page: the struct page, not the page).
INITIALISED = frozenset({PageClass.ONLINE_RAM, PageClass.C2_DEV_VALID, PageClass.EARLY_HOLE,
                         PageClass.C5b_DEV_ALTMAP_MEMMAP, PageClass.RAM_LOGICALLY_OFFLINE,
                         PageClass.RAM_VMEMMAP_SELF_HOSTED})
#: Classes whose memmap state the snapshot does not know.
UNCERTAIN = frozenset({PageClass.IN_FLUX, PageClass.MEMMAP_NOT_CAPTURED,
                       PageClass.MEMMAP_UNREADABLE, PageClass.CORRUPT})
_WALKER = frozenset({PageClass.ONLINE_RAM, PageClass.C2_DEV_VALID})
_DEVICE = frozenset({PageClass.C2_DEV_VALID})
#: The pages each question exists to find (hiding one is over-cautious). The walkers
#: want every initialised RAM or device page: the goal of "make pfn walker support
#: ZONE_DEVICE" (2019); pfn_to_online_page() by contract only online RAM.
WANTED: dict[str, frozenset[PageClass]] = {
    "pfn_valid": _WALKER,
    "pfn_to_online_page": frozenset({PageClass.ONLINE_RAM}),
    "get_dev_pagemap": _DEVICE,
    "pgmap_pfn_valid": _DEVICE,
    "pfn_zone_device": _DEVICE,
    "walker:kpageflags": _WALKER,
    "walker:memory_failure": _WALKER,
}


def judge(question: str, page: bool, cls: PageClass,
          initialised: frozenset[PageClass] = frozenset()) -> str:
    """"right", "unsafe", "over_cautious" or "uncertain" for one answer about a *cls* PFN
    (*initialised*: classes the model initialises on top of the kernel)."""
    if cls in UNCERTAIN:
        return "uncertain"
    if page:
        return "right" if cls in INITIALISED or cls in initialised else "unsafe"
    return "over_cautious" if cls in WANTED[question] else "right"


def pieces(
    ix: SnapshotIndex, classification: Classification
) -> Iterator[tuple[int, int, PageClass]]:
    """``(start, end, class)`` pieces covering ``[0, end_pfn)`` on which every model's
    answers are constant."""
    pps, per = ix.pages_per_section, ix.pages_per_subsection
    cuts = set(global_cuts(ix))
    cuts.update(r.start_pfn for r in classification.ranges)
    for hit in ix.hits:  # the sub-sections and sections a hit touches (models test both)
        for unit in (per, pps):
            cuts.update((hit.start_pfn - hit.start_pfn % unit, -(-hit.end_pfn // unit) * unit))
    for first, last, key in section_runs(ix):
        start = first * pps
        cuts.update((start, (last + 1) * pps))
        if key is None:
            cuts.update(subsection_cuts(ix, ix.sections[first], start))
    end = classification.end_pfn
    points = sorted(p for p in cuts if 0 < p < end)
    ranges = classification.ranges
    i = 0
    for a, b in pairwise([0, *points, end] if end else []):
        while ranges[i].end_pfn <= a:
            i += 1
        yield a, b, ranges[i].cls


@dataclass(slots=True)
class ClassTally:
    """Pages of one class by judgement, and the ranges judged unsafe / over-cautious."""

    cls: PageClass
    pages: dict[str, int] = field(default_factory=dict)
    ranges: dict[str, list[tuple[int, int]]] = field(default_factory=dict)

    def add(self, verdict: str, a: int, b: int) -> None:
        self.pages[verdict] = self.pages.get(verdict, 0) + (b - a)
        if verdict in ("unsafe", "over_cautious"):
            spans = self.ranges.setdefault(verdict, [])
            if spans and spans[-1][1] == a:
                spans[-1] = (spans[-1][0], b)
            else:
                spans.append((a, b))


@dataclass(slots=True)
class QuestionTally:
    """One question of one model: per class present, and the lookups of a full walk."""

    question: str
    classes: dict[PageClass, ClassTally] = field(default_factory=dict)
    lookups: int = 0

    def total(self, verdict: str) -> int:
        return sum(t.pages.get(verdict, 0) for t in self.classes.values())

    def spans(self, verdict: str) -> list[tuple[int, int, PageClass]]:
        """Every range judged *verdict*, sorted."""
        return sorted((a, b, c) for c, t in self.classes.items()
                      for a, b in t.ranges.get(verdict, ()))


@dataclass(slots=True)
class ModelAudit:
    """One model's questions, and the metadata bytes it adds on this layout."""

    model: ModelSpec
    questions: dict[str, QuestionTally]
    extra_bytes: int


@dataclass(frozen=True, slots=True)
class Audit:
    """What :func:`audit` found, per model in the order asked."""

    models: tuple[ModelAudit, ...]
    end_pfn: int


def audit(snapshot: Snapshot, classification: Classification,
          models: Iterable[str] = ("kernel",)) -> Audit:
    """Evaluate the named *models* (keys of :data:`MODELS`) on every piece of *snapshot*."""
    ix = SnapshotIndex(snapshot)
    inp = AuditInput(snapshot, ix)
    specs = [MODELS[name] for name in models]
    out = [ModelAudit(s, {}, s.extra_bytes(inp)) for s in specs]
    for a, b, cls in pieces(ix, classification):
        for spec, res in zip(specs, out, strict=True):
            for ans in spec.evaluate(inp, a):
                q = res.questions.get(ans.question)
                if q is None:
                    q = res.questions[ans.question] = QuestionTally(ans.question)
                t = q.classes.get(cls)
                if t is None:
                    t = q.classes[cls] = ClassTally(cls)
                t.add(judge(ans.question, ans.page, cls, spec.initialised), a, b)
                q.lookups += ans.lookups * (b - a)
    return Audit(tuple(out), classification.end_pfn)


def answer_spans(snapshot: Snapshot, classification: Classification,
                 model: str = "kernel") -> dict[str, list[tuple[int, int, bool]]]:
    """Per question of *model*: maximal ``(start, end, page)`` spans of its answer over
    ``[0, end_pfn)`` (what the ground-truth lab test compares with the running kernel)."""
    ix = SnapshotIndex(snapshot)
    inp = AuditInput(snapshot, ix)
    out: dict[str, list[tuple[int, int, bool]]] = {}
    for a, b, _ in pieces(ix, classification):
        for ans in MODELS[model].evaluate(inp, a):
            spans = out.setdefault(ans.question, [])
            if spans and spans[-1][1] == a and spans[-1][2] == ans.page:
                spans[-1] = (spans[-1][0], b, ans.page)
            else:
                spans.append((a, b, ans.page))
    return out
