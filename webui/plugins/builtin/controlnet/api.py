"""The sd-webui-controlnet routes (its scripts/api.py): GET /controlnet/version, /controlnet/model_list,
/controlnet/module_list, /controlnet/settings and POST /controlnet/detect, in the extension's response shapes.

Thin: the model list and the preprocessors are ``webui.core.controlnet``; detection runs on the queue's worker (it
may load an annotator network). The plugin adds these routes in its ``on_app_started`` hook (``ROUTES``), guarded by
--api-auth like the app's own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request
from pydantic import BaseModel, Field

from webui.api.errors import ApiError
from webui.api.image_input import decode_image_input
from webui.core.controlnet import API_VERSION, ControlNetError, module_detail, module_list
from webui.core.controlnet import detect as core_detect
from webui.core.io.images import encode_base64

#: The extension's default for option control_net_unit_count (external_code.get_max_models_num).
DEFAULT_UNIT_COUNT = 3


class ControlNetVersionResponse(BaseModel):
    version: int


class ControlNetModelListResponse(BaseModel):
    model_list: list[str]


class ControlNetModuleListResponse(BaseModel):
    module_list: list[str]
    module_detail: dict[str, Any]


class ControlNetSettingsResponse(BaseModel):
    control_net_unit_count: int


class ControlNetDetectRequest(BaseModel):
    """The extension's Body(...) fields of POST /controlnet/detect."""

    controlnet_module: str = Field("none", title="Controlnet Module")
    controlnet_input_images: list[str] = Field(default_factory=list, title="Controlnet Input Images")
    controlnet_processor_res: int = Field(-1, title="Controlnet Processor Resolution")
    controlnet_threshold_a: float = Field(-1, title="Controlnet Threshold a")
    controlnet_threshold_b: float = Field(-1, title="Controlnet Threshold b")
    controlnet_masks: list[str] = Field(default_factory=list, title="Controlnet Masks")
    low_vram: bool = Field(False, title="Low vram")


class ControlNetDetectResponse(BaseModel):
    info: str
    images: list[str] | None = None


def _state(request: Request):
    return request.app.state.webui


def _registry(request: Request):
    """The plugin's ControlNetRegistry."""
    return _state(request).plugins.get("controlnet").registry


def version() -> ControlNetVersionResponse:
    """GET /controlnet/version: ``{"version": 3}`` (external_code.get_api_version)."""
    return ControlNetVersionResponse(version=API_VERSION)


def model_list(request: Request, update: bool = True) -> ControlNetModelListResponse:
    """GET /controlnet/model_list?update=true: the titles ``"name [hash8]"``, rescanned unless ``update=false``."""
    registry = _registry(request)
    if update:
        registry.refresh()
    return ControlNetModelListResponse(model_list=registry.model_list())


def module_list_route(alias_names: bool = False) -> ControlNetModuleListResponse:
    """GET /controlnet/module_list?alias_names=false: preprocessor names (UI labels with ``alias_names``) and their
    sliders."""
    return ControlNetModuleListResponse(module_list=module_list(alias_names), module_detail=module_detail(alias_names))


def settings(request: Request) -> ControlNetSettingsResponse:
    """GET /controlnet/settings: ``{"control_net_unit_count": n}`` (option control_net_unit_count, default 3)."""
    opts = _state(request).settings
    count = opts.get("control_net_unit_count") if "control_net_unit_count" in set(opts.keys()) else DEFAULT_UNIT_COUNT
    return ControlNetSettingsResponse(control_net_unit_count=int(count))


async def detect(body: ControlNetDetectRequest, request: Request) -> ControlNetDetectResponse:
    """POST /controlnet/detect: run one preprocessor on each input image; ``{"info": "Success", "images": [...]}``.
    An unknown module or no image is a 422, as in the extension; missing annotator weights a 422 naming the file."""
    from webui.core.controlnet import get_preprocessor

    state = _state(request)
    if get_preprocessor(body.controlnet_module) is None:
        raise ApiError(422, "Module not available",
                       errors=f"controlnet_module: {body.controlnet_module!r}; GET /controlnet/module_list lists them")
    if not body.controlnet_input_images:
        raise ApiError(422, "No image selected")
    option = state.settings.get
    images = [decode_image_input(v, f"controlnet_input_images[{i}]", option)
              for i, v in enumerate(body.controlnet_input_images)]

    def job(progress):
        return core_detect(body.controlnet_module, images, registry=_registry(request),
                           processor_res=body.controlnet_processor_res, threshold_a=body.controlnet_threshold_a,
                           threshold_b=body.controlnet_threshold_b)

    try:
        results = await asyncio.wrap_future(state.queue.submit("controlnet-detect", job))
    except ControlNetError as e:
        raise ApiError(422, str(e), error="ControlNetError") from e
    fmt = option("samples_format")
    encoded = await asyncio.to_thread(lambda: [encode_base64(im, fmt) for im in results])
    return ControlNetDetectResponse(info="Success", images=encoded)


#: (path, method, handler, response model): the extension's routes, added by the plugin at app start.
ROUTES = (
    ("/controlnet/version", "GET", version, ControlNetVersionResponse),
    ("/controlnet/model_list", "GET", model_list, ControlNetModelListResponse),
    ("/controlnet/module_list", "GET", module_list_route, ControlNetModuleListResponse),
    ("/controlnet/settings", "GET", settings, ControlNetSettingsResponse),
    ("/controlnet/detect", "POST", detect, ControlNetDetectResponse),
)
