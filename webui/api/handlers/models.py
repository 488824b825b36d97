"""Model and option listings: GET /sdapi/v1/sd-models, GET /sdapi/v1/options, samplers and schedulers."""

from __future__ import annotations

from fastapi import Request

from webui.api.models import SDModelItem
from webui.state import AppState


def _state(request: Request) -> AppState:
    return request.app.state.webui


def sd_models(request: Request) -> list[SDModelItem]:
    return [
        SDModelItem(title=c.title, model_name=c.model_name, hash=c.shorthash, sha256=c.sha256, filename=c.filename,
                    config=c.config)
        for c in _state(request).registry.list()
    ]


def get_options(request: Request) -> dict:
    return _state(request).settings.all()


def samplers(request: Request) -> list[dict]:
    from webui.core.samplers import samplers_api_list

    return samplers_api_list()


def schedulers(request: Request) -> list[dict]:
    from pipelines.schedules import SCHEDULERS

    return [
        {"name": s.name, "label": s.label, "aliases": list(s.aliases) or None, "default_rho": float(s.default_rho),
         "need_inner_model": s.need_inner_model}
        for s in SCHEDULERS
    ]
