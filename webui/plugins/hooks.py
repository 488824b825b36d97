"""Every extension point, in one file: pluggy hookspecs named after A1111's script callbacks.

``p`` is the per-request :class:`webui.core.generation.context.GenerationContext` (A1111's ``p``); the engine calls
these at the moments A1111's ``process_images`` calls its scripts. A plugin implements any subset with
``@hookimpl``; pluggy passes only the arguments an implementation names. A hook that raises fails its request with
a :class:`~webui.plugins.manager.PluginError` naming the plugin, never the server.
"""

from __future__ import annotations

import pluggy

PROJECT = "webui"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# -- one generation (A1111 modules/processing.py process_images and scripts.Script) ----------------------------------

@hookspec
def before_process(p):
    """Before anything of the job is set up (A1111 Script.before_process); settings are already in effect."""


@hookspec
def process(p):
    """Once per job, prompts, seeds and sizes set, before the first batch (A1111 Script.process)."""


@hookspec
def before_process_batch(p, batch_number, prompts, seeds, subseeds):
    """Before a batch's extra networks and conditioning (A1111 Script.before_process_batch)."""


@hookspec
def process_batch(p, batch_number, prompts, seeds, subseeds):
    """After the batch's networks are active, before its conditioning and sampling (A1111 Script.process_batch)."""


@hookspec
def postprocess_batch(p, images, batch_number):
    """After the batch is decoded, before per-image post-processing (A1111 Script.postprocess_batch)."""


@hookspec
def postprocess_batch_list(p, pp, batch_number):
    """The batch's images as a list ``pp.images`` that may be replaced or extended (A1111 postprocess_batch_list)."""


@hookspec
def postprocess_image(p, pp):
    """Each image after face restoration, before color correction and overlay; may replace ``pp.image``."""


@hookspec
def sample_noise(p, noise, batch_number, seeds, subseeds, encoder):
    """img2img only: the first pass's noise just drawn (before the noise multiplier); return a replacement (used as
    is, the multiplier skipped) or None. ``encoder`` is the batch's prompt encoder (A1111 scripts override p.sample)."""


@hookspec
def post_sample(p, ps):
    """After sampling (hires included), before decoding; may replace ``ps.samples`` (A1111 Script.post_sample)."""


@hookspec
def postprocess_maskoverlay(p, ppmo):
    """Each inpainted image before its overlay is pasted back; may replace ``ppmo.mask_for_overlay`` and
    ``ppmo.overlay_image`` (A1111 Script.postprocess_maskoverlay)."""


@hookspec
def postprocess(p, processed):
    """After the whole job, the grid included; may append to ``processed.images`` (A1111 Script.postprocess)."""


@hookspec
def before_hr(p):
    """Before the hires-fix second pass of each batch (A1111 Script.before_hr)."""


@hookspec
def prepare_script_args(title, args, is_img2img, decode_image):
    """Parse and check an ``alwayson_scripts`` entry before the job is queued; return the parsed args when ``title``
    is this plugin's (kept in ``GenerationRequest.extension_args``), else None. Raise ValueError for bad input."""


@hookspec
def alwayson_scripts(is_img2img):
    """The always-on script titles this plugin answers to (``/sdapi/v1/scripts``, ``alwayson_scripts`` keys)."""


# -- the denoiser (A1111 script_callbacks cfg_denoiser / cfg_denoised / cfg_after_cfg) -------------------------------

@hookspec
def on_cfg_denoiser(p, params):
    """Before each UNet call of the CFG denoiser; ``params`` carries x, sigma, conditioning, step, total steps."""


@hookspec
def on_cfg_denoised(p, params):
    """After the UNet call, before the cond/uncond combination (A1111 cfg_denoised_callback)."""


@hookspec
def on_cfg_after_cfg(p, params):
    """After the CFG combination; may change ``params.x`` (A1111 cfg_after_cfg_callback)."""


@hookspec
def on_mask_blend(p, mba):
    """Each inpainting latent blend, per step and the final one (``mba.is_final_blend``); may set
    ``mba.blended_latent`` (A1111 Script.on_mask_blend)."""


# -- files and models ------------------------------------------------------------------------------------------------

@hookspec
def on_before_image_saved(p, params):
    """Before a generated image is written; ``params`` has image, filename and pnginfo (A1111 before_image_saved)."""


@hookspec
def on_image_saved(p, params):
    """After a generated image is written (A1111 image_saved_callback)."""


@hookspec
def on_model_loaded(sd_model):
    """After a checkpoint is loaded into the cache (A1111 model_loaded_callback)."""


# -- the app and the page --------------------------------------------------------------------------------------------

@hookspec
def on_app_started(app, state, add_api_route):
    """The FastAPI app is built; add routes with ``add_api_route(path, method, handler, response_model)``, which
    guards them with --api-auth as our own routes (A1111 app_started_callback)."""


@hookspec
def on_app_mounted(app, state, demo):
    """The app is complete (``demo``: the page's gradio Blocks, None with --nowebui), with or without --api; routes
    added here are served before the page (A1111 app_started_callback(demo, app) for extensions' callbacks)."""


@hookspec
def on_before_ui(state):
    """Before the page is built (A1111 before_ui_callback)."""


@hookspec
def on_ui_components(state, components):
    """Every component of the page just built, as ``(component, kwargs)`` in page order, called inside the page's
    Blocks so that listeners can be attached (A1111 before_component / after_component callbacks)."""


@hookspec
def on_ui_tabs(state):
    """Extra top-level tabs: return a list of ``(gradio Blocks, title, elem_id)`` (A1111 ui_tabs_callback)."""


@hookspec
def on_ui_settings(settings):
    """Before the Settings tab is built, with the app's Settings (A1111 ui_settings_callback; add_option: issue 11)."""


@hookspec
def on_infotext_pasted(infotext, params):
    """After an infotext is parsed for pasting; may add or change ``params`` (A1111 infotext_pasted_callback)."""


@hookspec
def ui_alwayson(state, form, tab):
    """The always-on script's controls under the generation parameters of ``tab`` (A1111 AlwaysVisible Script.ui)."""


@hookspec
def ui_script_args(values, tab):
    """The UI form's ``values`` -> ``{title: parsed args}`` for ``GenerationRequest.extension_args``, or None."""
