"""``lwengine search`` and ``lwengine index build`` (registered by :mod:`lwengine.cli`)."""
from __future__ import annotations

import json
import os
import sys

__all__ = ["register", "open_specs"]


def register(subparsers) -> None:
    p = subparsers.add_parser("search", help="search a folder of specs (or a saved index) for a user spec")
    p.add_argument("--specs", required=True, help="folder of spec JSON files / learnware packages, or an index file")
    p.add_argument("--user", required=True, help="the user's spec JSON file")
    p.add_argument("--max-search-num", type=int, default=5)
    p.add_argument("--method", choices=["greedy", "auto"], default="greedy")
    p.add_argument("--semantic", help="optional user semantic spec JSON file (filters first)")
    p.add_argument("--json", action="store_true", help="print exactly the result's to_dict() as JSON")
    p.set_defaults(func=_cmd_search)

    ip = subparsers.add_parser("index", help="build a binary spec index")
    isub = ip.add_subparsers(dest="index_command", required=True)
    b = isub.add_parser("build", help="pack a folder of specs into one index file")
    b.add_argument("folder")
    b.add_argument("--out", required=True)
    b.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    b.set_defaults(func=_cmd_index_build)


def open_specs(path):
    """A :class:`SpecIndex` from a saved index file or a folder (folder failures go to stderr)."""
    from ..index import SpecIndex

    path = os.fspath(path)
    if os.path.isdir(path):
        index, report = SpecIndex.from_folder(path)
        for p, msg in report.failed:
            print(f"lwengine: skipped {p}: {msg}", file=sys.stderr)
        return index
    if not os.path.exists(path):
        raise FileNotFoundError(f"--specs not found: {path}")
    return SpecIndex.load(path)


def _cmd_search(args) -> int:
    from ..limits import check_spec_cost, check_spec_file_size
    from ..package import read_semantic
    from ..specs import load_spec

    check_spec_file_size(args.user)
    user = load_spec(args.user)
    check_spec_cost(user, what=args.user)  # before any kernel runs
    semantic = read_semantic(args.semantic) if args.semantic else None
    index = open_specs(args.specs)
    result = index.search(user, max_search_num=args.max_search_num, method=args.method, semantic=semantic)
    if args.json:
        json.dump(result.to_dict(), sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(f"{len(result.single)} single result(s) from {len(index)} specs")
    print_result(result)
    return 0


def print_result(result) -> None:
    """The singles (id, dist, score) and the mixture (ids, weights, MMD^2, score) as a table."""
    print(f"{'id':<24} {'dist':>14} {'score':>10}")
    for s in result.single:
        print(f"{s.id:<24} {s.dist:>14.8g} {s.score:>10.6f}")
    if result.mixture is None:
        print("mixture: none")
    else:
        m = result.mixture
        weights = ", ".join(f"{w:.6f}" for w in m.weights)
        print(f"mixture: ids [{', '.join(m.ids)}]  weights [{weights}]  MMD^2 {m.mmd2:.8g}  score {m.score:.6f}")


def _cmd_index_build(args) -> int:
    from ..index import SpecIndex

    index, report = SpecIndex.from_folder(args.folder, dtype=args.dtype)
    for p, msg in report.failed:
        print(f"lwengine: skipped {p}: {msg}", file=sys.stderr)
    index.save(args.out)
    print(f"wrote {args.out}: {len(index)} specs ({len(report.failed)} skipped)")
    return 0
