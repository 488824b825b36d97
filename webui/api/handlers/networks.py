"""Model-folder listings of issue 03: LoRA, embeddings, hypernetworks, VAE, prompt styles (spec §11.6-§11.12).

Thin: each reads one AppState database; rescans that touch model state run on the queue worker, as A1111 runs them
under its queue lock.
"""

from __future__ import annotations

import asyncio

from fastapi import Request

from webui.api.models import (
    EmbeddingsResponse,
    HypernetworkItem,
    LoraItem,
    PromptStyleItem,
    SDVaeItem,
)
from webui.state import AppState


def _state(request: Request) -> AppState:
    return request.app.state.webui


def loras(request: Request) -> list[LoraItem]:
    return [
        LoraItem(name=i.name, alias=i.alias, path=i.path, metadata=dict(i.metadata or {}))
        for i in _state(request).loras.list()
    ]


async def refresh_loras(request: Request) -> None:
    await asyncio.to_thread(_state(request).loras.refresh)


def embeddings(request: Request) -> EmbeddingsResponse:
    state = _state(request)
    return EmbeddingsResponse(**state.embeddings.api_listing())


async def refresh_embeddings(request: Request) -> None:
    """A1111 force-reloads the embeddings for the loaded model (under its lock): on the worker here."""
    state = _state(request)

    def job(progress):
        comp = state.engine.current_model()
        if comp is None:
            comp = state.engine.load(state.engine.resolve_checkpoint(None))
        state.embeddings.load(comp, force=True)

    await asyncio.wrap_future(state.queue.submit("refresh-embeddings", job))


def hypernetworks(request: Request) -> list[HypernetworkItem]:
    return [HypernetworkItem(**item) for item in _state(request).hypernetworks.api_listing()]


def sd_vae(request: Request) -> list[SDVaeItem]:
    return [SDVaeItem(model_name=v.model_name, filename=v.filename) for v in _state(request).vae_registry.list()]


async def refresh_vae(request: Request) -> None:
    await asyncio.to_thread(_state(request).vae_registry.refresh)


def prompt_styles(request: Request) -> list[PromptStyleItem]:
    state = _state(request)
    state.styles.reload()  # A1111 re-reads styles.csv when it changes on disk; a small file, read each time
    return [PromptStyleItem(name=s.name, prompt=s.prompt, negative_prompt=s.negative_prompt) for s in state.styles.list()]
