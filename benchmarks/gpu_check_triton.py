"""Triton section of the GPU check: correctness, CUDA-event timings, ceilings and floors -> JSON.

    PYTHONUNBUFFERED=1 python benchmarks/gpu_check_triton.py [--quick] [--out DIR]   # on a GPU
    python benchmarks/gpu_check_triton.py --smoke                                   # CPU, interpreter, seconds
    python benchmarks/gpu_check.py --triton                                         # as part of gpu_check

1. Correctness of every Triton kernel (cross_inner, self_inner, gram, zx_moments) in every precision
   mode on awkward shapes (K = 1, 7, 97; d = 1, 3, 65; ragged and empty segments; N = 1), outputs
   poisoned with NaN before the launch: against the float64 twins (lwengine._reference) within
   ``triton_kernels.error_bound`` and against the CPU path (lwengine.kernels); a determinism re-run.
2. Ceilings on the same device: device-to-device copy (bytes read + written per second), fp32 /
   TF32 / bf16 matmul (torch), a Triton exp2 microkernel (exp/s).
3. Timings with CUDA events (warm-up, median of repeats), data generated on the device:
   cross_inner with one 100-row query against N in {1e4, 1e5, 1e6} specs of K = 100, d in {20, 64},
   each precision (bf16 with a bf16 store: half the bytes), self_inner, zx_moments (n = 1e6, 1e7).
   Each row: floor = max(bytes / copy rate, exps / exp rate) and time / floor; for cross_inner at
   N = 1e6 also the issue's datasheet floor (H100 7.8 ms / H200 5.4 ms fp32, half with bf16 Z).

``--smoke`` runs everything on the CPU through Triton's interpreter at toy sizes (a perf_counter timer
instead of CUDA events): it shows that the script works, not how fast anything is. The JSON goes
to ``$OUT/gpu_check_triton.json`` (or ``--out``).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
import traceback

import numpy as np

ISSUE_FLOOR_MS = {"H100": {"float32": 7.8, "bfloat16": 3.9}, "H200": {"float32": 5.4, "bfloat16": 2.7}}


def _offsets(sizes):
    return np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)


def _seg_l1(beta, off):
    return np.array([np.abs(beta[a:b]).sum() for a, b in zip(off[:-1], off[1:])])


def _r2(*zs):
    return max([float((np.asarray(z, np.float64) ** 2).sum(1).max()) for z in zs if len(z)] + [0.0])


class Timer:
    """CUDA events on a GPU, perf_counter in the interpreter; median ms of ``reps`` after ``warmup``."""

    def __init__(self, torch, cuda: bool):
        self.torch, self.cuda = torch, cuda

    def __call__(self, fn, reps=5, warmup=1):
        t = self.torch
        for _ in range(warmup):
            fn()
        ms = []
        for _ in range(reps):
            if self.cuda:
                a, b = t.cuda.Event(enable_timing=True), t.cuda.Event(enable_timing=True)
                a.record()
                fn()
                b.record()
                b.synchronize()
                ms.append(a.elapsed_time(b))
            else:
                t0 = time.perf_counter()
                fn()
                ms.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(ms)


# ---------------------------------------------------------------------------------- correctness
def correctness(tk, ref, kernels, torch, dev, seed, smoke=False):
    rng = np.random.default_rng(seed)
    g = 0.3
    checks = []

    def record(kernel, params, fn):
        e = {"kernel": kernel, **params}
        try:
            e.update(fn())
            e["verdict"] = "pass" if e.pop("ok") else "FAIL"
        except Exception as exc:  # noqa: BLE001
            e["verdict"] = "ERROR"
            e["error"] = f"{type(exc).__name__}: {exc}"
            e["trace"] = traceback.format_exc(limit=4)
        checks.append(e)

    def T(a):
        return torch.from_numpy(np.ascontiguousarray(a)).to(dev)

    cases = [([1, 7, 97, 0, 3], [7], 3), ([97, 2], [1, 97], 1), ([7, 0, 1], [3, 0, 7], 65), ([5], [2, 3], 20)]
    zx_cases = ((1, 1, 1), (7, 3, 150), (97, 65, 70), (100, 20, 1000))
    if smoke:  # the interpreter runs every program in Python: a few small shapes only
        cases, zx_cases = [([1, 7, 0], [2, 0, 7], 3)], ((7, 3, 70),)
    for sizes, qsizes, d in cases:
        for dtype in (np.float32, np.float64):
            z = (rng.normal(size=(sum(sizes), d)) * 0.7).astype(dtype)
            b, o = rng.normal(size=sum(sizes)), _offsets(sizes)
            qz = (rng.normal(size=(sum(qsizes), d)) * 0.7).astype(dtype)
            qb, qo = rng.normal(size=sum(qsizes)), _offsets(qsizes)
            exact = ref.cross_inner(qz, qb, qo, z, b, o, g)
            cpu = kernels.cross_inner(qz, qb, qo, z, b, o, g, device="cpu")
            for mode in tk.PRECISIONS:
                f64 = dtype == np.float64 and mode == "ieee"

                def run(mode=mode, f64=f64, z=z, b=b, o=o, qz=qz, qb=qb, qo=qo, exact=exact, cpu=cpu, d=d):
                    args = [T(a) for a in (qz, qb, qo, z, b, o)]
                    outs = []
                    for _ in range(2):
                        out = torch.full(exact.shape, float("nan"), dtype=torch.float64, device=dev)
                        tk.cross_inner_tensors(*args, g, precision=mode, out=out)
                        outs.append(out.cpu().numpy())
                    bound = tk.error_bound(mode, _seg_l1(qb, qo)[:, None], _seg_l1(b, o)[None, :],
                                           int(np.diff(qo).max()), d, g, _r2(qz, z),
                                           float64_inputs=dtype == np.float64 and not f64, float64_compute=f64)
                    err = np.abs(outs[0] - exact)
                    return {"ok": bool(np.all(np.isfinite(outs[0])) and np.all(err <= bound)
                                       and np.array_equal(outs[0], outs[1])),
                            "max_abs_err": float(err.max()) if err.size else 0.0,
                            "min_bound": float(bound.min()) if bound.size else 0.0,
                            "max_abs_diff_vs_cpu_path": float(np.abs(outs[0] - cpu).max()) if err.size else 0.0,
                            "deterministic": bool(np.array_equal(outs[0], outs[1]))}

                record("cross_inner", {"sizes": sizes, "qsizes": qsizes, "d": d, "dtype": np.dtype(dtype).name,
                                       "precision": mode}, run)
        # self_inner / gram (float32 store, ieee and tf32x3)
        z = (rng.normal(size=(sum(sizes), d)) * 0.7).astype(np.float32)
        b, o = rng.normal(size=sum(sizes)), _offsets(sizes)
        for mode in ("ieee", "tf32x3", "bf16"):
            def run_sg(mode=mode, z=z, b=b, o=o, d=d):
                n = len(o) - 1
                s = torch.full((n,), float("nan"), dtype=torch.float64, device=dev)
                G = torch.full((n, n), float("nan"), dtype=torch.float64, device=dev)
                tk.self_inner_tensors(T(z), T(b), T(o), g, precision=mode, out=s)
                tk.gram_tensors(T(z), T(b), T(o), g, precision=mode, out=G)
                s, G = s.cpu().numpy(), G.cpu().numpy()
                l1 = _seg_l1(b, o)
                bound = tk.error_bound(mode, l1[:, None], l1[None, :], int(np.diff(o).max()), d, g, _r2(z))
                eg = np.abs(G - ref.gram(z, b, o, g))
                es = np.abs(s - ref.self_inner(z, b, o, g))
                return {"ok": bool(np.isfinite(G).all() and np.all(eg <= bound) and np.all(es <= np.diag(bound))
                                   and np.array_equal(G, G.T) and np.array_equal(np.diag(G), s)),
                        "max_abs_err_gram": float(eg.max()), "max_abs_err_self": float(es.max()),
                        "max_abs_diff_vs_cpu_path": float(np.abs(G - kernels.gram(z, b, o, g, device="cpu")).max())}

            record("self_inner+gram", {"sizes": sizes, "d": d, "precision": mode}, run_sg)
    for K, d, n in zx_cases:
        zz = rng.normal(size=(K, d)) * 0.7
        for xdt in (np.float32, np.float64):
            x = (rng.normal(size=(n, d)) * 0.7).astype(xdt)
            Ce, Te = ref.zx_moments(zz, x, g)
            Cc, Tc = kernels.zx_moments(zz, x, g, device="cpu")
            for mode in tk.PRECISIONS:
                def run_zx(mode=mode, x=x, zz=zz, Ce=Ce, Te=Te, Cc=Cc, d=d, xdt=xdt):
                    f64 = xdt == np.float64 and mode == "ieee"
                    C, Tm = tk.zx_moments_tensors(T(zz), T(x), g, precision=mode)
                    C2, _ = tk.zx_moments_tensors(T(zz), T(x), g, precision=mode)
                    C, Tm, C2 = C.cpu().numpy(), Tm.cpu().numpy(), C2.cpu().numpy()
                    bc, bt = tk.zx_error_bound(mode, d, g, _r2(zz, x), np.abs(x).max(0), float64_inputs=not f64,
                                               float64_compute=f64)
                    ec, et = np.abs(C - Ce), np.abs(Tm - Te)
                    return {"ok": bool(np.isfinite(C).all() and np.isfinite(Tm).all() and np.all(ec <= bc)
                                       and np.all(et <= bt[None, :]) and np.array_equal(C, C2)),
                            "max_abs_err_C": float(ec.max()), "max_abs_err_T": float(et.max()),
                            "bound_C": float(bc), "max_abs_diff_vs_cpu_path": float(np.abs(C - Cc).max())}

                record("zx_moments", {"K": K, "d": d, "n": n, "x_dtype": np.dtype(xdt).name, "precision": mode},
                       run_zx)
    return checks


# ---------------------------------------------------------------------------------- ceilings
def ceilings(tk, torch, dev, smoke):
    import triton
    import triton.language as tl

    @triton.jit
    def exp_kernel(x_ptr, out_ptr, ITERS: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        v = tl.load(x_ptr + offs)
        acc = tl.zeros((BLOCK,), tl.float32)
        for _ in range(ITERS):  # independent exp2 chains, little memory traffic
            v = tl.exp2(v * -0.999)
            acc += v
        tl.store(out_ptr + offs, acc)

    cuda = dev.type == "cuda"
    timer = Timer(torch, cuda)
    c = {}
    n = (1 << 28) if cuda else (1 << 16)  # 1 GiB of float32 (2 GiB moved) on a GPU
    src = torch.empty(n, dtype=torch.float32, device=dev).uniform_()
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src), reps=10 if cuda else 2)
    c["copy_GBps"] = 2 * src.numel() * 4 / (ms * 1e-3) / 1e9
    del src, dst
    m = 8192 if cuda else 128
    a = torch.randn(m, m, device=dev)
    bmat = torch.randn(m, m, device=dev)
    if cuda:
        old = torch.backends.cuda.matmul.allow_tf32
        for name, tf32 in (("matmul_fp32_TFLOPs", False), ("matmul_tf32_TFLOPs", True)):
            torch.backends.cuda.matmul.allow_tf32 = tf32
            c[name] = 2 * m ** 3 / (timer(lambda: a @ bmat, reps=5) * 1e-3) / 1e12
        torch.backends.cuda.matmul.allow_tf32 = old
        ab, bb = a.bfloat16(), bmat.bfloat16()
        c["matmul_bf16_TFLOPs"] = 2 * m ** 3 / (timer(lambda: ab @ bb, reps=5) * 1e-3) / 1e12
    else:
        c["matmul_fp32_TFLOPs"] = 2 * m ** 3 / (timer(lambda: a @ bmat, reps=2) * 1e-3) / 1e12
    block, iters = 1024, (256 if cuda else 4)
    nexp = (1 << 24) if cuda else block * 2
    x = torch.rand(nexp, device=dev)
    out = torch.empty_like(x)
    ms = timer(lambda: exp_kernel[(nexp // block,)](x, out, ITERS=iters, BLOCK=block), reps=5 if cuda else 1)
    c["exp_per_s"] = nexp * iters / (ms * 1e-3)
    c["exp_check_finite"] = bool(torch.isfinite(out).all().item())
    return c


# ---------------------------------------------------------------------------------- timings
def timings(tk, torch, dev, ceil, quick, smoke, device_name):
    cuda = dev.type == "cuda"
    timer = Timer(torch, cuda)
    rows = []
    K, Kq, g = 100, 100, 0.1
    Ns = [8] if smoke else ([10 ** 4, 10 ** 5] if quick else [10 ** 4, 10 ** 5, 10 ** 6])
    Kst = 4 if smoke else K
    for d in ((20,) if smoke else (20, 64)):
        for N in Ns:
            M = N * Kst
            gen = torch.Generator(device=dev).manual_seed(N + d)
            z32 = torch.randn(M, d, device=dev, generator=gen) * 0.3
            beta = torch.rand(M, dtype=torch.float64, device=dev, generator=gen) / Kst
            off = torch.arange(0, M + 1, Kst, dtype=torch.int64, device=dev)
            qz = torch.randn(Kq if not smoke else 8, d, device=dev, generator=gen) * 0.3
            qb = torch.full((qz.shape[0],), 1.0 / qz.shape[0], dtype=torch.float64, device=dev)
            qo = torch.tensor([0, qz.shape[0]], dtype=torch.int64, device=dev)
            for mode in (("ieee", "bf16") if smoke else tk.PRECISIONS):
                z = z32.to(torch.bfloat16) if mode == "bf16" else z32
                q = qz.to(torch.bfloat16) if mode == "bf16" else qz
                out = torch.full((1, N), float("nan"), dtype=torch.float64, device=dev)
                e = {"kernel": "cross_inner", "N": N, "K": Kst, "Kq": int(qz.shape[0]), "d": d,
                     "store_dtype": str(z.dtype).replace("torch.", ""), "precision": mode}
                try:
                    e["ms"] = timer(lambda: tk.cross_inner_tensors(q, qb, qo, z, beta, off, g, precision=mode, out=out),
                                    reps=5 if not smoke else 1)
                    e["unwritten_or_nonfinite"] = int((~torch.isfinite(out)).sum().item())
                    nbytes = M * d * z.element_size() + M * 8 + (N + 1) * 8 + N * 8
                    exps = M * qz.shape[0]
                    floor_ms = max(nbytes / (ceil["copy_GBps"] * 1e9), exps / ceil["exp_per_s"]) * 1e3
                    e.update(bytes=nbytes, exps=exps, floor_ms=floor_ms, ratio_to_floor=e["ms"] / floor_ms,
                             achieved_GBps=nbytes / (e["ms"] * 1e-3) / 1e9)
                    for key, fl in ISSUE_FLOOR_MS.items():
                        if key in device_name and N == 10 ** 6 and d == 64:
                            f = fl["bfloat16" if mode == "bf16" else "float32"]
                            e.update(issue_floor_ms=f, ratio_to_issue_floor=e["ms"] / f,
                                     target_2x_met=bool(e["ms"] <= 2 * f))
                except Exception as exc:  # noqa: BLE001
                    e["error"] = f"{type(exc).__name__}: {exc}"
                rows.append(e)
            del z32, beta, off
        # self_inner on the largest size but one, zx_moments
        for n in ([64] if smoke else ([10 ** 6] if quick else [10 ** 6, 10 ** 7])):
            gen = torch.Generator(device=dev).manual_seed(n + d)
            x = torch.randn(n, d, device=dev, generator=gen)
            zz = torch.randn(K if not smoke else 8, d, dtype=torch.float64, device=dev, generator=gen)
            for mode in (("ieee",) if smoke else ("ieee", "tf32x3", "tf32")):
                e = {"kernel": "zx_moments", "n": n, "K": int(zz.shape[0]), "d": d, "precision": mode}
                try:
                    e["ms"] = timer(lambda: tk.zx_moments_tensors(zz, x, g, precision=mode), reps=5 if not smoke else 1)
                    C, T = tk.zx_moments_tensors(zz, x, g, precision=mode)
                    e["unwritten_or_nonfinite"] = int((~torch.isfinite(C)).sum().item() + (~torch.isfinite(T)).sum().item())
                    nbytes, exps = n * d * 4, n * zz.shape[0]
                    floor_ms = max(nbytes / (ceil["copy_GBps"] * 1e9), exps / ceil["exp_per_s"]) * 1e3
                    e.update(bytes=nbytes, exps=exps, floor_ms=floor_ms, ratio_to_floor=e["ms"] / floor_ms)
                except Exception as exc:  # noqa: BLE001
                    e["error"] = f"{type(exc).__name__}: {exc}"
                rows.append(e)
            del x
    return rows


# ---------------------------------------------------------------------------------- ahead-of-time compile
def compile_report(archs=(80, 90), quick=False):
    """Compile every kernel variant for the given CUDA archs without a GPU (Triton's ahead-of-time
    path; Triton runs ptxas -v, whose report is parsed): shows that the kernels lower to PTX/cubin,
    with registers, spills, shared memory and the tensor-core instructions per variant. Must run in a
    process without TRITON_INTERPRET."""
    import re

    import triton
    from triton import knobs
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from lwengine import triton_kernels as tk

    rows = []
    variants = tk.compile_variants(kinds=(0,) if quick else (0, 1, 2))
    for arch in archs:
        for label, fn, sig, consts, nw in variants:
            e = {"arch": f"sm_{arch}", "variant": label, "num_warps": nw,
                 "blocks": {k: v for k, v in consts.items() if k.startswith("BLOCK_")}}
            t0 = time.perf_counter()
            try:
                log = _capture_fd2(lambda: triton.compile(ASTSource(fn=fn, signature=sig, constexprs=consts),
                                                          target=GPUTarget("cuda", arch, 32),
                                                          options={"num_warps": nw}), knobs)
                k, text = log
                regs = re.search(r"Used (\d+) registers", text)
                spill = re.search(r"(\d+) bytes spill stores", text)
                e.update(ok=True, compile_s=round(time.perf_counter() - t0, 1), shared_bytes=k.metadata.shared,
                         registers=int(regs.group(1)) if regs else None,
                         spill_store_bytes=int(spill.group(1)) if spill else None,
                         tensor_core_ops=sorted(set(re.findall(r"\b((?:wg)?mma[a-z_]*\.[a-z0-9._]*m\d+n\d+k\d+[a-z0-9._]*)",
                                                               k.asm["ptx"]))))
            except Exception as exc:  # noqa: BLE001
                e.update(ok=False, error=f"{type(exc).__name__}: {str(exc)[:400]}")
            rows.append(e)
            print({k: e.get(k) for k in ("arch", "variant", "ok", "registers", "spill_store_bytes", "shared_bytes",
                                         "tensor_core_ops", "error")}, flush=True)
    return rows


def _capture_fd2(fn, knobs):
    """Run fn with Triton's ptxas log dump on, returning (result, captured stdout text)."""
    import tempfile

    old = knobs.nvidia.dump_ptxas_log
    knobs.nvidia.dump_ptxas_log = True
    sys.stdout.flush()
    saved = os.dup(1)
    with tempfile.TemporaryFile("w+") as tmp:
        os.dup2(tmp.fileno(), 1)
        try:
            res = fn()
            sys.stdout.flush()
        finally:
            os.dup2(saved, 1)
            os.close(saved)
            knobs.nvidia.dump_ptxas_log = old
        tmp.seek(0)
        return res, tmp.read()


# ---------------------------------------------------------------------------------- entry points
def run(out_dir, *, quick=False, smoke=False, seed=20240601):
    """The whole Triton check; returns the report dict and writes ``out_dir/gpu_check_triton.json``."""
    report = {"python": platform.python_version(), "smoke": smoke, "quick": quick,
              "started": time.strftime("%Y-%m-%d %H:%M:%S")}
    t0 = time.perf_counter()
    path = os.path.join(out_dir, "gpu_check_triton.json")
    os.makedirs(out_dir, exist_ok=True)

    def write():
        report["seconds"] = round(time.perf_counter() - t0, 1)
        with open(path, "w") as f:
            json.dump(report, f, indent=1, default=str)

    try:
        import torch
        import triton

        from lwengine import _reference, kernels
        from lwengine import triton_kernels as tk
    except Exception as exc:  # noqa: BLE001
        report.update(status="import failed", error=f"{type(exc).__name__}: {exc}")
        write()
        return report
    report.update(torch=torch.__version__, triton=triton.__version__)
    device = "cpu" if smoke else "cuda"
    ok, why = tk.available(device)
    if not ok:
        report.update(status="not available", reason=why)
        write()
        print(f"gpu_check_triton: {why}; nothing to check. Wrote {path}")
        return report
    dev = torch.device(device)
    name = torch.cuda.get_device_name(0) if device == "cuda" else "cpu (Triton interpreter)"
    report.update(status="ran", device=name)
    if device == "cuda":
        report["device_properties"] = str(torch.cuda.get_device_properties(0))
    print(f"gpu_check_triton on {name}", flush=True)
    report["checks"] = correctness(tk, _reference, kernels, torch, dev, seed, smoke)
    write()
    try:
        report["ceilings"] = ceilings(tk, torch, dev, smoke)
    except Exception as exc:  # noqa: BLE001
        report["ceilings_error"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"
        write()
        return report
    write()
    try:
        report["timings"] = timings(tk, torch, dev, report["ceilings"], quick, smoke, name)
    except Exception as exc:  # noqa: BLE001
        report["timings_error"] = f"{type(exc).__name__}: {exc}\n{traceback.format_exc(limit=4)}"
    write()
    bad = [c for c in report["checks"] if c["verdict"] != "pass"]
    print(f"\n== triton correctness: {len(report['checks']) - len(bad)}/{len(report['checks'])} pass ==")
    for c in bad[:20]:
        print("  ", {k: c.get(k) for k in ("kernel", "precision", "d", "verdict", "max_abs_err", "error")})
    print("== triton ceilings ==", {k: (round(v, 4) if isinstance(v, float) else v) for k, v in report["ceilings"].items()})
    print(f"== triton timings (median ms, floor = max(bytes/copy, exps/exp)) ==")
    for e in report.get("timings", []):
        size = e.get("N", e.get("n"))
        print(f"{e['kernel']:12s} {size:>8} d={e['d']:<3} {e['precision']:7s} "
              + (f"{e['ms']:9.3f} ms  floor {e['floor_ms']:8.3f}  x{e['ratio_to_floor']:.2f}"
                 + (f"  issue floor {e['issue_floor_ms']} x{e['ratio_to_issue_floor']:.2f}" if "issue_floor_ms" in e else "")
                 if "ms" in e else f"ERROR {e.get('error')}"))
    report["failing_checks"] = len(bad)
    write()
    print(f"JSON: {path}")
    return report


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="CPU, Triton interpreter, toy sizes (seconds)")
    ap.add_argument("--quick", action="store_true", help="drop the 1e6-spec and 1e7-row sizes")
    ap.add_argument("--seed", type=int, default=20240601)
    ap.add_argument("--out", default=os.environ.get("OUT") or "./gpu_out")
    ap.add_argument("--compile-only", action="store_true",
                    help="compile every kernel variant for sm_80 and sm_90 without a GPU (registers, spills, smem)")
    args = ap.parse_args(argv)
    if args.compile_only:
        os.environ.pop("TRITON_INTERPRET", None)
        rows = compile_report(quick=args.quick)
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "gpu_check_triton_compile.json"), "w") as f:
            json.dump(rows, f, indent=1)
        return 0 if all(r["ok"] for r in rows) else 1
    if args.smoke:  # before lwengine.triton_kernels defines its kernels
        os.environ.setdefault("TRITON_INTERPRET", "1")
    rep = run(args.out, quick=args.quick, smoke=args.smoke, seed=args.seed)
    return 1 if rep.get("status") == "ran" and (rep.get("failing_checks") or "timings_error" in rep) else 0


if __name__ == "__main__":
    sys.exit(main())
