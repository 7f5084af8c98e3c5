"""bpf/subsec_trace.h <-> subsecinspect.probes.events: the event contract and its decoding."""

from __future__ import annotations

import ctypes
import re
from pathlib import Path

import pytest

from subsecinspect.probes import events as E

HEADER = Path(__file__).resolve().parents[2] / "bpf" / "subsec_trace.h"
_C_TYPES = {"__u64": ctypes.c_uint64, "__u32": ctypes.c_uint32, "__s32": ctypes.c_int32}


def _struct_fields(name: str) -> list[tuple[str, str]]:
    text = HEADER.read_text()
    body = re.search(rf"struct {name} \{{(.*?)\}};", text, re.S)
    assert body, f"struct {name} not in {HEADER}"
    out = []
    for line in body[1].splitlines():
        line = line.split("/*")[0].strip()
        if not line:
            continue
        m = re.fullmatch(r"(\w+)\s+(\w+)(\[\w+\])?;", line)
        assert m, f"cannot parse {line!r}"
        out.append((m[2], m[1] + (m[3] or "")))
    return out


def _defines(prefix: str) -> dict[str, int]:
    return {
        m[1]: int(m[2], 0)
        for m in re.finditer(rf"^#define ({prefix}\w+)\s+(\d+)", HEADER.read_text(), re.M)
    }


def test_event_fields_match_header() -> None:
    c_fields = _struct_fields("subsec_event")
    assert [n for n, _ in c_fields] == [n for n, _ in E.EVENT_FIELDS]
    for (name, ctype), (_, pytype) in zip(c_fields, E.EVENT_FIELDS, strict=True):
        if ctype.startswith("char["):
            assert ctypes.sizeof(pytype) == 16, name
        else:
            assert pytype is _C_TYPES[ctype], name


def test_event_size_has_no_hidden_padding() -> None:
    # 11 u64 + 10 u32/s32 + 16 chars: the C compiler adds no padding either.
    assert ctypes.sizeof(E.RawEvent) == 11 * 8 + 10 * 4 + 16


@pytest.mark.parametrize(
    ("prefix", "enum"),
    [("SUBSEC_EV_", E.EventKind), ("SUBSEC_W_", E.Walker), ("SUBSEC_CLS_", E.WindowClass),
     ("SUBSEC_PH_", E.Phase), ("SUBSEC_SEV_", E.Severity)],
)
def test_enum_values_match_header(prefix: str, enum: type) -> None:
    c = _defines(prefix)
    assert len(c) == len(list(enum)), (sorted(c), [m.name for m in enum])  # type: ignore[var-annotated]
    assert sorted(c.values()) == sorted(m.value for m in enum)  # type: ignore[attr-defined]


def test_stat_names_match_header() -> None:
    from subsecinspect.probes.subsec_trace import STAT_NAMES

    c = _defines("SUBSEC_ST_")
    nr = c.pop("SUBSEC_ST_NR")
    assert len(STAT_NAMES) == len(c) <= nr
    for name, idx in c.items():
        assert STAT_NAMES[idx] == name.removeprefix("SUBSEC_ST_").lower()


def _raw(**kw: object) -> bytes:
    r = E.RawEvent()
    for k, v in kw.items():
        setattr(r, k, v)
    return bytes(r)


def test_decode_walker_alarm() -> None:
    ev = E.decode(_raw(ts_ns=5, kind=32, walker=2, severity=2, cls=4, phase=7, start_pfn=0x100000,
                       win_start=0x100000, win_end=0x100002, pgmap=0xFFFF888001234000,
                       tgid=77, tid=78, kstack=3, comm=b"bad_walker"))
    assert ev.kind is E.EventKind.WALKER
    assert ev.walker is E.Walker.GET_DEV_PAGEMAP and ev.walker.function == "get_dev_pagemap"
    assert ev.severity is E.Severity.ALARM
    assert ev.cls.label == "C5_DEV_DRIVER_RESERVED"
    assert ev.phase is E.Phase.RESERVED
    assert (ev.comm, ev.tgid, ev.kstack) == ("bad_walker", 77, 3)


def test_decode_negative_return_value() -> None:
    ev = E.decode(_raw(kind=2, arg=(1 << 64) - 12))  # memremap_pages() = ERR_PTR(-ENOMEM)
    assert ev.kind is E.EventKind.MEMREMAP_RETURN and ev.arg == -12
    assert ev.walker is None


def test_decode_rejects_short_and_unknown() -> None:
    with pytest.raises(ValueError, match="short"):
        E.decode(b"\0" * 10)
    with pytest.raises(ValueError):
        E.decode(_raw(kind=99))
