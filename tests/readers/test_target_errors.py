"""Error paths of subsecinspect.target and the CLI that need no guest.

Each case builds its bad input in tmp_path (nothing committed) and checks the
one-line message and the documented exit code (subsecinspect.errors).
"""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from subsecinspect.errors import DebugInfoError, TargetError
from subsecinspect.target import elf_build_id, inspect_dump, open_target

PY = sys.executable


def _elf_core(phdrs: list[tuple[int, int, int, int]], body: int) -> bytes:
    """A minimal ELF64 core: PT_LOAD headers (offset, paddr, filesz, memsz) and *body* bytes."""
    ehdr = bytearray(64)
    ehdr[0:4] = b"\x7fELF"
    ehdr[4], ehdr[5], ehdr[6] = 2, 1, 1
    struct.pack_into("<HHI", ehdr, 16, 4, 62, 1)  # ET_CORE, EM_X86_64
    struct.pack_into("<Q", ehdr, 32, 64)  # e_phoff
    struct.pack_into("<HHHHHH", ehdr, 52, 64, 56, len(phdrs), 0, 0, 0)
    ph = b"".join(
        struct.pack("<IIQQQQQQ", 1, 4, off, 0, pa, fs, ms, 4096) for off, pa, fs, ms in phdrs
    )
    return bytes(ehdr) + ph + b"\0" * body


def _record(rec: Any, case: str, tried: str, e: BaseException) -> None:
    """Record an in-process error: its class, message and the exit code the CLI maps it to."""
    rec(case, tried, f"{type(e).__name__}: {e}", getattr(e, "exit_code", None))


def test_missing_vmcore(tmp_path: Path, bad_input_record: Any) -> None:
    with pytest.raises(TargetError, match="no such vmcore") as ei:
        open_target(str(tmp_path / "nope"))
    _record(bad_input_record, "missing vmcore", "open_target(<tmp>/nope)", ei.value)


def test_garbage_is_not_a_vmcore(tmp_path: Path, bad_input_record: Any) -> None:
    p = tmp_path / "garbage"
    p.write_bytes(os.urandom(4096).replace(b"\x7fELF", b"xxxx"))
    with pytest.raises(TargetError, match="not a vmcore") as ei:
        inspect_dump(str(p))
    _record(bad_input_record, "random bytes as a vmcore", "inspect_dump(4 KiB of random bytes)",
            ei.value)


def test_truncated_elf(tmp_path: Path, bad_input_record: Any) -> None:
    p = tmp_path / "trunc.vmcore"
    data = _elf_core([(4096, 0x100000, 1 << 20, 1 << 20)], body=4096)
    p.write_bytes(data)
    with pytest.raises(TargetError, match=r"truncated vmcore.*need 1052672 bytes") as ei:
        inspect_dump(str(p))
    _record(bad_input_record, "truncated ELF vmcore", "inspect_dump(ELF core, 1 MiB segment, "
            "4 KiB of it in the file)", ei.value)


def test_complete_elf_segments(tmp_path: Path) -> None:
    p = tmp_path / "ok.vmcore"
    hdr = _elf_core([(4096, 0x100000, 8192, 8192)], body=0)
    p.write_bytes(hdr + b"\0" * (4096 + 8192 - len(hdr)))
    d = inspect_dump(str(p))
    assert d.format == "elf"
    assert d.segments == ((0x100000, 0x102000),)
    assert d.max_pfn == 0x102


def test_flattened_kdump_is_refused(tmp_path: Path, bad_input_record: Any) -> None:
    p = tmp_path / "flat.vmcore"
    p.write_bytes(b"makedumpfile\0\0\0\0" + b"\0" * 4096)
    with pytest.raises(TargetError, match="flattened format") as ei:
        inspect_dump(str(p))
    _record(bad_input_record, "flattened makedumpfile output", "inspect_dump(makedumpfile -F "
            "header)", ei.value)


def test_truncated_kdump_header(tmp_path: Path, bad_input_record: Any) -> None:
    p = tmp_path / "kdump.vmcore"
    hdr = bytearray(4096)
    hdr[0:8] = b"KDUMP   "
    # status, block_size, sub_hdr_size, bitmap_blocks, max_mapnr at offset 424
    struct.pack_into("<iiiiI", hdr, 424, 0, 4096, 1, 16, 0x40000)
    p.write_bytes(bytes(hdr))
    with pytest.raises(TargetError, match=r"truncated vmcore.*73728 bytes") as ei:
        inspect_dump(str(p))
    _record(bad_input_record, "truncated kdump (header only)", "inspect_dump(KDUMP header "
            "without bitmaps and pages)", ei.value)


def test_missing_vmlinux(tmp_path: Path, bad_input_record: Any) -> None:
    # Checked before the target is opened, so any target will do.
    with pytest.raises(DebugInfoError, match=r"vmlinux not found: .*vmlinux-missing") as ei:
        open_target(str(tmp_path / "core"), str(tmp_path / "vmlinux-missing"))
    _record(bad_input_record, "missing vmlinux", "open_target(core, -s <tmp>/vmlinux-missing)",
            ei.value)


def test_elf_core_without_vmcoreinfo(tmp_path: Path, bad_input_record: Any) -> None:
    p = tmp_path / "core"
    hdr = _elf_core([(4096, 0, 4096, 4096)], body=0)
    p.write_bytes(hdr + b"\0" * (8192 - len(hdr)))
    with pytest.raises(TargetError, match="cannot open vmcore") as ei:
        open_target(str(p))
    _record(bad_input_record, "ELF core without VMCOREINFO", "open_target(ELF core, no notes)",
            ei.value)


def test_build_id_of_non_elf(tmp_path: Path) -> None:
    p = tmp_path / "x"
    p.write_bytes(b"not elf")
    assert elf_build_id(str(p)) is None


def test_build_id_of_real_elf() -> None:
    # The interpreter binary carries a GNU build ID on Debian/pyenv builds.
    bid = elf_build_id(os.path.realpath(PY))
    out = subprocess.run(["readelf", "-n", os.path.realpath(PY)], capture_output=True, text=True)
    if "Build ID:" not in out.stdout:
        assert bid is None
    else:
        want = out.stdout.split("Build ID:")[1].split()[0]
        assert bid is not None and bid.hex() == want


def test_a_32_bit_vmcore_is_refused(tmp_path: Path, bad_input_record: Any) -> None:
    """An i386 dump (Debian's 686 kernels: no ZONE_DEVICE, no vmemmap, and drgn 0.3.0 has no
    i386 page-table walker) is refused before drgn is involved."""
    p = tmp_path / "i386.vmcore"
    ehdr = bytearray(52)
    ehdr[0:4] = b"\x7fELF"
    ehdr[4], ehdr[5], ehdr[6] = 1, 1, 1  # ELFCLASS32, little-endian
    struct.pack_into("<HHI", ehdr, 16, 4, 3, 1)  # ET_CORE, EM_386
    p.write_bytes(bytes(ehdr) + b"\0" * 4096)
    with pytest.raises(TargetError, match="only 64-bit little-endian") as ei:
        inspect_dump(str(p))
    assert ei.value.exit_code == TargetError.exit_code
    _record(bad_input_record, "a 32-bit (i386) vmcore", "inspect_dump(ELF32 EM_386 core)", ei.value)


@pytest.mark.parametrize("preset", [None, "", "builtin_commands"])
def test_open_target_disables_drgn_plugins_unless_told(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, preset: str | None
) -> None:
    # drgn reads DRGN_DISABLE_PLUGINS when the program is set up; open_target defaults it to
    # "*" (no entry-point scan, no command plugins) and leaves a user's own setting alone.
    if preset is None:
        monkeypatch.delenv("DRGN_DISABLE_PLUGINS", raising=False)
    else:
        monkeypatch.setenv("DRGN_DISABLE_PLUGINS", preset)
    with pytest.raises(TargetError, match="no such vmcore"):
        open_target(str(tmp_path / "missing.vmcore"))
    assert os.environ["DRGN_DISABLE_PLUGINS"] == ("*" if preset is None else preset)


@pytest.mark.parametrize(("setting", "loaded"), [("*", False), ("", True)])
def test_drgn_plugin_hook_follows_the_setting(setting: str, loaded: bool) -> None:
    # The hook set_kernel()/set_core_dump() call: with "*" (open_target's default) drgn
    # imports neither importlib.metadata nor its command plugins; with "" it imports both.
    code = (
        f"import os, sys; os.environ['DRGN_DISABLE_PLUGINS'] = {setting!r}\n"
        "from _drgn_util.plugins import call_plugins\n"
        "call_plugins('drgn_prog_set', None)\n"
        "print(sorted(m for m in sys.modules if m in ('drgn.commands._crash', "
        "'importlib.metadata')))"
    )
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True).stdout
    want = "['drgn.commands._crash', 'importlib.metadata']" if loaded else "[]"
    assert out.strip() == want
