"""Replays of the two random streams the reference's image generator consumes (numpy only).

* numpy ``RandomState(0)`` legacy Gaussians: the random nets' weights and biases (layer by layer) and z.
* torch's global CPU generator (std::mt19937, seeded 0 by the reference's ``deterministic()``): each
  ``nn.Conv2d`` constructor's default init draws one 32-bit word per float32 parameter, each
  ``enumerate(DataLoader(shuffle=True))`` draws two int64 ``random_()`` values (base seed, then the
  sampler's seed), and the sampler's permutation is ``torch.randperm(n)`` on a fresh generator seeded
  with that seed.  Replayed here with numpy's MT19937 (same words as std::mt19937 for a 32-bit seed).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ... import kernels

__all__ = [
    "NetConfig",
    "gaussians_per_net",
    "GaussianStream",
    "TorchCPUGenerator",
    "torch_randperm",
    "canonical_z", "canonical_z_view",
]

@dataclass(frozen=True)
class NetConfig:
    """Shape of one random ConvNet of the reference (``_ConvNet_wide``)."""

    channels: int
    k: int = 2
    net_width: int = 128
    net_depth: int = 3

    @property
    def width(self) -> int:
        return int(self.k * self.net_width)

    def layer_shapes(self):
        """[(out, in, 3, 3) weight shape, out bias length] per layer."""
        shapes, cin = [], self.channels
        for _ in range(self.net_depth):
            shapes.append(((self.width, cin, 3, 3), self.width))
            cin = self.width
        return shapes


def gaussians_per_net(cfg: NetConfig) -> int:
    """Gaussians (= torch words) one net consumes: sum of weight and bias sizes."""
    return sum(int(np.prod(w)) + b for w, b in cfg.layer_shapes())


class GaussianStream:
    """numpy ``RandomState(seed)`` legacy normal stream with a position counter."""

    def __init__(self, seed: int = 0):
        self.state = np.random.RandomState(seed)
        self.position = 0

    def skip(self, n: int) -> None:
        """Advance past n Gaussians (native skip of the accepted polar pairs; bit-exact)."""
        n = int(n)
        if n <= 0:
            return
        self.position += n
        if self.state.get_state()[3]:  # a cached Gaussian comes first
            self.state.standard_normal(1)
            n -= 1
        pairs, odd = divmod(n, 2)
        if pairs:
            _, key, pos, _, _ = self.state.get_state()
            bitgen = np.random.MT19937()
            bitgen.state = {"bit_generator": "MT19937", "state": {"key": key, "pos": pos}}
            kernels.mt19937_skip(bitgen, pairs, gauss_pairs=True)
            st = bitgen.state["state"]
            self.state.set_state(("MT19937", st["key"], st["pos"], 0, 0.0))
        if odd:
            self.state.standard_normal(1)

    def normal(self, mean, std, shape) -> np.ndarray:
        """float32(RandomState.normal(mean, std, shape)), as the reference's ``normal_`` copy does."""
        out = self.state.normal(mean, std, size=shape)
        self.position += int(np.prod(shape))
        return out.astype(np.float32)

    def net(self, cfg: NetConfig, mu: float = 0.0, sigma=None):
        """One net's [(weight float32, bias float32)] per layer, in the reference's draw order."""
        layers = []
        for wshape, b in cfg.layer_shapes():
            std = sigma if sigma is not None else np.sqrt(2) / np.sqrt(wshape[1] * wshape[2] * wshape[3])
            w = self.normal(0 if mu is None else mu, std, wshape)
            bias = self.normal(0, 0.1, (b,))
            layers.append((w, bias))
        return layers


class TorchCPUGenerator:
    """torch's CPU generator (mt19937 on the low 32 bits of the seed) as a word stream."""

    def __init__(self, seed: int = 0):
        self.bitgen = np.random.MT19937()
        self.bitgen._legacy_seeding(int(seed) & 0xFFFFFFFF)

    def skip(self, n: int) -> None:
        n = int(n)
        if n > 0:
            kernels.mt19937_skip(self.bitgen, n)

    def words(self, n: int) -> np.ndarray:
        return self.bitgen.random_raw(int(n)).astype(np.uint64)

    def random_int64(self) -> int:
        """``torch.empty((), dtype=int64).random_()``: ((w1 << 32) | w2) mod 2^63."""
        w1, w2 = (int(v) for v in self.bitgen.random_raw(2))
        return ((w1 << 32) | w2) % (1 << 63)

    def dataloader_perm(self, n: int) -> np.ndarray:
        """The index order of one ``enumerate(DataLoader(..., shuffle=True))`` over n items."""
        self.random_int64()  # _base_seed
        seed = self.random_int64()  # RandomSampler's generator seed
        return torch_randperm(n, seed)


def torch_randperm(n: int, seed: int) -> np.ndarray:
    """``torch.randperm(n, generator=torch.Generator().manual_seed(seed))`` on the CPU."""
    n = int(n)
    g = np.random.MT19937()
    g._legacy_seeding(int(seed) & 0xFFFFFFFF)
    r = np.arange(n, dtype=np.int64)
    if n < 2:
        return r
    words = g.random_raw(n - 1)
    for i in range(n - 1):
        j = i + int(words[i]) % (n - i)
        r[i], r[j] = r[j], r[i]
    return r


_CANONICAL: dict = {}


def canonical_z(K: int, cfg: NetConfig, n_models: int = 16) -> np.ndarray:
    """The z every default spec with K and this net shape gets: float32 gaussians right after the
    ``n_models`` initial nets of ``RandomState(0)``; z(K) is a prefix of z(K') for K < K'."""
    K = int(K)
    key = (cfg, int(n_models))
    block = _CANONICAL.get(key)
    per = cfg.channels * 32 * 32
    if block is None or block.shape[0] < K:
        kmax = max(K, 100 if block is None else 2 * block.shape[0])
        s = GaussianStream(0)
        s.skip(n_models * gaussians_per_net(cfg))
        block = s.normal(0, 1, (kmax, cfg.channels, 32, 32))
        _CANONICAL[key] = block
    return block[:K].copy()


def canonical_z_view(K: int, cfg: NetConfig, n_models: int = 16) -> np.ndarray:
    """:func:`canonical_z` as a read-only view of the cached block (specs holding the canonical z
    share it instead of keeping a copy each)."""
    canonical_z(K, cfg, n_models)
    view = _CANONICAL[(cfg, int(n_models))][: int(K)].view()
    view.setflags(write=False)
    return view
