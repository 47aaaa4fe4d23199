"""The reference's NNGP kernel with torch's own operations, in the reference's order (optional).

Same module structure as cnn_gp (conv2d with a float32 box kernel, the ReLU's rsqrt / clamp / acos,
the one-object diagonal written through ``(1 - eye) * xy + eye * xx``).  On torch's CPU kernels this
reproduces the reference's float32 entries bit for bit where they round as on the recording machine
(checked against the canonical Grams of the fixtures; ``gram_cache.torch_replica_exact``); it is used
only to build the canonical Gram cache when torch is present.
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["torch_nngp_kernel", "convnet_layers"]


def convnet_layers(depth: int) -> list:
    """The layers of the reference's ConvNet NNGP for ``net_depth`` = depth: ``("c", k, stride, pad,
    var_w, var_b)`` convolutions and ``("r",)`` ReLUs (depth x [Conv3, ReLU, Conv2 stride 2], then the
    Conv to a 1x1 map)."""
    layers = []
    for _ in range(depth):
        layers += [("c", 3, 1, 1, np.sqrt(2), 0.1), ("r",), ("c", 2, 2, 0, 1.0, 0.0)]
    layers.append(("c", 32 // 2 ** depth, 1, 0, 1.0, 0.0))
    return layers


def torch_nngp_kernel(x, y=None, *, depth: int = 3):
    """float32 (N1, N2) numpy array: ``_build_ConvNet_NNGP(net_depth=depth)(x[, y])`` replayed."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
    same = y is None
    y = x if same else torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32))
    n1, n2, C, W, H = x.shape[0], y.shape[0], x.shape[1], x.shape[2], x.shape[3]
    tiny = np.finfo(np.float32).tiny
    with torch.no_grad():
        xy = (x.unsqueeze(1) * y).mean(2).view(n1 * n2, 1, W, H)
        xx = (x ** 2).mean(1, keepdim=True)
        yy = (y ** 2).mean(1, keepdim=True)

        def conv(a, k, stride, pad, vw, vb):
            kern = torch.ones(1, 1, k, k) * (vw / k ** 2)
            return F.conv2d(a, kern, stride=stride, padding=pad) + vb

        for L in convnet_layers(depth):
            if L[0] == "c":
                _, k, s, p, vw, vb = L
                xy = conv(xy.reshape(n1 * n2, 1, xy.shape[-2], xy.shape[-1]), k, s, p, vw, vb)
                xx = conv(xx.reshape(n1, 1, xx.shape[-2], xx.shape[-1]), k, s, p, vw, vb)
                yy = conv(yy.reshape(n2, 1, yy.shape[-2], yy.shape[-1]), k, s, p, vw, vb)
            else:
                Wc, Hc = xy.shape[-2], xy.shape[-1]
                xy = xy.view(n1, n2, Wc, Hc)
                xxv = xx.view(n1, 1, Wc, Hc)
                yyv = yy.view(n2, Wc, Hc)
                xx_yy = xxv * yyv + tiny
                cos_t = (xy * xx_yy.rsqrt()).clamp(-1, 1)
                sin_t = torch.sqrt((xx_yy - xy ** 2).clamp(min=0))
                theta = torch.acos(cos_t)
                xy = (sin_t + (math.pi - theta) * xy) / (2 * math.pi)
                xx = xxv / 2.0
                if same:
                    yy = xx
                    eye = torch.eye(xy.size()[0]).unsqueeze(-1).unsqueeze(-1)
                    xy = (1 - eye) * xy + eye * xx
                else:
                    yy = yyv / 2.0
        return xy.reshape(n1, n2).numpy().copy()
