"""RKMEImageSpec.fit against the reference's generate fixtures (RNG replays, QP inputs, beta)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from lwengine.specs.image import RKMEImageSpec, NetConfig, canonical_z

FIX = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "learnware-0.4.0.post1-image" / "generate"
CASES = ["g01_rgb_blobs", "g02_rgb_stripes", "g03_rgb_odd_nan", "g04_rgb_nowhiten", "g05_rgb_subsample",
         "g06_gray_strokes", "g07_gray_rings", "g08_gray_user_mix", "g09_gray_negbeta"]


def _case(name):
    if not FIX.is_dir():
        pytest.skip(f"image fixtures not found at {FIX}")
    m = json.loads((FIX / name / "manifest.json").read_text())
    kw = dict(m["call"]["kwargs"])
    K = kw.pop("reduced_set_size")
    kw.pop("verbose", None)
    kw.pop("cuda_idx", None)
    if "sample_size" in kw:
        kw["seed"] = m["call"]["numpy_global_seed_before_call"]
    return m, K, kw


@pytest.mark.parametrize("name", CASES)
def test_rng_replays(name):
    from lwengine.specs.image.generate import _final_perms

    m, K, kw = _case(name)
    z = np.load(FIX / name / "z.npy")
    assert np.array_equal(canonical_z(K, NetConfig(m["C"])), z)
    perms = json.loads((FIX / name / "perms.json").read_text())["perms"][-16:]
    mine = _final_perms(NetConfig(m["C"]), 16, K, m["steps"])
    assert [list(p) for p in mine] == perms


def test_final_nets_bit_exact():
    import hashlib

    from lwengine.specs.image.rng import GaussianStream, gaussians_per_net

    m, K, kw = _case("g06_gray_strokes")
    cfg = NetConfig(m["C"])
    s = GaussianStream(0)
    s.skip(m["rng"]["gauss_offset_final_models"])
    h = hashlib.sha256()
    for _ in range(16):
        for w, b in s.net(cfg):
            h.update(w.tobytes())
            h.update(b.tobytes())
    assert h.hexdigest() == m["rng"]["final_models_sha256_float32_w_then_b_per_layer"]
    assert m["rng"]["gauss_offset_final_models"] == 16 * gaussians_per_net(cfg) + K * m["C"] * 1024 + \
        (m["steps"] - 1) * 16 * gaussians_per_net(cfg)


@pytest.mark.parametrize("name", ["g04_rgb_nowhiten", "g06_gray_strokes"])
def test_fit_matches_reference(name):
    pytest.importorskip("torch")
    m, K, kw = _case(name)
    X = np.load(FIX / name / "X.npy")
    spec = RKMEImageSpec.fit(X, K=K, device="cpu", **kw)
    info = spec.fit_info
    assert np.array_equal(spec.z, np.load(FIX / name / "z.npy"))
    Kr, Cr = np.load(FIX / name / "K_final.npy"), np.load(FIX / name / "C_final.npy")
    assert np.abs(info.K_matrix - Kr).max() <= 3e-6 * np.abs(Kr).max()  # observed: bit-equal
    assert np.abs(info.C_vector - Cr).max() <= 1e-6 * np.abs(Cr).max()
    ref = RKMEImageSpec.load(FIX / name / "spec.json.gz")
    # beta moves by the QP's ill-conditioning, the spec by far less than the float32 floor
    assert np.abs(spec.beta - ref.beta).max() < 1e-3
    assert abs(ref.dist(spec, precision="float64")) < 1e-7


@pytest.mark.parametrize("name", CASES)
def test_beta_from_reference_qp_inputs(name):
    from lwengine.specs.image.generate import solve_beta

    m, K, kw = _case(name)
    Kr, Cr = np.load(FIX / name / "K_final.npy"), np.load(FIX / name / "C_final.npy")
    br = np.load(FIX / name / "beta.npy")
    nonneg = kw.get("nonnegative_beta", True)
    b = solve_beta(Kr, Cr, nonneg)
    if not nonneg:
        assert b.dtype == np.float32 and np.abs(b - br).max() < 2e-5  # float32 inverse (ref: 4.9e-6)
        return
    K64, C64 = Kr.astype(np.float64), Cr.astype(np.float64)
    obj = lambda x: 0.5 * x @ K64 @ x - C64 @ x  # noqa: E731
    assert obj(b) <= obj(br) + 1e-9  # the exact minimiser is at least as good as Clarabel's
    assert np.abs(b - br).max() < 1e-3
    try:
        import clarabel  # noqa: F401
        import qpsolvers  # noqa: F401
    except ModuleNotFoundError:
        return
    assert np.array_equal(solve_beta(Kr, Cr, True, qp_solver="clarabel"), br)


def test_fit_input_rules():
    pytest.importorskip("torch")
    with pytest.raises(ValueError, match=r"X should be in shape of \[N, C, H, W\]"):
        RKMEImageSpec.fit(np.zeros((4, 32, 32)))
    with pytest.raises(ValueError, match="Or set resize=True"):
        RKMEImageSpec.fit(np.zeros((4, 1, 28, 28)), resize=False)
    X = np.random.default_rng(0).standard_normal((4, 1, 32, 32)).astype(np.float32)
    X[0] = np.nan
    with pytest.raises(ValueError, match="All values in image 0 are exceptional"):
        RKMEImageSpec.fit(X)
    with pytest.raises(ValueError, match="K must be >= 1"):
        RKMEImageSpec.fit(X, K=0)
    with pytest.raises(ValueError, match="update"):
        RKMEImageSpec.fit(X, update="adam")


def test_fit_reduce_false_and_no_mutation():
    pytest.importorskip("torch")
    X = np.random.default_rng(0).standard_normal((5, 1, 32, 32)).astype(np.float32)
    X[1, 0, 3, 3] = np.inf
    before = X.copy()
    spec = RKMEImageSpec.fit(X, reduce=False, device="cpu")
    assert np.array_equal(X, before, equal_nan=True)  # the reference mutates float32 input in place
    assert spec.K == 5 and np.allclose(spec.beta, 0.2)
    assert np.isfinite(spec.z).all()


def test_subsample_rows():
    pytest.importorskip("torch")
    from lwengine.specs.image.generate import generate

    m, K, kw = _case("g05_rgb_subsample")
    xt = np.random.default_rng(0).standard_normal((m["input"]["shape"][0], 3, 32, 32)).astype(np.float32)
    _, _, info = generate(None, 1, steps=0, sample_size=kw["sample_size"], seed=kw["seed"], device="cpu", x_train=xt)
    assert info.sample_indices.tolist() == m["sample_indices"] and info.n_train == kw["sample_size"]


@pytest.mark.parametrize("name", ["g06_gray_strokes", "g09_gray_negbeta"])
def test_preprocess_gray_bit_exact(name):
    pytest.importorskip("torch")
    from lwengine.specs.image.generate import preprocess

    _case(name)
    xt = preprocess(np.load(FIX / name / "X.npy")).numpy()
    assert np.array_equal(xt, np.load(FIX / name / "X_train.npy"))


@pytest.mark.parametrize("pre", [0, 1, 2, 5])
@pytest.mark.parametrize("n", [1, 2, 3, 1001, 200_001])
def test_native_gaussian_skip_matches_drawing(n, pre):
    from lwengine.specs.image.rng import GaussianStream

    a, b = GaussianStream(0), np.random.RandomState(0)
    if pre:
        a.state.standard_normal(pre)
        b.standard_normal(pre)
    a.skip(n)
    b.standard_normal(n)
    sa, sb = a.state.get_state(), b.get_state()
    assert np.array_equal(sa[1], sb[1]) and sa[2:] == sb[2:]
    assert np.array_equal(a.state.standard_normal(7), b.standard_normal(7))


@pytest.mark.parametrize("n", [1, 623, 624, 625, 100_003])
def test_native_word_skip_matches_drawing(n):
    from lwengine.specs.image.rng import TorchCPUGenerator

    a, b = TorchCPUGenerator(0), np.random.MT19937(0)
    b._legacy_seeding(0)
    a.words(3)
    b.random_raw(3 + n)
    a.skip(n)
    assert np.array_equal(a.words(9), b.random_raw(9).astype(np.uint64))


def test_mt19937_skip_rejects_bad_input():
    from lwengine import kernels

    with pytest.raises(TypeError, match="bitgen"):
        kernels.mt19937_skip(np.random.PCG64(), 3)
    with pytest.raises(ValueError, match="n must be"):
        kernels.mt19937_skip(np.random.MT19937(0), -1)
