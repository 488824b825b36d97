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


async def set_options(body: dict, request: Request) -> None:
    """POST /sdapi/v1/options (A1111 §10.2): an unknown checkpoint fails before anything changes; keys are set in
    body order; API-restricted and display-only keys are ignored; the checkpoint loads on the worker (waiting for a
    running job) and is stored as its title; the store is saved atomically."""
    import asyncio

    from webui.core.registry import CheckpointNotFound
    from webui.core.settings import OPTIONS_BY_KEY, UnknownOption

    state = _state(request)
    ckpt = body.get("sd_model_checkpoint")
    if ckpt is not None:
        info = state.registry.resolve(ckpt)
        if info is None:
            raise CheckpointNotFound(ckpt, [c.title for c in state.registry.list()])
        comp = await asyncio.wrap_future(state.queue.submit("load-model", lambda p: state.engine.load(info)))
        body = {**body, "sd_model_checkpoint": comp.info.title}
    unknown = [k for k in body if k not in OPTIONS_BY_KEY]
    if unknown:
        raise UnknownOption(unknown[0])
    for key, value in body.items():
        opt = OPTIONS_BY_KEY[key]
        if opt.api_restricted or opt.display_only:
            continue
        state.settings.set(key, value)
    state.settings.save()
    return None
