"""Command line entry point: ``subsecinspect classify | explain | sections | pgmaps | trace``.

:func:`main` (the ``subsecinspect`` console script and ``python -m subsecinspect``)
first tries the fast path: the non-interactive ``classify [TARGET] [-s VMLINUX]
--json [--save FILE] [-o FILE] [--debug]`` is parsed here and run without
importing typer, rich or pydantic, whose start-up costs more than reading and
classifying a dump (issue 4). Every other command line goes to the typer app in
:mod:`subsecinspect.cli_app` (``cli.app`` loads it on first use), which runs
the same helpers below; so both paths print the same document, the same
warnings and the same one-line errors with the same exit codes.

No drgn at module level: a saved snapshot (``classify SNAPSHOT.json``) is
classified on machines without drgn, and the kernel readers are reached only
through :mod:`subsecinspect.target` and :func:`subsecinspect.kernel.read_snapshot`.
Only data goes to stdout; warnings and errors go to stderr. Errors are one line,
``subsecinspect: error: ...``, with the exit code of their
:mod:`subsecinspect.errors` class; tracebacks only with ``--debug``.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from subsecinspect.errors import OptionError, SubsecinspectError, TargetError

if TYPE_CHECKING:
    from subsecinspect.snapshot import Snapshot

__all__ = (
    "classify_json",
    "fast_classify_args",
    "load_snapshot",
    "main",
    "parse_location",
    "run_guarded",
    "say",
    "write_atomic",
)


class Terminated(Exception):
    """SIGTERM, turned into an exception so that temporary files are removed."""


def say(line: str) -> None:
    """One line on stderr (warnings and errors; plain text, never markup)."""
    sys.stderr.write(line + "\n")
    sys.stderr.flush()


def write_atomic(path: str, text: str) -> None:
    """Write *text* to *path* via a temporary file in the same directory and ``os.replace``.

    After an error, Ctrl-C or SIGTERM no partial *path* exists.
    """
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".subsecinspect-", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def parse_location(text: str) -> tuple[int, str]:
    """Parse an explain location.

    ``pfn:0x1234`` / ``pfn:4660`` / ``4660`` is a PFN; ``0x12340000`` / ``phys:...``
    is a physical address.

    :return: ``(value, "pfn" | "phys")``
    :raises OptionError: not a number.
    """
    t = text.strip().lower().replace("_", "")
    kind = "pfn"
    if t.startswith("pfn:"):
        t = t[4:]
    elif t.startswith("phys:"):
        kind, t = "phys", t[5:]
    elif t.startswith("0x"):
        kind = "phys"
    if not re.fullmatch(r"0x[0-9a-f]+|[0-9]+", t):
        raise OptionError(
            f"bad location {text!r}: use a PFN (4660, pfn:0x1234) or a physical address (0x1234000)"
        )
    return int(t, 0), kind


def _preload(modules: Sequence[str]) -> threading.Thread:
    """Import *modules* in a thread while drgn loads debug info (its C code releases the GIL).

    Start-up cost, not semantics: the modules are imported again (a no-op, or the
    real import with its real error) where they are used. Only subsecinspect modules
    whose imports drgn's own start-up never takes, so the two threads cannot wait on
    each other's module locks.
    """
    import importlib

    def run() -> None:
        for name in modules:
            with contextlib.suppress(Exception):
                importlib.import_module(name)

    thread = threading.Thread(target=run, name="subsecinspect-preload", daemon=True)
    thread.start()
    return thread


def load_snapshot(
    target: str | None, vmlinux: str | None, warn: bool = True, preload: Sequence[str] = (),
    debuginfo: str = "auto", system_map: str | None = None,
) -> Snapshot:
    """A snapshot from a saved JSON file, or read from the live kernel / a vmcore.

    Its warnings are printed to stderr unless *warn* is false. *preload*: modules the
    caller needs next, imported while drgn loads debug info (:func:`_preload`).
    """
    if target and target.endswith(".json"):
        if vmlinux:
            raise OptionError("-s/--vmlinux does not apply to a saved snapshot")
        import dataclasses

        from subsecinspect.snapjson import snapshot_from_json
        from subsecinspect.snapshot import SnapshotFormatError

        try:
            with open(target, "rb") as f:  # the decoder reports bad UTF-8 (exit 3)
                text = f.read()
        except OSError as e:
            raise TargetError(f"cannot read snapshot {target}: {e.strerror or e}") from None
        try:
            snap = snapshot_from_json(text)
        except SnapshotFormatError as e:
            raise TargetError(f"{target} is not a saved subsecinspect snapshot: {e}") from None
        snap = dataclasses.replace(
            snap, target=dataclasses.replace(snap.target, format="snapshot", path=target)
        )
    else:
        try:
            import drgn  # noqa: F401  (before the preload thread: it imports drgn users)

            from subsecinspect.target import open_target
        except ImportError as e:
            raise TargetError(
                f"cannot read a kernel without drgn ({e}); install drgn==0.3.0, or classify a "
                "snapshot saved with --save"
            ) from None
        loader = _preload(("subsecinspect.kernel", *preload))
        try:
            prog, info = open_target(target, vmlinux, debuginfo, system_map)
        finally:
            loader.join()
        from subsecinspect.kernel import read_snapshot

        snap = read_snapshot(prog, info)
    if warn:
        for w in snap.warnings:
            say(f"subsecinspect: warning: {w}")
    return snap


def emit_text(text: str, output: str | None) -> None:
    """Write *text* to stdout, or atomically to *output*."""
    if output is None:
        sys.stdout.write(text)
        sys.stdout.flush()
    else:
        write_atomic(output, text)


def run_guarded(debug: bool, fn: Callable[[], None]) -> int:
    """Run a command body; errors become one line on stderr. :return: the exit code."""
    try:
        fn()
    except SubsecinspectError as e:
        if debug:
            import traceback

            traceback.print_exc()
        say(f"subsecinspect: error: {e}")
        return e.exit_code
    except KeyboardInterrupt:
        say("subsecinspect: error: interrupted")
        return 130
    except Terminated:
        say("subsecinspect: error: terminated")
        return 143
    except Exception as e:  # a bug: one line unless --debug
        if debug:
            import traceback

            traceback.print_exc()
        say(f"subsecinspect: error: internal error: {type(e).__name__}: {e} "
            "(run with --debug for the traceback)")
        return 1
    return 0


#: What :func:`classify_json` imports after the snapshot is read.
_CLASSIFY_JSON_MODULES = ("subsecinspect.classify", "subsecinspect.render.jsondoc")


def classify_json(
    target: str | None, vmlinux: str | None, save: str | None, output: str | None,
    debuginfo: str = "auto", system_map: str | None = None,
) -> None:
    """``classify --json``: read (or load) the snapshot, save it if asked, print the document."""
    from subsecinspect import __version__
    from subsecinspect.classify import classify
    from subsecinspect.render import jsondoc

    snap = load_snapshot(target, vmlinux, preload=_CLASSIFY_JSON_MODULES,
                         debuginfo=debuginfo, system_map=system_map)
    if save:
        from subsecinspect.snapjson import snapshot_to_json

        write_atomic(save, snapshot_to_json(snap, indent=None) + "\n")
    doc = jsondoc.classification_document(snap, classify(snap), tool_version=__version__)
    emit_text(jsondoc.dumps(doc), output)


_VALUED = {"-s": "vmlinux", "--vmlinux": "vmlinux", "-o": "output", "--output": "output",
           "--save": "save", "--debuginfo": "debuginfo", "-m": "system_map",
           "--system-map": "system_map"}
_FLAGS = {"--json": "json", "--debug": "debug"}


def fast_classify_args(argv: Sequence[str]) -> dict[str, Any] | None:
    """The options of ``classify ... --json`` if the fast path handles *argv*, else None.

    Accepted: ``classify``, at most one TARGET, ``-s/--vmlinux V``, ``--save F``,
    ``-o/--output F`` (also ``--long=V``), ``--debug`` and ``--json``, each at most
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
        sys.exit(run_guarded(debug, lambda: classify_json(**fast)))
    from subsecinspect.cli_app import app

    if argv is None:
        app()  # click reads sys.argv and names the program itself
    else:
        app(args=args)


def __getattr__(name: str) -> Any:
    """``cli.app``: the typer app, imported on first use."""
    if name == "app":
        from subsecinspect.cli_app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
