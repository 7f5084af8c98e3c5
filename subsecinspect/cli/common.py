"""Helpers shared by both command paths: loading a target, writing, errors to exit codes.

The fast ``classify --json`` path (:mod:`subsecinspect.cli.main`) and the typer app
(:mod:`subsecinspect.cli.app`) both run these, so they print the same document, the
same warnings and the same one-line errors with the same exit codes. No typer, rich or
drgn at module level: a saved snapshot is classified on machines without drgn, and the
kernel readers are reached only through :mod:`subsecinspect.target` and
:func:`subsecinspect.kernel.read.read_snapshot`.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from subsecinspect.errors import OptionError, SubsecinspectError, TargetError

if TYPE_CHECKING:
    from subsecinspect.snapshot.model import Snapshot

__all__ = (
    "Opening",
    "Terminated",
    "classify_json",
    "emit_text",
    "load_snapshot",
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


@dataclass(frozen=True, slots=True)
class Opening:
    """How a kernel target is opened; every command that opens one takes these options.

    *vmlinux* (``-s``), *debuginfo* (``--debuginfo auto|dwarf|btf``) and *system_map*
    (``-m``) say where the debug info comes from (:func:`subsecinspect.target.open_target`);
    *bpf* false (``--no-bpf``): live, read only what /proc/kcore serves
    (:mod:`subsecinspect.kernel.livemem`).
    """

    vmlinux: str | None = None
    debuginfo: str = "auto"
    system_map: str | None = None
    bpf: bool = True

    def argv(self) -> list[str]:
        """The same options on a command line (for child processes)."""
        out = ["-s", self.vmlinux] if self.vmlinux else []
        if self.debuginfo != "auto":
            out += ["--debuginfo", self.debuginfo]
        if self.system_map:
            out += ["-m", self.system_map]
        return out + ([] if self.bpf else ["--no-bpf"])


def load_snapshot(
    target: str | None,
    opening: Opening = Opening(),
    warn: bool = True,
    preload: Sequence[str] = (),
) -> Snapshot:
    """A snapshot from a saved JSON file, or read from the live kernel / a vmcore.

    Its warnings are printed to stderr unless *warn* is false. *preload*: modules the
    caller needs next, imported while drgn loads debug info (:func:`_preload`).
    """
    from subsecinspect import api

    if target and target.endswith(".json"):
        if opening.vmlinux:
            raise OptionError("-s/--vmlinux does not apply to a saved snapshot")
        snap = api.load_saved_snapshot(target)
    else:
        try:
            import drgn  # noqa: F401  (before the preload thread: it imports drgn users)

            from subsecinspect.target import open_target
        except ImportError as e:
            raise TargetError(
                f"cannot read a kernel without drgn ({e}); install drgn==0.3.0, or classify a "
                "snapshot saved with --save"
            ) from None
        loader = _preload(("subsecinspect.kernel.read", *preload))
        try:
            prog, info = open_target(target, opening.vmlinux, opening.debuginfo,
                                     opening.system_map)
        finally:
            loader.join()
        snap = api.read_program(prog, info, bpf_memmap=opening.bpf)
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
_CLASSIFY_JSON_MODULES = ("subsecinspect.classify.decide", "subsecinspect.render.jsondoc")


def classify_json(
    target: str | None,
    opening: Opening,
    save: str | None,
    output: str | None,
) -> None:
    """``classify --json``: read (or load) the snapshot, save it if asked, print the document."""

    snap = load_snapshot(target, opening, preload=_CLASSIFY_JSON_MODULES)
    if save:
        from subsecinspect.snapshot.codec import snapshot_to_json

        write_atomic(save, snapshot_to_json(snap, indent=None) + "\n")
    from subsecinspect import api

    emit_text(api.dumps(api.classification_document(snap)), output)
