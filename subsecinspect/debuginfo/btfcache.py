"""The per-build-ID cache of BTF mode (``$XDG_CACHE_HOME/subsecinspect/btf/``).

``<build-id>.idx``: what :class:`~subsecinspect.debuginfo.btf.Btf` computes on
opening, the word offset and name offset of every type, with the blob's length
and CRC-32: a stale or foreign file is ignored, never trusted.
``<build-id>.memo.json``: the answers of the run's lookups (type names, enumerators,
kallsyms indexes), checked on use where they can be (the kallsyms count).
Writing is best effort (a read-only home just means no cache).
"""

from __future__ import annotations

import json
import os
import struct
import zlib
from array import array
from pathlib import Path

from subsecinspect.debuginfo.btf import Btf

__all__ = ("cache_dir", "load", "load_memo", "store", "store_memo")

_MAGIC = b"SSIBTF1\0"
_HEAD = struct.Struct("<8sQII")  # magic, blob length, crc32, number of types + 1


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/subsecinspect/btf`` (``~/.cache/...`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "subsecinspect" / "btf"


def _path(build_id: str) -> Path | None:
    if not build_id or not all(c in "0123456789abcdefABCDEF" for c in build_id):
        return None
    return cache_dir() / f"{build_id.lower()}.idx"


def load(build_id: str, data: bytes) -> tuple[array, array] | None:
    """The cached ``(offsets, name offsets)`` of *data*, or ``None``."""
    path = _path(build_id)
    if path is None:
        return None
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    if len(raw) < _HEAD.size:
        return None
    magic, length, crc, n = _HEAD.unpack_from(raw)
    if magic != _MAGIC or length != len(data) or len(raw) != _HEAD.size + 8 * n:
        return None
    if crc != zlib.crc32(data):
        return None
    offs = array("I")
    offs.frombytes(raw[_HEAD.size : _HEAD.size + 4 * n])
    names = array("I")
    names.frombytes(raw[_HEAD.size + 4 * n :])
    return offs, names


def store(build_id: str, data: bytes, btf: Btf) -> None:
    """Write the scan of *btf* (opened from *data*) under *build_id*; errors are ignored."""
    path = _path(build_id)
    if path is None:
        return
    offs, names = btf.scan_result()
    head = _HEAD.pack(_MAGIC, len(data), zlib.crc32(data), len(offs))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_bytes(head + offs.tobytes() + names.tobytes())
        tmp.replace(path)
    except OSError:
        pass


def load_memo(build_id: str) -> dict[str, dict]:
    """The memo of an earlier run on *build_id* (``{}`` if none or unreadable)."""
    path = _path(build_id)
    if path is None:
        return {}
    try:
        memo = json.loads(path.with_suffix(".memo.json").read_text())
    except (OSError, ValueError):
        return {}
    return memo if isinstance(memo, dict) else {}


def store_memo(build_id: str, memo: dict[str, dict]) -> None:
    """Write *memo* for *build_id*; errors are ignored."""
    path = _path(build_id)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".memo.tmp{os.getpid()}")
        tmp.write_text(json.dumps(memo, sort_keys=True))
        tmp.replace(path.with_suffix(".memo.json"))
    except OSError:
        pass
