"""Ray actor resources that fit the cluster, and the timeout of every remote wait.

Ray never schedules an actor whose resource request no node can satisfy: it waits forever.  So
the shard actors ask for a fraction of a CPU when the cluster has fewer CPUs than shards, and an
explicit request that cannot fit fails at once with a message saying what to change.
"""
from __future__ import annotations

__all__ = ["actor_options_for", "REMOTE_TIMEOUT"]

REMOTE_TIMEOUT = 300.0  # seconds any ray.get of a shard call may wait (ShardedIndex(remote_timeout=...))


def actor_options_for(ray, num_shards: int, actor_options: dict | None) -> dict:
    """``ray.remote`` options for ``num_shards`` actors: default ``num_cpus = min(1, CPUs / shards)``;
    a requested ``num_cpus`` (or custom resources) beyond the cluster's total raises ValueError."""
    opts = dict(actor_options or {})
    total = ray.cluster_resources()
    cpus = float(total.get("CPU", 0.0))
    if "num_cpus" not in opts:
        if cpus <= 0:
            raise ValueError("the Ray cluster reports no CPUs: pass actor_options={'num_cpus': 0} to place the "
                             "shard actors anyway")
        opts["num_cpus"] = min(1.0, cpus / num_shards)
    need = float(opts["num_cpus"]) * num_shards
    if need > cpus + 1e-9:
        raise ValueError(f"{num_shards} shard actors x num_cpus={opts['num_cpus']:g} need {need:g} CPUs but the Ray "
                         f"cluster has {cpus:g}: lower num_shards (--shards) or num_cpus (--shard-cpus, e.g. "
                         f"{cpus / num_shards:.3g}), or add nodes")
    for name, per in (opts.get("resources") or {}).items():
        if float(per) * num_shards > float(total.get(name, 0.0)) + 1e-9:
            raise ValueError(f"{num_shards} shard actors x {per:g} {name!r} exceed the cluster's "
                             f"{total.get(name, 0.0):g}: lower num_shards or the resource request")
    if float(opts.get("num_gpus", 0) or 0) * num_shards > float(total.get("GPU", 0.0)) + 1e-9:
        raise ValueError(f"{num_shards} shard actors x num_gpus={opts['num_gpus']:g} exceed the cluster's "
                         f"{total.get('GPU', 0.0):g} GPUs: lower num_shards or num_gpus")
    return opts
