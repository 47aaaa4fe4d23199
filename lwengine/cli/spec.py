"""``lwengine spec fit DATA --out SPEC.json``, ``lwengine spec fit-text EMB.npy --out SPEC.json
[--language en,de | --texts FILE]`` and ``lwengine spec show SPEC.json``."""
from __future__ import annotations

import csv
import json
import os

import numpy as np

from ..specs import RKMETextSpec, load_spec
from ..specs.table import RKMESpec


def register(subparsers) -> None:
    spec = subparsers.add_parser("spec", help="fit or inspect RKME table specifications")
    sub = spec.add_subparsers(dest="spec_command", required=True)

    p = sub.add_parser("fit", help="fit a spec to a data file (.npy, or numeric .csv with optional header)")
    p.add_argument("data", help="data file: .npy (n, ...) or .csv (n rows, numeric columns)")
    p.add_argument("--out", required=True, help="output spec JSON")
    p.add_argument("--K", type=int, default=100, help="reduced-set size (default 100)")
    p.add_argument("--gamma", type=float, default=0.1, help="Gaussian kernel parameter (default 0.1)")
    p.add_argument("--steps", type=int, default=3, help="Z steps (default 3)")
    p.add_argument("--step-size", type=float, default=0.1, help="Z step size (default 0.1)")
    p.add_argument("--seed", type=int, default=None, help="seed of the k-means init")
    p.add_argument("--init", choices=["random", "k-means++"], default="random",
                   help="k-means init (default: the reference's random rows)")
    p.add_argument("--n-init", type=int, default=1, help="k-means inits, best kept (default 1)")
    p.add_argument("--init-z", default=None, help=".npy initial reduced set (skips k-means)")
    p.add_argument("--no-reduce", action="store_true", help="keep every row (beta = 1/n)")
    p.add_argument("--signed-beta", action="store_true", help="beta = (G + 1e-5 I)^-1 C, may be negative")
    p.add_argument("--update", choices=["reference", "mmd-descent"], default="reference",
                   help="Z update (default: the reference's)")
    p.set_defaults(func=_cmd_fit)

    p = sub.add_parser("fit-text", help="fit a text spec (RKMETextSpecification) to sentence embeddings (.npy)")
    p.add_argument("embeddings", help=".npy (n, d) sentence embeddings of the texts")
    p.add_argument("--out", required=True, help="output spec JSON")
    lang = p.add_mutually_exclusive_group()
    lang.add_argument("--language", default=None, help="comma-separated language codes, e.g. en,de")
    lang.add_argument("--texts", default=None, help="the texts (UTF-8, one per line, or a .json list of "
                      "strings), for language detection (langdetect, seeded)")
    p.add_argument("--K", type=int, default=100, help="reduced-set size (default 100)")
    p.add_argument("--gamma", type=float, default=0.1, help="Gaussian kernel parameter (default 0.1)")
    p.add_argument("--steps", type=int, default=3, help="Z steps (default 3)")
    p.add_argument("--step-size", type=float, default=0.1, help="Z step size (default 0.1)")
    p.add_argument("--seed", type=int, default=None, help="seed of the k-means init")
    p.add_argument("--init-z", default=None, help=".npy initial reduced set (skips k-means)")
    p.set_defaults(func=_cmd_fit_text)

    p = sub.add_parser("fit-image", help="fit an image spec (RKMEImageSpecification) to images (.npy, N x C x H x W); "
                       "needs torch (pip install 'lwengine[image]')")
    p.add_argument("data", help=".npy (N, C, H, W) images (resized to 32 x 32 unless --no-resize)")
    p.add_argument("--out", required=True, help="output spec JSON (the reference's format)")
    p.add_argument("--K", type=int, default=50, help="reduced-set size (default 50)")
    p.add_argument("--steps", type=int, default=100, help="the reference's steps (only the last one's beta survives; "
                   "default 100)")
    p.add_argument("--sample-size", type=int, default=5000, help="rows kept when N is larger (default 5000)")
    p.add_argument("--seed", type=int, default=None, help="seed of the subsampling (N > sample size)")
    p.add_argument("--no-resize", action="store_true", help="refuse images that are not 32 x 32")
    p.add_argument("--no-whitening", action="store_true", help="skip ZCA whitening")
    p.add_argument("--update", choices=["reference", "nngp-descent"], default="reference",
                   help="beta (and z) update (default: the reference's)")
    p.set_defaults(func=_cmd_fit_image)

    p = sub.add_parser("show", help="print a spec's type, K, shape, gamma, num_points and self-distance")
    p.add_argument("spec", help="spec JSON")
    p.set_defaults(func=_cmd_show)


def load_data(path: str) -> np.ndarray:
    """A data matrix from .npy or a numeric .csv (a first row that is not numeric is a header)."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"data file not found: {path}")
    ext = os.path.splitext(path)[1].lower()
    if ext == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as exc:
            raise ValueError(f"{path}: not a numeric .npy file: {exc}") from exc
        if not isinstance(arr, np.ndarray) or arr.dtype.kind not in "iuf":
            raise ValueError(f"{path}: expected a numeric array, got dtype {getattr(arr, 'dtype', None)}")
        return arr
    if ext in (".csv", ".txt"):
        return _read_csv(path)
    raise ValueError(f"{path}: unsupported data format {ext!r} (use .npy or .csv)")


def _read_csv(path: str) -> np.ndarray:
    with open(path, newline="", encoding="utf-8") as f:
        rows = [r for r in csv.reader(f) if r and any(cell.strip() for cell in r)]
    if rows and not _numeric_row(rows[0]):
        rows = rows[1:]  # header
    if not rows:
        raise ValueError(f"{path}: no data rows")
    width = len(rows[0])
    out = np.empty((len(rows), width), dtype=np.float64)
    for i, r in enumerate(rows):
        if len(r) != width:
            raise ValueError(f"{path}: row {i + 1} has {len(r)} columns, expected {width}")
        try:
            out[i] = [float(c) if c.strip() else np.nan for c in r]
        except ValueError as exc:
            raise ValueError(f"{path}: row {i + 1} is not numeric: {exc}") from exc
    return out


def _numeric_row(row) -> bool:
    try:
        [float(c) for c in row if c.strip()]
    except ValueError:
        return False
    return True


def _cmd_fit(args) -> int:
    X = load_data(args.data)
    init_z = None
    if args.init_z is not None:
        init_z = load_data(args.init_z)
    spec = RKMESpec.fit(X, K=args.K, gamma=args.gamma, step_size=args.step_size, steps=args.steps,
                        nonnegative_beta=not args.signed_beta, reduce=not args.no_reduce, seed=args.seed,
                        init_z=init_z, update=args.update, init=args.init, n_init=args.n_init)
    spec.save(args.out)
    info = spec.fit_info
    obj = f", objective {info.objective[-1]:.6g}" if info is not None and info.objective else ""
    print(f"wrote {args.out}: K={spec.K}, z_shape={spec.z_shape}, gamma={spec.gamma}, "
          f"num_points={spec.num_points}{obj}")
    return 0


def read_texts(path: str) -> list:
    """Texts from a .json list of strings or a UTF-8 file with one text per line."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--texts not found: {path}")
    with open(path, encoding="utf-8") as f:
        raw = f.read()
    if path.endswith(".json"):
        try:
            texts = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ValueError(f"{path}: invalid JSON: {exc}") from exc
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            raise ValueError(f"{path}: must hold a JSON list of strings")
        return texts
    return raw.splitlines()


def _cmd_fit_text(args) -> int:
    emb = load_data(args.embeddings)
    init_z = np.load(args.init_z) if args.init_z else None
    language = None
    if args.language is not None:
        language = [c.strip() for c in args.language.split(",") if c.strip()]
    texts = read_texts(args.texts) if args.texts else None
    spec = RKMETextSpec.fit(emb, language=language, texts=texts, K=args.K, gamma=args.gamma, step_size=args.step_size,
                            steps=args.steps, seed=args.seed, init_z=init_z)
    spec.save(args.out)
    print(f"wrote {args.out}: K={spec.K}, z_shape={spec.z_shape}, gamma={spec.gamma}, "
          f"num_points={spec.num_points}, language={spec.language}")
    return 0


def _cmd_fit_image(args) -> int:
    from ..specs.image import RKMEImageSpec

    X = load_data(args.data)
    if X.ndim != 4:
        raise ValueError(f"{args.data}: images must have shape (N, C, H, W), got {X.shape}")
    spec = RKMEImageSpec.fit(X, K=args.K, steps=args.steps, sample_size=args.sample_size, seed=args.seed,
                             resize=not args.no_resize, whitening=not args.no_whitening, update=args.update)
    spec.save(args.out)
    print(f"wrote {args.out}: K={spec.K}, z_shape={spec.z_shape}, net_depth={spec.net_depth}, "
          f"canonical={spec.canonical}")
    return 0


def _cmd_show(args) -> int:
    spec = load_spec(args.spec)
    finite = bool(np.isfinite(spec.z).all() and np.isfinite(spec.beta).all())
    print(f"file:        {args.spec}")
    print(f"type:        {spec.spec_type}")
    for key, value in spec.extra().items():
        print(f"{key + ':':<13}{value}")
    print(f"K:           {spec.K}")
    print(f"z_shape:     {spec.z_shape} (d={spec.dim})")
    if hasattr(spec, "gamma"):
        print(f"gamma:       {spec.gamma}")
    print(f"num_points:  {spec.num_points}")
    print(f"beta_sum:    {spec.beta.sum():.17g}")
    print(f"finite:      {finite}")
    print(f"self_inner:  {spec.inner_prod(spec):.17g}")
    print(f"self_dist:   {spec.dist(spec):.17g}")
    return 0


__all__ = ["register", "load_data", "read_texts"]
