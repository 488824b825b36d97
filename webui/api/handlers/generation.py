"""POST /sdapi/v1/txt2img: validate, build a GenerationRequest, run it on the queue, encode."""

from __future__ import annotations

import asyncio

from fastapi import Request

from webui.api.errors import info_json
from webui.api.models import StableDiffusionTxt2ImgProcessingAPI, TextToImageResponse, to_request
from webui.core.images import encode_base64
from webui.core.queue import new_task_id
from webui.state import AppState


async def txt2img(body: StableDiffusionTxt2ImgProcessingAPI, request: Request) -> TextToImageResponse:
    state: AppState = request.app.state.webui
    task_id = body.force_task_id or new_task_id("txt2img")
    req = to_request(body, mode="txt2img", task_id=task_id)
    future = state.queue.submit("txt2img", lambda progress: state.engine.generate(req, progress), task_id)
    result = await asyncio.wrap_future(future)
    images = []
    if body.send_images:
        fmt = state.settings.get("samples_format")
        quality = int(state.settings.get("jpeg_quality"))
        pnginfo = state.settings.get("enable_pnginfo")
        images = await asyncio.to_thread(
            lambda: [
                encode_base64(im, fmt, text if pnginfo else None, jpeg_quality=quality)
                for im, text in zip(result.images, result.infotexts)
            ]
        )
    return TextToImageResponse(images=images, parameters=body.model_dump(), info=info_json(result.info))
