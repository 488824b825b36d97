"""A1111's error body ``{"error", "detail", "body", "errors"}`` and the mapping of our core errors to 4xx.

A1111 answers many bad requests with a 500 (spec §3.3, Corrections 4); we keep its body shape but give the status a
client error deserves, with a message naming the field and the valid choices. Nothing escapes as a bare 500 page,
and a failed request never takes the server down.
"""

from __future__ import annotations

import json
import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from webui.core.engine import GenerationError
from webui.core.images import InvalidImage, InvalidImageFormat
from webui.core.loader import CheckpointLoadError
from webui.core.registry import CheckpointNotFound
from webui.core.settings import UnknownOption

log = logging.getLogger(__name__)


def error_body(error: str, detail="", errors="", body="") -> dict:
    return {"error": error, "detail": detail, "body": body, "errors": errors}


def error_response(status: int, error: str, detail="", errors="", headers=None) -> JSONResponse:
    return JSONResponse(status_code=status, content=error_body(error, detail, errors), headers=headers)


def _status_for(exc: Exception) -> int:
    if isinstance(exc, CheckpointNotFound):
        return 404
    if isinstance(exc, (GenerationError, UnknownOption, InvalidImage, InvalidImageFormat, CheckpointLoadError)):
        return 422 if isinstance(exc, CheckpointLoadError) else 400
    return 500


def _describe(exc: Exception) -> tuple[str, str]:
    """(detail, errors): ``errors`` keeps A1111's text where clients may match it."""
    if isinstance(exc, CheckpointNotFound):
        choices = ", ".join(exc.choices) if exc.choices else "(none: put a checkpoint in models/Stable-diffusion)"
        return f"Checkpoint {exc.name!r} not found; valid checkpoints: {choices}", f"model '{exc.name}' not found"
    return str(exc), str(exc)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        items = []
        for e in exc.errors():
            item = {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            items.append(item)
        message = "; ".join(f"{'.'.join(str(p) for p in i['loc'])}: {i['msg']}" for i in items)
        return JSONResponse(status_code=422, content=error_body("RequestValidationError", items, message))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if not request.url.path.startswith("/sdapi/") or exc.status_code in (404, 405) and _is_routing(exc):
            return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail}, headers=exc.headers)
        return error_response(exc.status_code, "HTTPException", exc.detail, "", headers=exc.headers)

    async def any_error(request: Request, exc: Exception):
        status = _status_for(exc)
        if status >= 500:
            log.exception("API error on %s", request.url.path, exc_info=exc)
        detail, errors = _describe(exc)
        return error_response(status, type(exc).__name__, detail, errors)

    # Our client-error types get their own handlers (answered inside the app); anything else is a logged 500 in
    # A1111's shape, and the server goes on serving.
    for cls in (CheckpointNotFound, GenerationError, UnknownOption, InvalidImage, InvalidImageFormat,
                CheckpointLoadError, Exception):
        app.add_exception_handler(cls, any_error)


def _is_routing(exc: StarletteHTTPException) -> bool:
    return exc.detail in ("Not Found", "Method Not Allowed")


def info_json(info: dict) -> str:
    """``info`` as A1111 sends it: a string made by Python's json.dumps defaults (", ", ": ", ASCII escapes)."""
    return json.dumps(info, default=lambda o: None)
