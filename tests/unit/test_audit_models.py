"""The audit models (subsecinspect/classify/audit/) on built snapshots and saved lab snapshots.

Each test names the kernel situation and the PFNs a model must judge unsafe or
over-cautious there (kernel-semantics.md §5.2, §7).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from builders import FULL, K61, K510, ONLINE_EARLY, pgmap, section, snapshot
from typer.testing import CliRunner

from subsecinspect.classify.audit.models import MODELS
from subsecinspect.classify.audit.tally import Audit, audit
from subsecinspect.classify.classes import PageClass
from subsecinspect.classify.decide import classify
from subsecinspect.cli.app import app
from subsecinspect.snapshot.codec import snapshot_from_json
from subsecinspect.snapshot.model import Snapshot

FIXTURES = Path(__file__).parent / "fixtures"
PPS = K61.pages_per_section  # 32768
PER = K61.pages_per_subsection  # 512


def _load(name: str) -> Snapshot:
    return snapshot_from_json((FIXTURES / name).read_text())


def _run(snap: Snapshot, models: tuple[str, ...] = tuple(MODELS)) -> Audit:
    return audit(snap, classify(snap), models)


def _q(result: Audit, model: str, question: str):  # type: ignore[no-untyped-def]
    (m,) = [m for m in result.models if m.model.name == model]
    return m.questions[question]


def _class_spans(snap: Snapshot, cls: PageClass) -> list[tuple[int, int]]:
    return [(r.start_pfn, r.end_pfn) for r in classify(snap).ranges if r.cls is cls]


def test_kernel_pfn_valid_is_unsafe_exactly_on_the_altmap_reserve() -> None:
    snap = _load("nvdimm_mixed_6.1.json")
    res = _run(snap)
    c5 = _class_spans(snap, PageClass.C5_DEV_DRIVER_RESERVED)
    assert c5
    spans = [(a, b) for a, b, _ in _q(res, "kernel", "pfn_valid").spans("unsafe")]
    assert spans == c5
    # Initialising the reserve (Fukasawa 2019) closes exactly these pages.
    assert _q(res, "init-reserved", "pfn_valid").total("unsafe") == 0
    # memory_failure checks pgmap_pfn_valid() on 6.1: never unsafe on this layout.
    assert _q(res, "kernel", "walker:memory_failure").total("unsafe") == 0


def test_kpageflags_hides_every_device_page_until_a_walker_knows_zone_device() -> None:
    snap = _load("nvdimm_mixed_6.1.json")
    res = _run(snap)
    c2 = sum(b - a for a, b in _class_spans(snap, PageClass.C2_DEV_VALID))
    assert c2 > 0
    assert _q(res, "kernel", "walker:kpageflags").total("over_cautious") == c2
    for name in ("section-flag", "subsection-zone-device", "subsection-initialised"):
        q = _q(res, name, "walker:kpageflags")
        assert (q.total("over_cautious"), q.total("unsafe")) == (0, 0), name


def test_mid_init_case_4_is_unsafe_for_pfn_valid_and_get_dev_pagemap() -> None:
    snap = _load("mid_init_frontier.json")
    res = _run(snap)
    c4 = _class_spans(snap, PageClass.C4_DEV_INITIALISING)
    assert c4
    for question in ("pfn_valid", "get_dev_pagemap"):
        got = [(a, b) for a, b, c in _q(res, "kernel", question).spans("unsafe")
               if c is PageClass.C4_DEV_INITIALISING]
        assert got == c4, question
    # pgmap_pfn_valid() searches ranges below nr_range only: the range in progress is
    # hidden entirely, its initialised part (C2 below the frontier) too.
    ppv = _q(res, "kernel", "pgmap_pfn_valid")
    assert ppv.total("unsafe") == 0
    c2 = sum(b - a for a, b in _class_spans(snap, PageClass.C2_DEV_VALID))
    assert ppv.total("over_cautious") == c2 > 0


def _collision(k):  # type: ignore[no-untyped-def]
    """An online early section (RAM in its low half) whose upper half a pgmap still being
    registered (nr_range 0: case 4) shares; 6.1 taints it (move_pfn_range_to_zone)."""
    flags = ONLINE_EARLY + (("TAINT_ZONE_DEVICE",) if k.has("section_taint_zone_device") else ())
    secs = [section(0, ONLINE_EARLY), section(1, flags, smap=FULL)]
    pg = pgmap(0xFFFF888100000000, [(PPS + PPS // 2, 2 * PPS)], nr_range=0)
    return snapshot(k, secs, [pg])


@pytest.mark.parametrize(("k", "unsafe"), [(K510, True), (K61, False)])
def test_shared_section_case_4_is_what_v5_12_fixed(k, unsafe: bool) -> None:  # type: ignore[no-untyped-def]
    snap = _collision(k)
    res = _run(snap, ("kernel",))
    got = _q(res, "kernel", "pfn_to_online_page").spans("unsafe")
    expected = [(PPS + PPS // 2, 2 * PPS, PageClass.C4_DEV_INITIALISING)] if unsafe else []
    assert got == expected


def test_subsection_initialised_closes_case_4_for_every_question_it_changes() -> None:
    snap = _load("mid_init_frontier.json")
    res = _run(snap)
    for q in ("walker:kpageflags", "walker:memory_failure", "pgmap_pfn_valid"):
        t = _q(res, "subsection-initialised", q)
        assert t.classes[PageClass.C4_DEV_INITIALISING].pages.get("unsafe", 0) == 0, q
    # The doubled subsection_map (a ZONE_DEVICE bit, no "initialised" bit) does not:
    # its pfn_zone_device() says "device page" for the uninitialised range in progress.
    zd = _q(res, "subsection-zone-device", "pfn_zone_device")
    assert zd.classes[PageClass.C4_DEV_INITIALISING].pages.get("unsafe", 0) > 0


def test_extra_metadata_bytes_count_one_map_per_usage() -> None:
    snap = _load("nvdimm_mixed_6.1.json")
    res = _run(snap)
    with_usage = sum(1 for s in snap.sections if s.usage)
    by = {m.model.name: m.extra_bytes for m in res.models}
    assert by["subsection-zone-device"] == by["subsection-initialised"] == 8 * with_usage
    assert by["kernel"] == by["section-flag"] == by["init-reserved"] == 0


def test_cli_audit_json_lists_every_model_and_rejects_unknown_ones(tmp_path: Path) -> None:
    path = FIXTURES / "lab" / "nvdimm_mixed_5.10_dump.json"
    r = CliRunner().invoke(app, ["audit", str(path), "--model", "all", "--json"])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert doc["schema_version"] == 1 and doc["document"] == "audit"
    assert [m["name"] for m in doc["models"]] == list(MODELS)
    kernel = doc["models"][0]
    names = [q["name"] for q in kernel["questions"]]
    # 5.10: no pfn_to_online_page_fn but the pgmap_pfn_valid backport (feature bits).
    assert "pgmap_pfn_valid" in names
    for q in kernel["questions"]:
        assert isinstance(q["classes"], list)
        assert sum(c["pages"] for c in q["classes"]) == doc["end_pfn"]
    bad = CliRunner().invoke(app, ["audit", str(path), "--model", "nope"])
    assert bad.exit_code == 2
    assert "unknown model 'nope'" in bad.output
    tables = CliRunner().invoke(app, ["audit", str(path), "--model", "kernel",
                                         "--model", "section-flag"])
    assert tables.exit_code == 0 and "model section-flag" in tables.stdout


def test_groundtruth_parses_module_v2_lines_and_still_v1() -> None:
    from lab.groundtruth import parse

    v2 = ("subsec_gt v2 release=6.1 pgmap_pfn_valid=kernel\n"
          "pfn=0x45000 valid=1 online=0 pgmap=0xffff1 pgmap_pfn_valid=0 zone=- zone_idx=- "
          "nid=- page_pgmap=- dev_pagemap=0xffff1 dev_pgmap_pfn_valid=0\n"
          "pfn=0x12d000 valid=0 online=0 pgmap=- pgmap_pfn_valid=- zone=- zone_idx=- nid=- "
          "page_pgmap=- dev_pagemap=0xffff2 dev_pgmap_pfn_valid=1\n")
    a, b = parse(v2)
    assert (a.dev_pagemap, a.dev_pgmap_pfn_valid) == (0xFFFF1, False)
    assert (b.pgmap, b.dev_pagemap, b.dev_pgmap_pfn_valid) == (None, 0xFFFF2, True)
    (old,) = parse("pfn=0x1 valid=1 online=1 pgmap=- pgmap_pfn_valid=- zone=DMA zone_idx=0 "
                   "nid=0 page_pgmap=-\n")
    assert (old.dev_pagemap, old.dev_pgmap_pfn_valid, old.zone) == (None, None, "DMA")
