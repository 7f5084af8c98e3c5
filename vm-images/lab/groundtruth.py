"""Ground truth from the guest kernel itself: the subsec_gt module (tests/kmod/subsec_gt/).

The module answers, per PFN, what the running kernel's own predicates say: ``pfn_valid()``,
``pfn_to_online_page()``, ``get_dev_pagemap()``, ``pgmap_pfn_valid()`` (5.12+) and, where the
kernel considers the struct page initialised, its zone, node and pgmap.

:func:`build` compiles it per kernel of the matrix through :mod:`lab.kmod` (the lab's one
module build path; rebuilt only when the module source, the build script or the kernel changes).
:func:`load` copies it into a running :class:`~lab.vm.LabVM` and inserts it;
:func:`query` asks it about PFNs; :func:`memstate` asks what the kernel records for hot-added
RAM (``PageOffline()``, ``PageVmemmapSelfHosted()``, zone, online) over a PFN range.
"""

from __future__ import annotations

import base64
import gzip
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from lab import kmod

__all__ = (
    "GroundTruth", "GroundTruthError", "MemState", "build", "load", "memstate", "query",
    "query_spans",
)

MODULE = "subsec_gt"
_GUEST_KO = "/tmp/subsec_gt.ko"
_DEBUGFS = "/sys/kernel/debug/subsec_gt/pfns"
_MEMSTATE = "/sys/kernel/debug/subsec_gt/memstate"


class GroundTruthError(RuntimeError):
    """The module could not be loaded or queried (the message says why)."""


class _VM(Protocol):
    def run(self, cmd: str, timeout: float = ...) -> Any: ...

    def put(self, local: Path, remote: str) -> Any: ...


@dataclass(frozen=True, slots=True)
class GroundTruth:
    """The kernel's answers for one PFN (``None`` = not applicable / not asked)."""

    pfn: int
    pfn_valid: bool
    online: bool
    pgmap: int | None
    pgmap_pfn_valid: bool | None
    zone: str | None
    zone_idx: int | None
    nid: int | None
    page_pgmap: int | None
    #: get_dev_pagemap() without the pfn_valid() guard, and pgmap_pfn_valid() for it
    #: (module v2; ``None`` from a v1 module or where there is no pgmap / no such function).
    dev_pagemap: int | None = None
    dev_pgmap_pfn_valid: bool | None = None


def build(kernel_id: str, force: bool = False) -> Path:
    """Build (or reuse) subsec_gt.ko for ``kernel_id``; returns its path (:func:`lab.kmod.build`).

    :raises lab.kmod.KmodError: the module could not be built.
    """
    return kmod.build(kernel_id, MODULE, force=force)


def load(vm: _VM, ko: Path) -> str:
    """Copy ``ko`` into the guest and insert it; returns the module's header line."""
    vm.put(ko, _GUEST_KO)
    res = vm.run(
        f"rmmod subsec_gt 2>/dev/null; insmod {_GUEST_KO} && head -1 {_DEBUGFS}", timeout=60
    )
    if res.rc != 0:
        raise GroundTruthError(
            f"insmod subsec_gt.ko failed (rc={res.rc}): {res.stdout}{res.stderr}"
        )
    return str(res.stdout).strip()


def _opt_int(v: str, base: int = 16) -> int | None:
    return None if v == "-" else int(v, base)


def _opt_bool(v: str) -> bool | None:
    return None if v == "-" else v == "1"


def parse(text: str) -> list[GroundTruth]:
    """Parse the module's answer lines (the header line is skipped)."""
    out = []
    for line in text.splitlines():
        if not line.startswith("pfn="):
            continue
        f = dict(kv.split("=", 1) for kv in line.split())
        out.append(
            GroundTruth(
                pfn=int(f["pfn"], 16),
                pfn_valid=f["valid"] == "1",
                online=f["online"] == "1",
                pgmap=_opt_int(f["pgmap"]),
                pgmap_pfn_valid=_opt_bool(f["pgmap_pfn_valid"]),
                zone=None if f["zone"] == "-" else f["zone"],
                zone_idx=_opt_int(f["zone_idx"], 10),
                nid=_opt_int(f["nid"], 10),
                page_pgmap=_opt_int(f["page_pgmap"]),
                dev_pagemap=_opt_int(f.get("dev_pagemap", "-")),
                dev_pgmap_pfn_valid=_opt_bool(f.get("dev_pgmap_pfn_valid", "-")),
            )
        )
    return out


def query(vm: _VM, pfns: Iterable[int]) -> list[GroundTruth]:
    """Ask the loaded module about ``pfns`` (at most 65536) and parse its answers."""
    text = " ".join(f"{p:#x}" for p in pfns)
    # One write() per 64 KiB of whole tokens (the module parses each write on its own).
    script = (
        "import os,sys\n"
        f"toks=sys.stdin.read().split(); fd=os.open('{_DEBUGFS}', os.O_WRONLY|os.O_TRUNC)\n"
        "for i in range(0,len(toks),4000): os.write(fd,' '.join(toks[i:i+4000]).encode())\n"
        "os.close(fd)\n"
    )
    res = vm.run(f"python3 -c \"{script}\" <<'EOF'\n{text}\nEOF\ncat {_DEBUGFS}", timeout=120)
    if res.rc != 0:
        raise GroundTruthError(f"querying subsec_gt failed (rc={res.rc}): {res.stderr}")
    return parse(str(res.stdout))


#: Guest side of :func:`query_spans`: expand the spans, ask the module 65536 PFNs at a time
#: (its list limit), gzip + base64 the answers (the channel is a TCG-emulated UART).
_SPANS_SCRIPT = """
import base64,gzip,os,sys
pfns=[p for t in sys.stdin.read().split() for a,b in [t.split('-')]
      for p in range(int(a,16),int(b,16))]
out=[]
for i in range(0,len(pfns),65536):
    fd=os.open('{path}',os.O_WRONLY|os.O_TRUNC)
    chunk=pfns[i:i+65536]
    for j in range(0,len(chunk),4000):
        os.write(fd,' '.join(hex(p) for p in chunk[j:j+4000]).encode())
    os.close(fd)
    out.append(open('{path}').read())
sys.stdout.write(base64.b64encode(gzip.compress(''.join(out).encode(),1)).decode())
"""


def query_spans(
    vm: _VM, spans: Iterable[tuple[int, int]], timeout: float = 900
) -> list[GroundTruth]:
    """Ask the loaded module about every PFN of the ``[start, end)`` *spans* (any number:
    the guest expands them and queries in rounds of 65536)."""
    text = " ".join(f"{a:x}-{b:x}" for a, b in spans if b > a)
    script = _SPANS_SCRIPT.format(path=_DEBUGFS)
    res = vm.run(f"python3 -c {shlex.quote(script)} <<'EOF'\n{text}\nEOF", timeout=timeout)
    if res.rc != 0:
        raise GroundTruthError(f"querying subsec_gt failed (rc={res.rc}): {res.stderr}")
    return parse(gzip.decompress(base64.b64decode(str(res.stdout).strip())).decode())


@dataclass(frozen=True, slots=True)
class MemState:
    """The module's ``memstate`` answer for PFNs ``[start, end)`` (one run of equal lines).

    ``page_type`` keeps the bits that encode a type on 5.10-7.2 (``& 0xff000100``: the
    v6.12+ top byte, the older PAGE_TYPE_BASE nibble and PG_offline), not mapcounts.
    """

    start: int
    end: int
    online: bool
    zone: str | None
    offline: bool | None
    self_hosted: bool | None
    reserved: bool | None
    page_type: int | None


# Runs on the guest: asks the module about [lo, hi) in batches of the module's list size
# (65536) and prints one line per run of equal answers, so that 100 k PFNs cross the
# serial channel as a few lines.
_MEMSTATE_SCRIPT = """
import os, sys
lo, hi = int(sys.argv[1], 0), int(sys.argv[2], 0)
prev = None
for a in range(lo, hi, 65536):
    b = min(a + 65536, hi)
    fd = os.open('{pfns}', os.O_WRONLY | os.O_TRUNC)
    for c in range(a, b, 4000):
        os.write(fd, ' '.join(hex(p) for p in range(c, min(c + 4000, b))).encode())
    os.close(fd)
    for line in open('{memstate}').read().splitlines()[1:]:
        pfn, rest = line.split(' ', 1)
        p = int(pfn[4:], 16)
        if 'page_type=0x' in rest:  # keep the type bits only (byte 3 and bit 8), not counts
            head, pt = rest.rsplit('page_type=', 1)
            rest = head + 'page_type=' + hex(int(pt, 16) & 0xff000100)
        if prev is not None and prev[2] == rest and prev[1] == p:
            prev[1] = p + 1
            continue
        if prev is not None:
            print(hex(prev[0]), hex(prev[1]), prev[2])
        prev = [p, p + 1, rest]
if prev is not None:
    print(hex(prev[0]), hex(prev[1]), prev[2])
"""


def _parse_memstate(line: str) -> MemState:
    start, end, rest = line.split(" ", 2)
    f = dict(kv.split("=", 1) for kv in rest.split())
    return MemState(
        start=int(start, 16), end=int(end, 16), online=f["online"] == "1",
        zone=None if f["zone"] == "-" else f["zone"], offline=_opt_bool(f["offline"]),
        self_hosted=_opt_bool(f["self_hosted"]), reserved=_opt_bool(f["reserved"]),
        page_type=_opt_int(f["page_type"]),
    )  # fmt: skip


def memstate(vm: _VM, lo: int, hi: int) -> tuple[str, list[MemState]]:
    """The module's header line and its ``memstate`` answers for ``[lo, hi)``, as runs."""
    script = _MEMSTATE_SCRIPT.format(pfns=_DEBUGFS, memstate=_MEMSTATE)
    res = vm.run(
        f"head -1 {_MEMSTATE} && python3 - {lo:#x} {hi:#x} <<'EOF'\n{script}\nEOF", timeout=300
    )
    if res.rc != 0:
        raise GroundTruthError(f"subsec_gt memstate failed (rc={res.rc}): {res.stderr}")
    lines = str(res.stdout).splitlines()
    return lines[0], [_parse_memstate(x) for x in lines[1:] if x.startswith("0x")]
