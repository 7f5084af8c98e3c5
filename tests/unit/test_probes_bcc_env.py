"""What the system offers bcc (subsecinspect.probes.bcc_env): fentry, kprobes, stderr."""

from __future__ import annotations

import os
from pathlib import Path

from subsecinspect.probes.bcc_env import (
    captured_stderr,
    fentry_blockers,
    first_error,
    kprobes_disabled,
)

KALLSYMS = "ffffffff81234000 T memremap_pages\nffffffff81300000 T bpf_trampoline_link_prog\n"


class Bcc026:
    """The parts of bcc 0.26's ``BPF`` class that fentry_blockers looks at."""

    kfunc = True

    @classmethod
    def support_kfunc(cls) -> bool:
        return cls.kfunc

    def _trace_autoload(self) -> None:
        pass


class OldBcc:
    pass


def test_fentry_usable_with_btf_trampolines_and_bcc_support() -> None:
    assert fentry_blockers(KALLSYMS, True, Bcc026) == []


def test_fentry_blockers_name_each_missing_piece() -> None:
    no_tramp = KALLSYMS.replace("bpf_trampoline_link_prog", "bpf_prog_run")
    why = fentry_blockers(no_tramp, False, OldBcc)
    assert any("BTF" in w for w in why)
    assert any("trampoline" in w for w in why)
    assert any("no kfunc support" in w for w in why)
    assert any("_trace_autoload" in w for w in why)

    class NoKfunc(Bcc026):
        kfunc = False

    assert fentry_blockers(KALLSYMS, True, NoKfunc) == ["bcc: support_kfunc() is false"]


def test_kprobes_disabled(tmp_path: Path) -> None:
    f = tmp_path / "enabled"
    f.write_text("0\n")
    assert "kprobes are disabled" in kprobes_disabled(str(f))
    f.write_text("1\n")
    assert kprobes_disabled(str(f)) == ""
    assert kprobes_disabled(str(tmp_path / "absent")) == ""  # no debugfs: nothing known


def test_captured_stderr_keeps_file_descriptor_2() -> None:
    with captured_stderr() as log:
        os.write(2, b"In file included from <built-in>:2:\n")
        os.write(2, b"/virtual/main.c:9:10: fatal error: 'linux/kconfig.h' file not found\n")
    assert "kconfig.h" in log.text
    assert first_error(log.text) == (
        ": /virtual/main.c:9:10: fatal error: 'linux/kconfig.h' file not found")
    assert first_error("warning: only warnings\n") == ""
