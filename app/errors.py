"""The one place where domain errors become HTTP answers.

Every error body has FastAPI's shape, `{"detail": [{"loc": [...], "msg": "...", "type": "..."}]}`, so a
client finds the offending field the same way for pydantic's 422s and for ours.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from app.records import RecordNotFound
from core.registry import ModelNotFoundError
from training.power.inference import ForecastRequestError

logger = logging.getLogger("ray.serve")
MAX_BODY_BYTES = 4 * 1024 * 1024


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str
    type: str


class ErrorBody(BaseModel):
    """Every error answer: where and why."""

    detail: list[ErrorItem]


def responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI entries for the error statuses a route can answer."""
    reasons = {401: "missing or wrong API token", 404: "unknown id (model, batch, job or node)",
               413: "request body too large", 503: "model or dependency not available now"}
    return {status: {"model": ErrorBody, "description": reasons[status]} for status in statuses}


class ApiError(Exception):
    """An HTTP error with the field it is about."""

    def __init__(self, status: int, loc: list[str | int], message: str, kind: str = "value_error"):
        super().__init__(message)
        self.status, self.loc, self.message, self.kind = status, loc, message, kind


def error_body(loc: list[str | int], message: str, kind: str) -> dict:
    return {"detail": [{"loc": loc, "msg": message, "type": kind}]}


def unavailable(what: str, exc: BaseException) -> ApiError:
    """503 for a dependency (model replica, store) that cannot answer now; the cause goes to the log."""
    logger.warning("%s unavailable: %s", what, exc)
    return ApiError(503, [], f"{what} is not available right now: {type(exc).__name__}", "unavailable")


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        # Only location, message and type: echoing the input could hold NaN, which JSON cannot carry.
        details = [{"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()]
        return JSONResponse({"detail": details}, status_code=422)

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return JSONResponse(error_body(exc.loc, exc.message, exc.kind), status_code=exc.status, headers=headers)

    @app.exception_handler(ForecastRequestError)
    async def _forecast_error(_: Request, exc: ForecastRequestError) -> JSONResponse:
        return JSONResponse(error_body(["body", exc.field], exc.message, "value_error"), status_code=422)

    @app.exception_handler(ModelNotFoundError)
    async def _no_model(_: Request, exc: ModelNotFoundError) -> JSONResponse:
        return JSONResponse(error_body(["path", "model_id"], str(exc), "not_found"), status_code=404)

    @app.exception_handler(RecordNotFound)
    async def _no_record(_: Request, exc: RecordNotFound) -> JSONResponse:
        return JSONResponse(error_body(["path"], str(exc), "not_found"), status_code=404)


def install_body_limit(app: FastAPI, limit: int = MAX_BODY_BYTES) -> None:
    """413 for a declared body over `limit` bytes, before anything parses it."""

    @app.middleware("http")
    async def _limit_body(request: Request, call_next):
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            return JSONResponse(error_body(["body"], f"request body over {limit} bytes", "too_large"), status_code=413)
        return await call_next(request)
