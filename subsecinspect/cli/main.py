"""Command line entry point: ``subsecinspect classify | explain | sections | pgmaps | trace``.

:func:`main` (the ``subsecinspect`` console script and ``python -m subsecinspect``)
first tries the fast path: the non-interactive ``classify [TARGET] [-s VMLINUX]
--json [--save FILE] [-o FILE] [--debug]`` is parsed here and run without
importing typer, rich or pydantic, whose start-up costs more than reading and
classifying a dump (README, Performance). Every other command line goes to the typer
app in :mod:`subsecinspect.cli.app`, imported only then. Both run the helpers of
:mod:`subsecinspect.cli.common`.

Only data goes to stdout; warnings and errors go to stderr. Errors are one line,
``subsecinspect: error: ...``, with the exit code of their
:mod:`subsecinspect.errors` class; tracebacks only with ``--debug``.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Sequence
from typing import Any

from subsecinspect.cli.common import Opening, Terminated, classify_json, run_guarded

__all__ = ("fast_classify_args", "main")


_VALUED = {"-s": "vmlinux", "--vmlinux": "vmlinux", "-o": "output", "--output": "output",
           "--save": "save", "--debuginfo": "debuginfo", "-m": "system_map",
           "--system-map": "system_map"}
_FLAGS = {"--json": "json", "--debug": "debug", "--no-bpf": "no_bpf"}


def fast_classify_args(argv: Sequence[str]) -> dict[str, Any] | None:
    """The options of ``classify ... --json`` if the fast path handles *argv*, else None.

    Accepted: ``classify``, at most one TARGET, ``-s/--vmlinux V``, ``--save F``,
    ``-o/--output F``, ``--debuginfo M``, ``-m/--system-map F`` (also ``--long=V``),
    ``--debug``, ``--no-bpf`` and ``--json``, each at most
    once, values non-empty and not starting with ``-``. Anything else (tables,
    ``--help``, ``--``, repeats, unknown or malformed options, usage errors) is
    left to the typer app, which owns the usage messages.
    """
    if not argv or argv[0] != "classify":
        return None
    opts: dict[str, Any] = {}
    target: str | None = None
    rest = list(argv[1:])
    while rest:
        tok = rest.pop(0)
        name, value = tok, None
        if tok.startswith("--") and "=" in tok:
            name, value = tok.split("=", 1)
            if name not in _VALUED:
                return None
        if name in _FLAGS:
            key = _FLAGS[name]
        elif name in _VALUED:
            key = _VALUED[name]
            if value is None:
                if not rest:
                    return None
                value = rest.pop(0)
            if not value or value.startswith("-"):
                return None
        elif tok and not tok.startswith("-") and target is None:
            target = tok
            continue
        else:
            return None
        if key in opts:
            return None
        opts[key] = True if name in _FLAGS else value
    if not opts.get("json"):
        return None
    return {
        "target": target,
        "vmlinux": opts.get("vmlinux"),
        "save": opts.get("save"),
        "output": opts.get("output"),
        "debug": bool(opts.get("debug")),
        "bpf": not opts.get("no_bpf"),
        "debuginfo": opts.get("debuginfo", "auto"),
        "system_map": opts.get("system_map"),
    }


def _on_sigterm(signum: int, frame: object) -> None:
    raise Terminated()


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point (``subsecinspect`` and ``python -m subsecinspect``)."""
    with contextlib.suppress(ValueError):  # not in the main thread
        signal.signal(signal.SIGTERM, _on_sigterm)
    args = list(sys.argv[1:] if argv is None else argv)
    fast = fast_classify_args(args)
    if fast is not None:
        debug = fast.pop("debug")
        opening = Opening(fast.pop("vmlinux"), fast.pop("debuginfo"), fast.pop("system_map"),
                          fast.pop("bpf"))
        sys.exit(run_guarded(debug, lambda: classify_json(opening=opening, **fast)))
    from subsecinspect.cli.app import app

    if argv is None:
        app()  # click reads sys.argv and names the program itself
    else:
        app(args=args)
