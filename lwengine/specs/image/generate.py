"""Faithful generation of the reference's image spec (``generate_rkme_image_spec``), one feature pass.

The reference's 100 steps change nothing but beta, and beta is re-solved from scratch every step, so
its result is the QP on the LAST step's random-feature K and C (see the image semantics notes, §1.4-1.5):

* nets: the numpy ``RandomState(0)`` Gaussian stream (16 initial nets, then z, then 16 nets per step);
* rows: net m's features of z are taken in the order of that net's DataLoader shuffle (torch's CPU
  generator, replayed in :mod:`.rng`), so row i of the feature matrix mixes different z images;
* ``K = zf zf^T + 0.01`` (float32), ``C_i = mean_j (zf_i . xf_j) + 0.01``, beta = simplex QP.

Random ConvNet features use torch ``conv2d`` (optional dependency: ``pip install lwengine[image]``).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np

from .rng import GaussianStream, NetConfig, TorchCPUGenerator, gaussians_per_net

__all__ = ["require_torch", "preprocess", "GenerateInfo", "generate", "random_features", "DEFAULT_MODEL_CONFIG"]

log = logging.getLogger(__name__)

DEFAULT_MODEL_CONFIG = {"k": 2, "mu": 0, "sigma": None, "net_width": 128, "net_depth": 3}
_WORDS_PER_LOADER = 4  # two int64 random_() draws per enumerate(DataLoader)
_FEATURE_BATCH = 64


def require_torch(what: str):
    try:
        import torch
    except ModuleNotFoundError as exc:  # pragma: no cover - torch is installed on the dev box
        raise RuntimeError(
            f"{what} needs torch (random ConvNet features); install the optional extra: pip install 'lwengine[image]'"
        ) from exc
    return torch


def _device(torch, device: str):
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device='cuda' was requested but torch sees no CUDA device")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {device!r}")
    return torch.device(device)


def preprocess(X, *, resize: bool = True, whitening: bool = True, device: str = "cpu"):
    """The reference's input rules -> float32 torch tensor (N, C, 32, 32): inf -> NaN, NaN <- the
    image's nanmean, bilinear antialiased resize, per-channel standardisation (unbiased std), ZCA.

    Unlike the reference, a float32 numpy input is never modified in place.
    """
    torch = require_torch("RKMEImageSpec.fit")
    if hasattr(X, "detach"):
        X = X.detach().cpu().numpy()
    X = np.asarray(X)
    if X.ndim != 4:
        raise ValueError(f"X should be in shape of [N, C, H, W], got shape {X.shape}")
    if not (np.issubdtype(X.dtype, np.number) or X.dtype == np.bool_) or np.iscomplexobj(X):
        raise TypeError(f"X must hold real numbers, got dtype {X.dtype}")
    if X.shape[0] == 0 or X.shape[1] == 0 or X.shape[2] == 0 or X.shape[3] == 0:
        raise ValueError(f"X must have at least one image, channel and pixel, got shape {X.shape}")
    if X.shape[2:] != (32, 32) and not resize:
        raise ValueError(
            "X should be in shape of [N, C, 32, 32]. Or set resize=True and the image will be "
            f"automatically resized to 32 x 32 (got {X.shape})."
        )
    dev = _device(torch, device)
    x = torch.from_numpy(np.array(X, copy=True)).to(dev).float()
    x[torch.isinf(x)] = torch.nan
    if torch.any(torch.isnan(x)):
        for i in range(x.shape[0]):
            img = x[i]
            is_nan = torch.isnan(img)
            if torch.any(is_nan):
                if torch.all(is_nan):
                    raise ValueError(f"All values in image {i} are exceptional, e.g., NaN and Inf.")
                x[i] = torch.where(is_nan, torch.nanmean(img), img)
    if x.shape[2:] != (32, 32):
        x = torch.nn.functional.interpolate(x, size=[32, 32], mode="bilinear", align_corners=False, antialias=True)
    n = x.shape[0]
    shape = x.shape
    x = (x - torch.mean(x, [0, 2, 3], keepdim=True)) / torch.std(x, [0, 2, 3], keepdim=True)
    if shape[1] > 1 and whitening:
        flat = x.reshape(n, -1)
        cov = (flat.T @ flat) / flat.shape[0]
        reg = 0.1 * torch.trace(cov) / cov.shape[0]
        u, s, _ = torch.svd(cov + reg * torch.eye(cov.shape[0], device=dev))
        w = torch.einsum("ij,j,kj->ik", u, s ** (-0.5), u)
        x = (flat @ w).view(*shape)
    if not torch.isfinite(x).all():
        raise ValueError("X is constant in some channel (zero standard deviation): it cannot be standardised")
    return x


def _net_tensors(torch, layers, dev):
    return [(torch.from_numpy(w).to(dev), torch.from_numpy(b).to(dev)) for w, b in layers]


def random_features(torch, images, net) -> "object":
    """phi(images) of one reference ConvNet: depth x [conv3x3 pad 1 + bias, ReLU, avgpool 2], flattened."""
    F = torch.nn.functional
    out = images
    for w, b in net:
        out = F.avg_pool2d(F.relu(F.conv2d(out, w, b, padding=1)), kernel_size=2, stride=2)
    return out.reshape(out.shape[0], -1)


@dataclass
class GenerateInfo:
    """Diagnostics of one generation: the QP inputs and the replayed permutations."""

    K_matrix: np.ndarray = None
    C_vector: np.ndarray = None
    perms: list = field(default_factory=list)
    n_train: int = 0
    sample_indices: np.ndarray = None
    qp_objective: float = float("nan")
    x_train: np.ndarray = None
    seconds: dict = field(default_factory=dict)


def _final_perms(cfg: NetConfig, n_models: int, K: int, steps: int):
    """Permutations (rows of z per net) of the final beta update, replaying torch's CPU generator."""
    g = TorchCPUGenerator(0)
    G = gaussians_per_net(cfg)
    w = n_models * G + n_models * _WORDS_PER_LOADER  # initial nets, X features
    if steps >= 1:
        w += n_models * _WORDS_PER_LOADER  # initial beta's z features
        per_step = n_models * G + n_models * _WORDS_PER_LOADER * 4  # nets, X, 3x update_z
        w += (steps - 1) * (per_step + n_models * _WORDS_PER_LOADER) + per_step
    g.skip(w)
    return [g.dataloader_perm(K) for _ in range(n_models)]


def generate(X, K: int = 50, *, steps: int = 100, sample_size: int = 5000, nonnegative_beta: bool = True,
             reduce: bool = True, whitening: bool = True, resize: bool = True, seed=None, device: str = "auto",
             n_models: int = 16, model_config=None, x_train=None, qp_solver: str = "exact",
             keep_x_train: bool = False):
    """-> (z float32 (K, C, 32, 32), beta, GenerateInfo).  ``x_train`` (optional): already preprocessed
    images (skips :func:`preprocess`; used to feed the reference's own X_train in tests)."""
    import time

    torch = require_torch("RKMEImageSpec.fit")
    cfg_d = dict(DEFAULT_MODEL_CONFIG if model_config is None else model_config)
    info = GenerateInfo()
    t0 = time.perf_counter()
    dev = _device(torch, device)
    if x_train is None:
        xt = preprocess(X, resize=resize, whitening=whitening, device=str(dev.type))
    else:
        xt = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float32)).to(dev)
    info.seconds["preprocess"] = time.perf_counter() - t0
    N, C = int(xt.shape[0]), int(xt.shape[1])
    if not reduce:
        info.n_train = N
        return xt.cpu().numpy(), np.full(N, 1.0 / N), info
    if N > sample_size:
        idx = np.random.RandomState(seed).choice(N, sample_size, replace=False)
        info.sample_indices = idx
        xt = xt[torch.from_numpy(idx).to(dev)]
        N = sample_size
    info.n_train = N
    if keep_x_train:
        info.x_train = xt.cpu().numpy()
    cfg = NetConfig(C, int(cfg_d.get("k", 2)), int(cfg_d.get("net_width", 128)), int(cfg_d.get("net_depth", 3)))
    G = gaussians_per_net(cfg)
    t0 = time.perf_counter()
    stream = GaussianStream(0)
    stream.skip(n_models * G)
    z = stream.normal(0, 1, (K, C, 32, 32))
    if steps >= 1:
        stream.skip((steps - 1) * n_models * G)
    else:
        stream = GaussianStream(0)
    mu, sigma = cfg_d.get("mu", 0), cfg_d.get("sigma", None)
    nets = [stream.net(cfg, mu, sigma) for _ in range(n_models)]
    perms = _final_perms(cfg, n_models, K, steps)
    info.perms = perms
    info.seconds["rng"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    zt = torch.from_numpy(z).to(dev)
    zf_parts, xsum_parts = [], []
    prev_tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False  # fidelity: no TF32 rounding of the convolutions on GPUs
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad():
            for m in range(n_models):
                net = _net_tensors(torch, nets[m], dev)
                zf_parts.append(random_features(torch, zt[torch.from_numpy(perms[m]).to(dev)], net))
                acc = torch.zeros(zf_parts[-1].shape[1], dtype=torch.float64, device=dev)
                for b0 in range(0, N, _FEATURE_BATCH):
                    acc += random_features(torch, xt[b0:b0 + _FEATURE_BATCH], net).sum(0, dtype=torch.float64)
                xsum_parts.append(acc)
            D = sum(p.shape[1] for p in zf_parts)
            zf = torch.cat(zf_parts, 1) / float(np.sqrt(D))
            xmean = torch.cat(xsum_parts) / (float(np.sqrt(D)) * N)
            Km = zf @ zf.T + 0.01
            Cv = zf.double() @ xmean + 0.01
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = prev_tf32
    info.seconds["features"] = time.perf_counter() - t0
    Kn = Km.cpu().numpy()
    Cn = Cv.cpu().numpy()
    info.K_matrix, info.C_vector = Kn, Cn
    beta = solve_beta(Kn, Cn, nonnegative_beta, info, qp_solver=qp_solver)
    return z, beta, info


def solve_beta(Kf32, C, nonnegative: bool, info: GenerateInfo | None = None, *, qp_solver: str = "exact"):
    """The reference's beta update from its QP inputs: simplex QP on float64 K, C; or, with
    ``nonnegative=False``, ``inv(K + 1e-5 I) @ C`` in float32 (the reference's unconstrained rule).

    ``qp_solver="exact"``: lwengine's active-set solver (the exact minimiser); ``"clarabel"``: the
    reference's own call (qpsolvers + Clarabel, interior point: its beta is the reference's bit for
    bit given the same K and C, and differs from the exact minimiser by up to ~3e-4 on these
    ill-conditioned problems at an equal objective to ~1e-9).
    """
    from ... import kernels

    Kf32 = np.asarray(Kf32, dtype=np.float32)
    if qp_solver not in ("exact", "clarabel"):
        raise ValueError(f"qp_solver must be 'exact' or 'clarabel', got {qp_solver!r}")
    if nonnegative and qp_solver == "clarabel":
        beta, obj = clarabel_qp(Kf32.astype(np.float64), np.asarray(C, dtype=np.float64))
        if info is not None:
            info.qp_objective = obj
        return beta
    if nonnegative:
        beta, obj = kernels.simplex_qp(Kf32.astype(np.float64), np.asarray(C, dtype=np.float64))
        if info is not None:
            info.qp_objective = obj
        return beta
    C32 = np.asarray(C, dtype=np.float32)
    inv = np.linalg.inv(Kf32 + np.eye(Kf32.shape[0], dtype=np.float32) * np.float32(1e-5)).astype(np.float32)
    return (inv @ C32).astype(np.float32)


def clarabel_qp(K, C):
    """``rkme_solve_qp`` of the reference: qpsolvers ``Problem`` solved by Clarabel -> (beta, obj)."""
    try:
        import scipy.sparse
        from qpsolvers import Problem, solve_problem
    except ModuleNotFoundError as exc:
        raise RuntimeError("qp_solver='clarabel' needs qpsolvers and clarabel: pip install qpsolvers clarabel") from exc
    n = K.shape[0]
    C = np.asarray(C, dtype=np.float64).reshape(-1)
    problem = Problem(scipy.sparse.csc_matrix(np.array(K)), np.array(-C), scipy.sparse.csc_matrix(-np.eye(n)),
                      np.zeros((n, 1)), scipy.sparse.csc_matrix(np.ones((1, n))), np.ones((1, 1)))
    sol = solve_problem(problem, solver="clarabel")
    if sol.x is None:
        raise RuntimeError("Clarabel found no solution of the beta QP")
    return np.asarray(sol.x, dtype=np.float64).reshape(-1), float(sol.obj)
