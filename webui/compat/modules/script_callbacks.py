"""A1111 ``modules.script_callbacks``: ``on_<kind>(callback, *, name=None)`` registers a callback in the running
app's registry (``webui.compat.runtime``); our hooks call them where A1111 calls its callbacks. A callback that
raises is reported on its extension (console, Extensions tab, /extensions) and skipped."""

from __future__ import annotations

from pipelines.denoiser import AfterCFGCallbackParams as AfterCFGCallbackParams  # A1111's names, re-exported
from pipelines.denoiser import CFGDenoisedParams as CFGDenoisedParams
from pipelines.denoiser import CFGDenoiserParams as CFGDenoiserParams
from webui.compat import binding
from webui.compat.runtime import ImageSaveParams as ImageSaveParams
from webui.compat.runtime import runtime


def _add(kind: str, callback, name: str | None) -> None:
    runtime().add(kind, callback, name)


def on_app_started(callback, *, name=None):
    """callback(demo, app): the FastAPI app is built (demo: the gradio Blocks, None with --nowebui)."""
    _add("app_started", callback, name)


def on_model_loaded(callback, *, name=None):
    """callback(sd_model): a checkpoint was loaded."""
    _add("model_loaded", callback, name)


def on_ui_tabs(callback, *, name=None):
    """callback() -> [(gradio Blocks, title, elem_id)]: extra top-level tabs of the page."""
    _add("ui_tabs", callback, name)


def on_ui_settings(callback, *, name=None):
    """callback(): add options with shared.opts.add_option(key, shared.OptionInfo(...))."""
    _add("ui_settings", callback, name)


def on_before_image_saved(callback, *, name=None):
    """callback(params: ImageSaveParams): before a generated image is written; may change image and pnginfo."""
    _add("before_image_saved", callback, name)


def on_image_saved(callback, *, name=None):
    """callback(params: ImageSaveParams): after a generated image is written (params.filename)."""
    _add("image_saved", callback, name)


def on_cfg_denoiser(callback, *, name=None):
    """callback(params: CFGDenoiserParams): before each UNet call; may replace x, image_cond, sigma, text_cond."""
    _add("cfg_denoiser", callback, name)
    _denoiser_plugin()


def on_cfg_denoised(callback, *, name=None):
    """callback(params: CFGDenoisedParams): after the UNet call, before the CFG combination."""
    _add("cfg_denoised", callback, name)
    _denoiser_plugin()


def on_cfg_after_cfg(callback, *, name=None):
    """callback(params: AfterCFGCallbackParams): after the CFG combination; may replace x."""
    _add("cfg_after_cfg", callback, name)
    _denoiser_plugin()


def on_before_component(callback, *, name=None):
    """callback(component, **kwargs) for each component of the page (see docs/extensions.md for when)."""
    _add("before_component", callback, name)


def on_after_component(callback, *, name=None):
    """callback(component, **kwargs) for each component of the page, kwargs with elem_id and label."""
    _add("after_component", callback, name)


def on_infotext_pasted(callback, *, name=None):
    """callback(infotext, params): an infotext was parsed for pasting; may change params."""
    _add("infotext_pasted", callback, name)


def on_before_ui(callback, *, name=None):
    """callback(): before the page is built."""
    _add("before_ui", callback, name)


def remove_current_script_callbacks():
    """Remove the callbacks the script being imported registered (A1111: before re-registering them)."""
    rt = runtime()
    script = rt.loading.script if rt.loading is not None else rt._caller()[0]
    rt.remove_script(script)


def remove_callbacks_for_function(callback_func):
    rt = runtime()
    rt.remove_function(callback_func)


def _denoiser_plugin() -> None:
    """Register the per-step plugin once some extension wants a per-step callback."""
    from webui.compat.runtime import DenoiserCallbacksPlugin

    state = binding.current()
    if state.plugins.get("extensions:denoiser") is None:
        state.plugins.register(DenoiserCallbacksPlugin(runtime()), "extensions:denoiser")


def __getattr__(name: str):
    raise binding.missing("modules.script_callbacks", name)
