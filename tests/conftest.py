"""Suite-wide fixtures: the bad-input recorder behind the README table.

Bad-input tests call :func:`bad_input_record` with what they *observed* (never what they
expect): the case, what was tried, the tool's answer (its one-line error, or the labelled
degraded result) and the exit code. At the end of the session the records are merged into
one JSON file, ``$SUBSECINSPECT_BAD_INPUT_JSON`` or ``<lab cache>/results/bad-input.json``
(the lab cache is ``$SUBSECINSPECT_LAB_CACHE`` or ``~/.cache/subsecinspect-lab``), and
``scripts/bad_input_table.py`` renders that file into README.md.

Merging: records of every test that ran in this session replace that test's earlier records
(by pytest node id, so ``LAB_KERNELS=6.1`` replaces only the 6.1 rows); records of tests that
did not run are kept. Each record carries the test's outcome (passed/failed/...).

Usage (the fixture is session-scoped, so module-scoped fixtures may use it too)::

    def test_missing_target(bad_input_record, tmp_path):
        r = run("classify", str(tmp_path / "nope"))
        bad_input_record("missing vmcore", "classify <tmp>/nope", r.stderr, r.returncode)
        assert r.returncode == 3
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import re
from pathlib import Path
from typing import Any, Protocol

import pytest
from hypothesis import settings

__all__ = ("RESULTS_ENV", "BadInputRecord", "bad_input_record", "results_path")

#: Environment variable naming the JSON file of the bad-input records.
RESULTS_ENV = "SUBSECINSPECT_BAD_INPUT_JSON"
RESULTS_FORMAT = 1
_MAX_ANSWER = 240


def _lab_cache() -> Path:
    cache = os.environ.get("SUBSECINSPECT_LAB_CACHE")
    return Path(cache) if cache else Path.home() / ".cache" / "subsecinspect-lab"


def results_path() -> Path:
    env = os.environ.get(RESULTS_ENV)
    return Path(env) if env else _lab_cache() / "results" / "bad-input.json"


class BadInputRecord(Protocol):
    def __call__(
        self,
        case: str,
        tried: str,
        answer: str,
        exit_code: int | None,
        *,
        kernel: str | None = None,
        group: str | None = None,
    ) -> None: ...


class _Recorder:
    """Collects records during the session; remembers which tests ran and how they ended."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.current: str | None = None
        self.ran: set[str] = set()
        self.outcomes: dict[str, str] = {}
        self.substitutions: list[tuple[str, str]] = []

    def clean(self, text: str) -> str:
        """One line: the tool's error/warning lines, temp paths as ``<tmp>``, bounded length."""
        for path, name in (*self.substitutions, (str(_lab_cache()), "<lab-cache>")):
            text = text.replace(path, name)
        text = re.sub(r"/tmp/pytest-of-[^/\s]+/pytest-\d+", "<tmp>", text)
        text = re.sub(r"<tmp>/[^/\s]+/", "<tmp>/", text)  # the per-test directory
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        tool = [ln for ln in lines if ln.startswith("subsecinspect: ")]
        one = " / ".join(tool or lines)
        return one if len(one) <= _MAX_ANSWER else one[: _MAX_ANSWER - 1] + "…"

    def record(
        self,
        case: str,
        tried: str,
        answer: str,
        exit_code: int | None,
        *,
        kernel: str | None = None,
        group: str | None = None,
    ) -> None:
        test = self.current or "?"
        module = Path(test.split("::", 1)[0]).stem
        self.records.append({
            "case": case,
            "tried": self.clean(tried),
            "answer": self.clean(answer),
            "exit_code": exit_code,
            "traceback": "Traceback (most recent call last)" in answer,
            "kernel": kernel,
            "group": group or module,
            "test": test,
        })

    def write(self, path: Path) -> None:
        if not self.records and not (self.ran & self._old_tests(path)):
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        for r in self.records:
            r["outcome"] = self.outcomes.get(r["test"], "unknown")
            r["recorded"] = stamp
        with open(path.with_suffix(".lock"), "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            old = self._load(path)
            kept = [r for r in old if r.get("test") not in self.ran]
            doc = {"format": RESULTS_FORMAT, "records": kept + self.records}
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc, indent=1, ensure_ascii=False) + "\n")
            os.replace(tmp, path)

    @staticmethod
    def _load(path: Path) -> list[dict[str, Any]]:
        with contextlib.suppress(OSError, ValueError):
            doc = json.loads(path.read_text())
            if isinstance(doc, dict) and doc.get("format") == RESULTS_FORMAT:
                return [r for r in doc.get("records", []) if isinstance(r, dict)]
        return []

    def _old_tests(self, path: Path) -> set[str]:
        return {str(r.get("test")) for r in self._load(path)}


_RECORDER = _Recorder()

# Hypothesis: CI (CI=true) runs derandomized, so a CI failure reproduces anywhere with the same
# code; locally examples are random and failures are kept in .hypothesis/ for replay.
settings.register_profile("ci", derandomize=True, database=None, deadline=None,
                          print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI", "").lower() == "true" else "dev")


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    _RECORDER.current = item.nodeid
    _RECORDER.ran.add(item.nodeid)


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    prev = _RECORDER.outcomes.get(report.nodeid)
    if report.when == "call" or report.outcome != "passed":
        if prev in (None, "passed"):
            _RECORDER.outcomes[report.nodeid] = report.outcome


def pytest_sessionfinish(session: pytest.Session) -> None:
    if getattr(session.config, "workerinput", None) is not None:
        return  # xdist worker: nothing to merge from here
    _RECORDER.write(results_path())


@pytest.fixture(scope="session")
def bad_input_record(tmp_path_factory: pytest.TempPathFactory) -> BadInputRecord:
    """Record one bad-input case: ``(case, tried, answer, exit_code, *, kernel, group)``.

    *answer* is what the tool said (pass its stderr: the ``subsecinspect:`` lines are kept,
    joined into one line), or for a degraded result a short description of what it labelled
    (e.g. ``"exit 0; warning ...; CORRUPT over the pgmap"``). *exit_code* is the observed
    process exit code (``None`` for an in-process API call that raised). Record before
    asserting, so a failing case is still tabled (with outcome "failed").
    """
    base = str(tmp_path_factory.getbasetemp())
    _RECORDER.substitutions = [(base, "<tmp>")]
    return _RECORDER.record
