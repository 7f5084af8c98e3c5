"""Host side of the live-race test: is one ``classify --json`` document sound and plausible?

Pure functions over the documents and the churn events of :mod:`lab.churn`.

* :func:`doc_problems`: the document is internally consistent (JSON contract of issue 3):
  ranges sorted, contiguous, maximal, covering ``[0, end_pfn)``; class names valid; the
  evidence fits the class (the rules of subsecinspect/classify/decide.py ``_decide``); the summary
  equals the range sums.
* :func:`lives`: the namespaces the churn made, each with its life time and the times the
  churn touched it.
* :func:`plausibility_problems`: against what the churn logged for the run's time span.
  A namespace that existed, untouched, for the whole run is C2 over its data (or
  MEMMAP_UNREADABLE whose lifecycle says C2); kmem blocks untouched for the whole run are
  ONLINE_RAM / C1_OFFLINE_RAM as their sysfs state; pmem that no namespace held at any time
  of the run is HOLE or C3; IN_FLUX only in sections some churn operation touched during
  the run; never CORRUPT.

Times are the guest's ``CLOCK_MONOTONIC``; addresses in the events are bytes (end
exclusive), everything here is PFNs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from subsecinspect.classify.classes import Confidence, PageClass

__all__ = (
    "Life",
    "Touch",
    "class_spans",
    "doc_problems",
    "in_flux_spans",
    "lives",
    "plausibility_problems",
)

_CLASSES = {c.value for c in PageClass}
_CONFIDENCES = {c.value for c in Confidence}
_PGMAP_CLASSES = {"C2_DEV_VALID", "C4_DEV_INITIALISING", "C4b_DEV_TEARDOWN",
                  "C5_DEV_DRIVER_RESERVED", "C5b_DEV_ALTMAP_MEMMAP", "MEMMAP_UNREADABLE",
                  "MEMMAP_NOT_CAPTURED"}
_NO_PGMAP = {"ONLINE_RAM", "C3_SUBSECTION_GAP", "EARLY_HOLE", "IN_FLUX", "C1_OFFLINE_RAM"}


def _page_size(doc: dict[str, Any]) -> int:
    return int(doc.get("target", {}).get("page_size") or 1 << doc["kernel"]["page_shift"])


def _evidence_problems(r: dict[str, Any]) -> list[str]:
    cls, ev, a, b = r["class"], r.get("evidence", {}), r["start_pfn"], r["end_pfn"]
    where = f"[{a:#x}, {b:#x}) {cls}"
    out = []
    if cls in _PGMAP_CLASSES and "pgmap" not in ev:
        out.append(f"{where}: no pgmap in the evidence")
    if cls in _NO_PGMAP and "pgmap" in ev:
        out.append(f"{where}: names pgmap {ev['pgmap']}")
    if cls == "C5_DEV_DRIVER_RESERVED":
        base, res = ev.get("altmap_base_pfn"), ev.get("altmap_reserve")
        if base is None or res is None or not base <= a < b <= base + res:
            out.append(f"{where}: outside the altmap reserve {base}+{res}")
    if cls == "C2_DEV_VALID":
        if ev.get("fingerprint") not in ("pass", "not examined"):
            out.append(f"{where}: fingerprint {ev.get('fingerprint')!r}")
        if "frontier_pfn" in ev and b > ev["frontier_pfn"]:
            out.append(f"{where}: ends past its frontier {ev['frontier_pfn']:#x}")
    if cls == "C4_DEV_INITIALISING" and "frontier_pfn" in ev and a < ev["frontier_pfn"]:
        out.append(f"{where}: starts below its frontier {ev['frontier_pfn']:#x}")
    if cls == "MEMMAP_UNREADABLE" and (ev.get("memmap") != "unreadable"
                                       or "lifecycle_class" not in ev):
        out.append(f"{where}: evidence {ev} lacks memmap=unreadable / lifecycle_class")
    if cls == "C1_OFFLINE_RAM" and "block_state" not in ev:
        out.append(f"{where}: no block_state")
    if cls in ("IN_FLUX", "HOLE") and not ev.get("reason"):
        out.append(f"{where}: no reason")
    conf = r.get("confidence")
    if conf is not None and conf not in _CONFIDENCES:
        out.append(f"{where}: unknown confidence {conf!r}")
    return out


def doc_problems(doc: dict[str, Any]) -> list[str]:
    """Everything internally inconsistent in one ``classify --json`` document."""
    out: list[str] = []
    for key in ("schema_version", "kernel", "target", "ranges", "end_pfn", "summary"):
        if key not in doc:
            out.append(f"no {key!r} in the document")
    if out:
        return out
    if not doc["kernel"].get("release"):
        out.append("kernel.release is missing")
    ps, ranges, pos = _page_size(doc), doc["ranges"], 0
    for i, r in enumerate(ranges):
        a, b, cls = r["start_pfn"], r["end_pfn"], r["class"]
        if a != pos:
            out.append(f"range {i} starts at {a:#x}, the previous ended at {pos:#x}")
        if b <= a:
            out.append(f"range {i} [{a:#x}, {b:#x}) is empty or reversed")
        pos = b
        if cls not in _CLASSES:
            out.append(f"range {i}: unknown class {cls!r}")
        if r.get("phys_start") != hex(a * ps) or r.get("phys_end") != hex(b * ps):
            out.append(f"range {i}: phys {r.get('phys_start')}-{r.get('phys_end')} "
                       f"!= pfns [{a:#x}, {b:#x})")
        if i and all(ranges[i - 1].get(k) == r.get(k)
                     for k in ("class", "evidence", "confidence")):
            out.append(f"ranges {i - 1} and {i} are equal neighbours (not maximal)")
        out += _evidence_problems(r)
    if pos != doc["end_pfn"]:
        out.append(f"the ranges end at {pos:#x}, end_pfn is {doc['end_pfn']:#x}")
    want: dict[str, list[int]] = {}
    for r in ranges:
        s = want.setdefault(r["class"], [0, 0])
        s[0] += r["end_pfn"] - r["start_pfn"]
        s[1] += 1
    got = {s["class"]: [s["pages"], s["ranges"]] for s in doc["summary"]}
    if got != want:
        out.append(f"summary {got} != range sums {want}")
    for s in doc["summary"]:
        if s["bytes"] != s["pages"] * ps:
            out.append(f"summary {s['class']}: {s['bytes']} bytes != {s['pages']} pages")
    return out


def class_spans(doc: dict[str, Any], start: int, end: int) -> list[tuple[int, int, str]]:
    """The ranges of *doc* clipped to ``[start, end)``: (start, end, class)."""
    out = []
    for r in doc["ranges"]:
        a, b = max(start, r["start_pfn"]), min(end, r["end_pfn"])
        if a < b:
            out.append((a, b, r["class"]))
    return out


def in_flux_spans(doc: dict[str, Any]) -> list[tuple[int, int]]:
    return [(r["start_pfn"], r["end_pfn"]) for r in doc["ranges"] if r["class"] == "IN_FLUX"]


@dataclass(frozen=True)
class Touch:
    """One churn operation on a namespace: when, what, and the kmem block states after it."""

    t0: float
    t1: float
    op: str
    ok: bool
    blocks: dict[str, str] | None = None


@dataclass
class Life:
    """One namespace from its create to its destroy (``math.inf`` while it exists)."""

    name: str
    dev: str
    mode: str
    map: str
    raw: tuple[int, int]  # PFNs
    data_start: int
    born: Touch
    died: Touch | None = None
    touches: list[Touch] = field(default_factory=list)

    def exists_during(self, t0: float, t1: float) -> bool:
        end = self.died.t1 if self.died else math.inf
        return self.born.t0 <= t1 and end >= t0

    def stable_during(self, t0: float, t1: float) -> bool:
        """Created before *t0*, not destroyed before *t1*, no operation in between."""
        if self.born.t1 > t0 or (self.died is not None and self.died.t0 < t1):
            return False
        return not any(t.t0 <= t1 and t.t1 >= t0 for t in self.touches)

    def state_at(self, t: float) -> Touch:
        """The last operation that ended before *t*."""
        return max((x for x in [self.born, *self.touches] if x.t1 <= t), key=lambda x: x.t1)


def lives(events: Iterable[dict[str, Any]], page: int = 4096) -> tuple[list[Life], list[Touch]]:
    """Namespace lives from the churn events, and the failed operations without a namespace
    (they may have changed anything, so a run they overlap is not checked for free space)."""
    out: list[Life] = []
    current: dict[str, Life] = {}
    unknown: list[Touch] = []
    for ev in sorted(events, key=lambda e: e["t0"]):
        ns = ev.get("ns")
        t = Touch(ev["t0"], ev["t1"], ev["op"], ev["rc"] == 0, ev.get("blocks"))
        name = ns["name"] if ns else None
        if ev["op"] == "create" and t.ok and ns and "raw_start" in ns:
            life = Life(ns["name"], ns["dev"], ns["mode"], ns["map"],
                        (ns["raw_start"] // page, ns["raw_end"] // page),
                        ns["data_start"] // page, t)
            current[life.name] = life
            out.append(life)
        elif name in current:
            life = current[name]
            if ev["op"] == "destroy" and t.ok:
                life.died = t
                del current[name]
            else:
                life.touches.append(t)
        elif not t.ok and not ev.get("cmd", "").startswith("#"):
            unknown.append(t)
    return out, unknown


def _sections(spans: Iterable[tuple[int, int]], pps: int) -> set[int]:
    return {s for a, b in spans for s in range(a // pps, (b - 1) // pps + 1)}


def plausibility_problems(
    doc: dict[str, Any], t0: float, t1: float, all_lives: list[Life], unknown: list[Touch],
    window: tuple[int, int], pps: int,
) -> list[str]:
    """What in *doc* (read between guest times *t0* and *t1*) contradicts the churn's log.

    *window*: the PFNs of the pmem region; *pps*: pages per section.
    """
    out: list[str] = []
    moving = [x.raw for x in all_lives
              if x.exists_during(t0, t1) and not x.stable_during(t0, t1)]
    blind = any(u.t0 <= t1 and u.t1 >= t0 for u in unknown)
    touched = _sections(moving, pps)
    for a, b, cls in class_spans(doc, 0, doc["end_pfn"]):
        if cls == "CORRUPT":
            out.append(f"[{a:#x}, {b:#x}) CORRUPT in a live run")
        if cls == "IN_FLUX" and not blind and not _sections([(a, b)], pps) <= touched:
            out.append(f"[{a:#x}, {b:#x}) IN_FLUX but the churn touched only sections "
                       f"{sorted(touched)} during the run")

    def expect(a: int, b: int, allowed: set[str], what: str) -> None:
        for x, y, cls in class_spans(doc, a, b):
            if cls in allowed or (cls == "IN_FLUX" and _sections([(x, y)], pps) <= touched):
                continue
            if cls == "MEMMAP_UNREADABLE" and "C2_DEV_VALID" in allowed:
                ev = next(r["evidence"] for r in doc["ranges"]
                          if r["start_pfn"] <= x < r["end_pfn"])
                if ev.get("lifecycle_class") == "C2_DEV_VALID":
                    continue
            out.append(f"{what}: [{x:#x}, {y:#x}) is {cls}, expected {sorted(allowed)}")

    for life in all_lives:
        if not life.stable_during(t0, t1):
            continue
        state = life.state_at(t0)
        what = f"{life.name} ({life.dev} {life.mode} map={life.map}, untouched during the run)"
        if state.blocks is None or state.op == "devdax":
            expect(life.data_start, life.raw[1], {"C2_DEV_VALID"}, what)
            continue
        for blk, st in state.blocks.items():
            a = int(blk) * pps
            cls = {"online": "ONLINE_RAM", "offline": "C1_OFFLINE_RAM"}.get(st)
            if cls is not None:
                expect(a, a + pps, {cls}, f"{what} kmem block {blk} {st}")
    if not blind:
        held = sorted(x.raw for x in all_lives if x.exists_during(t0, t1))
        pos = window[0]
        for a, b in [*held, (window[1], window[1])]:
            if a > pos:
                expect(pos, min(a, window[1]), {"HOLE", "C3_SUBSECTION_GAP"},
                       "pmem that no namespace held during the run")
            pos = max(pos, b)
    return out
