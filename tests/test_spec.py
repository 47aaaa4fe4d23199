"""RKMESpec: construction, inner products (kernel/ and real/ fixtures), JSON I/O, herding, fit_many."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import lwengine
from lwengine import RKMESpec
from lwengine import _reference as ref

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "learnware-0.4.0.post1"
KERNEL = FIXTURES / "kernel"


def _kernel_cases():
    if not (KERNEL / "manifest.json").is_file():
        return []
    return [c["path"] for c in json.loads((KERNEL / "manifest.json").read_text())["cases"]
            if (KERNEL / c["path"] / "a.json").is_file()]


def _oracle_inner(p, q):
    k = ref.gauss_kernel(p.z.reshape(p.K, -1), q.z.reshape(q.K, -1), p.gamma)
    return float(p.beta @ k @ q.beta)


class FakeTensor:
    """Duck-typed torch tensor (torch is not a dependency)."""

    def __init__(self, a):
        self.a = np.asarray(a)

    def detach(self):
        return self

    def cpu(self):
        return self

    def numpy(self):
        return self.a


def _random_spec(rng, K, d, gamma=0.1, shape=None):
    z = rng.standard_normal((K, d) if shape is None else (K,) + shape)
    beta = rng.random(K)
    return RKMESpec(z, beta / beta.sum(), gamma, num_points=3 * K)


# ------------------------------------------------------------------------------ construction
def test_constructor_attributes_and_inputs():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((7, 3, 2)).astype(np.float32)
    beta = rng.random(7)
    for zin, bin_ in [(z, beta), (z.tolist(), beta.tolist()), (FakeTensor(z), FakeTensor(beta))]:
        s = RKMESpec(zin, bin_, gamma=0.5, num_points=11)
        assert s.z.dtype == np.float64 and s.z.shape == (7, 3, 2) and s.z_shape == (3, 2)
        assert s.K == 7 and s.dim == 6 and s.gamma == 0.5 and s.num_points == 11
        np.testing.assert_array_equal(s.z, z.astype(np.float64))
        np.testing.assert_array_equal(s.beta, beta)
    assert RKMESpec(z, beta).num_points == 7


@pytest.mark.parametrize("args, exc, match", [
    ((np.zeros((0, 3)), np.zeros(0)), ValueError, "z must have shape"),
    ((np.zeros((3, 2)), np.zeros(2)), ValueError, "beta must have shape"),
    ((np.zeros((3, 2)), np.zeros((3, 1))), ValueError, "beta must have shape"),
    ((np.zeros((3, 2)), np.zeros(3), 0.0), ValueError, "gamma"),
    ((np.zeros((3, 2)), np.zeros(3), float("nan")), ValueError, "gamma"),
    ((np.zeros((3, 2)), np.zeros(3), "0.1"), TypeError, "gamma"),
    ((np.zeros((3, 2)), np.zeros(3), 0.1, -1), ValueError, "num_points"),
    ((np.zeros((3, 2)), np.zeros(3), 0.1, 2.5), ValueError, "num_points"),
    (([["a", "b"]], [1.0]), TypeError, "z must hold real numbers"),
    (([[1.0, 2.0], [1.0]], [1.0, 1.0]), ValueError, "z must be a rectangular"),
    ((np.zeros(3), None), TypeError, "beta"),
])
def test_constructor_rejects(args, exc, match):
    with pytest.raises(exc, match=match):
        RKMESpec(*args)


# ------------------------------------------------------------------------------ inner products
@pytest.mark.parametrize("K1, K2, d", [(1, 1, 1), (7, 97, 3), (97, 7, 65), (5, 1, 20)])
def test_inner_prod_and_dist_match_oracle(K1, K2, d):
    rng = np.random.default_rng(K1 * 1000 + K2 * 10 + d)
    p, q = _random_spec(rng, K1, d, 0.1), _random_spec(rng, K2, d, 0.37)
    np.testing.assert_allclose(p.inner_prod(q), _oracle_inner(p, q), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(q.inner_prod(p), _oracle_inner(q, p), rtol=1e-12, atol=1e-15)
    expected = _oracle_inner(p, p) - 2 * _oracle_inner(p, q) + _oracle_inner(q, q)
    np.testing.assert_allclose(p.dist(q), expected, rtol=1e-9, atol=1e-14)
    assert p.dist(p) == 0.0
    assert RKMESpec(p.z.copy(), p.beta.copy(), p.gamma).dist(p) == 0.0


def test_inner_prod_flattens_trailing_shape_and_rejects_mismatch():
    rng = np.random.default_rng(1)
    p = _random_spec(rng, 5, 0, shape=(2, 3))
    q = RKMESpec(p.z.reshape(5, 6), p.beta, p.gamma)
    assert p.inner_prod(q) == pytest.approx(_oracle_inner(p, q), rel=1e-12)
    with pytest.raises(ValueError, match="dimension"):
        p.inner_prod(_random_spec(rng, 5, 4))
    with pytest.raises(TypeError, match="RKMESpec"):
        p.inner_prod(np.zeros((5, 6)))


@pytest.mark.parametrize("name", _kernel_cases())
def test_kernel_fixtures(name):
    case = KERNEL / name
    e = json.loads((case / "manifest.json").read_text())["expected"]
    a = RKMESpec.load(case / "a.json")
    b = RKMESpec.load(case / ("b.json" if (case / "b.json").is_file() else "a.json"))
    scale = max(abs(e["inner_prod_aa"]), abs(e["inner_prod_bb"]), abs(e["inner_prod_ab"]), 1e-300)
    got = {"inner_prod_ab": a.inner_prod(b), "inner_prod_ba": b.inner_prod(a), "inner_prod_aa": a.inner_prod(a),
           "inner_prod_bb": b.inner_prod(b), "dist_ab": a.dist(b), "dist_ba": b.dist(a)}
    for key, value in got.items():
        # inner products to 1e-9 relative; a dist is a difference of O(scale) terms
        tol = 1e-9 * (abs(e[key]) if key.startswith("inner") else scale)
        assert abs(value - e[key]) <= tol, f"{key}: {value!r} vs {e[key]!r}"
    if name == "k04_self":
        assert a.dist(b) == 0.0


def test_real_old_format_file():
    path = FIXTURES / "real" / "stat.json"
    if not path.is_file():
        pytest.skip("real/ fixtures not found")
    e = json.loads((FIXTURES / "real" / "stat_json_manifest.json").read_text())["expected"]
    s = RKMESpec.load(path)
    other = RKMESpec.load(FIXTURES / "real" / "other_64d.json")
    assert (s.K, list(s.z_shape), s.gamma, s.num_points) == (e["K"], e["d"], e["gamma"], e["num_points"])
    assert s.inner_prod(s) == pytest.approx(e["self_inner_prod"], rel=1e-9)
    assert s.dist(s) == e["self_dist"] == 0.0
    assert s.inner_prod(other) == pytest.approx(e["inner_prod_stat_other"], rel=1e-9)
    assert other.inner_prod(s) == pytest.approx(e["inner_prod_other_stat"], rel=1e-9)
    assert s.dist(other) == pytest.approx(e["dist_stat_other"], rel=1e-9)
    assert other.dist(s) == pytest.approx(e["dist_other_stat"], rel=1e-9)
    assert json.loads(s.dumps())["type"] == e["type_after_load"]


# ------------------------------------------------------------------------------ JSON
@pytest.mark.parametrize("shape", [(7, 3), (1, 1), (4, 2, 3), (5,)])
def test_save_load_round_trip_bit_exact(tmp_path, shape):
    rng = np.random.default_rng(3)
    z = rng.standard_normal(shape) * 10.0 ** rng.integers(-30, 30, size=shape)
    beta = rng.standard_normal(shape[0]) / 3
    s = RKMESpec(z, beta, gamma=0.1 / 3, num_points=12345)
    s.save(tmp_path / "s.json")
    text = (tmp_path / "s.json").read_text()
    assert "\n" not in text and ", " not in text and ": " not in text
    d = json.loads(text)
    assert list(d) == ["z", "beta", "gamma", "num_points", "type"] and d["type"] == "RKMETableSpecification"
    t = RKMESpec.load(tmp_path / "s.json")
    assert t.z.shape == shape and t.z.tobytes() == s.z.tobytes() and t.beta.tobytes() == s.beta.tobytes()
    assert (t.gamma, t.num_points) == (s.gamma, s.num_points)
    assert t.dumps() == text


def test_load_non_finite_tokens_and_legacy(tmp_path):
    (tmp_path / "nf.json").write_text('{"z":[[NaN,1.0],[Infinity,-Infinity]],"beta":[0.5,NaN],"gamma":0.1,'
                                      '"num_points":2,"type":"RKMETableSpecification"}')
    s = RKMESpec.load(tmp_path / "nf.json")
    assert np.isnan(s.z[0, 0]) and np.isposinf(s.z[1, 0]) and np.isnan(s.beta[1])
    assert not np.isfinite(s.inner_prod(s))
    (tmp_path / "legacy.json").write_text('{"z":[[1.0]],"beta":[1.0],"gamma":0.2,"num_points":5,'
                                          '"type":"RKMEStatSpecification","cuda_idx":-1,"device":"cpu"}')
    s = RKMESpec.load(tmp_path / "legacy.json")
    assert (s.K, s.gamma, s.num_points) == (1, 0.2, 5)


@pytest.mark.parametrize("text, match", [
    ('{"z":[[1.0]],"beta":[1.0],"gamma":0.1', "invalid JSON"),
    ('[1, 2]', "JSON object"),
    ('{"z":[[1.0]],"beta":[1.0],"gamma":0.1}', "missing key.*num_points"),
    ('{"beta":[1.0],"gamma":0.1,"num_points":1}', "missing key.*z"),
    ('{"z":[[1.0,2.0],[1.0]],"beta":[1.0,1.0],"gamma":0.1,"num_points":1}', "z is ragged"),
    ('{"z":[[1.0],[2.0]],"beta":[1.0],"gamma":0.1,"num_points":1}', "beta must have shape"),
    ('{"z":[["a"]],"beta":[1.0],"gamma":0.1,"num_points":1}', "z must hold numbers"),
    ('{"z":[[1.0]],"beta":[null],"gamma":0.1,"num_points":1}', "beta"),
    ('{"z":[[1.0]],"beta":[1.0],"gamma":"x","num_points":1}', "gamma"),
    ('{"z":[[1.0]],"beta":[1.0],"gamma":0.1,"num_points":1,"type":"RKMEImageSpecification"}', "type must be"),
    ('{"z":[],"beta":[],"gamma":0.1,"num_points":1}', "K >= 1"),
])
def test_load_malformed(tmp_path, text, match):
    path = tmp_path / "bad.json"
    path.write_text(text)
    with pytest.raises(ValueError, match=match) as info:
        RKMESpec.load(path)
    assert str(path) in str(info.value)


def test_load_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError):
        RKMESpec.load(tmp_path / "nope.json")


# ------------------------------------------------------------------------------ fit
def test_fit_inputs_and_validation():
    rng = np.random.default_rng(5)
    X = rng.standard_normal((40, 2, 3)).astype(np.float64)
    a = RKMESpec.fit(X, K=7, seed=1)
    assert a.z.shape == (7, 2, 3) and a.num_points == 40
    b = RKMESpec.fit(FakeTensor(X), K=7, seed=1)
    c = RKMESpec.fit(X.tolist(), K=7, seed=1)
    np.testing.assert_array_equal(a.z, b.z)
    np.testing.assert_array_equal(a.z, c.z)
    one_d = RKMESpec.fit(rng.standard_normal(30), K=5, seed=0)
    assert one_d.z.shape == (5,) and one_d.z_shape == ()
    with pytest.raises(ValueError, match="X must have shape"):
        RKMESpec.fit(np.zeros((0, 3)))
    with pytest.raises(ValueError, match="K must be"):
        RKMESpec.fit(X, K=0)
    with pytest.raises(ValueError, match="update must be"):
        RKMESpec.fit(X, update="sgd")
    with pytest.raises(ValueError, match="init_z must have shape"):
        RKMESpec.fit(X, init_z=np.zeros((4, 5)))
    with pytest.raises(TypeError, match="X must hold real numbers"):
        RKMESpec.fit([["a"]])


def test_fit_size_cap():
    X = np.random.default_rng(0).standard_normal((200, 20000)).astype(np.float32)
    s = RKMESpec.fit(X, K=100, steps=0, seed=0)
    assert s.K == max(20, 1_310_720 // 20000) == 65


def test_fit_init_z_defines_K_and_signed_beta():
    rng = np.random.default_rng(9)
    X = rng.standard_normal((60, 3))
    z0 = X[:9] + 0.1
    s = RKMESpec.fit(X, init_z=z0, steps=2, nonnegative_beta=False, record_trajectory=True)
    assert s.K == 9 and s.fit_info.z_traj.shape == (3, 9, 3)
    np.testing.assert_array_equal(s.fit_info.z_traj[0], z0)
    # the last beta is (G + 1e-5 I)^-1 C at the final z (float64 oracle)
    z = s.z
    G, C = ref.gauss_kernel(z, z, 0.1), ref.kernel_mean(z, X.astype(np.float32), 0.1)
    np.testing.assert_allclose(s.beta, np.linalg.solve(G + 1e-5 * np.eye(9), C), rtol=1e-7, atol=1e-9)


# ------------------------------------------------------------------------------ herding
def test_herding_deterministic_and_close_to_embedding():
    rng = np.random.default_rng(11)
    X = np.concatenate([rng.normal(-3, 0.5, (300, 2)), rng.normal(3, 0.5, (100, 2))])
    spec = RKMESpec.fit(X, K=20, seed=0)
    a, b = spec.herding(50, seed=3), spec.herding(50, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (50, 2) and spec.herding(0).shape == (0, 2)
    herd = RKMESpec(a, np.full(50, 1 / 50), spec.gamma)
    rand = RKMESpec(rng.uniform(-5, 5, (50, 2)), np.full(50, 1 / 50), spec.gamma)
    assert spec.dist(herd) < 0.2 * spec.dist(rand)
    assert (a[:, 0] < 0).mean() == pytest.approx(0.75, abs=0.1)  # mixture proportions preserved


# ------------------------------------------------------------------------------ fit_many
def test_fit_many_seeds_and_threads():
    rng = np.random.default_rng(12)
    data = [rng.standard_normal((n, 4)) for n in (30, 50, 80, 1)]
    serial = lwengine.fit_many(data, K=10, seed=5)
    threaded = lwengine.fit_many(data, K=10, seed=5, n_jobs=2, progress=False)
    assert [s.num_points for s in serial] == [30, 50, 80, 1]
    for a, b in zip(serial, threaded):
        np.testing.assert_array_equal(a.z, b.z)
        np.testing.assert_array_equal(a.beta, b.beta)
    child = np.random.SeedSequence(5).spawn(4)[2]
    alone = RKMESpec.fit(data[2], K=10, seed=child)
    np.testing.assert_array_equal(alone.z, serial[2].z)
    with pytest.raises(ValueError, match="init_z must hold one"):
        lwengine.fit_many(data, init_z=[None])
    assert lwengine.fit_many([], K=3) == []
