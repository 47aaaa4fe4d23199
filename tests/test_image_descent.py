"""update="nngp-descent": monotone steps and a lower MMD^2 than the reference's spec."""
from __future__ import annotations

import numpy as np
import pytest

from lwengine.specs.image import RKMEImageSpec, NetConfig, canonical_z

torch = pytest.importorskip("torch")


def _data(n, C, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:32, 0:32]
    X = np.zeros((n, C, 32, 32), np.float32)
    for i in range(n):
        cy, cx = rng.uniform(8, 24, 2)
        X[i] = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 30.0)
    return X + 0.05 * rng.standard_normal(X.shape).astype(np.float32)


def test_descent_monotone_and_lower():
    from lwengine.specs.image.descent import nngp_descent
    from lwengine.specs.image.generate import preprocess

    xt = preprocess(_data(12, 1, 0)).numpy()
    start = RKMEImageSpec(canonical_z(3, NetConfig(1)), np.full(3, 1 / 3))
    out = nngp_descent(start, xt, steps=3)
    h = out.descent_info["history"]
    assert len(h) >= 2 and all(a > b for a, b in zip(h, h[1:]))
    assert abs(start.mmd2(xt) - h[0]) < 1e-12
    assert abs(out.mmd2(xt) - h[-1]) < 1e-12  # the returned spec is the one the history ends with
    assert out.z.dtype == np.float32 and abs(out.beta.sum() - 1) < 1e-12 and (out.beta >= 0).all()


def test_fit_with_descent_update():
    X = _data(8, 1, 1)
    ref = RKMEImageSpec.fit(X, K=3, steps=0, device="cpu")
    new = RKMEImageSpec.fit(X, K=3, steps=0, device="cpu", update="nngp-descent", descent_steps=2)
    xt = ref.fit_info.x_train if ref.fit_info.x_train is not None else new.fit_info.x_train
    assert new.mmd2(xt) < ref.mmd2(xt)
