"""Triton kernels for the RKME inner products and data moments (the ``backend="triton"`` path).

Tensor-core structure (FlashAttention's, applied to kernel sums): a program takes one store spec,
streams its rows in tiles of ``BLOCK_N`` against the query rows in tiles of ``BLOCK_Q``; the cross
terms come from ``tl.dot`` in the GEMM form ``|a|^2 + |b|^2 - 2 a.b`` (row norms formed once per
loaded tile, in float32, from the same rounded values the dot sees), and the exponential, the query-beta
weighting and the spec's beta-weighted sum are fused in the epilogue. No Q x sum(K) intermediate
exists; every output is written once by one program, in a fixed order (no atomics): deterministic.
``zx_moments`` writes per-program partials that are added in a fixed order (torch) afterwards.

Precision modes (``precision=``; docs/triton.md derives the bounds, :func:`error_bound` computes them):
``"ieee"`` float32 FMA dots, ``"tf32x3"`` three TF32 tensor-core products (float32-level accuracy),
``"tf32"`` inputs rounded to TF32, ``"bf16"`` inputs rounded to bfloat16. The dot precision is
always passed explicitly: Triton's silent default (TF32) is never used. A float64 store with
``"ieee"`` runs the whole kernel in float64. Sums over a spec are float64 in every mode.

``device="cpu"`` runs the kernels in Triton's interpreter on CPU torch tensors; it needs
``TRITON_INTERPRET=1`` in the environment before this module is imported.
"""
from __future__ import annotations

import math
import os

import numpy as np

try:  # optional dependencies: the module imports without them, available() says why not
    import torch
except ImportError:  # pragma: no cover - exercised only without torch
    torch = None
try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - exercised only without triton
    triton = None
    tl = None

__all__ = [
    "PRECISIONS",
    "CERTIFIED_PRECISIONS",
    "DEFAULT_PRECISION",
    "available",
    "cross_inner",
    "self_inner",
    "gram",
    "zx_moments",
    "cross_inner_tensors",
    "self_inner_tensors",
    "gram_tensors",
    "zx_moments_tensors",
    "distance_error_bound",
    "error_bound",
    "zx_error_bound",
    "compile_variants",
]

PRECISIONS = ("ieee", "tf32x3", "tf32", "bf16")
#: modes whose bound is of the float32 screening's order (kernels.cross_inner_f32_bound): "ieee" is
#: 0.50-0.60x of it (covered as is), "tf32x3" 0.5-1.9x (pass error_bound("tf32x3") to the screening);
#: "tf32" is 1-85x and "bf16" 4-700x looser (d 1..200): rigorous too, for approximate search only.
CERTIFIED_PRECISIONS = ("ieee", "tf32x3")
DEFAULT_PRECISION = "ieee"

_MODE_CODE = {"ieee": 0, "tf32x3": 1, "tf32": 2, "bf16": 3}
_DOT_PRECISION = {"ieee": "ieee", "tf32x3": "tf32x3", "tf32": "tf32", "bf16": "ieee"}  # bf16 operands
_LOG2E = 1.4426950408889634
_INTERPRETED = os.environ.get("TRITON_INTERPRET", "0").lower() in ("1", "true", "on", "yes")
# Tile shapes picked with the ahead-of-time compile (benchmarks/gpu_check_triton.py --compile-only, sm_90,
# no GPU): column chunks of 16 and 8 warps keep every float32 mode free of register spills
# (tf32x3 at BLOCK_D = 32 / 4 warps spilled ~1.4 KB, ieee at BLOCK_D = 64 ~24 KB). Not timed yet.
_BLOCK_D = 16
_NUM_WARPS = 8


# ------------------------------------------------------------------------------ availability
def available(device: str | None = None) -> tuple[bool, str]:
    """``(True, "")`` when the Triton kernels can run on ``device`` ("cpu": the interpreter, or "cuda"),
    else ``(False, reason)``. ``None``: on the device this process can use (the CPU when
    TRITON_INTERPRET=1 was set at import, else CUDA)."""
    if device is None:
        device = "cpu" if _INTERPRETED else "cuda"
    if torch is None:
        return False, "torch is not installed (pip install torch)"
    if triton is None:
        return False, "triton is not installed (pip install 'lwengine[gpu]')"
    if device == "cpu":
        if not _INTERPRETED:
            return False, ("device='cpu' needs Triton's interpreter: set TRITON_INTERPRET=1 before "
                           "lwengine.triton_kernels is imported")
        return True, ""
    if device == "cuda":
        if _INTERPRETED:
            return False, "TRITON_INTERPRET=1 was set when lwengine.triton_kernels was imported: CUDA kernels are interpreted"
        if not torch.cuda.is_available():
            return False, "no CUDA device is visible to torch"
        return True, ""
    return False, f"device must be 'cpu' or 'cuda', got {device!r}"


def _require(device: str):
    ok, why = available(device)
    if not ok:
        raise RuntimeError(f"lwengine Triton backend unavailable: {why}")


def _check_precision(precision: str) -> str:
    if precision not in _MODE_CODE:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    return precision


# ------------------------------------------------------------------------------ error bounds
_EPS32 = 2.0 ** -23  # float32 machine epsilon; every float32 operation is charged <= 1 eps (covers truncation)
_EPS64 = 2.0 ** -52
_U_TF32 = 2.0 ** -11  # explicit round-to-nearest to TF32 (10 stored mantissa bits), mode "tf32"
_U_TF32_HW = 2.0 ** -10  # TF32 split inside Triton's tf32x3 (truncation assumed: the safe side)
_U_BF16 = 2.0 ** -8


def _dot_coeff(mode: str, dim, eps: float):
    """c with |fl(a.b) - a.b| <= c * sum_k |a_k b_k| for the dot of the (already rounded) inputs."""
    if mode == "ieee":
        return (dim + 2) * eps
    # tensor cores: exact products, float32 accumulation charged 2 eps per addition (not IEEE RN)
    acc = 2.0 * (dim + 2) * eps
    if mode == "tf32x3":  # a = hi + lo: residuals 2 u^2 per product, dropped lo*lo u^2
        return acc + 3.0 * _U_TF32_HW ** 2
    return acc


def distance_error_bound(mode: str, dim, r2max, dist=None, *, float64_inputs: bool = False,
                         float64_compute: bool = False):
    """Bound on |computed |a-b|^2 - exact |a-b|^2| for points with |a|^2, |b|^2 <= r2max (broadcasts).

    The GEMM form loses ``~eps (|a|^2 + |b|^2)`` absolutely whatever |a-b|: for close points far
    from the origin the *relative* error of the distance is unbounded (cancellation); the absolute
    error is what the kernel value sees. ``dist`` (an upper bound on |a-b|, default 2R) tightens the
    input-rounding term of "tf32"/"bf16", which is proportional to |a-b|. ``float64_inputs``: the
    points were float64 and are rounded to float32 first. ``float64_compute``: mode "ieee" on a
    float64 store (everything in float64: eps = 2^-52).
    """
    mode = _check_precision(mode)
    eps = _eps_of(mode, float64_compute)
    if float64_compute:
        float64_inputs = False
    r2 = np.asarray(r2max, dtype=np.float64)
    dim = np.asarray(dim, dtype=np.float64)
    R = np.sqrt(r2)
    # norms (d products, d adds, + the add across column chunks), the two adds of the expansion,
    # the dot: all on |a|^2 + |b|^2 <= 2 R^2
    out = 2.0 * r2 * ((dim + 4) * eps + _dot_coeff(mode, dim, eps))
    if mode in ("tf32", "bf16"):  # the points are rounded, consistently for the norms and the dot
        u = _U_TF32 if mode == "tf32" else _U_BF16
        diff = 2.0 * R if dist is None else np.minimum(np.asarray(dist, dtype=np.float64), 2.0 * R)
        out = out + 2.0 * diff * (2.0 * u * R) + 4.0 * u * u * r2
    if float64_inputs:  # float64 -> float32 rounding of the inputs, |delta a| <= (eps/2)|a|
        out = out + 2.0 * (2.0 * R) * (eps * R) + (eps * R) ** 2
    return out


def _eps_of(mode, float64_compute):
    if float64_compute and mode != "ieee":
        raise ValueError("float64_compute applies to precision 'ieee' only")
    return _EPS64 if float64_compute else _EPS32


def _kernel_abs_error(mode, dim, gamma, r2max, float64_inputs, float64_compute=False):
    """Bound on |k_computed - k_exact| per pair, k = exp(-gamma |a-b|^2) (docs/triton.md).

    |e^{-g(r^2 + D)} - e^{-g r^2}| <= e^{-g r^2} g|D| e^{g|D|}. For "tf32"/"bf16", D <= D0 + 4uR r
    grows with r = |a-b| while e^{-g r^2} falls: e^{-g r^2 + 4 g u R r} g 4uR r <=
    e^{4 g u^2 R^2} 4 g u R (1/sqrt(2 g e) + 2uR). Then 3 eps for exp2 and the scaling by
    -gamma*log2e (their relative error of |x| eps on exp(-x) is <= eps/e); the clamp to <= 1 only
    moves the value towards the exact one. Never more than 1 + 3 eps (both values lie in [0, 1]).
    """
    g = np.asarray(gamma, dtype=np.float64)
    R = np.sqrt(np.asarray(r2max, dtype=np.float64))
    if mode in ("tf32", "bf16"):
        u = _U_TF32 if mode == "tf32" else _U_BF16
        base = g * distance_error_bound(mode, dim, r2max, dist=0.0, float64_inputs=float64_inputs)
        lin = 4.0 * g * u * R * (1.0 / np.sqrt(2.0 * g * math.e) + 2.0 * u * R)
        err = np.exp(base + 4.0 * g * u * u * R * R) * (base + lin)
    else:
        gd = g * distance_error_bound(mode, dim, r2max, float64_inputs=float64_inputs,
                                      float64_compute=float64_compute)
        err = gd * np.exp(gd)
    return np.minimum(err, 1.0) + 3.0 * _eps_of(mode, float64_compute)


def error_bound(mode, q_beta_l1, beta_l1, q_K, dim, gamma, r2max, *, float64_inputs: bool = False,
                float64_compute: bool = False):
    """Bound on |triton cross_inner - exact float64 cross_inner| per (query spec, store spec); broadcasts.

    Same arguments as :func:`lwengine.kernels.cross_inner_f32_bound`: ``q_beta_l1`` / ``beta_l1``
    sum |beta| of the query / store spec, ``q_K`` the query spec size (largest one for a batch),
    ``r2max`` the largest squared row norm of both. ``float64_inputs``: the rows were float64 and are
    rounded to float32 by the kernel. ``float64_compute``: a float64 store in mode "ieee" (the whole
    kernel in float64: the same derivation with eps = 2^-52).
    Bound = S * (per-pair kernel error + (q_K + 2) eps) with S = q_beta_l1 * beta_l1: the query-beta
    product and float32 sum over a query spec, then float64 for x beta_b and the spec sum.
    """
    mode = _check_precision(mode)
    S = np.asarray(q_beta_l1, dtype=np.float64) * np.asarray(beta_l1, dtype=np.float64)
    qk = np.asarray(q_K, dtype=np.float64)
    eps = _eps_of(mode, float64_compute)
    return S * (_kernel_abs_error(mode, dim, gamma, r2max, float64_inputs, float64_compute) + (qk + 2) * eps)


def zx_error_bound(mode, dim, gamma, r2max, x_abs_max, *, block_n: int = 64, float64_inputs: bool = False,
                   float64_compute: bool = False):
    """``(bound_C, bound_T)`` on |C - C_exact| (scalar) and |T_ic - T_ic exact| (per column c, shape of
    ``x_abs_max``: max_j |x_jc|) of :func:`zx_moments`. ``block_n`` is the x tile (float32 sums).

    C: per-pair kernel error + float32 tile sum (block_n eps). T: the same kernel error times |x|,
    plus the k.x tile dot in the mode (k and x rounded to TF32/bf16 there too: 2u + accumulation).
    """
    mode = _check_precision(mode)
    xm = np.asarray(x_abs_max, dtype=np.float64)
    eps = _eps_of(mode, float64_compute)
    if float64_compute:
        float64_inputs = False
    ek = _kernel_abs_error(mode, dim, gamma, r2max, float64_inputs, float64_compute)
    bc = ek + (block_n + 2) * eps
    tdot = _dot_coeff(mode, block_n, eps)
    if mode == "tf32":
        tdot = tdot + 2.0 * _U_TF32 + _U_TF32 ** 2
    elif mode == "bf16":
        tdot = tdot + 2.0 * _U_BF16 + _U_BF16 ** 2
    if float64_inputs:
        tdot = tdot + eps
    bt = (ek + tdot + 2 * eps) * xm
    return bc, bt


# ------------------------------------------------------------------------------ kernels
if triton is not None:

    @triton.jit
    def _round_rows(v, MODE: tl.constexpr):
        """Round a float32 tile as the mode's dot sees it (tf32: round-to-nearest to 10 bits, bf16)."""
        if MODE == 2:
            vi = v.to(tl.int32, bitcast=True)
            vi = (vi + 0x1000) & -8192
            v = vi.to(tl.float32, bitcast=True)
        elif MODE == 3:
            v = v.to(tl.bfloat16).to(tl.float32)
        return v

    @triton.jit
    def _mode_dot(A, B, acc, MODE: tl.constexpr, PREC: tl.constexpr, BF16_OPS: tl.constexpr):
        """acc + A @ B in the mode's dot precision (explicit: never Triton's default). bf16 operands
        (already bf16-valued) go to the tensor cores as bfloat16; the interpreter's dot cannot take
        bfloat16, so there (BF16_OPS False) the same values are multiplied in float32: products of
        bf16 values are exact in float32 either way."""
        if MODE == 3 and BF16_OPS:
            return tl.dot(A.to(tl.bfloat16), B.to(tl.bfloat16), acc, input_precision="ieee")
        return tl.dot(A, B, acc, input_precision=PREC)

    @triton.jit
    def _gauss_tile(a_ptr, ra, ma, stride_a, b_ptr, rb, mb, stride_b, d, neg_g_log2e,
                    MODE: tl.constexpr, PREC: tl.constexpr, F64: tl.constexpr, BF16_OPS: tl.constexpr,
                    BLOCK_A: tl.constexpr, BLOCK_B: tl.constexpr, BLOCK_D: tl.constexpr):
        """exp(-gamma |a - b|^2) of a tile of rows ra of a x rows rb of b, in the GEMM form
        |a|^2 + |b|^2 - 2 a.b (dot over BLOCK_D column chunks, inputs rounded for the precision mode):
        the one home of the Gaussian tile of every kernel here."""
        CT: tl.constexpr = tl.float64 if F64 else tl.float32
        dot = tl.zeros((BLOCK_A, BLOCK_B), dtype=CT)
        na = tl.zeros((BLOCK_A,), dtype=CT)
        nb = tl.zeros((BLOCK_B,), dtype=CT)
        for c0 in range(0, d, BLOCK_D):
            cc = c0 + tl.arange(0, BLOCK_D)
            mc = cc < d
            A = tl.load(a_ptr + ra[:, None].to(tl.int64) * stride_a + cc[None, :],
                        mask=ma[:, None] & mc[None, :], other=0.0).to(CT)
            B = tl.load(b_ptr + rb[:, None].to(tl.int64) * stride_b + cc[None, :],
                        mask=mb[:, None] & mc[None, :], other=0.0).to(CT)
            if not F64:
                A = _round_rows(A, MODE)
                B = _round_rows(B, MODE)
            na += tl.sum(A * A, axis=1)
            nb += tl.sum(B * B, axis=1)
            if F64:
                dot = tl.dot(A, tl.trans(B), dot, input_precision="ieee")
            else:
                dot = _mode_dot(A, tl.trans(B), dot, MODE, PREC, BF16_OPS)
        d2 = (na[:, None] + nb[None, :]) - 2.0 * dot
        return tl.exp2(tl.minimum(d2 * neg_g_log2e, 0.0))

    @triton.jit
    def _inner_kernel(qz_ptr, qb_ptr, qo_ptr, z_ptr, b_ptr, o_ptr, out_ptr,
                      Q, N, d, stride_q, stride_z, g_ptr,
                      MODE: tl.constexpr, PREC: tl.constexpr, F64: tl.constexpr, BF16_OPS: tl.constexpr, KIND: tl.constexpr,
                      BLOCK_Q: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr):
        """One program per store spec i. KIND 0: out[q, i] for every query spec q; 1: out[i] for
        query = spec i itself (self_inner); 2: out[q, i] for q >= i (gram's upper triangle)."""
        CT: tl.constexpr = tl.float64 if F64 else tl.float32
        neg_g_log2e = tl.load(g_ptr).to(CT)  # -gamma*log2(e) from a float64 tensor: a Python float would arrive as fp32
        i = tl.program_id(0)
        s0 = tl.load(o_ptr + i)
        s1 = tl.load(o_ptr + i + 1)
        q_lo = 0
        q_hi = Q
        if KIND == 1:
            q_lo = i
            q_hi = i + 1
        if KIND == 2:
            q_lo = i
        for q in range(q_lo, q_hi):
            a_lo = tl.load(qo_ptr + q)
            a_hi = tl.load(qo_ptr + q + 1)
            acc = tl.zeros((BLOCK_N,), dtype=tl.float64)
            for b0 in range(s0, s1, BLOCK_N):
                rb = b0 + tl.arange(0, BLOCK_N)
                mb = rb < s1
                v = tl.zeros((BLOCK_N,), dtype=CT)  # v_b = sum_a qbeta_a k(a, b)
                for a0 in range(a_lo, a_hi, BLOCK_Q):
                    ra = a0 + tl.arange(0, BLOCK_Q)
                    ma = ra < a_hi
                    k = _gauss_tile(qz_ptr, ra, ma, stride_q, z_ptr, rb, mb, stride_z, d, neg_g_log2e,
                                    MODE, PREC, F64, BF16_OPS, BLOCK_Q, BLOCK_N, BLOCK_D)
                    qb = tl.load(qb_ptr + ra, mask=ma, other=0.0).to(CT)
                    v += tl.sum(qb[:, None] * k, axis=0)
                bb = tl.load(b_ptr + rb, mask=mb, other=0.0)
                acc += bb * v.to(tl.float64)
            total = tl.sum(acc, axis=0)
            if KIND == 1:
                tl.store(out_ptr + i, total)
            else:
                i64 = i.to(tl.int64)
                tl.store(out_ptr + (i64 * 0 + q) * N + i64, total)  # int64 row offset (Q x N > 2^31)

    @triton.jit
    def _zx_kernel(z_ptr, x_ptr, part_ptr, K, n, d, stride_z, stride_x, g_ptr, tiles_per_prog,
                   MODE: tl.constexpr, PREC: tl.constexpr, F64: tl.constexpr, BF16_OPS: tl.constexpr, WITH_T: tl.constexpr,
                   BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_T: tl.constexpr):
        """Program (zb, cb, p): z rows of block zb against x tiles p*tiles_per_prog.., partial C (cb == 0)
        and the T columns of chunk cb (BLOCK_T wide; the dot runs over BLOCK_D column chunks) into
        part[p] (K, 1 + d) float64."""
        CT: tl.constexpr = tl.float64 if F64 else tl.float32
        neg_g_log2e = tl.load(g_ptr).to(CT)  # -gamma*log2(e) from a float64 tensor: a Python float would arrive as fp32
        zb = tl.program_id(0)
        cb = tl.program_id(1)
        p = tl.program_id(2)
        rz = zb * BLOCK_K + tl.arange(0, BLOCK_K)
        mz = rz < K
        ct = cb * BLOCK_T + tl.arange(0, BLOCK_T)
        mt = ct < d
        c_acc = tl.zeros((BLOCK_K,), dtype=tl.float64)
        t_acc = tl.zeros((BLOCK_K, BLOCK_T), dtype=tl.float64)
        n_tiles = tl.cdiv(n, BLOCK_N)
        t_lo = p * tiles_per_prog
        t_hi = tl.minimum(t_lo + tiles_per_prog, n_tiles)
        for t in range(t_lo, t_hi):
            rx = t * BLOCK_N + tl.arange(0, BLOCK_N)
            mx = rx < n
            k = _gauss_tile(z_ptr, rz, mz, stride_z, x_ptr, rx, mx, stride_x, d, neg_g_log2e,
                            MODE, PREC, F64, BF16_OPS, BLOCK_K, BLOCK_N, BLOCK_D)
            k = tl.where(mx[None, :], k, 0.0)
            c_acc += tl.sum(k, axis=1).to(tl.float64)
            if WITH_T:
                X = tl.load(x_ptr + rx[:, None].to(tl.int64) * stride_x + ct[None, :],
                            mask=mx[:, None] & mt[None, :], other=0.0).to(CT)
                if F64:
                    tk = tl.dot(k, X, input_precision="ieee")
                else:
                    tk = _mode_dot(_round_rows(k, MODE), _round_rows(X, MODE), tl.zeros((BLOCK_K, BLOCK_T), tl.float32),
                                   MODE, PREC, BF16_OPS)
                t_acc += tk.to(tl.float64)
        base = part_ptr + p.to(tl.int64) * K * (d + 1) + rz.to(tl.int64) * (d + 1)
        if cb == 0:
            tl.store(base, c_acc, mask=mz)
        if WITH_T:
            tl.store(base[:, None] + 1 + ct[None, :], t_acc, mask=mz[:, None] & mt[None, :])


# ------------------------------------------------------------------------------ tensor-level API
def _pow2(n: int, lo: int, hi: int) -> int:
    return int(min(hi, max(lo, triton.next_power_of_2(max(int(n), 1)))))


def _neg_g_log2e(gamma, device):
    return torch.tensor([-float(gamma) * _LOG2E], dtype=torch.float64, device=device)


def _compute_dtype(z_dtype, precision):
    f64 = z_dtype == torch.float64 and precision == "ieee"
    return f64


def _launch_inner(kind, q_z, q_beta, q_offsets, z, beta, offsets, gamma, precision, out):
    precision = _check_precision(precision)
    Q = q_offsets.shape[0] - 1
    N = offsets.shape[0] - 1
    d = int(z.shape[1]) if z.dim() == 2 else 1
    f64 = _compute_dtype(z.dtype, precision)
    if not f64 and z.dtype == torch.float64:
        z = z.to(torch.float32)
        q_z = q_z.to(torch.float32)
    elif q_z.dtype != z.dtype:
        q_z = q_z.to(z.dtype)
    z, q_z = z.contiguous(), q_z.contiguous()
    if N == 0 or (kind != 1 and Q == 0):
        return out
    if z.shape[0] == 0 or q_z.shape[0] == 0:  # every spec empty: no kernel on a null data pointer
        return out.zero_()
    max_q = int((q_offsets[1:] - q_offsets[:-1]).max().item()) if Q else 1
    if kind != 0:
        max_q = int((offsets[1:] - offsets[:-1]).max().item())
    block_q = _pow2(max_q, 16, 128 if not f64 else 32)
    block_n = 64 if not f64 else 32
    _inner_kernel[(N,)](
        q_z, q_beta, q_offsets, z, beta, offsets, out,
        Q, N, d, q_z.stride(0) if q_z.shape[0] else d, z.stride(0) if z.shape[0] else d,
        _neg_g_log2e(gamma, z.device),
        MODE=_MODE_CODE[precision], PREC=_DOT_PRECISION[precision], F64=f64, BF16_OPS=not _INTERPRETED, KIND=kind,
        BLOCK_Q=block_q, BLOCK_N=block_n, BLOCK_D=_BLOCK_D, num_warps=_NUM_WARPS if not f64 else 4,
    )
    return out


def cross_inner_tensors(q_z, q_beta, q_offsets, z, beta, offsets, gamma, *, precision=DEFAULT_PRECISION, out=None):
    """:func:`cross_inner` on torch tensors of one device (z (M, d) float32/float64/bfloat16, beta float64,
    offsets int64, all contiguous) -> float64 (Q, N) tensor; ``out`` (optional) is written in place."""
    Q, N = q_offsets.shape[0] - 1, offsets.shape[0] - 1
    if out is None:
        out = torch.zeros((Q, N), dtype=torch.float64, device=z.device)
    return _launch_inner(0, q_z, q_beta, q_offsets, z, beta, offsets, gamma, precision, out)


def self_inner_tensors(z, beta, offsets, gamma, *, precision=DEFAULT_PRECISION, out=None):
    """:func:`self_inner` on torch tensors -> float64 (N,) tensor."""
    if out is None:
        out = torch.zeros((offsets.shape[0] - 1,), dtype=torch.float64, device=z.device)
    return _launch_inner(1, z, beta, offsets, z, beta, offsets, gamma, precision, out)


def gram_tensors(z, beta, offsets, gamma, *, precision=DEFAULT_PRECISION, out=None):
    """:func:`gram` on torch tensors -> float64 (N, N) tensor: lower triangle computed, mirrored (exactly symmetric)."""
    N = offsets.shape[0] - 1
    if out is None:
        out = torch.zeros((N, N), dtype=torch.float64, device=z.device)
    _launch_inner(2, z, beta, offsets, z, beta, offsets, gamma, precision, out)
    if N:
        # program i wrote out[q, i] for q >= i: the lower triangle; mirror it onto the upper one
        low = torch.tril(out)
        out.copy_(low + torch.tril(out, -1).T)
    return out


def zx_moments_tensors(z, x, gamma, *, with_t=True, precision=DEFAULT_PRECISION, programs=None):
    """:func:`zx_moments` on torch tensors -> ``(C (K,), T (K, d) or None)`` float64 tensors.

    ``programs``: the number of x chunks (deterministic for a given value; default from the SM
    count on CUDA, 2 in the interpreter)."""
    precision = _check_precision(precision)
    f64 = x.dtype == torch.float64 and precision == "ieee"
    cdt = torch.float64 if f64 else torch.float32
    z = z.to(cdt).contiguous()
    x = x.contiguous() if x.dtype in (cdt, torch.bfloat16) else x.to(cdt).contiguous()
    K, d = int(z.shape[0]), int(z.shape[1])
    n = int(x.shape[0])
    if n == 0:
        raise ValueError("x must have at least one row, got 0")
    block_k = _pow2(K, 16, 64 if not f64 else 32)
    block_n = 64 if not f64 else 32
    block_t = _pow2(d, 16, 64 if not f64 else 32)
    n_tiles = -(-n // block_n)
    zb, cb = -(-K // block_k), (-(-d // block_t) if with_t else 1)
    if programs is None:
        if x.is_cuda:
            sms = torch.cuda.get_device_properties(x.device).multi_processor_count
            programs = max(1, (4 * sms) // (zb * cb))
        else:
            programs = 2
    programs = max(1, min(int(programs), n_tiles))
    per = -(-n_tiles // programs)
    programs = -(-n_tiles // per)
    # poisoned: every entry is written by exactly one program, an unwritten one would show as NaN
    part = torch.full((programs, K, d + 1), float("nan"), dtype=torch.float64, device=z.device)
    if K == 0:
        part.zero_()
    else:
        _zx_kernel[(zb, cb, programs)](
            z, x, part, K, n, d, z.stride(0), x.stride(0), _neg_g_log2e(gamma, z.device), per,
            MODE=_MODE_CODE[precision], PREC=_DOT_PRECISION[precision], F64=f64, BF16_OPS=not _INTERPRETED, WITH_T=bool(with_t),
            BLOCK_K=block_k, BLOCK_N=block_n, BLOCK_D=_BLOCK_D, BLOCK_T=block_t,
            num_warps=_NUM_WARPS if not f64 else 4,
        )
    tot = part.sum(0) / n  # fixed-order reduction of the partials
    C = tot[:, 0].contiguous()
    T = tot[:, 1:].contiguous() if with_t else None
    return C, T


def compile_variants(*, kinds=(0, 1, 2)):
    """Every kernel variant as launched for K = 100-row specs and d = 64:
    ``[(label, jit function, signature, constexprs, num_warps)]`` for Triton's ahead-of-time compile
    (``triton.compile(ASTSource(fn, signature, constexprs), target=...)``), which needs no GPU."""
    inner = {"qz_ptr": "*fp32", "qb_ptr": "*fp64", "qo_ptr": "*i64", "z_ptr": "*fp32", "b_ptr": "*fp64",
             "o_ptr": "*i64", "out_ptr": "*fp64", "Q": "i32", "N": "i32", "d": "i32", "stride_q": "i32",
             "stride_z": "i32", "g_ptr": "*fp64"}
    zx = {"z_ptr": "*fp32", "x_ptr": "*fp32", "part_ptr": "*fp64", "K": "i32", "n": "i32", "d": "i32",
          "stride_z": "i32", "stride_x": "i32", "g_ptr": "*fp64", "tiles_per_prog": "i32"}
    out = []
    for mode in PRECISIONS:
        for f64 in ((False, True) if mode == "ieee" else (False,)):
            base = {"MODE": _MODE_CODE[mode], "PREC": _DOT_PRECISION[mode], "F64": f64, "BF16_OPS": True}
            nw = 4 if f64 else _NUM_WARPS
            cast = (lambda sig: {k: ("*fp64" if v == "*fp32" else v) for k, v in sig.items()}) if f64 else dict
            tag = f"{mode}{'-f64' if f64 else ''}"
            for kind in kinds:
                c = dict(base, KIND=kind, BLOCK_Q=128 if not f64 else 32, BLOCK_N=64 if not f64 else 32,
                         BLOCK_D=_BLOCK_D)
                out.append((f"inner[{('cross', 'self', 'gram')[kind]}] {tag}", _inner_kernel,
                            {**cast(inner), **{k: "constexpr" for k in c}}, c, nw))
            c = dict(base, WITH_T=True, BLOCK_K=64 if not f64 else 32, BLOCK_N=64 if not f64 else 32,
                     BLOCK_D=_BLOCK_D, BLOCK_T=64 if not f64 else 32)
            out.append((f"zx {tag}", _zx_kernel, {**cast(zx), **{k: "constexpr" for k in c}}, c, nw))
    return out


# ------------------------------------------------------------------------------ numpy API
def _dev(device: str):
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    _require(device)
    return torch.device(device)


def _t(a, dev, dtype=None):
    t = torch.from_numpy(np.ascontiguousarray(a))
    if dtype is not None:
        t = t.to(dtype)
    return t.to(dev)


def cross_inner(q_z, q_beta, q_offsets, z, beta, offsets, gamma, *, device, precision=DEFAULT_PRECISION):
    """(Q, N) float64 numpy: ``out[q, i] = sum_a sum_b q_beta_a beta_b exp(-gamma |q_z_a - z_b|^2)``.

    Inputs as :func:`lwengine.kernels.cross_inner` passes them after validation (z float32/float64
    C-contiguous 2-D, beta float64, offsets int64). A float64 store computes in float64 under "ieee";
    every other combination rounds the rows to float32 (error: :func:`error_bound`)."""
    dev = _dev(device)
    _check_precision(precision)
    out = cross_inner_tensors(_t(q_z, dev), _t(q_beta, dev), _t(q_offsets, dev), _t(z, dev), _t(beta, dev),
                              _t(offsets, dev), gamma, precision=precision)
    return out.cpu().numpy()


def self_inner(z, beta, offsets, gamma, *, device, precision=DEFAULT_PRECISION):
    """(N,) float64 numpy: ``<mu_i, mu_i>``."""
    dev = _dev(device)
    _check_precision(precision)
    return self_inner_tensors(_t(z, dev), _t(beta, dev), _t(offsets, dev), gamma, precision=precision).cpu().numpy()


def gram(z, beta, offsets, gamma, *, device, precision=DEFAULT_PRECISION):
    """(N, N) float64 numpy Gram matrix, exactly symmetric."""
    dev = _dev(device)
    _check_precision(precision)
    return gram_tensors(_t(z, dev), _t(beta, dev), _t(offsets, dev), gamma, precision=precision).cpu().numpy()


def zx_moments(z, x, gamma, *, with_t=True, device, precision=DEFAULT_PRECISION):
    """``(C (K,), T (K, d) or None)`` float64 numpy, as :func:`lwengine.kernels.zx_moments`."""
    dev = _dev(device)
    _check_precision(precision)
    C, T = zx_moments_tensors(_t(z, dev), _t(x, dev), gamma, with_t=with_t, precision=precision)
    return C.cpu().numpy(), (T.cpu().numpy() if T is not None else None)
