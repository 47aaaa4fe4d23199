"""Command line: ``lwengine bench make-market --n N --d D --K K --out FILE [--regime ...] [--seed S]``."""
from __future__ import annotations

import time


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmark helpers (synthetic markets)")
    sub = p.add_subparsers(dest="bench_command", required=True)
    m = sub.add_parser("make-market", help="generate a synthetic market and save it as a binary SpecIndex")
    m.add_argument("--n", type=int, required=True, help="number of specs")
    m.add_argument("--d", type=int, required=True, help="dimension")
    m.add_argument("--K", type=int, required=True, help="reduced-set size of every spec")
    m.add_argument("--out", required=True, help="output folder (writes market.lwe in it), or a file ending in .lwe")
    m.add_argument("--regime", default="families", choices=["families", "text", "overlap"])
    m.add_argument("--seed", type=int, default=0)
    m.add_argument("--gamma", type=float, default=0.1)
    m.add_argument("--beta", default="dirichlet", choices=["dirichlet", "uniform"])
    m.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    m.add_argument("--sketch", action="store_true", help="also build and save the Nystrom sketch")
    m.add_argument("--m", type=int, default=256, help="landmarks of the sketch")
    m.set_defaults(func=_cmd_make_market)


def _cmd_make_market(args) -> int:
    import os

    from ..scale.market import make_market

    out = args.out
    if os.path.isdir(out) or not out.endswith(".lwe"):
        os.makedirs(out, exist_ok=True)
        out = os.path.join(out, "market.lwe")
    t = time.perf_counter()
    index, _ = make_market(args.n, args.d, args.K, args.regime, seed=args.seed, gamma=args.gamma,
                           beta=args.beta, dtype=args.dtype)
    if args.sketch:
        index.build_sketch(m=args.m)
    index.save(out)
    print(f"wrote {len(index)} specs ({args.regime}, d={args.d}, K={args.K}) to {out} "
          f"in {time.perf_counter() - t:.1f} s")
    return 0
