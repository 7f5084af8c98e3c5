"""The hotplug timeline and alarms of ``subsecinspect trace``: text lines, JSON records, summary.

Pure: takes decoded :class:`~subsecinspect.probes.events.Event` objects and the window
:class:`~subsecinspect.probes.windows.Change` they caused; no bcc.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from subsecinspect.probes.events import Event, EventKind, Severity
from subsecinspect.probes.windows import Change, Window

__all__ = ("Summary", "event_record", "event_text", "window_text")

#: The range an event names is a PFN range for these kinds; others carry no range.
_NO_RANGE = {EventKind.MEMREMAP_RETURN, EventKind.MEMUNMAP_RETURN}


def window_text(w: Window) -> str:
    owner = f" pgmap={w.owner:#x}" if w.owner else ""
    return f"{w.cls.label} [{w.start_pfn:#x},{w.end_pfn:#x}){owner}"


def _change_text(ch: Change) -> str:
    parts = [f"opens {window_text(w)}" for w in ch.opened]
    parts += [f"closes {window_text(w)}" for w in ch.closed]
    if ch.c1_set:
        parts.append(f"C1 sections {ch.c1_set[0]}..{ch.c1_set[-1]}")
    if ch.c1_cleared:
        parts.append(f"C1 cleared sections {ch.c1_cleared[0]}..{ch.c1_cleared[-1]}")
    return "; ".join(parts)


def event_text(ev: Event, t0_ns: int, change: Change | None = None) -> str:
    """One timeline line: ``+T comm[pid] function range details``."""
    t = (ev.ts_ns - t0_ns) / 1e9
    who = f"{ev.comm}[{ev.tgid}]"
    if ev.kind is EventKind.WALKER and ev.walker is not None:
        sev = "ALARM" if ev.severity is Severity.ALARM else "note"
        extra = f" +{ev.nr_pages} pfns" if ev.nr_pages > 1 else ""
        return (
            f"{t:10.6f} {who} {sev}: {ev.walker.function}(pfn={ev.start_pfn:#x}{extra}) in "
            f"{ev.cls.label} [{ev.win_start:#x},{ev.win_end:#x}) phase={ev.phase.name.lower()}"
            + (f" pgmap={ev.pgmap:#x}" if ev.pgmap else "")
        )
    s = f"{t:10.6f} {who} {ev.kind.function}"
    if ev.kind not in _NO_RANGE and (ev.nr_pages or ev.start_pfn):
        s += f" pfn=[{ev.start_pfn:#x},{ev.end_pfn:#x}) nr={ev.nr_pages}"
    if ev.pgmap:
        s += f" pgmap={ev.pgmap:#x}"
    if ev.kind is EventKind.MEMREMAP_ENTER:
        s += f" type={ev.pgmap_type} range={ev.arg}"
        if ev.altmap_reserve or ev.altmap_free:
            s += (f" altmap(base={ev.altmap_base:#x} reserve={ev.altmap_reserve}"
                  f" free={ev.altmap_free})")
    elif ev.kind in (EventKind.MOVE_PFN_RANGE, EventKind.MOVE_PFN_RANGE_RET):
        s += " zone=" + ("ZONE_DEVICE" if ev.arg == ev.pgmap_type else str(ev.arg))
    elif ev.kind in (EventKind.MEMREMAP_RETURN, EventKind.ADD_MEMORY_RETURN,
                     EventKind.ONLINE_PAGES_RET, EventKind.OFFLINE_PAGES_RET):
        s += f" ret={ev.arg if ev.arg > -4096 else hex(ev.arg & (2**64 - 1))}"
    if ev.duration_ns:
        s += f" took {ev.duration_ns / 1000:.0f}us"
    if change is not None:
        c = _change_text(change)
        if c:
            s += f"  -> {c}"
    return s


def event_record(
    ev: Event, t0_ns: int, change: Change | None = None, stack: list[str] | None = None
) -> dict[str, Any]:
    """One JSON-lines record; keys that do not apply are left out."""
    rec: dict[str, Any] = {
        "type": "lifecycle" if ev.kind is not EventKind.WALKER else (
            "alarm" if ev.severity is Severity.ALARM else "note"),
        "time_s": round((ev.ts_ns - t0_ns) / 1e9, 6),
        "comm": ev.comm,
        "pid": ev.tgid,
        "tid": ev.tid,
    }
    if ev.kind is EventKind.WALKER and ev.walker is not None:
        rec.update(
            walker=ev.walker.function,
            pfn=ev.start_pfn,
            nr_pfns=ev.nr_pages,
            window_class=ev.cls.label,
            window_start_pfn=ev.win_start,
            window_end_pfn=ev.win_end,
            phase=ev.phase.name.lower(),
            stack=list(stack or []),
        )
        if ev.pgmap:
            rec["pgmap"] = f"{ev.pgmap:#x}"
        return rec
    rec["function"] = ev.kind.function
    rec["event"] = ev.kind.name.lower()
    if ev.kind not in _NO_RANGE:
        rec.update(start_pfn=ev.start_pfn, end_pfn=ev.end_pfn, nr_pages=ev.nr_pages)
    if ev.pgmap:
        rec["pgmap"] = f"{ev.pgmap:#x}"
    if ev.kind is EventKind.MEMREMAP_ENTER:
        rec.update(pgmap_type=ev.pgmap_type, pgmap_flags=ev.pgmap_flags, range_index=ev.arg)
    if ev.altmap_reserve or ev.altmap_free:
        rec["altmap"] = {"base_pfn": ev.altmap_base, "reserve": ev.altmap_reserve,
                         "free": ev.altmap_free}
    if ev.kind in (EventKind.MOVE_PFN_RANGE, EventKind.MOVE_PFN_RANGE_RET):
        rec["zone_idx"] = ev.arg
        rec["zone_device"] = ev.arg == ev.pgmap_type
    if ev.kind in (EventKind.MEMREMAP_RETURN, EventKind.ADD_MEMORY_RETURN,
                   EventKind.ONLINE_PAGES_RET, EventKind.OFFLINE_PAGES_RET):
        rec["ret"] = ev.arg if ev.arg > -4096 else f"{ev.arg & (2**64 - 1):#x}"
    if ev.duration_ns:
        rec["duration_us"] = round(ev.duration_ns / 1000, 1)
    if change is not None:
        if change.opened:
            rec["opened"] = [_wrec(w) for w in change.opened]
        if change.closed:
            rec["closed"] = [_wrec(w) for w in change.closed]
        if change.c1_set:
            rec["c1_sections_set"] = list(change.c1_set)
        if change.c1_cleared:
            rec["c1_sections_cleared"] = list(change.c1_cleared)
    return rec


def _wrec(w: Window) -> dict[str, Any]:
    d: dict[str, Any] = {"class": w.cls.label, "start_pfn": w.start_pfn, "end_pfn": w.end_pfn,
                         "phase": w.phase.name.lower()}
    if w.owner:
        d["pgmap"] = f"{w.owner:#x}"
    return d


@dataclass
class Summary:
    """Counts for the exit summary."""

    events: int = 0
    alarms: int = 0
    notes: int = 0
    lost: int = 0
    by_kind: Counter[str] = field(default_factory=Counter)
    alarms_by_walker: Counter[str] = field(default_factory=Counter)

    def add(self, ev: Event) -> None:
        self.events += 1
        if ev.kind is EventKind.WALKER and ev.walker is not None:
            if ev.severity is Severity.ALARM:
                self.alarms += 1
                self.alarms_by_walker[ev.walker.function] += 1
            else:
                self.notes += 1
        else:
            self.by_kind[ev.kind.function] += 1

    def record(self, extra: dict[str, Any] | None = None) -> dict[str, Any]:
        rec: dict[str, Any] = {
            "type": "summary",
            "events": self.events,
            "alarms": self.alarms,
            "notes": self.notes,
            "lost_events": self.lost,
            "lifecycle": dict(sorted(self.by_kind.items())),
            "alarms_by_walker": dict(sorted(self.alarms_by_walker.items())),
        }
        rec.update(extra or {})
        return rec
