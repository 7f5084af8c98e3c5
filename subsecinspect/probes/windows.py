"""Unsafe PFN windows: the pure-Python model of the state ``bpf/subsec_trace.bpf.c`` keeps.

A window is a PFN range whose struct pages must not be read (kernel-semantics.md §0):

* C4  ``memremap_pages()`` entry .. ``memmap_init_zone_device()`` return, per range (§2.5);
* C5  the altmap ``reserve`` of a live pgmap (never initialised, §2.3);
* C4b ``memunmap_pages()`` entry .. return (teardown, §2.5);
* C1  ``add_memory_resource()`` .. ``move_pfn_range_to_zone()`` return for a normal zone,
  and again after a successful ``offline_pages()`` (§2.6). Kept per section, because
  memory blocks are whole sections.

:func:`seed` turns a live classification into the initial windows, so that windows older
than the tracer are known; :class:`WindowModel` applies lifecycle events exactly as the BPF
side does (the unit tests check the bookkeeping; the trace front end uses it to annotate
the timeline); :func:`map_contents` gives what user space writes into the BPF maps.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from subsecinspect.probes.events import Event, EventKind, Phase, WindowClass

__all__ = (
    "Bounds",
    "Change",
    "Window",
    "WindowModel",
    "bounds_of",
    "map_contents",
    "seed",
)

#: PageClass values that are seeded as windows.
_SEEDED = {
    "C4_DEV_INITIALISING": WindowClass.C4,
    "C4b_DEV_TEARDOWN": WindowClass.C4B,
    "C5_DEV_DRIVER_RESERVED": WindowClass.C5,
}
_PRIO = {WindowClass.C5: 4, WindowClass.C4B: 3, WindowClass.C4: 2, WindowClass.C1: 1}
#: IS_ERR_VALUE(): the last page of the address space holds error codes.
ERR_MAX = 4095


@dataclass(frozen=True, slots=True)
class Window:
    """One unsafe window ``[start_pfn, end_pfn)``; ``owner`` is the ``struct dev_pagemap *``."""

    start_pfn: int
    end_pfn: int
    cls: WindowClass
    phase: Phase
    owner: int = 0

    def __contains__(self, pfn: object) -> bool:
        return isinstance(pfn, int) and self.start_pfn <= pfn < self.end_pfn


@dataclass(frozen=True, slots=True)
class Bounds:
    """``struct subsec_bounds``: the hull of the used window slots."""

    lo: int
    hi: int
    nwin: int


@dataclass(frozen=True, slots=True)
class Change:
    """What an event did to the windows (for the timeline)."""

    opened: tuple[Window, ...] = ()
    closed: tuple[Window, ...] = ()
    c1_set: tuple[int, ...] = ()
    c1_cleared: tuple[int, ...] = ()


def _owner(evidence: dict[str, str | int | bool]) -> int:
    v = evidence.get("pgmap")
    if isinstance(v, str) and v.startswith("0x"):
        return int(v, 16)
    return 0


def seed(ranges: Iterable[object], section_shift: int) -> tuple[list[Window], set[int]]:
    """Initial windows and C1 sections from classified ranges.

    :param ranges: :class:`subsecinspect.classify.classes.ClassRange` objects (anything with
        ``start_pfn``, ``end_pfn``, ``cls`` and ``evidence``).
    :param section_shift: ``PFN_SECTION_SHIFT`` (SECTION_SIZE_BITS - PAGE_SHIFT).
    :return: ``(windows, c1_sections)``; adjacent ranges of one class and owner merged.
    """
    wins: list[Window] = []
    c1: set[int] = set()
    for r in ranges:
        label = str(getattr(r, "cls"))  # noqa: B009 - ClassRange or a stand-in
        start, end = int(getattr(r, "start_pfn")), int(getattr(r, "end_pfn"))  # noqa: B009
        if label == "C1_OFFLINE_RAM":
            c1.update(range(start >> section_shift, ((end - 1) >> section_shift) + 1))
            continue
        wcls = _SEEDED.get(label)
        if wcls is None:
            continue
        owner = _owner(dict(getattr(r, "evidence")))  # noqa: B009
        if wins and wins[-1].cls == wcls and wins[-1].owner == owner and wins[-1].end_pfn == start:
            last = wins.pop()
            wins.append(Window(last.start_pfn, end, wcls, Phase.SEEDED, owner))
        else:
            wins.append(Window(start, end, wcls, Phase.SEEDED, owner))
    return wins, c1


def bounds_of(windows: Iterable[Window]) -> Bounds:
    """The hull the BPF side's fast path tests against."""
    ws = list(windows)
    if not ws:
        return Bounds(0, 0, 0)
    return Bounds(min(w.start_pfn for w in ws), max(w.end_pfn for w in ws), len(ws))


def map_contents(windows: list[Window], max_windows: int) -> tuple[list[Window | None], Bounds]:
    """Slot contents of the ``windows`` array map (``None`` = free) and ``bounds[0]``.

    :raises ValueError: more windows than slots.
    """
    if len(windows) > max_windows:
        raise ValueError(f"{len(windows)} unsafe windows, but only {max_windows} slots")
    slots: list[Window | None] = [*windows, *([None] * (max_windows - len(windows)))]
    return slots, bounds_of(windows)


@dataclass
class WindowModel:
    """The windows as the BPF program keeps them, updated by lifecycle :class:`Event` s."""

    section_shift: int
    windows: list[Window] = field(default_factory=list)
    c1_sections: dict[int, Phase] = field(default_factory=dict)

    @classmethod
    def seeded(cls, windows: list[Window], c1: set[int], section_shift: int) -> WindowModel:
        return cls(section_shift, list(windows), dict.fromkeys(c1, Phase.SEEDED))

    def lookup(self, pfn: int) -> Window | None:
        """The highest-priority window holding ``pfn`` (C5 > C4b > C4 > C1), as the BPF side."""
        best: Window | None = None
        sec = pfn >> self.section_shift
        if sec in self.c1_sections:
            best = Window(
                sec << self.section_shift,
                (sec + 1) << self.section_shift,
                WindowClass.C1,
                self.c1_sections[sec],
            )
        for w in self.windows:
            if pfn in w and (best is None or _PRIO[w.cls] > _PRIO[best.cls]):
                best = w
        return best

    def _sections(self, start: int, end: int) -> range:
        if end <= start:
            return range(0)
        return range(start >> self.section_shift, ((end - 1) >> self.section_shift) + 1)

    def _c1(self, start: int, end: int, phase: Phase | None) -> tuple[int, ...]:
        changed = []
        for s in self._sections(start, end):
            if phase is None:
                if self.c1_sections.pop(s, None) is not None:
                    changed.append(s)
            else:
                self.c1_sections[s] = phase
                changed.append(s)
        return tuple(changed)

    def _drop(self, owner: int, cls: WindowClass | None = None, pfn: int | None = None) -> Change:
        keep: list[Window] = []
        gone: list[Window] = []
        for w in self.windows:
            hit = w.owner == owner and (cls is None or w.cls == cls) and (pfn is None or pfn in w)
            (gone if hit else keep).append(w)
        self.windows = keep
        return Change(closed=tuple(gone))

    def _add(self, *wins: Window) -> Change:
        self.windows.extend(wins)
        return Change(opened=wins)

    def _set_phase(self, owner: int, cls: WindowClass, pfn: int, phase: Phase) -> None:
        self.windows = [
            Window(w.start_pfn, w.end_pfn, w.cls, phase, w.owner)
            if w.owner == owner and w.cls == cls and pfn in w
            else w
            for w in self.windows
        ]

    def apply(self, ev: Event) -> Change:
        """Apply one event like the BPF program; returns what changed."""
        k = ev.kind
        if k is EventKind.MEMREMAP_ENTER:
            ch = self._add(Window(ev.start_pfn, ev.end_pfn, WindowClass.C4, Phase.REGISTERED,
                                  ev.pgmap))
            if ev.arg == 0 and ev.altmap_reserve:
                r = Window(ev.altmap_base, ev.altmap_base + ev.altmap_reserve, WindowClass.C5,
                           Phase.RESERVED, ev.pgmap)
                self.windows.append(r)
                ch = Change(opened=(*ch.opened, r))
            return ch
        if k is EventKind.MEMREMAP_RETURN:
            return self._drop(ev.pgmap) if -ERR_MAX <= ev.arg < 0 else Change()
        if k is EventKind.MIZD_ENTER:
            self._set_phase(ev.pgmap, WindowClass.C4, ev.start_pfn, Phase.MEMMAP_INIT)
            return Change()
        if k is EventKind.MIZD_RETURN:
            return self._drop(ev.pgmap, WindowClass.C4, ev.start_pfn)
        if k is EventKind.MEMUNMAP_ENTER:
            return self._add(Window(ev.start_pfn, ev.end_pfn, WindowClass.C4B, Phase.TEARDOWN,
                                    ev.pgmap))
        if k is EventKind.MEMUNMAP_RETURN:
            return self._drop(ev.pgmap)
        if k is EventKind.ADD_MEMORY:
            return Change(c1_set=self._c1(ev.start_pfn, ev.end_pfn, Phase.HOTADDED))
        if k is EventKind.ADD_MEMORY_RETURN and ev.arg != 0:
            return Change(c1_cleared=self._c1(ev.start_pfn, ev.end_pfn, None))
        # move events carry ZONE_DEVICE's enum value in pgmap_type
        if k is EventKind.MOVE_PFN_RANGE_RET and ev.arg != ev.pgmap_type:
            return Change(c1_cleared=self._c1(ev.start_pfn, ev.end_pfn, None))
        if k is EventKind.ONLINE_PAGES_RET and ev.arg != 0:
            return Change(c1_set=self._c1(ev.start_pfn, ev.end_pfn, Phase.HOTADDED))
        if k is EventKind.OFFLINE_PAGES_RET and ev.arg == 0:
            return Change(c1_set=self._c1(ev.start_pfn, ev.end_pfn, Phase.OFFLINED))
        if k is EventKind.SPARSE_REMOVE:
            return Change(c1_cleared=self._c1(ev.start_pfn, ev.end_pfn, None))
        return Change()
