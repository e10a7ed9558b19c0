"""Every domain error becomes one JSON shape, ``{"error": {"code", "message", "field"}}``, with
its HTTP status: the one place where errors meet HTTP."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from server.errors import ServiceError
from server.store import IdempotencyConflict, InvalidListener, ListenerNotFound, StoreError

log = logging.getLogger(__name__)

STORE_STATUS = {ListenerNotFound: 404, InvalidListener: 422, IdempotencyConflict: 409}


def error_body(code: str, message: str, field: str | None = None) -> dict:
    return {"error": {"code": code, "message": message, "field": field}}


def _response(status: int, code: str, message: str, field: str | None = None,
              headers: dict[str, str] | None = None) -> JSONResponse:  # fmt: skip
    return JSONResponse(error_body(code, message, field), status_code=status, headers=headers)


def install(app: FastAPI) -> None:
    @app.exception_handler(ServiceError)
    async def _service(_: Request, exc: ServiceError) -> JSONResponse:
        headers = {"WWW-Authenticate": "ApiKey"} if exc.status == 401 else None
        if exc.status == 503:
            headers = {"Retry-After": "5"}
        return _response(exc.status, exc.code, exc.reason, exc.field, headers)

    @app.exception_handler(StoreError)
    async def _store(_: Request, exc: StoreError) -> JSONResponse:
        status = next((s for t, s in STORE_STATUS.items() if isinstance(exc, t)), 500)
        return _response(status, exc.code, exc.reason, getattr(exc, "field", None))

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        loc = [str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path")]
        field = ".".join(loc) or None
        return _response(422, "invalid_field", f"{field or 'request'}: {first.get('msg')}", field)

    @app.exception_handler(HTTPException)
    async def _http(_: Request, exc: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return _response(exc.status_code, code, str(exc.detail))

    @app.exception_handler(Exception)
    async def _unexpected(_: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", exc_info=exc)
        return _response(500, "internal", "internal error; it has been logged")
