"""Lab test: ``trace --metrics FILE`` keeps the openmetrics file current while it traces.

In a ``kmem`` guest (1 GiB NVDIMM): the tracer starts with ``--metrics``; once attached, the
file must parse (prometheus_client) and hold what ``classify --format openmetrics`` says of the
same kernel; then an fsdax namespace (--map=dev) is created, and the file must change by
itself to what a new ``classify --format openmetrics`` says (device pages now C2/C5). SIGTERM
ends the tracer with exit 0.

Marker ``lab``; LAB_KERNELS narrows the kernels (default: 6.1).
"""

from __future__ import annotations

import os
import time
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from lab.scenarios import SCENARIOS

pytestmark = pytest.mark.lab

KMEM = SCENARIOS["kmem"]
KERNELS = tuple(os.environ.get("LAB_KERNELS", "").split() or ("6.1",))
LABELS = "ndctl disable-region all && ndctl init-labels -f all && ndctl enable-region all"
TRACE = "python3 -m subsecinspect trace --seed --json --metrics /tmp/m.prom -d 1200"
CLASSIFY = "python3 -m subsecinspect classify --format openmetrics"


def _pages(text: str) -> dict[str, float]:
    return {s.labels["class"]: s.value for f in text_string_to_metric_families(text)
            for s in f.samples if s.name == "subsecinspect_pages"}


def _wait_for(vm: Any, cond: str, what: str, tries: int = 300) -> None:
    for _ in range(tries):
        if vm.run(cond, timeout=30).rc == 0:
            return
        if vm.run("kill -0 $(cat /tmp/t.pid)", timeout=30).rc != 0:
            pytest.fail("tracer exited early:\n" + vm.run("cat /tmp/t.err").stdout)
        time.sleep(2)
    pytest.fail(f"timed out waiting for {what}:\n" + vm.run("tail /tmp/t.err").stdout)


@pytest.mark.parametrize("kernel", KERNELS)
def test_metrics_file_follows_hotplug(kernel: str, boot_scenario: Any) -> None:
    with boot_scenario(KMEM, kernel, project=True, name=f"trace-metrics-{kernel}") as vm:
        assert vm.run(LABELS, timeout=300).rc == 0
        h = vm.send(f"cd /tmp; {TRACE} > /tmp/t.jsonl 2> /tmp/t.err & echo $! > /tmp/t.pid; "
                    "wait $!")
        time.sleep(2)
        _wait_for(vm, "grep -q '\"attach\"' /tmp/t.jsonl && test -s /tmp/m.prom", "attach")
        first = vm.run("cat /tmp/m.prom", check=True).stdout
        now = vm.run(CLASSIFY, timeout=600, check=True).stdout
        assert _pages(first) == _pages(now)
        assert not _pages(first)["C2_DEV_VALID"]
        r = vm.run("ndctl create-namespace -r region0 -m fsdax --map=dev -s 192M", timeout=600)
        assert r.rc == 0, r.stderr
        _wait_for(vm, f"! cmp -s /tmp/m.prom - <<'EOF'\n{first}EOF", "a rewritten metrics file")
        time.sleep(3)  # the tracer debounces; let a burst of events settle
        after = vm.run(CLASSIFY, timeout=600, check=True).stdout
        _wait_for(vm, f"cmp -s /tmp/m.prom - <<'EOF'\n{after}EOF", "the file to match classify")
        got = _pages(vm.run("cat /tmp/m.prom", check=True).stdout)
        assert got["C2_DEV_VALID"] > 0 and got["C5_DEV_DRIVER_RESERVED"] > 0
        vm.run("kill -TERM $(cat /tmp/t.pid)", timeout=30)
        assert vm.wait(h, timeout=300).rc == 0
