"""device= routing of lwengine.kernels: CPU always; CUDA only when built and a device is visible."""
from __future__ import annotations

import numpy as np
import pytest

from lwengine import _backend, kernels

rng = np.random.default_rng(5)
Z, B, OFF = rng.normal(size=(9, 4)), rng.random(9), np.array([0, 2, 2, 9])
X = rng.normal(size=(50, 4))  # float64: both backends then compute in float64
CALLS = {
    "cross_inner": lambda dev: kernels.cross_inner(Z[:3], B[:3], [0, 3], Z, B, OFF, 0.3, device=dev),
    "self_inner": lambda dev: kernels.self_inner(Z, B, OFF, 0.3, device=dev),
    "gram": lambda dev: kernels.gram(Z, B, OFF, 0.3, device=dev),
    "kernel_mean": lambda dev: kernels.kernel_mean(Z, X, 0.3, device=dev),
    "rs_step": lambda dev: kernels.rs_step(Z, B, X, 0.3, 0.1, device=dev),
}
HAS_GPU = _backend.cuda_device_count() > 0


@pytest.mark.parametrize("name", sorted(CALLS))
def test_cpu_and_auto_agree_on_host_data(name):
    np.testing.assert_array_equal(CALLS[name]("cpu"), CALLS[name]("auto"))


@pytest.mark.parametrize("name", sorted(CALLS))
def test_unknown_device_is_a_value_error(name):
    with pytest.raises(ValueError, match="device must be"):
        CALLS[name]("gpu")


@pytest.mark.skipif(HAS_GPU, reason="a CUDA device is present")
@pytest.mark.parametrize("name", sorted(CALLS))
def test_cuda_without_a_device_is_a_clear_runtime_error(name):
    with pytest.raises(RuntimeError, match="device='cuda'"):
        CALLS[name]("cuda")


@pytest.mark.skipif(not HAS_GPU, reason="no CUDA device")
@pytest.mark.parametrize("name", sorted(CALLS))
def test_cuda_matches_cpu(name):
    np.testing.assert_allclose(CALLS[name]("cuda"), CALLS[name]("cpu"), rtol=1e-10, atol=1e-13)
