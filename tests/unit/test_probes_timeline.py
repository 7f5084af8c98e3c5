"""Timeline lines, JSON records and the exit summary (subsecinspect.probes.timeline)."""

from __future__ import annotations

import json

from subsecinspect.probes.events import Event, EventKind, Phase, Severity, Walker, WindowClass
from subsecinspect.probes.timeline import Summary, event_record, event_text
from subsecinspect.probes.windows import WindowModel

PG = 0xFF11000012340000


def _ev(kind: EventKind, **kw: object) -> Event:
    base: dict[str, object] = dict(ts_ns=2_000_000_000, kind=kind, comm="ndctl", tid=5, tgid=5,
                                   pgmap=0, start_pfn=0, nr_pages=0, arg=0)
    base.update(kw)
    return Event(**base)  # type: ignore[arg-type]


def test_lifecycle_line_and_record_name_the_range_and_window() -> None:
    m = WindowModel(15)
    e = _ev(EventKind.MEMREMAP_ENTER, pgmap=PG, start_pfn=0x100000, nr_pages=0xC000,
            pgmap_type=3, pgmap_flags=1, altmap_base=0x100000, altmap_reserve=2,
            altmap_free=1022)
    ch = m.apply(e)
    line = event_text(e, 1_000_000_000, ch)
    assert line.split()[0] == "1.000000"
    assert "memremap_pages pfn=[0x100000,0x10c000)" in line
    assert "opens C4_DEV_INITIALISING [0x100000,0x10c000)" in line
    assert "opens C5_DEV_DRIVER_RESERVED [0x100000,0x100002)" in line
    rec = event_record(e, 1_000_000_000, ch)
    json.dumps(rec)
    assert rec["type"] == "lifecycle" and rec["function"] == "memremap_pages"
    assert (rec["start_pfn"], rec["end_pfn"]) == (0x100000, 0x10C000)
    assert rec["altmap"] == {"base_pfn": 0x100000, "reserve": 2, "free": 1022}
    assert [w["class"] for w in rec["opened"]] == ["C4_DEV_INITIALISING", "C5_DEV_DRIVER_RESERVED"]
    assert rec["pgmap"] == f"{PG:#x}"


def test_error_return_is_readable() -> None:
    rec = event_record(_ev(EventKind.MEMREMAP_RETURN, arg=-12, pgmap=PG), 0)
    assert rec["ret"] == -12 and "start_pfn" not in rec


def test_alarm_record_and_summary() -> None:
    e = _ev(EventKind.WALKER, comm="bad_walker", walker=Walker.GET_DEV_PAGEMAP,
            severity=Severity.ALARM, cls=WindowClass.C4, phase=Phase.MEMMAP_INIT,
            start_pfn=0x104000, nr_pages=1, win_start=0x100000, win_end=0x10C000, pgmap=PG)
    rec = event_record(e, 0, None, ["get_dev_pagemap+0x0", "bw_read_page+0x2a [bad_walker]"])
    assert rec["type"] == "alarm" and rec["walker"] == "get_dev_pagemap"
    assert rec["window_class"] == "C4_DEV_INITIALISING" and rec["phase"] == "memmap_init"
    assert rec["stack"][1].startswith("bw_read_page")
    assert "ALARM: get_dev_pagemap(pfn=0x104000)" in event_text(e, 0)
    s = Summary()
    s.add(e)
    s.add(_ev(EventKind.MIZD_RETURN))
    s.add(_ev(EventKind.WALKER, walker=Walker.KPAGEFLAGS_READ, severity=Severity.NOTE))
    s.lost = 3
    out = s.record({"kprobes_left": 0})
    assert (out["events"], out["alarms"], out["notes"], out["lost_events"]) == (3, 1, 1, 3)
    assert out["alarms_by_walker"] == {"get_dev_pagemap": 1}
    assert out["lifecycle"] == {"memmap_init_zone_device ret": 1}
    assert out["kprobes_left"] == 0
