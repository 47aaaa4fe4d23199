"""Loading a folder of spec JSON files into a ``SpecIndex`` (the path of ``lwengine search --specs
DIR``, ``index build``, ``dock add``), against the reference and the previous implementation.

    python benchmarks/bench_load.py [--smoke] [--n 10000] [--repeats 3] [--dir DIR] [--json OUT]

Files: ``n`` specs written by ``RKMESpec.save`` (K = 100, d = 20: 42 KB each, the reference's
one-line JSON).  Columns (median seconds, repeats interleaved in one run):

- ``reference``: ``RKMETableSpecification().load(path)`` per file (learnware 0.4.0.post1, the
  reference market's loader: ``json.loads``, ``np.array``, ``torch.from_numpy``), when importable;
  otherwise printed as "not measured".
- ``previous``: lwengine before the fast path: ``RKMESpec.load`` per file (stdlib json) and one
  ``add_many`` (the same batched insert).
- ``lwengine``: ``SpecIndex.from_folder`` (orjson fast path, worker interpreters by
  ``lwengine.spec_loading.parallel_workers()``); ``lwengine_1p``: the same forced in-process
  (``LWE_LOAD_WORKERS=1``).

Every run checks that the indexes are identical (z, beta, self inner products, digests bit for bit).
"""
from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine_info, parser, write_json  # noqa: E402

from lwengine import RKMESpec, SpecIndex  # noqa: E402
from lwengine import spec_loading  # noqa: E402


def write_folder(folder, n, K=100, d=20, seed=0):
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    have = {f for f in os.listdir(folder) if f.endswith(".json")}
    for i in range(n):
        name = f"spec{i:06d}.json"
        if name in have:
            continue
        z = rng.normal(size=(K, d))
        b = rng.random(K)
        RKMESpec(z, b / b.sum(), 0.1, 1000 + i).save(os.path.join(folder, name))
    return sorted(os.path.join(folder, f"spec{i:06d}.json") for i in range(n))


def load_previous(paths):
    idx = SpecIndex()
    idx.add_many([(os.path.basename(p)[:-5], RKMESpec.load(p)) for p in paths])
    return idx


def load_reference(paths):
    from learnware.specification import RKMETableSpecification

    out = []
    for p in paths:
        s = RKMETableSpecification()
        s.load(p)
        out.append(s)
    return out


def same_index(a: SpecIndex, b: SpecIndex) -> bool:
    if a.ids() != b.ids():
        return False
    for ga, gb in zip(a._groups.values(), b._groups.values()):
        for name, n in (("z", ga.rows), ("beta", ga.rows), ("self_ip", ga.n), ("num_points", ga.n),
                        ("digest", ga.n), ("offsets", ga.n + 1)):
            if getattr(ga, name)[:n].tobytes() != getattr(gb, name)[:n].tobytes():
                return False
    return True


def main(argv=None) -> None:
    ap = parser(__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10000, help="spec files")
    ap.add_argument("--dir", help="folder of the generated files (kept; default: a temporary folder)")
    ap.set_defaults(repeats=3)
    args = ap.parse_args(argv)
    n = 300 if args.smoke else args.n
    repeats = 1 if args.smoke else args.repeats
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__))))
    import _learnware_ref as lref

    tmp = None
    folder = args.dir
    if folder is None:
        tmp = tempfile.TemporaryDirectory(prefix="lwe_bench_load_")
        folder = tmp.name
    paths = write_folder(folder, n)
    size_kb = os.path.getsize(paths[0]) / 1024
    has_ref = lref.available()
    print(f"{n} spec files of {size_kb:.0f} KB (K = 100, d = 20) in {folder}; "
          f"workers {spec_loading.parallel_workers()} (load average {os.getloadavg()[0]:.1f}, "
          f"{len(os.sched_getaffinity(0))} CPUs); reference: "
          f"{lref.version() + ' (single-threaded)' if has_ref else 'not measured (' + lref.why_unavailable() + ')'}")
    for p in paths:  # page cache warm for every column alike
        with open(p, "rb") as f:
            f.read()

    def forced_1p():
        old = os.environ.get("LWE_LOAD_WORKERS")
        os.environ["LWE_LOAD_WORKERS"] = "1"
        try:
            return SpecIndex.from_folder(folder)[0]
        finally:
            if old is None:
                del os.environ["LWE_LOAD_WORKERS"]
            else:
                os.environ["LWE_LOAD_WORKERS"] = old

    cols = {"previous": lambda: load_previous(paths), "lwengine": lambda: SpecIndex.from_folder(folder)[0],
            "lwengine_1p": forced_1p}
    if has_ref:
        def ref():
            with lref._reference_threads():
                return load_reference(paths)
        cols = {"reference": ref, **cols}
    times = {k: [] for k in cols}
    results = {}
    for _ in range(repeats):
        for k, fn in cols.items():
            t0 = time.perf_counter()
            results[k] = fn()
            times[k].append(time.perf_counter() - t0)
    med = {k: statistics.median(v) for k, v in times.items()}
    identical = same_index(results["previous"], results["lwengine"]) and \
        same_index(results["previous"], results["lwengine_1p"])
    if has_ref:  # the reference's arrays hold the same values
        r0, l0 = results["reference"][0], results["lwengine"].get(os.path.basename(paths[0])[:-5])
        identical = identical and np.array_equal(r0.z.numpy(), l0.z) and np.array_equal(r0.beta.numpy(), l0.beta)
    row = {"n": n, "file_kb": round(size_kb, 1), "repeats": repeats, "identical": identical,
           **{f"{k}_s": round(v, 4) for k, v in med.items()}}
    for k in ("reference", "previous"):
        if k in med:
            row[f"vs_{k}"] = round(med[k] / med["lwengine"], 2)
            row[f"vs_{k}_1p"] = round(med[k] / med["lwengine_1p"], 2)
    line = " | ".join(f"{k} {v:.3f} s" for k, v in med.items())
    print(line if has_ref else "reference: not measured | " + line)
    print("ratios: " + ", ".join(f"{k} {v}x" for k, v in row.items() if k.startswith("vs_")) +
          f" | identical indexes: {identical}")
    write_json(args.json, {"machine": machine_info(), "rows": [row]})
    if tmp is not None:
        tmp.cleanup()
    if not identical:
        raise SystemExit("indexes differ")


if __name__ == "__main__":
    main()
