"""Native RKME kernels (_core) against the float64 oracle (lwengine._reference) and the fixtures."""
from __future__ import annotations

import json

import numpy as np
import pytest

from lwengine import _backend, _reference, kernels

core = _backend.require_core()
EPS32 = float(np.finfo(np.float32).eps)

SIMD_PATHS = (["portable"] + (["avx2"] if core.cpu_info()["avx2"] and core.cpu_info()["fma"] else [])
              + (["avx512"] if core.cpu_info()["avx512"] else []))


def make_store(rng, sizes, d, scale=1.0):
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    z = rng.standard_normal((int(offsets[-1]), d)) * scale
    beta = rng.random(int(offsets[-1])) - 0.2  # some negative weights
    return z, beta, offsets


def f32_bound(q_z, q_beta, q_off, z, beta, off, gamma):
    """Documented float32 error bound per output (docs/kernels.md):
    |err| <= eps32 * S_qi * (4 + Kq + 4 (d + 3) gamma R^2), S_qi = sum |qbeta_a| |beta_b|."""
    d = z.shape[1]
    r2 = max(float((q_z.astype(np.float64) ** 2).sum(1).max(initial=0)), float((z.astype(np.float64) ** 2).sum(1).max(initial=0)))
    Q, N = len(q_off) - 1, len(off) - 1
    bound = np.zeros((Q, N))
    for q in range(Q):
        qa, qb = q_off[q], q_off[q + 1]
        for i in range(N):
            s = np.abs(q_beta[qa:qb]).sum() * np.abs(beta[off[i]:off[i + 1]]).sum()
            bound[q, i] = EPS32 * s * (4 + (qb - qa) + 4 * (d + 3) * gamma * r2)
    return bound


CROSS_SHAPES = [  # (query sizes, store sizes, d)
    ([1], [1], 1),
    ([7], [97, 1, 7], 3),
    ([100], [100, 30, 5], 20),
    ([3, 0, 9], [0, 4, 0, 17], 65),
    ([97], [], 5),
    ([16, 17], [3], 8),
]


@pytest.mark.parametrize("qs,ss,d", CROSS_SHAPES)
def test_cross_inner_float64_matches_reference(simd, qs, ss, d):
    rng = np.random.default_rng(100 + d)
    qz, qb, qo = make_store(rng, qs, d)
    z, b, o = make_store(rng, ss, d)
    for gamma in (0.1, 1.0 / d):
        got = kernels.cross_inner(qz, qb, qo, z, b, o, gamma)
        ref = _reference.cross_inner(qz, qb, qo, z, b, o, gamma)
        assert got.shape == (len(qs), len(ss))
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)
        for q, kq in enumerate(qs):
            for i, ki in enumerate(ss):
                if kq == 0 or ki == 0:
                    assert got[q, i] == 0.0


@pytest.mark.parametrize("qs,ss,d", CROSS_SHAPES)
def test_cross_inner_float32_within_documented_bound(simd, qs, ss, d):
    rng = np.random.default_rng(200 + d)
    qz, qb, qo = make_store(rng, qs, d, scale=2.0)
    z, b, o = make_store(rng, ss, d, scale=2.0)
    qz32, z32 = qz.astype(np.float32), z.astype(np.float32)
    gamma = 0.5 / d
    got = kernels.cross_inner(qz32, qb, qo, z32, b, o, gamma)
    ref = _reference.cross_inner(qz32.astype(np.float64), qb, qo, z32.astype(np.float64), b, o, gamma)
    err = np.abs(got - ref)
    assert np.all(err <= f32_bound(qz32, qb, qo, z32, b, o, gamma)), err.max()


def test_float32_far_points_underflow_to_zero(simd):
    rng = np.random.default_rng(3)
    z = rng.standard_normal((20, 4)).astype(np.float32)
    far = z + 1000.0
    b = np.full(20, 0.05)
    o = np.array([0, 20], dtype=np.int64)
    assert kernels.cross_inner(z, b, o, far, b, o, 0.1)[0, 0] == 0.0


def test_float64_subnormal_results_match_reference(simd):
    # exp(-gamma*sq) between 1e-320 and 1e-308 is subnormal: the vector exp must hand those to std::exp
    a = np.zeros((1, 1))
    z = np.array([[np.sqrt(v / 0.1)] for v in (700.0, 709.0, 715.0, 740.0, 746.0, 800.0)])
    one = np.ones(1)
    got = kernels.cross_inner(a, one, [0, 1], z, np.ones(6), np.arange(7), 0.1)
    ref = _reference.cross_inner(a, one, [0, 1], z, np.ones(6), np.arange(7), 0.1)
    np.testing.assert_allclose(got, ref, rtol=1e-13, atol=0)
    assert got[0, -1] == 0.0 and got[0, 3] > 0.0


def test_float64_exp_within_one_ulp(simd):
    """The float64 vector exp alone: a query point at 0 against one store point x per spec (d = 1)
    makes the kernel exactly 2^(-y/16) with y = 16 (gamma log2e) x^2 as the kernel computes it; each
    value is within 1 ulp of that power of two taken to 50 digits (Decimal), normal results only
    (subnormals: test_float64_subnormal_results_match_reference)."""
    import decimal

    rng = np.random.default_rng(17)
    gamma = 0.37
    u = np.concatenate([-rng.uniform(0, 1021, 3000), -rng.uniform(0, 4, 500), [0.0, -1.0, -0.25, -1020.9]])
    x = np.sqrt(-u / (gamma * 1.4426950408889634))
    y = 16.0 * ((gamma * 1.4426950408889634) * (x * x))  # the kernel's 16 log2_term(x^2): exact steps
    one = np.ones(1)
    got = kernels.cross_inner(np.zeros((1, 1)), one, [0, 1], x[:, None], np.ones(len(x)), np.arange(len(x) + 1),
                              gamma)[0]
    with decimal.localcontext() as ctx:
        ctx.prec = 50
        want = np.array([float(decimal.Decimal(2) ** (-decimal.Decimal(v) / 16)) for v in y])
    normal = want >= np.finfo(np.float64).tiny
    assert normal.sum() > 3000
    ulps = np.abs(got[normal] - want[normal]) / np.spacing(want[normal])
    assert ulps.max() <= 1.0, f"{simd}: max {ulps.max()} ulp"


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_self_inner_and_gram_match_reference(simd, dtype):
    rng = np.random.default_rng(5)
    z, b, o = make_store(rng, [7, 0, 1, 97, 13], 3)
    z = z.astype(dtype)
    zr = z.astype(np.float64)
    si = kernels.self_inner(z, b, o, 0.3)
    g = kernels.gram(z, b, o, 0.3)
    # (_reference.self_inner cannot reshape an empty segment: build its oracle per non-empty spec)
    si_ref = np.array([_reference.self_inner(zr[o[i]:o[i + 1]], b[o[i]:o[i + 1]], [0, o[i + 1] - o[i]], 0.3)[0]
                       if o[i + 1] > o[i] else 0.0 for i in range(len(o) - 1)])
    g_ref = _reference.gram(zr, b, o, 0.3)
    if dtype == np.float64:
        np.testing.assert_allclose(si, si_ref, rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(g, g_ref, rtol=1e-12, atol=1e-14)
    else:
        bound = f32_bound(z, b, o, z, b, o, 0.3)
        assert np.all(np.abs(g - g_ref) <= bound)
        assert np.all(np.abs(si - si_ref) <= np.diag(bound))
    assert np.array_equal(g, g.T)
    assert np.array_equal(np.diag(g), si)  # same query/store roles on the diagonal
    assert si[1] == 0.0 and np.all(g[1] == 0.0)


def test_identical_specs_bit_identical_and_thread_independent(simd):
    rng = np.random.default_rng(9)
    for dtype in (np.float32, np.float64):
        spec = rng.standard_normal((37, 20)).astype(dtype)
        beta = rng.random(37)
        # the same spec at several positions of a store with other specs between
        parts, betas = [], []
        for _ in range(5):
            parts += [spec, rng.standard_normal((11, 20)).astype(dtype)]
            betas += [beta, rng.random(11)]
        z = np.concatenate(parts)
        b = np.concatenate(betas)
        o = np.concatenate([[0], np.cumsum([len(p) for p in parts])]).astype(np.int64)
        q = rng.standard_normal((100, 20)).astype(dtype)
        qb = rng.random(100)
        threads = core.get_num_threads()
        try:
            core.set_num_threads(1)
            one = kernels.cross_inner(q, qb, [0, 100], z, b, o, 0.05)
            core.set_num_threads(2)
            two = kernels.cross_inner(q, qb, [0, 100], z, b, o, 0.05)
        finally:
            core.set_num_threads(threads)
        assert np.array_equal(one, two)
        same = one[0, 0::2]
        assert np.all(same == same[0])


def test_simd_paths_agree():
    if "avx2" not in SIMD_PATHS or core.cpu_info()["simd"] == "portable":
        pytest.skip("no AVX2 on this CPU")
    rng = np.random.default_rng(11)
    z, b, o = make_store(rng, [100, 50, 3], 20)
    res = {}
    try:
        for path in SIMD_PATHS:
            core.set_simd_path(path)
            if core.cpu_info()["simd"] != path:  # LWE_DISABLE_AVX2 / LWE_DISABLE_AVX512 in the environment
                continue
            res[path] = kernels.cross_inner(z, b, o, z, b, o, 0.1)
    finally:
        core.set_simd(True)
    assert "portable" in res and len(res) >= 2, f"fewer than two SIMD paths reachable: {sorted(res)}"
    for path in res:
        np.testing.assert_allclose(res[path], res["portable"], rtol=1e-13)


def test_simd_path_cap_and_errors(monkeypatch):
    monkeypatch.delenv("LWE_DISABLE_AVX2", raising=False)  # the cap is the CPU's, not the environment's
    monkeypatch.delenv("LWE_DISABLE_AVX512", raising=False)
    try:
        core.set_simd_path("portable")
        assert core.cpu_info()["simd"] == "portable"
        core.set_simd_path("avx512")  # a cap: the widest path the CPU has
        assert core.cpu_info()["simd"] == SIMD_PATHS[-1]
        with pytest.raises(ValueError, match="path must be"):
            core.set_simd_path("sse9")
        assert core.cpu_info()["simd"] == SIMD_PATHS[-1]  # unchanged by the refused call
    finally:
        core.set_simd(True)


def test_env_var_disables_avx2(monkeypatch):
    monkeypatch.delenv("LWE_DISABLE_AVX512", raising=False)
    monkeypatch.setenv("LWE_DISABLE_AVX2", "1")
    assert core.cpu_info()["simd"] == "portable"
    monkeypatch.setenv("LWE_DISABLE_AVX2", "0")
    assert core.cpu_info()["simd"] == SIMD_PATHS[-1]


def test_env_var_disables_avx512(monkeypatch):
    monkeypatch.delenv("LWE_DISABLE_AVX2", raising=False)
    monkeypatch.setenv("LWE_DISABLE_AVX512", "1")
    assert core.cpu_info()["simd"] == ("avx2" if "avx2" in SIMD_PATHS else "portable")
    monkeypatch.delenv("LWE_DISABLE_AVX512")
    assert core.cpu_info()["simd"] == SIMD_PATHS[-1]


# ------------------------------------------------------------------ moments and Z step
@pytest.mark.parametrize("K,n,d", [(1, 1, 1), (7, 257, 3), (97, 1000, 65), (130, 513, 20)])
@pytest.mark.parametrize("xdtype", [np.float64, np.float32])
def test_zx_moments_match_reference(simd, K, n, d, xdtype):
    rng = np.random.default_rng(K * 1000 + n)
    z = rng.standard_normal((K, d))
    x = (rng.standard_normal((n, d)) * 1.5).astype(xdtype)
    gamma = 1.0 / d
    C, T = kernels.zx_moments(z, x, gamma)
    C_ref, T_ref = _reference.zx_moments(z, x.astype(np.float64), gamma)
    np.testing.assert_allclose(C, C_ref, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(T, T_ref, rtol=1e-11, atol=1e-13 * np.abs(T_ref).max())
    C2, T2 = kernels.zx_moments(z, x, gamma, with_t=False)
    assert T2 is None and np.array_equal(C2, C)


def test_zx_moments_thread_independent():
    rng = np.random.default_rng(4)
    z, x = rng.standard_normal((50, 8)), rng.standard_normal((5000, 8))
    threads = core.get_num_threads()
    try:
        core.set_num_threads(1)
        a = kernels.zx_moments(z, x, 0.2)
        core.set_num_threads(2)
        b = kernels.zx_moments(z, x, 0.2)
    finally:
        core.set_num_threads(threads)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


@pytest.mark.parametrize("exact", [False, True])
@pytest.mark.parametrize("K,d", [(1, 1), (7, 3), (97, 20)])
def test_rs_step_matches_reference(K, d, exact):
    rng = np.random.default_rng(K + d)
    z = rng.standard_normal((K, d))
    x = rng.standard_normal((300, d)).astype(np.float32)
    beta = rng.random(K)
    beta /= beta.sum()
    got = kernels.rs_step(z, beta, x, 0.1, 0.1, exact_gradient=exact)
    ref = _reference.rs_step(z, beta, x.astype(np.float64), 0.1, 0.1, exact_gradient=exact)
    np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-14)


# ------------------------------------------------------------------ golden fixtures
def _load_spec(path):
    s = json.loads(path.read_text())
    z = np.asarray(s["z"], dtype=np.float64)
    z = z.reshape(z.shape[0], -1)
    return z, np.asarray(s["beta"], dtype=np.float64), float(s["gamma"])


def _ip(a, b):
    (za, ba, ga), (zb, bb, _) = a, b
    return kernels.cross_inner(za, ba, [0, len(ba)], zb, bb, [0, len(bb)], ga)[0, 0]


KERNEL_CASES = ["k01_same_K", "k02_diff_K", "k03_diff_gamma", "k04_self", "k05_low_dim",
                "k06_far_with_origin_rows", "k06b_far_underflow", "k07_negative_beta", "k08_K1",
                "k09_high_dim", "k10_unreduced", "k11_small_gamma"]


@pytest.mark.parametrize("case", KERNEL_CASES)
def test_kernel_fixtures(fixtures_dir, simd, case):
    root = fixtures_dir / "kernel" / case
    man = json.loads((root / "manifest.json").read_text())
    a = _load_spec(root / "a.json")
    b = _load_spec(root / ("b.json" if (root / "b.json").exists() else "a.json"))
    exp = man["expected"]
    got = {"inner_prod_ab": _ip(a, b), "inner_prod_ba": _ip(b, a), "inner_prod_aa": _ip(a, a),
           "inner_prod_bb": _ip(b, b)}
    for key, val in got.items():
        assert val == pytest.approx(exp[key], rel=1e-9, abs=1e-300), key
    dist_ab = got["inner_prod_aa"] - 2 * got["inner_prod_ab"] + got["inner_prod_bb"]
    dist_ba = got["inner_prod_bb"] - 2 * got["inner_prod_ba"] + got["inner_prod_aa"]
    # dist is a difference of O(1) terms: absolute tolerance relative to the terms
    scale = abs(got["inner_prod_aa"]) + 2 * abs(got["inner_prod_ab"]) + abs(got["inner_prod_bb"])
    assert dist_ab == pytest.approx(exp["dist_ab"], rel=1e-9, abs=1e-12 * scale)
    assert dist_ba == pytest.approx(exp["dist_ba"], rel=1e-9, abs=1e-12 * scale)
    if case == "k04_self":
        assert dist_ab == 0.0


def test_kernel_fixture_rbf_matrix(fixtures_dir, simd):
    root = fixtures_dir / "kernel" / "k90_rbf_matrix"
    man = json.loads((root / "manifest.json").read_text())
    P, Qm, K = (np.load(root / f) for f in ("P.npy", "Q.npy", "K.npy"))
    P, Qm = P.reshape(len(P), -1), Qm.reshape(len(Qm), -1)
    gamma = man["inputs"]["gamma"]
    got = kernels.cross_inner(P, np.ones(len(P)), np.arange(len(P) + 1), Qm, np.ones(len(Qm)),
                              np.arange(len(Qm) + 1), gamma)
    np.testing.assert_allclose(got, K, rtol=1e-9, atol=1e-300)


# ------------------------------------------------------------------ bad input
def test_core_rejects_bad_arrays():
    z = np.zeros((4, 3))
    b = np.ones(4)
    o = np.array([0, 2, 4], dtype=np.int64)
    out = np.zeros((2, 2))
    core.cross_inner(z, b, o, z, b, o, 0.1, out)  # valid call
    # one rule set for both bindings and lwengine.validate: wrong type / dtype -> TypeError
    with pytest.raises(TypeError, match="q_z and z must have the same dtype"):
        core.cross_inner(z.astype(np.float32), b, o, z, b, o, 0.1, out)
    with pytest.raises(ValueError, match="offsets"):
        core.cross_inner(z, b, o, z, b, np.array([0, 3, 2, 4]), 0.1, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="offsets"):
        core.cross_inner(z, b, o, z, b, np.array([0, 2, 5], dtype=np.int64), 0.1, out)
    with pytest.raises(TypeError, match="offsets must have dtype int64, got int32"):
        core.cross_inner(z, b, o, z, b, np.array([0, 2, 4], dtype=np.int32), 0.1, out)
    with pytest.raises(ValueError, match="out"):
        core.cross_inner(z, b, o, z, b, o, 0.1, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="out"):
        core.cross_inner(z, b, o, z, b, o, 0.1, np.zeros((2, 4))[:, ::2])
    with pytest.raises(ValueError, match="out"):
        ro = np.zeros((2, 2))
        ro.setflags(write=False)
        core.cross_inner(z, b, o, z, b, o, 0.1, ro)
    with pytest.raises(TypeError, match="out must be a numpy array, got list"):
        core.cross_inner(z, b, o, z, b, o, 0.1, [[0.0, 0.0], [0.0, 0.0]])
    with pytest.raises(ValueError, match="beta"):
        core.cross_inner(z, b[:3], o, z, b, o, 0.1, out)
    with pytest.raises(ValueError, match="dimension"):
        core.cross_inner(np.zeros((4, 2)), b, o, z, b, o, 0.1, out)
    with pytest.raises(ValueError, match="gamma"):
        core.cross_inner(z, b, o, z, b, o, float("nan"), out)
    with pytest.raises(TypeError, match="z must have dtype float32 or float64, got int64"):
        core.gram(np.zeros((4, 3), dtype=np.int64), b, o, 0.1, out)
    with pytest.raises(ValueError, match="out"):
        core.self_inner(z, b, o, 0.1, np.zeros(3))
    with pytest.raises(ValueError, match="x"):
        core.zx_moments(z, np.zeros((0, 3)), 0.1, np.zeros(4), None)
    with pytest.raises(ValueError, match="x"):
        core.zx_moments(z, np.zeros((5, 2)), 0.1, np.zeros(4), None)
    with pytest.raises(ValueError, match="T"):
        core.zx_moments(z, np.zeros((5, 3)), 0.1, np.zeros(4), np.zeros((4, 2)))
    with pytest.raises(ValueError, match="C"):
        core.rs_step_from_moments(z, b, np.zeros(3), z, 0.1, 0.1, 1.0, np.zeros_like(z))
    with pytest.raises(ValueError, match="n must be"):
        core.set_num_threads(0)


def test_kernels_python_errors():
    with pytest.raises(ValueError, match="offsets"):
        kernels.cross_inner(np.zeros((2, 2)), [1, 1], [0, 1], np.zeros((2, 2)), [1, 1], [0, 2], 0.1)
    with pytest.raises(ValueError, match="gamma"):
        kernels.self_inner(np.zeros((2, 2)), [1, 1], [0, 2], -1.0)
    with pytest.raises(ValueError, match="dimension"):
        kernels.zx_moments(np.zeros((2, 2)), np.zeros((3, 4)), 0.1)


def test_missing_native_function_raises(monkeypatch):
    class Empty:
        pass

    monkeypatch.setattr(_backend, "core", Empty())
    with pytest.raises(RuntimeError, match="cross_inner"):
        kernels.cross_inner(np.zeros((1, 1)), [1.0], [0, 1], np.zeros((1, 1)), [1.0], [0, 1], 0.1)


def test_cpu_info_and_probe():
    info = core.cpu_info()
    assert set(info) >= {"avx2", "fma", "simd", "openmp", "max_threads"}
    assert info["max_threads"] == core.get_num_threads() >= 1
    probe = core.peak_probe(0.01)
    assert probe["fma_f32_flops"] > 0 and probe["exp_f32_per_s"] > 0


# ------------------------------------------------------------------ subsets of a store, in place
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_cross_inner_specs_subset_equals_the_gathered_store(simd, dtype):
    rng = np.random.default_rng(5)
    z, b, o = make_store(rng, [7, 0, 12, 3, 9, 1], 5)
    z = z.astype(dtype)
    q, qb, qo = make_store(rng, [4, 6], 5)
    q = q.astype(dtype)
    full = kernels.cross_inner(q, qb, qo, z, b, o, 0.3)
    specs = np.array([4, 0, 4, 1, 5, 2], dtype=np.int64)  # repeats, an empty spec, any order
    sub = kernels.cross_inner(q, qb, qo, z, b, o, 0.3, specs=specs)
    assert sub.shape == (2, len(specs))
    assert np.array_equal(sub, full[:, specs])  # bit for bit: each column depends on its spec only
    assert kernels.cross_inner(q, qb, qo, z, b, o, 0.3, specs=[]).shape == (2, 0)


@pytest.mark.parametrize("bad, err", [([6], ValueError), ([-1], ValueError), ([[0, 1]], ValueError),
                                      ([0.5], TypeError)])
def test_cross_inner_specs_out_of_range_is_a_clear_error(bad, err):
    rng = np.random.default_rng(6)
    z, b, o = make_store(rng, [2, 3, 1, 4, 2, 2], 3)
    with pytest.raises(err, match="specs"):
        kernels.cross_inner(z, b, o, z, b, o, 0.1, specs=bad)


def test_native_cross_inner_checks_specs_itself():
    rng = np.random.default_rng(7)
    z, b, o = make_store(rng, [2, 3], 3)
    out = np.zeros((2, 1))
    with pytest.raises(ValueError, match=r"specs must hold store spec indices in \[0, 2\)"):
        core.cross_inner(z, b, o, z, b, o, 0.1, out, np.array([2], dtype=np.int64))
