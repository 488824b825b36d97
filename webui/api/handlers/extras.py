"""Extras routes: POST /sdapi/v1/extra-single-image and /extra-batch-images; GET /sdapi/v1/upscalers,
/realesrgan-models and /face-restorers (A1111 api.py ``extras_single_image_api``, ``extras_batch_images_api``,
``get_upscalers``, ``get_realesrgan_models``, ``get_face_restorers``; spec §7, §11.3, §11.8, §11.9).

Thin: validate, decode, run :func:`webui.core.postprocess.extras.run_extras` on the queue (A1111 takes the queue lock; nothing is
saved, as in A1111's API), encode. A1111 answers an unknown upscaler with a 500 AssertionError and a missing face
model by silently returning the image; we answer 400 in A1111's error shape naming the valid upscalers, or the folder
and files a face restorer needs.

The request and response models live here until they move to webui/api/models.py (A1111's models.py names).
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from fastapi import Request
from pydantic import BaseModel, Field

from webui.api.errors import ApiError
from webui.api.image_input import decode_image_input
from webui.api.models import A1111Model
from webui.core.postprocess.extras import EXTRAS_BATCH, EXTRAS_SINGLE, ExtrasInputError, ExtrasOptions, run_extras
from webui.core.postprocess.face_restore import FaceRestorers, FaceRestoreUnavailable, UnknownFaceRestorer
from webui.core.io.images import encode_base64
from webui.core.postprocess.upscalers import UpscalerLoadError, UpscalerNotFound, UpscalerRegistry, realesrgan_models_api

# -- models (A1111 modules/api/models.py) ----------------------------------------------------------------------------


class ExtrasBaseRequest(A1111Model):
    """A1111 ExtrasBaseRequest: the fields are not Optional (null is a 422) and the ranges are enforced (422)."""

    resize_mode: Literal[0, 1] = Field(default=0, title="Resize Mode", description="Sets the resize mode: 0 to "
                                       "upscale by upscaling_resize amount, 1 to upscale up to upscaling_resize_h x "
                                       "upscaling_resize_w.")
    show_extras_results: bool = Field(default=True, title="Show results", description="Should the backend return "
                                      "the generated image?")
    gfpgan_visibility: float = Field(default=0, title="GFPGAN Visibility", ge=0, le=1, allow_inf_nan=False,
                                     description="Sets the visibility of GFPGAN, values should be between 0 and 1.")
    codeformer_visibility: float = Field(default=0, title="CodeFormer Visibility", ge=0, le=1, allow_inf_nan=False,
                                         description="Sets the visibility of CodeFormer, values should be between 0 "
                                         "and 1.")
    codeformer_weight: float = Field(default=0, title="CodeFormer Weight", ge=0, le=1, allow_inf_nan=False,
                                     description="Sets the weight of CodeFormer, values should be between 0 and 1.")
    upscaling_resize: float = Field(default=2, title="Upscaling Factor", gt=0, allow_inf_nan=False,
                                    description="By how much to upscale the image, only used when resize_mode=0.")
    upscaling_resize_w: int = Field(default=512, title="Target Width", ge=1, description="Target width for the "
                                    "upscaler to hit. Only used when resize_mode=1.")
    upscaling_resize_h: int = Field(default=512, title="Target Height", ge=1, description="Target height for the "
                                    "upscaler to hit. Only used when resize_mode=1.")
    upscaling_crop: bool = Field(default=True, title="Crop to fit", description="Should the upscaler crop the image "
                                 "to fit in the chosen size?")
    upscaler_1: str = Field(default="None", title="Main upscaler", description="The name of the main upscaler to "
                            "use, it has to be one of this list: /sdapi/v1/upscalers")
    upscaler_2: str = Field(default="None", title="Secondary upscaler", description="The name of the secondary "
                            "upscaler to use, it has to be one of this list: /sdapi/v1/upscalers")
    extras_upscaler_2_visibility: float = Field(default=0, title="Secondary upscaler visibility", ge=0, le=1,
                                                allow_inf_nan=False, description="Sets the visibility of secondary "
                                                "upscaler, values should be between 0 and 1.")
    upscale_first: bool = Field(default=False, title="Upscale first", description="Should the upscaler run before "
                                "restoring faces? (accepted and ignored, as in A1111)")


class ExtraBaseResponse(BaseModel):
    html_info: str = Field(title="HTML info", description="A series of HTML tags containing the process info.")


class ExtrasSingleImageRequest(ExtrasBaseRequest):
    image: str = Field(default="", title="Image", description="Image to work on, must be a Base64 string containing "
                       "the image's data.")


class ExtrasSingleImageResponse(ExtraBaseResponse):
    image: str | None = Field(default=None, title="Image", description="The generated image in base64 format.")


class FileData(A1111Model):
    data: str = Field(title="File data", description="Base64 representation of the file")
    name: str = Field(title="File name")


class ExtrasBatchImagesRequest(ExtrasBaseRequest):
    imageList: list[FileData] = Field(title="Images", description="List of images to work on. Must be Base64 "
                                      "strings")


class ExtrasBatchImagesResponse(ExtraBaseResponse):
    images: list[str] = Field(title="Images", description="The generated images in base64 format.")


class UpscalerItem(BaseModel):
    model_config = {"protected_namespaces": ()}

    name: str = Field(title="Name")
    model_name: str | None = Field(title="Model Name")
    model_path: str | None = Field(title="Path")
    model_url: str | None = Field(title="URL")
    scale: float | None = Field(title="Scale")


class RealesrganItem(BaseModel):
    name: str = Field(title="Name")
    path: str | None = Field(title="Path")
    scale: int | None = Field(title="Scale")


class FaceRestorerItem(BaseModel):
    name: str = Field(title="Name")
    cmd_dir: str | None = Field(title="Path")


# -- handlers --------------------------------------------------------------------------------------------------------


def _state(request: Request):
    return request.app.state.webui


def _extras(state) -> tuple[UpscalerRegistry, FaceRestorers]:
    """The upscaler registry and face restorers of the app state (AppState.upscalers / AppState.face_restorers)."""
    return state.upscalers, state.face_restorers


def to_options(body: ExtrasBaseRequest) -> ExtrasOptions:
    """The one mapping from A1111's extras request fields to ExtrasOptions (A1111 setUpscalers: upscaler_1/2 ->
    extras_upscaler_1/2)."""
    return ExtrasOptions(
        resize_mode=body.resize_mode,
        show_extras_results=body.show_extras_results,
        gfpgan_visibility=body.gfpgan_visibility,
        codeformer_visibility=body.codeformer_visibility,
        codeformer_weight=body.codeformer_weight,
        upscaling_resize=body.upscaling_resize,
        upscaling_resize_w=body.upscaling_resize_w,
        upscaling_resize_h=body.upscaling_resize_h,
        upscaling_crop=body.upscaling_crop,
        upscaler_1=body.upscaler_1,
        upscaler_2=body.upscaler_2,
        extras_upscaler_2_visibility=body.extras_upscaler_2_visibility,
        upscale_first=body.upscale_first,
    )


def _api_error(e: Exception) -> ApiError:
    if isinstance(e, UpscalerNotFound):
        # errors keeps A1111's own text (api: AssertionError "could not find upscaler named X")
        return ApiError(400, str(e), errors=f"could not find upscaler named {e.name}", error="AssertionError")
    # FaceRestoreUnavailable, UnknownFaceRestorer, UpscalerLoadError, ExtrasInputError: the message names the fix
    return ApiError(400, str(e), error=type(e).__name__)


def check_request(body: ExtrasBaseRequest, upscalers: UpscalerRegistry, restorers: FaceRestorers,
                  settings: Any) -> None:
    """Refuse before queueing what could only fail on the worker: unknown upscaler names (A1111 checks upscaler 2 even
    when its visibility is 0), and a face restorer asked for whose files are missing."""
    try:
        for name in (body.upscaler_1, body.upscaler_2):
            if name != "None":
                upscalers.find(name, settings)
        if body.gfpgan_visibility > 0:
            restorers.check("GFPGAN")
        if body.codeformer_visibility > 0:
            restorers.check("CodeFormer")
    except (UpscalerNotFound, FaceRestoreUnavailable) as e:
        raise _api_error(e) from e


async def _run(state, extras_mode: int, opts: ExtrasOptions, **inputs):
    upscalers, restorers = _extras(state)

    def job(progress):
        return run_extras(extras_mode, opts, upscalers=upscalers, restorers=restorers, settings=state.settings,
                          data_dir=state.config.data_dir, save_output=False, progress=progress, **inputs)

    try:
        return await asyncio.wrap_future(state.queue.submit("extras", job, job="extras"))
    except (UpscalerNotFound, FaceRestoreUnavailable, UnknownFaceRestorer, UpscalerLoadError, ExtrasInputError) as e:
        raise _api_error(e) from e


async def _encode(state, images) -> list[str]:
    """A1111 encode_pil_to_base64: option samples_format; PNG keeps the image's chunks (the input's and
    ``postprocessing``); JPEG/WebP get the ``parameters`` info, if any, in the EXIF comment."""
    fmt = state.settings.get("samples_format")
    quality = int(state.settings.get("jpeg_quality"))
    return await asyncio.to_thread(lambda: [encode_base64(im, fmt, None, jpeg_quality=quality) for im in images])


async def extra_single_image(body: ExtrasSingleImageRequest, request: Request) -> ExtrasSingleImageResponse:
    """POST /sdapi/v1/extra-single-image: ``{"html_info", "image"}``."""
    state = _state(request)
    upscalers, restorers = _extras(state)
    image = decode_image_input(body.image, "image", state.settings.get)
    check_request(body, upscalers, restorers, state.settings)
    result = await _run(state, EXTRAS_SINGLE, to_options(body), image=image)
    encoded = await _encode(state, result.images[:1])
    return ExtrasSingleImageResponse(image=encoded[0] if encoded else None, html_info=result.html_info)


async def extra_batch_images(body: ExtrasBatchImagesRequest, request: Request) -> ExtrasBatchImagesResponse:
    """POST /sdapi/v1/extra-batch-images: ``{"html_info", "images"}``; ``imageList[*].name`` is not used (A1111 passes
    decoded images without names, so nothing is named after them)."""
    state = _state(request)
    upscalers, restorers = _extras(state)
    images = [decode_image_input(item.data, f"imageList[{i}].data", state.settings.get)
              for i, item in enumerate(body.imageList)]
    check_request(body, upscalers, restorers, state.settings)
    result = await _run(state, EXTRAS_BATCH, to_options(body), image_folder=[(im, None) for im in images])
    return ExtrasBatchImagesResponse(images=await _encode(state, result.images), html_info=result.html_info)


def upscalers(request: Request) -> list[UpscalerItem]:
    """GET /sdapi/v1/upscalers: the folders are scanned again, so a file dropped in shows without a restart."""
    state = _state(request)
    registry, _ = _extras(state)
    registry.refresh()
    return [UpscalerItem(**item) for item in registry.api_list(state.settings)]


def realesrgan_models() -> list[RealesrganItem]:
    """GET /sdapi/v1/realesrgan-models: A1111's six definitions, whether enabled or present or not."""
    return [RealesrganItem(**item) for item in realesrgan_models_api()]


def face_restorers() -> list[FaceRestorerItem]:
    """GET /sdapi/v1/face-restorers."""
    return [FaceRestorerItem(**item) for item in FaceRestorers.api_list()]


#: The rows for webui/api/routes.py (path, method, handler, response model).
ROUTE_ROWS = (
    ("/sdapi/v1/extra-single-image", "POST", extra_single_image, ExtrasSingleImageResponse),
    ("/sdapi/v1/extra-batch-images", "POST", extra_batch_images, ExtrasBatchImagesResponse),
    ("/sdapi/v1/upscalers", "GET", upscalers, list[UpscalerItem]),
    ("/sdapi/v1/realesrgan-models", "GET", realesrgan_models, list[RealesrganItem]),
    ("/sdapi/v1/face-restorers", "GET", face_restorers, list[FaceRestorerItem]),
)
