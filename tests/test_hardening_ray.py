"""(13) ShardedIndex never waits forever: actor resources fit the cluster or fail fast; remote waits time out."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

ray = pytest.importorskip("ray")

from lwengine import RKMESpec, SpecIndex  # noqa: E402
from lwengine.distributed import ShardedIndex, ShardUnavailableError  # noqa: E402


@pytest.fixture(scope="module", autouse=True)
def cluster():
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    if started:
        ray.shutdown()


def _bounded(fn, seconds=90):
    box = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            box["error"] = exc
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert not t.is_alive(), f"still waiting after {seconds} s (hang)"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_more_shards_than_cpus_fits_with_fractional_cpus():
    rng = np.random.default_rng(0)
    specs = {f"s{i}": RKMESpec(rng.normal(size=(4, 3)), np.full(4, .25), 0.1, 10) for i in range(12)}
    sx = _bounded(lambda: ShardedIndex(3))   # 3 actors on a 2-CPU cluster
    try:
        assert sx.num_shards == 3
        _bounded(lambda: sx.add_many(list(specs.items())))
        single = SpecIndex()
        single.add_many(list(specs.items()))
        u = RKMESpec(rng.normal(size=(5, 3)), np.full(5, .2), 0.1, 10)
        assert _bounded(lambda: sx.search(u)).to_dict() == single.search(u).to_dict()
    finally:
        sx.close()


def test_a_request_the_cluster_cannot_hold_fails_fast():
    t = time.monotonic()
    with pytest.raises(ValueError, match="--shards") as info:
        _bounded(lambda: ShardedIndex(3, actor_options={"num_cpus": 1}), 30)
    assert time.monotonic() - t < 30 and "need 3 CPUs" in str(info.value)
    with pytest.raises(ValueError, match="GPUs"):
        _bounded(lambda: ShardedIndex(2, actor_options={"num_cpus": 0.1, "num_gpus": 1}), 30)


def test_remote_waits_time_out():
    with pytest.raises(ShardUnavailableError, match="remote_timeout"):
        _bounded(lambda: ShardedIndex(2, actor_options={"num_cpus": 0.1}, remote_timeout=1e-4), 60)
