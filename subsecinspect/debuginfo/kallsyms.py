"""The kernel's built-in kallsyms tables, read from a dump for a few names only.

Mirrors ``kallsyms_expand_symbol()`` and ``kallsyms_sym_address()`` of
kernel/kallsyms.c and the tables scripts/kallsyms.c emits: ``kallsyms_names``
(per symbol a length, 1 byte or, since v6.1 73bbb94466fd ("kallsyms: support
"big" kernel symbols"), 2 when the high bit is set, then token indexes),
``kallsyms_token_table`` / ``kallsyms_token_index`` and ``kallsyms_offsets``
relative to ``kallsyms_relative_base`` (x86_64's ``--absolute-percpu`` before
v6.15: non-negative offsets are absolute), to ``_text``, or to the offset's own
slot (7.x). The encoding is chosen by where it puts ``_stext``. VMCOREINFO
locates the tables since v6.0 (f09bddbd8661).

drgn 0.3.0's ``load_vmlinux_kallsyms`` expands every symbol (0.12 s of a 6.1 dump
on the host); the readers need about twenty. Only the entries whose first token
can begin a wanted name are expanded.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable

import drgn
from drgn import Program

from subsecinspect.errors import DebugInfoError

__all__ = ("find_builtin_kallsyms",)

def _read(prog: Program, addr: int, size: int, what: str) -> bytes:
    try:
        return prog.read(addr, size)
    except drgn.FaultError as e:
        raise DebugInfoError(f"kallsyms table {what} at {addr:#x} is not in the dump: {e}"
                             ) from None


def _tokens(prog: Program, table: int, index: int) -> list[bytes]:
    idx = struct.unpack("<256H", _read(prog, index, 512, "kallsyms_token_index"))
    raw = _read(prog, table, max(idx) + 256, "kallsyms_token_table")
    out = []
    for off in idx:
        end = raw.find(b"\0", off)
        out.append(raw[off:end] if end >= 0 else b"")
    return out


def find_builtin_kallsyms(
    prog: Program, info: dict[str, str], wanted: Iterable[str],
    memo: dict[str, int] | None = None,
) -> tuple[dict[str, int], dict[str, int]]:
    """Addresses of the *wanted* names in the dump's kallsyms (absent names are left out).

    *memo*: name -> symbol index (-1: absent) of an earlier run on the same build (the
    per-build-ID cache); indexes do not move with KASLR, so when it covers *wanted* the
    names are not expanded at all.

    :return: (name -> address, the memo of this lookup)
    :raises DebugInfoError: VMCOREINFO lacks the tables, or they are not in the dump.
    """
    def sym(name: str) -> int:
        v = info.get(f"SYMBOL({name})")
        if v is None:
            raise DebugInfoError(
                f"this dump's VMCOREINFO has no SYMBOL({name}) (kallsyms is located there "
                "since v6.0, f09bddbd8661); pass -m/--system-map "
                "/boot/System.map-<release> of the dumped kernel, or -s/--vmlinux"
            )
        return int(v, 16)

    names_at, table_at = sym("kallsyms_names"), sym("kallsyms_token_table")
    num = struct.unpack("<I", _read(prog, sym("kallsyms_num_syms"), 4, "kallsyms_num_syms"))[0]
    if not 0 < num < 1 << 22 or not names_at < table_at <= names_at + (num << 9):
        raise DebugInfoError(f"kallsyms tables look damaged ({num} symbols)")
    want = {w.encode() for w in wanted}
    if memo is not None and memo.get("#num_syms") == num and all(
            w.decode() in memo for w in want):
        known = {w: memo[w.decode()] for w in want if memo[w.decode()] >= 0}
        return _addresses(prog, info, known, sym("kallsyms_offsets")), memo
    tokens = _tokens(prog, table_at, sym("kallsyms_token_index"))
    names = _read(prog, names_at, table_at - names_at, "kallsyms_names")
    # First tokens that can begin a wanted name: type letter + a prefix of the name; a
    # lone type letter must be followed by a token that begins one (0: no, 1: yes, 2: ask).
    first_ok = [
        (2 if len(t) == 1 else int(any(w.startswith(t[1:]) for w in want))) if t else 0
        for t in tokens
    ]
    second_ok = [bool(t) and any(w.startswith(t) for w in want) for t in tokens]
    found: dict[bytes, int] = {}
    join = b"".join
    pos = 0
    end = len(names)
    for i in range(num):
        # One pass over the lengths; only entries whose first token fits are expanded.
        if pos >= end:
            raise DebugInfoError("kallsyms_names ends before kallsyms_num_syms names")
        ln = names[pos]
        if ln & 0x80:
            ln = (ln & 0x7F) | names[pos + 1] << 7
            pos += 1
        a = pos + 1
        pos = a + ln
        ok = first_ok[names[a]] if ln else 0
        if ok == 2:
            ok = ln > 1 and second_ok[names[a + 1]]
        if ok:
            name = join([tokens[t] for t in names[a:pos]])[1:]
            if name in want and name not in found:
                found[name] = i
    new_memo = {w.decode(): found.get(w, -1) for w in want}
    new_memo["#num_syms"] = num
    return _addresses(prog, info, found, sym("kallsyms_offsets")), new_memo


def _addresses(prog: Program, info: dict[str, str], found: dict[bytes, int], offs_at: int
               ) -> dict[str, int]:
    """Addresses of the symbols at indexes *found* (name -> index)."""
    if b"_stext" not in found or "SYMBOL(_stext)" not in info:
        raise DebugInfoError("kallsyms has no _stext to check its address encoding against")
    anchor = int(info["SYMBOL(_stext)"], 16)
    raw = {i: struct.unpack("<i", _read(prog, offs_at + 4 * i, 4, "kallsyms_offsets"))[0]
           for i in found.values()}
    base = info.get("SYMBOL(kallsyms_relative_base)")
    rbase = (struct.unpack("<Q", _read(prog, int(base, 16), 8, "kallsyms_relative_base"))[0]
             if base is not None else None)
    mask = (1 << 64) - 1

    # The encodings of kallsyms_sym_address() over the versions; the one that puts _stext
    # where VMCOREINFO says is used, and none fitting is an error, never a guess.
    def absolute_percpu(i: int, off: int) -> int:
        # x86_64 SMP before v6.15 (--absolute-percpu): non-negative offsets are absolute
        # per-CPU addresses, negative ones count down from the base.
        assert rbase is not None
        return off if off >= 0 else rbase - 1 - off

    def from_base(i: int, off: int) -> int:
        assert rbase is not None
        return rbase + (off & 0xFFFFFFFF)

    def from_text(i: int, off: int) -> int:
        # Once the base was dropped: unsigned offsets from _text (== _stext on x86_64,
        # arch/x86/kernel/vmlinux.lds.S).
        return anchor + (off & 0xFFFFFFFF)

    def place_relative(i: int, off: int) -> int:
        # The 7.x tables: each offset is relative to its own kallsyms_offsets slot
        # (measured on Debian 7.2.12: _stext is slot 1, -0x1689e28 from it).
        return (offs_at + 4 * i + off) & mask

    encodings = (absolute_percpu, from_base) if rbase is not None else (
        from_text, place_relative)
    i_stext = found[b"_stext"]
    for enc in encodings:
        if enc(i_stext, raw[i_stext]) == anchor:
            return {name.decode(): enc(i, raw[i]) for name, i in found.items()}
    raise DebugInfoError(
        "kallsyms_offsets use an encoding this version does not know (no decoding puts "
        "_stext at VMCOREINFO's address); pass -m/--system-map or -s/--vmlinux"
    )
