"""Attaching the planned probe points of ``subsec_trace`` to a loaded bcc program.

fentry/fexit (BPF trampolines) first for the walkers that have ``kfunc__``/``kretfunc__``
programs, kprobes otherwise or when the trampoline is refused; what could not be attached
is reported with the reason, and a required probe that fails stops the tracer. Every link
made is remembered, so that :meth:`Links.pause` detaches them all and :meth:`Links.resume`
attaches the same ones again (scripts/bench_trace.py measures the same compiled program
with the probes on and off).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from subsecinspect.errors import ProbeError
from subsecinspect.probes.bcc_env import attach, captured_stderr, detach, first_error
from subsecinspect.probes.probe_points import Planned, ProbeSpec

__all__ = ("AttachReport", "Links", "StartInterrupted")


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


class Links:
    """The probes attached to one bcc ``BPF`` object.

    :param logs: where what bcc/libbpf printed for a failed attach goes
        (``"kprobe <symbol>"``, ``"fentry <function>"``).
    """

    def __init__(self, bpf: Any, report: AttachReport, logs: dict[str, str]) -> None:
        self.bpf = bpf
        self.report = report
        self.logs = logs
        self._links: list[tuple[str, str, str]] = []
        self._paused = False

    def attach_all(self, planned: list[Planned], use_fentry: bool,
                   stop: Callable[[], int | None]) -> None:
        """Attach every planned probe, in order; ``stop()`` is asked before each one.

        :raises StartInterrupted: ``stop()`` returned a signal number.
        :raises ProbeError: a required probe could not be attached.
        """
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
            why = self._attach_kprobes(p)
            if why:
                if p.spec.required:
                    raise ProbeError(f"cannot attach {p.symbol}: {why}")
                self.report.skipped[p.spec.function] = f"attach failed: {why}"
                continue
            note = f" ({p.symbol}, a gcc clone)" if p.clone else ""
            if fentry_err:
                note += f" (kprobe; fentry failed: {fentry_err})"
            self.report.attached[p.spec.function] = p.symbol + note

    def _attach_kprobes(self, p: Planned) -> str:
        """The kprobe (and kretprobe) of ``p``; ``""`` or why not."""
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
            self.logs[f"kprobe {p.symbol}"] = log.text
            return f"{e}{first_error(log.text)}"
        return ""

    def _attach_fentry(self, spec: ProbeSpec) -> str:
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
                detach(self.bpf, kind, event, fn)
            del self._links[n:]
            return f"{e}{first_error(log.text)}"
        return ""

    def _link(self, kind: str, event: str, fn: str) -> None:
        attach(self.bpf, kind, event, fn)
        self._links.append((kind, event, fn))

    def pause(self) -> None:
        """Detach every probe but keep the program and its maps."""
        if not self._paused:
            for link in reversed(self._links):
                detach(self.bpf, *link)
            self._paused = True

    def resume(self) -> None:
        """Attach again what :meth:`pause` detached."""
        if self._paused:
            links, self._links = self._links, []
            for link in links:
                self._link(*link)
            self._paused = False
