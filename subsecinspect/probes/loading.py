"""Finding and compiling ``bpf/subsec_trace.bpf.c`` with bcc.

The program's text is ``bpf/subsec_common.h`` followed by ``bpf/subsec_trace.bpf.c``, both
verbatim: bcc rewrites map calls in its main text only, so the shared window helpers must
be part of it (the header's comment says why; the program's own ``#include`` of it is then
a no-op). Settings are -D flags (``BPF(text=..., cflags=[...])``), never text
substitution: :func:`source_text` is the exact C that is compiled. The compile runs in a
thread that a signal can abandon (:func:`.bcc_env.compile_abandonable`), and falls back to
a build without the fentry/fexit programs (``-DSUBSEC_FENTRY=1``), the newest part, when
that one fails.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from subsecinspect.errors import ProbeError
from subsecinspect.probes.attaching import StartInterrupted
from subsecinspect.probes.bcc_env import (
    CompileAbandoned,
    captured_stderr,
    compile_abandonable,
    first_error,
)

__all__ = ("CONTRACT", "FENTRY_FLAG", "PARTS", "Compiled", "bpf_dir", "compile_tracer",
           "program_text", "source_text")  # fmt: skip

#: The files of the program's main text, in order (pyproject.toml data-files ships them).
PARTS = ("subsec_common.h", "subsec_trace.bpf.c", "subsec_walkers.bpf.c")
#: The event contract, a real #include (no map calls in it), found through ``-I``.
CONTRACT = "subsec_trace.h"
FENTRY_FLAG = "-DSUBSEC_FENTRY=1"


def bpf_dir() -> Path:
    """Where the BPF C sources are.

    ``$SUBSECINSPECT_BPF_DIR``, else ``bpf/`` of this checkout (editable installs, the lab's
    project disk), else ``<prefix>/share/subsecinspect/bpf`` where a wheel installs them
    (pyproject.toml ``[tool.setuptools.data-files]``).
    """
    env = os.environ.get("SUBSECINSPECT_BPF_DIR")
    if env:
        return Path(env)
    checkout = Path(__file__).resolve().parents[2] / "bpf"
    if checkout.is_dir():
        return checkout
    return Path(sys.prefix) / "share" / "subsecinspect" / "bpf"


def program_text() -> str:
    """The main text handed to bcc: :data:`PARTS`, each after a ``// ----`` line naming it
    (so that a compiler message can be traced back to its file)."""
    d = bpf_dir()
    return "\n".join(f"// ---- {d / name}\n{(d / name).read_text()}" for name in PARTS)


def source_text(cflags: list[str]) -> str:
    """The exact C compiled: the -D flags, the included contract and the main text."""
    d = bpf_dir()
    head = "\n".join(f"// cflag: {f}" for f in cflags)
    contract = (d / CONTRACT).read_text()
    return f"{head}\n// ---- {d / CONTRACT} (#include'd)\n{contract}\n{program_text()}"


@dataclass
class Compiled:
    """A loaded program, the flags it was built with and what the compiler printed."""

    bpf: Any
    cflags: list[str]
    log: str
    #: Why the fentry/fexit programs are not in it (``""``: they are, if asked for).
    fentry_off: str = ""


def compile_tracer(bpf_class: Any, cflags: list[str], fentry: bool,
                   stop: Callable[[], int | None], logs: dict[str, str]) -> Compiled:
    """Compile and load the tracer, with its fentry/fexit programs if ``fentry``.

    :param bpf_class: bcc's ``BPF`` (or a subclass); a failed compile's log goes to
        ``logs["compile"]``.
    :raises StartInterrupted: ``stop()`` returned a signal number while compiling.
    :raises ProbeError: the program does not compile (without the fentry part either).
    """
    text = program_text().encode()
    extra = [FENTRY_FLAG] if fentry else []
    fentry_off = ""
    while True:
        flags = cflags + extra
        try:
            with captured_stderr() as log:
                bpf = compile_abandonable(functools.partial(bpf_class, text=text, cflags=flags),
                                          stop)
            return Compiled(bpf, flags, log.text, fentry_off)
        except CompileAbandoned as e:
            raise StartInterrupted(e.signum) from None
        except Exception as e:
            logs["compile"] = log.text
            why = f"{e}{first_error(log.text)}"
            if not extra:
                raise ProbeError(f"BPF program failed to compile: {why}") from None
            # the kfunc programs are the newest part: once more without them
            extra = []
            fentry_off = f"compile with {FENTRY_FLAG} failed: {why}"
