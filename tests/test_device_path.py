"""``device=`` of SpecIndex / search / topk / Dock reaches every kernel call; "cuda" without CUDA is a
clear RuntimeError."""
from __future__ import annotations

import numpy as np
import pytest

from lwengine import RKMESpec, RKMETextSpec, SpecIndex, kernels
from lwengine import device as devices
from lwengine.dock import Dock
from lwengine.limits import ANY_GAMMA

SPIED = ("cross_inner", "self_inner", "gram")


def _specs(n=12, seed=0):
    rng = np.random.default_rng(seed)
    return [RKMESpec(rng.normal(size=(6, 4)), rng.dirichlet(np.ones(6)), 0.3) for _ in range(n)]


@pytest.fixture
def spy(monkeypatch):
    """Record the ``device`` of every spied kernel call, and run it on the CPU."""
    seen = []
    for name in SPIED:
        original = getattr(kernels, name)

        def wrapper(*args, _original=original, device="auto", **kwargs):
            seen.append(device)
            return _original(*args, device="cpu", **kwargs)

        monkeypatch.setattr(kernels, name, wrapper)
    return seen


@pytest.fixture
def fake_cuda(monkeypatch):
    """Pretend a CUDA build and GPU are present, so that device="cuda" resolves."""
    monkeypatch.setattr(kernels, "resolve_device",
                        lambda device="auto", data=(), *, backend="native": "cuda" if device == "cuda" else "cpu")


def test_cuda_without_a_cuda_build_is_a_clear_error():
    if devices.cuda_available():
        pytest.skip("a CUDA device is present")
    for make in (lambda: SpecIndex(device="cuda"), lambda: devices.resolve("cuda")):
        with pytest.raises(RuntimeError, match="device='cuda'"):
            make()
    index = SpecIndex()
    index.add("a", _specs(1)[0])
    with pytest.raises(RuntimeError, match="device='cuda'"):
        index.search(_specs(1)[0], device="cuda")
    with pytest.raises(RuntimeError, match="cuda"):
        RKMETextSpec.fit(np.random.default_rng(0).normal(size=(30, 5)), language=[], K=5, device="cuda")
    with pytest.raises(ValueError, match="device must be 'auto', 'cpu' or 'cuda'"):
        SpecIndex(device="gpu")


def test_auto_is_cuda_only_with_a_build_and_a_gpu():
    assert SpecIndex().device == ("cuda" if devices.cuda_available() else "cpu")
    assert SpecIndex(device="cpu").device == "cpu"


def test_the_index_device_reaches_every_kernel_call(spy, fake_cuda, tmp_path):
    specs = _specs(300)
    index = SpecIndex(device="cuda")
    assert index.device == "cuda"
    index.add_many([(f"s{i}", s) for i, s in enumerate(specs)])
    index.search(specs[3], max_search_num=3)  # scan (screened: >= 256 specs), certify, pool, mixture
    index.search_batch(specs[:2], max_search_num=2, method="auto", screen=False)
    index.topk(specs[5], k=3, mode="brute")
    index.topk(specs[5], k=3, mode="certified")
    assert spy and set(spy) == {"cuda"}, set(spy)
    spy.clear()
    index.search(specs[3], max_search_num=2, device="cpu")  # a per-call device wins
    index.topk(specs[5], k=3, mode="brute", device="cpu")
    assert spy and set(spy) == {"cpu"}


def test_the_dock_device_reaches_the_search(spy, fake_cuda, tmp_path):
    specs = _specs(20, seed=1)
    d = Dock.init(tmp_path / "d", device="cuda", gamma_policy=ANY_GAMMA)  # specs of gamma 0.3
    d.add_specs([(s, None) for s in specs])
    spy.clear()
    res = d.search(specs[0], max_search_num=3)
    assert res.single and spy and set(spy) == {"cuda"}
    spy.clear()
    d.search(specs[0], max_search_num=3, device="cpu")
    assert spy and set(spy) == {"cpu"}
