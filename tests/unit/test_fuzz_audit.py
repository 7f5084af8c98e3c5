"""Property test: every audit model, tallied per piece, equals a per-PFN brute force.

For each random snapshot (:func:`strategies.snapshots`, with the kernel's feature bits drawn
so that both forms of ``pfn_to_online_page()`` and kernels with and without
``pgmap_pfn_valid()`` occur), every PFN is classified on its own (``classify_pfn``), every
model is evaluated at that PFN and judged; pages per (model, question, class, verdict),
lookups and the unsafe / over-cautious ranges must equal what :func:`audit` computes from
its pieces.
"""

from __future__ import annotations

import dataclasses
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from strategies import snapshots

from subsecinspect.classify.audit.models import MODELS, AuditInput
from subsecinspect.classify.audit.tally import audit, judge
from subsecinspect.classify.decide import classify, classify_pfn
from subsecinspect.snapshot.index import SnapshotIndex

FEATURES = st.sets(st.sampled_from(["pfn_to_online_page_fn", "pgmap_pfn_valid",
                                    "section_taint_zone_device", "pgmap_nr_range"]))


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for a, b in spans:
        if out and out[-1][1] == a:
            out[-1] = (out[-1][0], b)
        else:
            out.append((a, b))
    return out


@settings(deadline=None, max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots(), FEATURES)
def test_every_model_matches_the_per_pfn_brute_force(snap, features) -> None:  # type: ignore[no-untyped-def]
    snap = dataclasses.replace(snap, kernel=dataclasses.replace(
        snap.kernel, features=tuple(sorted(features))))
    cls_result = classify(snap)
    got = audit(snap, cls_result, MODELS)
    ix = SnapshotIndex(snap)
    inp = AuditInput(snap, ix)
    for m in got.models:
        pages: Counter[tuple[str, str, str]] = Counter()
        lookups: Counter[str] = Counter()
        spans: dict[tuple[str, str, str], list[tuple[int, int]]] = {}
        for pfn in range(cls_result.end_pfn):
            cls = classify_pfn(snap, pfn, ix).cls
            for ans in m.model.evaluate(inp, pfn):
                v = judge(ans.question, ans.page, cls, m.model.initialised)
                pages[ans.question, cls.value, v] += 1
                lookups[ans.question] += ans.lookups
                if v in ("unsafe", "over_cautious"):
                    spans.setdefault((ans.question, cls.value, v), []).append((pfn, pfn + 1))
        mine = Counter({(q, c.value, v): n for q, t in m.questions.items()
                        for c, ct in t.classes.items() for v, n in ct.pages.items() if n})
        assert mine == pages, m.model.name
        assert {q: t.lookups for q, t in m.questions.items() if t.lookups} == \
            {q: n for q, n in lookups.items() if n}, m.model.name
        mine_spans = {(q, c.value, v): s for q, t in m.questions.items()
                      for c, ct in t.classes.items() for v, s in ct.ranges.items()}
        assert mine_spans == {k: _merge(s) for k, s in spans.items()}, m.model.name
