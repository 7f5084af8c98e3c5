"""Errors: the exception hierarchy and the exit-code table.

Only the command line catches these
(:func:`subsecinspect.cli.common.run_guarded`). Each class carries the exit code
the CLI returns for it; the table is documented in README.md and never changes.
"""

from __future__ import annotations

__all__ = (
    "EXIT_CODES",
    "DebugInfoError",
    "OptionError",
    "ProbeError",
    "ReadError",
    "SubsecinspectError",
    "TargetError",
    "UnsupportedKernelError",
)


class SubsecinspectError(Exception):
    """Base class: a failure the user can act on, reported as one line."""

    exit_code = 1


class OptionError(SubsecinspectError):
    """A bad option or option combination."""

    exit_code = 2


class TargetError(SubsecinspectError):
    """The target cannot be opened: no /proc/kcore, not root, unreadable or truncated vmcore."""

    exit_code = 3


class DebugInfoError(SubsecinspectError):
    """vmlinux/debug info not found or not matching the target."""

    exit_code = 4


class UnsupportedKernelError(SubsecinspectError):
    """Feature detection found a kernel we cannot classify (no SPARSEMEM, unknown layout)."""

    exit_code = 5


class ReadError(SubsecinspectError):
    """A walk cannot continue: a root structure (mem_section) is unreadable."""

    exit_code = 6


class ProbeError(SubsecinspectError):
    """A BPF program failed to compile or attach, or a probe point is missing."""

    exit_code = 7


#: Exit code -> meaning, as documented in README.md.
EXIT_CODES: dict[int, str] = {
    0: "success",
    1: "unexpected error (a bug; run with --debug for the traceback)",
    2: "bad option or option combination (also usage errors)",
    3: "target cannot be opened (no /proc/kcore, not root, unreadable or truncated vmcore)",
    4: "debug info missing or not matching the target",
    5: "unsupported kernel (no SPARSEMEM, unknown structure layout)",
    6: "a root structure could not be read (mem_section)",
    7: "BPF probe failed to compile or attach",
}
