"""Lab tests: the BPF memmap reader when it cannot serve, faults, or is interrupted.

One boot of scenario ``nvdimm-mixed`` per kernel (two map=dev namespaces: memmaps on the
device). The agreement of live and dump when the reader works is in
test_classify_static.py (all four kernels). Here, each case a real failure in the guest:

* bcc missing (python3-bpfcc's package moved away) and the program not cached yet: a
  warning naming it, the map=dev data ``MEMMAP_UNREADABLE``, exit 0; once cached, bcc is
  not needed (the instructions are loaded with bpf(2));
* the program refused (a copy of bpf/ whose reader the verifier rejects, through
  ``$SUBSECINSPECT_BPF_DIR``): a warning with the verifier's first line;
* real read faults (the reader's addresses moved past the populated vmemmap, so
  bpf_probe_read_kernel() fails with EFAULT): those PFNs ``MEMMAP_UNREADABLE`` with the
  BPF error as evidence, never classified from zeros;
* SIGINT and SIGTERM while bcc compiles the reader: one line, exit 130/143;
and after every case no BPF program of ours is left loaded (bpf(2) enumeration).

Kernels: the failure paths are the front end's, not the kernel's, so by default the oldest
and the newest of the matrix (``LAB_KERNELS`` overrides).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from bpfstate import BpfState, guest_state

from lab.scenarios import SCENARIOS, apply, labvm

pytestmark = pytest.mark.lab

SCENARIO = SCENARIOS["nvdimm-mixed"]
_DEFAULT = ("5.10", "7.2")
KERNELS = tuple(k.kernel for k in SCENARIO.kernels if k.supported)
KERNELS = tuple(k for k in KERNELS if k in (os.environ.get("LAB_KERNELS", "").split()
                                            or _DEFAULT))
CLASSIFY = "-m subsecinspect classify /proc/kcore --json"
#: Where the reader keeps bcc's instructions (root's default cache directory).
CACHE = "/root/.cache/subsecinspect/bpf"
#: A Python prologue run before the CLI in the child (``python3 -c``).
_MAIN = "from subsecinspect.cli.main import main; main(sys.argv[1:])"


@dataclass
class Guest:
    vm: Any
    kernel: str
    baseline: BpfState


@pytest.fixture(scope="module", params=KERNELS)
def guest(request: pytest.FixtureRequest) -> Iterator[Guest]:
    with labvm(SCENARIO, request.param, project=True,
               name=f"test-livemem-{request.param}") as vm:  # fmt: skip
        apply(vm, SCENARIO)
        yield Guest(vm, request.param, guest_state(vm))


def _run(g: Guest, prologue: str = "pass", env: str = "", setup: str = "",
         teardown: str = "") -> tuple[int, dict[str, Any] | None, str]:
    code = f"import sys; {prologue}; {_MAIN}"
    args = CLASSIFY.removeprefix("-m subsecinspect ")
    if setup:
        assert g.vm.run(setup, timeout=60).rc == 0, setup
    try:
        r = g.vm.run(f"{env} python3 -c {json.dumps(code)} {args}", timeout=900)
    finally:
        if teardown:
            g.vm.run(teardown, timeout=60)
    doc = json.loads(r.stdout) if r.rc == 0 else None
    assert "Traceback" not in r.stderr, r.stderr
    assert guest_state(g.vm).added_since(g.baseline) == {}
    return r.rc, doc, r.stderr


def _unreadable(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in doc["ranges"] if r["class"] == "MEMMAP_UNREADABLE"]


def test_bcc_missing_is_a_warning_and_kcore_only(guest: Guest, bad_input_record: Any) -> None:
    bcc = "/usr/lib/python3/dist-packages/bcc"
    rc, doc, err = _run(guest, setup=f"rm -rf {CACHE} && mv {bcc} /root/bcc.hidden",
                        teardown=f"mv /root/bcc.hidden {bcc}")
    bad_input_record("BPF reader: bcc not installed", "classify /proc/kcore --json "
                     "(python3-bpfcc removed)", err, rc, kernel=guest.kernel, group="live")
    assert rc == 0 and doc is not None
    assert "BPF memmap reader unavailable (bcc is not installed" in err
    assert _unreadable(doc), "the on-device memmaps cannot be read without BPF"
    assert "memmap_bpf_calls" not in doc["stats"]


def test_a_cached_reader_needs_no_bcc(guest: Guest) -> None:
    rc, doc, err = _run(guest)  # compiles and caches
    assert rc == 0 and doc is not None and not _unreadable(doc), err
    bcc = "/usr/lib/python3/dist-packages/bcc"
    rc, doc2, err = _run(guest, setup=f"mv {bcc} /root/bcc.hidden",
                         teardown=f"mv /root/bcc.hidden {bcc}")
    assert rc == 0 and doc2 is not None, err
    assert "unavailable" not in err
    assert [(r["start_pfn"], r["class"]) for r in doc2["ranges"]] == [
        (r["start_pfn"], r["class"]) for r in doc["ranges"]]


def test_refused_program_is_a_warning(guest: Guest, bad_input_record: Any) -> None:
    vm = guest.vm
    # A reader whose request size is not a constant: the verifier refuses the program.
    r = vm.run("rm -rf /tmp/badbpf && cp -r /lab/project/bpf /tmp/badbpf && "
               "sed -i 's/MEMMAP_READ_CHUNK,$/req->nchunks * 4096,/' "
               "/tmp/badbpf/memmap_read.bpf.c && grep -c 'req->nchunks \\* 4096' "
               "/tmp/badbpf/memmap_read.bpf.c", timeout=60)
    assert r.rc == 0 and r.stdout.strip() == "1", r.stdout + r.stderr
    rc, doc, err = _run(guest, env="SUBSECINSPECT_BPF_DIR=/tmp/badbpf")
    bad_input_record("BPF reader refused by the verifier", "classify /proc/kcore --json "
                     "(a reader with a variable read size)", err, rc, kernel=guest.kernel,
                     group="live")
    assert rc == 0 and doc is not None
    assert "BPF memmap reader unavailable (BPF program memmap_read refused" in err
    assert _unreadable(doc)


def test_read_faults_are_unreadable_with_the_bpf_error(guest: Guest) -> None:
    # Every BPF read lands 64 GiB of struct pages past the asked address: unpopulated
    # vmemmap, so the kernel's helper fails for real and zeroes its buffer.
    shift = "(1 << 30) * 64"
    prologue = (
        "from subsecinspect.probes import memmap_read as M; _r = M.MemmapReader.read; "
        f"M.MemmapReader.read = lambda self, a, n: _r(self, a + {shift}, n)"
    )
    rc, doc, err = _run(guest, prologue)
    assert rc == 0 and doc is not None
    bad = _unreadable(doc)
    assert bad, "faulting reads must not be classified"
    for r in bad:
        assert r["evidence"]["memmap_error"].startswith("bpf_probe_read_kernel: EFAULT (-14)"), r
    assert "C2_DEV_VALID" in {r["class"] for r in doc["ranges"]}  # the map=mem namespaces
    assert "bpf_probe_read_kernel: EFAULT" in err


@pytest.mark.parametrize(("sig", "rc", "says"), [("INT", 130, "interrupted"),
                                                ("TERM", 143, "terminated")])
def test_signal_while_the_reader_loads(guest: Guest, sig: str, rc: int, says: str) -> None:
    vm = guest.vm
    vm.run(f"rm -rf {CACHE} /tmp/s.pid /tmp/s.rc /tmp/s.err", timeout=30, check=True)
    # The pid file is written by the shell that then becomes python (exec): no pattern
    # matching that could find the waiting shell itself.
    h = vm.send(f"cd /tmp; sh -c 'echo $$ > /tmp/s.pid; exec python3 {CLASSIFY}' "
                "> /tmp/s.out 2> /tmp/s.err; echo $? > /tmp/s.rc")
    # bcc's compile takes seconds under TCG: signal once libbcc is mapped (compiling).
    r = vm.run("for i in $(seq 6000); do p=$(cat /tmp/s.pid 2>/dev/null) && "
               "grep -q libbcc /proc/$p/maps 2>/dev/null && break; sleep 0.05; done; "
               f"sleep 1; kill -{sig} $(cat /tmp/s.pid)", timeout=400)
    assert r.rc == 0, r.stdout + r.stderr
    vm.wait(h, timeout=300)
    got = vm.run("cat /tmp/s.rc; cat /tmp/s.err", timeout=30).stdout.splitlines()
    assert int(got[0]) == rc, got
    errors = [ln for ln in got[1:] if ln.startswith("subsecinspect: error:")]
    assert errors == [f"subsecinspect: error: {says}"], got
    assert "Traceback" not in "\n".join(got)
    assert guest_state(vm).added_since(guest.baseline) == {}
