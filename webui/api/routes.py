"""The /sdapi/v1 route table: path, method, handler, response model, whether --api-auth applies. One place."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

from fastapi import APIRouter, Depends, FastAPI

from webui.api.auth import make_auth_dependency
from webui.api.handlers import generation, models
from webui.api.models import SDModelItem, TextToImageResponse


@dataclass(frozen=True)
class Route:
    path: str
    method: str
    handler: Callable
    response_model: Any = None
    auth: bool = True


ROUTES: tuple[Route, ...] = (
    Route("/sdapi/v1/txt2img", "POST", generation.txt2img, TextToImageResponse),
    Route("/sdapi/v1/sd-models", "GET", models.sd_models, list[SDModelItem]),
    Route("/sdapi/v1/options", "GET", models.get_options, dict),
    Route("/sdapi/v1/options", "POST", models.set_options),
    Route("/sdapi/v1/samplers", "GET", models.samplers, list[dict]),
    Route("/sdapi/v1/schedulers", "GET", models.schedulers, list[dict]),
)


def install_routes(app: FastAPI, auth_users: dict[str, str]) -> None:
    auth = make_auth_dependency(auth_users)
    router = APIRouter()
    for r in ROUTES:
        router.add_api_route(
            r.path,
            r.handler,
            methods=[r.method],
            response_model=r.response_model,
            dependencies=[Depends(auth)] if r.auth else [],
        )
    app.include_router(router)
