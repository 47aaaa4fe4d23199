"""ShardedIndex (Ray actors on this machine) against one in-process SpecIndex: latency and throughput.

For 1, 2 and 4 actors: reference-pipeline ``search`` (every distance, scores, greedy mixture) and
certified ``topk`` per query (median latency), and ``search_batch`` throughput (queries/s); the
baseline is the single SpecIndex on the same market in the same run.  Synthetic "families" market
(lwengine.scale.make_market), float32 stores.  Actors get ``num_cpus = 2 / actors`` of a local
Ray cluster sized to this machine, and the same OpenMP thread budget in total.

    python benchmarks/bench_distributed.py --smoke          # < 60 s
    python benchmarks/bench_distributed.py --n 1000000 --d 8 --K 8
"""
from __future__ import annotations

import os
import sys
import time

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

import numpy as np  # noqa: E402


def main():
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--d", type=int, default=8)
    p.add_argument("--K", type=int, default=8)
    p.add_argument("--queries", type=int, default=8)
    p.add_argument("--actors", default="1,2,4")
    a = p.parse_args()
    if a.smoke:
        a.n, a.queries, a.repeats, a.actors = 20_000, 4, 3, "1,2"
    import ray

    from lwengine.distributed import ShardedIndex
    from lwengine.scale import make_queries
    from lwengine.scale.market import MarketSpec, market_arrays
    from lwengine import SpecIndex

    cpus = os.cpu_count() or 2
    t0 = time.perf_counter()
    market = MarketSpec(a.n, a.d, a.K, "families", seed=0)
    z, beta, offs = market_arrays(market)
    ids = [f"{i:08d}" for i in range(a.n)]
    single = SpecIndex(dtype="float32")
    single.add_packed(ids, z, beta, offs, market.gamma)
    qs = make_queries(market, a.queries)
    print(f"market: n={a.n} d={a.d} K={a.K} float32 ({z.nbytes / 2**20:.0f} MiB of z), built in "
          f"{time.perf_counter() - t0:.1f} s; {a.queries} queries; {cpus} CPUs")

    def per_query(fn):
        return float(np.median([common.timeit(lambda q=q: fn(q), repeats=a.repeats, warmup=1) for q in qs]))

    rows = []
    base = {"search": per_query(lambda q: single.search(q, 5)),
            "topk": per_query(lambda q: single.topk(q, 5)),
            "batch": common.timeit(lambda: single.search_batch(qs, 5), repeats=max(1, a.repeats // 2))}
    rows.append(("SpecIndex (1 process)", base["search"], base["topk"], len(qs) / base["batch"], 1.0, 1.0))
    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
    print(f"ray.init: {time.perf_counter() - t0:.1f} s")
    for n_act in [int(x) for x in a.actors.split(",")]:
        t0 = time.perf_counter()
        threads = max(1, cpus // n_act)
        sx = ShardedIndex(n_act, dtype="float32", journal=False,
                          actor_options={"num_cpus": cpus / n_act,
                                         "runtime_env": {"env_vars": {"OMP_NUM_THREADS": str(threads)}}})
        sx.add_packed(ids, z, beta, offs, market.gamma)
        build = time.perf_counter() - t0
        # identical results (checked on every query: ids, distances, scores, mixture)
        for q in qs:
            r1, r2 = single.search(q, 5), sx.search(q, 5)
            assert [(s.id, s.dist, s.score) for s in r1.single] == [(s.id, s.dist, s.score) for s in r2.single]
            assert r1.to_dict() == r2.to_dict()
            assert single.topk(q, 5) == sx.topk(q, 5)
        s = per_query(lambda q: sx.search(q, 5))
        t = per_query(lambda q: sx.topk(q, 5))
        b = common.timeit(lambda: sx.search_batch(qs, 5), repeats=max(1, a.repeats // 2))
        rows.append((f"ShardedIndex {n_act} actor(s)", s, t, len(qs) / b, base["search"] / s, base["topk"] / t))
        print(f"  {n_act} actor(s): built in {build:.1f} s, {threads} OpenMP thread(s) each")
        sx.close()
    ray.shutdown()
    print(f"\n{'configuration':<26} {'search ms':>10} {'topk ms':>9} {'batch q/s':>10} "
          f"{'search x':>9} {'topk x':>7}")
    for name, s, t, qps, rs, rt in rows:
        print(f"{name:<26} {s * 1e3:>10.2f} {t * 1e3:>9.2f} {qps:>10.2f} {rs:>9.2f} {rt:>7.2f}")
    print("(x = speed relative to the single in-process SpecIndex, medians; results verified identical)")
    if a.json:
        import json

        with open(a.json, "w") as f:
            json.dump({"n": a.n, "d": a.d, "K": a.K, "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
