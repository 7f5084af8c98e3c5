"""The saved-snapshot format: a :class:`~subsecinspect.snapshot.model.Snapshot` as JSON and back.

The encoder turns the snapshot dataclasses into JSON data (integers stay integers, enums
become their values). The decoder checks every type against the dataclass annotations
and the values with :func:`subsecinspect.snapshot.checks.check_snapshot`; whatever is wrong
with a file (not UTF-8, not JSON, nested too deeply, a wrong type, an impossible value)
is one :class:`~subsecinspect.snapshot.model.SnapshotFormatError` line, never another exception.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from typing import Any

from subsecinspect.snapshot.model import (
    SNAPSHOT_FORMAT,
    Altmap,
    DevPagemap,
    KernelInfo,
    MemoryBlock,
    PageSample,
    PgmapRange,
    RangeMemmap,
    Section,
    Snapshot,
    SnapshotFormatError,
    TargetInfo,
    ZoneSpan,
)

__all__ = ("snapshot_from_dict", "snapshot_from_json", "snapshot_to_dict", "snapshot_to_json")

_DATACLASSES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        KernelInfo, TargetInfo, Section, MemoryBlock, Altmap, PgmapRange,
        PageSample, RangeMemmap, DevPagemap, ZoneSpan, Snapshot,
    )
}


def _encode(value: Any) -> Any:
    if isinstance(value, enum.Enum):
        return value.value
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple):
        return [_encode(v) for v in value]
    return value


def snapshot_to_dict(snapshot: Snapshot) -> dict[str, Any]:
    """The snapshot as JSON-compatible data (integers stay integers)."""
    out: dict[str, Any] = _encode(snapshot)
    return out


def snapshot_to_json(snapshot: Snapshot, *, indent: int | None = None) -> str:
    return json.dumps(snapshot_to_dict(snapshot), indent=indent)


#: Integers are 64-bit words (signed or unsigned); bitmaps may be longer.
_BITMAP_BITS = {"subsection_map": 2048}


def _decode(tp: Any, value: Any, where: str, bits: int = 64) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _decode(inner[0], value, where, bits)
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list):
            raise SnapshotFormatError(f"{where}: expected a list")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_decode(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise SnapshotFormatError(f"{where}: expected {len(args)} items")
        pairs = enumerate(zip(args, value, strict=True))
        return tuple(_decode(a, v, f"{where}[{i}]") for i, (a, v) in pairs)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise SnapshotFormatError(f"{where}: bad value {_short(value)}") from None
    if isinstance(tp, type) and tp.__name__ in _DATACLASSES:
        return _from_dict(tp, value, where)
    if tp is bool:
        if not isinstance(value, bool):
            raise SnapshotFormatError(f"{where}: expected a boolean")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise SnapshotFormatError(f"{where}: expected an integer")
        if not -(1 << (bits - 1)) <= value < 1 << bits:
            raise SnapshotFormatError(f"{where}: {value} does not fit in {bits} bits")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise SnapshotFormatError(f"{where}: expected a string")
        return value
    raise SnapshotFormatError(f"{where}: unsupported type {tp!r}")


def _from_dict(cls: type, data: Any, where: str) -> Any:
    if not isinstance(data, dict):
        raise SnapshotFormatError(f"{where}: expected an object")
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        if f.name in data:
            bits = _BITMAP_BITS.get(f.name, 64)
            kwargs[f.name] = _decode(hints[f.name], data[f.name], f"{where}.{f.name}", bits)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise SnapshotFormatError(f"{where}: missing key {f.name!r}")
    unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
    if unknown:
        raise SnapshotFormatError(f"{where}: unknown keys {_short(sorted(unknown))}")
    return cls(**kwargs)


def snapshot_from_dict(data: Any) -> Snapshot:
    """Rebuild a :class:`Snapshot`; raises :class:`SnapshotFormatError` on any mismatch.

    Types are checked here, values by :func:`subsecinspect.snapshot.checks.check_snapshot`.
    """
    from subsecinspect.snapshot.checks import check_snapshot

    if isinstance(data, dict) and data.get("format", SNAPSHOT_FORMAT) != SNAPSHOT_FORMAT:
        raise SnapshotFormatError(
            f"snapshot format {_short(data.get('format'))} is not {SNAPSHOT_FORMAT}"
        )
    snapshot: Snapshot = _from_dict(Snapshot, data, "snapshot")
    check_snapshot(snapshot)
    return snapshot


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def snapshot_from_json(text: str | bytes) -> Snapshot:
    """Decode a saved snapshot (text, or UTF-8 bytes); every failure is one
    :class:`SnapshotFormatError` line."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise SnapshotFormatError(f"not JSON: {e}") from None
    except UnicodeDecodeError as e:
        raise SnapshotFormatError(f"not UTF-8 text: {e.reason} at byte {e.start}") from None
    except RecursionError:
        raise SnapshotFormatError("not a snapshot: JSON nested too deeply") from None
    except ValueError as e:  # an integer literal longer than sys.get_int_max_str_digits()
        what = "an integer has too many digits" if "digits" in str(e) else _short(str(e), 120)
        raise SnapshotFormatError(f"not a snapshot: {what}") from None
    return snapshot_from_dict(data)
