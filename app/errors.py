"""The one place where domain errors become HTTP answers.

Every error body has FastAPI's shape, `{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`, so a
client finds the offending field the same way for pydantic's 422s and for ours, plus the `request_id` under
which the server's log holds the details (app/middleware.py). Messages are written for people: never a
traceback, a file path or an upstream address.
"""

from __future__ import annotations

import email.message
import logging
import re
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from app.middleware import current_request_id, error_body
from app.power_api import MissingPowerHistory
from app.retrain_jobs import DataNotAllowed, LaunchFailed
from autoscaler.state import OverReplicasCap, PolicyChanged, StateUnavailable, TooManyPolicies
from core.actors import ActorUnavailable
from core.forecasts import ForecastRequestError, ModelNotLoaded
from core.records import RecordNotFound, RecordUnreadable
from core.registry import ActivePointerUnreadable, ModelNotFoundError, ModelUnreadable, NoActiveVersion
from core.stores.base import StoreUnavailable
from training.cost.catalog import UnknownGpuType
from training.power.retrain_spec import RetrainRefused
from training.power.stored_history import NoStoredTelemetry, UnknownNode
from training.power.workload import WorkloadTelemetryMissing
from training.retrain_lock import RetrainRunning

logger = logging.getLogger("ray.serve")


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error answer: where and why."""

    detail: list[ErrorItem]
    request_id: str = Field(description="quote it when reporting a problem: the server's log holds the details")


REASONS = {400: "a malformed request: JSON nested too deep, a number too long, or a malformed header (If-Match)",
           401: "missing or wrong API token", 403: "no API token configured on the server: writes are closed",
           404: "unknown id (model, batch, job or node)",
           409: "conflict: that model is being retrained, the stored policy no longer validates, or the policy limit "
                "is reached",
           412: "If-Match does not match the stored policy (changed or deleted since it was read)",
           413: "request body too large", 415: "the body is not sent as JSON (Content-Type: application/json)",
           429: "the batch queue is full", 503: "model or dependency not available now"}


def responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI entries for the error statuses a route can answer."""
    return {status: {"model": ErrorBody, "description": REASONS[status]} for status in statuses}


def document_validation_errors(schema: dict) -> dict:
    """`schema` (an OpenAPI document) with every 422 answer described as the ErrorBody the handlers send, not
    FastAPI's own HTTPValidationError (whose items carry `input` and `ctx`, and no `request_id`)."""
    body = {"$ref": "#/components/schemas/ErrorBody"}
    for operations in schema.get("paths", {}).values():
        for operation in operations.values():
            answer = operation.get("responses", {}).get("422")
            if answer is not None:
                answer["description"] = "a field is invalid: `detail` names each, with the reason"
                answer["content"] = {"application/json": {"schema": body}}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("ErrorBody", ErrorBody.model_json_schema(ref_template="#/components/schemas/{model}"))
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)
    return schema


class ApiError(Exception):
    """An HTTP error with the field it is about."""

    def __init__(self, status: int, loc: list[str | int], message: str, kind: str = "value_error"):
        super().__init__(message)
        self.status, self.loc, self.message, self.kind = status, loc, message, kind


def unavailable(what: str, exc: BaseException) -> ApiError:
    """503 for a dependency (model replica, store) that cannot answer now; the cause goes to the log."""
    logger.warning("request %s: %s unavailable: %s", current_request_id(), what, exc)
    return ApiError(503, [], f"{what} is not available right now: {type(exc).__name__}", "unavailable")


def _model_not_found(exc: ModelNotFoundError) -> ApiError:
    version = f" version {exc.version}" if exc.version is not None else ""
    logger.info("request %s: model lookup failed: %s", current_request_id(), exc)  # may name paths: log only
    reason = exc.reason if isinstance(exc, NoActiveVersion) else "not found"  # other reasons may name paths
    return ApiError(404, ["path", "model_id"], f"model {exc.model_id!r}{version}: {reason}", "not_found")


def _model_unreadable(exc: ModelUnreadable) -> ApiError:
    logger.warning("request %s: %s", current_request_id(), exc)  # names the registry's path: log only
    return ApiError(503, [], "a model version cannot be read right now (a storage error on the model registry); "
                             "try again", "unavailable")


def _pointer_unreadable(exc: ActivePointerUnreadable) -> ApiError:
    logger.warning("request %s: %s", current_request_id(), exc)  # names the registry's path: log only
    return ApiError(503, [], "which version of the model is served cannot be read right now (a storage error on the "
                             "model registry); try again", "unavailable")


def _store_unavailable(exc: StoreUnavailable) -> ApiError:
    if isinstance(exc, ActorUnavailable):  # the store client's own words: no addresses in them
        return ApiError(503, [], str(exc), "unavailable")
    return unavailable("the telemetry store", exc)  # a backend's message may hold its URL or path


RECORD_ID_PARAMS = {"batches": "batch_id", "retrain": "job_id"}
"""The path parameter that names a record of each kind (core.records folders)."""

# Domain error -> HTTP error, in one table. A subclass's entry wins over its base's (e.g. UnknownNode's over
# NoStoredTelemetry's); messages are the errors' own, written for people, never a traceback or an address.
DOMAIN_ERRORS: dict[type[Exception], Callable[[Any], ApiError]] = {
    ForecastRequestError: lambda exc: ApiError(422, ["body", exc.field], exc.message),
    ModelNotLoaded: lambda exc: ApiError(503, [], str(exc), "unavailable"),
    MissingPowerHistory: lambda exc: ApiError(422, ["body", "features", "power_watts"], str(exc)),
    ModelNotFoundError: _model_not_found,
    ModelUnreadable: _model_unreadable,
    ActivePointerUnreadable: _pointer_unreadable,
    DataNotAllowed: lambda exc: ApiError(422, ["body", "data"], str(exc)),
    RetrainRunning: lambda exc: ApiError(409, ["body", "model_id"], str(exc), "conflict"),
    RetrainRefused: lambda exc: ApiError(422, ["body", exc.field], exc.message),
    # the active cost model prices with the catalog it was trained with (training/cost/schema.py)
    UnknownGpuType: lambda exc: ApiError(422, ["body", "resources", "gpu_type"], f"{exc}, the one the active cost "
                                         "model was trained with; a type added to configs/prices.yaml since is priced "
                                         "once the cost model is retrained"),
    RecordNotFound: lambda exc: ApiError(404, ["path", RECORD_ID_PARAMS.get(exc.kind, "id")],
                                         f"unknown {RECORD_ID_PARAMS.get(exc.kind, 'id')} {exc.record_id!r}",
                                         "not_found"),
    RecordUnreadable: lambda exc: ApiError(503, [], f"{exc.strerror}; try again", "unavailable"),
    UnknownNode: lambda exc: ApiError(404, ["body", "node_id"], str(exc), "not_found"),
    NoStoredTelemetry: lambda exc: ApiError(503, ["body", "node_id"], str(exc), "unavailable"),
    WorkloadTelemetryMissing: lambda exc: ApiError(503, ["body", "workload_id"], str(exc), "unavailable"),
    StoreUnavailable: _store_unavailable,
    ActorUnavailable: lambda exc: ApiError(503, [], str(exc), "unavailable"),
    LaunchFailed: lambda exc: ApiError(503, [], str(exc), "unavailable"),
    # the controller's state file cannot be used just now (autoscaler/state.py); raised in its actor: `cause`
    StateUnavailable: lambda exc: ApiError(503, [], str(getattr(exc, "cause", None) or exc), "unavailable"),
    # Raised inside the controller actor: Ray's wrapper keeps the class, `cause` is the original (no traceback).
    TooManyPolicies: lambda exc: ApiError(409, ["body", "name"], str(getattr(exc, "cause", None) or exc), "conflict"),
    PolicyChanged: lambda exc: ApiError(412, ["header", "if-match"], str(getattr(exc, "cause", None) or exc),
                                        "precondition_failed"),
    OverReplicasCap: lambda exc: ApiError(422, ["body", "max_replicas"], str(getattr(exc, "cause", None) or exc)),
}


def public_error(exc: BaseException) -> ApiError | None:
    """The HTTP error a domain error maps to (the nearest entry along its MRO); None for any other error."""
    for kind in type(exc).__mro__:
        if kind in DOMAIN_ERRORS:
            return DOMAIN_ERRORS[kind](exc)
    return None


def render_error(exc: ApiError) -> JSONResponse:
    """The answer to an ApiError: its status, the error body, and for a 401 the scheme to use."""
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    return JSONResponse(error_body(exc.loc, exc.message, exc.kind), status_code=exc.status, headers=headers)


def _handler(to_http: Callable[[Any], ApiError]) -> Callable[[Request, Exception], Any]:
    async def handle(_: Request, exc: Exception) -> JSONResponse:
        return render_error(to_http(exc))

    return handle


MAX_ERRORS_SHOWN = 20
MAX_ECHOED_CHARS = 64  # of a client's key or value that an error message repeats
MAX_MESSAGE_CHARS = 500  # of one validation message, whatever it quotes (a quote inside the input defeats _QUOTED)
_QUOTED = re.compile(rf"'[^']{{{MAX_ECHOED_CHARS + 1},}}'|\"[^\"]{{{MAX_ECHOED_CHARS + 1},}}\"")


def _shortened(text: str) -> str:
    """`text` cut to MAX_ECHOED_CHARS characters, the cut marked."""
    return text if len(text) <= MAX_ECHOED_CHARS else f"{text[:MAX_ECHOED_CHARS]}… ({len(text)} characters)"


def _shortened_quotes(message: str) -> str:
    """A validation message with every long quoted part (the input it repeats) shortened, and the whole cut to
    MAX_MESSAGE_CHARS."""
    message = _QUOTED.sub(lambda found: f"{found[0][0]}{_shortened(found[0][1:-1])}{found[0][0]}", message)
    return message if len(message) <= MAX_MESSAGE_CHARS else f"{message[:MAX_MESSAGE_CHARS]}… (cut)"


def _sent_as_json(content_type: str | None) -> bool:
    """The media types FastAPI parses as JSON: application/json and application/*+json."""
    if not content_type:
        return False
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


def _not_json(request: Request, errors: list[dict]) -> JSONResponse | None:
    """415 for a body FastAPI left unparsed because of its Content-Type (`curl -d` sends a form type): the
    validation error alone would only say the body is not an object."""
    body_not_object = any(tuple(e["loc"]) == ("body",) and e["type"] in ("model_attributes_type", "dict_type")
                          for e in errors)
    if not body_not_object or _sent_as_json(request.headers.get("content-type")):
        return None
    body = error_body(["header", "content-type"], "the body must be JSON, sent with Content-Type: application/json",
                      "unsupported_media_type")
    return JSONResponse(body, status_code=415)


def _unparsable() -> JSONResponse:
    """400: the body could not be parsed as JSON at all (a syntax error, bytes that are not text, too deep)."""
    body = error_body(["body"], "not valid JSON (or nested too deep, or a number too long to read)", "http_error")
    return JSONResponse(body, status_code=400)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        if (wrong_type := _not_json(request, errors)) is not None:
            return wrong_type
        if any(e["type"] == "json_invalid" for e in errors):
            return _unparsable()
        # Only location, message and type: echoing the input could hold NaN, which JSON cannot carry. At most
        # MAX_ERRORS_SHOWN, with the client's own text in them shortened (a key or a tag of 100,000 characters),
        # so a small body of many bad values never makes a body of megabytes.
        details = [{"loc": [_shortened(part) if isinstance(part, str) else part for part in e["loc"]],
                    "msg": _shortened_quotes(e["msg"]), "type": e["type"]} for e in errors[:MAX_ERRORS_SHOWN]]
        if len(errors) > MAX_ERRORS_SHOWN:
            details.append({"loc": ["body"], "msg": f"{len(errors) - MAX_ERRORS_SHOWN} more errors not shown",
                            "type": "too_many_errors"})
        return JSONResponse({"detail": details, "request_id": current_request_id()}, status_code=422)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:  # unknown route, wrong method, bad body
        if exc.status_code == 400:  # the body could not be parsed at all
            return _unparsable()
        return JSONResponse(error_body([], str(exc.detail), "http_error"), status_code=exc.status_code,
                            headers=exc.headers)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return render_error(exc)

    for kind, to_http in DOMAIN_ERRORS.items():  # Starlette picks the entry nearest along the error's MRO
        app.add_exception_handler(kind, _handler(to_http))
