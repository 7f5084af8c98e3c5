"""Events of ``bpf/subsec_trace.bpf.c``: the ``struct subsec_event`` mirror and its decoding.

The C side is ``bpf/subsec_trace.h`` (the contract). :data:`EVENT_FIELDS` lists its
members in order; ``tests/unit/test_probes_events.py`` parses the header and checks that
both agree, so a change on one side without the other fails there.
Pure: no bcc, no drgn.
"""

from __future__ import annotations

import ctypes
import enum
from dataclasses import dataclass

__all__ = (
    "EVENT_FIELDS",
    "Event",
    "EventKind",
    "Phase",
    "RawEvent",
    "Severity",
    "Walker",
    "WindowClass",
    "decode",
)


class EventKind(enum.IntEnum):
    """``SUBSEC_EV_*``: what happened."""

    MEMREMAP_ENTER = 1
    MEMREMAP_RETURN = 2
    MIZD_ENTER = 3
    MIZD_RETURN = 4
    MOVE_PFN_RANGE = 5
    MEMUNMAP_ENTER = 6
    MEMUNMAP_RETURN = 7
    ADD_MEMORY = 8
    ADD_MEMORY_RETURN = 9
    ONLINE_PAGES = 10
    ONLINE_PAGES_RET = 11
    OFFLINE_PAGES = 12
    OFFLINE_PAGES_RET = 13
    ONLINE_SECTIONS = 14
    OFFLINE_SECTIONS = 15
    SPARSE_ADD = 16
    SPARSE_REMOVE = 17
    MOVE_PFN_RANGE_RET = 18
    ADD_MEMORY_CALL = 19
    REMOVE_PFN_RANGE = 20
    WALKER = 32

    @property
    def function(self) -> str:
        """The kernel function the event comes from (for the timeline)."""
        return _FUNCTIONS[self]


_FUNCTIONS = {
    EventKind.MEMREMAP_ENTER: "memremap_pages",
    EventKind.MEMREMAP_RETURN: "memremap_pages ret",
    EventKind.MIZD_ENTER: "memmap_init_zone_device",
    EventKind.MIZD_RETURN: "memmap_init_zone_device ret",
    EventKind.MOVE_PFN_RANGE: "move_pfn_range_to_zone",
    EventKind.MOVE_PFN_RANGE_RET: "move_pfn_range_to_zone ret",
    EventKind.MEMUNMAP_ENTER: "memunmap_pages",
    EventKind.MEMUNMAP_RETURN: "memunmap_pages ret",
    EventKind.ADD_MEMORY: "add_memory_resource",
    EventKind.ADD_MEMORY_RETURN: "add_memory_resource ret",
    EventKind.ADD_MEMORY_CALL: "add_memory*",
    EventKind.ONLINE_PAGES: "online_pages",
    EventKind.ONLINE_PAGES_RET: "online_pages ret",
    EventKind.OFFLINE_PAGES: "offline_pages",
    EventKind.OFFLINE_PAGES_RET: "offline_pages ret",
    EventKind.ONLINE_SECTIONS: "online_mem_sections",
    EventKind.OFFLINE_SECTIONS: "offline_mem_sections",
    EventKind.SPARSE_ADD: "sparse_add_section",
    EventKind.SPARSE_REMOVE: "sparse_remove_section",
    EventKind.REMOVE_PFN_RANGE: "remove_pfn_range_from_zone",
    EventKind.WALKER: "walker",
}


class Walker(enum.IntEnum):
    """``SUBSEC_W_*``: which walker probe reported a hit; the value names the function."""

    PFN_TO_ONLINE_PAGE = 1
    GET_DEV_PAGEMAP = 2
    PGMAP_PFN_VALID = 3
    MEMORY_FAILURE = 4
    SOFT_OFFLINE_PAGE = 5
    KPAGEFLAGS_READ = 6
    KPAGECOUNT_READ = 7
    KPAGECGROUP_READ = 8
    STABLE_PAGE_FLAGS = 9
    DUMP_PAGE = 10
    HWPOISON_INJECT = 11
    UNPOISON_MEMORY = 12

    @property
    def function(self) -> str:
        return self.name.lower()


class WindowClass(enum.IntEnum):
    """``SUBSEC_CLS_*``: the class of an unsafe window; :attr:`label` is the PageClass value."""

    NONE = 0
    C1 = 1
    C4 = 2
    C4B = 3
    C5 = 4

    @property
    def label(self) -> str:
        return _LABELS[self]


_LABELS = {
    WindowClass.NONE: "",
    WindowClass.C1: "C1_OFFLINE_RAM",
    WindowClass.C4: "C4_DEV_INITIALISING",
    WindowClass.C4B: "C4b_DEV_TEARDOWN",
    WindowClass.C5: "C5_DEV_DRIVER_RESERVED",
}


class Phase(enum.IntEnum):
    """``SUBSEC_PH_*``: where the hotplug of the window's owner stands."""

    NONE = 0
    SEEDED = 1
    REGISTERED = 2
    MEMMAP_INIT = 3
    TEARDOWN = 4
    HOTADDED = 5
    OFFLINED = 6
    RESERVED = 7


class Severity(enum.IntEnum):
    """``SUBSEC_SEV_*``."""

    INFO = 0
    NOTE = 1
    ALARM = 2


_U64, _U32, _S32 = ctypes.c_uint64, ctypes.c_uint32, ctypes.c_int32

#: ``struct subsec_event`` members in order, as in bpf/subsec_trace.h.
EVENT_FIELDS: tuple[tuple[str, type], ...] = (
    ("ts_ns", _U64),
    ("duration_ns", _U64),
    ("pgmap", _U64),
    ("start_pfn", _U64),
    ("nr_pages", _U64),
    ("arg", _U64),
    ("altmap_base", _U64),
    ("altmap_reserve", _U64),
    ("altmap_free", _U64),
    ("win_start", _U64),
    ("win_end", _U64),
    ("kind", _U32),
    ("walker", _U32),
    ("tid", _U32),
    ("tgid", _U32),
    ("kstack", _S32),
    ("cls", _U32),
    ("phase", _U32),
    ("severity", _U32),
    ("pgmap_type", _U32),
    ("pgmap_flags", _U32),
    ("comm", ctypes.c_char * 16),
)


class RawEvent(ctypes.Structure):
    """ctypes mirror of ``struct subsec_event``."""

    _fields_ = list(EVENT_FIELDS)


@dataclass(frozen=True, slots=True)
class Event:
    """One decoded event; ``arg`` is signed (return values)."""

    ts_ns: int
    kind: EventKind
    comm: str
    tid: int
    tgid: int
    pgmap: int
    start_pfn: int
    nr_pages: int
    arg: int
    duration_ns: int = 0
    walker: Walker | None = None
    severity: Severity = Severity.INFO
    cls: WindowClass = WindowClass.NONE
    phase: Phase = Phase.NONE
    win_start: int = 0
    win_end: int = 0
    kstack: int = -1
    altmap_base: int = 0
    altmap_reserve: int = 0
    altmap_free: int = 0
    pgmap_type: int = 0
    pgmap_flags: int = 0

    @property
    def end_pfn(self) -> int:
        return self.start_pfn + self.nr_pages


def _signed(v: int) -> int:
    return v - (1 << 64) if v >= 1 << 63 else v


def decode(data: bytes | RawEvent) -> Event:
    """Decode one perf-buffer record (bytes, or a :class:`RawEvent`).

    :raises ValueError: a short record or an unknown kind.
    """
    if isinstance(data, RawEvent):
        raw = data
    else:
        if len(data) < ctypes.sizeof(RawEvent):
            raise ValueError(f"short event: {len(data)} < {ctypes.sizeof(RawEvent)} bytes")
        raw = RawEvent.from_buffer_copy(bytes(data[: ctypes.sizeof(RawEvent)]))
    kind = EventKind(raw.kind)
    walker = Walker(raw.walker) if kind is EventKind.WALKER else None
    return Event(
        ts_ns=raw.ts_ns,
        kind=kind,
        comm=raw.comm.decode(errors="replace"),
        tid=raw.tid,
        tgid=raw.tgid,
        pgmap=raw.pgmap,
        start_pfn=raw.start_pfn,
        nr_pages=raw.nr_pages,
        arg=_signed(raw.arg),
        duration_ns=raw.duration_ns,
        walker=walker,
        severity=Severity(raw.severity),
        cls=WindowClass(raw.cls),
        phase=Phase(raw.phase),
        win_start=raw.win_start,
        win_end=raw.win_end,
        kstack=raw.kstack,
        altmap_base=raw.altmap_base,
        altmap_reserve=raw.altmap_reserve,
        altmap_free=raw.altmap_free,
        pgmap_type=raw.pgmap_type,
        pgmap_flags=raw.pgmap_flags,
    )
