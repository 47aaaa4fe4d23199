"""``update="nngp-descent"``: optimise z and beta for the MMD under the search kernel (needs torch).

The reference never moves z (it has no gradient there) and fits beta under a different kernel
(random ConvNet features) from the one search uses (the ConvNet NNGP).  This variant minimises
``MMD^2(spec, data) = beta' K_zz beta - 2 beta' k_zx + mean k_xx`` under the float64 NNGP with the
spec's ``net_depth``, starting from the reference's spec, by alternating

* beta <- the exact simplex QP given z (the minimum over beta: never increases the objective);
* z <- z - t * grad_z (autograd through the NNGP recursion), with backtracking: a step is taken
  only if it lowers the objective (t halves until it does; the loop stops when no step helps).

Every accepted step therefore lowers MMD^2 (``info["history"]`` is strictly decreasing after the
first beta solve).  The one-object diagonal uses the forced ``xx`` path (as the reference's search
does for a spec with itself), which also keeps acos away from its singular point.
"""
from __future__ import annotations

import math

import numpy as np

from .nngp_torch import convnet_layers

__all__ = ["nngp_descent", "torch_nngp_f64"]

_X_CHUNK = 64


def torch_nngp_f64(torch, x, y, depth: int, same: bool):
    """Differentiable float64 NNGP (N1, N2) of torch tensors x, y (N, C, 32, 32)."""
    F = torch.nn.functional
    n1, n2 = x.shape[0], y.shape[0]
    xy = (x.unsqueeze(1) * y.unsqueeze(0)).mean(2).reshape(n1 * n2, 1, 32, 32)
    xx = (x * x).mean(1, keepdim=True)
    yy = (y * y).mean(1, keepdim=True)
    diag = None
    if same:
        diag = torch.eye(n1, dtype=torch.bool, device=x.device).reshape(n1, n1, 1, 1)

    def conv(a, k, stride, pad, vw, vb):
        w = torch.full((1, 1, k, k), float(np.float32(vw / k ** 2)), dtype=a.dtype, device=a.device)
        return F.conv2d(a, w, stride=stride, padding=pad) + vb

    for L in convnet_layers(depth):
        if L[0] == "c":
            _, k, s, p, vw, vb = L
            S = xy.shape[-1]
            xy = conv(xy.reshape(n1 * n2, 1, S, S), k, s, p, vw, vb)
            xx = conv(xx, k, s, p, vw, vb)
            yy = conv(yy, k, s, p, vw, vb)
        else:
            S = xy.shape[-1]
            xyv = xy.reshape(n1, n2, S, S)
            xxv = xx.reshape(n1, 1, S, S)
            yyv = yy.reshape(1, n2, S, S)
            if diag is not None:
                xyv = torch.where(diag, torch.zeros_like(xyv), xyv)  # keep acos off |cos| = 1 there
            t = xxv * yyv + float(np.finfo(np.float32).tiny)
            cos = (xyv / torch.sqrt(t)).clamp(-1, 1)
            sin = torch.sqrt((t - xyv * xyv).clamp(min=1e-300))
            new = (sin + (math.pi - torch.acos(cos)) * xyv) / (2 * math.pi)
            xx = xx / 2.0
            yy = xx if same else yy / 2.0
            if diag is not None:
                new = torch.where(diag, xx.reshape(n1, 1, S, S).expand(n1, n1, S, S), new)
            xy = new
    return xy.reshape(n1, n2)


def nngp_descent(spec, x_train, *, steps: int = 50, step0: float = 1.0, max_halvings: int = 20):
    """-> a new RKMEImageSpec with lower MMD^2 to ``x_train`` (N, C, 32, 32) under the search kernel."""
    from ... import kernels
    from .generate import require_torch

    torch = require_torch("update='nngp-descent'")
    depth = spec.net_depth
    X = torch.from_numpy(np.ascontiguousarray(x_train, dtype=np.float64))
    N = X.shape[0]
    kxx = float(kernels.nngp_kernel(np.asarray(x_train), precision="float64", depth=depth).mean())

    def terms(z, need_grad):
        zt = z.clone().requires_grad_(need_grad)
        Kzz = torch_nngp_f64(torch, zt, zt, depth, same=True)
        kzx = torch.zeros(z.shape[0], dtype=torch.float64)
        for s in range(0, N, _X_CHUNK):
            kzx = kzx + torch_nngp_f64(torch, zt, X[s:s + _X_CHUNK], depth, same=False).sum(1)
        return zt, Kzz, kzx / N

    def objective(Kzz, kzx, beta):
        return float(beta @ Kzz.detach().numpy() @ beta - 2 * beta @ kzx.detach().numpy() + kxx)

    z = torch.from_numpy(spec.z.astype(np.float64))
    with torch.no_grad():
        _, Kzz, kzx = terms(z, False)
    beta = spec.beta.astype(np.float64)
    history = [objective(Kzz, kzx, beta)]
    beta_qp, _ = kernels.simplex_qp(Kzz.numpy(), kzx.numpy())
    if objective(Kzz, kzx, beta_qp) < history[-1]:
        beta = beta_qp
        history.append(objective(Kzz, kzx, beta))
    t = float(step0)
    for _ in range(int(steps)):
        zt, Kzz, kzx = terms(z, True)
        b = torch.from_numpy(beta)
        loss = b @ Kzz @ b - 2 * b @ kzx
        (grad,) = torch.autograd.grad(loss, zt)
        gnorm = float(torch.linalg.vector_norm(grad))
        if not np.isfinite(gnorm) or gnorm == 0:
            break
        accepted = False
        for _h in range(max_halvings):
            cand = (z - (t / gnorm) * grad).float().double()  # specs keep float32 z
            with torch.no_grad():
                _, K2, k2 = terms(cand, False)
            new_beta, _ = kernels.simplex_qp(K2.numpy(), k2.numpy())
            val = objective(K2, k2, new_beta)
            if val < history[-1]:
                z, beta, accepted = cand, new_beta, True
                history.append(val)
                t *= 2.0
                break
            t *= 0.5
        if not accepted:
            break
    out = type(spec)(z.numpy().astype(np.float32), beta, n_models=spec.n_models,
                        model_config=spec.model_config)
    out.descent_info = {"history": history, "mmd2_start": history[0], "mmd2_end": history[-1]}
    return out
