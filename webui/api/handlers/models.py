"""Model routes: GET sd-models, samplers, schedulers; POST refresh-checkpoints, unload-checkpoint, reload-checkpoint."""

from __future__ import annotations

import asyncio

from fastapi import Request

from webui.api.models import EmptyResponse, SamplerItem, SchedulerItem, SDModelItem
from webui.state import AppState


def _state(request: Request) -> AppState:
    return request.app.state.webui


def sd_models(request: Request) -> list[SDModelItem]:
    return [
        SDModelItem(title=c.title, model_name=c.model_name, hash=c.shorthash, sha256=c.sha256, filename=c.filename,
                    config=c.config)
        for c in _state(request).registry.list()
    ]


def samplers() -> list[SamplerItem]:
    from webui.core.generation.samplers import samplers_api_list

    return [SamplerItem(**s) for s in samplers_api_list()]


def schedulers() -> list[SchedulerItem]:
    from pipelines.schedules import SCHEDULERS

    return [
        SchedulerItem(name=s.name, label=s.label, aliases=list(s.aliases) or None, default_rho=float(s.default_rho),
                      need_inner_model=s.need_inner_model)
        for s in SCHEDULERS
    ]


async def refresh_checkpoints(request: Request) -> None:
    """POST /sdapi/v1/refresh-checkpoints: rescan the checkpoint folders on the worker (A1111 takes the queue lock)."""
    state = _state(request)

    def job(progress):
        state.registry.refresh()
        state.engine.models.forget_failures()  # a replaced file gets another chance

    await asyncio.wrap_future(state.queue.submit("refresh-checkpoints", job))


async def unload_checkpoint(request: Request) -> EmptyResponse:
    """POST /sdapi/v1/unload-checkpoint: free the loaded checkpoints (A1111 moves the model to RAM; we drop it and
    reload-checkpoint reads it again). Runs on the worker, after the running job. Any body (oobabooga sends "")."""
    state = _state(request)
    await asyncio.wrap_future(state.queue.submit("unload-checkpoint", lambda p: state.engine.unload()))
    return EmptyResponse()


async def reload_checkpoint(request: Request) -> EmptyResponse:
    """POST /sdapi/v1/reload-checkpoint: load the selected checkpoint (sd_model_checkpoint) if it is not loaded."""
    state = _state(request)

    def job(progress):
        state.engine.load(state.engine.resolve_checkpoint(None))

    await asyncio.wrap_future(state.queue.submit("reload-checkpoint", job))
    return EmptyResponse()
