"""Fuzzing the saved-snapshot decoder (issue #6.5a): random and mutated documents.

Seeds are real saved snapshots (tests/unit/fixtures/*.json, fixtures/lab/*.json: what the
readers saved from the lab kernels). Mutations: dropped, renamed and added keys, wrong types,
huge/negative integers, NaN/Infinity, unicode, nested garbage, other schema versions, list
items dropped or duplicated, and the text truncated or overwritten with random bytes.

Contract: :func:`snapshot_from_json` returns a :class:`Snapshot` that the classifier accepts
and that round-trips, or raises :class:`SnapshotFormatError` with one line; never another
exception. The CLI (``classify FILE``, ``--json``) answers exit 0 or the documented exit 3
with one ``subsecinspect: error:`` line, never a traceback.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from subsecinspect.classify.decide import classify
from subsecinspect.cli.app import app
from subsecinspect.errors import EXIT_CODES, TargetError
from subsecinspect.snapshot.codec import snapshot_from_json, snapshot_to_json
from subsecinspect.snapshot.model import SNAPSHOT_FORMAT, Snapshot, SnapshotFormatError

FIXTURES = Path(__file__).parent / "fixtures"
SEEDS: dict[str, Any] = {}
for _p in sorted(FIXTURES.glob("*.json")) + sorted((FIXTURES / "lab").glob("*.json")):
    _doc = json.loads(_p.read_text())
    if isinstance(_doc, dict) and _doc.get("format") == SNAPSHOT_FORMAT and "kernel" in _doc:
        SEEDS[_p.stem] = _doc
#: Golden *output* documents (classify/explain --json): JSON, but not snapshots.
OTHER_DOCS = {p.stem: p.read_text() for p in sorted(FIXTURES.glob("golden_*.json"))}

FUZZ = settings(deadline=None, max_examples=150,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

INTS = st.one_of(
    st.integers(-3, 70), st.integers(-(1 << 70), 1 << 70),
    st.sampled_from([-1, 0, 1 << 63, (1 << 64) - 1, 1 << 64, -(1 << 63) - 1, 10**30]),
)
TEXT = st.text(st.characters(codec="utf-8"), max_size=12) | st.sampled_from(
    ["", "read", "UNREADABLE", "\u0000", "\ud7ff\ue000", "é" * 50, "MEMORY_DEVICE_FS_DAX"])
SCALARS = st.one_of(st.none(), st.booleans(), INTS, st.floats(allow_nan=True), TEXT)
GARBAGE = st.recursive(
    SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4),
    max_leaves=12,
)


def _paths(doc: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path into *doc* (dict keys and list indices), the root included."""
    out = [prefix]
    if isinstance(doc, dict):
        for k, v in doc.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(doc, list):
        for i, v in enumerate(doc):
            out += _paths(v, (*prefix, i))
    return out


def _get(doc: Any, path: tuple[Any, ...]) -> Any:
    for p in path:
        doc = doc[p]
    return doc


@st.composite
def _mutate_once(draw: st.DrawFn, doc: Any) -> Any:
    paths = _paths(doc)
    path = draw(st.sampled_from(paths))
    if not path:  # the whole document: garbage, or another schema version
        if isinstance(doc, dict) and draw(st.booleans()):
            return {**doc, "format": draw(INTS | SCALARS)}
        return draw(GARBAGE)
    parent, key = _get(doc, path[:-1]), path[-1]
    value = parent[key]
    if draw(st.integers(0, 9)) < 6:  # keep the type: the value changes, the schema holds
        if isinstance(value, bool):
            parent[key] = not value
        elif isinstance(value, int):
            parent[key] = draw(INTS | st.integers(value - 70, value + 70))
        elif isinstance(value, str):
            parent[key] = draw(TEXT)
        elif isinstance(value, list) and value:
            i = draw(st.integers(0, len(value) - 1))
            if draw(st.booleans()):
                value.append(value[i])  # a duplicate (section, pgmap, range...)
            else:
                value.pop(i)
        return doc
    op = draw(st.sampled_from(["drop", "rename", "add", "scalar", "float", "wrap", "empty"]))
    if op == "drop":
        parent.pop(key)
    elif op == "rename" and isinstance(parent, dict):
        parent[draw(TEXT)] = parent.pop(key)
    elif op == "add" and isinstance(value, dict):
        value[draw(TEXT)] = draw(GARBAGE)
    elif op == "scalar":
        parent[key] = draw(SCALARS)
    elif op == "float" and isinstance(value, int) and not isinstance(value, bool):
        parent[key] = draw(st.sampled_from([float(value), math.nan, math.inf, -math.inf]))
    elif op == "wrap":
        parent[key] = draw(st.sampled_from([[value], {"value": value}, str(value)]))
    elif op == "empty":
        parent[key] = type(value)() if isinstance(value, list | dict | str) else None
    else:
        parent[key] = draw(GARBAGE)
    return doc


@st.composite
def mutated_documents(draw: st.DrawFn) -> str:
    """A real saved snapshot with 1-4 mutations, as JSON text (maybe truncated or overwritten)."""
    doc = json.loads(json.dumps(SEEDS[draw(st.sampled_from(sorted(SEEDS)))]))
    for _ in range(draw(st.integers(1, 4))):
        doc = draw(_mutate_once(doc))
    text = json.dumps(doc, ensure_ascii=draw(st.booleans()))
    damage = draw(st.sampled_from(["none"] * 8 + ["truncate", "overwrite"]))
    if damage == "truncate":
        text = text[: draw(st.integers(0, len(text)))]
    elif damage == "overwrite":
        at = draw(st.integers(0, len(text)))
        text = text[:at] + draw(st.text(max_size=8)) + text[at + 8:]
    return text


def _check_decoder(text: str | bytes) -> Snapshot | None:
    """The contract; returns the snapshot when it decoded."""
    try:
        snap = snapshot_from_json(text)
    except SnapshotFormatError as e:
        msg = str(e)
        assert msg and "\n" not in msg and len(msg) < 400, repr(msg)
        return None
    assert isinstance(snap, Snapshot)
    result = classify(snap)  # a decoded snapshot is one the classifier accepts
    pos = 0
    for r in result.ranges:
        assert r.start_pfn == pos < r.end_pfn
        pos = r.end_pfn
    assert pos == result.end_pfn
    assert snapshot_from_json(snapshot_to_json(snap)) == snap
    return snap


def test_every_seed_decodes() -> None:
    assert len(SEEDS) >= 10, sorted(SEEDS)
    for name, doc in SEEDS.items():
        assert _check_decoder(json.dumps(doc)) is not None, name


def _fuzz(strategy: st.SearchStrategy[Any], examples: int) -> Counter[str]:
    """Run the decoder contract on *examples* drawn documents; count the outcomes."""
    seen: Counter[str] = Counter()

    @settings(FUZZ, max_examples=examples)
    @given(strategy)
    def run(text: str | bytes) -> None:
        seen["decoded and classified" if _check_decoder(text) else "refused"] += 1

    run()
    return seen


def _summary(seen: Counter[str]) -> str:
    return "; ".join(f"{n} {what}" for what, n in sorted(seen.items())) + \
        "; no other exception"


def test_mutated_snapshots_decode_or_raise_one_line(bad_input_record: Any) -> None:
    seen = _fuzz(mutated_documents(), 150)
    bad_input_record("mutated real snapshots", "snapshot_from_json() on 150 saved snapshots "
                     "with 1-4 mutations each", _summary(seen), None, group="fuzz")
    assert seen["refused"] and seen["decoded and classified"], seen


def test_random_documents_decode_or_raise_one_line(bad_input_record: Any) -> None:
    seen = _fuzz(st.one_of(GARBAGE.map(json.dumps), st.text(max_size=200),
                           st.binary(max_size=200)), 100)
    bad_input_record("random documents", "snapshot_from_json() on 100 random JSON values, "
                     "texts and byte strings", _summary(seen), None, group="fuzz")
    assert seen["refused"] == 100, seen


HOSTILE = {
    "nested 100000 deep": "[" * 100_000 + "]" * 100_000,
    "5000-digit integer": '{"format": ' + "9" * 5000 + "}",
    "NaN format": '{"format": NaN}',
    "Infinity page_shift": None,  # filled below from a seed
    "invalid UTF-8": b'{"format": 1, "kernel": "\xff\xfe"}',
    "empty file": "",
    "a classify --json document": next(iter(OTHER_DOCS.values()), "{}"),
}


def _seed_with(**kernel: Any) -> str:
    doc = json.loads(json.dumps(SEEDS["nvdimm_mixed_6.1"]))
    doc["kernel"].update(kernel)
    return json.dumps(doc)


HOSTILE["Infinity page_shift"] = _seed_with(page_shift=math.inf)
HOSTILE.update({
    "page_shift 40 (past SUBSECTION_SHIFT)": _seed_with(page_shift=40),
    "section_size_bits 100": _seed_with(section_size_bits=100),
    "page_shift -1": _seed_with(page_shift=-1),
    "zone_device past nr_zones": _seed_with(zone_device=9),
    "schema format 2": json.dumps({**SEEDS["nvdimm_mixed_6.1"], "format": 2}),
})


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_documents(case: str) -> None:
    assert _check_decoder(HOSTILE[case]) is None, "decoded a document no kernel can produce"


# --- the CLI on the same files ----------------------------------------------------------

RUNNER = CliRunner()


def _cli(path: Path, *extra: str) -> tuple[int, str, str]:
    r = RUNNER.invoke(app, ["classify", str(path), *extra])
    return r.exit_code, r.stdout, r.stderr


def _check_cli(rc: int, out: str, err: str) -> None:
    assert "Traceback" not in err + out
    if rc == 0:
        return
    assert rc == TargetError.exit_code, (rc, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("subsecinspect: error: "), err
    assert "is not a saved subsecinspect snapshot" in lines[0], err


def test_cli_on_mutated_files(tmp_path_factory: pytest.TempPathFactory,
                              bad_input_record: Any) -> None:
    seen: Counter[str] = Counter()

    @settings(FUZZ, max_examples=40)
    @given(text=mutated_documents(), as_json=st.booleans())
    def run(text: str, as_json: bool) -> None:
        path = tmp_path_factory.mktemp("fuzz") / "snap.json"
        path.write_text(text)
        rc, out, err = _cli(path, *(["--json"] if as_json else []))
        _check_cli(rc, out, err)
        if rc == 0 and as_json:
            assert json.loads(out)["ranges"] is not None
        seen[f"exit {rc}"] += 1

    run()
    bad_input_record("mutated snapshot files", "classify FILE.json [--json] on 40 mutated "
                     "saved snapshots (in-process CliRunner)",
                     "; ".join(f"{n}x {k}" for k, n in sorted(seen.items()))
                     + " (one line each); no traceback", None, group="fuzz")
    assert set(seen) <= {"exit 0", "exit 3"}, seen


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_cli_process_on_hostile_files(case: str, tmp_path: Path, bad_input_record: Any) -> None:
    """A real process per hostile file: exit 3 and one line, nothing on stdout."""
    data = HOSTILE[case]
    path = tmp_path / "snap.json"
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))
    r = subprocess.run([sys.executable, "-m", "subsecinspect", "classify", str(path), "--json"],
                       capture_output=True, text=True, timeout=120)
    bad_input_record(f"saved snapshot: {case}", "classify <file>.json --json", r.stderr,
                     r.returncode, group="saved snapshots")
    assert r.returncode == 3, (r.returncode, EXIT_CODES.get(r.returncode), r.stderr)
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("subsecinspect: error: "), r.stderr


def _markup_snapshot() -> str:
    """nvdimm_mixed_6.1 with rich markup in every free-text field a damaged dump can fill."""
    doc = json.loads(json.dumps(SEEDS["nvdimm_mixed_6.1"]))
    doc["kernel"]["release"] = "6.1[/]"
    for pg in doc["pgmaps"]:
        pg["type"] = "[/]MEMORY_DEVICE_FS_DAX"
    for b in doc["memory_blocks"]:
        b["state"], b["zone"] = "[/]online", "[bold]Movable"  # zone: a string read from the dump
    doc["warnings"] = ["[/red] a warning"]
    return json.dumps(doc)


@pytest.mark.parametrize("command", [["classify"], ["classify", "--json"], ["sections"],
                                     ["pgmaps"], ["explain", "pfn:0x100000"]], ids=" ".join)
def test_markup_in_snapshot_strings_is_printed_literally(command: list[str], tmp_path: Path,
                                                         bad_input_record: Any) -> None:
    path = tmp_path / "snap.json"
    path.write_text(_markup_snapshot())
    r = RUNNER.invoke(app, [*command, str(path)])
    bad_input_record(f"rich markup in snapshot strings ({' '.join(command)})",
                     f"{' '.join(command)} FILE.json with '[/]' in release/type/state/zone",
                     r.stderr if r.exit_code else f"exit 0, {len(r.stdout.splitlines())} "
                     f"lines{'; [/] shown literally' if '[/]' in r.stdout else ''}",
                     r.exit_code, group="saved snapshots")
    assert r.exit_code == 0, r.stderr
    if command[0] in ("pgmaps", "explain"):  # these show the pgmap type in full
        assert "[/]" in r.stdout
