"""``classify DUMP... [--jobs N]``: many targets in one run, as JSON lines.

Each target is classified by its own ``subsecinspect classify TARGET --json`` child process
(the typer-free fast path), at most *jobs* at a time: a dump that makes drgn fail, hang or
even crash costs one error line and the others go on, and a worker holds one dump's memory,
never more. Output: one line per target, in the order given, each a complete document:
``classify`` (compact, the ``classify --json`` document) or ``classify_error``::

    {"schema_version": 1, "tool_version": "0.1.0", "document": "classify_error",
     "target": {"path": "bad.vmcore"}, "error": "truncated vmcore ...", "exit_code": 3}

A progress bar goes to stderr (a line per target when stderr is not a terminal). The exit
code is 0 when every target was classified, else the highest exit code of a failed one.
"""

from __future__ import annotations

import functools
import json
import subprocess
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from subsecinspect import __version__
from subsecinspect.cli.common import Opening, emit_text, say
from subsecinspect.errors import OptionError

__all__ = ("classify_many", "classify_one")

#: Per target: longer means a hung drgn (a TiB dump takes minutes, README Performance).
TIMEOUT_S = 3600.0


def _compact(document: dict[str, Any]) -> str:
    return json.dumps(document, separators=(",", ":"))


def _error_line(target: str, message: str, code: int) -> dict[str, Any]:
    return {"schema_version": 1, "tool_version": __version__, "document": "classify_error",
            "target": {"path": target}, "error": message, "exit_code": code}


def classify_one(target: str, opening: Opening, timeout: float = TIMEOUT_S
                 ) -> tuple[int, str]:
    """Classify *target* in a child process: ``(exit code, one JSON line)``."""
    argv = [sys.executable, "-m", "subsecinspect", "classify", target, "--json",
            *opening.argv()]
    try:
        r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return 1, _compact(_error_line(target, f"no answer within {timeout:.0f} s", 1))
    if r.returncode == 0:
        try:
            return 0, _compact(json.loads(r.stdout))
        except ValueError:
            return 1, _compact(_error_line(target, "the worker printed no JSON document", 1))
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("subsecinspect: error: ")]
    message = (lines[-1].removeprefix("subsecinspect: error: ") if lines
               else f"worker died (exit {r.returncode})")
    code = r.returncode if r.returncode > 0 else 1  # killed by a signal: a bug, exit 1
    return code, _compact(_error_line(target, message, code))


def _progress(total: int) -> tuple[Callable[[str, int], None], Callable[[], None]]:
    """``(advance(target, code), close())``: a rich bar on a terminal, else plain lines."""
    if not sys.stderr.isatty():
        done = [0]

        def line(target: str, code: int) -> None:
            done[0] += 1
            say(f"subsecinspect: [{done[0]}/{total}] {target}: "
                f"{'ok' if code == 0 else f'error (exit {code})'}")

        return line, lambda: None
    from rich.console import Console
    from rich.progress import Progress

    bar = Progress(console=Console(stderr=True), transient=False)
    task = bar.add_task("classifying", total=total)
    bar.start()
    return lambda target, code: bar.advance(task), bar.stop


def _advance(advance: Callable[[str, int], None], target: str, fut: Future[tuple[int, str]]
             ) -> None:
    advance(target, fut.result()[0])


def classify_many(targets: Sequence[str], opening: Opening, jobs: int,
                  output: str | None) -> int:
    """Classify every target, *jobs* at a time; JSON lines to stdout or *output*.

    :return: the exit code (0, or the highest of the failed targets).
    :raises OptionError: *jobs* < 1, or a saved snapshot with ``-s``.
    """
    if jobs < 1:
        raise OptionError("--jobs must be at least 1")
    if opening.vmlinux and any(t.endswith(".json") for t in targets):
        raise OptionError("-s/--vmlinux does not apply to a saved snapshot")
    advance, close = _progress(len(targets))
    lines: list[str] = []
    worst = 0
    try:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(classify_one, t, opening) for t in targets]
            for target, fut in zip(targets, futures, strict=True):
                fut.add_done_callback(functools.partial(_advance, advance, target))
            for fut in futures:
                code, line = fut.result()
                worst = max(worst, code)
                lines.append(line)
                if output is None:
                    sys.stdout.write(line + "\n")
                    sys.stdout.flush()
    finally:
        close()
    if output is not None:
        emit_text("".join(line + "\n" for line in lines), output)
    return worst
