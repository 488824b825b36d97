"""POST /sdapi/v1/interrogate (A1111 api.py ``interrogateapi``; spec §8.2): a prompt for an image, by the BLIP + CLIP
interrogator (``model: "clip"``) or DeepDanbooru (``"deepdanbooru"``).

A1111's order of checks is kept: an explicit ``image: null`` is 404 "Image not found", then the image is decoded
(§4.2), then an unknown model is 404 "Model not found". The work runs on the one queue (A1111 takes the queue lock,
job "interrogate"). Where A1111 would download a missing model file (or answer ``"<error>"`` inside the caption),
we answer 400 in A1111's error shape naming the files and the folder to put them in.
"""

from __future__ import annotations

import asyncio

from fastapi import Request
from pydantic import BaseModel, Field

from webui.api.errors import ApiError
from webui.api.image_input import decode_image_input
from webui.api.models import A1111Model
from webui.core.interrogate import INTERROGATE_MODELS, InterrogatorUnavailable


class InterrogateRequest(A1111Model):
    """A1111 InterrogateRequest. ``image`` may be sent as null (A1111 then answers 404 "Image not found")."""

    image: str | None = Field(default="", title="Image", description="Image to work on, must be a Base64 string "
                              "containing the image's data.")
    model: str = Field(default="clip", title="Model", description="The interrogate model used.")


class InterrogateResponse(BaseModel):
    caption: str | None = Field(default=None, title="Caption", description="The generated caption for the image.")


async def interrogate(body: InterrogateRequest, request: Request) -> InterrogateResponse:
    """``{"caption": str}``."""
    state = request.app.state.webui
    if body.image is None:
        raise ApiError(404, "Image not found", errors="image: send a base64 image")
    image = decode_image_input(body.image, "image", state.settings.get).convert("RGB")
    if body.model not in INTERROGATE_MODELS:
        raise ApiError(404, "Model not found",
                       errors=f"model: {body.model!r} is not one of {', '.join(INTERROGATE_MODELS)}")
    interrogators = state.interrogators

    def job(progress):
        return interrogators.interrogate(image, body.model)

    try:
        caption = await asyncio.wrap_future(state.queue.submit("interrogate", job, job="interrogate"))
    except InterrogatorUnavailable as e:
        raise ApiError(400, str(e), error="InterrogatorUnavailable") from e
    return InterrogateResponse(caption=caption)
