"""``lwengine dock ...`` commands (registered by :mod:`lwengine.cli`)."""
from __future__ import annotations

import json
import os
import sys

__all__ = ["register"]


def register(subparsers) -> None:
    dp = subparsers.add_parser("dock", help="a persistent learnware store (init, add, search, serve, ...)")
    sub = dp.add_subparsers(dest="dock_command", required=True)

    def cmd(name, func, help, with_id=False):
        p = sub.add_parser(name, help=help)
        p.add_argument("dock", help="the dock directory")
        if with_id:
            p.add_argument("id", help="learnware id")
        p.add_argument("--lock-timeout", type=float, default=10.0, help="seconds to wait for another writer")
        add_limit_options(p)
        p.set_defaults(func=_guarded(func))
        return p

    cmd("init", _init, "create a dock directory")
    p = cmd("add", _add, "add learnware packages (zips / folders) or spec JSON files")
    p.add_argument("paths", nargs="+")
    p.add_argument("--semantic", help="semantic specification JSON applied to every added learnware")
    p.add_argument("--status", type=int, choices=[-1, 0, 1], default=1)
    p.add_argument("--id", help="id for a single added path (default: the next 8-digit counter)")
    p.add_argument("--progress", action=argparse_bool(), default=None, help="force the progress bar on/off")
    cmd("remove", _remove, "remove a learnware", with_id=True)
    p = cmd("update", _update, "change a learnware's semantic spec, spec or status", with_id=True)
    p.add_argument("--semantic")
    p.add_argument("--spec")
    p.add_argument("--status", type=int, choices=[-1, 0, 1])
    p = cmd("list", _list, "list learnwares")
    p.add_argument("--json", action="store_true")
    p.add_argument("--page", type=int, default=0)
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--status", type=int, choices=[-1, 0, 1])
    p.add_argument("--name", help="case-insensitive substring of the semantic Name")
    cmd("show", _show, "print one learnware's record as JSON", with_id=True)
    p = cmd("search", _search, "search the dock (same JSON document as `lwengine search --json`)")
    p.add_argument("--user", help="the user's spec JSON file (optional with --semantic)")
    p.add_argument("--semantic", help="user semantic specification JSON file (filters first)")
    p.add_argument("--max-search-num", type=int, default=5)
    p.add_argument("--method", choices=["greedy", "auto"], default="greedy")
    p.add_argument("--status", default="1", help="search learnwares with this check status (-1, 0, 1) or 'all'")
    p.add_argument("--json", action="store_true")
    cmd("stats", _stats, "print dock statistics as JSON")
    p = cmd("export", _export, "write a learnware package zip", with_id=True)
    p.add_argument("--out", required=True)
    cmd("check", _check, "verify every record's bytes and checksum (exit 1 on problems)")
    cmd("compact", _compact, "rewrite live spec records, dropping garbage")
    cmd("checkpoint", _checkpoint, "write an index snapshot for fast reopening")
    p = cmd("serve", _serve, "serve the dock over HTTP (needs the 'dock' extra)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--token", default=os.environ.get("LWENGINE_DOCK_TOKEN"),
                   help="bearer token for writes (default: $LWENGINE_DOCK_TOKEN; none: writes are refused)")
    p.add_argument("--protect-reads", action="store_true", help="require the token for reads too")
    p.add_argument("--max-upload-mb", type=float, default=64.0)
    p.add_argument("--ray", metavar="ADDRESS", default=None,
                   help="search through a sharded index on this Ray cluster ('local': start one here; "
                        "needs the 'distributed' extra)")
    p.add_argument("--shards", type=int, default=4, help="number of shard actors with --ray")
    p.add_argument("--shard-cpus", type=float, default=None,
                   help="CPUs reserved per shard actor with --ray (default: min(1, cluster CPUs / shards))")
    p.add_argument("--api-prefix", default="", help="path prefix of the Beimingwu API for learnware.client "
                   "(e.g. /api; default: at the root; 'off': not served)")
    p.add_argument("--allow-anonymous", action="store_true",
                   help="Beimingwu API: search, info and download of usable learnwares without a login")
    p.add_argument("--upload-status", type=int, choices=[0, 1], default=1,
                   help="check status of learnwares uploaded through the Beimingwu API (1 usable, 0 waiting)")
    p.add_argument("--session-hours", type=float, default=24.0, help="lifetime of a Beimingwu API login")


def _guarded(func):
    """Dock errors the top-level CLI does not catch -> a one-line message and exit code 2."""
    def run(args):
        from ..dock.store import DockError

        try:
            return func(args)
        except KeyError as exc:
            print(f"lwengine: error: {exc.args[0] if exc.args else exc}", file=sys.stderr)
            return 2
        except BrokenPipeError:
            raise  # `lwengine dock list ... | head`: a quiet exit (lwengine.cli_errors)
        except (DockError, OSError) as exc:
            print(f"lwengine: error: {exc}", file=sys.stderr)
            return 2
    return run


def argparse_bool():
    import argparse

    return argparse.BooleanOptionalAction


def add_limit_options(p) -> None:
    """``--allowed-gamma``, ``--max-k``, ``--max-kd`` (see docs/security.md)."""
    from ..limits import DEFAULT_SPEC_LIMITS as d

    p.add_argument("--allowed-gamma", default="0.1", help="gamma values accepted for added and user specs "
                   "(comma-separated, or 'any'; default 0.1, the reference's)")
    p.add_argument("--max-k", type=int, default=d.max_K, help=f"largest K of a spec (default {d.max_K})")
    p.add_argument("--max-kd", type=int, default=d.max_Kd, help=f"largest K·d of a spec (default {d.max_Kd})")


def limit_kwargs(args) -> dict:
    from ..limits import GammaPolicy, SpecLimits

    return {"gamma_policy": GammaPolicy.parse(args.allowed_gamma),
            "spec_limits": SpecLimits(max_K=args.max_k, max_Kd=args.max_kd)}


def _open(args, create=False):
    from ..dock.store import Dock

    return Dock(args.dock, create=create, lock_timeout=args.lock_timeout, **limit_kwargs(args))


def _read_json(path, what):
    from ..package import read_semantic

    return read_semantic(path) if what == "semantic" else json.load(open(path, encoding="utf-8"))


def _init(args) -> int:
    with _open(args, create=True) as d:
        print(f"dock ready at {d.path} ({len(d)} learnwares)")
    return 0


def _add(args) -> int:
    sem = _read_json(args.semantic, "semantic") if args.semantic else None
    with _open(args) as d:
        if args.id is not None:
            if len(args.paths) != 1:
                raise ValueError("--id needs exactly one path")
            p = args.paths[0]
            if p.endswith(".json") and os.path.isfile(p):
                ids = [d.add_spec(p, sem, id=args.id, status=args.status)]
            else:
                ids = [d.add_package(p, id=args.id, semantic=sem, status=args.status)]
            failed = []
        else:
            report = d.add_paths(args.paths, semantic=sem, status=args.status, progress=args.progress)
            ids, failed = report.added, report.failed
        for p, msg in failed:
            print(f"lwengine: failed {p}: {msg}", file=sys.stderr)
        d.checkpoint(if_stale=True)
        print(f"added {len(ids)} learnware(s), {len(failed)} failed" + (f": {ids[0]} .. {ids[-1]}" if ids else ""))
    return 1 if failed else 0


def _remove(args) -> int:
    with _open(args) as d:
        d.remove(args.id)
    print(f"removed {args.id}")
    return 0


def _update(args) -> int:
    kw = {}
    if args.semantic:
        kw["semantic"] = _read_json(args.semantic, "semantic")
    if args.spec:
        kw["spec"] = args.spec
    if args.status is not None:
        kw["status"] = args.status
    if not kw:
        raise ValueError("nothing to update: give --semantic, --spec and/or --status")
    with _open(args) as d:
        d.update(args.id, **kw)
    print(f"updated {args.id}: {', '.join(kw)}")
    return 0


def _list(args) -> int:
    with _open(args) as d:
        recs, total = d.list(status=args.status, name=args.name, page=args.page, limit=args.limit)
    if args.json:
        json.dump({"total": total, "page": args.page, "limit": args.limit,
                   "learnwares": [r.to_dict() for r in recs]}, sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(f"{total} learnware(s); page {args.page} (limit {args.limit})")
    print(f"{'id':<16} {'status':>6} {'K':>5} {'shape':<12} name")
    for r in recs:
        name = ((r.semantic or {}).get("Name") or {}).get("Values", "") if isinstance(r.semantic, dict) else ""
        print(f"{r.id:<16} {r.status:>6} {r.K:>5} {str(list(r.shape)):<12} {name}")
    return 0


def _show(args) -> int:
    with _open(args) as d:
        json.dump(d.get(args.id).to_dict(), sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


def _search(args) -> int:
    from ..package import read_spec_file

    if not args.user and not args.semantic:
        raise ValueError("give --user and/or --semantic")
    user = read_spec_file(args.user) if args.user else None
    sem = _read_json(args.semantic, "semantic") if args.semantic else None
    status = None if args.status == "all" else int(args.status)
    with _open(args) as d:
        result = d.search(user, max_search_num=args.max_search_num, method=args.method, semantic=sem, status=status)
        n = len(d)
    if args.json:
        json.dump(result.to_dict(), sys.stdout)
        sys.stdout.write("\n")
        return 0
    print(f"{len(result.single)} single result(s) from {n} learnwares")
    for s in result.single:
        dist = "-" if s.dist is None else f"{s.dist:.8g}"
        score = "-" if s.score is None else f"{s.score:.6f}"
        print(f"{s.id:<24} {dist:>14} {score:>10}")
    if result.mixture is None:
        print("mixture: none")
    else:
        m = result.mixture
        print(f"mixture: ids [{', '.join(m.ids)}] weights [{', '.join(f'{w:.6f}' for w in m.weights)}] "
              f"MMD^2 {m.mmd2:.8g} score {m.score:.6f}")
    return 0


def _stats(args) -> int:
    with _open(args) as d:
        json.dump(d.stats(), sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


def _export(args) -> int:
    with _open(args) as d:
        out = d.export(args.id, args.out)
    print(f"wrote {out}")
    return 0


def _check(args) -> int:
    with _open(args) as d:
        problems = d.verify()
    for id, msg in problems:
        print(f"{id}: {msg}", file=sys.stderr)
    print(f"{len(problems)} problem(s)")
    return 1 if problems else 0


def _compact(args) -> int:
    with _open(args) as d:
        r = d.compact()
    print(f"segments: {r['before']} -> {r['after']} bytes")
    return 0


def _checkpoint(args) -> int:
    with _open(args) as d:
        wrote = d.checkpoint()
    print("snapshot written" if wrote else "snapshot already current")
    return 0


def _serve(args) -> int:
    try:
        from ..dock.server import serve
    except ImportError as exc:
        raise RuntimeError(f"`lwengine dock serve` needs the optional extra: pip install 'lwengine[dock]' ({exc})") \
            from exc
    if args.ray is not None and args.shards < 1:
        raise ValueError(f"--shards must be >= 1, got {args.shards}")
    serve(args.dock, host=args.host, port=args.port, token=args.token, protect_reads=args.protect_reads,
          max_upload_bytes=int(args.max_upload_mb * (1 << 20)), ray_address=args.ray, shards=args.shards,
          shard_options=None if args.shard_cpus is None else {"num_cpus": args.shard_cpus},
          dock_options=limit_kwargs(args),
          api_prefix=None if args.api_prefix == "off" else args.api_prefix, allow_anonymous=args.allow_anonymous,
          upload_status=args.upload_status, session_ttl=args.session_hours * 3600)
    return 0
