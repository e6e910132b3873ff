"""Who may call what (docs/architecture.md, REST API): the API token and the two dependencies routes declare.

Writes (every endpoint that changes state or starts work) need `Authorization: Bearer <token>`; with no
token configured they are closed (403, saying how to set one), never open. Reads are open unless
`args.protect_reads`. Tokens are compared as SHA-256 digests of their bytes, in constant time, so any header
(non-ASCII included) is a clean 401 and the comparison reveals neither content nor length. A token read from a
file is read again when the file changes (a rotated Kubernetes Secret), checked at most every `RELOAD_CHECK_S`.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import Headers
from starlette.routing import compile_path
from starlette.types import ASGIApp, Receive, Scope, Send

from app.errors import ApiError, render_error
from app.middleware import current_request_id
from app.replica import serving_replica
from app.settings import AppArgs, api_token_file, read_api_token
from core.settings import TEMPLATE_PLACEHOLDER, ConfigError

logger = logging.getLogger("ray.serve")
HOW_TO_SET = ("set API_TOKEN or API_TOKEN_FILE in the server's environment, or args.api_token_file "
              "(`make run` generates one in state/api-token)")
RELOAD_CHECK_S = 5.0  # how often a token file is looked at for a change
_bearer = HTTPBearer(auto_error=False, description="the API token (API_TOKEN / API_TOKEN_FILE on the server)")


def _digest(raw: bytes) -> bytes:
    return hashlib.sha256(raw).digest()


def _raw(text: str) -> bytes:
    """The header's bytes as the client sent them (ASGI headers are bytes; Starlette decodes them as latin-1)."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def _refuse_placeholder(token: str) -> None:
    if token.startswith(TEMPLATE_PLACEHOLDER):  # anyone with the repository knows it
        raise ConfigError(f"the API token is still the template's {TEMPLATE_PLACEHOLDER} placeholder "
                          "(deploy/secrets/secrets.yaml): set a secret value of your own")


def _file_stamp(path: Path) -> tuple[int, int, int]:
    """What changes when a file is replaced or rewritten (a Secret volume swaps a symlink: another inode)."""
    stat = path.stat()
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


def _stamp_if_readable(path: str | Path | None) -> tuple[int, int, int] | None:
    try:
        return None if path is None else _file_stamp(Path(path))
    except OSError:
        return None


class Access:
    """The configured token (None: none) and whether reads need it too; `token_file`: where the token was read
    from, read again when it changes (a rotated Secret), so the old token stops working without a restart."""

    def __init__(self, token: str | None, protect_reads: bool = False, *, token_file: str | Path | None = None,
                 file_stamp: tuple[int, int, int] | None = None, clock: Callable[[], float] = time.monotonic):
        """`file_stamp`: the token file's as of before `token` was read from it (default: now)."""
        if protect_reads and token is None:
            raise ConfigError(f"args.protect_reads needs an API token: {HOW_TO_SET}")
        if token is not None:
            _refuse_placeholder(token)
        self._digest = None if token is None else _digest(token.encode("utf-8"))
        self.protect_reads = protect_reads
        self._file = Path(token_file) if token_file is not None and token is not None else None
        self._clock = clock
        self._looked_at = clock()
        self._stamp = file_stamp or self._read_stamp()

    @classmethod
    def from_args(cls, args: AppArgs) -> Access:
        """The token from args.api_token_file, $API_TOKEN_FILE or $API_TOKEN (ConfigError for a bad file)."""
        file = api_token_file(args.api_token_file)
        stamp = _stamp_if_readable(file)  # before the read: a rotation during it is seen at the first check
        access = cls(read_api_token(args.api_token_file), args.protect_reads, token_file=file, file_stamp=stamp)
        if not access.configured:
            logger.warning("no API token configured: write endpoints answer 403 until one is set (%s)", HOW_TO_SET)
        return access

    @property
    def configured(self) -> bool:
        return self._digest is not None

    def _read_stamp(self) -> tuple[int, int, int] | None:
        return _stamp_if_readable(self._file)

    def _follow_file(self) -> None:
        """Take the token file's new token, if it changed since it was last looked at (at most every
        RELOAD_CHECK_S). A file that cannot be read, or holds no usable token, leaves the current one in place
        (logged): a half-done rotation does not lock every client out."""
        now = self._clock()
        if self._file is None or now - self._looked_at < RELOAD_CHECK_S:
            return
        self._looked_at = now
        stamp = self._read_stamp()
        if stamp is None or stamp == self._stamp:
            return
        try:
            token = read_api_token(str(self._file))
            if token is None:
                raise ConfigError(f"API_TOKEN_FILE {self._file} holds no token")
            _refuse_placeholder(token)
        except ConfigError as exc:
            self._stamp = stamp  # looked at again only once it changes again
            logger.warning("the API token file changed but cannot be used, so the token before stays: %s", exc)
            return
        if self._read_stamp() != stamp:  # rewritten while it was read (in place): read again at the next check
            return
        self._stamp = stamp
        self._digest = _digest(token.encode("utf-8"))
        logger.info("API token read again from %s: it changed", self._file)

    def check(self, presented: str | None, *, write: bool) -> None:
        """Raises ApiError: 403 for a write with no token configured, 401 for a missing or wrong token."""
        if not write and not self.protect_reads:
            return
        self._follow_file()
        if self._digest is None:
            raise ApiError(403, ["header", "authorization"],
                           f"this endpoint is closed: no API token is configured on the server; {HOW_TO_SET}",
                           "forbidden")
        if presented is None or not hmac.compare_digest(_digest(_raw(presented)), self._digest):
            logger.info("request %s: refused: %s API token", current_request_id(),
                        "no" if presented is None else "wrong")
            raise ApiError(401, ["header", "authorization"], "a valid 'Authorization: Bearer <token>' is required",
                           "unauthorized")


Replica = Annotated[Any, Depends(serving_replica)]


async def write_access(replica: Replica,
                       credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]) -> None:
    """Dependency of every route that changes state or starts work."""
    replica.access.check(credentials.credentials if credentials else None, write=True)


async def read_access(replica: Replica, request: Request) -> None:
    """Dependency of every other route but /healthz: open unless `protect_reads`."""
    scheme, _, presented = request.headers.get("authorization", "").partition(" ")
    replica.access.check(presented.strip() if scheme.lower() == "bearer" else None, write=False)


READ = Depends(read_access)
WRITE = Depends(write_access)


BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


def _carries_body(scope: Scope) -> bool:
    """Whether the request says it has a body (a length above 0, or one sent in chunks)."""
    headers = Headers(scope=scope)
    return "transfer-encoding" in headers or headers.get("content-length", "0").strip() not in ("", "0")


class TokenBeforeBody:
    """The token of a request that needs one checked before its body is read: a write (a route its OpenAPI marks as
    needing the bearer token: every WRITE route), or any request with a body under `protect_reads`. The routes' own
    dependencies run only after FastAPI has read and parsed the body (up to the body limit, 4 MiB, on the event
    loop), so a client without the token could make every replica parse megabytes a request. The dependency still
    checks it again (the same answer)."""

    def __init__(self, app: ASGIApp):
        self.app = app
        self._writes: list[tuple[str, re.Pattern[str]]] | None = None  # (method, path) of the write routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fastapi_app = scope.get("app")
        if (scope["type"] == "http" and isinstance(fastapi_app, FastAPI)
                and (scope["method"] in BODY_METHODS or _carries_body(scope))):  # a GET may carry one too
            write = self._is_write(fastapi_app, scope)
            access = (await _replica(fastapi_app)).access
            if write or (access.protect_reads and not self._always_open(fastapi_app, scope)):
                scheme, presented = get_authorization_scheme_param(Headers(scope=scope).get("authorization"))
                try:
                    access.check(presented if scheme.lower() == "bearer" and presented else None, write=write)
                except ApiError as refused:
                    await render_error(refused)(scope, receive, send)
                    return
        await self.app(scope, receive, send)

    @staticmethod
    def _always_open(app: FastAPI, scope: Scope) -> bool:
        """/healthz and the OpenAPI docs: open under `protect_reads` too (a probe's request is never refused)."""
        return _route_path(scope) in {"/healthz", app.docs_url, app.redoc_url, app.openapi_url}

    def _is_write(self, app: FastAPI, scope: Scope) -> bool:
        if self._writes is None:  # at the first request: every route is in place by then (the class-based ones too)
            self._writes = [(method.upper(), compile_path(path)[0])
                            for path, operations in app.openapi().get("paths", {}).items()
                            for method, operation in operations.items()
                            if isinstance(operation, dict) and operation.get("security")]
        path = _route_path(scope)
        return any(method == scope["method"] and pattern.fullmatch(path) for method, pattern in self._writes)


def _route_path(scope: Scope) -> str:
    """The request's path as the app's routes name it (Serve's route prefix taken off, as Starlette routes it)."""
    path, root = scope["path"], scope.get("root_path", "")
    if root and path.startswith(root):
        path = path[len(root):] or "/"
    return path


async def _replica(app: FastAPI) -> Any:
    """The replica answering, as the routes' `serving_replica` dependency gives it (an override included)."""
    found = app.dependency_overrides.get(serving_replica, serving_replica)()
    return await found if inspect.isawaitable(found) else found
