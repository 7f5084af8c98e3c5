"""Unit tests of the lab's one module build path (lab.kmod): suites, cache keys, command lines,
and when a build is reused. No chroot, no root: the build steps are replaced by a recorder."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from lab import kmod
from lab.matrix import load_matrix

# The chroot suite per lab kernel (vm-images/README.md, "Kernel modules"): trixie's gcc-14
# only where the kernel comes from trixie.
SUITES = {"5.10": "bookworm", "6.1": "bookworm", "6.12": "bookworm", "7.2": "trixie"}


@pytest.fixture
def cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.setenv("SUBSECINSPECT_LAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def module(tmp_path: Path) -> Path:
    d = tmp_path / "hello"
    d.mkdir()
    (d / "hello.c").write_text("int x;\n")
    (d / "Kbuild").write_text("obj-m := hello.o\n")
    return d


@pytest.mark.parametrize("kernel_id", sorted(SUITES))
def test_chroot_suite_and_header_sources_of_each_lab_kernel(kernel_id: str) -> None:
    k = load_matrix().get(kernel_id)
    assert kmod.chroot_suite(k.suite) == SUITES[kernel_id]
    lines = kmod.header_sources(k.suite)
    assert lines and all(ln.startswith("deb http://deb.debian.org/") for ln in lines)
    assert all(ln.split()[2] == k.suite for ln in lines)


def test_header_sources_of_an_unknown_suite_fail() -> None:
    with pytest.raises(kmod.KmodError, match="buster"):
        kmod.header_sources("buster")


def test_every_module_under_tests_kmod_is_buildable_by_name() -> None:
    # a module directory is named after its module: Kbuild builds NAME.o
    for name in ("subsec_gt", "bad_walker"):
        kbuild = (kmod.KMOD_DIR / name / "Kbuild").read_text()
        assert f"obj-m := {name}.o" in kbuild
        assert (kmod.KMOD_DIR / name / f"{name}.c").is_file()


def test_module_key_follows_kernel_suite_and_sources(module: Path) -> None:
    base = kmod.module_key("6.1.0-57-cloud-amd64", "bookworm", module)
    assert kmod.module_key("6.1.0-57-cloud-amd64", "bookworm", module) == base
    assert kmod.module_key("6.1.0-58-cloud-amd64", "bookworm", module) != base
    assert kmod.module_key("6.1.0-57-cloud-amd64", "trixie", module) != base
    (module / "hello.c").write_text("int y;\n")
    changed = kmod.module_key("6.1.0-57-cloud-amd64", "bookworm", module)
    assert changed != base
    (module / "hello.h").write_text("")
    assert kmod.module_key("6.1.0-57-cloud-amd64", "bookworm", module) != changed


def test_module_key_ignores_subdirectories_and_needs_a_kbuild(module: Path) -> None:
    base = kmod.module_key("k", "bookworm", module)
    (module / "sub").mkdir()  # tests/kmod/ itself once held bad_walker/ beside a module
    (module / "sub" / "x.c").write_text("int z;\n")
    assert kmod.module_key("k", "bookworm", module) == base
    (module / "Kbuild").unlink()
    with pytest.raises(kmod.KmodError, match="no Kbuild"):
        kmod.module_key("k", "bookworm", module)


def test_paths_live_under_the_lab_cache(cache: Path) -> None:
    assert kmod.chroot_dir("trixie") == cache / "kmod" / "chroot" / "trixie"
    assert kmod.module_path("7.2", "bad_walker") == (
        cache / "kmod" / "out" / "7.2" / "bad_walker" / "bad_walker.ko"
    )


def test_step_command_lines(tmp_path: Path) -> None:
    c, src, out = tmp_path / "chroot-bookworm", tmp_path / "m", tmp_path / "m.ko"
    script = str(kmod.SCRIPT)
    assert kmod.prepare_cmd(c, "bookworm", "5.10.0-32-cloud-amd64", ["deb U bullseye main"]) == [
        "sh", script, "prepare", str(c), "bookworm", "5.10.0-32-cloud-amd64", "deb U bullseye main"
    ]
    assert kmod.module_cmd(c, "5.10.0-32-cloud-amd64", src, "m", out) == [
        "sh", script, "module", str(c), "5.10.0-32-cloud-amd64", str(src), "m", str(out)
    ]


def test_build_script_rejects_bad_usage_and_missing_headers(tmp_path: Path) -> None:
    usage = subprocess.run(["sh", str(kmod.SCRIPT), "module", "x"], capture_output=True, text=True)
    assert usage.returncode == 2 and "usage" in usage.stderr
    unknown = subprocess.run(["sh", str(kmod.SCRIPT), "clean"], capture_output=True, text=True)
    assert unknown.returncode == 2 and "unknown step" in unknown.stderr
    cmd = kmod.module_cmd(tmp_path / "none", "1.0", tmp_path, "m", tmp_path / "m.ko")
    nohdr = subprocess.run(cmd, capture_output=True, text=True)
    assert nohdr.returncode == 1 and "no headers for 1.0" in nohdr.stderr


class _Recorder:
    def __init__(self, fail: str = "") -> None:
        self.steps: list[list[str]] = []
        self.fail = fail

    def __call__(self, cmd: list[str], what: str) -> None:
        self.steps.append(cmd)
        if self.fail and self.fail == cmd[2]:
            raise kmod.KmodError(f"{what} failed")
        if cmd[2] == "module":
            Path(cmd[-1]).parent.mkdir(parents=True, exist_ok=True)
            Path(cmd[-1]).write_bytes(b"\x7fELF")


def test_build_runs_both_steps_once_then_reuses(
    cache: Path, module: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = _Recorder()
    monkeypatch.setattr(kmod, "_run", rec)
    ko = kmod.build("7.2", "hello", src=module)
    assert ko == kmod.module_path("7.2", "hello") and ko.read_bytes() == b"\x7fELF"
    assert [c[2] for c in rec.steps] == ["prepare", "module"]
    assert rec.steps[0][3] == str(cache / "kmod" / "chroot" / "trixie")
    assert kmod.build("7.2", "hello", src=module) == ko
    assert len(rec.steps) == 2  # reused: same kernel, same sources
    (module / "hello.c").write_text("int changed;\n")
    kmod.build("7.2", "hello", src=module)
    assert [c[2] for c in rec.steps[2:]] == ["prepare", "module"]
    kmod.build("7.2", "hello", src=module, force=True)
    assert len(rec.steps) == 6


def test_a_failed_build_leaves_no_stamp(
    cache: Path, module: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kmod, "_run", _Recorder(fail="module"))
    with pytest.raises(kmod.KmodError, match="failed"):
        kmod.build("6.1", "hello", src=module)
    assert not (kmod.module_path("6.1", "hello").parent / "stamp.json").exists()
    rec = _Recorder()
    monkeypatch.setattr(kmod, "_run", rec)
    kmod.build("6.1", "hello", src=module)  # the next call builds instead of reusing
    assert [c[2] for c in rec.steps] == ["prepare", "module"]
