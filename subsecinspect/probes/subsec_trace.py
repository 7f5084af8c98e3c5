"""Front end of ``bpf/subsec_trace.bpf.c``: compile, attach, seed, poll, detach (bcc).

Load the program with ``BPF(src_file=..., cflags=[-D...])`` (settings are -D flags, never
text substitution; :meth:`SubsecTrace.source` is the exact C that is compiled), attach
only the probe points the running kernel has (:mod:`.kallsyms`), write the unsafe windows
known at start into the maps, and stream events from the perf buffer.

Needs root, bcc (Debian's python3-bpfcc) and the running kernel's headers. bcc is
imported lazily, so the rest of the package works without it.
"""

from __future__ import annotations

import ctypes
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from subsecinspect.errors import ProbeError
from subsecinspect.probes import kallsyms
from subsecinspect.probes.events import Event, RawEvent, decode
from subsecinspect.probes.windows import Window, map_contents

__all__ = ("STAT_NAMES", "AttachReport", "SubsecTrace", "bpf_dir", "detect_cflags")

#: Index -> name of the per-CPU ``stats`` counters (SUBSEC_ST_* in subsec_trace.h).
STAT_NAMES = (
    "walker_calls",
    "window_hits",
    "alarms",
    "notes",
    "lifecycle",
    "window_full",
    "kpage_reads",
    "suppressed",
)
_SRC = "subsec_trace.bpf.c"
_HDR = "subsec_trace.h"


def bpf_dir() -> Path:
    """Where the BPF C sources are.

    ``$SUBSECINSPECT_BPF_DIR``, else ``bpf/`` of this checkout (editable installs, the lab's
    project disk), else ``<prefix>/share/subsecinspect/bpf`` where a wheel installs them
    (pyproject.toml ``[tool.setuptools.data-files]``).
    """
    env = os.environ.get("SUBSECINSPECT_BPF_DIR")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / "bpf"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "subsecinspect" / "bpf"


def _read(path: str) -> str:
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return ""


def _kernel_header(name: str) -> str:
    """A header of the running kernel as bcc sees it (build/ first, then source/)."""
    rel = os.uname().release
    for d in ("build", "source"):
        text = _read(f"/lib/modules/{rel}/{d}/include/linux/{name}")
        if text:
            return text
    return ""


def detect_cflags(kallsyms_text: str, max_windows: int = 64) -> list[str]:
    """The -D settings for this kernel, each detected, never taken from the release.

    * ``SUBSEC_VMEMMAP_SYM``: the address of ``vmemmap_base`` (KASLR'd memory layout);
      the BPF side reads the variable to turn a ``struct page *`` into a PFN.
    * ``SUBSEC_SPARSE_REMOVE_MS``: ``sparse_remove_section()`` still takes the
      ``struct mem_section *`` first (6.1 and older), from the headers bcc compiles with.
    """
    flags = [f"-DSUBSEC_MAX_WINDOWS={max_windows}"]
    m = re.search(r"^([0-9a-f]+) [dDbB] vmemmap_base$", kallsyms_text, re.M)
    if m and int(m[1], 16):
        flags.append(f"-DSUBSEC_VMEMMAP_SYM=0x{m[1]}ULL")
    hotplug = _kernel_header("memory_hotplug.h")
    if re.search(r"sparse_remove_section\(struct mem_section \*", hotplug):
        flags.append("-DSUBSEC_SPARSE_REMOVE_MS=1")
    memremap = _kernel_header("memremap.h")
    if re.search(r"get_dev_pagemap\(unsigned long pfn\);", memremap):
        flags.append("-DSUBSEC_GDP_ONE_ARG=1")
    return flags


@dataclass
class AttachReport:
    """What was attached (``function -> symbol``) and what not (``function -> reason``)."""

    attached: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)


class SubsecTrace:
    """One loaded ``subsec_trace`` program. Use as a context manager; :meth:`close` detaches."""

    def __init__(
        self,
        windows: list[Window] | None = None,
        c1_sections: set[int] | None = None,
        max_windows: int = 64,
        kallsyms_text: str | None = None,
        hot_walkers: bool = False,
    ) -> None:
        self.hot_walkers = hot_walkers
        self.windows = list(windows or [])
        self.c1_sections = set(c1_sections or ())
        self.max_windows = max_windows
        self.kallsyms_text = kallsyms_text if kallsyms_text is not None else _read(
            "/proc/kallsyms"
        )
        self.cflags = [f"-I{bpf_dir()}", *detect_cflags(self.kallsyms_text, max_windows)]
        self.report = AttachReport()
        self.lost = 0
        self._bpf: Any = None

    def source(self) -> str:
        """The exact C compiled: the -D flags, the shared header and the program."""
        d = bpf_dir()
        head = "\n".join(f"// cflag: {f}" for f in self.cflags)
        return (
            f"{head}\n// ---- {d / _HDR}\n{(d / _HDR).read_text()}"
            f"\n// ---- {d / _SRC}\n{(d / _SRC).read_text()}"
        )

    def start(self, on_event: Callable[[Event], None]) -> AttachReport:
        """Compile, attach, seed the maps, open the perf buffer.

        :raises ProbeError: bcc missing, compile failure, or a required probe missing.
        """
        try:
            from bcc import BPF  # type: ignore[import-not-found]
        except ImportError as e:
            raise ProbeError(f"bcc is not installed (python3-bpfcc): {e}") from None
        if self.kallsyms_text and not re.search(r"^0*[1-9a-f]", self.kallsyms_text, re.M):
            raise ProbeError("/proc/kallsyms shows no addresses (run as root)")
        planned, skipped = kallsyms.plan(
            self.kallsyms_text, _read("/sys/kernel/debug/kprobes/blacklist"),
            hot=self.hot_walkers,
        )
        for s in skipped:
            self.report.skipped[s.spec.function] = s.reason
            self.report.roles[s.spec.function] = s.spec.role
        missing = [s.spec.function for s in skipped if s.spec.required]
        if missing:
            raise ProbeError(f"required probe points missing: {', '.join(missing)}")
        src = str(bpf_dir() / _SRC).encode()
        try:
            self._bpf = BPF(src_file=src, cflags=self.cflags)
        except Exception as e:
            raise ProbeError(f"BPF program failed to compile: {e}") from None
        self._seed()
        for p in planned:
            self.report.roles[p.spec.function] = p.spec.role
            try:
                # The kretprobe first: kprobes on one address run newest first, so the entry
                # program then runs before the kretprobe swaps the return address, and its
                # stack unwinds past the caller (before v5.13 the unwinder stops at
                # kretprobe_trampoline).
                if p.spec.ret:
                    self._bpf.attach_kretprobe(event=p.symbol, fn_name=p.spec.ret, maxactive=64)
                if p.spec.entry:
                    self._bpf.attach_kprobe(event=p.symbol, fn_name=p.spec.entry)
            except Exception as e:
                if p.spec.required:
                    self.close()
                    raise ProbeError(f"cannot attach {p.symbol}: {e}") from None
                self.report.skipped[p.spec.function] = f"attach failed: {e}"
                continue
            note = f" ({p.symbol}, a gcc clone)" if p.clone else ""
            self.report.attached[p.spec.function] = p.symbol + note

        def _cb(cpu: int, data: Any, size: int) -> None:
            raw = ctypes.cast(data, ctypes.POINTER(RawEvent)).contents
            on_event(decode(raw))

        def _lost(count: int) -> None:
            self.lost += count

        self._bpf["events"].open_perf_buffer(_cb, page_cnt=256, lost_cb=_lost)
        return self.report

    def _seed(self) -> None:
        try:
            slots, bounds = map_contents(self.windows, self.max_windows)
        except ValueError as e:
            self.close()
            raise ProbeError(f"cannot seed the BPF windows map: {e}") from None
        wins = self._bpf["windows"]
        for i, w in enumerate(slots):
            if w is None:
                continue
            v = wins.Leaf(w.start_pfn, w.end_pfn, w.owner, int(w.cls), int(w.phase))
            wins[ctypes.c_int(i)] = v
        b = self._bpf["bounds"]
        b[ctypes.c_int(0)] = b.Leaf(bounds.lo, bounds.hi, bounds.nwin, 0)
        c1 = self._bpf["c1_sections"]
        for sec in sorted(self.c1_sections):
            c1[c1.Key(sec)] = c1.Leaf(1)  # SUBSEC_PH_SEEDED

    def poll(self, timeout_ms: int = 200) -> None:
        self._bpf.perf_buffer_poll(timeout=timeout_ms)

    def stats(self) -> dict[str, int]:
        """The per-CPU counters, summed."""
        st = self._bpf["stats"]
        out = {}
        for i, name in enumerate(STAT_NAMES):
            out[name] = int(sum(st[ctypes.c_int(i)]))
        return out

    def stack(self, stack_id: int) -> list[str]:
        """Symbolised kernel stack of a walker hit (innermost first)."""
        if stack_id < 0 or self._bpf is None:
            return []
        try:
            addrs = list(self._bpf["stacks"].walk(stack_id))
        except KeyError:
            return []
        return [self._bpf.ksym(a, show_offset=True).decode(errors="replace") for a in addrs]

    def current_windows(self) -> list[Window]:
        """The window slots as the kernel holds them now."""
        from subsecinspect.probes.events import Phase, WindowClass

        out = []
        for _, v in self._bpf["windows"].items():
            if v.cls:
                out.append(Window(v.start_pfn, v.end_pfn, WindowClass(v.cls), Phase(v.phase),
                                  v.owner))
        return out

    def close(self) -> None:
        """Detach every probe and free the program (idempotent)."""
        if self._bpf is not None:
            try:
                self._bpf.cleanup()
            finally:
                self._bpf = None

    def __enter__(self) -> SubsecTrace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
