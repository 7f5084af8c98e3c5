"""
Python API
----------

The functions behind every ``subsecinspect`` command, for drgn scripts, the drgn plugin
(:mod:`subsecinspect.drgn_plugin`) and the command line alike: they take a *source* and
return a snapshot or one of the versioned JSON documents (``render/jsondoc.py``; the
command line prints exactly :func:`dumps` of them).

A *source* is one of:

* a :class:`drgn.Program` that is already open, with debug info loaded (in a drgn
  session: ``prog``); nothing is opened or loaded again;
* a :class:`~subsecinspect.snapshot.model.Snapshot`;
* a path: a snapshot saved with ``classify --save`` (``*.json``, read without drgn),
  a vmcore, or ``/proc/kcore``; ``None`` is the live kernel. Paths are opened with
  :func:`subsecinspect.target.open_target` (debug info from *vmlinux*, else drgn's search).

.. code-block:: python3

    from subsecinspect import api
    doc = api.classification_document(prog)
    unsafe = [r for r in doc["ranges"] if r["class"].startswith(("C1", "C3", "C4", "C5"))]

Failures raise :class:`subsecinspect.errors.SubsecinspectError` subclasses with a one-line
message (the command line's exit code is ``e.exit_code``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, Union

from subsecinspect import __version__
from subsecinspect.errors import OptionError, TargetError
from subsecinspect.snapshot.model import Snapshot, TargetInfo

if TYPE_CHECKING:
    import drgn

    from subsecinspect.classify.classes import Classification

__all__ = (
    "Source",
    "classification",
    "classification_document",
    "dumps",
    "explain_document",
    "load_saved_snapshot",
    "pgmaps_document",
    "program_target_info",
    "read_program",
    "sections_document",
    "snapshot",
)

#: What the functions of this module accept (see the module docstring).
Source = Union["drgn.Program", Snapshot, str, "os.PathLike[str]", None]

_KCORE = "/proc/kcore"


def load_saved_snapshot(path: str) -> Snapshot:
    """Load a snapshot saved with ``classify --save`` (no drgn needed).

    Its ``target`` says ``format="snapshot"`` and *path*, as the command line reports it.

    :raises TargetError: unreadable, or not a saved snapshot.
    """
    from subsecinspect.snapshot.codec import snapshot_from_json
    from subsecinspect.snapshot.model import SnapshotFormatError

    try:
        with open(path, "rb") as f:  # the decoder reports bad UTF-8 (exit 3)
            text = f.read()
    except OSError as e:
        raise TargetError(f"cannot read snapshot {path}: {e.strerror or e}") from None
    try:
        snap = snapshot_from_json(text)
    except SnapshotFormatError as e:
        raise TargetError(f"{path} is not a saved subsecinspect snapshot: {e}") from None
    return dataclasses.replace(
        snap, target=dataclasses.replace(snap.target, format="snapshot", path=path)
    )


def program_target_info(prog: drgn.Program) -> TargetInfo:
    """What *prog* has open, as :func:`subsecinspect.target.open_target` would report it.

    :param prog: a Linux kernel program (``/proc/kcore`` or a vmcore).
    :raises TargetError: *prog* is not a Linux kernel.
    """
    import drgn

    from subsecinspect.target import inspect_dump

    if not prog.flags & drgn.ProgramFlags.IS_LINUX_KERNEL:
        raise TargetError("the program is not a Linux kernel (open /proc/kcore or a vmcore)")
    path = prog.core_dump_path
    # The debug info drgn loaded, named as open_target names it (the JSON's provenance).
    try:
        debug_file = prog.main_module().debug_file_path
    except (LookupError, ValueError):
        debug_file = None
    debuginfo = f"dwarf:{debug_file}" if debug_file else ""
    if prog.flags & drgn.ProgramFlags.IS_LIVE:
        return TargetInfo(kind="live", path=_KCORE, format="kcore", debuginfo=debuginfo)
    if path is None:
        raise TargetError("the program has no core dump file (only /proc/kcore and vmcores)")
    dump = inspect_dump(path)
    return TargetInfo(kind="vmcore", path=os.path.abspath(path), format=dump.format,
                      dump_max_pfn=dump.max_pfn, debuginfo=debuginfo)


def snapshot(source: Source = None, *, vmlinux: str | None = None) -> Snapshot:
    """Read (or load) the snapshot of *source*: sections, pgmaps, zones, memory blocks, memmap.

    :param source: see the module docstring.
    :param vmlinux: debug info for a vmcore or ``/proc/kcore`` path; not for a Program,
        a Snapshot or a saved snapshot.
    :raises OptionError: *vmlinux* given where it does not apply.
    :raises TargetError: the target cannot be opened.
    :raises DebugInfoError: no or mismatching debug info.
    :raises UnsupportedKernelError: a kernel layout subsecinspect does not know.
    :raises ReadError: ``mem_section`` cannot be read.
    """
    if isinstance(source, Snapshot):
        if vmlinux:
            raise OptionError("-s/--vmlinux does not apply to a snapshot")
        return source
    if source is None or isinstance(source, (str, os.PathLike)):
        path = None if source is None else os.fspath(source)
        if path is not None and path.endswith(".json"):
            if vmlinux:
                raise OptionError("-s/--vmlinux does not apply to a saved snapshot")
            return load_saved_snapshot(path)
        try:
            from subsecinspect.target import open_target
        except ImportError as e:  # pragma: no cover - drgn is a dependency
            raise TargetError(f"cannot read a kernel without drgn ({e})") from None
        prog, info = open_target(path, vmlinux)
        return read_program(prog, info)
    if vmlinux:
        raise OptionError("-s/--vmlinux does not apply to an open drgn Program")
    return read_program(source)


def read_program(
    prog: drgn.Program, info: TargetInfo | None = None, *, bpf_memmap: bool = True
) -> Snapshot:
    """Read the snapshot of an open *prog* (debug info loaded); nothing is loaded again.

    :param info: what *prog* has open; default :func:`program_target_info`.
    :param bpf_memmap: live, read the on-device memmaps through BPF
        (:mod:`subsecinspect.kernel.livemem`); false: only what /proc/kcore serves.
    Raises what :func:`snapshot` raises.
    """
    from subsecinspect.kernel.read import read_snapshot

    return read_snapshot(prog, info if info is not None else program_target_info(prog),
                         bpf_memmap=bpf_memmap)


def classification(source: Source = None, *, vmlinux: str | None = None) -> Classification:
    """Every PFN of *source* in one class: :class:`~subsecinspect.classify.classes.Classification`.

    Raises what :func:`snapshot` raises.
    """
    from subsecinspect.classify.decide import classify

    return classify(snapshot(source, vmlinux=vmlinux))


def classification_document(source: Source = None, *, vmlinux: str | None = None
                            ) -> dict[str, Any]:
    """The ``classify --json`` document of *source* (schema_version 1).

    Raises what :func:`snapshot` raises.
    """
    from subsecinspect.classify.decide import classify
    from subsecinspect.render import jsondoc

    snap = snapshot(source, vmlinux=vmlinux)
    return jsondoc.classification_document(snap, classify(snap), tool_version=__version__)


def explain_document(
    source: Source = None, pfn: int | None = None, *, phys_addr: int | None = None,
    vmlinux: str | None = None,
) -> dict[str, Any]:
    """The ``explain --json`` document for one page of *source*: give *pfn* or *phys_addr*.

    :raises OptionError: neither or both of *pfn* and *phys_addr*, or a negative one.
    Raises what :func:`snapshot` raises.
    """
    from subsecinspect.classify.explain import explain
    from subsecinspect.render import jsondoc

    if (pfn is None) == (phys_addr is None):
        raise OptionError("give one of pfn and phys_addr")
    if (pfn if pfn is not None else phys_addr or 0) < 0:
        raise OptionError("a PFN or physical address cannot be negative")
    snap = snapshot(source, vmlinux=vmlinux)
    page = pfn if pfn is not None else (phys_addr or 0) >> snap.kernel.page_shift
    return jsondoc.explain_document(snap, explain(snap, page), tool_version=__version__)


def sections_document(source: Source = None, *, vmlinux: str | None = None) -> dict[str, Any]:
    """The ``sections --json`` document: every present SPARSEMEM section of *source*.

    Raises what :func:`snapshot` raises.
    """
    from subsecinspect.render import jsondoc

    return jsondoc.sections_document(snapshot(source, vmlinux=vmlinux), tool_version=__version__)


def pgmaps_document(source: Source = None, *, vmlinux: str | None = None) -> dict[str, Any]:
    """The ``pgmaps --json`` document: every ``struct dev_pagemap`` of *source*.

    Raises what :func:`snapshot` raises.
    """
    from subsecinspect.render import jsondoc

    return jsondoc.pgmaps_document(snapshot(source, vmlinux=vmlinux), tool_version=__version__)


def dumps(document: dict[str, Any]) -> str:
    """A document as the command line prints it (2-space indent, trailing newline)."""
    from subsecinspect.render import jsondoc

    return jsondoc.dumps(document)
