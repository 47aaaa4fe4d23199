"""Semantic filter against the reference's semantic/ fixtures."""
from __future__ import annotations

import json

import pytest

from lwengine.semantic import match_tags, semantic_filter


def _load(fixtures_dir):
    root = fixtures_dir / "semantic"
    lws = json.loads((root / "learnwares.json").read_text())["learnwares"]
    manifest = json.loads((root / "manifest.json").read_text())
    cases = [json.loads((root / c["path"] / "manifest.json").read_text()) for c in manifest["cases"]]
    return [(lw["id"], lw["semantic_spec"]) for lw in lws], cases


def test_semantic_fixtures(fixtures_dir):
    lws, cases = _load(fixtures_dir)
    assert len(cases) >= 15
    for case in cases:
        inp = case["inputs"]
        got = semantic_filter(lws, inp["user_semantic_spec"], max_num=inp["max_num"], min_score=inp["min_score"])
        assert got == case["expected"]["ids"], case["case"]


def test_partial_ratio_matches_fixture(fixtures_dir):
    from rapidfuzz import fuzz

    lws, cases = _load(fixtures_dir)
    specs = dict(lws)
    for case in cases:
        name = case["inputs"]["user_semantic_spec"].get("Name", {}).get("Values", "").lower()
        for row in case["expected"].get("partial_ratio", []):
            s = specs[row["id"]]
            assert fuzz.partial_ratio(name, s["Name"]["Values"].lower()) == pytest.approx(row["name"])
            assert fuzz.partial_ratio(name, s["Description"]["Values"].lower()) == pytest.approx(row["description"])


def test_none_keeps_all_in_order():
    lws = [("b", None), ("a", {"Name": {"Type": "String", "Values": "x"}})]
    assert semantic_filter(lws, None) == ["b", "a"]


def test_learnware_id_key_rejects_unless_others():
    lws = [("00000001", {"Data": {"Type": "Class", "Values": ["Table"]}})]
    assert semantic_filter(lws, {"learnware_id": {"Values": "0001"}}) == []
    assert match_tags({"learnware_id": {"Values": "Others"}}, lws[0][1])


def test_max_num_caps_fuzzy():
    lws = [(f"{i:08d}", {"Name": {"Type": "String", "Values": "house price model"},
                         "Description": {"Type": "String", "Values": ""}}) for i in range(5)]
    user = {"Name": {"Type": "String", "Values": "hous prce"}}
    assert semantic_filter(lws, user, max_num=2) == ["00000000", "00000001"]


def test_bad_user_type():
    with pytest.raises(TypeError, match="semantic"):
        semantic_filter([("a", {})], ["not", "a", "dict"])
