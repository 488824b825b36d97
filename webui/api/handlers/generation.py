"""POST /sdapi/v1/txt2img: validate, build a GenerationRequest, run it on the queue, encode."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import Request, Response

from webui.api.errors import ApiError, info_json
from webui.api.handlers.options import checked_changes
from webui.api.image_input import decode_image_input, png_bytes_decoder
from webui.api.models import (
    ImageToImageResponse,
    StableDiffusionImg2ImgProcessingAPI,
    StableDiffusionTxt2ImgProcessingAPI,
    TextToImageResponse,
    apply_infotext,
    limit_problems,
    to_request,
)
from webui.core.io.images import encode_base64
from webui.core.options import switch_checkpoint
from webui.core.queue import TaskCancelled, new_task_id
from webui.plugins.scripts import run_generation
from webui.state import AppState

#: Response header carrying the task id of a txt2img/img2img job (ours; the id /progress?id_task= takes).
TASK_ID_HEADER = "X-Task-Id"


def header_value(task_id: str) -> str:
    """The task id as an HTTP header value: as it is, or percent-encoded when ``force_task_id`` holds characters a
    header cannot carry (latin-1 only), which would otherwise fail the finished job's response."""
    from urllib.parse import quote

    try:
        task_id.encode("latin-1")
        return task_id
    except UnicodeEncodeError:
        return quote(task_id, safe="()-_.")


def runner_for(state: AppState, mode: str):
    """The tab's ScriptRunner (A1111 scripts_txt2img / scripts_img2img)."""
    return state.scripts_img2img if mode != "txt2img" else state.scripts_txt2img


def selectable_titles(state: AppState, mode: str) -> tuple[str, ...]:
    """The ``script_name`` titles of ``mode`` (X/Y/Z plot, prompt matrix, ...)."""
    return tuple(runner_for(state, mode).titles)


def alwayson_titles(state: AppState, mode: str) -> tuple[str, ...]:
    """The always-on script titles of ``mode``: the runner's always-on scripts, then what the plugins answer to."""
    runner = [s.title() for s in runner_for(state, mode).alwayson_scripts]
    plugins = state.plugins.call("alwayson_scripts", is_img2img=mode != "txt2img") if state.plugins else []
    return (*runner, *(t for group in plugins for t in group))


def check_scripts(state: AppState, body: Any, mode: str) -> None:
    """A1111 ``get_selectable_script`` / ``init_script_args``: an unknown script title is a 422 "Script '<name>' not
    found" (titles match case-insensitively); a selectable script among the always-on ones is a 422 too.

    ``alwayson_scripts`` values are accepted as ``{"args": [...]}`` whose items may be positional values (list form)
    or objects (dict form, e.g. ControlNet units).
    """
    selectable = selectable_titles(state, mode)
    always_on = alwayson_titles(state, mode)
    if body.script_name and body.script_name.lower() not in [t.lower() for t in selectable]:
        raise ApiError(422, f"Script '{body.script_name}' not found", errors=(
            f"script_name: unknown script {body.script_name!r}; selectable {mode} scripts: "
            f"{', '.join(selectable) or '(none)'}"))
    for name, value in (body.alwayson_scripts or {}).items():
        lowered = str(name).lower()
        if lowered in [t.lower() for t in selectable]:
            raise ApiError(422, "Cannot have a selectable script in the always on scripts params",
                           errors=f"alwayson_scripts: {name!r} is a selectable script; use script_name")
        if lowered not in [t.lower() for t in always_on]:
            raise ApiError(422, f"Script '{name}' not found", errors=(
                f"alwayson_scripts: unknown script {name!r}; always-on {mode} scripts: {', '.join(always_on) or '(none)'}"))
        # A1111 reads value["args"] when present; any other value means "no args" (the script's defaults).
        if isinstance(value, dict) and not isinstance(value.get("args", []), (list, dict)):
            raise ApiError(422, f"alwayson_scripts[{name!r}].args must be a list (or an object of named args)")


def check_request(state: AppState, body: StableDiffusionTxt2ImgProcessingAPI, mode: str) -> dict[str, Any]:
    """Everything that can be refused before queueing, with a 4xx naming the field; returns the checked
    ``override_settings`` (coerced values; unchanged, restricted and folder keys dropped)."""
    problems = limit_problems(body)
    if problems:
        raise ApiError(422, "; ".join(msg for _, msg in problems),
                       errors=f"{problems[0][0]}: {problems[0][1]}")
    check_scripts(state, body, mode)
    return checked_changes(state, dict(body.override_settings or {}), for_request=True)


def keep_overrides(state: AppState, overrides: dict[str, Any]) -> None:
    """``override_settings_restore_afterwards: false`` (A1111 process_images): the overridden options stay set
    after the job -- in memory, saved with the next save, as in A1111. Runs on the worker, before the next job."""
    for key, value in overrides.items():
        if key == "sd_model_checkpoint":
            if value and isinstance(value, str) and state.registry.resolve(value) is not None:
                # the job loaded it; an unknown checkpoint was dropped for the job, and is not kept either
                switch_checkpoint(state.engine, state.settings, value, load=False, save=False)
            continue
        state.settings.set(key, value)


async def txt2img(body: StableDiffusionTxt2ImgProcessingAPI, request: Request, response: Response) -> TextToImageResponse:
    images, parameters, info = await _generate(body, request, response, "txt2img")
    return TextToImageResponse(images=images, parameters=parameters, info=info)


async def img2img(body: StableDiffusionImg2ImgProcessingAPI, request: Request, response: Response) -> ImageToImageResponse:
    """POST /sdapi/v1/img2img: as txt2img, with init images (and a mask for inpainting) decoded first; A1111 answers
    a missing init_images with 404 "Init image not found"."""
    state: AppState = request.app.state.webui
    if body.init_images is None:
        raise ApiError(404, "Init image not found", errors="init_images: img2img needs at least one base64 image")
    option = state.settings.get

    def decode_all():
        init = tuple(_png_bytes(decode_image_input(v, f"init_images[{i}]", option))
                     for i, v in enumerate(body.init_images))
        mask = _png_bytes(decode_image_input(body.mask, "mask", option)) if body.mask else None
        return init, mask

    init_images, mask = await asyncio.to_thread(decode_all)
    images, parameters, info = await _generate(body, request, response, "img2img", init_images=init_images, mask=mask)
    if not body.include_init_images:
        # A1111 echoes the request without the (large) images unless include_init_images is set
        parameters["init_images"] = None
        parameters["mask"] = None
    return ImageToImageResponse(images=images, parameters=parameters, info=info)


def script_args(state: AppState, body, mode: str) -> dict[str, Any]:
    """The request's ``extension_args``: the job's positional ``script_args`` tuple (A1111 init_script_args: the
    defaults, the selected script's ``script_args``, each always-on script's ``args``), and the ``alwayson_scripts``
    entries that plugins parse and check before the job is queued (ControlNet: images decoded, models checked; a bad
    value is a 422 naming it)."""
    runner = runner_for(state, mode)
    decode_image = png_bytes_decoder(state.settings.get)
    out: dict[str, Any] = {}
    runner_args: dict[str, list] = {}
    for title, value in (body.alwayson_scripts or {}).items():
        args = value.get("args", []) if isinstance(value, dict) else []
        script = runner.find(title)
        if script is not None and script.alwayson:
            runner_args[title] = list(args) if isinstance(args, list) else []
            continue
        for parsed in state.plugins.call("prepare_script_args", title=title, args=args, is_img2img=mode != "txt2img",
                                         decode_image=decode_image):
            out.update(parsed)
    mentioned = None
    if body.infotext:  # A1111 apply_infotext: always-on script args the infotext names (soft inpainting ...)
        from webui.core.io.infotext import parse_generation_parameters

        mentioned = runner.mentioned_args(parse_generation_parameters(body.infotext))
    out["script_args"] = runner.script_args(body.script_name, body.script_args, runner_args, mentioned)
    return out


def _png_bytes(image) -> bytes:
    """Decoded request images travel in the GenerationRequest as PNG bytes (plain data, no PIL objects); level 1
    keeps the encode cheap."""
    import io

    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


async def _generate(body, request: Request, response: Response, mode: str, **images) -> tuple[list, dict, str]:
    state: AppState = request.app.state.webui
    echo = body.model_dump()
    body = apply_infotext(body, state.settings, state.plugins)  # spec §6.5: fields the JSON left out come from the infotext
    task_id = body.force_task_id or new_task_id(mode)
    overrides = check_request(state, body, mode)
    extension_args = await asyncio.to_thread(script_args, state, body, mode)
    req = to_request(body, mode=mode, task_id=task_id, override_settings=overrides, extension_args=extension_args, **images)
    sticky = overrides if not body.override_settings_restore_afterwards else {}

    runner = runner_for(state, mode)

    def job(progress):
        result = run_generation(state.engine, runner, req, progress)
        keep_overrides(state, sticky)
        return result

    future = state.queue.submit(mode, job, task_id, job=f"scripts_{mode}")
    try:
        result = await asyncio.wrap_future(future)
    except TaskCancelled as e:
        e.headers = {TASK_ID_HEADER: header_value(task_id)}
        raise
    response.headers[TASK_ID_HEADER] = header_value(task_id)
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
    echo.update(body.model_dump())
    return images, echo, info_json(result.info)
