"""What changed between two classifications: the PFN ranges whose class is not the same.

Pure. Both classifications are compared over ``[0, max(end_pfn))``; past a classification's
``end_pfn`` a PFN is ``HOLE`` (no present section there), so a section hot-added beyond the
old end shows as ``HOLE`` -> its class. Adjacent changed PFNs with the same pair of classes
and evidences are one :class:`ClassChange`.
"""

from __future__ import annotations

import bisect
import itertools
from dataclasses import dataclass

from subsecinspect.classify.classes import Classification, ClassRange, PageClass

__all__ = ("ClassChange", "diff_classifications")


@dataclass(frozen=True, slots=True)
class ClassChange:
    """PFNs ``[start_pfn, end_pfn)`` that were in *before*'s class and are in *after*'s."""

    start_pfn: int
    end_pfn: int
    before: ClassRange
    after: ClassRange


def _at(c: Classification, starts: list[int], pfn: int, end: int) -> ClassRange:
    """The range of *c* holding *pfn*; past ``end_pfn``, a HOLE up to *end*."""
    if pfn >= c.end_pfn:
        return ClassRange(c.end_pfn, end, PageClass.HOLE, (("reason", "past end_pfn"),))
    return c.ranges[bisect.bisect_right(starts, pfn) - 1]


def diff_classifications(before: Classification, after: Classification) -> list[ClassChange]:
    """The ranges whose class differs between *before* and *after*, in PFN order."""
    end = max(before.end_pfn, after.end_pfn)
    sa = [r.start_pfn for r in before.ranges]
    sb = [r.start_pfn for r in after.ranges]
    cuts = sorted({0, end, before.end_pfn, after.end_pfn, *sa, *sb,
                   *(r.end_pfn for r in before.ranges), *(r.end_pfn for r in after.ranges)})
    out: list[ClassChange] = []
    for lo, hi in itertools.pairwise(cuts):
        if hi > end:
            break
        a, b = _at(before, sa, lo, end), _at(after, sb, lo, end)
        if a.cls == b.cls:
            continue
        last = out[-1] if out else None
        if last and last.end_pfn == lo and last.before == a and last.after == b:
            out[-1] = ClassChange(last.start_pfn, hi, a, b)
        else:
            out.append(ClassChange(lo, hi, a, b))
    return out
