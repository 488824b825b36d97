"""The API route table: path, method, handler, response model. One place. Every route is guarded by --api-auth.

A1111 v1.10.1's ``modules/api/api.py`` routes, all of them. ``/sdapi/v1/version`` is absent on purpose:
clients tell A1111 from SD.Next by it. The ``/internal/*`` routes exist in UI mode only, as in A1111.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from fastapi import Depends, FastAPI

from webui.api import models as m
from webui.api.auth import make_auth_dependency
from webui.api.handlers import extras, generation, info, interrogate, models, networks, options, progress, server, train
from webui.config import Config


@dataclass(frozen=True)
class Route:
    path: str
    method: str
    handler: Callable
    response_model: Any = None
    ui_only: bool = False  # A1111 registers it only with the UI (not with --nowebui)
    flag: str | None = None  # registered only when this launch flag (a Config attribute) is set


#: The response model of routes that answer JSON ``null`` (A1111 handlers returning None).
Null = type(None)


@dataclass(frozen=True)
class ModelFor:
    """A response model built when the routes are installed (it depends on the option table or the parsed flags)."""

    build: Callable[[Config], Any]


ROUTES: tuple[Route, ...] = (
    Route("/sdapi/v1/txt2img", "POST", generation.txt2img, m.TextToImageResponse),
    Route("/sdapi/v1/img2img", "POST", generation.img2img, m.ImageToImageResponse),
    Route("/sdapi/v1/png-info", "POST", info.png_info, m.PNGInfoResponse),
    # A1111 declares no response model; the body it returns is exactly InterrogateResponse's
    Route("/sdapi/v1/interrogate", "POST", interrogate.interrogate, interrogate.InterrogateResponse),
    Route("/sdapi/v1/progress", "GET", progress.progress, m.ProgressResponse | m.TaskProgressResponse),
    Route("/sdapi/v1/interrupt", "POST", progress.interrupt, m.EmptyResponse),
    Route("/sdapi/v1/skip", "POST", progress.skip, Null),
    Route("/sdapi/v1/options", "GET", options.get_options, ModelFor(lambda config: m.options_model())),
    Route("/sdapi/v1/options", "POST", options.set_options, Null),
    Route("/sdapi/v1/cmd-flags", "GET", info.cmd_flags, ModelFor(lambda config: m.flags_model(config.cmd_flags()))),
    Route("/sdapi/v1/samplers", "GET", models.samplers, list[m.SamplerItem]),
    Route("/sdapi/v1/schedulers", "GET", models.schedulers, list[m.SchedulerItem]),
    Route("/sdapi/v1/latent-upscale-modes", "GET", info.latent_upscale_modes, list[m.LatentUpscalerModeItem]),
    Route("/sdapi/v1/sd-models", "GET", models.sd_models, list[m.SDModelItem]),
    Route("/sdapi/v1/refresh-checkpoints", "POST", models.refresh_checkpoints, Null),
    Route("/sdapi/v1/sd-vae", "GET", networks.sd_vae, list[m.SDVaeItem]),
    Route("/sdapi/v1/refresh-vae", "POST", networks.refresh_vae, Null),
    Route("/sdapi/v1/loras", "GET", networks.loras, list[m.LoraItem]),
    Route("/sdapi/v1/refresh-loras", "POST", networks.refresh_loras, Null),
    Route("/sdapi/v1/embeddings", "GET", networks.embeddings, m.EmbeddingsResponse),
    Route("/sdapi/v1/refresh-embeddings", "POST", networks.refresh_embeddings, Null),
    Route("/sdapi/v1/hypernetworks", "GET", networks.hypernetworks, list[m.HypernetworkItem]),
    Route("/sdapi/v1/prompt-styles", "GET", networks.prompt_styles, list[m.PromptStyleItem]),
    Route("/sdapi/v1/memory", "GET", info.memory, m.MemoryResponse),
    Route("/sdapi/v1/unload-checkpoint", "POST", models.unload_checkpoint, m.EmptyResponse),
    Route("/sdapi/v1/reload-checkpoint", "POST", models.reload_checkpoint, m.EmptyResponse),
    Route("/sdapi/v1/scripts", "GET", info.scripts, m.ScriptsList),
    Route("/sdapi/v1/script-info", "GET", info.script_info, list[m.ScriptInfo]),
    Route("/sdapi/v1/extensions", "GET", info.extensions, list[m.ExtensionItem]),
    Route("/sdapi/v1/extra-single-image", "POST", extras.extra_single_image, extras.ExtrasSingleImageResponse),
    Route("/sdapi/v1/extra-batch-images", "POST", extras.extra_batch_images, extras.ExtrasBatchImagesResponse),
    Route("/sdapi/v1/upscalers", "GET", extras.upscalers, list[extras.UpscalerItem]),
    Route("/sdapi/v1/realesrgan-models", "GET", extras.realesrgan_models, list[extras.RealesrganItem]),
    Route("/sdapi/v1/face-restorers", "GET", extras.face_restorers, list[extras.FaceRestorerItem]),
    Route("/sdapi/v1/create/embedding", "POST", train.create_embedding, train.CreateResponse),
    Route("/sdapi/v1/create/hypernetwork", "POST", train.create_hypernetwork, train.CreateResponse),
    Route("/sdapi/v1/train/embedding", "POST", train.train_embedding, train.TrainResponse),
    Route("/sdapi/v1/train/hypernetwork", "POST", train.train_hypernetwork, train.TrainResponse),
    Route("/sdapi/v1/server-kill", "POST", server.server_kill, None, flag="api_server_stop"),
    Route("/sdapi/v1/server-restart", "POST", server.server_restart, None, flag="api_server_stop"),
    Route("/sdapi/v1/server-stop", "POST", server.server_stop, None, flag="api_server_stop"),
    Route("/internal/progress", "POST", progress.internal_progress, m.InternalProgressResponse, ui_only=True),
    Route("/internal/pending-tasks", "GET", progress.pending_tasks, m.PendingTasksResponse, ui_only=True),
    Route("/internal/ping", "GET", progress.ping, m.EmptyResponse, ui_only=True),
)


def install_routes(app: FastAPI, config: Config, *, ui: bool) -> Callable:
    """Add the routes (the ``ui_only`` ones only when ``ui``: A1111 serves /internal/* with the UI, not under
    --nowebui), each guarded by ``--api-auth`` when it is set. Returns ``add_api_route(path, method, handler,
    response_model)``, which adds a plugin's route the same way (the on_app_started hook gets it)."""
    auth = make_auth_dependency(config.api_auth_users())
    router = app.router  # added straight to the app, as A1111 does: app.routes lists every route
    # A1111's FastAPI parses a body sent without Content-Type as JSON, and clients rely on it (Dify posts
    # data=json.dumps(...)); FastAPI >= 0.123 refuses such bodies unless told otherwise.
    extra = {"strict_content_type": False} if "strict_content_type" in inspect.signature(router.add_api_route).parameters \
        else {}

    def add_api_route(path: str, method: str, handler: Callable, response_model: Any = None) -> None:
        router.add_api_route(
            path,
            handler,
            methods=[method],
            response_model=response_model,
            dependencies=[Depends(auth)],  # every route: A1111 forgets loras/refresh-loras and /internal; we do not
            **extra,
        )

    for r in ROUTES:
        if r.ui_only and not ui or r.flag and not getattr(config, r.flag):
            continue
        add_api_route(r.path, r.method, r.handler,
                      r.response_model.build(config) if isinstance(r.response_model, ModelFor) else r.response_model)
    return add_api_route
