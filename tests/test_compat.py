"""lwengine.compat.learnware: imports without the learnware package; the searcher needs it."""
from __future__ import annotations

import numpy as np
import pytest

from lwengine import RKMESpec, SpecIndex
from lwengine.compat import learnware as compat


def test_module_imports_and_reports_availability():
    assert isinstance(compat.available(), bool)
    if not compat.available():
        with pytest.raises(RuntimeError, match="learnware"):
            compat.make_searcher()


def test_restricted_search_follows_given_order():
    rng = np.random.default_rng(2)
    index = SpecIndex()
    spec = RKMESpec(rng.normal(size=(5, 3)), np.full(5, 0.2), 0.1)
    index.add("a", spec)
    index.add("b", spec)  # identical: an exact tie, broken by the given list order
    index.add("c", RKMESpec(rng.normal(size=(5, 3)) + 2, np.full(5, 0.2), 0.1))
    user = RKMESpec(rng.normal(size=(4, 3)), np.full(4, 0.25), 0.1)
    r = compat._restricted_search(index, ["c", "b", "a"], user, 5, "greedy")
    assert r.ranking == ["b", "a", "c"]
    r = compat._restricted_search(index, ["a", "c"], user, 5, "greedy")
    assert r.ranking == ["a", "c"]


def test_market_searcher_matches_easy_stat_searcher():
    pytest.importorskip("learnware")
    from learnware.market.easy import EasyStatSearcher  # noqa: F401

    searcher = compat.make_searcher()
    assert callable(searcher)
