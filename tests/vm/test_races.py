"""Lab tests: live races. ``classify /proc/kcore`` in a loop while namespaces and kmem churn.

One boot per kernel (1 GiB RAM, a labelled 1 GiB NVDIMM; the kmem scenario's kernel
arguments, so hot-added blocks stay offline until the churn onlines them). In the guest
(vm-images/lab/churn.py):

1. *deterministic races* (first, on a fresh layout): the reader is held between its first
   read and the live guard's re-read (``churn inject``) while a namespace is created (above
   the highest section present at the first read), kmem blocks are onlined, and the
   namespace is destroyed: the changed ranges must be IN_FLUX;
2. *natural races*: a permanent fsdax namespace P, then ``RUNS`` runs of ``python3 -m
   subsecinspect classify /proc/kcore --json`` while a second process cycles through
   ``ndctl create-namespace`` / ``destroy-namespace`` (fsdax and devdax, ``--map=mem`` and
   ``--map=dev``) and kmem (``daxctl reconfigure-device --mode=system-ram``, blocks onlined
   and offlined through sysfs, ``--mode=devdax`` hot-removes them), logging every operation
   with CLOCK_MONOTONIC times; during the last ``FLAP_RUNS`` runs it only flaps the kmem
   blocks offline/online. How many runs see IN_FLUX by natural timing is printed and
   recorded, not asserted: a classify run is ~10 s under TCG and the window between its
   read and re-read ~0.1-0.5 s, so only some runs see a change (0-3 of 5 per kernel).

Checked for every run (vm-images/lab/racecheck.py): exit 0, or a documented one-line
error; no traceback; the document is internally consistent; what is not IN_FLUX is
plausible against the churn log of that moment; IN_FLUX only where the churn worked. The
guest's dmesg gets no WARN/BUG/Oops/bad page/KASAN line during all this.

Marker ``lab``; parametrised over the kernels of the matrix (``LAB_KERNELS`` narrows it).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from classdoc import PAGE, PAGES_PER_SECTION

from lab import images
from lab.churn import PERMANENT
from lab.layout import GuestStep, Scenario
from lab.racecheck import (
    Life,
    Touch,
    class_spans,
    doc_problems,
    in_flux_spans,
    lives,
    plausibility_problems,
)
from lab.scenarios import KMEM, Nvdimm, observe

pytestmark = pytest.mark.lab

RUNS = 5
#: The last FLAP_RUNS runs race only with offline/online flapping of kmem blocks (fast
#: sysfs writes, the densest churn the lab has): the natural-timing IN_FLUX chance.
FLAP_RUNS = 2
#: The kmem scenario's setup: dax-bus device model (5.10's dax_pmem_compat), fresh labels.
_SETUP = tuple(s for s in KMEM.stage("kmem-offline").steps[:2] if isinstance(s, GuestStep))
RACES = Scenario(
    name="races",
    description="classify in a loop while namespaces and kmem churn (1 GiB NVDIMM)",
    mem=KMEM.mem,
    nvdimms=(Nvdimm(1 << 30),),
    stages=(),
    kernels=KMEM.kernels,
)
#: Kernel log lines that are a kernel warning (include/asm-generic/bug.h, mm/page_alloc.c
#: bad_page(), KASAN reports, oopses).
_WARN = re.compile(r"WARNING:|BUG:|Oops|bad page|BUG kmalloc|KASAN|general protection|"
                   r"Call Trace|RIP:", re.I)
_ERROR_LINE = re.compile(r"subsecinspect: error: \S.*")
#: Exit codes of README "Exit codes" that a live run may give under races (not 1: a bug).
_RACE_EXIT_CODES = {0, 3, 6}
_CHURN = "python3 -m lab.churn"


@dataclass(frozen=True)
class Run:
    what: str
    t0: float
    t1: float
    rc: int
    stdout: str
    stderr: str

    @property
    def doc(self) -> dict[str, Any] | None:
        return json.loads(self.stdout) if self.rc == 0 else None


@dataclass(frozen=True)
class Races:
    kernel: str
    window: tuple[int, int]
    loop: tuple[Run, ...]
    injected: tuple[tuple[Run, dict[str, Any]], ...]  # (run, the event made inside it)
    events: tuple[dict[str, Any], ...]
    new_dmesg: tuple[str, ...]
    timings: dict[str, float]

    @property
    def runs(self) -> tuple[Run, ...]:
        return (*self.loop, *(r for r, _ in self.injected))


def _json(vm: Any, cmd: str, timeout: float = 120) -> Any:
    r = vm.run(cmd, timeout=timeout)
    assert r.rc == 0, f"{cmd}: rc {r.rc}: {r.stderr[-2000:]}"
    return json.loads(r.stdout)


#: The deterministic races, run first: when K is created only P exists, so K's sections lie
#: above the highest present section the reader saw first.
_INJECTED = (
    ("inject", "create", "--mode devdax --map mem --size 400"),
    ("op", "kmem", ""),
    ("inject", "online", ""),
    ("op", "offline", ""),
    ("op", "devdax", ""),
    ("inject", "destroy", ""),
)


@pytest.fixture(scope="module")
def races(kernel_id: str, boot_scenario: Any) -> Iterator[Races]:
    t = {}
    raw: dict[str, Any] = {"injected": []}
    with boot_scenario(RACES, kernel_id, project=True) as vm:
        t0 = time.monotonic()
        for step in _SETUP:
            vm.run(step.command, timeout=step.timeout, check=True)
        pmem = next(e for e in observe(vm).iomem if e.name == "Persistent Memory")
        window = (pmem.start // PAGE, (pmem.end + 1) // PAGE)
        before = vm.run("dmesg", check=True).stdout.splitlines()
        op, name, mode, map_, mib = PERMANENT
        events = [_json(vm, f"{_CHURN} op --op {op} --name {name} --mode {mode} --map {map_} "
                            f"--size {mib}")]
        injected = []
        t1 = time.monotonic()
        for kind, op, extra in _INJECTED:
            out = _json(vm, f"{_CHURN} {kind} --op {op} --name K {extra}", timeout=600)
            raw["injected"].append(out)
            if kind == "op":
                events.append(out)
                continue
            assert out["event"] is not None, f"inject {op}: the live guard was never reached"
            events.append(out["event"])
            r = out["run"]
            injected.append((Run(f"inject {op}", r["t0"], r["t1"], r["rc"], r["stdout"],
                                 r["stderr"]), out["event"]))
        t["injected"] = time.monotonic() - t1
        t1 = time.monotonic()
        raw["race"] = doc = _json(
            vm, f"{_CHURN} race --runs {RUNS} --flap-runs {FLAP_RUNS}", timeout=900)
        t["loop"] = time.monotonic() - t1
        loop = tuple(Run(f"loop {r['i']}", r["t0"], r["t1"], r["rc"], r["stdout"], r["stderr"])
                     for r in doc["runs"])
        events += doc["events"]
        after = vm.run("dmesg", check=True).stdout.splitlines()
        t["in_guest"] = time.monotonic() - t0
    seen = set(before)
    new = tuple(x for x in after if x not in seen)
    res = Races(kernel_id, window, loop, tuple(injected), tuple(events), new, t)
    keep = images.cache_dir() / "results" / f"races-{kernel_id}.json"
    keep.parent.mkdir(parents=True, exist_ok=True)
    keep.write_text(json.dumps({**raw, "dmesg_new": new, "window": window}))
    n_flux = sum(1 for r in loop if r.doc and in_flux_spans(r.doc))
    print(f"races on {kernel_id}: {len(loop)} loop runs, {n_flux} with IN_FLUX, "
          f"{len(events)} churn events; timings {({k: round(v, 1) for k, v in t.items()})}; "
          f"raw results (last run) in {keep}")
    yield res


def _lives(res: Races) -> tuple[list[Life], list[Touch]]:
    return lives(res.events, PAGE)


def _flux_answer(run: Run) -> str:
    """What the tool answered, for the README's bad-input table (from the real output)."""
    doc = run.doc
    if doc is None:
        return run.stderr
    spans = in_flux_spans(doc)
    flux = [w for w in doc["warnings"] if "IN_FLUX" in w]
    return (f"exit {run.rc}; {len(spans)} IN_FLUX range(s), {sum(b - a for a, b in spans)} "
            f"pages; warnings: {'; '.join(flux) or 'none'}")


def test_every_run_exits_cleanly(races: Races, bad_input_record: Any) -> None:
    codes = sorted({r.rc for r in races.loop})
    flux = sum(1 for r in races.loop if r.doc and in_flux_spans(r.doc))
    bad_input_record(
        "namespaces and kmem churn during classify (natural timing)",
        f"{len(races.loop)} x classify /proc/kcore --json while ndctl/daxctl/sysfs churn",
        f"exit codes {codes}; {flux} run(s) with IN_FLUX; "
        f"{sum('Traceback' in r.stderr for r in races.loop)} traceback(s)",
        max(codes), kernel=races.kernel)
    bad = []
    for r in races.runs:
        if "Traceback" in r.stderr:
            bad.append((r.what, "traceback", r.stderr[-1500:]))
        elif r.rc != 0 and (r.rc not in _RACE_EXIT_CODES or r.stdout
                            or not _ERROR_LINE.fullmatch(r.stderr.strip())):
            bad.append((r.what, r.rc, r.stderr[-1500:]))
    assert bad == []
    assert sum(1 for r in races.loop if r.rc == 0) >= RUNS // 2, "most runs must classify"


def test_every_document_is_consistent(races: Races) -> None:
    problems = {r.what: doc_problems(r.doc) for r in races.runs if r.doc is not None}
    assert {k: v for k, v in problems.items() if v} == {}


def test_the_churn_churned(races: Races) -> None:
    """Every kind of operation succeeded while the loop ran (the loop was not idle)."""
    start, end = races.loop[0].t0, races.loop[-1].t1
    done = {e["op"] for e in races.events if e["rc"] == 0 and start <= e["t0"] <= end}
    assert done >= {"create", "destroy", "kmem", "online", "offline", "flap", "devdax"}
    mixed = {(e["ns"]["mode"], e["ns"]["map"]) for e in races.events
             if e["op"] == "create" and e["rc"] == 0}
    assert mixed >= {("fsdax", "dev"), ("fsdax", "mem"), ("devdax", "dev"), ("devdax", "mem")}


def test_loop_results_are_plausible_against_the_churn(races: Races) -> None:
    all_lives, unknown = _lives(races)
    problems = {}
    for r in races.loop:
        if r.doc is not None:
            p = plausibility_problems(r.doc, r.t0, r.t1, all_lives, unknown, races.window,
                                      PAGES_PER_SECTION)
            if p:
                problems[r.what] = p
    assert problems == {}
    # the check had something to check: P existed, untouched, in every run
    assert any(x.name == "P" and x.stable_during(races.loop[0].t0, races.loop[-1].t1)
               for x in all_lives)


_INJECTED_CASES = {
    "create": "namespace created between the reader's two reads",
    "online": "kmem blocks onlined between the reader's two reads",
    "destroy": "namespace destroyed between the reader's two reads",
}


def test_injected_changes_are_in_flux(races: Races, bad_input_record: Any) -> None:
    """The reader held between its two reads while the namespace/blocks changed: IN_FLUX."""
    all_lives, unknown = _lives(races)
    for run, ev in races.injected:
        bad_input_record(_INJECTED_CASES[ev["op"]],
                         f"classify /proc/kcore --json, reader held while: {ev['cmd']}",
                         _flux_answer(run), run.rc, kernel=races.kernel)
    assert [r.what for r, _ in races.injected] == ["inject create", "inject online",
                                                   "inject destroy"]
    for run, ev in races.injected:
        assert run.rc == 0, run.stderr
        assert ev["rc"] == 0, ev
        doc = run.doc
        assert doc is not None
        assert any("IN_FLUX" in w for w in doc["warnings"]), doc["warnings"]
        ns = ev["ns"]
        if ev["op"] == "online":
            spans = [(int(b) * PAGES_PER_SECTION, (int(b) + 1) * PAGES_PER_SECTION)
                     for b in ev["blocks"]]
            assert spans and set(ev["blocks"].values()) == {"online"}, ev
        else:
            spans = [(ns["raw_start"] // PAGE, ns["raw_end"] // PAGE)]
        for a, b in spans:
            assert class_spans(doc, a, b) == [(a, b, "IN_FLUX")], (run.what, hex(a), hex(b))
        assert plausibility_problems(doc, run.t0, run.t1, all_lives, unknown, races.window,
                                     PAGES_PER_SECTION) == []


def test_no_kernel_warning(races: Races) -> None:
    assert [x for x in races.new_dmesg if _WARN.search(x)] == []
