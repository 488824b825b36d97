"""GET/POST /sdapi/v1/options (A1111 §10). The checks and the checkpoint switch are core's (``webui.core.options``);
its OptionError / FrozenOption are answered in A1111's error shape by ``webui.api.errors``."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from webui.core.options import changed_options, store_options, switch_checkpoint
from webui.state import AppState


def _state(request: Request) -> AppState:
    return request.app.state.webui


def checked_changes(state: AppState, body: dict[str, Any], *, for_request: bool) -> dict[str, Any]:
    """``webui.core.options.changed_options`` with this server's settings, launch flags and registries."""
    return changed_options(body, settings=state.settings, flags=state.config, registry=state.registry,
                           vae_registry=state.vae_registry, for_request=for_request)


def get_options(request: Request):
    """GET /sdapi/v1/options: every registered option, stored values as stored (ints stay ints)."""
    return JSONResponse(_state(request).settings.all())


async def set_options(body: dict[str, Any], request: Request) -> None:
    """POST /sdapi/v1/options (A1111 §10.2): everything is checked before anything changes; a new checkpoint loads
    on the worker (waiting for a running job) and is stored as its title; the store is saved atomically."""
    state = _state(request)
    changes = checked_changes(state, body, for_request=False)
    ckpt = changes.get("sd_model_checkpoint")
    if ckpt is not None:
        changes["sd_model_checkpoint"] = await asyncio.wrap_future(state.queue.submit(
            "load-model", lambda p: switch_checkpoint(state.engine, state.settings, ckpt, save=False)))
    store_options(state.settings, changes)
