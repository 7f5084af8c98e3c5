"""Snapshots round-trip through JSON; saved fixtures classify like their builders."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from strategies import snapshots
from test_classify_cases import CASES

from subsecinspect.classify.decide import classify
from subsecinspect.snapshot.codec import snapshot_from_json, snapshot_to_dict, snapshot_to_json
from subsecinspect.snapshot.model import Snapshot, SnapshotFormatError

FIXTURES = Path(__file__).parent / "fixtures"
#: Saved snapshots, named after the situation (style guide: a fixture is a saved snapshot).
FIXTURE_CASES = {"nvdimm_mixed_6.1", "mid_init_frontier", "unreadable_map_dev_live",
                 "legacy_e820_shared_early_sections"}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(snapshots())
def test_round_trip(snap: Snapshot) -> None:
    text = snapshot_to_json(snap)
    back = snapshot_from_json(text)
    assert back == snap
    assert classify(back) == classify(snap)


def test_unknown_key_is_rejected() -> None:
    build = CASES[0][1]
    data = snapshot_to_dict(build())
    data["sections"][0]["surprise"] = 1
    with pytest.raises(SnapshotFormatError, match="unknown keys"):
        snapshot_from_json(json.dumps(data))


@pytest.mark.parametrize("name", sorted(FIXTURE_CASES))
def test_saved_fixture_matches_builder(name: str) -> None:
    build = {c[0]: c[1] for c in CASES}[name]
    snap = build()
    path = FIXTURES / f"{name}.json"
    if os.environ.get("SUBSECINSPECT_REGEN_GOLDEN") == "1":  # after an intended change
        path.write_text(snapshot_to_json(snap, indent=1) + "\n")
    saved = snapshot_from_json(path.read_text())
    assert saved == snap
    assert classify(saved).ranges == classify(snap).ranges
