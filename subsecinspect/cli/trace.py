"""``subsecinspect trace``: live bcc probes on persistent-memory hotplug and PFN walkers.

Seeds the unsafe PFN windows from a classification of the live kernel (unless
``--no-seed``), loads ``bpf/subsec_trace.bpf.c``, and shows the hotplug timeline and the
alarms (a walker handed a PFN whose struct page is not initialised) until ``-d`` seconds
have passed, Ctrl-C or SIGTERM; then detaches every probe and prints a summary.
Registered in :mod:`subsecinspect.cli.app` as the ``trace`` command. Imports neither bcc nor
drgn at module level.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections import deque
from typing import Annotated, Any

import typer
from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.text import Text

from subsecinspect.errors import OptionError, ProbeError, SubsecinspectError
from subsecinspect.probes.attaching import StartInterrupted

__all__ = ("leftover_kprobes", "seed_from_live", "trace")

err = Console(stderr=True, soft_wrap=True)
_STACK_LINES = 8


def leftover_kprobes(pid: int) -> list[str]:
    """kprobe_events lines that bcc created for ``pid`` (``p_<fn>_bcc_<pid>``) and still exist."""
    for path in ("/sys/kernel/debug/tracing/kprobe_events", "/sys/kernel/tracing/kprobe_events"):
        try:
            with open(path) as f:
                return [ln.strip() for ln in f if f"_bcc_{pid} " in ln or ln.strip().endswith(
                    f"_bcc_{pid}")]
        except OSError:
            continue
    return []


def seed_from_live(
    vmlinux: str | None, debuginfo: str = "auto", system_map: str | None = None
) -> tuple[list[Any], set[int], int, str]:
    """Classify the live kernel and turn C1/C4/C4b/C5 ranges into windows.

    :return: ``(windows, c1_sections, section_shift, release)``
    """
    from subsecinspect.classify.decide import classify
    from subsecinspect.kernel.read import read_snapshot
    from subsecinspect.probes.windows import seed
    from subsecinspect.target import open_target

    prog, info = open_target(None, vmlinux, debuginfo, system_map)
    snap = read_snapshot(prog, info)
    shift = snap.kernel.section_size_bits - snap.kernel.page_shift
    wins, c1 = seed(classify(snap).ranges, shift)
    return wins, c1, shift, snap.kernel.release


class _Interrupted(Exception):
    """SIGINT/SIGTERM before anything was attached (seeding)."""

    def __init__(self, signum: int, phase: str) -> None:
        super().__init__(signum, phase)
        self.signum, self.phase = signum, phase


class _Stop:
    """SIGINT/SIGTERM for the whole command.

    While nothing is attached (seeding) a signal raises :class:`_Interrupted` at once; while
    bcc compiles, attaches and traces (:meth:`deferred`) it only sets a flag: the attach
    loop or the poll loop sees it, detaches every probe, and ends cleanly.
    """

    def __init__(self) -> None:
        self.signal: int | None = None
        self.phase = "starting"
        self._defer = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Stop:
        for s in (signal.SIGINT, signal.SIGTERM):
            self._old[s] = signal.signal(s, self._handler)
        return self

    def _handler(self, signum: int, frame: object) -> None:
        if self.signal is None:
            self.signal = signum
        if not self._defer:
            raise _Interrupted(signum, self.phase)

    def deferred(self, phase: str) -> _Stop:
        self.phase, self._defer = phase, True
        if self.signal is not None:  # arrived between two phases
            raise _Interrupted(self.signal, phase)
        return self

    def __exit__(self, *exc: object) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)


def trace(
    duration: Annotated[
        float | None, typer.Option("-d", "--duration", help="stop after SECONDS (default: Ctrl-C)")
    ] = None,
    json_: Annotated[bool, typer.Option("--json", help="JSON lines on stdout")] = False,
    print_bpf: Annotated[
        bool, typer.Option("--print-bpf", help="print the exact C and -D flags, then exit")
    ] = False,
    seed: Annotated[
        bool,
        typer.Option("--seed/--no-seed", help="seed windows older than the tracer from a "
                     "classification of the live kernel (drgn; needs debug info)"),
    ] = True,
    vmlinux: Annotated[
        str | None, typer.Option("-s", "--vmlinux", help="vmlinux with debug info for --seed")
    ] = None,
    debuginfo: Annotated[str, typer.Option("--debuginfo", help="for --seed: auto|dwarf|btf")
                         ] = "auto",
    system_map: Annotated[str | None, typer.Option("-m", "--system-map",
                                                   help="for --seed: System.map (BTF mode)")
                          ] = None,
    hot_walkers: Annotated[
        bool,
        typer.Option("--hot-walkers", help="also probe the per-PFN walkers pfn_to_online_page "
                     "and stable_page_flags, through fentry/fexit where the kernel and bcc "
                     "allow (a probe per PFN: several times slower for walker-heavy loads; "
                     "README, Performance, measures it)"),
    ] = False,
    kprobes_only: Annotated[
        bool, typer.Option("--kprobes-only", help="never use fentry/fexit (BPF trampolines)")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="show tracebacks of errors")] = False,
    metrics: Annotated[str | None, typer.Option(
        "--metrics", help="keep this classify --format openmetrics file current while tracing "
        "(rewritten atomically after hotplug events; for node_exporter's textfile collector)",
    )] = None,
) -> None:
    """Trace persistent-memory hotplug and catch PFN walkers that touch uninitialised memmaps.

    Examples:

      subsecinspect trace                       # live view until Ctrl-C

      subsecinspect trace -d 60 --json > t.jsonl  # one minute of JSON lines, summary last

      subsecinspect trace --no-seed -d 10       # skip the drgn classification at start

      subsecinspect trace --hot-walkers -d 30    # also check every pfn_to_online_page()

      subsecinspect trace --print-bpf           # the C program and flags that would be loaded

    Exit codes: 0 when -d, Ctrl-C or SIGTERM ends the tracing (summary, probes detached);

    7 when it cannot trace (bcc, kprobes off, kernel headers, root, compile, attach);

    130/143 on SIGINT/SIGTERM before the tracing began (nothing is left attached).
    """
    stop = _Stop()
    try:
        with stop:
            code = _trace(stop, duration, json_, print_bpf, seed, (vmlinux, debuginfo, system_map),
                          hot_walkers, kprobes_only, debug, metrics)
    except SubsecinspectError as e:
        if debug:
            import traceback

            traceback.print_exc()
        err.print(f"subsecinspect: error: {e}", markup=False, highlight=False)
        raise typer.Exit(e.exit_code) from None
    except (_Interrupted, StartInterrupted) as e:
        name = signal.Signals(e.signum).name
        err.print(f"subsecinspect: error: {name} while {stop.phase}; no probe left attached",
                  markup=False, highlight=False)
        raise typer.Exit(128 + e.signum) from None
    raise typer.Exit(code)


def _trace(stop: _Stop, duration: float | None, json_: bool, print_bpf: bool, seed: bool,
           debug_info: tuple[str | None, str, str | None], hot_walkers: bool, kprobes_only: bool,
           debug: bool = False, metrics: str | None = None) -> int:
    from subsecinspect.probes.subsec_trace import SubsecTrace
    from subsecinspect.probes.timeline import Summary, event_record, event_text
    from subsecinspect.probes.windows import WindowModel

    if duration is not None and duration <= 0:
        raise OptionError("-d/--duration must be positive")
    if print_bpf:
        sys.stdout.write(SubsecTrace().source())
        return 0
    if os.geteuid() != 0:
        raise ProbeError("trace needs root (BPF programs, kprobes, /proc/kallsyms addresses)")
    stop.phase = "seeding"
    wins: list[Any] = []
    c1: set[int] = set()
    shift = 15  # x86_64: SECTION_SIZE_BITS 27 - PAGE_SHIFT 12; replaced by the snapshot's
    if seed:
        err.print("trace: seeding from a live classification", highlight=False)
        t = time.monotonic()
        wins, c1, shift, _ = seed_from_live(*debug_info)
        err.print(f"trace: seeded {len(wins)} windows and {len(c1)} C1 sections from a live "
                  f"classification in {time.monotonic() - t:.1f}s", highlight=False)
    model = WindowModel.seeded(wins, c1, shift)
    from subsecinspect.cli.trace_metrics import live_metrics_file

    prom = live_metrics_file(metrics, *debug_info) if metrics else None
    summary = Summary()
    tracer = SubsecTrace(wins, c1, hot_walkers=hot_walkers, fentry=not kprobes_only)
    recent: deque[str] = deque(maxlen=20)
    alarms: deque[str] = deque(maxlen=6)
    t0 = [0]
    live_view = not json_ and sys.stdout.isatty()
    out = Console(soft_wrap=True)

    def emit(line: str | dict[str, Any]) -> None:
        if isinstance(line, dict):
            sys.stdout.write(json.dumps(line) + "\n")
        else:
            sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def on_event(ev: Any) -> None:
        if not t0[0]:
            t0[0] = ev.ts_ns
        summary.add(ev)
        change = model.apply(ev)
        if prom is not None and ev.kind.name != "WALKER":
            prom.mark_stale()
        stack = tracer.stack(ev.kstack) if ev.kind.name == "WALKER" else None
        if json_:
            emit(event_record(ev, t0[0], change, stack))
            return
        line = event_text(ev, t0[0], change)
        if stack:
            line += "".join(f"\n      {fr}" for fr in stack[:_STACK_LINES])
        if live_view:
            (alarms if ev.kind.name == "WALKER" else recent).append(line)
        else:
            emit(line)

    def progress(step: str) -> None:
        stop.phase = step
        err.print(f"trace: {step} ({time.monotonic() - t_start:.1f}s)", highlight=False)

    t_start = time.monotonic()
    stop.deferred("compiling")
    try:
        try:
            report = tracer.start(on_event, lambda: stop.signal, progress)
        finally:
            if debug:  # what bcc, clang and the verifier said (kept off the terminal)
                for what, text in tracer.logs.items():
                    if text.strip() and (what != "compile" or "error" in text):
                        err.print(f"---- {what}\n{text.rstrip()}", markup=False,
                                  highlight=False)
        stop.phase = "tracing"
        setup = time.monotonic() - t_start
        err.print(f"trace: attached {len(report.attached)} probe points in {setup:.1f}s"
                  f" (pid {os.getpid()})", highlight=False)
        for fn, why in sorted(report.skipped.items()):
            err.print(f"trace: not attached: {fn}: {why}", markup=False, highlight=False)
        if report.fentry_off:
            err.print(f"trace: no fentry/fexit: {'; '.join(report.fentry_off)}", markup=False,
                      highlight=False)
        if json_:
            emit({"type": "attach", "attached": report.attached, "skipped": report.skipped,
                  "fentry_off": report.fentry_off, "setup_s": round(setup, 2),
                  "pid": os.getpid(), "seeded_windows": len(wins),
                  "seeded_c1_sections": len(c1)})
        end = None if duration is None else time.monotonic() + duration
        if live_view:
            with Live(console=out, refresh_per_second=4) as live:
                while stop.signal is None and (end is None or time.monotonic() < end):
                    tracer.poll(200)
                    if prom is not None:
                        prom.refresh()
                    live.update(Group(
                        Panel(Text("\n".join(recent)), title="hotplug timeline"),
                        Panel(Text("\n".join(alarms)), title=f"alarms ({summary.alarms})"),
                    ))
        else:
            while stop.signal is None and (end is None or time.monotonic() < end):
                tracer.poll(200)
                if prom is not None:
                    prom.refresh()
        tracer.drain()
        if prom is not None:
            prom.refresh(force=True)
        stats = tracer.stats()
        windows_now = len(tracer.current_windows())
    finally:
        tracer.close()
    summary.lost = tracer.lost
    left = leftover_kprobes(os.getpid())
    extra = {"stats": stats, "windows_at_exit": windows_now, "kprobes_left": len(left),
             "stopped_by": signal.Signals(stop.signal).name if stop.signal else "duration"}
    rec = summary.record(extra)
    if json_:
        emit(rec)
    else:
        err.print(
            f"trace: {rec['events']} events, {rec['alarms']} alarms, {rec['notes']} notes, "
            f"{rec['lost_events']} lost; walker calls {stats['walker_calls']}, window hits "
            f"{stats['window_hits']}; {len(left)} kprobes left; stopped by {extra['stopped_by']}",
            highlight=False,
        )
    return 0
