"""Front end of ``bpf/subsec_trace.bpf.c``: check, plan, compile, attach, seed, poll (bcc).

:meth:`SubsecTrace.start` checks what the system offers (:mod:`.bcc_env`), plans the probe
points the running kernel has (:mod:`.probe_points`), compiles the program
(:mod:`.loading`: settings are -D flags; :meth:`SubsecTrace.source` is the exact C),
attaches it (:mod:`.attaching`), writes the unsafe windows known at start into the maps,
and streams events from the perf buffer in time order.

Needs root, bcc (Debian's python3-bpfcc) and the running kernel's headers. bcc is
imported lazily, so the rest of the package works without it.
"""

from __future__ import annotations

import bisect
import ctypes
import os
import re
import time
from collections.abc import Callable
from typing import Any

from subsecinspect.errors import ProbeError
from subsecinspect.probes import probe_points
from subsecinspect.probes.attaching import AttachReport, Links
from subsecinspect.probes.bcc_env import (
    detect_cflags,
    fentry_blockers,
    headers_missing,
    kprobes_disabled,
)
from subsecinspect.probes.events import Event, Phase, RawEvent, Walker, WindowClass, decode
from subsecinspect.probes.loading import bpf_dir, compile_tracer, source_text
from subsecinspect.probes.procfs import read_or_empty
from subsecinspect.probes.symbolize import KernelSymbols
from subsecinspect.probes.windows import Window, map_contents

__all__ = ("REORDER_NS", "STAT_NAMES", "SubsecTrace")

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
#: Events are held this long before they are handed over in time order (see poll()).
REORDER_NS = 300_000_000


def _one_by_one(bpf_class: Any) -> Any:
    """bcc's ``BPF`` without its autoload: bcc would attach every ``kfunc__*`` program at
    load and fail as a whole; :class:`.attaching.Links` attaches them one by one."""

    class _OneByOne(bpf_class):
        def _trace_autoload(self) -> None:
            """No autoload (see :func:`_one_by_one`)."""

    return _OneByOne


class SubsecTrace:
    """One loaded ``subsec_trace`` program. Use as a context manager; :meth:`close` detaches.

    :param hot_walkers: attach the per-PFN walkers (:attr:`.probe_points.ProbeSpec.hot`),
        through fentry/fexit where possible. Off by default: what they cost, through
        fentry/fexit and through kprobes, is in the README's "Performance" part of "Tracing
        hotplug live" (measured by scripts/bench_trace.py), far above the 2 % budget of the
        default probes.
    :param fentry: allow fentry/fexit for the walkers that have them (else kprobes only).
    """

    def __init__(
        self,
        windows: list[Window] | None = None,
        c1_sections: set[int] | None = None,
        max_windows: int = 64,
        kallsyms_text: str | None = None,
        hot_walkers: bool = False,
        fentry: bool = True,
    ) -> None:
        self.hot_walkers = hot_walkers
        self.fentry = fentry
        self.fentry_off: list[str] = [] if fentry else ["disabled (--kprobes-only)"]
        #: What bcc/clang/the verifier printed: "compile", and per failed attach.
        self.logs: dict[str, str] = {}
        self.windows = list(windows or [])
        self.c1_sections = set(c1_sections or ())
        self.max_windows = max_windows
        self.kallsyms_text = kallsyms_text if kallsyms_text is not None else read_or_empty(
            "/proc/kallsyms"
        )
        self.cflags = [f"-I{bpf_dir()}", *detect_cflags(self.kallsyms_text, max_windows)]
        self.report = AttachReport()
        self.lost = 0
        self._bpf: Any = None
        self._links: Links | None = None
        self._held: list[Event] = []
        self._on_event: Callable[[Event], None] = lambda ev: None
        # bcc's ksym() caches /proc/kallsyms once per process: modules loaded later (the bad
        # walker) would be named after the ftrace trampoline below them. Ours re-reads.
        self.ksyms = KernelSymbols(
            kallsyms=self.kallsyms_text, modules=read_or_empty("/proc/modules")
        )

    def source(self) -> str:
        """The exact C compiled: the -D flags, the headers and the program."""
        return source_text(self.cflags)

    def start(
        self, on_event: Callable[[Event], None], stop: Callable[[], int | None] = lambda: None,
        progress: Callable[[str], None] = lambda step: None,
    ) -> AttachReport:
        """Compile, attach, seed the maps, open the perf buffer.

        :param stop: polled while compiling and between attaches; a signal number makes
            start detach what it attached and raise :class:`.attaching.StartInterrupted` (a
            compile is abandoned at once: it holds nothing in the kernel but maps of this
            process).
        :param progress: told ``"compiling"`` and ``"attaching"`` as they begin.
        :raises ProbeError: bcc missing, kprobes disabled, no kernel headers, compile
            failure, or a required probe missing or not attachable.
        """
        try:
            from bcc import BPF
        except ImportError as e:
            raise ProbeError(f"bcc is not installed (python3-bpfcc): {e}") from None
        planned = self._plan(BPF)
        progress("compiling")
        built = compile_tracer(_one_by_one(BPF), self.cflags, not self.fentry_off, stop,
                               self.logs)
        if built.fentry_off:
            self.fentry_off = [built.fentry_off]
        self._bpf, self.cflags = built.bpf, built.cflags
        self.logs["compile"] = built.log
        self.report.fentry_off = list(self.fentry_off)
        progress("attaching")
        self._links = Links(self._bpf, self.report, self.logs)
        try:
            self._links.attach_all(planned, not self.fentry_off, stop)
            self._seed()
        except BaseException:
            self.close()
            raise
        self._open_perf_buffer(on_event)
        return self.report

    def _plan(self, bcc_bpf: Any) -> list[probe_points.Planned]:
        """Check what the system offers, decide the probe points; the skipped ones go to
        the report. :raises ProbeError: something the tracer cannot do without."""
        if self.kallsyms_text and not re.search(r"^0*[1-9a-f]", self.kallsyms_text, re.M):
            raise ProbeError("/proc/kallsyms shows no addresses (run as root)")
        for why in (kprobes_disabled(), headers_missing()):
            if why:
                raise ProbeError(why)
        if self.fentry:
            self.fentry_off = fentry_blockers(
                self.kallsyms_text, os.path.exists("/sys/kernel/btf/vmlinux"), bcc_bpf)
        planned, skipped = probe_points.plan(
            self.kallsyms_text, read_or_empty("/sys/kernel/debug/kprobes/blacklist"),
            hot=self.hot_walkers,
        )
        for s in skipped:
            self.report.skipped[s.spec.function] = s.reason
            self.report.roles[s.spec.function] = s.spec.role
        missing = [s.spec.function for s in skipped if s.spec.required]
        if missing:
            raise ProbeError(f"required probe points missing: {', '.join(missing)}")
        return planned

    def _open_perf_buffer(self, on_event: Callable[[Event], None]) -> None:
        self._on_event = on_event

        def _cb(cpu: int, data: Any, size: int) -> None:
            raw = ctypes.cast(data, ctypes.POINTER(RawEvent)).contents
            self._held.append(decode(raw))

        def _lost(count: int) -> None:
            self.lost += count

        self._bpf["events"].open_perf_buffer(_cb, page_cnt=256, lost_cb=_lost)

    def pause(self) -> None:
        """Detach every probe but keep the program and its maps (for scripts/bench_trace.py:
        the same compiled program measured on and off, without recompiling)."""
        if self._links is not None:
            self._links.pause()

    def resume(self) -> None:
        """Attach again what :meth:`pause` detached."""
        if self._links is not None:
            self._links.resume()

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
        if self.c1_sections:
            hull = self._bpf["c1_hull"]
            hull[ctypes.c_int(0)] = hull.Leaf(min(self.c1_sections), max(self.c1_sections) + 1)

    def poll(self, timeout_ms: int = 200) -> None:
        """Read the perf buffers; hand over, in time order, the events older than
        :data:`REORDER_NS`.

        Each CPU has its own buffer: a thread that migrates between memremap_pages() and
        memmap_init_zone_device()'s return can have its later event read first, and the
        window model must see them in the order they happened (bpf_ktime_get_ns() is
        CLOCK_MONOTONIC, the clock of time.monotonic_ns()).
        """
        self._bpf.perf_buffer_poll(timeout=timeout_ms)
        self._release(time.monotonic_ns() - REORDER_NS)

    def drain(self) -> None:
        """Read what is left and hand over every held event (before :meth:`close`)."""
        self._bpf.perf_buffer_poll(timeout=0)
        self._release(None)

    def _release(self, upto: int | None) -> None:
        self._held.sort(key=lambda e: e.ts_ns)
        n = len(self._held) if upto is None else bisect.bisect_right(
            [e.ts_ns for e in self._held], upto)
        out, self._held = self._held[:n], self._held[n:]
        for ev in out:
            self._on_event(ev)

    def stats(self) -> dict[str, int]:
        """The per-CPU counters, summed; ``calls_<walker>`` per walker probe, and
        ``walker_calls`` their total."""
        st = self._bpf["stats"]
        out = {name: int(sum(st[ctypes.c_int(i)])) for i, name in enumerate(STAT_NAMES)}
        out["walker_calls"] = 0
        for w in Walker:
            n = int(sum(st[ctypes.c_int(len(STAT_NAMES) + w.value)]))
            out["walker_calls"] += n
            if n:
                out[f"calls_{w.function}"] = n
        return out

    def stack(self, stack_id: int) -> list[str]:
        """Symbolised kernel stack of a walker hit (innermost first)."""
        if stack_id < 0 or self._bpf is None:
            return []
        try:
            addrs = list(self._bpf["stacks"].walk(stack_id))
        except KeyError:
            return []
        return self.ksyms.stack([int(a) for a in addrs])

    def current_windows(self) -> list[Window]:
        """The window slots as the kernel holds them now."""
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
