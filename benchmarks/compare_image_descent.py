"""MMD^2 to the data under the search kernel (float64 NNGP, depth 3): the reference's spec vs
update="nngp-descent" at equal K, on every generate fixture and on sklearn's 8x8 digits (32x32).

    python benchmarks/compare_image_descent.py [--steps 10] [--digits-n 300] [--digits-k 20] [--json PATH]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

FIX = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "learnware-0.4.0.post1-image" / "generate"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--digits-n", type=int, default=300)
    p.add_argument("--digits-k", type=int, default=20)
    p.add_argument("--json")
    p.add_argument("--skip-fixtures", action="store_true")
    p.add_argument("--digits-steps", type=int, default=100, help="steps of the reference fit for digits")
    a = p.parse_args()
    from lwengine.specs.image import RKMEImageSpec
    from lwengine.specs.image.descent import nngp_descent
    from lwengine.specs.image.generate import preprocess

    rows = []
    cases = [] if a.skip_fixtures else sorted(d.name for d in FIX.iterdir() if d.is_dir())
    for name in cases:
        m = json.loads((FIX / name / "manifest.json").read_text())
        kw = m["call"]["kwargs"]
        ref = RKMEImageSpec.load(FIX / name / "spec.json.gz")
        if (FIX / name / "X_train.npy").exists():
            xt = np.load(FIX / name / "X_train.npy")
        else:
            xt = preprocess(np.load(FIX / name / "X.npy"), resize=kw.get("resize", True),
                            whitening=kw.get("whitening", True)).numpy()
            if m.get("sample_indices"):
                xt = xt[np.asarray(m["sample_indices"])]
        t0 = time.perf_counter()
        out = nngp_descent(ref, xt, steps=a.steps)
        h = out.descent_info["history"]
        rows.append({"case": name, "K": ref.K, "n": len(xt), "mmd2_reference": h[0], "mmd2_descent": h[-1],
                     "ratio": h[-1] / h[0], "accepted_steps": len(h) - 1,
                     "monotone": all(x > y for x, y in zip(h, h[1:])), "seconds": time.perf_counter() - t0})
        print(rows[-1], flush=True)
    try:
        from sklearn.datasets import load_digits
    except ModuleNotFoundError:
        print("scikit-learn missing: digits skipped")
    else:
        import torch

        d = load_digits().images.astype(np.float32)[:, None]  # (1797, 1, 8, 8), 0..16
        rng = np.random.default_rng(0)
        idx = rng.choice(len(d), a.digits_n, replace=False)
        X = torch.nn.functional.interpolate(torch.from_numpy(d[idx]), size=[32, 32], mode="bilinear",
                                            align_corners=False).numpy()
        t0 = time.perf_counter()
        ref = RKMEImageSpec.fit(X, K=a.digits_k, steps=a.digits_steps, device="cpu", update="reference")
        t_fit = time.perf_counter() - t0
        xt = preprocess(X).numpy()
        t0 = time.perf_counter()
        out = nngp_descent(ref, xt, steps=a.steps)
        h = out.descent_info["history"]
        rows.append({"case": f"sklearn digits 8x8->32x32 (n={a.digits_n}, fit steps={a.digits_steps})", "K": ref.K, "n": len(xt),
                     "mmd2_reference": h[0], "mmd2_descent": h[-1], "ratio": h[-1] / h[0],
                     "accepted_steps": len(h) - 1, "monotone": all(x > y for x, y in zip(h, h[1:])),
                     "seconds": time.perf_counter() - t0, "fit_seconds": t_fit})
        print(rows[-1], flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
