"""Image specs (RKMEImageSpecification): generation, dist (foreign / canonical z), many-learnware scan.

Baselines in the same run: the reference's NNGP kernel replayed with torch's own ops
(lwengine.specs.image.nngp_torch, the module the reference builds in every inner_prod: same ops,
bit-equal entries) for dist; the reference's generation cannot run here (torchvision / torch-optimizer
are not importable with torch+cpu), so its cost is the MEASURED figure of the image semantics notes
§4 on this box (231 s set-up pass + 244 s per step at N = 2000, K = 50), labelled as such.

    python benchmarks/bench_image.py            # defaults: N = 2000, K = 50, 100 steps, 1e6 learnwares
    python benchmarks/bench_image.py --smoke    # seconds
"""
from __future__ import annotations

import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import common  # noqa: E402

REF_SETUP_S, REF_STEP_S = 231.0, 244.0  # measured, image semantics notes §4 (N=2000, K=50, 1 thread)
REF_DIST_K50_S = (0.17, 0.46)           # measured, §1.7


def blobs(n, C, rng):
    yy, xx = np.mgrid[0:32, 0:32]
    X = np.zeros((n, C, 32, 32), np.float32)
    for i in range(n):
        cy, cx, r = rng.uniform(6, 26), rng.uniform(6, 26), rng.uniform(3, 9)
        for c in range(C):
            X[i, c] = 255 * np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * r * r)) * rng.uniform(0.3, 1)
    return (X + rng.uniform(0, 20, X.shape)).astype(np.uint8)


def main():
    p = common.parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=None)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--market", type=int, default=None)
    p.add_argument("--no-generate", action="store_true", help="skip the generation row")
    p.add_argument("--generate-only", action="store_true", help="only the generation row")
    p.add_argument("--dock-market", type=int, default=None, help="learnwares in the dock row (default 10000)")
    a = p.parse_args()
    from lwengine.specs.image import RKMEImageSpec, canonical_dists, canonical_self_terms, canonical_z, NetConfig
    from lwengine import kernels

    smoke = a.smoke
    n = a.n or (40 if smoke else 2000)
    steps = a.steps if a.steps is not None else (1 if smoke else 100)
    market = a.market or (10_000 if smoke else 1_000_000)
    K = 10 if smoke else 50
    rep = 3 if smoke else a.repeats
    rng = np.random.default_rng(0)
    rows = []

    # ---- generation
    X = blobs(n, 3, rng)
    if not a.no_generate:
        t0 = time.perf_counter()
        spec = RKMEImageSpec.fit(X, K=K, steps=steps, device="cpu")
        gen = time.perf_counter() - t0
        ref_gen = REF_SETUP_S + steps * REF_STEP_S
        rows.append({"op": f"generate N={n} C=3 K={K} steps={steps}", "lwengine_s": gen,
                     "reference_s": ref_gen if (n == 2000 and K == 50) else None,
                     "baseline": "reference measured (§4), not run here",
                     "parts": {k: round(v, 2) for k, v in spec.fit_info.seconds.items()}})
        print(rows[-1], flush=True)
        if a.generate_only:
            _dump(rows, a.json)
            return

    # ---- dist at K, C=3: foreign z and canonical z
    from lwengine.specs.image.nngp_torch import torch_nngp_kernel

    za = rng.standard_normal((K, 3, 32, 32)).astype(np.float32)
    zb = rng.standard_normal((K, 3, 32, 32)).astype(np.float32)
    A = RKMEImageSpec(za, rng.dirichlet(np.ones(K)))
    B = RKMEImageSpec(zb, rng.dirichlet(np.ones(K)))

    def ref_dist():
        s = 0.0
        for x, y in ((za, None), (za, zb), (zb, None)):
            s += float(torch_nngp_kernel(x, y).sum())
        return s

    t_ref = common.timeit(ref_dist, repeats=rep)
    t_for = common.timeit(lambda: A.dist(B), repeats=rep)
    rows.append({"op": f"dist foreign z K={K} C=3", "lwengine_s": t_for, "reference_s": t_ref,
                 "ratio": t_ref / t_for, "baseline": "torch replica of the reference's NNGP (3 kernels)"})
    zc = canonical_z(K, NetConfig(3))
    Ac = RKMEImageSpec(zc, rng.dirichlet(np.ones(K)))
    Bc = RKMEImageSpec(zc, rng.dirichlet(np.ones(K)))
    Ac.dist(Bc)  # warm the Gram cache
    t_can = common.timeit(lambda: Ac.dist(Bc), repeats=rep, min_time=0.05)
    rows.append({"op": f"dist canonical z K={K} C=3 (bit-exact)", "lwengine_s": t_can, "reference_s": t_ref,
                 "ratio": t_ref / t_can, "baseline": "torch replica of the reference's NNGP (3 kernels)"})

    # ---- many default learnwares: O(K) per learnware
    betas = rng.dirichlet(np.ones(K), size=market)
    t0 = time.perf_counter()
    self_terms = canonical_self_terms(betas, 3)
    t_index = time.perf_counter() - t0
    user = RKMEImageSpec(zc, rng.dirichlet(np.ones(K)))
    t_scan = common.timeit(lambda: canonical_dists(user, betas, self_terms=self_terms), repeats=rep)
    sub = 20 if smoke else 50
    t_one = common.timeit(lambda: [RKMEImageSpec(zc, b).dist(user) for b in betas[:sub]], repeats=1) / sub
    rows.append({"op": f"scan {market} canonical learnwares K={K} (float64 forms)", "lwengine_s": t_scan,
                 "index_self_terms_s": t_index, "reference_s": t_ref * market,
                 "baseline": "reference dist per learnware (torch replica) x market size",
                 "lwengine_exact_per_learnware_s": t_one})
    # ---- the reference search over the market, through SpecIndex (canonical-z store: beta only)
    import lwengine

    ids = [f"{i:08d}" for i in range(market)]
    t0 = time.perf_counter()
    index = lwengine.SpecIndex()
    index.add_store(ids, "RKMEImageSpecification", (3, 32, 32), -3.0, np.empty((market * K, 0)),
                    betas.reshape(-1), np.arange(market + 1, dtype=np.int64) * K)
    t_build = time.perf_counter() - t0
    users = {"canonical user": user,
             # foreign z near the market (canonical z + 1e-3 noise): dists below the transform's saturation
             "foreign-z user": RKMEImageSpec(zc + 1e-3 * rng.normal(size=zc.shape), rng.dirichlet(np.ones(K)))}
    for name, u in users.items():
        for method in ("greedy", "auto"):
            res = index.search(u, max_search_num=3, method=method)
            t_search = common.timeit(lambda: index.search(u, max_search_num=3, method=method), repeats=rep)
            # exactness: every dist equals canonical_dists (the reference's bookkeeping in float64 forms)
            want = canonical_dists(u, betas, self_terms=index.groups()[0].self_ip[:market])
            top = [int(i) for i in res.ranking[:5]]
            err = float(np.max(np.abs(np.asarray(res.dists[:5]) - want[top])))
            rows.append({"op": f"SpecIndex.search {market} canonical learnwares K={K} C=3, {name}, {method}",
                         "lwengine_s": t_search, "index_build_s": t_build, "reference_s": t_ref * market,
                         "ratio": t_ref * market / t_search, "top5_max_abs_err_vs_canonical_dists": err,
                         "baseline": "reference dist per learnware (torch replica) x market size"})
    # ---- the same through a dock (records on disk, the dock's own SpecIndex); a smaller market by default
    dock_n = min(market, a.dock_market or (2_000 if smoke else 10_000))
    import tempfile

    from lwengine.dock import Dock

    with tempfile.TemporaryDirectory() as tmp:
        dock = Dock.init(os.path.join(tmp, "dock"))
        t0 = time.perf_counter()
        dock.add_specs([(RKMEImageSpec(zc, betas[i]), None) for i in range(dock_n)])
        t_dock_build = time.perf_counter() - t0
        t_dock = common.timeit(lambda: dock.search(user, max_search_num=3), repeats=rep)
        rows.append({"op": f"Dock.search {dock_n} canonical learnwares K={K} C=3 (greedy)", "lwengine_s": t_dock,
                     "dock_build_s": t_dock_build, "reference_s": t_ref * dock_n, "ratio": t_ref * dock_n / t_dock,
                     "baseline": "reference dist per learnware (torch replica) x market size"})
        dock.close()
    _dump(rows, a.json)


def _dump(rows, path):
    for r in rows:
        print({k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()})
    if path:
        import json

        with open(path, "w") as f:
            json.dump({"rows": rows, "machine": common.machine_info() if hasattr(common, "machine_info") else None}, f,
                      indent=1)


if __name__ == "__main__":
    main()
