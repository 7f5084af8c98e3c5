"""The per-build-ID cache of BTF mode and the System.map reader (no kernel needed)."""

from __future__ import annotations

from pathlib import Path

import drgn
import pytest
from btfbuild import every_kind_blob

from subsecinspect.debuginfo import btfcache
from subsecinspect.debuginfo.btf import Btf
from subsecinspect.debuginfo.symbols import read_system_map
from subsecinspect.errors import DebugInfoError

BLOB, IDS = every_kind_blob()
BUILD_ID = "01d2640d3a13145ee314eb05b155f141b7b7058b"


@pytest.fixture(autouse=True)
def _cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))


def test_scan_round_trips() -> None:
    assert btfcache.load(BUILD_ID, BLOB) is None
    btfcache.store(BUILD_ID, BLOB, Btf(BLOB))
    cached = btfcache.load(BUILD_ID, BLOB)
    assert cached is not None
    b = Btf(BLOB, offsets=cached)
    assert b.find("s") == [IDS["struct"]] and b.nr_types == len(IDS)


def test_stale_or_foreign_scan_is_ignored() -> None:
    btfcache.store(BUILD_ID, BLOB, Btf(BLOB))
    changed = bytearray(BLOB)
    changed[-2] ^= 1  # same length, another blob: the CRC says so
    assert btfcache.load(BUILD_ID, bytes(changed)) is None
    assert btfcache.load(BUILD_ID, BLOB + b"\0") is None
    assert btfcache.load("not/a/build-id", BLOB) is None


def test_memo_round_trips() -> None:
    btfcache.store_memo(BUILD_ID, {"names": {"page": [3]}, "kallsyms": {"_stext": 1}})
    assert btfcache.load_memo(BUILD_ID) == {"names": {"page": [3]}, "kallsyms": {"_stext": 1}}
    assert btfcache.load_memo("ab" * 20) == {}


def test_btf_memo_answers_first() -> None:
    b = Btf(BLOB)
    b.memo_names["s"] = [IDS["union"]]  # what a cache would hand over
    assert b.find("s") == [IDS["union"]]
    b.memo_enums["E_ONE"] = None
    assert b.enumerator("E_ONE") is None
    assert b.enumerator("E_NEG") == (IDS["enum"], -1)


def test_system_map_is_shifted_by_kaslr(tmp_path: Path) -> None:
    m = tmp_path / "System.map"
    m.write_text("0000000000000000 A fixed_percpu_data\n"
                 "ffffffff81000000 T _stext\n"
                 "ffffffff832fee40 D init_uts_ns\n"
                 "ffffffff832ff000 d next_thing\n")
    index = read_system_map(str(m), 0x31C00000)
    prog = drgn.Program()
    (s,) = index(prog, "init_uts_ns", None, True)
    assert s.address == 0xFFFFFFFF832FEE40 + 0x31C00000 and s.size == 0x1C0
    assert index(prog, "fixed_percpu_data", None, True)[0].address == 0  # absolute: not moved
    bad = tmp_path / "not.map"
    bad.write_text("hello\n")
    with pytest.raises(DebugInfoError, match=r"not a System\.map"):
        read_system_map(str(bad), 0)
