"""Server information routes: memory, cmd-flags, scripts, script-info, extensions, latent-upscale-modes, png-info."""

from __future__ import annotations

import os

from fastapi import Request
from fastapi.responses import JSONResponse

from webui.api.handlers.generation import alwayson_titles, runner_for
from webui.api.image_input import decode_image_input
from webui.api.models import (
    ExtensionItem,
    LatentUpscalerModeItem,
    MemoryResponse,
    PNGInfoRequest,
    PNGInfoResponse,
    ScriptArg,
    ScriptInfo,
    ScriptsList,
)
from webui.state import AppState

# A1111 shared.latent_upscale_modes (the hires-fix "Latent ..." upscalers), in its order.
LATENT_UPSCALE_MODES = (
    "Latent",
    "Latent (antialiased)",
    "Latent (bicubic)",
    "Latent (bicubic antialiased)",
    "Latent (nearest)",
    "Latent (nearest-exact)",
)


def _state(request: Request) -> AppState:
    return request.app.state.webui


# -- memory ----------------------------------------------------------------------------------------------------------


def _ram() -> dict:
    """A1111 get_memory's ``ram``: from the process RSS and its share of system memory (psutil), else /proc."""
    try:
        import psutil

        process = psutil.Process(os.getpid())
        rss = process.memory_info().rss
        total = 100 * rss / process.memory_percent()
        return {"free": total - rss, "used": rss, "total": total}
    except Exception as psutil_error:
        try:
            with open("/proc/meminfo", encoding="ascii") as f:
                meminfo = {line.split(":")[0]: int(line.split()[1]) * 1024 for line in f if line.strip()}
            with open("/proc/self/status", encoding="ascii") as f:
                rss = next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmRSS:"))
            total = float(meminfo["MemTotal"])
            return {"free": total - rss, "used": rss, "total": total}
        except Exception:
            return {"error": f"{psutil_error}"}


def _cuda() -> dict:
    """A1111 get_memory's ``cuda``: device totals and the allocator's statistics, or ``{"error": "unavailable"}``."""
    try:
        import torch

        if not torch.cuda.is_available():
            return {"error": "unavailable"}
        free, total = torch.cuda.mem_get_info()
        s = dict(torch.cuda.memory_stats())
        return {
            "system": {"free": free, "used": total - free, "total": total},
            "active": {"current": s.get("active_bytes.all.current", 0), "peak": s.get("active_bytes.all.peak", 0)},
            "allocated": {"current": s.get("allocated_bytes.all.current", 0),
                          "peak": s.get("allocated_bytes.all.peak", 0)},
            "reserved": {"current": s.get("reserved_bytes.all.current", 0),
                         "peak": s.get("reserved_bytes.all.peak", 0)},
            "inactive": {"current": s.get("inactive_split_bytes.all.current", 0),
                         "peak": s.get("inactive_split_bytes.all.peak", 0)},
            "events": {"retries": s.get("num_alloc_retries", 0), "oom": s.get("num_ooms", 0)},
        }
    except Exception as e:
        return {"error": f"{e}"}


def memory() -> MemoryResponse:
    """GET /sdapi/v1/memory."""
    return MemoryResponse(ram=_ram(), cuda=_cuda())


# -- flags, scripts, extensions --------------------------------------------------------------------------------------


def cmd_flags(request: Request):
    """GET /sdapi/v1/cmd-flags: every flag under its argparse dest (Config.cmd_flags), values as parsed."""
    return JSONResponse(_state(request).config.cmd_flags())


def scripts(request: Request) -> ScriptsList:
    """GET /sdapi/v1/scripts: lower-cased titles of every script of each tab (always-on and selectable), in the
    runner's order, then the plugins' always-on ones."""
    state = request.app.state.webui
    return ScriptsList(txt2img=[_api_name(state, "txt2img", t) for t in _titles(state, "txt2img")],
                       img2img=[_api_name(state, "img2img", t) for t in _titles(state, "img2img")])


def _api_name(state, mode: str, title: str) -> str:
    """A1111's ``script.name``: the lower-cased title, except for a script without controls (``ui()`` None), which
    keeps its class's ``name`` (A1111's create_script_ui_inner returns before lower-casing it), e.g. "Hypertile"."""
    runner = runner_for(state, mode)
    script = runner.find(title)
    if script is not None and getattr(script, "name", None) and script.no_controls:
        return script.name
    return title.lower()


def _titles(state, mode: str) -> list[str]:
    runner = runner_for(state, mode)
    plugin_titles = [t for t in alwayson_titles(state, mode) if runner.find(t) is None]
    return [s.title() for s in runner.scripts] + plugin_titles


def script_info(request: Request) -> list[ScriptInfo]:
    """GET /sdapi/v1/script-info: each script's name, kind and positional arguments (label, default, limits,
    choices), txt2img scripts then img2img ones."""
    state = request.app.state.webui
    out = []
    for tab in ("txt2img", "img2img"):
        runner = runner_for(state, tab)
        for title in _titles(state, tab):
            script = runner.find(title)
            args = ([ScriptArg(**a.api_info(state)) for a in runner.inputs[script.args_from:script.args_to]]
                    if script else [])
            out.append(ScriptInfo(name=_api_name(state, tab, title), is_alwayson=script.alwayson if script else True,
                                  is_img2img=tab == "img2img", args=args))
    return out


def extensions(request: Request) -> list[ExtensionItem]:
    """GET /sdapi/v1/extensions (A1111 get_extensions_list): the extension folders listed afresh (an extension
    installed since the start is there), each one's git info read, and those with a remote reported -- A1111's
    ``ext.remote is not None``, which leaves out built-ins (A1111 never reads their git info) and folders that are
    not clones. ``enabled`` is "not in disabled_extensions", as A1111's list_extensions sets it."""
    from webui.plugins.extensions import discover

    state = _state(request)
    items = []
    for ext in discover(state.config, state.settings).all:
        ext.read_info_from_repo()
        if ext.remote is None or ext.branch is None:  # A1111: a detached HEAD fails its read, remote None
            continue
        items.append(ExtensionItem(name=ext.name, remote=ext.remote, branch=ext.branch,
                                   commit_hash=ext.commit_hash, version=ext.version,
                                   commit_date=str(ext.commit_date) if ext.commit_date is not None else "",
                                   enabled=ext.enabled))
    return items


def latent_upscale_modes() -> list[LatentUpscalerModeItem]:
    """GET /sdapi/v1/latent-upscale-modes."""
    return [LatentUpscalerModeItem(name=name) for name in LATENT_UPSCALE_MODES]


# -- png-info --------------------------------------------------------------------------------------------------------


def _jsonable(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def png_info(body: PNGInfoRequest, request: Request) -> PNGInfoResponse:
    """POST /sdapi/v1/png-info (A1111 pnginfoapi): the infotext, the image's other info items, the parsed fields."""
    from webui.core.io.images import read_info_from_image
    from webui.core.io.infotext import parse_generation_parameters
    from webui.core.generation.samplers import SAMPLERS

    settings = _state(request).settings
    image = decode_image_input(body.image.strip(), "image", settings.get)
    samplers_map = {}
    for sampler in SAMPLERS:
        samplers_map[sampler.name.lower()] = sampler.name
        for alias in sampler.aliases:
            samplers_map[alias.lower()] = sampler.name
    geninfo, items = read_info_from_image(image, samplers_map)
    geninfo = geninfo or ""
    params = parse_generation_parameters(
        geninfo,
        skip_fields=settings.get("infotext_skip_pasting") or (),
        infotext_styles=settings.get("infotext_styles"),
        use_old_hires_fix_width_height=bool(settings.get("use_old_hires_fix_width_height")),
    )
    # the built-in Lora extension's paste callbacks (spec §8.1): old AddNet fields become tags, Lora hashes
    # rewrite tags to the names this server knows the files by
    from webui.core.io.infotext import infotext_pasted

    state = _state(request)
    lookup = None
    if state.loras is not None:
        preferred = settings.get("lora_preferred_name")
        table = {}
        for lora in state.loras.list():
            short = state.loras.shorthash(lora, compute=False)
            if short:
                table[short] = state.loras.prompt_name(lora, preferred)
        lookup = table.get
    infotext_pasted(params, lookup)
    return PNGInfoResponse(info=geninfo, items=_jsonable(items), parameters=_jsonable(params))
