"""HTTP service over a :class:`~lwengine.dock.Dock` (Starlette ASGI app, served by uvicorn).

Routes (JSON responses ``{"code": 0, "msg": "Ok", "data": ...}``; errors use code != 0 and an HTTP
status: 400 bad input, 401/403 auth, 404 unknown id, 413 too large, 423 dock locked)::

    GET    /health                       liveness + count + generation
    GET    /stats                        Dock.stats()
    POST   /search                       multipart: semantic_specification (JSON string, optional),
                                         statistical_specification (file, optional), limit, page,
                                         max_search_num, search_method, status
    GET    /learnwares?page&limit&status&name     listing
    GET    /learnwares/{id}              record
    GET    /learnwares/{id}/package      package zip
    POST   /learnwares                   multipart: learnware_file (zip), semantic_specification,
                                         learnware_id, status                      [token]
    PATCH  /learnwares/{id}              multipart: semantic_specification, statistical_specification,
                                         status                                    [token]
    DELETE /learnwares/{id}                                                        [token]

Beside them, :mod:`lwengine.dock.beimingwu` serves Beimingwu's API (``/auth``, ``/engine``, ``/user``
routes of ``learnware.client.LearnwareClient``) under ``api_prefix``.  Unknown routes, wrong methods
and crashes answer JSON too (404 / 405 / 500 with ``code`` = the status).

The search response follows the reference market server: ``data.learnware_list_single`` and
``data.learnware_list_multi`` items with ``learnware_id``, ``semantic_specification`` and ``matching``
(the score), plus ``total_pages`` / ``total`` for the paged single list.  Blocking dock calls run in
the thread pool, so searches are served while an upload is being stored.
"""
from __future__ import annotations

import hmac
import json
import logging
import math

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from ..package import PackageError, check_semantic
from ..safe_io import json_loads
from ..specs import registry
from .store import Dock, DockLockedError

__all__ = ["create_app", "serve"]

log = logging.getLogger(__name__)


class _HTTPError(Exception):
    def __init__(self, status: int, msg: str):
        super().__init__(msg)
        self.status, self.msg = status, msg


def _ok(data) -> JSONResponse:
    return JSONResponse({"code": 0, "msg": "Ok", "data": data})


def _int(form, name, default, lo, hi):
    raw = form.get(name)
    if raw is None or raw == "":
        return default
    try:
        v = int(raw)
    except (TypeError, ValueError):
        raise _HTTPError(400, f"{name} must be an integer, got {raw!r}") from None
    if not lo <= v <= hi:
        raise _HTTPError(400, f"{name} must be in [{lo}, {hi}], got {v}")
    return v


class _BodyLimit:
    """ASGI middleware: 413 once a request body exceeds ``limit`` bytes (declared or streamed)."""

    def __init__(self, app, limit: int):
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        for k, v in scope.get("headers", []):
            if k == b"content-length" and v.isdigit() and int(v) > self.limit:
                return await _too_large(self.limit)(scope, receive, send)
        seen = 0

        async def limited():
            nonlocal seen
            msg = await receive()
            if msg["type"] == "http.request":
                seen += len(msg.get("body", b""))
                if seen > self.limit:
                    raise _HTTPError(413, f"request body over the limit of {self.limit} bytes")
            return msg

        try:
            await self.app(scope, limited, send)
        except _HTTPError as exc:
            if exc.status != 413:
                raise
            await _too_large(self.limit)(scope, receive, send)


def _too_large(limit):
    return JSONResponse({"code": 413, "msg": f"request body over the limit of {limit} bytes", "data": None},
                        status_code=413)


def create_app(dock, *, token=None, protect_reads: bool = False, max_upload_bytes: int = 64 << 20,
               search_fn=None, api_prefix: str | None = "", allow_anonymous: bool = False, upload_status: int = 1,
               session_ttl: float = 86400.0, upload_dir=None):
    """The ASGI app over ``dock`` (a :class:`Dock` or a dock path).

    ``token``: the bearer token for writes (a string, or several in a list); they are also the
    client tokens of the Beimingwu API (:mod:`lwengine.dock.beimingwu`), mounted under
    ``api_prefix`` (``None``: not mounted) with ``allow_anonymous``, ``upload_status``,
    ``session_ttl`` and ``upload_dir`` (see :class:`~lwengine.dock.beimingwu.BeimingwuAPI`).
    ``search_fn``: replaces ``dock.search`` (same signature), e.g. the ``dock_search`` of a
    :class:`lwengine.distributed.ShardedIndex` built on the same dock (``serve --ray``)."""
    if not isinstance(dock, Dock):
        dock = Dock(dock)
    search_fn = dock.search if search_fn is None else search_fn
    tokens = [token] if isinstance(token, str) else [t for t in (token or ()) if t]

    def authorize(request: Request, write: bool):
        if not write and not protect_reads:
            return
        if not tokens:
            raise _HTTPError(403, "writes are disabled: start the server with --token" if write else
                             "reads are protected but no token is configured")
        auth = request.headers.get("authorization", "")
        if not auth.startswith("Bearer ") or not any([hmac.compare_digest(auth[7:].encode(), t.encode())
                                                      for t in tokens]):
            raise _HTTPError(401, "missing or wrong bearer token")

    def endpoint(write=False):
        def wrap(fn):
            async def handler(request: Request):
                try:
                    authorize(request, write)
                    return await fn(request)
                except _HTTPError as exc:
                    return JSONResponse({"code": exc.status, "msg": exc.msg}, status_code=exc.status)
                except KeyError as exc:
                    return JSONResponse({"code": 404, "msg": str(exc.args[0] if exc.args else exc)}, status_code=404)
                except DockLockedError as exc:
                    return JSONResponse({"code": 423, "msg": str(exc)}, status_code=423)
                except (PackageError, ValueError, TypeError) as exc:
                    return JSONResponse({"code": 400, "msg": str(exc)}, status_code=400)
            return handler
        return wrap

    async def form_of(request: Request):
        ctype = request.headers.get("content-type", "")
        if ctype.startswith("multipart/form-data") or ctype.startswith("application/x-www-form-urlencoded"):
            return await request.form(max_files=4, max_fields=32, max_part_size=max_upload_bytes)
        if ctype.startswith("application/json"):
            try:
                body = json_loads(await request.body(), "JSON body")
            except ValueError as exc:
                raise _HTTPError(400, str(exc)) from None
            if not isinstance(body, dict):
                raise _HTTPError(400, "the JSON body must be an object")
            return {k: (json.dumps(v) if isinstance(v, (dict, list)) else v) for k, v in body.items()}
        return {}

    def semantic_field(form, name="semantic_specification"):
        raw = form.get(name)
        if raw is None or raw == "":
            return None
        if not isinstance(raw, str):
            raise _HTTPError(400, f"{name} must be a JSON string form field")
        return check_semantic(json_loads(raw, name), name)  # bad or too deep JSON: ValueError -> 400

    async def file_field(form, name):
        f = form.get(name)
        if f is None or isinstance(f, str):
            return None
        blob = await f.read()
        return blob or None  # an empty upload means "not given"

    def spec_from_bytes(blob):
        try:
            return registry.loads_spec(blob.decode("utf-8"), "statistical_specification")
        except UnicodeDecodeError as exc:
            raise _HTTPError(400, f"statistical_specification is not UTF-8 JSON: {exc}") from exc

    @endpoint()
    async def health(request):
        n, gen = await run_in_threadpool(lambda: (len(dock), dock.generation))
        return _ok({"status": "ok", "learnwares": n, "generation": gen})

    @endpoint()
    async def stats(request):
        return _ok(await run_in_threadpool(dock.stats))

    @endpoint()
    async def search(request):
        form = await form_of(request)
        sem = semantic_field(form)
        blob = await file_field(form, "statistical_specification")
        user = None if blob is None else spec_from_bytes(blob)
        if user is None and sem is None:
            raise _HTTPError(400, "give a semantic_specification and/or a statistical_specification")
        if user is not None:
            dock.check_spec(user, "statistical_specification")  # caps + gamma policy before any kernel
        limit = _int(form, "limit", 10, 1, 1000)
        page = _int(form, "page", 0, 0, 10**9)
        msn = _int(form, "max_search_num", 5, 1, 100)
        method = form.get("search_method") or "greedy"
        raw_status = form.get("status")
        status = 1 if raw_status in (None, "") else None if raw_status == "all" else _int(form, "status", 1, -1, 1)
        result = await run_in_threadpool(search_fn, user, msn, method, sem, status=status)
        ids = [s.id for s in result.single]
        total = len(ids)
        page_ids = ids[page * limit:(page + 1) * limit]
        mix = [] if result.mixture is None else list(result.mixture.ids)
        sems = await run_in_threadpool(lambda: {i: dock.get(i).semantic for i in set(page_ids) | set(mix)})
        single = [{"learnware_id": s.id, "semantic_specification": sems[s.id], "matching": s.score}
                  for s in result.single[page * limit:(page + 1) * limit]]
        multi = [] if result.mixture is None else [
            {"learnware_id": i, "semantic_specification": sems[i], "matching": result.mixture.score,
             "weight": w} for i, w in zip(result.mixture.ids, result.mixture.weights)]
        return _ok({"learnware_list_single": single, "learnware_list_multi": multi,
                    "total_pages": max(1, math.ceil(total / limit)), "total": total, "page": page, "limit": limit,
                    "result": result.to_dict() if page == 0 else None})

    @endpoint()
    async def list_learnwares(request):
        q = request.query_params
        status = None if q.get("status") in (None, "", "all") else _int(q, "status", 1, -1, 1)
        recs, total = await run_in_threadpool(dock.list, status=status, name=q.get("name"),
                                              page=_int(q, "page", 0, 0, 10**9), limit=_int(q, "limit", 50, 1, 10000))
        return _ok({"total": total, "learnwares": [r.to_dict() for r in recs]})

    @endpoint()
    async def get_learnware(request):
        return _ok((await run_in_threadpool(dock.get, request.path_params["id"])).to_dict())

    @endpoint()
    async def get_package(request):
        blob = await run_in_threadpool(dock.package_bytes, request.path_params["id"])
        return Response(blob, media_type="application/zip",
                        headers={"content-disposition": f'attachment; filename="{request.path_params["id"]}.zip"'})

    @endpoint(write=True)
    async def add_learnware(request):
        form = await form_of(request)
        blob = await file_field(form, "learnware_file")
        if blob is None:
            raise _HTTPError(400, "learnware_file (a package zip) is required")
        sem = semantic_field(form)
        lid = form.get("learnware_id") or None
        status = _int(form, "status", 1, -1, 1)
        new_id = await run_in_threadpool(lambda: dock.add_package(None, data=blob, id=lid, semantic=sem,
                                                                  status=status))
        return _ok({"learnware_id": new_id})

    @endpoint(write=True)
    async def update_learnware(request):
        form = await form_of(request)
        kw = {}
        if form.get("semantic_specification"):
            kw["semantic"] = semantic_field(form)
        blob = await file_field(form, "statistical_specification")
        if blob is not None:
            kw["spec"] = spec_from_bytes(blob)
        if form.get("status") not in (None, ""):
            kw["status"] = _int(form, "status", 1, -1, 1)
        if not kw:
            raise _HTTPError(400, "nothing to update: semantic_specification, statistical_specification or status")
        await run_in_threadpool(lambda: dock.update(request.path_params["id"], **kw))
        return _ok({"learnware_id": request.path_params["id"], "updated": sorted(kw)})

    @endpoint(write=True)
    async def delete_learnware(request):
        await run_in_threadpool(dock.remove, request.path_params["id"])
        return _ok({"learnware_id": request.path_params["id"]})

    routes = [
        Route("/health", health, methods=["GET"]),
        Route("/stats", stats, methods=["GET"]),
        Route("/search", search, methods=["POST"]),
        Route("/learnwares", list_learnwares, methods=["GET"]),
        Route("/learnwares", add_learnware, methods=["POST"]),
        Route("/learnwares/{id}", get_learnware, methods=["GET"]),
        Route("/learnwares/{id}", update_learnware, methods=["PATCH"]),
        Route("/learnwares/{id}", delete_learnware, methods=["DELETE"]),
        Route("/learnwares/{id}/package", get_package, methods=["GET"]),
    ]
    if api_prefix is not None:
        from .beimingwu import BeimingwuAPI

        api = BeimingwuAPI(dock, search_fn=search_fn, tokens=tokens,
                           allow_anonymous=allow_anonymous and not protect_reads, upload_status=upload_status,
                           session_ttl=session_ttl, upload_dir=upload_dir, max_upload_bytes=max_upload_bytes)
        routes = api.routes(api_prefix) + routes
    app = Starlette(routes=routes, exception_handlers={HTTPException: _json_http_error, Exception: _json_crash})
    app.state.dock = dock
    return _BodyLimit(app, max_upload_bytes)


async def _json_http_error(request, exc):
    """Starlette's own errors (unknown route 404, wrong method 405, unreadable form 400) as JSON."""
    msg = {404: f"no route {request.url.path}", 405: f"method {request.method} not allowed on {request.url.path}"}
    return JSONResponse({"code": exc.status_code, "msg": msg.get(exc.status_code, str(exc.detail)), "data": None},
                        status_code=exc.status_code, headers=getattr(exc, "headers", None))


async def _json_crash(request, exc):
    log.error("unhandled error on %s %s", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"code": 500, "msg": f"internal error: {type(exc).__name__}", "data": None}, status_code=500)


def serve(dock_path, *, host: str = "127.0.0.1", port: int = 8765, token=None,
          protect_reads: bool = False, max_upload_bytes: int = 64 << 20, log_level: str = "warning",
          ray_address: str | None = None, shards: int = 4, shard_options: dict | None = None,
          dock_options: dict | None = None, **api_options) -> None:
    """Run the service with uvicorn until interrupted.  ``ray_address``: search through a
    :class:`~lwengine.distributed.ShardedIndex` of ``shards`` Ray actors on that cluster (``"local"``
    starts one here); writes still go to the dock, which the shards follow.  ``api_options``: the
    Beimingwu API options of :func:`create_app` (api_prefix, allow_anonymous, upload_status, ...)."""
    import uvicorn

    sharded = None
    if ray_address is not None:
        from ..distributed import ShardedIndex

        sharded = ShardedIndex.from_dock(dock_path, shards, None if ray_address == "local" else ray_address,
                                         actor_options=shard_options)
    app = create_app(Dock(dock_path, **(dock_options or {})), token=token, protect_reads=protect_reads,
                     max_upload_bytes=max_upload_bytes,
                     search_fn=None if sharded is None else sharded.dock_search, **api_options)
    if token is None:
        log.warning("no --token given: the service is read-only")
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
    finally:
        if sharded is not None:
            sharded.close()
