"""Beimingwu's REST API on the dock service: the routes ``learnware.client.LearnwareClient`` calls.

Mounted by :func:`lwengine.dock.server.create_app` under an optional prefix (Beimingwu serves them
under ``/api``).  Every JSON route answers HTTP 200 with ``{"code", "msg", "data"}`` (code 0 =
success, the codes of Beimingwu's backend otherwise); the download route answers the zip, or a JSON
error with a non-200 status (the client only checks the status there).  See docs/dock.md for the
route table and what differs from Beimingwu.

Codes: 11 login required / session expired, 21 request parameters error, 41 not found or
unparseable spec, 51 check failed / upload refused, 52 limit 0, 53 invalid token, 61 already
exists or not allowed, 71 unknown learnware id (update), 31 system error (e.g. the dock is locked),
413 over the upload limit.
"""
from __future__ import annotations

import datetime
import hashlib
import hmac
import json
import logging
import math
import os
import secrets
import tempfile
import threading
import time

from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from .. import package as ingest
from ..specs import registry
from . import semantic_check
from .store import STATUS_INVALID, STATUS_UNUSABLE, STATUS_USABLE, DockLockedError
from .uploads import UploadError, UploadStaging

__all__ = ["BeimingwuAPI", "Sessions", "VERIFY_STATUS", "read_user_spec", "semantic_filter_is_identity",
           "spec_type_name"]

log = logging.getLogger(__name__)

# Beimingwu's LearnwareVerifyStatus of each dock check status.
VERIFY_STATUS = {STATUS_USABLE: "SUCCESS", STATUS_UNUSABLE: "WAITING", STATUS_INVALID: "FAIL"}
_CHECKED_KEYS = ("Data", "Task", "Input", "Output")  # a change of these sends a learnware back to checking


def read_user_spec(blob: bytes, source: str = "statistical_specification"):
    """The user's statistical spec from an uploaded spec JSON file: the one place where the spec type
    of a search upload is picked."""
    return registry.loads_spec(blob, source)


def spec_type_name(spec) -> str:
    """The reference class name of a spec's type (``RKMETableSpecification`` for a table spec)."""
    return registry.entry_of(spec).type


def semantic_filter_is_identity(semantic: dict) -> bool:
    """True when :func:`lwengine.semantic.semantic_filter` keeps every learnware in list order: every
    user entry's ``Values`` is an empty string or list (no tag check, no Name).  Such a search is run
    without the filter (the same result as the dock's own route, without an O(n) pass per request)."""
    for entry in semantic.values():
        v = entry.get("Values", "") if isinstance(entry, dict) else ""
        if not (isinstance(v, (str, list)) and len(v) == 0):
            return False
    return True


def _feature_dim(spec):
    shape = getattr(spec, "z_shape", None)
    return int(shape[0]) if shape is not None and len(shape) == 1 else None


def _reply(code: int = 0, msg: str = "Ok", data=None) -> JSONResponse:
    return JSONResponse({"code": int(code), "msg": msg, "data": data})


class _Refused(Exception):
    def __init__(self, code: int, msg: str, status: int = 200):
        super().__init__(msg)
        self.code, self.msg, self.status = code, msg, status


def _last_modify(ts: float) -> str:
    return datetime.datetime.fromtimestamp(ts, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S.%f %Z")


class Sessions:
    """Login by token: the configured ``tokens`` are the client tokens; a login returns a random
    bearer token valid for ``ttl`` seconds (until logout).  At most ``max_sessions`` live at once."""

    def __init__(self, tokens, ttl: float = 86400.0, max_sessions: int = 10_000):
        self.tokens = [t.encode() for t in tokens if t]
        self.ttl = float(ttl)
        if self.ttl <= 0:
            raise ValueError(f"session ttl must be > 0 seconds, got {ttl!r}")
        self.max_sessions = int(max_sessions)
        self._live: dict = {}
        self._lock = threading.Lock()

    def valid_token(self, token: str) -> bool:
        t = token.encode()
        ok = False
        for k in self.tokens:  # compare against all of them: no early exit
            ok |= hmac.compare_digest(t, k)
        return ok

    def login(self, email: str, token: str):
        if not self.valid_token(token):
            return None
        now = time.time()
        s = secrets.token_urlsafe(32)
        with self._lock:
            if len(self._live) >= self.max_sessions:
                for k in [k for k, (_, exp) in self._live.items() if exp <= now]:
                    del self._live[k]
                while len(self._live) >= self.max_sessions:  # oldest first
                    del self._live[next(iter(self._live))]
            self._live[s] = (email, now + self.ttl)
        return s

    def identity(self, bearer: str):
        """The login's identity for a bearer value (a session token, or a configured token itself)."""
        with self._lock:
            entry = self._live.get(bearer)
            if entry is not None:
                if entry[1] > time.time():
                    return entry[0]
                del self._live[bearer]
        if self.tokens and self.valid_token(bearer):
            return "token"
        return None

    def logout(self, bearer: str) -> None:
        with self._lock:
            self._live.pop(bearer, None)


class BeimingwuAPI:
    """The Beimingwu routes over ``dock``.

    Parameters
    ----------
    dock : the :class:`~lwengine.dock.Dock`.
    search_fn : the dock's search (``Dock.search`` signature; the sharded one with ``serve --ray``).
    tokens : the client tokens (the dock's configured write token(s)); none: logins are refused.
    allow_anonymous : search, learnware info and download of usable learnwares without a login.
    upload_status : check status of uploaded / re-checked learnwares (1 usable at once, 0 waiting).
    session_ttl : seconds a login lasts.
    upload_dir : chunked-upload staging folder (default ``<dock>/uploads``).
    max_upload_bytes : the size cap of one uploaded file.
    """

    def __init__(self, dock, *, search_fn=None, tokens=(), allow_anonymous: bool = False,
                 upload_status: int = STATUS_USABLE, session_ttl: float = 86400.0, upload_dir=None,
                 max_upload_bytes: int = 64 << 20, upload_ttl: float = 3600.0):
        if upload_status not in (STATUS_USABLE, STATUS_UNUSABLE):
            raise ValueError(f"upload_status must be 1 (usable) or 0 (waiting for a check), got {upload_status!r}")
        self.dock = dock
        self.search_fn = dock.search if search_fn is None else search_fn
        self.sessions = Sessions(tokens, session_ttl)
        self.allow_anonymous = bool(allow_anonymous)
        self.upload_status = int(upload_status)
        self.max_upload_bytes = int(max_upload_bytes)
        self.staging = UploadStaging(upload_dir or os.path.join(dock.path, "uploads"), max_bytes=max_upload_bytes,
                                     ttl=upload_ttl)

    # ------------------------------------------------------------------ plumbing
    def _who(self, request: Request, required: bool):
        auth = request.headers.get("authorization", "")
        if auth.startswith("Bearer "):
            who = self.sessions.identity(auth[7:].strip())
            if who is not None:
                return who
            raise _Refused(11, "Login required: the session token is invalid or expired (log in again)")
        if required:
            raise _Refused(11, "Login required: send Authorization: Bearer <token from /auth/login_by_token>")
        return None

    def _reader(self, request: Request):
        """Identity for a read route (None when anonymous reads are allowed and no login was sent)."""
        return self._who(request, required=not self.allow_anonymous)

    async def _form(self, request: Request) -> dict:
        ctype = request.headers.get("content-type", "")
        try:
            if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
                return await request.form(max_files=4, max_fields=32, max_part_size=self.max_upload_bytes)
            if ctype.startswith("application/json"):
                body = json.loads(await request.body())
                if not isinstance(body, dict):
                    raise ValueError("the JSON body must be an object")
                return body
        except Exception as exc:  # malformed bodies of any kind: a parameters error, never a 500
            if getattr(exc, "status", None) == 413:  # the service's body limit, hit while streaming
                raise _Refused(413, str(exc), 413) from None
            raise _Refused(21, f"Request parameters error: unreadable request body: {exc}") from None
        body = await request.body()
        if body.strip():
            raise _Refused(21, f"Request parameters error: unsupported content type {ctype or 'none'!r}")
        return {}

    @staticmethod
    def _text(form, name, required=True):
        v = form.get(name)
        if v is None or (isinstance(v, str) and v == "" and required):
            if required:
                raise _Refused(21, f"Request parameters error: {name} is required")
            return None
        if not isinstance(v, str):
            raise _Refused(21, f"Request parameters error: {name} must be a text field")
        return v

    @staticmethod
    async def _file(form, name):
        f = form.get(name)
        if f is None or isinstance(f, str):
            return None
        blob = await f.read()
        return blob or None

    @staticmethod
    def _int(raw, name, lo, hi):
        try:
            v = int(raw)
        except (TypeError, ValueError):
            raise _Refused(21, f"Request parameters error: {name} must be an integer, got {raw!r}") from None
        if isinstance(raw, bool) or not lo <= v <= hi:
            raise _Refused(21, f"Request parameters error: {name} must be in [{lo}, {hi}], got {raw!r}")
        return v

    def endpoint(self, fn):
        async def handler(request: Request):
            try:
                return await fn(request)
            except _Refused as exc:
                return JSONResponse({"code": exc.code, "msg": exc.msg, "data": None}, status_code=exc.status)
            except UploadError as exc:
                return _reply(exc.code, str(exc))
            except DockLockedError as exc:
                return _reply(31, f"System error: {exc}")
            except KeyError as exc:
                return _reply(41, str(exc.args[0] if exc.args else exc))
            except (ingest.PackageError, ValueError, TypeError) as exc:
                return _reply(51, str(exc))
        handler.__name__ = fn.__name__
        return handler

    def _record(self, lid: str):
        try:
            return self.dock.get(lid)
        except KeyError:
            return None

    def _dump(self, rec, matching=None) -> dict:
        out = {"learnware_id": rec.id, "semantic_specification": rec.semantic or {},
               "last_modify": _last_modify(rec.updated), "verify_status": VERIFY_STATUS.get(rec.status, "FAIL")}
        if matching is not None:
            out["matching"] = matching
        return out

    # ------------------------------------------------------------------ /auth
    async def login_by_token(self, request):
        body = await self._form(request)
        email, token = body.get("email"), body.get("token")
        if not isinstance(email, str) or not isinstance(token, str) or not email or not token:
            raise _Refused(21, "Request parameters error: give a JSON body {email, token}")
        if not self.sessions.tokens:
            return _reply(53, "Invalid token. (this dock has no client tokens configured: logins are disabled)")
        s = self.sessions.login(email, token)
        if s is None:
            return _reply(53, "Invalid token.")
        return _reply(0, "Login success.", {"token": s, "expires_in": self.sessions.ttl})

    async def logout(self, request):
        self._who(request, required=True)
        self.sessions.logout(request.headers["authorization"][7:].strip())
        return _reply(0, "Logout success.")

    # ------------------------------------------------------------------ /engine
    async def semantic_specification(self, request):
        return _reply(0, "Ok", {"semantic_specification": semantic_check.SEMANTIC_VOCABULARY})

    async def search_learnware(self, request):
        who = self._reader(request)
        form = await self._form(request)
        raw = form.get("semantic_specification")
        if not isinstance(raw, str):
            raise _Refused(21, "Request parameters error: semantic_specification (a JSON string) is required")
        try:
            sem = ingest.check_semantic(json.loads(raw), "semantic_specification")
        except ValueError as exc:
            return _reply(41, f"Semantic specification error: {exc}")
        status = STATUS_USABLE
        if form.get("is_verified", "true") == "false":
            if who is None:
                return _reply(61, "cannot search unverified learnware without a login.")
            status = STATUS_UNUSABLE
        lid = form.get("learnware_id")
        if lid is not None:
            if who is None:
                return _reply(61, "cannot search learnware by id without a login.")
            sem["learnware_id"] = {"Values": str(lid), "Type": "String"}
        blob = await self._file(form, "statistical_specification")
        user = None
        if blob is not None:
            try:
                user = read_user_spec(blob)
            except (ValueError, TypeError, UnicodeDecodeError) as exc:
                return _reply(41, f"Statistical specification error: {exc}")
        msn = self._int(form.get("max_search_num", 5), "max_search_num", 1, 100)
        method = form.get("search_method") or "greedy"
        if method not in ("greedy", "auto"):
            raise _Refused(21, f"Request parameters error: search_method must be 'greedy' or 'auto', got {method!r}")
        limit = form.get("limit")
        try:
            limit = None if limit is None else int(limit)
        except (TypeError, ValueError):
            limit = None  # Beimingwu: no (integer) limit -> the whole list, unpaged
        if limit == 0:
            return _reply(52, "Limit cannot be 0.")
        if limit is not None and limit < 0:
            raise _Refused(21, f"Request parameters error: limit must be > 0, got {limit}")
        try:
            page = int(form.get("page") or 0)
        except (TypeError, ValueError):
            page = 0
        if page < 0:
            raise _Refused(21, f"Request parameters error: page must be >= 0, got {page}")
        if user is not None and semantic_filter_is_identity(sem):
            sem = None
        result = await run_in_threadpool(self.search_fn, user, msn, method, sem, status=status)
        n = len(result.single)
        lo, hi = (0, n) if limit is None else (page * limit, min(n, (page + 1) * limit))
        page_items = result.single[lo:hi]
        mix = [] if (user is None or result.mixture is None or (limit is not None and page != 0)) else \
            list(result.mixture.ids)

        def dump():
            recs = {i: self._record(i) for i in {s.id for s in page_items} | set(mix)}
            single = [self._dump(recs[s.id], 0 if user is None else s.score) for s in page_items
                      if recs[s.id] is not None]
            multi = [self._dump(recs[i], result.mixture.score) for i in mix if recs[i] is not None]
            return single, multi

        single, multi = await run_in_threadpool(dump)
        data = {"learnware_list_single": single, "learnware_list_multi": multi, "is_hetero": False}
        if limit is not None:
            data.update(page=page, limit=limit, total_pages=math.ceil(n / limit))
        data["total"] = n
        return _reply(0, "Ok", data)

    async def learnware_info(self, request):
        who = self._reader(request)
        lid = request.query_params.get("learnware_id")
        if not lid:
            raise _Refused(21, "Request parameters error: learnware_id is required")
        rec = await run_in_threadpool(self._record, lid)
        if rec is None or (who is None and rec.status != STATUS_USABLE):
            return _reply(41, "Learnware not found.")
        info = self._dump(rec)
        info["check_status"] = rec.status
        return _reply(0, "Ok", {"learnware_info": info})

    def repack(self, lid: str, semantic) -> str:
        """A temporary zip of ``lid`` as Beimingwu serves verified learnwares: the dock's export (stored
        package, current spec) with ``id`` and ``semantic_specification`` in its learnware.yaml and
        the semantic spec as ``semantic_specification.json``.  The caller deletes the file."""
        import yaml

        members = ingest.package_members(self.dock.package_bytes(lid), self.dock.limits)
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        meta = yaml.load(members["learnware.yaml"].decode("utf-8"), Loader=loader)
        meta["id"] = lid
        meta["semantic_specification"] = {"file_name": ingest.SEMANTIC_FILE}
        members[ingest.SEMANTIC_FILE] = json.dumps(semantic or {}, indent=4).encode()
        members["learnware.yaml"] = yaml.safe_dump(meta, sort_keys=False).encode()
        fd, path = tempfile.mkstemp(prefix="lw-", suffix=".zip", dir=self.staging.path)  # swept if left behind
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(ingest.build_package_zip(members))
        except BaseException:
            os.unlink(path)
            raise
        return path

    async def download_learnware(self, request):
        try:
            who = self._reader(request)
        except _Refused as exc:
            raise _Refused(exc.code, exc.msg, 401) from None
        lid = request.query_params.get("learnware_id")
        if not lid:
            raise _Refused(21, "Request parameters error: learnware_id is required", 400)
        rec = await run_in_threadpool(self._record, lid)
        if rec is None:
            raise _Refused(41, f"Learnware not found: {lid!r}", 404)
        if who is None and rec.status != STATUS_USABLE:
            raise _Refused(61, "cannot download unverified learnware without a login.", 403)
        path = await run_in_threadpool(self.repack, lid, rec.semantic)
        return FileResponse(path, media_type="application/zip", filename=f"{lid}.zip",
                            background=BackgroundTask(os.unlink, path))

    # ------------------------------------------------------------------ /user
    def _checked_package(self, blob: bytes, sem: dict):
        """Hostile-input checks (the dock's package reader), then Beimingwu's upload checks."""
        pkg = ingest.read_package(None, data=blob, limits=self.dock.limits)
        ok, msg = semantic_check.upload_semantic_check(sem)
        if ok:
            ok, msg = semantic_check.data_type_check(sem, spec_type_name(pkg.spec), _feature_dim(pkg.spec))
        if not ok:
            raise _Refused(51, msg)
        return pkg

    def _semantic(self, raw):
        sem, msg = semantic_check.normalize_semantic(raw if raw is not None else "")
        if sem is None:
            raise _Refused(41, msg)
        try:
            return ingest.check_semantic(sem, "semantic_specification")
        except ValueError as exc:
            raise _Refused(41, str(exc)) from None

    def _ingest(self, h: str, blob: bytes, sem: dict) -> str:
        self._checked_package(blob, sem)
        lid = self.dock.add_package(None, data=blob, semantic=sem, status=self.upload_status)
        self.staging.remember(h, lid)
        return lid

    async def chunked_upload(self, request):
        self._who(request, required=True)
        form = await self._form(request)
        h = self.staging.check_hash(self._text(form, "file_hash"))
        begin = self._int(self._text(form, "chunk_begin"), "chunk_begin", 0, self.max_upload_bytes)
        chunk = form.get("chunk_file")
        if chunk is None or isinstance(chunk, str):
            raise _Refused(21, "Request parameters error: chunk_file (a file part) is required")
        data = await chunk.read()
        await run_in_threadpool(self.staging.write_chunk, h, begin, data, exists=self.dock.__contains__)
        return _reply(0, "success")

    async def add_learnware_uploaded(self, request):
        self._who(request, required=True)
        body = await self._form(request)
        h = self.staging.check_hash(body.get("file_hash"))
        sem = self._semantic(body.get("semantic_specification"))

        def run():
            with self.staging.lock(h):
                if self.staging.known(h, self.dock.__contains__) is not None:
                    raise _Refused(61, "Learnware file already exist.")
                return self._ingest(h, self.staging.take(h), sem)

        lid = await run_in_threadpool(run)
        return _reply(0, "Add success.", {"learnware_id": lid})

    async def add_learnware(self, request):
        """Beimingwu's single-request upload: multipart ``learnware_file`` + ``semantic_specification``."""
        self._who(request, required=True)
        form = await self._form(request)
        sem = self._semantic(form.get("semantic_specification"))
        blob = await self._file(form, "learnware_file")
        if blob is None:
            raise _Refused(21, "Request parameters error: learnware_file is required")
        h = hashlib.md5(blob).hexdigest()

        def run():
            with self.staging.lock(h):
                if self.staging.known(h, self.dock.__contains__) is not None:
                    raise _Refused(61, "Learnware file already exist.")
                return self._ingest(h, blob, sem)

        return _reply(0, "Add success.", {"learnware_id": await run_in_threadpool(run)})

    async def list_learnware(self, request):
        self._who(request, required=True)
        body = await self._form(request)
        if "limit" not in body or "page" not in body:
            raise _Refused(21, "Request parameters error: give a JSON body {page, limit}")
        limit = self._int(body["limit"], "limit", 1, 10_000)
        page = self._int(body["page"], "page", 0, 10**9)
        status = None
        if body.get("is_verified") is not None:
            status = STATUS_USABLE if body["is_verified"] in (True, "true", 1) else STATUS_UNUSABLE
        recs, total = await run_in_threadpool(self.dock.list, status=status, page=page, limit=limit)
        return _reply(0, "Ok.", {"learnware_list": [self._dump(r) for r in recs], "page": page, "limit": limit,
                                 "total_pages": math.ceil(total / limit), "total": total})

    async def update_learnware(self, request):
        self._who(request, required=True)
        form = await self._form(request)
        lid = self._text(form, "learnware_id")
        raw = self._text(form, "semantic_specification")
        rec = await run_in_threadpool(self._record, lid)
        if rec is None:
            return _reply(71, "Learnware id does not exist.")
        sem = self._semantic(raw)
        blob = await self._file(form, "learnware_file")

        def run():
            changed = blob is not None or any((rec.semantic or {}).get(k, {}) != sem.get(k, {}) for k in _CHECKED_KEYS)
            status = self.upload_status if changed else rec.status
            if blob is None:
                ok, msg = semantic_check.upload_semantic_check(sem)
                if ok:
                    spec = self.dock.get_spec(lid)
                    ok, msg = semantic_check.data_type_check(sem, spec_type_name(spec), _feature_dim(spec))
                if not ok:
                    raise _Refused(51, msg)
                self.dock.update(lid, semantic=sem, status=status)
                return
            h = hashlib.md5(blob).hexdigest()
            with self.staging.lock(h):
                other = self.staging.known(h, self.dock.__contains__)
                if other is not None and other != lid:
                    raise _Refused(61, "Learnware file already exist.")
                self._checked_package(blob, sem)
                self.dock.update(lid, package=blob, semantic=sem, status=status)
                self.staging.forget(learnware_id=lid)
                self.staging.remember(h, lid)

        try:
            await run_in_threadpool(run)
        except KeyError:
            return _reply(71, "Learnware id does not exist.")
        return _reply(0, "success")

    async def delete_learnware(self, request):
        self._who(request, required=True)
        body = await self._form(request)
        lid = body.get("learnware_id")
        if not isinstance(lid, str) or not lid:
            raise _Refused(21, "Request parameters error: learnware_id is required")
        try:
            await run_in_threadpool(self.dock.remove, lid)
        except KeyError:
            return _reply(51, "Learnware not exist.")
        self.staging.forget(learnware_id=lid)
        return _reply(0, "Delete success.")

    # ------------------------------------------------------------------ routes
    def routes(self, prefix: str = "") -> list:
        """The routes under ``prefix`` ("" or "/api"-like: leading slash, no trailing slash)."""
        if prefix and (not prefix.startswith("/") or prefix.endswith("/")):
            raise ValueError(f"api prefix must be '' or start with '/' and not end with one, got {prefix!r}")
        table = [("/auth/login_by_token", self.login_by_token, "POST"),
                 ("/auth/logout", self.logout, "POST"),
                 ("/engine/semantic_specification", self.semantic_specification, "GET"),
                 ("/engine/search_learnware", self.search_learnware, "POST"),
                 ("/engine/learnware_info", self.learnware_info, "GET"),
                 ("/engine/download_learnware", self.download_learnware, "GET"),
                 ("/user/chunked_upload", self.chunked_upload, "POST"),
                 ("/user/add_learnware_uploaded", self.add_learnware_uploaded, "POST"),
                 ("/user/add_learnware", self.add_learnware, "POST"),
                 ("/user/list_learnware", self.list_learnware, "POST"),
                 ("/user/update_learnware", self.update_learnware, "POST"),
                 ("/user/delete_learnware", self.delete_learnware, "POST")]
        return [Route(prefix + path, self.endpoint(fn), methods=[method]) for path, fn, method in table]
