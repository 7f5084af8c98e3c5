"""SubsecTrace's attach logic against a fake bcc (subsecinspect.probes.subsec_trace).

The fake records which programs are attached; the kernel-facing checks (headers, kprobes
switch, fentry support) are replaced so that only the decisions are under test: fentry
first with the kprobe fallback, a refused required probe detaches what came before, a
signal between attaches detaches everything, pause/resume.
"""

from __future__ import annotations

import signal
import sys
import time
import types
from collections.abc import Iterator
from typing import Any

import pytest

from subsecinspect.errors import ProbeError
from subsecinspect.probes import subsec_trace
from subsecinspect.probes.attaching import StartInterrupted
from subsecinspect.probes.probe_points import PROBES
from subsecinspect.probes.subsec_trace import SubsecTrace

KALLSYMS = "".join(
    f"ffffffff81{i:06x}0 T {s.function}\n" for i, s in enumerate(PROBES)
    if s.function != "hwpoison_inject"
) + "ffffffff82000000 T bpf_trampoline_link_prog\n"


class FakeTable(dict):  # type: ignore[type-arg]
    @staticmethod
    def Leaf(*a: Any) -> tuple[Any, ...]:
        return a

    Key = Leaf

    def __setitem__(self, key: Any, value: Any) -> None:
        super().__setitem__(getattr(key, "value", key), value)

    def open_perf_buffer(self, *a: Any, **kw: Any) -> None:
        pass


class FakeBPF:
    """What SubsecTrace calls of bcc's BPF; ``refuse`` names programs whose attach fails."""

    refuse: set[str] = set()
    live: set[tuple[str, str]] = set()

    def __init__(self, text: bytes, cflags: list[str]) -> None:
        self.cflags = cflags
        self.tables: dict[str, FakeTable] = {}
        self._trace_autoload()

    def _trace_autoload(self) -> None:
        raise AssertionError("SubsecTrace must switch bcc's autoload off")

    @staticmethod
    def support_kfunc() -> bool:
        return True

    def _attach(self, kind: str, fn: str) -> None:
        if fn in self.refuse:
            raise Exception(f"Failed to attach BPF program {fn}")
        FakeBPF.live.add((kind, fn))

    def attach_kprobe(self, event: str, fn_name: str) -> None:
        self._attach("kprobe", fn_name)

    def attach_kretprobe(self, event: str, fn_name: str, maxactive: int = 0) -> None:
        self._attach("kretprobe", fn_name)

    def attach_kfunc(self, fn_name: bytes) -> None:
        self._attach("kfunc", "kfunc__" + fn_name.decode())

    def attach_kretfunc(self, fn_name: bytes) -> None:
        self._attach("kretfunc", "kretfunc__" + fn_name.decode())

    def detach_kprobe(self, event: str, fn_name: str) -> None:
        FakeBPF.live.remove(("kprobe", fn_name))

    def detach_kretprobe(self, event: str, fn_name: str) -> None:
        FakeBPF.live.remove(("kretprobe", fn_name))

    def detach_kfunc(self, fn_name: bytes) -> None:
        FakeBPF.live.remove(("kfunc", "kfunc__" + fn_name.decode()))

    def detach_kretfunc(self, fn_name: bytes) -> None:
        FakeBPF.live.remove(("kretfunc", "kretfunc__" + fn_name.decode()))

    def cleanup(self) -> None:
        FakeBPF.live.clear()

    def perf_buffer_poll(self, timeout: int = 0) -> None:
        pass

    def __getitem__(self, name: str) -> FakeTable:
        return self.tables.setdefault(name, FakeTable())


@pytest.fixture(autouse=True)
def fake_bcc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    mod = types.ModuleType("bcc")
    mod.BPF = FakeBPF  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "bcc", mod)
    monkeypatch.setattr(subsec_trace, "headers_missing", lambda: "")
    monkeypatch.setattr(subsec_trace, "kprobes_disabled", lambda: "")
    monkeypatch.setattr(subsec_trace, "fentry_blockers", lambda *a: [])
    FakeBPF.refuse, FakeBPF.live = set(), set()
    yield


def _tracer(**kw: Any) -> SubsecTrace:
    return SubsecTrace(kallsyms_text=KALLSYMS, **kw)


def test_hot_walkers_go_through_fentry_and_the_rest_through_kprobes() -> None:
    t = _tracer(hot_walkers=True)
    rep = t.start(lambda ev: None)
    assert rep.attached["pfn_to_online_page"] == "pfn_to_online_page (fentry/fexit)"
    assert rep.attached["stable_page_flags"] == "stable_page_flags (fentry)"
    assert rep.attached["memremap_pages"] == "memremap_pages"
    assert ("kfunc", "kfunc__pfn_to_online_page") in FakeBPF.live
    assert ("kprobe", "on_pfn_to_online_page") not in FakeBPF.live  # never both
    assert "-DSUBSEC_FENTRY=1" in t.cflags
    t.close()
    assert FakeBPF.live == set()


def test_refused_fexit_falls_back_to_the_kprobe_pair_and_leaves_no_fentry() -> None:
    FakeBPF.refuse = {"kretfunc__pfn_to_online_page"}
    rep = _tracer(hot_walkers=True).start(lambda ev: None)
    assert "kprobe; fentry failed" in rep.attached["pfn_to_online_page"]
    assert ("kfunc", "kfunc__pfn_to_online_page") not in FakeBPF.live
    assert {("kprobe", "on_pfn_to_online_page"),
            ("kretprobe", "on_pfn_to_online_page_ret")} <= FakeBPF.live


def test_hot_walkers_off_by_default() -> None:
    rep = _tracer().start(lambda ev: None)
    assert "--hot-walkers" in rep.skipped["pfn_to_online_page"]
    assert not any("pfn_to_online_page" in fn for _, fn in FakeBPF.live)


def test_refused_required_probe_detaches_what_was_attached_before() -> None:
    FakeBPF.refuse = {"on_memunmap_pages_ret"}
    with pytest.raises(ProbeError, match="cannot attach memunmap_pages"):
        _tracer().start(lambda ev: None)
    assert FakeBPF.live == set()


def test_signal_between_attaches_detaches_everything() -> None:
    calls = []

    def stop() -> int | None:
        calls.append(1)
        return signal.SIGINT if len(calls) > 3 else None

    with pytest.raises(StartInterrupted) as e:
        _tracer().start(lambda ev: None, stop)
    assert e.value.signum == signal.SIGINT
    assert FakeBPF.live == set()


def test_pause_and_resume_reattach_the_same_programs() -> None:
    t = _tracer(hot_walkers=True)
    t.start(lambda ev: None)
    before = set(FakeBPF.live)
    t.pause()
    assert FakeBPF.live == set()
    t.resume()
    assert FakeBPF.live == before


def test_events_of_several_cpu_buffers_are_handed_over_in_time_order() -> None:
    """A thread that migrated between two events can have the later one read first."""
    t = _tracer()
    seen: list[int] = []
    t.start(lambda ev: seen.append(ev.ts_ns))
    now = time.monotonic_ns()
    old = now - 2 * subsec_trace.REORDER_NS
    # CPU1's buffer read before CPU0's: mizd_return (old + 5) before memremap_enter (old)
    t._held += [types.SimpleNamespace(ts_ns=old + 5), types.SimpleNamespace(ts_ns=now),
                types.SimpleNamespace(ts_ns=old)]
    t.poll()
    assert seen == [old, old + 5]  # the recent one is held back
    t.drain()
    assert seen == [old, old + 5, now]
