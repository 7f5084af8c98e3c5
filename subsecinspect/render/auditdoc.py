"""The ``audit`` document and tables: per model, question and class, how many PFNs the
answers get right, unsafe, over-cautious or uncertain (kernel-semantics.md §5.2).

JSON (schema version 1, the head of :func:`subsecinspect.render.jsondoc.header`) adds::

    "end_pfn": int,
    "models": [{"name": str, "note": str, "extra_metadata_bytes": int,
                "unsafe": int, "over_cautious": int,      # sums over the questions
                "questions": [{"name": str,              # "pfn_valid", "walker:kpageflags", ...
                               "wanted": [str, ...],      # classes hiding which is over-cautious
                               "get_dev_pagemap_lookups": int,   # of a walk over [0, end_pfn)
                               "right": int, "unsafe": int, "over_cautious": int,
                               "uncertain": int,
                               "classes": [{"class": str, "pages": int, "right": int,
                                            "unsafe": int, "over_cautious": int,
                                            "uncertain": int,
                                            "unsafe_ranges": [{"start_pfn", "end_pfn"}],
                                            "over_cautious_ranges": [...]}]}]}]
"""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from subsecinspect.classify.audit.tally import WANTED, Audit, QuestionTally
from subsecinspect.classify.classes import PageClass
from subsecinspect.render.jsondoc import header
from subsecinspect.snapshot.model import Snapshot

__all__ = ("VERDICTS", "audit_document", "audit_tables")

#: The judgements, in report order.
VERDICTS = ("right", "unsafe", "over_cautious", "uncertain")


def _spans(spans: list[tuple[int, int]]) -> list[dict[str, int]]:
    return [{"start_pfn": a, "end_pfn": b} for a, b in spans]


def _question_object(q: QuestionTally) -> dict[str, Any]:
    obj: dict[str, Any] = {"name": q.question,
                           "wanted": sorted(c.value for c in WANTED[q.question]),
                           "get_dev_pagemap_lookups": q.lookups}
    obj.update({v: q.total(v) for v in VERDICTS})
    obj["classes"] = []
    for cls in PageClass:
        t = q.classes.get(cls)
        if t is None:
            continue
        c: dict[str, Any] = {"class": cls.value, "pages": sum(t.pages.values())}
        c.update({v: t.pages.get(v, 0) for v in VERDICTS})
        c["unsafe_ranges"] = _spans(t.ranges.get("unsafe", []))
        c["over_cautious_ranges"] = _spans(t.ranges.get("over_cautious", []))
        obj["classes"].append(c)
    return obj


def audit_document(snapshot: Snapshot, audit: Audit, *,
                   tool_version: str | None = None) -> dict[str, Any]:
    """The ``audit --json`` document."""
    doc = header(snapshot, "audit", tool_version)
    doc["end_pfn"] = audit.end_pfn
    doc["models"] = []
    for m in audit.models:
        qs = [_question_object(q) for q in m.questions.values()]
        doc["models"].append({
            "name": m.model.name, "note": m.model.note,
            "extra_metadata_bytes": m.extra_bytes,
            "unsafe": sum(q["unsafe"] for q in qs),
            "over_cautious": sum(q["over_cautious"] for q in qs),
            "questions": qs,
        })
    return doc


def _cell(n: int, style: str) -> Text:
    return Text(str(n), style=style if n else "dim")


def audit_tables(audit: Audit, *, max_ranges: int = 4) -> Group:
    """One table per model: a row per question and class present."""
    out = []
    for m in audit.models:
        t = Table(title=Text(f"model {m.model.name}: +{m.extra_bytes} metadata bytes"),
                  title_justify="left")
        for col in ("question", "class", "right", "unsafe", "over-cautious", "uncertain",
                    "lookups", "unsafe / over-cautious PFNs"):
            t.add_column(col, justify="right" if col in ("right", "unsafe", "over-cautious",
                                                          "uncertain", "lookups") else "left")
        for q in m.questions.values():
            first = True
            for cls in PageClass:
                ct = q.classes.get(cls)
                if ct is None:
                    continue
                spans = [*ct.ranges.get("unsafe", []), *ct.ranges.get("over_cautious", [])]
                where = ", ".join(f"[{a:#x}, {b:#x})" for a, b in spans[:max_ranges])
                if len(spans) > max_ranges:
                    where += f", +{len(spans) - max_ranges} more"
                t.add_row(Text(q.question if first else ""), Text(cls.value),
                          _cell(ct.pages.get("right", 0), "green"),
                          _cell(ct.pages.get("unsafe", 0), "bold red"),
                          _cell(ct.pages.get("over_cautious", 0), "yellow"),
                          _cell(ct.pages.get("uncertain", 0), "orange3"),
                          Text(str(q.lookups) if first else ""), Text(where))
                first = False
        out.append(t)
    return Group(*out)
