"""One-call GPU check of lwengine's CUDA kernels: correctness, timings, ceilings -> JSON.

Run on a machine with an installed lwengine built with CUDA (it builds nothing):

    PYTHONUNBUFFERED=1 python benchmarks/gpu_check.py [--quick]

1. Correctness on fresh seeded random inputs: every CUDA kernel (numpy host path, and the torch
   device path when torch is present) against the float64 twins in ``lwengine._reference`` and
   the CPU path ``lwengine.kernels``; relative error ||out - ref|| / ||ref|| per precision, awkward
   shapes (K = 1, 7, 97; d = 1, 3, 65; N = 1; empty segments; multi-chunk queries and columns);
   outputs poisoned with NaN before each call (the host path poisons its device buffers, the raw
   path here poisons too) so an unwritten element fails; a bitwise determinism re-run.
2. Timings with CUDA events (warm-up, median of repeats) on device-resident data filled on the
   device: cross_inner for N in {1e4, 1e5, 1e6} specs (K = 100, d in {20, 64}, one query spec of
   100 rows), self_inner, zx_moments (+ step) for n in {1e6, 1e7}.
3. Ceilings measured in the same call: device-to-device copy (bytes read + written per second),
   float32 __expf and FFMA microkernels in _cuda, a large fp32 / TF32 matmul through torch when
   present.  Each timing gets its floors: ``floor = max(bytes / copy rate, exps / exp rate)`` (the
   brief's floor) and ``floor_fma = max(floor, FMA flops / FFMA rate)`` (the floor of an FFMA
   kernel), and the ratios time / floor.
4. Everything goes to ``$OUT/gpu_check.json`` (OUT defaults to ./gpu_out); a table is printed last.

Any failure is recorded in the JSON and the script goes on.  Without a CUDA device it says so and
exits with status 0.
"""
from __future__ import annotations

import argparse
import inspect
import json
import os
import platform
import statistics
import subprocess
import sys
import time
import traceback

import numpy as np

F32_TOL = 2e-5   # float32 pair terms (expansion in float32, __expf), float64 sums
F64_TOL = 1e-10  # float64 throughout (different summation order only)


# ---------------------------------------------------------------------------------- helpers
def rel_err(out, ref) -> float:
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    if out.shape != ref.shape:
        return float("inf")
    if not np.all(np.isfinite(out)):
        return float("nan")
    den = float(np.linalg.norm(ref))
    num = float(np.linalg.norm(out - ref))
    return num / den if den > 0 else num


def make_store(rng, sizes, d, dtype, scale=1.0):
    sizes = np.asarray(sizes, dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
    m = int(offsets[-1])
    z = (scale * rng.standard_normal((m, d))).astype(dtype)
    beta = rng.uniform(0.0, 1.0, m)
    for a, b in zip(offsets[:-1], offsets[1:]):
        if b > a:
            beta[a:b] /= beta[a:b].sum()
    return z, beta, offsets


def to_numpy(a):
    if hasattr(a, "detach"):
        return a.detach().cpu().numpy()
    return None if a is None else np.asarray(a)


class Recorder:
    def __init__(self):
        self.checks = []

    def check(self, name, params, fn):
        """Run fn() -> dict of {metric: (value, tol)}; record verdict; never raise."""
        entry = {"kernel": name, "params": params}
        t0 = time.perf_counter()
        try:
            metrics = fn()
            entry["metrics"] = {k: {"value": v, "tol": tol} for k, (v, tol) in metrics.items()}
            entry["verdict"] = "pass" if all(v is not None and v <= tol for v, tol in metrics.values()) else "FAIL"
        except Exception as exc:  # noqa: BLE001 - every failure is recorded, the script goes on
            entry["verdict"] = "ERROR"
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc(limit=6)
        entry["seconds"] = round(time.perf_counter() - t0, 3)
        self.checks.append(entry)
        if entry["verdict"] != "pass":
            print(f"  {entry['verdict']}: {name} {params} {entry.get('error', entry.get('metrics'))}", flush=True)
        return entry


# ------------------------------------------------------------------------------ correctness
def correctness(rec: Recorder, cuda_ops, kernels, ref, torch, seed: int, quick: bool):
    rng = np.random.default_rng(seed)

    def cpu_or_none(fn):
        try:
            return fn()
        except Exception:  # noqa: BLE001 - CPU path missing in this build: compare to the reference only
            return None

    def compare(out, ref_val, cpu_val, tol, extra=None):
        m = {"rel_err_vs_reference": (rel_err(out, ref_val), tol)}
        if cpu_val is not None:
            m["rel_err_vs_cpu"] = (rel_err(out, cpu_val), tol)
        if extra:
            m.update(extra)
        return m

    def via_torch(fn, *arrays):
        """Run fn on torch CUDA copies of arrays; numpy result (None without torch)."""
        if torch is None:
            return None
        ts = [torch.as_tensor(a, device="cuda") for a in arrays]
        out = fn(*ts)
        if isinstance(out, tuple):
            return tuple(to_numpy(o) for o in out)
        return to_numpy(out)

    # --- cross_inner
    cross_cases = [
        dict(q_sizes=[100], sizes=[100] * 50, d=64),
        dict(q_sizes=[1, 7, 97], sizes=list(rng.integers(1, 98, 40)), d=3),
        dict(q_sizes=[1], sizes=[1], d=1),
        dict(q_sizes=[200, 5], sizes=list(rng.integers(60, 70, 30)), d=65),  # query chunks of <= 128 rows
        dict(q_sizes=[0, 7, 0], sizes=[0, 5, 0, 0, 97, 1, 0], d=20),         # empty segments
        dict(q_sizes=[33], sizes=[700, 3, 1000], d=600),                     # several column slices
        dict(q_sizes=[10], sizes=[3] * 3000, d=8),                           # many small specs per chunk
    ]
    if quick:
        cross_cases = cross_cases[:5]
    for case in cross_cases:
        for dtype, tol in ((np.float32, F32_TOL), (np.float64, F64_TOL)):
            params = {**{k: (v if len(v) <= 8 else f"{len(v)} specs") if isinstance(v, list) else v
                         for k, v in case.items()}, "dtype": np.dtype(dtype).name}

            def run(case=case, dtype=dtype, tol=tol):
                d = case["d"]
                gamma = 1.0 / d
                qz, qb, qo = make_store(rng, case["q_sizes"], d, dtype)
                z, b, o = make_store(rng, case["sizes"], d, dtype)
                out = cuda_ops.cross_inner(qz, qb, qo, z, b, o, gamma)
                r = ref.cross_inner(qz, qb, qo, z, b, o, gamma)
                cpu = cpu_or_none(lambda: kernels.cross_inner(qz, qb, qo, z, b, o, gamma))
                again = cuda_ops.cross_inner(qz, qb, qo, z, b, o, gamma)
                extra = {"bitwise_rerun_mismatches": (float(np.sum(again != out)), 0.0)}
                tout = via_torch(lambda *t: cuda_ops.cross_inner(*t, gamma), qz, qb, qo, z, b, o)
                if tout is not None:
                    extra["rel_err_torch_vs_host"] = (rel_err(tout, out), 1e-12)
                return compare(out, r, cpu, tol, extra)

            rec.check("cross_inner", params, run)

    # --- self_inner / gram
    store_cases = [
        dict(sizes=[100] * 30, d=64),
        dict(sizes=[1, 7, 97, 0, 3], d=3),
        dict(sizes=[1], d=1),
        dict(sizes=[300, 0, 65], d=65),
        dict(sizes=[50, 20], d=600),
    ]
    for case in store_cases:
        for dtype, tol in ((np.float32, F32_TOL), (np.float64, F64_TOL)):
            for name in ("self_inner", "gram"):
                params = {**case, "dtype": np.dtype(dtype).name}

                def run(case=case, dtype=dtype, tol=tol, name=name):
                    d = case["d"]
                    gamma = 1.0 / d
                    z, b, o = make_store(rng, case["sizes"], d, dtype)
                    out = getattr(cuda_ops, name)(z, b, o, gamma)
                    # _reference.self_inner cannot take empty segments: use its gram's diagonal
                    r = ref.gram(z, b, o, gamma) if name == "gram" else np.diag(ref.gram(z, b, o, gamma)).copy()
                    cpu = cpu_or_none(lambda: getattr(kernels, name)(z, b, o, gamma))
                    extra = {}
                    if name == "gram":
                        extra["asymmetry"] = (float(np.abs(out - out.T).max()) if out.size else 0.0, 0.0)
                    tout = via_torch(lambda *t: getattr(cuda_ops, name)(*t, gamma), z, b, o)
                    if tout is not None:
                        extra["rel_err_torch_vs_host"] = (rel_err(tout, out), 1e-12)
                    return compare(out, r, cpu, tol, extra)

                rec.check(name, params, run)

    # --- zx_moments / kernel_mean
    zx_cases = [
        dict(K=100, n=5000, d=64), dict(K=1, n=1, d=1), dict(K=7, n=63, d=3), dict(K=97, n=1000, d=65),
        dict(K=200, n=777, d=20), dict(K=5, n=300, d=130), dict(K=9, n=200, d=600),
    ]
    if quick:
        zx_cases = zx_cases[:5]
    for case in zx_cases:
        for dtype, tol in ((np.float32, F32_TOL), (np.float64, F64_TOL)):
            for with_t in (True, False):
                params = {**case, "dtype": np.dtype(dtype).name, "with_t": with_t}

                def run(case=case, dtype=dtype, tol=tol, with_t=with_t):
                    K, n, d = case["K"], case["n"], case["d"]
                    gamma = 1.0 / d
                    x = rng.standard_normal((n, d)).astype(dtype)
                    z = x[rng.integers(0, n, K)].astype(np.float64) + 0.1 * rng.standard_normal((K, d))
                    C, T = cuda_ops.zx_moments(z, x, gamma, with_t=with_t)
                    Cr, Tr = ref.zx_moments(z, x, gamma)
                    cpu = cpu_or_none(lambda: kernels.zx_moments(z, x, gamma, with_t=with_t))
                    m = compare(C, Cr, None if cpu is None else cpu[0], tol)
                    if with_t:
                        m["T_rel_err_vs_reference"] = (rel_err(T, Tr), tol)
                        if cpu is not None:
                            m["T_rel_err_vs_cpu"] = (rel_err(T, cpu[1]), tol)
                    elif T is not None:
                        m["T_not_none"] = (1.0, 0.0)
                    tout = via_torch(lambda zt, xt: cuda_ops.zx_moments(zt, xt, gamma, with_t=with_t), z, x)
                    if tout is not None:
                        m["C_rel_err_torch_vs_host"] = (rel_err(tout[0], C), 1e-12)
                    return m

                rec.check("zx_moments", params, run)

    # --- reduced-set step: from reference moments (float64 kernel), and end to end (moments + step)
    for K, d in ((1, 1), (7, 3), (97, 65), (100, 64), (150, 20)):
        for exact in (False, True):
            params = {"K": K, "d": d, "exact_gradient": exact}

            def run(K=K, d=d, exact=exact):
                gamma, step = 1.0 / d, 0.1
                x = rng.standard_normal((2000, d))
                z = x[rng.integers(0, 2000, K)] + 0.1 * rng.standard_normal((K, d))
                beta = rng.uniform(0.0, 1.0, K)
                beta /= beta.sum()
                C, T = ref.zx_moments(z, x, gamma)
                out = cuda_ops.rs_step_from_moments(z, beta, C, T, gamma, step, exact_gradient=exact)
                r = ref.rs_step_from_moments(z, beta, C, T, gamma, step, exact_gradient=exact)
                cpu = cpu_or_none(lambda: kernels.rs_step_from_moments(z, beta, C, T, gamma, step,
                                                                       exact_gradient=exact))
                m = compare(out, r, cpu, F64_TOL)
                e2e64 = cuda_ops.rs_step(z, beta, x, gamma, step, exact_gradient=exact)
                e2e32 = cuda_ops.rs_step(z, beta, x.astype(np.float32), gamma, step, exact_gradient=exact)
                r32 = ref.rs_step(z, beta, x.astype(np.float32), gamma, step, exact_gradient=exact)
                m["end_to_end_f64_rel_err"] = (rel_err(e2e64, r), F64_TOL)
                m["end_to_end_f32x_rel_err"] = (rel_err(e2e32, r32), F32_TOL)
                return m

            rec.check("rs_step", params, run)

    # --- bad input is refused with a clear error, never a crash
    def bad_inputs():
        n_ok = 0
        z, b, o = make_store(rng, [3, 4], 5, np.float32)
        for args, exc in (
            ((z, b, o, z, b, np.array([0, 2, 1, 7])), ValueError),
            ((z, b, o, z, b[:-1], o), ValueError),
            ((z[:, :4], b, o, z, b, o), ValueError),
        ):
            try:
                cuda_ops.cross_inner(*args, 0.5)
            except exc:
                n_ok += 1
        try:
            cuda_ops.zx_moments(z.astype(np.float64), np.zeros((0, 5)), 0.5)
        except ValueError:
            n_ok += 1
        return {"unrefused_bad_inputs": (float(4 - n_ok), 0.0)}

    rec.check("validation", {}, bad_inputs)


# ---------------------------------------------------------------------------- search pipeline
def search_pipeline(rec: Recorder, seed: int):
    import lwengine

    cls = getattr(lwengine, "SpecIndex", None)
    params = {}
    if cls is None or "device" not in inspect.signature(cls).parameters:
        rec.checks.append({"kernel": "search_pipeline", "params": params, "verdict": "not available",
                           "note": "lwengine.SpecIndex has no device option"})
        return

    def run():
        rng = np.random.default_rng(seed)
        specs = []
        for i in range(200):
            K = int(rng.integers(5, 30))
            specs.append(lwengine.RKMESpec(rng.standard_normal((K, 8)), np.full(K, 1.0 / K), gamma=0.1))
        user = lwengine.RKMESpec(rng.standard_normal((20, 8)), np.full(20, 0.05), gamma=0.1)
        results = {}
        for dev in ("cpu", "cuda"):
            idx = cls(device=dev)
            for i, s in enumerate(specs):
                idx.add(f"{i:08d}", s)
            results[dev] = idx.search(user)
        same = repr(results["cpu"]) == repr(results["cuda"])
        return {"results_differ": (0.0 if same else 1.0, 0.0)}

    rec.check("search_pipeline", params, run)


# ---------------------------------------------------------------------------- end-to-end paths
def _wall_ms(fn, repeats=3):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return float(np.median(times)), out


def end_to_end(rec: Recorder, seed: int, quick: bool, *, devices=("cpu", "cuda"), sizes=None, image_n=None,
               image: bool = True):
    """The paths a dock runs, on the GPU (devices[1]) against the CPU (devices[0]), with wall-clock
    medians (the index's packed store is host memory: a per-call ``device="cuda"`` copies it in): the NNGP kernel of image specs, the reference search over N table specs, a certified top-k,
    and an image spec's feature pass.  Returns the timing rows.  ``devices=("cpu", "cpu")`` with tiny
    sizes exercises the code on a machine without a GPU."""
    import lwengine
    from lwengine import _reference, kernels
    from lwengine.scale.market import MarketSpec, make_market, make_queries

    cpu, gpu = devices
    rows = []
    rng = np.random.default_rng(seed)

    # NNGP kernel (image specs): GPU vs CPU vs the float64 twin
    x = rng.standard_normal((8, 3, 32, 32)).astype(np.float32)
    y = rng.standard_normal((6, 3, 32, 32)).astype(np.float32)
    for precision, tol in (("float32", 2e-6), ("float64", 1e-12)):
        def run(precision=precision, tol=tol):
            ref = _reference.nngp_kernel(x, y, depth=3)
            scale = float(np.abs(ref).max())
            g = kernels.nngp_kernel(x, y, depth=3, precision=precision, device=gpu)
            c = kernels.nngp_kernel(x, y, depth=3, precision=precision, device=cpu)
            ms, _ = _wall_ms(lambda: kernels.nngp_kernel(x, y, depth=3, precision=precision, device=gpu))
            rows.append({"kernel": "nngp_kernel", "N": 8 * 6, "d": 3 * 32 * 32, "dtype": precision, "ms": ms})
            return {"vs_float64_twin": (float(np.abs(g - ref).max()) / scale, tol),
                    "vs_cpu": (float(np.abs(g - c).max()) / scale, tol)}
        rec.check("nngp_kernel", {"precision": precision}, run)

    # the reference search and a certified top-k over N table specs (K = 50, d = 20, float32 store)
    sizes = sizes or ((10_000, 100_000) if quick else (10_000, 100_000, 1_000_000))
    for n in sizes:
        def run(n=n):
            market = MarketSpec(n, 20, 50, "families", seed=seed)
            user = make_queries(market, 1)[0]
            idx, _ = make_market(n, 20, 50, "families", seed=seed, dtype="float32")
            out = {}
            for dev, reps in ((cpu, 1), (gpu, 3)):  # per-call device: the store is host memory (copied per call)
                out[dev] = _wall_ms(lambda dev=dev: idx.search(user, device=dev), repeats=reps)
            rows.append({"kernel": "search", "N": n, "d": 20, "dtype": "float32", "ms": out[gpu][0],
                         "cpu_ms": out[cpu][0], "speedup": out[cpu][0] / out[gpu][0]})
            same = out[cpu][1].to_dict() == out[gpu][1].to_dict()
            return {"results_differ": (0.0 if same else 1.0, 0.0)}
        rec.check("search", {"N": n}, run)

    n = sizes[min(1, len(sizes) - 1)]

    def run_topk():
        market = MarketSpec(n, 20, 50, "families", seed=seed)
        user = make_queries(market, 1)[0]
        idx, _ = make_market(n, 20, 50, "families", seed=seed, dtype="float32")
        brute = idx.topk(user, 5, mode="brute", device=cpu)
        ms, cert = _wall_ms(lambda: idx.topk(user, 5, mode="certified", device=gpu))
        rows.append({"kernel": "topk_certified", "N": n, "d": 20, "dtype": "float32", "ms": ms,
                     "exact_evaluations": idx.last_stats.get("exact_evaluations")})
        return {"ids_differ": (0.0 if [i for i, _ in cert] == [i for i, _ in brute] else 1.0, 0.0),
                "dist_err": (max(abs(a[1] - b[1]) for a, b in zip(cert, brute)), 1e-9)}
    rec.check("topk_certified", {"N": n}, run_topk)

    # an image spec's generation (feature pass + QP): GPU vs CPU at a small N, then the defaults timed
    def run_image():
        try:
            import torch  # noqa: F401
        except ImportError:
            return {"torch_missing": (1.0, 0.0)}
        X = rng.integers(0, 255, size=(image_n or 200, 3, 32, 32)).astype(np.float32)
        a = lwengine.RKMEImageSpec.fit(X, K=10, steps=2, device=cpu)
        b = lwengine.RKMEImageSpec.fit(X, K=10, steps=2, device=gpu)
        err = float(abs(a.dist(b, precision="float64")))
        if gpu == "cuda" and image_n is None:
            X = rng.integers(0, 255, size=(2000, 3, 32, 32)).astype(np.float32)
            ms, _ = _wall_ms(lambda: lwengine.RKMEImageSpec.fit(X, device=gpu), repeats=1)
            rows.append({"kernel": "image_fit_defaults", "N": 2000, "d": 3 * 32 * 32, "dtype": "float32",
                         "ms": ms, "target_ms": 2000.0})
        return {"spec_dist_cpu_vs_gpu": (err, 1e-6)}
    if image:
        rec.check("image_fit", {}, run_image)
    return rows


# ------------------------------------------------------------------------------------ timing
class Timer:
    """CUDA-event timing: torch events when torch is present, else _cuda.Event."""

    def __init__(self, cu, torch, device):
        self.cu, self.torch, self.device = cu, torch, device

    def median_ms(self, fn, warmup=2, repeats=10, budget_s=3.0):
        for _ in range(warmup):
            fn()
        self.sync()
        times = []
        t_start = time.perf_counter()
        for _ in range(repeats):
            if self.torch is not None:
                e0 = self.torch.cuda.Event(enable_timing=True)
                e1 = self.torch.cuda.Event(enable_timing=True)
                e0.record()
                fn()
                e1.record()
                e1.synchronize()
                times.append(e0.elapsed_time(e1))
            else:
                e0, e1 = self.cu.bench.Event(self.device), self.cu.bench.Event(self.device)
                e0.record(0)
                fn()
                e1.record(0)
                e1.synchronize()
                times.append(e0.elapsed_ms(e1))
            if time.perf_counter() - t_start > budget_s and len(times) >= 3:
                break
        return statistics.median(times), len(times)

    def sync(self):
        self.cu.bench.synchronize(self.device)


class DevBuf:
    """A device allocation through _cuda (freed explicitly)."""

    def __init__(self, cu, nbytes, device):
        self.cu, self.device, self.nbytes = cu, device, int(nbytes)
        self.ptr = cu.bench.malloc(self.nbytes, device)

    def upload(self, arr):
        arr = np.ascontiguousarray(arr)
        self.cu.bench.copy_to_device(self.ptr, arr, arr.nbytes, self.device)

    def download(self, dtype, count):
        out = np.empty(count, dtype=dtype)
        self.cu.bench.copy_to_host(out, self.ptr, out.nbytes, self.device)
        return out

    def free(self):
        if self.ptr:
            self.cu.bench.free(self.ptr, self.device)
            self.ptr = 0


def floors(ceil, nbytes, exps, fma_flops):
    out = {"bytes": nbytes, "exps": exps, "fma_flops": fma_flops}
    bw, er, fr = ceil.get("copy_bytes_per_s"), ceil.get("exp_per_s"), ceil.get("ffma_flops_per_s")
    if bw and er:
        out["floor_ms"] = 1e3 * max(nbytes / bw, exps / er)
    if bw and er and fr:
        out["floor_fma_ms"] = 1e3 * max(nbytes / bw, exps / er, fma_flops / fr)
    return out


def timings(cu, ceil, timer, device, quick: bool, seed: int):
    rows = []
    K, Kq = 100, 100
    n_specs_list = [10_000, 100_000] if quick else [10_000, 100_000, 1_000_000]
    for d in (20, 64):
        for N in n_specs_list:
            for dtype in (("float32",) if N > 100_000 else ("float32", "float64")):
                entry = {"kernel": "cross_inner", "N": N, "K": K, "d": d, "Q": 1, "Kq": Kq, "dtype": dtype}
                bufs = []
                try:
                    es = 4 if dtype == "float32" else 8
                    M = N * K
                    z = DevBuf(cu, M * d * es, device); bufs.append(z)
                    b = DevBuf(cu, M * 8, device); bufs.append(b)
                    o = DevBuf(cu, (N + 1) * 8, device); bufs.append(o)
                    qz = DevBuf(cu, Kq * d * es, device); bufs.append(qz)
                    qb = DevBuf(cu, Kq * 8, device); bufs.append(qb)
                    qo = DevBuf(cu, 2 * 8, device); bufs.append(qo)
                    out = DevBuf(cu, N * 8, device); bufs.append(out)
                    cu.bench.fill_uniform(dtype, z.ptr, M * d, seed, -1.0, 1.0, device)
                    cu.bench.fill_uniform("float64", b.ptr, M, seed + 1, 0.0, 2.0 / K, device)
                    cu.bench.fill_uniform(dtype, qz.ptr, Kq * d, seed + 2, -1.0, 1.0, device)
                    cu.bench.fill_uniform("float64", qb.ptr, Kq, seed + 3, 0.0, 2.0 / Kq, device)
                    o.upload(np.arange(N + 1, dtype=np.int64) * K)
                    qo.upload(np.array([0, Kq], dtype=np.int64))
                    gamma = 1.0 / d
                    cu.bench.memset(out.ptr, 0xFF, N * 8, device)  # poison

                    def call():
                        cu.cross_inner(dtype, qz.ptr, qb.ptr, qo.ptr, Kq, 1, Kq, z.ptr, b.ptr, o.ptr, M, N, d, gamma,
                                       out.ptr, device, 0)

                    call()
                    timer.sync()
                    res = out.download(np.float64, N)
                    entry["unwritten_or_nonfinite"] = int(np.sum(~np.isfinite(res)))
                    # spot check a few specs against the float64 reference
                    picks = np.random.default_rng(seed).choice(N, size=min(N, 4), replace=False)
                    errs = []
                    zq = np.empty(Kq * d, dtype=dtype)
                    cu.bench.copy_to_host(zq, qz.ptr, zq.nbytes, device)
                    bq = qb.download(np.float64, Kq)
                    from lwengine import _reference as ref
                    for i in picks:
                        zi = np.empty(K * d, dtype=dtype)
                        cu.bench.copy_to_host(zi, z.ptr + int(i) * K * d * es, zi.nbytes, device)
                        bi = np.empty(K, dtype=np.float64)
                        cu.bench.copy_to_host(bi, b.ptr + int(i) * K * 8, bi.nbytes, device)
                        r = ref.cross_inner(zq.reshape(Kq, d), bq, [0, Kq], zi.reshape(K, d), bi, [0, K], gamma)
                        errs.append(abs(res[i] - r[0, 0]) / abs(r[0, 0]))
                    entry["spot_rel_err_max"] = float(max(errs))
                    ms, reps = timer.median_ms(call)
                    entry.update(ms=ms, repeats=reps)
                    entry.update(floors(ceil, M * d * es + M * 8 + (N + 1) * 8 + N * 8, Kq * M, 2.0 * Kq * M * d))
                except Exception as exc:  # noqa: BLE001
                    entry["error"] = f"{type(exc).__name__}: {exc}"
                finally:
                    for bb in bufs:
                        try:
                            bb.free()
                        except Exception:  # noqa: BLE001
                            pass
                finish_row(entry)
                rows.append(entry)

    # self_inner at 1e5 specs
    for d in (20, 64):
        entry = {"kernel": "self_inner", "N": 100_000, "K": K, "d": d, "dtype": "float32"}
        bufs = []
        try:
            N, M = 100_000, 100_000 * K
            z = DevBuf(cu, M * d * 4, device); bufs.append(z)
            b = DevBuf(cu, M * 8, device); bufs.append(b)
            o = DevBuf(cu, (N + 1) * 8, device); bufs.append(o)
            out = DevBuf(cu, N * 8, device); bufs.append(out)
            cu.bench.fill_uniform("float32", z.ptr, M * d, seed, -1.0, 1.0, device)
            cu.bench.fill_uniform("float64", b.ptr, M, seed + 1, 0.0, 2.0 / K, device)
            o.upload(np.arange(N + 1, dtype=np.int64) * K)
            cu.bench.memset(out.ptr, 0xFF, N * 8, device)

            def call():
                cu.self_inner("float32", z.ptr, b.ptr, o.ptr, M, N, K, d, 1.0 / d, out.ptr, device, 0)

            call()
            timer.sync()
            entry["unwritten_or_nonfinite"] = int(np.sum(~np.isfinite(out.download(np.float64, N))))
            ms, reps = timer.median_ms(call)
            entry.update(ms=ms, repeats=reps)
            entry.update(floors(ceil, M * d * 4 + M * 8 + (N + 1) * 8 + N * 8, K * M, 2.0 * K * M * d))
        except Exception as exc:  # noqa: BLE001
            entry["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            for bb in bufs:
                bb.free()
        finish_row(entry)
        rows.append(entry)

    # zx_moments (+ step)
    n_list = [1_000_000] if quick else [1_000_000, 10_000_000]
    for d in (20, 64):
        for n in n_list:
            entry = {"kernel": "zx_moments+step", "n": n, "K": K, "d": d, "dtype": "float32"}
            bufs = []
            try:
                x = DevBuf(cu, n * d * 4, device); bufs.append(x)
                z = DevBuf(cu, K * d * 8, device); bufs.append(z)
                beta = DevBuf(cu, K * 8, device); bufs.append(beta)
                C = DevBuf(cu, K * 8, device); bufs.append(C)
                T = DevBuf(cu, K * d * 8, device); bufs.append(T)
                zn = DevBuf(cu, K * d * 8, device); bufs.append(zn)
                cu.bench.fill_uniform("float32", x.ptr, n * d, seed, -1.0, 1.0, device)
                cu.bench.fill_uniform("float64", z.ptr, K * d, seed + 1, -1.0, 1.0, device)
                beta.upload(np.full(K, 1.0 / K))
                for bb in (C, T, zn):
                    cu.bench.memset(bb.ptr, 0xFF, bb.nbytes, device)
                gamma = 1.0 / d

                def moments():
                    cu.zx_moments("float32", z.ptr, K, x.ptr, n, d, gamma, C.ptr, T.ptr, device, 0)

                def both():
                    moments()
                    cu.rs_step_from_moments(z.ptr, beta.ptr, C.ptr, T.ptr, K, d, gamma, 0.1, 1.0, zn.ptr, device, 0)

                both()
                timer.sync()
                bad = sum(int(np.sum(~np.isfinite(bb.download(np.float64, bb.nbytes // 8)))) for bb in (C, T, zn))
                entry["unwritten_or_nonfinite"] = bad
                ms_m, _ = timer.median_ms(moments)
                ms, reps = timer.median_ms(both)
                entry.update(ms=ms, ms_moments_only=ms_m, repeats=reps)
                entry.update(floors(ceil, n * d * 4 + 3 * K * d * 8, K * n, 2.0 * 2 * K * n * d))
            except Exception as exc:  # noqa: BLE001
                entry["error"] = f"{type(exc).__name__}: {exc}"
            finally:
                for bb in bufs:
                    bb.free()
            finish_row(entry)
            rows.append(entry)
    return rows


def finish_row(e):
    ms = e.get("ms")
    if ms:
        e["achieved_GBps"] = e["bytes"] / (ms * 1e-3) / 1e9
        e["achieved_fma_TFLOPs"] = e["fma_flops"] / (ms * 1e-3) / 1e12
        if "floor_ms" in e:
            e["ratio_to_floor"] = ms / e["floor_ms"]
        if "floor_fma_ms" in e:
            e["ratio_to_fma_floor"] = ms / e["floor_fma_ms"]
    print(f"  timed {e['kernel']} {({k: e[k] for k in ('N', 'n', 'd', 'dtype') if k in e})}: "
          f"{ms if ms else e.get('error')}", flush=True)


# ---------------------------------------------------------------------------------- ceilings
def ceilings(cu, torch, device, quick: bool):
    c = {}
    for key, fn in (
        ("copy_bytes_per_s", lambda: cu.bench.bench_copy_rate((1 << 30) if quick else (2 << 30), 5, device)),
        ("exp_per_s", lambda: cu.bench.bench_exp_rate(device)),
        ("ffma_flops_per_s", lambda: cu.bench.bench_ffma_rate(device)),
    ):
        try:
            c[key] = fn()
        except Exception as exc:  # noqa: BLE001
            c[key + "_error"] = f"{type(exc).__name__}: {exc}"
    if torch is not None:
        for label, tf32 in (("fp32", False), ("tf32", True)):
            try:
                torch.backends.cuda.matmul.allow_tf32 = tf32
                n = 8192
                a = torch.rand(n, n, device=f"cuda:{device}") - 0.5
                b = torch.rand(n, n, device=f"cuda:{device}") - 0.5
                for _ in range(2):
                    a @ b
                torch.cuda.synchronize()
                ts = []
                for _ in range(5):
                    e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                    e0.record()
                    a @ b
                    e1.record()
                    e1.synchronize()
                    ts.append(e0.elapsed_time(e1))
                c[f"matmul_{label}_flops_per_s"] = 2.0 * n ** 3 / (statistics.median(ts) * 1e-3)
                del a, b
            except Exception as exc:  # noqa: BLE001
                c[f"matmul_{label}_error"] = f"{type(exc).__name__}: {exc}"
        torch.backends.cuda.matmul.allow_tf32 = False
    return c


def device_info(cu, device):
    info = {}
    try:
        info["properties"] = cu.device_properties(device)
    except Exception as exc:  # noqa: BLE001
        info["properties_error"] = str(exc)
    try:
        smi = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,power.limit",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=20)
        info["nvidia_smi"] = smi.stdout.strip().splitlines()
    except Exception as exc:  # noqa: BLE001
        info["nvidia_smi_error"] = str(exc)
    return info


# -------------------------------------------------------------------------------------- main
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer shapes and sizes (about a minute)")
    ap.add_argument("--device", type=int, default=0)
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--out", default=os.environ.get("OUT") or "./gpu_out")
    ap.add_argument("--triton", action="store_true", help="also run the Triton section (benchmarks/gpu_check_triton.py)")
    ap.add_argument("--no-e2e", action="store_true", help="skip the end-to-end paths (search / top-k over up to "
                    "1e6 specs, image fit)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "gpu_check.json")
    t0 = time.perf_counter()
    report = {"argv": sys.argv, "quick": args.quick, "python": platform.python_version(),
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}

    def write():
        report["seconds"] = round(time.perf_counter() - t0, 1)
        with open(path, "w") as f:
            json.dump(report, f, indent=1, default=str)

    try:
        import lwengine
        from lwengine import _backend, cuda_backend, _reference, kernels
    except Exception as exc:  # noqa: BLE001
        report["status"] = "lwengine import failed"
        report["error"] = f"{type(exc).__name__}: {exc}"
        write()
        print(f"gpu_check: lwengine import failed: {exc}")
        return 1
    report["lwengine_version"] = getattr(lwengine, "__version__", "?")
    cu = _backend.cuda
    n_dev = _backend.cuda_device_count()
    if cu is None or n_dev == 0:
        why = f"CUDA extension {_backend.cuda_error}" if cu is None else "no CUDA device is visible"
        report["status"] = "no CUDA device"
        report["reason"] = why
        write()
        print(f"gpu_check: no CUDA device ({why}); nothing to check. Wrote {path}")
        return 0
    report["status"] = "ran"
    report["build_info"] = cu.build_info()
    report["device"] = device_info(cu, args.device)
    try:
        import torch  # noqa: F401

        if not torch.cuda.is_available():
            torch = None
    except Exception:  # noqa: BLE001
        torch = None
    report["torch"] = None if torch is None else torch.__version__
    print(f"gpu_check on {report['device'].get('properties', {}).get('name')}, build {report['build_info']}, "
          f"torch {report['torch']}", flush=True)

    rec = Recorder()
    print("[1/3] correctness", flush=True)
    correctness(rec, cuda_backend, kernels, _reference, torch, args.seed, args.quick)
    search_pipeline(rec, args.seed)
    report["checks"] = rec.checks
    write()
    if not args.no_e2e:
        print("[1b/3] end-to-end paths (NNGP, search, certified top-k, image fit)", flush=True)
        try:
            report["end_to_end"] = end_to_end(rec, args.seed, args.quick)
        except Exception as exc:  # noqa: BLE001
            report["end_to_end_error"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}"
        report["checks"] = rec.checks
        write()

    print("[2/3] ceilings", flush=True)
    ceil = ceilings(cu, torch, args.device, args.quick)
    report["ceilings"] = ceil
    write()

    print("[3/3] timings", flush=True)
    timer = Timer(cu, torch, args.device)
    try:
        report["timings"] = timings(cu, ceil, timer, args.device, args.quick, args.seed)
    except Exception as exc:  # noqa: BLE001
        report["timings_error"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=6)}"
    write()
    if args.triton:  # its own JSON too ($OUT/gpu_check_triton.json); see that file
        report["triton"] = __import__("gpu_check_triton").run(args.out, quick=args.quick, seed=args.seed)

    # ---- summary table (printed last: the tail of the output is what comes back)
    verdicts = {}
    for c in rec.checks:
        verdicts.setdefault(c["kernel"], []).append(c["verdict"])
    print("\n== correctness ==")
    for k, v in verdicts.items():
        bad = [x for x in v if x not in ("pass", "not available")]
        print(f"{k:16s} {len(v) - len(bad):3d}/{len(v)} ok" + (f"  ({', '.join(sorted(set(bad)))})" if bad else "")
              + ("  (not available)" if "not available" in v else ""))
    print("\n== end-to-end (wall-clock median ms) ==")
    for e in report.get("end_to_end", []):
        print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in e.items()))
    print("\n== ceilings ==")
    for k, v in ceil.items():
        print(f"{k:28s} {v:.4g}" if isinstance(v, float) else f"{k:28s} {v}")
    print("\n== timings (median ms; floor = max(bytes/copy, exps/exp); fma floor adds FFMA flops/FFMA rate) ==")
    print(f"{'kernel':16s} {'size':>9s} {'d':>3s} {'dtype':>7s} {'ms':>9s} {'floor':>8s} {'x floor':>7s} "
          f"{'fmafloor':>8s} {'x fma':>6s} {'GB/s':>7s} {'TFLOP/s':>7s} bad")
    for e in report.get("timings", []):
        size = e.get("N", e.get("n"))
        if "ms" not in e:
            print(f"{e['kernel']:16s} {size:>9} {e['d']:>3} {e['dtype']:>7s} ERROR {e.get('error')}")
            continue
        print(f"{e['kernel']:16s} {size:>9} {e['d']:>3} {e['dtype']:>7s} {e['ms']:9.3f} "
              f"{e.get('floor_ms', float('nan')):8.3f} {e.get('ratio_to_floor', float('nan')):7.2f} "
              f"{e.get('floor_fma_ms', float('nan')):8.3f} {e.get('ratio_to_fma_floor', float('nan')):6.2f} "
              f"{e.get('achieved_GBps', 0):7.0f} {e.get('achieved_fma_TFLOPs', 0):7.1f} "
              f"{e.get('unwritten_or_nonfinite', '?')}")
    n_fail = sum(1 for c in rec.checks if c["verdict"] in ("FAIL", "ERROR"))
    print(f"\n{n_fail} failing checks; {report['seconds'] if 'seconds' in report else ''} JSON: {path}")
    write()
    return 1 if n_fail else 0


if __name__ == "__main__":
    sys.exit(main())
