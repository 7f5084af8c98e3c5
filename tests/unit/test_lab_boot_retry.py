"""LabVM.start(): a boot whose kernel dies before userspace is retried once, other boot
failures are not. The QEMU launch and the serial channel are replaced by fakes; no guest."""

from __future__ import annotations

from pathlib import Path

import pytest

from lab import vm as vmmod
from lab.channel import LabBootError

OOPS = "[    1.909705] Oops: int3: 0000 [#1] SMP NOPTI\n[    1.915012] Kernel panic - not syncing\n"
HANG = "[    1.0] Key type psk registered\n"


class _Chan:
    def __init__(self, ok: bool) -> None:
        self.ok = ok

    def wait_event(self, prefix: str, timeout: float, what: str) -> str:
        if not self.ok:
            raise LabBootError(f"{what}: QEMU closed the serial line")
        return "READY"

    def close(self) -> None:
        pass


class _FakeVM(vmmod.LabVM):
    """Attempt i writes consoles[i] and answers READY only if oks[i]."""

    def __init__(self, tmp: Path, consoles: list[str], oks: list[bool]) -> None:
        super().__init__("6.1", name="retry-test")
        self.run_dir = tmp / "run" / "retry-test"
        self.consoles, self.oks, self.launches = consoles, oks, 0

    def _launch(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.console_log.write_text(self.consoles[self.launches])
        self._chan = _Chan(self.oks[self.launches])  # type: ignore[assignment]
        self.launches += 1

    def _resync(self) -> None:
        pass


def test_a_kernel_that_dies_during_boot_is_retried_once(tmp_path: Path) -> None:
    vm = _FakeVM(tmp_path, [OOPS, HANG], [False, True])
    assert vm.start() is vm
    assert vm.launches == 2
    kept = tmp_path / "run" / "retry-test.failed-boot.log"
    assert "Oops: int3" in kept.read_text()


def test_a_second_death_is_an_error(tmp_path: Path) -> None:
    vm = _FakeVM(tmp_path, [OOPS, OOPS], [False, False])
    with pytest.raises(LabBootError):
        vm.start()
    assert vm.launches == 2


def test_a_boot_failure_without_a_kernel_death_is_not_retried(tmp_path: Path) -> None:
    vm = _FakeVM(tmp_path, [HANG, HANG], [False, True])
    with pytest.raises(LabBootError):
        vm.start()
    assert vm.launches == 1
