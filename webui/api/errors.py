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

from webui.core.generation.engine import GenerationError
from webui.core.io.images import InvalidImage, InvalidImageFormat
from webui.core.models.loader import CheckpointLoadError
from webui.core.queue import DuplicateTaskId, TaskCancelled
from webui.core.controlnet.errors import ControlNetError
from webui.core.networks.vae import VaeLoadError
from webui.plugins.scripts import ScriptError
from webui.core.postprocess.face_restore import FaceRestoreUnavailable, UnknownFaceRestorer
from webui.core.interrogate import InterrogatorUnavailable
from webui.core.postprocess.upscalers import UpscalerLoadError, UpscalerNotFound
from webui.core.models.registry import CheckpointNotFound
from webui.core.options import FrozenOption, OptionError
from webui.core.settings import UnknownOption
from webui.core.train.args import TrainingInputError
from webui.core.train.common import TrainingError

log = logging.getLogger(__name__)


class ApiError(Exception):
    """An error answered in A1111's shape: ``detail`` says what is wrong (naming the field and the valid choices),
    ``errors`` keeps A1111's own text where a client might match it, ``error`` the class name A1111 would show."""

    def __init__(self, status: int, detail: str, *, errors: str | None = None, error: str | None = None,
                 headers: dict | None = None):
        super().__init__(detail)
        self.status_code = status
        self.detail = detail
        self.errors = detail if errors is None else errors
        self.error = error or "HTTPException"
        self.headers = headers


def error_body(error: str, detail="", errors="", body="") -> dict:
    return {"error": error, "detail": detail, "body": body, "errors": errors}


def error_response(status: int, error: str, detail="", errors="", headers=None) -> JSONResponse:
    return JSONResponse(status_code=status, content=error_body(error, detail, errors), headers=headers)


def _status_for(exc: Exception) -> int:
    if isinstance(exc, CheckpointNotFound):
        return 404
    if isinstance(exc, TrainingInputError):
        return exc.status
    if isinstance(exc, (TaskCancelled, DuplicateTaskId)):
        return 409
    if isinstance(exc, (CheckpointLoadError, ControlNetError, ScriptError, VaeLoadError, TrainingError)):
        return 422
    if isinstance(exc, (GenerationError, UnknownOption, InvalidImage, InvalidImageFormat, FaceRestoreUnavailable,
                        UnknownFaceRestorer, UpscalerNotFound, UpscalerLoadError, InterrogatorUnavailable)):
        return 400
    return 500


def _describe(exc: Exception) -> tuple[str, str]:
    """(detail, errors): ``errors`` keeps A1111's text where clients may match it."""
    if isinstance(exc, CheckpointNotFound):
        choices = ", ".join(exc.choices) if exc.choices else "(none: put a checkpoint in models/Stable-diffusion)"
        return f"Checkpoint {exc.name!r} not found; valid checkpoints: {choices}", f"model '{exc.name}' not found"
    return str(exc), str(exc)


# pydantic v2 error types -> pydantic v1's (A1111 runs v1; these are what its 422 bodies say, spec §3.2).
_V1_ERRORS = {
    "int_parsing": ("type_error.integer", "value is not a valid integer"),
    "int_type": ("type_error.integer", "value is not a valid integer"),
    "int_from_float": ("type_error.integer", "value is not a valid integer"),
    "float_parsing": ("type_error.float", "value is not a valid float"),
    "float_type": ("type_error.float", "value is not a valid float"),
    "bool_parsing": ("type_error.bool", "value could not be parsed to a boolean"),
    "bool_type": ("type_error.bool", "value could not be parsed to a boolean"),
    "string_type": ("type_error.str", "str type expected"),
    "list_type": ("type_error.list", "value is not a valid list"),
    "dict_type": ("type_error.dict", "value is not a valid dict"),
    "model_attributes_type": ("type_error.dict", "value is not a valid dict"),
    "model_type": ("type_error.dict", "value is not a valid dict"),
    "missing": ("value_error.missing", "field required"),
    "literal_error": ("value_error.const", None),
}


def v1_validation_items(errors: list[dict]) -> list[dict]:
    """FastAPI/pydantic v2 validation errors as pydantic v1 items ``{"loc", "msg", "type"[, "ctx"]}``."""
    items = []
    for e in errors:
        loc = list(e.get("loc", ()))
        kind = e.get("type", "")
        msg = e.get("msg", "")
        ctx = {k: (v if isinstance(v, (str, int, float, bool, type(None))) else str(v))
               for k, v in (e.get("ctx") or {}).items()}
        if kind == "json_invalid":
            pos = loc[1] if len(loc) > 1 and isinstance(loc[1], int) else 0
            reason = ctx.get("error") or "Invalid JSON"
            kind, msg = "value_error.jsondecode", f"{reason}: char {pos}"
            ctx = {"msg": reason, "pos": pos}
        elif kind == "model_attributes_type" and loc == ["body"] and e.get("input") is None:
            kind, msg = _V1_ERRORS["missing"]  # a JSON null body: pydantic v1 says "field required"
        elif kind in _V1_ERRORS:
            v1_kind, v1_msg = _V1_ERRORS[kind]
            kind, msg = v1_kind, v1_msg or msg
        elif kind == "value_error":
            kind, msg = "value_error", ctx.get("error", msg)
        item = {"loc": loc, "msg": msg, "type": kind}
        if ctx and kind not in ("type_error.integer", "type_error.float", "type_error.str", "type_error.bool"):
            item["ctx"] = ctx
        items.append(item)
    return items


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        items = v1_validation_items(list(exc.errors()))
        message = "; ".join(f"{'.'.join(str(p) for p in i['loc'])}: {i['msg']}" for i in items)
        return JSONResponse(status_code=422, content=error_body("RequestValidationError", items, message))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if not request.url.path.startswith(("/sdapi/", "/internal/", "/controlnet/")) or exc.status_code in (404, 405) and _is_routing(exc):
            return JSONResponse(status_code=exc.status_code, content={"detail": exc.detail}, headers=exc.headers)
        return error_response(exc.status_code, "HTTPException", exc.detail, "", headers=exc.headers)

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError):
        return error_response(exc.status_code, exc.error, exc.detail, exc.errors, headers=exc.headers)

    @app.exception_handler(OptionError)
    async def option_error(request: Request, exc: OptionError):
        # a bad option value: 422 naming the key; a frozen one: 403 with A1111's AssertionError text
        if isinstance(exc, FrozenOption):
            return error_response(403, "AssertionError", str(exc), str(exc))
        return error_response(422, "HTTPException", str(exc), str(exc))

    async def any_error(request: Request, exc: Exception):
        status = _status_for(exc)
        if status >= 500:
            log.exception("API error on %s", request.url.path, exc_info=exc)
        detail, errors = _describe(exc)
        return error_response(status, type(exc).__name__, detail, errors, headers=getattr(exc, "headers", None))

    # Our client-error types get their own handlers (answered inside the app); anything else is a logged 500 in
    # A1111's shape, and the server goes on serving.
    for cls in (CheckpointNotFound, GenerationError, UnknownOption, InvalidImage, InvalidImageFormat,
                CheckpointLoadError, ControlNetError, ScriptError, VaeLoadError, FaceRestoreUnavailable,
                UnknownFaceRestorer, UpscalerNotFound, UpscalerLoadError, TaskCancelled, DuplicateTaskId,
                TrainingInputError, TrainingError, InterrogatorUnavailable, Exception):
        app.add_exception_handler(cls, any_error)


def _is_routing(exc: StarletteHTTPException) -> bool:
    return exc.detail in ("Not Found", "Method Not Allowed")


def info_json(info: dict) -> str:
    """``info`` as A1111 sends it: a string made by Python's json.dumps defaults (", ", ": ", ASCII escapes)."""
    return json.dumps(info, default=lambda o: None)
