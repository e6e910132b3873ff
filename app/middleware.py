"""ASGI middleware of both FastAPI apps: a request id on every answer and in every error body, a catch-all that
turns an unexpected error into a generic 500, HEAD answered as GET without the body, the body limit counted as
the bytes arrive, and a cap on the members of any one JSON object in the body, and of all of them.

Request ids: a sane incoming `X-Request-ID` is kept (Serve's proxy puts one on every request, the client's own
or a generated one, and returns it in the answer's header); a request without one gets a new id, which this
middleware then returns in the header itself. A malformed one (empty, over 128 characters, or other than letters,
digits and `._:-`) is a 400 naming the header, under a new id. Serve's request-id middleware, around this one,
echoes the client's header whatever it holds, so such an answer carries that value beside the new id: the 400 tells
the client its id was not used, where a request served under a replaced id would carry two without a word. Log
lines about a request carry its id; error bodies carry it as `request_id`, so a user can quote it and an operator
can find the details (never sent to the client).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import uuid
from collections.abc import Sequence
from contextvars import ContextVar
from typing import Any

from fastapi import FastAPI
from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

logger = logging.getLogger("ray.serve")

MAX_BODY_BYTES = 4 * 1024 * 1024
MAX_JSON_MEMBERS = 100  # members of one JSON object in a request body: no request schema has a third as many
MAX_JSON_TOTAL_MEMBERS = 64_000  # members of all a body's objects: a full batch (1,000 items) has under 30 an item
REQUEST_ID_HEADER = "x-request-id"
_SANE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_request_id: ContextVar[str] = ContextVar("request_id", default="-")


def current_request_id() -> str:
    """The id of the request being answered ("-" outside a request)."""
    return _request_id.get()


def error_body(loc: list[str | int], message: str, kind: str) -> dict[str, Any]:
    """Every error answer's body: FastAPI's `detail` list (where and why) and the request id."""
    return {"detail": [{"loc": loc, "msg": message, "type": kind}], "request_id": current_request_id()}


def _shown(path: str) -> str:
    return path if len(path) <= 200 else f"{path[:200]}... ({len(path)} characters)"


class RequestIds:
    """Give every request an id (see the module's docstring); answer an unexpected error with a generic 500."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        incoming = Headers(scope=scope).get(REQUEST_ID_HEADER)
        sane = incoming is None or _SANE_ID.fullmatch(incoming) is not None
        request_id = incoming if incoming is not None and sane else uuid.uuid4().hex
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if request_id != incoming:  # an id the request carried is echoed by Serve's proxy already
                    headers = [(k, v) for k, v in message.get("headers", []) if k.lower() != b"x-request-id"]
                    message = {**message, "headers": [*headers, (b"x-request-id", request_id.encode())]}
            await send(message)

        token = _request_id.set(request_id)
        try:
            if not sane:
                body = error_body(["header", "X-Request-ID"], "must be 1 to 128 characters: letters, digits and "
                                  "._:- (starting with a letter or digit)", "value_error")
                await JSONResponse(body, status_code=400)(scope, receive, send_with_id)
                return
            await self.app(scope, receive, send_with_id)
        except Exception:
            logger.exception("request %s: %s %s failed", request_id, scope.get("method"), _shown(scope.get("path", "")))
            if started:
                raise
            body = error_body([], f"internal error; the server's log has the details under request id {request_id}",
                              "internal_error")
            await JSONResponse(body, status_code=500)(scope, receive, send_with_id)
        finally:
            _request_id.reset(token)


class BodyLimit:
    """413 for a body over `limit` bytes: declared (Content-Length) or counted as it arrives (chunked).

    The body is read here, before the app runs, and handed on in one piece; a route never sees a partial one.
    """

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES):
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = Headers(scope=scope).get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            await self._too_large(scope, receive, send)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client went away: nobody to answer
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        whole: Message = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replaying(whole, receive), send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = error_body(["body"], f"request body over {self.limit} bytes", "too_large")
        await JSONResponse(body, status_code=413, headers={"Connection": "close"})(scope, receive, send)


def _replaying(message: Message, receive: Receive) -> Receive:
    """A receive that gives `message` first, then what `receive` gives."""
    pending = [message]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


class _Wide(Exception):
    """The body's JSON objects have more members than a cap: the message says which."""


def _too_many_members(body: bytes, limit: int, total: int) -> str | None:
    """Why the JSON `body` is refused: an object of more than `limit` members, or more than `total` in all its objects
    (None for one within both, or not JSON: the app's own parsing answers that)."""
    if body.count(b":") <= limit:  # each member needs one
        return None
    counted = 0

    def members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        nonlocal counted
        counted += len(pairs)
        if len(pairs) > limit:
            raise _Wide(f"a JSON object with more than {limit} members (no request field takes that many)")
        if counted > total:
            raise _Wide(f"more than {total} JSON object members in all (no request needs that many)")
        return dict(pairs)

    try:
        json.loads(body, object_pairs_hook=members)
    except _Wide as wide:
        return str(wide)
    except (ValueError, RecursionError):
        return None
    return None


class JsonMemberLimit:
    """422 for a body with a JSON object of more than `limit` members, or more than `total` in all, before the app
    parses it: every request schema refuses an unknown key with an error of its own, and half a million of them cost
    seconds of the event loop and a GiB to build. The check parses the body off the event loop. Inside `BodyLimit`,
    which hands the body on in one piece."""

    def __init__(self, app: ASGIApp, limit: int = MAX_JSON_MEMBERS, total: int = MAX_JSON_TOTAL_MEMBERS):
        self.app, self.limit, self.total = app, limit, total

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        first = await receive()
        content = first.get("body", b"") if first["type"] == "http.request" else b""
        why = await asyncio.to_thread(_too_many_members, content, self.limit, self.total) \
            if content.count(b":") > self.limit else None
        if why is not None:
            await JSONResponse(error_body(["body"], why, "too_many_members"), status_code=422)(scope, receive, send)
            return
        await self.app(scope, _replaying(first, receive), send)


class HeadAsGet:
    """HEAD on a route answers as its GET would, without the body (FastAPI routes GET only: `curl -I` and monitors
    that probe with HEAD got 405); the headers, Content-Length included, are the GET answer's."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "HEAD":
            await self.app(scope, receive, send)
            return

        async def headers_only(message: Message) -> None:
            if message["type"] == "http.response.body":
                message = {**message, "body": b""}
            await send(message)

        await self.app({**scope, "method": "GET"}, receive, headers_only)


def install_middleware(app: FastAPI, limit: int = MAX_BODY_BYTES, before_body: Sequence[type] = ()) -> None:
    """Request ids outside, then `before_body` (checks that answer before any of the body is read), the body limit
    inside (so a 413 carries the id too), the member cap inside that."""
    app.add_middleware(JsonMemberLimit)
    app.add_middleware(BodyLimit, limit=limit)
    app.add_middleware(HeadAsGet)
    for check in reversed(before_body):
        app.add_middleware(check)
    app.add_middleware(RequestIds)  # added last: runs first
