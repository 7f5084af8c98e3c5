"""Lab tests of ``subsecinspect trace`` (marker ``lab``): one traced session per kernel.

In a guest of the ``kmem`` scenario (1 GiB NVDIMM; hot-added memory stays offline):

1. namespace A (fsdax --map=dev 192M) is created BEFORE the tracer: its altmap reserve
   (C5) must reach the BPF map through the seed (a live classification);
2. ``subsecinspect trace --seed --json`` starts;
3. the bad walker (tests/kmod/bad_walker) loops over the range of namespace B and reads
   A's reserve PFN; B (fsdax --map=dev 192M) is created while it runs: C4 and C5 alarms
   with the walker's stack;
4. all namespaces are destroyed; a ``cat /proc/kpageflags`` loop runs while the kmem
   stages of the scenario hot-add, online and (then) offline memory: no alarm;
5. SIGTERM: the tracer detaches, prints its summary, and kprobe_events holds no bcc probe.

Ground truth: /proc/iomem and ``ndctl list`` while the namespaces exist, the scenario's
declared kmem layout, and the altmap arithmetic (kernel-semantics.md §2.3-2.6).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from bpfstate import guest_state

from lab import kmod, ndctl
from lab.scenarios import KMEM, apply_stage, check_layout, parse_iomem

pytestmark = pytest.mark.lab

PFN_A = 0x100000  # namespace A: the first 192M of the region at 0x100000000
PFN_B = 0x10C000  # namespace B: right after A
NS_PAGES = 192 * 256
TRACE = "python3 -m subsecinspect trace --seed --hot-walkers --json -d 1200"
NS_BYTES = NS_PAGES * 4096


@dataclass
class Session:
    kernel: str
    records: list[dict[str, Any]]
    stderr: str
    iomem_with_b: str
    ndctl_with_b: str
    kmem_layout_errors: list[str]
    kprobe_events_after: str
    walker_reads: int
    bpf_added: dict[str, Any]  # kprobes / BPF programs left over, vs. before the tracer
    timings: dict[str, float] = field(default_factory=dict)

    def of(self, type_: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] == type_]

    def lifecycle(self, event: str, **match: Any) -> list[dict[str, Any]]:
        return [r for r in self.of("lifecycle") if r["event"] == event
                and all(r.get(k) == v for k, v in match.items())]

    @property
    def summary(self) -> dict[str, Any]:
        s = self.of("summary")
        assert len(s) == 1, f"no summary line; stderr:\n{self.stderr}"
        return s[0]

    @property
    def attach(self) -> dict[str, Any]:
        return self.of("attach")[0]


def _run(vm: Any, cmd: str, timeout: float = 120) -> str:
    r = vm.run(cmd, timeout=timeout)
    assert r.rc == 0, f"{cmd}: rc={r.rc}\n{r.stdout}{r.stderr}"
    return str(r.stdout)


def _run_session(vm: Any, kernel: str, ko: Path) -> Session:
    t: dict[str, float] = {}
    before = guest_state(vm)
    vm.put(ko, "/tmp/bad_walker.ko")
    _run(vm, ndctl.reset_labels())
    _run(vm, ndctl.create_namespace("fsdax", "dev", NS_BYTES, "A"))
    t0 = time.monotonic()
    # $! must be python itself (not a subshell) for the SIGTERM below to reach the tracer
    h = vm.send(f"cd /tmp; {TRACE} > /tmp/t.jsonl 2> /tmp/t.err & echo $! > /tmp/t.pid; wait")
    for _ in range(400):
        if vm.run("grep -q '\"attach\"' /tmp/t.jsonl", timeout=30).rc == 0:
            break
        # (the pid file appears a moment after send(): no pid file yet is not an exit)
        if vm.run("[ ! -s /tmp/t.pid ] || kill -0 $(cat /tmp/t.pid)", timeout=30).rc != 0:
            pytest.fail("tracer exited early:\n" + vm.run("cat /tmp/t.err").stdout)
        time.sleep(2)
    t["seed_compile_attach_s"] = time.monotonic() - t0
    _run(vm, f"insmod /tmp/bad_walker.ko pfn_start={PFN_B:#x} pfn_count={NS_PAGES:#x} "
             f"step=0x400 reserve_pfn={PFN_A:#x} reserve_every=50 delay_us=100")
    _run(vm, ndctl.create_namespace("fsdax", "dev", NS_BYTES, "B"))
    iomem = _run(vm, "cat /proc/iomem")
    ns_list = _run(vm, "ndctl list -N")
    _run(vm, "sleep 1")
    reads = int(_run(vm, "cat /sys/module/bad_walker/parameters/reads"))
    _run(vm, "rmmod bad_walker")
    _run(vm, ndctl.destroy_namespace())
    _run(vm, "rm -f /tmp/stop; (while [ ! -e /tmp/stop ]; do cat /proc/kpageflags >/dev/null; "
             "done) >/dev/null 2>&1 & echo $! > /tmp/kpf.pid")
    errors = []
    for stage in KMEM.stages:
        errors += check_layout(apply_stage(vm, stage), KMEM)
    _run(vm, "daxctl offline-memory dax0.0")
    _run(vm, "touch /tmp/stop; while kill -0 $(cat /tmp/kpf.pid) 2>/dev/null; do sleep 0.2; "
             "done; sleep 1")
    pid = json.loads(_run(vm, "grep '\"attach\"' /tmp/t.jsonl"))["pid"]
    assert _run(vm, "cat /tmp/t.pid").strip() == str(pid)
    t1 = time.monotonic()
    _run(vm, f"kill -TERM {pid}")
    vm.wait(h, timeout=300)
    _run(vm, f"! kill -0 {pid} 2>/dev/null")
    t["detach_s"] = time.monotonic() - t1
    out = _run(vm, "cat /tmp/t.jsonl")
    return Session(
        kernel=kernel,
        records=[json.loads(ln) for ln in out.splitlines() if ln.strip()],
        stderr=_run(vm, "cat /tmp/t.err"),
        iomem_with_b=iomem,
        ndctl_with_b=ns_list,
        kmem_layout_errors=errors,
        kprobe_events_after=_run(vm, "cat /sys/kernel/debug/tracing/kprobe_events"),
        walker_reads=reads,
        bpf_added=guest_state(vm).added_since(before),
        timings=t,
    )


@pytest.fixture(scope="module")
def session(kernel_id: str, boot_scenario: Any) -> Iterator[Session]:
    ko = kmod.build(kernel_id, "bad_walker")
    with boot_scenario(KMEM, kernel_id, name=f"trace-{kernel_id}") as vm:
        s = _run_session(vm, kernel_id, ko)
        out = vm.run_dir / "trace.jsonl"  # kept with the console log for inspection
        out.write_text("".join(json.dumps(r) + "\n" for r in s.records))
    print(f"trace on {kernel_id}: {s.timings}; {len(s.records)} records -> {out}")
    print("\n".join(ln for ln in s.stderr.splitlines() if ln.startswith("trace:")))
    for r in s.of("alarm"):
        print(f"  ALARM {r['comm']} {r['walker']} pfn={r['pfn']:#x} {r['window_class']} "
              f"[{r['window_start_pfn']:#x},{r['window_end_pfn']:#x}) {r['phase']} "
              f"stack={r['stack'][:3]}")
    print("  summary:", json.dumps(s.of("summary")))
    yield s


def _ns_range(iomem: str, name: str) -> tuple[int, int]:
    """[start_pfn, end_pfn) of a namespace from /proc/iomem."""
    ents = [e for e in parse_iomem(iomem) if e.name == name]
    assert len(ents) == 1, (name, iomem)
    return ents[0].start >> 12, (ents[0].end + 1) >> 12


def test_attach_report(session: Session) -> None:
    a = session.attach
    for fn in ("memremap_pages", "memmap_init_zone_device", "memunmap_pages", "get_dev_pagemap",
               "stable_page_flags"):  # --hot-walkers
        assert fn in a["attached"], a
    assert set(a["attached"]).isdisjoint(a["skipped"])
    if not a["fentry_off"]:  # BTF + trampolines + bcc kfunc support: the per-PFN walkers
        assert a["attached"]["stable_page_flags"].endswith("(fentry)"), a
        if "pfn_to_online_page" in a["attached"]:  # a function since v5.12
            assert a["attached"]["pfn_to_online_page"].endswith("(fentry/fexit)"), a
    assert all(why for why in a["skipped"].values())


def test_seeded_reserve_is_caught(session: Session) -> None:
    # A existed before the tracer: only the seed can know its reserve window.
    assert session.attach["seeded_windows"] >= 1
    hits = [r for r in session.of("alarm") if r["pfn"] == PFN_A]
    assert hits, session.of("alarm")
    assert {r["window_class"] for r in hits} == {"C5_DEV_DRIVER_RESERVED"}
    assert hits[0]["phase"] == "seeded" and hits[0]["comm"] == "bad_walker"
    assert (hits[0]["window_start_pfn"], hits[0]["window_end_pfn"]) == (PFN_A, PFN_A + 2)


def test_bad_walker_caught_in_c4_with_stack(session: Session) -> None:
    assert session.walker_reads > 0  # it did read struct pages (/sys/module/.../reads)
    b0, b1 = _ns_range(session.iomem_with_b, "namespace0.1")
    assert b0 == PFN_B
    hits = [r for r in session.of("alarm") if r["window_class"] == "C4_DEV_INITIALISING"]
    assert hits, session.of("alarm")
    for r in hits:
        assert r["comm"] == "bad_walker" and r["walker"] == "get_dev_pagemap"
        assert (r["window_start_pfn"], r["window_end_pfn"]) == (b0, b1)
        assert b0 <= r["pfn"] < b1
        assert r["phase"] in ("registered", "memmap_init")
        # the module was loaded after the tracer read /proc/kallsyms: still named, with it
        assert any(f.startswith("bw_read_page") and f.endswith(" [bad_walker]")
                   for f in r["stack"]), r["stack"]


def test_namespace_timeline_in_order_with_ranges(session: Session) -> None:
    b0, b1 = _ns_range(session.iomem_with_b, "namespace0.1")
    ndctl = json.loads(session.ndctl_with_b)
    sizes = {n["name"]: n["size"] for n in (ndctl if isinstance(ndctl, list) else [ndctl])}
    enter = session.lifecycle("memremap_enter", start_pfn=b0, end_pfn=b1)
    assert len(enter) == 1, session.of("lifecycle")
    pg = enter[0]["pgmap"]
    alt = enter[0]["altmap"]
    assert alt["base_pfn"] == b0 and alt["reserve"] >= 1
    first_data = b0 + alt["reserve"] + alt["free"]
    # ndctl's size is the data part: the range minus the info block and the memmap on the device
    assert (b1 - first_data) * 4096 == sizes["B"]
    steps = [
        enter[0],
        *session.lifecycle("move_pfn_range", start_pfn=b0, zone_device=True),
        # called with the whole range; it skips the altmap part (base + reserve + free) itself
        *session.lifecycle("mizd_enter", pgmap=pg, start_pfn=b0, end_pfn=b1),
        *session.lifecycle("mizd_return", pgmap=pg, start_pfn=b0, end_pfn=b1),
        *session.lifecycle("memremap_return", pgmap=pg),
        *session.lifecycle("memunmap_enter", pgmap=pg, start_pfn=b0, end_pfn=b1),
        *session.lifecycle("memunmap_return", pgmap=pg),
    ]
    assert [s["event"] for s in steps] == [
        "memremap_enter", "move_pfn_range", "mizd_enter", "mizd_return", "memremap_return",
        "memunmap_enter", "memunmap_return"]
    times = [s["time_s"] for s in steps]
    assert times == sorted(times)
    assert [w["class"] for w in steps[3]["closed"]] == ["C4_DEV_INITIALISING"]
    # A (seeded) is torn down too: its reserve window goes with memunmap_pages
    a_unmap = session.lifecycle("memunmap_enter", start_pfn=PFN_A, end_pfn=PFN_A + NS_PAGES)
    assert len(a_unmap) == 1


def test_kmem_timeline(session: Session) -> None:
    assert session.kmem_layout_errors == []
    ram = (0x108000, 0x118000)  # "System RAM (kmem)" 0x108000000-0x117ffffff (kmem scenario)
    add = session.lifecycle("add_memory", start_pfn=ram[0], end_pfn=ram[1])
    assert len(add) == 1 and add[0]["c1_sections_set"] == [33, 34]
    blocks = [(0x108000, 0x110000), (0x110000, 0x118000)]
    online = [(r["start_pfn"], r["end_pfn"]) for r in session.lifecycle("online_pages_ret", ret=0)]
    assert online == blocks
    closed = [r for r in session.lifecycle("move_pfn_range_ret", zone_device=False)]
    assert [r["c1_sections_cleared"] for r in closed] == [[33], [34]]
    offline = session.lifecycle("offline_pages_ret", ret=0)
    assert sorted((r["start_pfn"], r["end_pfn"]) for r in offline) == blocks
    t_add, t_on, t_off = add[0]["time_s"], closed[0]["time_s"], min(r["time_s"] for r in offline)
    assert t_add < t_on < t_off


def test_kpageflags_loop_raises_no_alarm(session: Session) -> None:
    st = session.summary["stats"]
    assert st["kpage_reads"] > 0  # the loop really ran while memory came and went
    assert [r for r in session.of("alarm") if r["comm"] != "bad_walker"] == []


def test_clean_detach(session: Session) -> None:
    s = session.summary
    assert s["stopped_by"] == "SIGTERM"
    assert s["kprobes_left"] == 0
    assert "_bcc_" not in session.kprobe_events_after
    assert session.bpf_added == {}  # no kprobe registered, no BPF program loaded any more
    assert s["lost_events"] == 0
    assert s["alarms"] == len(session.of("alarm"))
