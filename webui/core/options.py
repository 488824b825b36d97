"""Changing options: coercion, frozen options, "which entries change anything", and the one checkpoint switch.

Used alike by POST /sdapi/v1/options, a request's ``override_settings``, the Settings tab and the top bar.

A1111 stores whatever a client posts and fails later (a 500 at generation or encoding time); we check each changed
value against the option's type, range and choices first and raise :class:`OptionError` naming the key (the API
answers it in A1111's error shape). A value equal to the current one is always accepted as a no-op, so the full
GET /options body posted back unchanged (Open WebUI) always works -- even for values stored before these checks, or
under ``--freeze-settings``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any, Protocol

from webui.core.models.registry import CheckpointNotFound
from webui.core.settings import Option, Settings, UnknownOption

if TYPE_CHECKING:
    from webui.core.generation.engine import Engine
    from webui.core.models.registry import CheckpointRegistry, VaeRegistry

# A1111 shared_options.restricted_opts: keys --hide-ui-dir-config makes unsettable (silently ignored), verbatim --
# including its omission of outdir_img2img_grids.
HIDE_UI_DIR_CONFIG_KEYS = frozenset({
    "samples_filename_pattern", "directories_filename_pattern", "outdir_samples", "outdir_txt2img_samples",
    "outdir_img2img_samples", "outdir_extras_samples", "outdir_grids", "outdir_txt2img_grids", "outdir_save",
    "outdir_init_images", "temp_dir", "clean_temp_dir_at_start",
})


class OptionError(ValueError):
    """A value option ``key`` cannot take (wrong type, out of range, not a choice, unknown VAE). The API answers 422
    with ``detail`` = ``str(error)``."""

    def __init__(self, key: str, message: str):
        super().__init__(f"option {key!r}: {message}")
        self.key = key
        self.message = message


class FrozenOption(OptionError):
    """``--freeze-settings*`` forbids changing ``key``; the text is A1111 Options.__setattr__'s assertion message.
    The API answers 403 with error "AssertionError", as A1111."""

    def __init__(self, key: str, message: str):
        ValueError.__init__(self, message)
        self.key = key
        self.message = message


class FreezeFlags(Protocol):
    """The launch flags that restrict changing options (``webui.config.Config`` has them)."""

    freeze_settings: bool
    freeze_settings_in_sections: str | None
    freeze_specific_settings: str | None
    hide_ui_dir_config: bool


def coerce_option(opt: Option, value: Any) -> Any:
    """``value`` as option ``opt`` stores it (type from the default, pydantic-v1-like leniency), or OptionError.

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
            raise OptionError(key, f"expected true or false, got {value!r}")
    elif isinstance(default, int):
        if isinstance(value, bool):
            raise OptionError(key, f"expected an integer, got {value!r}")
        if isinstance(value, int):
            out = value
        elif isinstance(value, float) and math.isfinite(value) and value == int(value):
            out = int(value)
        elif isinstance(value, str):
            try:
                out = int(value.strip())
            except ValueError:
                raise OptionError(key, f"expected an integer, got {value!r}") from None
        else:
            raise OptionError(key, f"expected an integer, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool):
            raise OptionError(key, f"expected a number, got {value!r}")
        try:
            out = float(value) if isinstance(value, (int, float, str)) else None
        except ValueError:
            out = None
        if out is None or not math.isfinite(out):
            raise OptionError(key, f"expected a finite number, got {value!r}")
    elif isinstance(default, str):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # pydantic v1 str coercion
        if not isinstance(value, str):
            raise OptionError(key, f"expected a string, got {value!r}")
        out = value
    elif isinstance(default, list):
        if not isinstance(value, list):
            raise OptionError(key, f"expected a list, got {value!r}")
        out = value
    else:
        out = value
    if opt.choices and isinstance(out, str):
        match = next((c for c in opt.choices if c == out), None) or next(
            (c for c in opt.choices if isinstance(c, str) and c.lower() == out.lower()), None)
        if match is None:
            raise OptionError(key, f"{out!r} is not one of: {', '.join(map(str, opt.choices))}")
        out = match
    if isinstance(out, (int, float)) and not isinstance(out, bool):
        if opt.minimum is not None and out < opt.minimum:
            raise OptionError(key, f"must be at least {opt.minimum} (got {out})")
        if opt.maximum is not None and out > opt.maximum:
            raise OptionError(key, f"must be at most {opt.maximum} (got {out})")
    return out


def frozen_reason(flags: FreezeFlags, opt: Option) -> str | None:
    """Why ``--freeze-settings*`` forbids changing ``opt`` (A1111 Options.__setattr__'s messages), else None."""
    if flags.freeze_settings:
        return "changing settings is disabled"
    if flags.freeze_settings_in_sections:
        sections = [s.strip() for s in flags.freeze_settings_in_sections.split(",")]
        if opt.section in sections:
            return (f"not possible to set '{opt.key}' because settings in section '{opt.section}' are frozen with "
                    f"--freeze-settings-in-sections")
    if flags.freeze_specific_settings:
        keys = [k.strip() for k in flags.freeze_specific_settings.split(",")]
        if opt.key in keys:
            return f"not possible to set '{opt.key}' because this setting is frozen with --freeze-specific-settings"
    return None


def _check_vae(vae_registry: VaeRegistry, value: Any) -> None:
    if value in ("Automatic", "None") or vae_registry.resolve(value) is not None:
        return
    names = vae_registry.names()
    raise OptionError("sd_vae", f"unknown VAE {value!r}; valid values: {', '.join(['Automatic', 'None', *names])}")


def changed_options(body: dict[str, Any], *, settings: Settings, flags: FreezeFlags, registry: CheckpointRegistry,
                    vae_registry: VaeRegistry, for_request: bool) -> dict[str, Any]:
    """The entries of ``body`` that would change an option, checked and coerced, in body order.

    Unknown keys -> UnknownOption. Unchanged values, API-restricted and display-only keys and (with
    ``--hide-ui-dir-config``) folder keys are dropped, as A1111's ``opts.set(..., is_api=True)`` ignores them. A
    frozen key -> FrozenOption; a bad value -> OptionError. ``for_request``: the body is a request's
    ``override_settings``, where an unknown ``sd_model_checkpoint`` is left for the engine to drop silently (A1111
    §6.5); otherwise it is a CheckpointNotFound.
    """
    out: dict[str, Any] = {}
    for key in body:
        if not settings.has(key):
            raise UnknownOption(key)
    for key, value in body.items():
        opt = settings.option(key)
        if opt.api_restricted or opt.display_only:
            continue
        if flags.hide_ui_dir_config and key in HIDE_UI_DIR_CONFIG_KEYS:
            continue
        if value == settings.get(key):
            continue
        value = coerce_option(opt, value)
        if value == settings.get(key):
            continue
        reason = frozen_reason(flags, opt)
        if reason is not None:
            raise FrozenOption(key, reason)
        if key == "sd_model_checkpoint" and not for_request and value is not None and (
                not isinstance(value, str) or registry.resolve(value) is None):
            raise CheckpointNotFound(str(value), [c.title for c in registry.list()])
        if key == "sd_vae":
            _check_vae(vae_registry, value)
        out[key] = value
    return out


def store_options(settings: Settings, changes: dict[str, Any]) -> None:
    """Store checked ``changes`` (from :func:`changed_options`, the checkpoint already switched) and save
    config.json (atomically), as A1111's ``opts.save`` after a POST /options or "Apply settings"."""
    for key, value in changes.items():
        settings.set(key, value)
    settings.save()


def switch_checkpoint(engine: Engine, settings: Settings, name: str | None, *, load: bool = True,
                      save: bool = True) -> str:
    """Make checkpoint ``name`` the selected one and return its title (A1111 ``reload_model_weights`` + setting
    ``sd_model_checkpoint``). The one checkpoint switch: start-up preload, POST /options, the Settings tab, the top
    bar, and ``override_settings_restore_afterwards: false``.

    ``name``: any of A1111's aliases; None -> the stored setting, else the first checkpoint. Unknown -> the engine's
    CheckpointNotFound. ``load``: load it (on the queue's worker: this touches the model); False when the job that
    just ran has already loaded it (a sticky override), where the title is the loaded model's if it is that file.
    The title is stored in ``sd_model_checkpoint``; ``save``: config.json is saved when that changed it.
    """
    info = engine.resolve_checkpoint(name)
    if load:
        info = engine.load(info).info
    else:
        current = engine.current_model()
        info = current.info if current is not None and current.info.filename == info.filename else info
    changed = settings.set("sd_model_checkpoint", info.title)
    # A1111 load_model: opts.data["sd_checkpoint_hash"] = checkpoint_info.sha256 (webuiapi's util_get_current_model
    # matches it against /sd-models' sha256); None when hashing is off (--no-hashing)
    changed = settings.set("sd_checkpoint_hash", getattr(info, "sha256", None) or "") or changed
    if changed and save:
        settings.save()
    return info.title
