"""The kernel interface files the tracer reads: one reader, one /proc/kallsyms parser.

``/proc/kallsyms`` (kernel/kallsyms.c ``s_show()``) prints one symbol a line,
``<address> <type> <name>[\\t[<module>]]``; the address is 0 for a reader without
CAP_SYSLOG (kptr_restrict). :mod:`.probe_points` asks it which functions exist,
:mod:`.symbolize` where they start.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import NamedTuple

__all__ = ("TEXT_TYPES", "KallsymsLine", "parse_kallsyms", "read_or_empty")

#: Symbol types of code (global and static, weak included).
TEXT_TYPES = frozenset("tTwW")


class KallsymsLine(NamedTuple):
    """One line of /proc/kallsyms; ``module`` is ``""`` for the core kernel."""

    addr: int
    type: str
    name: str
    module: str


def parse_kallsyms(text: str) -> Iterator[KallsymsLine]:
    """Every well-formed line of a /proc/kallsyms text (others are passed over)."""
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue
        try:
            addr = int(parts[0], 16)
        except ValueError:
            continue
        module = parts[3].strip("[]") if len(parts) > 3 else ""
        yield KallsymsLine(addr, parts[1], parts[2], module)


def read_or_empty(path: str) -> str:
    """The text of a kernel interface file, ``""`` when it cannot be read (absent, no debugfs,
    not root): every caller treats an unreadable file as an empty one."""
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""
