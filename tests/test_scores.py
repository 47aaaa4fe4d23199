"""Score conversion and search post-processing against the reference's score/ fixtures."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lwengine.scores import convert_dist_to_score, image_transform, postprocess


def _cases(fixtures_dir, kind):
    root = fixtures_dir / "score"
    manifest = json.loads((root / "manifest.json").read_text())
    out = []
    for case in manifest["cases"]:
        if case["kind"] == kind:
            out.append(json.loads((root / case["path"] / "manifest.json").read_text()))
    assert out, f"no {kind} cases in the fixtures"
    return out


def test_convert_dist_to_score_fixtures(fixtures_dir):
    for case in _cases(fixtures_dir, "convert_dist_to_score"):
        got = convert_dist_to_score(case["inputs"]["dist_list"])
        want = case["expected"]["scores"]
        assert len(got) == len(want), case["case"]
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-12, err_msg=case["case"])


def test_search_postprocess_fixtures(fixtures_dir):
    for case in _cases(fixtures_dir, "search_postprocess"):
        inp, exp = case["inputs"], case["expected"]
        dists = inp["sorted_dist_list"]
        called = inp["search_method"] in ("greedy", "auto") and len(dists) > 0 and dists[0] > 0
        assert called == exp["mixture_search_called"], case["case"]
        mix = inp["mixture"] if called else None
        pp = postprocess(
            dists,
            None if mix is None else mix["mmd2"],
            mixture_len=0 if mix is None else len(mix["ids"]),
        )
        want_single = exp["single_results"]
        assert [inp["ids"][i] for i in range(pp.n_single)] == [s["id"] for s in want_single], case["case"]
        np.testing.assert_allclose(pp.single_scores, [s["score"] for s in want_single], atol=1e-12)
        if exp["multiple_results"]:
            assert pp.mixture_kept, case["case"]
            np.testing.assert_allclose(pp.mixture_score, exp["multiple_results"][0]["score"], atol=1e-12)
        else:
            assert not pp.mixture_kept and pp.mixture_score is None, case["case"]


def test_convert_edge_cases():
    assert convert_dist_to_score([]) == []
    assert convert_dist_to_score([0.3]) == [1]
    s = convert_dist_to_score([0.0, 0.5, 1.0])
    assert s[0] == 1.0 and s[-1] == 0.0


def test_image_transform():
    np.testing.assert_allclose(image_transform([0.0, 5e-5]), [0.0, 1.0 - np.exp(-1.0)])


def test_postprocess_length1_mixture_dropped_before_scoring():
    pp = postprocess([0.1, 0.12, 0.3], 0.05, mixture_len=1)
    assert pp.mixture_dropped == "length_1" and pp.mixture_score is None
    assert pp.single_scores == pytest.approx(convert_dist_to_score([0.1, 0.12, 0.3])[: pp.n_single])


def test_python_sum_is_the_builtin_sum_bit_for_bit():
    """The mean of the score's eps is the reference's Python ``sum``; the numpy shortcut used before
    Python 3.12 (where ``sum`` of floats became compensated) must give the same bits."""
    from lwengine.scores import python_sum

    rng = np.random.default_rng(0)
    for n in (1, 2, 7, 1000, 10000):
        for scale in (1e-300, 1e-8, 1.0, 1e12, 1e300):
            v = rng.standard_normal(n) * scale
            v[::3] *= 1e8  # wide dynamic range: plain and compensated sums differ here
            a, b = python_sum(v), sum(v.tolist())
            assert a == b or (np.isnan(a) and np.isnan(b))  # overflow to inf - inf at the largest scale
    assert python_sum(np.zeros(0)) == 0


def test_postprocess_sorted_equals_postprocess():
    """The search's scoring of a sorted array (scores only as far as the filter reads, the rest on
    demand) gives exactly postprocess's values, mixture rules included."""
    from lwengine.scores import postprocess, postprocess_sorted

    rng = np.random.default_rng(3)
    cases = long_prefix = 0
    for n in (1, 2, 3, 10, 500, 5000, 20000):
        for _ in range(12):
            d = np.sort(rng.gamma(rng.uniform(0.2, 5), size=n) * 10 ** rng.uniform(-6, 3))
            if rng.uniform() < 0.2:
                d[: max(1, n // 3)] = d[0]  # ties
            if rng.uniform() < 0.1:
                d[:] = d[0]  # all equal: the reference's integer scores
            mix = [None, float(d[0] * rng.uniform(0, 1.2))][int(rng.integers(0, 2))]
            for mlen in (0, 1, 2):
                a = postprocess(d, mix, mixture_len=mlen)
                b = postprocess_sorted(d, mix, mixture_len=mlen)
                before = b.scores_before_filter() if callable(b.scores_before_filter) else b.scores_before_filter
                assert (a.single_scores, a.n_single, a.mixture_score, a.mixture_kept, a.mixture_dropped,
                        a.mixture_score_before_filter) == \
                       (b.single_scores, b.n_single, b.mixture_score, b.mixture_kept, b.mixture_dropped,
                        b.mixture_score_before_filter)
                assert before == a.scores_before_filter
                assert [type(x) for x in before] == [type(x) for x in a.scores_before_filter]
                cases += 1
                long_prefix += a.n_single > 4096  # the scored prefix had to grow
    assert cases > 200 and long_prefix > 0
