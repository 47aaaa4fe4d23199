"""MMD^2 to the data: the reference's final spec vs lwengine's two Z updates, from the same Z0.

    python benchmarks/compare_fit_variants.py [--fixtures DIR] [--json out.json]

For every generate/ fixture with a recorded Z0 (and nonnegative beta), fit with ``init_z=z0`` and the
case's parameters using ``update="reference"`` and ``update="mmd-descent"`` (equal K, equal steps),
and print MMD^2 = objective + mean k(X, X) (the data term is the fixture's) next to the reference's.
"""
from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

import lwengine

DEFAULT = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures" / "learnware-0.4.0.post1"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--fixtures", default=os.fspath(DEFAULT))
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    gen = Path(args.fixtures) / "generate"
    rows = []
    for case in json.loads((gen / "manifest.json").read_text())["cases"]:
        d = gen / case["path"]
        m = json.loads((d / "manifest.json").read_text())
        prm, e = m["inputs"]["params"], m["expected"]
        if e.get("error") or not (d / "z0.npy").is_file():
            continue
        X, z0 = np.load(d / "X.npy"), np.load(d / "z0.npy")
        kw = dict(gamma=prm["gamma"], step_size=prm["step_size"], steps=prm["steps"],
                  nonnegative_beta=prm["nonnegative_beta"], init_z=z0)
        mkxx = e["mmd2_to_data"]["mean_k_xx"]
        row = {"case": case["path"], "K": int(len(z0)), "steps": prm["steps"], "reference": e["mmd2_to_data"]["mmd2"]}
        row["ours_reference"] = lwengine.RKMESpec.fit(X, **kw).objective(X) + mkxx
        if prm["nonnegative_beta"]:
            row["ours_mmd_descent"] = lwengine.RKMESpec.fit(X, **kw, update="mmd-descent").objective(X) + mkxx
        rows.append(row)
    cols = ["case", "K", "steps", "reference", "ours_reference", "ours_mmd_descent"]
    print("| " + " | ".join(cols) + " |")
    print("|" + "---|" * len(cols))
    for r in rows:
        print("| " + " | ".join(f"{r[c]:.4e}" if isinstance(r.get(c), float) else str(r.get(c, "n/a"))
                                for c in cols) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
