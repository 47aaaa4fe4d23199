"""Spec generation against the reference's recorded runs (fixtures generate/, semantics §1).

What is exact and what is not
-----------------------------
The Z step, the K rules, cleaning, ``reduce=False`` and the signed-beta solve are deterministic
formulas: they match the fixtures to ~1e-9 or better.  The nonnegative beta update is a QP that
lwengine solves exactly (active set), while the reference used an interior-point solver with 1e-8
tolerances.  Measured on these fixtures, the reference's own solutions are not optimal:

    case              KKT residual of the reference's beta   objective gap f(b_ref) - f(b*)
    g01_n50_d3        2.7e-06                                 3.7e-10
    g03_n2000_d20     2.2e-05                                 1.1e-09
    g04_n5000_d64     2.3e-05                                 3.9e-09
    g12_custom_params 3.7e-07 .. 1.0e-05                      1.6e-10 .. 6.8e-09
    g13_steps0        1.1e-07                                 1.8e-09

(KKT residual = max_i |min(b_i, (G b - C)_i - lambda)|.)  G is numerically singular in most cases
(smallest eigenvalue ~1e-15), so the minimiser's *objective* is well defined but the weights are not:
two beta with objectives within 1e-9 can differ by 0.2 (g02).  Comparing weights to 1e-6 would
therefore test the reference's solver noise.  The tests instead check what the reference's slack
implies for an exact solver:

* ours is at least as good: ``f(b_ours) <= f(b_ref)`` (up to 1e-15 rounding);
* ``(b_ref - b_ours)' G (b_ref - b_ours) <= 2 (f(b_ref) - f(b_ours))``: this holds for the exact
  minimiser and any feasible point, so it checks that ours *is* the minimiser the reference was
  converging to;
* element-wise ``|b_ref - b_ours| <= max(1e-6, sqrt(2 gap / lambda_min(G)))`` (the strong-convexity
  bound; it is 1e-6 where G is well conditioned and the reference converged).

The Z trajectory from the recorded Z0 is compared with a tolerance propagated from those beta
differences (a Z step moves row i by ``step * beta_i * u_i``, so a beta change moves it by
``(z_{t+1,i} - z_{t,i}) * dbeta_i / beta_i``; factor 2 for second-order effects, plus 1e-6).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import lwengine
from lwengine import _reference as ref

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "learnware-0.4.0.post1"
GEN = FIXTURES / "generate"


def _cases():
    if not (GEN / "manifest.json").is_file():
        return []
    return [c["path"] for c in json.loads((GEN / "manifest.json").read_text())["cases"]]


CASES = _cases()
pytestmark = pytest.mark.skipif(not CASES, reason=f"generate fixtures not found at {GEN}")


class Case:
    def __init__(self, name):
        self.dir = GEN / name
        self.m = json.loads((self.dir / "manifest.json").read_text())
        self.p = self.m["inputs"]["params"]
        self.e = self.m["expected"]
        self.X = np.load(self.dir / "X.npy")

    def has(self, f):
        return (self.dir / f).is_file()

    def load(self, f):
        return np.load(self.dir / f)

    @property
    def kwargs(self):
        p = self.p
        return dict(K=p["reduced_set_size"], gamma=p["gamma"], step_size=p["step_size"], steps=p["steps"],
                    nonnegative_beta=p["nonnegative_beta"], reduce=p["reduce"])

    @property
    def x_clean(self):
        x = self.load("X_clean.npy") if self.has("X_clean.npy") else self.X
        return x.reshape(len(x), -1).astype(np.float64)

    def qp(self, z):
        """(G, C) of the beta update at z, by the float64 oracle."""
        z = np.asarray(z, dtype=np.float64).reshape(len(z), -1)
        return ref.gauss_kernel(z, z, self.p["gamma"]), ref.kernel_mean(z, self.x_clean, self.p["gamma"])


def _ok_cases():
    return [c for c in CASES if not Case(c).e.get("error")]


def _traj_cases():
    return [c for c in _ok_cases() if Case(c).has("z_traj.npy")]


# ------------------------------------------------------------------------------ deterministic parts
@pytest.mark.parametrize("name", CASES)
def test_K_rule_shape_and_errors(name):
    c = Case(name)
    if c.e.get("error"):
        with pytest.raises(ValueError) as info:
            lwengine.RKMESpec.fit(c.X, **c.kwargs, seed=0)
        assert str(info.value) == c.e["error"]["message"]
        return
    before = c.X.copy()
    spec = lwengine.RKMESpec.fit(c.X, **c.kwargs, seed=0)
    np.testing.assert_array_equal(c.X, before)  # the caller's array is never modified
    assert spec.K == c.e["K"]
    if "z_shape" in c.e:
        assert list(spec.z.shape) == c.e["z_shape"]
    assert spec.num_points == c.e["num_points"] == c.X.shape[0]
    assert spec.gamma == c.e["gamma"]
    assert spec.z.dtype == np.float64 and spec.beta.dtype == np.float64


@pytest.mark.parametrize("name", [c for c in CASES if Case(c).has("X_clean.npy")])
def test_cleaning_matches_reference(name):
    c = Case(name)
    spec = lwengine.RKMESpec.fit(c.X, **{**c.kwargs, "reduce": False})
    np.testing.assert_array_equal(spec.z.reshape(len(spec.z), -1), c.load("X_clean.npy").astype(np.float64))


@pytest.mark.parametrize("name", [c for c in _ok_cases() if not Case(c).p["reduce"]])
def test_no_reduce_is_exact(name):
    c = Case(name)
    spec = lwengine.RKMESpec.fit(c.X, **c.kwargs)
    expected = lwengine.RKMESpec.load(c.dir / "spec.json")
    np.testing.assert_array_equal(spec.z, expected.z)
    np.testing.assert_array_equal(spec.beta, expected.beta)
    assert spec.num_points == expected.num_points


# ------------------------------------------------------------------------------ beta update
@pytest.mark.parametrize("name", _traj_cases())
def test_beta_update_at_recorded_z(name):
    """beta from every recorded z_traj[t] (fit with init_z=z_traj[t], steps=0) vs beta_traj[t]."""
    c = Case(name)
    z_traj, beta_traj = c.load("z_traj.npy"), c.load("beta_traj.npy")
    np.testing.assert_array_equal(beta_traj[0], c.e["beta_after_first_qp"])
    for t in range(len(z_traj)):
        ours = lwengine.RKMESpec.fit(c.X, **{**c.kwargs, "steps": 0}, init_z=z_traj[t]).beta
        theirs = beta_traj[t]
        if not c.p["nonnegative_beta"]:  # a linear solve: no solver slack
            np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=1e-6)
            continue
        G, C = c.qp(z_traj[t])
        f = lambda b: 0.5 * b @ G @ b - C @ b  # noqa: E731
        gap = f(theirs) - f(ours)
        assert gap >= -1e-15, f"t={t}: ours is worse than the reference's beta by {-gap:.2e}"
        diff = theirs - ours
        assert diff @ G @ diff <= 2.0 * gap + 1e-14, f"t={t}"
        lam_min = max(float(np.linalg.eigvalsh(G)[0]), 0.0)
        bound = max(1e-6, np.sqrt((2.0 * gap + 1e-14) / lam_min)) if lam_min > 0 else np.inf
        assert np.abs(diff).max() <= bound, f"t={t}: {np.abs(diff).max():.2e} > {bound:.2e}"
        assert abs(ours.sum() - 1.0) < 1e-12 and ours.min() >= 0.0


@pytest.mark.parametrize("name", ["g01_n50_d3", "g11_discrete_duplicates"])
def test_identical_rows_share_weight(name):
    """Empty k-means clusters leave identical rows at the origin; the QP splits their weight equally."""
    c = Case(name)
    z0 = c.load("z0.npy")
    zero_rows = np.flatnonzero(~z0.reshape(len(z0), -1).any(axis=1))
    assert len(zero_rows) >= 2
    beta0 = lwengine.RKMESpec.fit(c.X, **{**c.kwargs, "steps": 0}, init_z=z0).beta
    assert np.all(beta0[zero_rows] == beta0[zero_rows[0]])
    # the reference splits them (nearly) equally too
    theirs = c.load("beta_traj.npy")[0][zero_rows]
    assert np.ptp(theirs) <= 1e-9


# ------------------------------------------------------------------------------ whole trajectory
@pytest.mark.parametrize("name", _traj_cases())
def test_trajectory_from_recorded_z0(name):
    c = Case(name)
    z_ref, beta_ref = c.load("z_traj.npy"), c.load("beta_traj.npy")
    spec = lwengine.RKMESpec.fit(c.X, **c.kwargs, init_z=c.load("z0.npy"), record_trajectory=True)
    info = spec.fit_info
    K = z_ref.shape[1]
    z_ref2 = z_ref.reshape(len(z_ref), K, -1)
    assert info.z_traj.shape == z_ref2.shape and info.beta_traj.shape == beta_ref.shape

    # Z tolerance propagated from the beta differences (module docstring)
    tol = 1e-6
    for t in range(len(z_ref) - 1):
        np.testing.assert_allclose(info.z_traj[t], z_ref2[t], rtol=0, atol=tol, err_msg=f"z_traj[{t}]")
        dbeta = np.abs(info.beta_traj[t] - beta_ref[t])
        move = np.abs(z_ref2[t + 1] - z_ref2[t]).max(axis=1)
        rel = np.where(beta_ref[t] > 0, dbeta / np.maximum(np.abs(beta_ref[t]), 1e-300), 0.0)
        tol += 2.0 * float((np.minimum(rel, 1e6) * move).max())
    np.testing.assert_allclose(info.z_traj[-1], z_ref2[-1], rtol=0, atol=tol)

    final = lwengine.RKMESpec.load(c.dir / "spec.json")
    assert spec.z.shape == final.z.shape
    np.testing.assert_array_equal(final.z, z_ref[-1].reshape(final.z.shape))
    np.testing.assert_array_equal(spec.z.reshape(K, -1), info.z_traj[-1])
    if not c.p["nonnegative_beta"] or c.X.shape[0] == 1:  # no QP slack: everything to 1e-6
        assert tol < 2e-6
        np.testing.assert_allclose(spec.beta, final.beta, rtol=1e-6, atol=1e-6)

    # MMD^2 along the way: never worse than the reference's (ours solves each QP exactly)
    mkxx = c.e["mmd2_to_data"]["mean_k_xx"]
    for t, theirs in enumerate(c.e["mmd2_trajectory"]):
        ours = info.objective[t] + mkxx
        assert ours <= theirs + 1e-4 * abs(theirs) + 1e-12, f"t={t}: {ours:.6e} vs {theirs:.6e}"
    assert abs(spec.mmd2(c.X) - (info.objective[-1] + mkxx)) <= 1e-12


# ------------------------------------------------------------------------------ own initialisation
@pytest.mark.parametrize("name", [c for c in _ok_cases() if Case(c).p["reduce"]])
def test_own_init_mmd2_not_worse(name):
    """With lwengine's own seeded init (k-means++, best of 8), MMD^2 to the data is within 5% of the
    reference's (a single reference-style random draw varies by about +-15% between seeds)."""
    c = Case(name)
    spec = lwengine.RKMESpec.fit(c.X, **c.kwargs, seed=2024, init="k-means++", n_init=8)
    mmd2 = spec.objective(c.X) + c.e["mmd2_to_data"]["mean_k_xx"]
    theirs = c.e["mmd2_to_data"]["mmd2"]
    assert mmd2 <= 1.05 * theirs + 1e-12, f"{mmd2:.6e} vs reference {theirs:.6e}"


def test_reference_init_is_seeded():
    c = Case("g03_n2000_d20")
    a = lwengine.RKMESpec.fit(c.X, seed=7)
    b = lwengine.RKMESpec.fit(c.X, seed=7)
    d = lwengine.RKMESpec.fit(c.X, seed=8)
    np.testing.assert_array_equal(a.z, b.z)
    np.testing.assert_array_equal(a.beta, b.beta)
    assert not np.array_equal(a.z, d.z)


@pytest.mark.parametrize("name", [c for c in _ok_cases() if Case(c).p["reduce"] and Case(c).p["nonnegative_beta"]])
def test_mmd_descent_never_worse_than_its_start(name):
    """The documented better variant: MMD^2 is non-increasing along its whole trajectory."""
    c = Case(name)
    z0 = c.load("z0.npy") if c.has("z0.npy") else None
    spec = lwengine.RKMESpec.fit(c.X, **{**c.kwargs, "steps": max(3, c.p["steps"])}, init_z=z0, seed=0,
                                 update="mmd-descent")
    obj = spec.fit_info.objective
    assert all(b <= a + 1e-15 for a, b in zip(obj, obj[1:])), obj
    mkxx = c.e["mmd2_to_data"]["mean_k_xx"]
    if z0 is not None:
        assert obj[-1] + mkxx <= c.e["mmd2_to_data"]["mmd2"] + 1e-12
