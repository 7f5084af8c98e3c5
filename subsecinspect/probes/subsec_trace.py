"""Front end of ``bpf/subsec_trace.bpf.c``: compile, attach, seed, poll, detach (bcc).

Load the program with ``BPF(src_file=..., cflags=[-D...])`` (settings are -D flags, never
text substitution; :meth:`SubsecTrace.source` is the exact C that is compiled), attach
only the probe points the running kernel has (:mod:`.kallsyms`), write the unsafe windows
known at start into the maps, and stream events from the perf buffer.

Needs root, bcc (Debian's python3-bpfcc) and the running kernel's headers. bcc is
imported lazily, so the rest of the package works without it.
"""

from __future__ import annotations

import bisect
import ctypes
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from subsecinspect.errors import ProbeError
from subsecinspect.probes import kallsyms
from subsecinspect.probes.bcc_env import (
    CompileAbandoned,
    attach,
    captured_stderr,
    compile_abandonable,
    detach,
    detect_cflags,
    fentry_blockers,
    first_error,
    headers_missing,
    kprobes_disabled,
)
from subsecinspect.probes.events import Event, RawEvent, decode
from subsecinspect.probes.ksyms import KernelSymbols, read_or_empty
from subsecinspect.probes.windows import Window, map_contents

__all__ = (
    "REORDER_NS",
    "STAT_NAMES",
    "AttachReport",
    "StartInterrupted",
    "SubsecTrace",
    "bpf_dir",
)

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


@dataclass
class AttachReport:
    """What was attached (``function -> symbol``) and what not (``function -> reason``)."""

    attached: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    roles: dict[str, str] = field(default_factory=dict)
    #: Why fentry/fexit were not used (``[]``: the walkers that have them use them).
    fentry_off: list[str] = field(default_factory=list)


class StartInterrupted(Exception):
    """A signal arrived while the program was compiled or attached; nothing is left attached."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


class SubsecTrace:
    """One loaded ``subsec_trace`` program. Use as a context manager; :meth:`close` detaches.

    :param hot_walkers: attach the per-PFN walkers (:attr:`ProbeSpec.hot`), through
        fentry/fexit where possible. Off by default: scripts/bench_trace.py measured the
        /proc/kpageflags + compaction load 2.4x slower through fentry/fexit and 5-6x through
        kprobes (6.12, TCG), far above the 2 % budget of the default probes.
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
        self._links: list[tuple[str, str, str]] = []
        self._held: list[Event] = []
        self._on_event: Callable[[Event], None] = lambda ev: None
        self._paused = False
        # bcc's ksym() caches /proc/kallsyms once per process: modules loaded later (the bad
        # walker) would be named after the ftrace trampoline below them. Ours re-reads.
        self.ksyms = KernelSymbols(
            kallsyms=self.kallsyms_text, modules=read_or_empty("/proc/modules")
        )

    def source(self) -> str:
        """The exact C compiled: the -D flags, the shared header and the program."""
        d = bpf_dir()
        head = "\n".join(f"// cflag: {f}" for f in self.cflags)
        return (
            f"{head}\n// ---- {d / _HDR}\n{(d / _HDR).read_text()}"
            f"\n// ---- {d / _SRC}\n{(d / _SRC).read_text()}"
        )

    def start(
        self, on_event: Callable[[Event], None], stop: Callable[[], int | None] = lambda: None,
        progress: Callable[[str], None] = lambda step: None,
    ) -> AttachReport:
        """Compile, attach, seed the maps, open the perf buffer.

        :param stop: polled while compiling and between attaches; a signal number makes
            start detach what it attached and raise :class:`StartInterrupted` (a compile is
            abandoned at once: it holds nothing in the kernel but maps of this process).
        :param progress: told ``"compiling"`` and ``"attaching"`` as they begin.
        :raises ProbeError: bcc missing, kprobes disabled, no kernel headers, compile
            failure, or a required probe missing or not attachable.
        """
        try:
            from bcc import BPF  # type: ignore[import-not-found]
        except ImportError as e:
            raise ProbeError(f"bcc is not installed (python3-bpfcc): {e}") from None
        if self.kallsyms_text and not re.search(r"^0*[1-9a-f]", self.kallsyms_text, re.M):
            raise ProbeError("/proc/kallsyms shows no addresses (run as root)")
        for why in (kprobes_disabled(), headers_missing()):
            if why:
                raise ProbeError(why)
        if self.fentry:
            self.fentry_off = fentry_blockers(
                self.kallsyms_text, os.path.exists("/sys/kernel/btf/vmlinux"), BPF)
        use_fentry = not self.fentry_off
        planned, skipped = kallsyms.plan(
            self.kallsyms_text, read_or_empty("/sys/kernel/debug/kprobes/blacklist"),
            hot=self.hot_walkers,
        )
        for s in skipped:
            self.report.skipped[s.spec.function] = s.reason
            self.report.roles[s.spec.function] = s.spec.role
        missing = [s.spec.function for s in skipped if s.spec.required]
        if missing:
            raise ProbeError(f"required probe points missing: {', '.join(missing)}")
        progress("compiling")

        class _OneByOne(BPF):  # type: ignore[misc, valid-type]
            def _trace_autoload(self) -> None:
                """No autoload: kfunc__* programs are attached one by one below."""

        src = str(bpf_dir() / _SRC).encode()
        fentry_flag = ["-DSUBSEC_FENTRY=1"] if use_fentry else []
        while True:
            try:
                flags = self.cflags + fentry_flag
                with captured_stderr() as log:
                    self._bpf = compile_abandonable(
                        lambda f=flags: _OneByOne(src_file=src, cflags=f), stop)
                break
            except CompileAbandoned as e:
                raise StartInterrupted(e.signum) from None
            except Exception as e:
                self.logs["compile"] = log.text
                why = f"{e}{first_error(log.text)}"
                if not fentry_flag:
                    raise ProbeError(f"BPF program failed to compile: {why}") from None
                # the kfunc programs are the newest part: once more without them
                fentry_flag, use_fentry = [], False
                self.fentry_off = [f"compile with -DSUBSEC_FENTRY=1 failed: {why}"]
        self.cflags += fentry_flag
        self.logs["compile"] = log.text
        self.report.fentry_off = list(self.fentry_off)
        progress("attaching")
        try:
            self._attach_all(planned, use_fentry, stop)
            self._seed()
        except BaseException:
            self.close()
            raise

        self._on_event = on_event

        def _cb(cpu: int, data: Any, size: int) -> None:
            raw = ctypes.cast(data, ctypes.POINTER(RawEvent)).contents
            self._held.append(decode(raw))

        def _lost(count: int) -> None:
            self.lost += count

        self._bpf["events"].open_perf_buffer(_cb, page_cnt=256, lost_cb=_lost)
        return self.report

    def _attach_all(self, planned: list[kallsyms.Planned], use_fentry: bool,
                    stop: Callable[[], int | None]) -> None:
        for p in planned:
            sig = stop()
            if sig:
                raise StartInterrupted(sig)
            self.report.roles[p.spec.function] = p.spec.role
            fentry_err = ""
            if use_fentry and p.spec.fentry and not p.clone and not p.module:
                fentry_err = self._attach_fentry(p.spec)
                if not fentry_err:
                    how = "fentry/fexit" if p.spec.fexit else "fentry"
                    self.report.attached[p.spec.function] = f"{p.symbol} ({how})"
                    continue
            try:
                # The kretprobe first: kprobes on one address run newest first, so the entry
                # program then runs before the kretprobe swaps the return address, and its
                # stack unwinds past the caller (before v5.13 the unwinder stops at
                # kretprobe_trampoline).
                with captured_stderr() as log:
                    if p.spec.ret:
                        self._link("kretprobe", p.symbol, p.spec.ret)
                    if p.spec.entry:
                        self._link("kprobe", p.symbol, p.spec.entry)
            except Exception as e:
                why = f"{e}{first_error(log.text)}"
                self.logs[f"kprobe {p.symbol}"] = log.text
                if p.spec.required:
                    raise ProbeError(f"cannot attach {p.symbol}: {why}") from None
                self.report.skipped[p.spec.function] = f"attach failed: {why}"
                continue
            note = f" ({p.symbol}, a gcc clone)" if p.clone else ""
            if fentry_err:
                note += f" (kprobe; fentry failed: {fentry_err})"
            self.report.attached[p.spec.function] = p.symbol + note

    def _attach_fentry(self, spec: kallsyms.ProbeSpec) -> str:
        """Attach kfunc__/kretfunc__<function>; ``""`` or why not (then nothing is left)."""
        n = len(self._links)
        try:
            with captured_stderr() as log:
                self._link("kfunc", spec.function, spec.function)
                if spec.fexit:
                    self._link("kretfunc", spec.function, spec.function)
        except Exception as e:
            self.logs[f"fentry {spec.function}"] = log.text
            for kind, event, fn in self._links[n:]:
                self._unlink(kind, event, fn)
            del self._links[n:]
            return f"{e}{first_error(log.text)}"
        return ""

    def _link(self, kind: str, event: str, fn: str) -> None:
        attach(self._bpf, kind, event, fn)
        self._links.append((kind, event, fn))

    def _unlink(self, kind: str, event: str, fn: str) -> None:
        detach(self._bpf, kind, event, fn)

    def pause(self) -> None:
        """Detach every probe but keep the program and its maps (for scripts/bench_trace.py:
        the same compiled program measured on and off, without recompiling)."""
        if not self._paused:
            for link in reversed(self._links):
                self._unlink(*link)
            self._paused = True

    def resume(self) -> None:
        """Attach again what :meth:`pause` detached."""
        if self._paused:
            links, self._links = self._links, []
            for link in links:
                self._link(*link)
            self._paused = False

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
        from subsecinspect.probes.events import Walker

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
