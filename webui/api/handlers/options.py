"""GET/POST /sdapi/v1/options (A1111 §10) and the checks shared with a request's ``override_settings``.

A1111 stores whatever a client posts and fails later (a 500 at generation or encoding time); we check each changed
value against the option's type, range and choices first and answer a 4xx naming the key. A value equal to the
current one is always accepted as a no-op, so the full GET body posted back unchanged (Open WebUI) always works --
even for values stored before these checks, or under ``--freeze-settings``.
"""

from __future__ import annotations

import asyncio
import math
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse

from webui.api.errors import ApiError
from webui.config import Config
from webui.core.models.registry import CheckpointNotFound
from webui.core.settings import OPTIONS_BY_KEY, Option, UnknownOption
from webui.state import AppState

# A1111 shared_options.restricted_opts: keys --hide-ui-dir-config makes unsettable (silently ignored), verbatim --
# including its omission of outdir_img2img_grids.
HIDE_UI_DIR_CONFIG_KEYS = frozenset({
    "samples_filename_pattern", "directories_filename_pattern", "outdir_samples", "outdir_txt2img_samples",
    "outdir_img2img_samples", "outdir_extras_samples", "outdir_grids", "outdir_txt2img_grids", "outdir_save",
    "outdir_init_images", "temp_dir", "clean_temp_dir_at_start",
})


def _state(request: Request) -> AppState:
    return request.app.state.webui


def _bad(key: str, why: str) -> ApiError:
    return ApiError(422, f"option {key!r}: {why}")


def coerce_option(opt: Option, value: Any) -> Any:
    """``value`` as option ``opt`` stores it (type from the default, pydantic-v1-like leniency), or ApiError 422.

    Options whose default is None (sd_model_checkpoint, upscaler_for_img2img) take any value here; their meaning is
    checked by the caller.
    """
    default, key = opt.default, opt.key
    if default is None:
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            out: Any = value
        elif isinstance(value, (int, float)) and value in (0, 1):
            out = bool(value)
        elif isinstance(value, str) and value.strip().lower() in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            out = value.strip().lower() in ("true", "1", "yes", "on")
        else:
            raise _bad(key, f"expected true or false, got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool):
            raise _bad(key, f"expected an integer, got {value!r}")
        if isinstance(value, int):
            out = value
        elif isinstance(value, float) and math.isfinite(value) and value == int(value):
            out = int(value)
        elif isinstance(value, str):
            try:
                out = int(value.strip())
            except ValueError:
                raise _bad(key, f"expected an integer, got {value!r}") from None
        else:
            raise _bad(key, f"expected an integer, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool):
            raise _bad(key, f"expected a number, got {value!r}")
        try:
            out = float(value) if isinstance(value, (int, float, str)) else None
        except ValueError:
            out = None
        if out is None or not math.isfinite(out):
            raise _bad(key, f"expected a finite number, got {value!r}")
    elif isinstance(default, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # pydantic v1 str coercion
        if not isinstance(value, str):
            raise _bad(key, f"expected a string, got {value!r}")
        out = value
    elif isinstance(default, list):
        if not isinstance(value, list):
            raise _bad(key, f"expected a list, got {value!r}")
        out = value
    else:
        out = value
    if opt.choices and isinstance(out, str):
        match = next((c for c in opt.choices if c == out), None) or next(
            (c for c in opt.choices if isinstance(c, str) and c.lower() == out.lower()), None)
        if match is None:
            raise _bad(key, f"{out!r} is not one of: {', '.join(map(str, opt.choices))}")
        out = match
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        if opt.minimum is not None and out < opt.minimum:
            raise _bad(key, f"must be at least {opt.minimum} (got {out})")
        if opt.maximum is not None and out > opt.maximum:
            raise _bad(key, f"must be at most {opt.maximum} (got {out})")
    return out


def frozen_reason(config: Config, opt: Option) -> str | None:
    """Why ``--freeze-settings*`` forbids changing ``opt`` (A1111 Options.__setattr__'s messages), else None."""
    if config.freeze_settings:
        return "changing settings is disabled"
    if config.freeze_settings_in_sections:
        sections = [s.strip() for s in config.freeze_settings_in_sections.split(",")]
        if opt.section in sections:
            return (f"not possible to set '{opt.key}' because settings in section '{opt.section}' are frozen with "
                    f"--freeze-settings-in-sections")
    if config.freeze_specific_settings:
        keys = [k.strip() for k in config.freeze_specific_settings.split(",")]
        if opt.key in keys:
            return f"not possible to set '{opt.key}' because this setting is frozen with --freeze-specific-settings"
    return None


def _check_vae(state: AppState, value: Any) -> None:
    names = state.vae_registry.names()
    if value in ("Automatic", "None") or state.vae_registry.resolve(value) is not None:
        return
    raise _bad("sd_vae", f"unknown VAE {value!r}; valid values: {', '.join(['Automatic', 'None', *names])}")


def changed_options(state: AppState, body: dict[str, Any], *, for_request: bool) -> dict[str, Any]:
    """The entries of ``body`` that would change an option, checked and coerced, in body order.

    Unknown keys -> UnknownOption (400). Unchanged values, API-restricted and display-only keys and (with
    ``--hide-ui-dir-config``) folder keys are dropped, as A1111's ``opts.set(..., is_api=True)`` ignores them. A
    frozen key -> 403. ``for_request``: the body is a request's ``override_settings``, where an unknown
    ``sd_model_checkpoint`` is left for the engine to drop silently (A1111 §6.5); for POST /options it is a 404.
    """
    config = state.config
    out: dict[str, Any] = {}
    for key in body:
        if key not in OPTIONS_BY_KEY:
            raise UnknownOption(key)
    for key, value in body.items():
        opt = OPTIONS_BY_KEY[key]
        if opt.api_restricted or opt.display_only:
            continue
        if config.hide_ui_dir_config and key in HIDE_UI_DIR_CONFIG_KEYS:
            continue
        if value == state.settings.get(key):
            continue
        value = coerce_option(opt, value)
        if value == state.settings.get(key):
            continue
        reason = frozen_reason(config, opt)
        if reason is not None:
            raise ApiError(403, reason, error="AssertionError")
        if key == "sd_model_checkpoint" and not for_request and value is not None and (
                not isinstance(value, str) or state.registry.resolve(value) is None):
            raise CheckpointNotFound(str(value), [c.title for c in state.registry.list()])
        if key == "sd_vae":
            _check_vae(state, value)
        out[key] = value
    return out


def get_options(request: Request):
    """GET /sdapi/v1/options: every registered option, stored values as stored (ints stay ints)."""
    return JSONResponse(_state(request).settings.all())


async def set_options(body: dict[str, Any], request: Request) -> None:
    """POST /sdapi/v1/options (A1111 §10.2): everything is checked before anything changes; a new checkpoint loads
    on the worker (waiting for a running job) and is stored as its title; the store is saved atomically."""
    state = _state(request)
    changes = changed_options(state, body, for_request=False)
    ckpt = changes.get("sd_model_checkpoint")
    if ckpt is not None:
        info = state.registry.resolve(ckpt)
        comp = await asyncio.wrap_future(state.queue.submit("load-model", lambda p: state.engine.load(info)))
        changes["sd_model_checkpoint"] = comp.info.title
    for key, value in changes.items():
        state.settings.set(key, value)
    state.settings.save()
