"""A1111 ``modules.processing``: ``StableDiffusionProcessingTxt2Img`` / ``Img2Img`` (our script ``p``,
``webui.core.generation.processing.Processing``, made from A1111's constructor keywords), ``process_images``,
``Processed`` and ``fix_seed``.

``process_images(p)`` runs on the queue's worker, the only thread that touches models: called from a script's
``run`` (already on the worker) it runs at once; called from elsewhere (an extension's own API route) it is queued
and waited for, like any other job.
"""

from __future__ import annotations

import threading

from webui.compat import binding
from webui.core.generation.noise import fixed_seed
# A1111's names, re-exported for extensions
from webui.core.generation.processing import Processed as Processed
from webui.core.generation.processing import Processing, process_images as _process_images
from webui.core.types import GenerationRequest, InpaintOptions

_MODULE = "modules.processing"

# A1111 constructor keywords that are request fields under the same name
_FIELDS = (
    "prompt", "negative_prompt", "seed", "subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h",
    "sampler_name", "scheduler", "steps", "cfg_scale", "width", "height", "batch_size", "n_iter", "eta", "s_churn",
    "s_tmin", "s_tmax", "s_noise", "s_min_uncond", "denoising_strength", "resize_mode", "image_cfg_scale",
    "initial_noise_multiplier", "restore_faces", "tiling", "include_init_images", "firstphase_width",
    "firstphase_height", "disable_extra_networks",
)
# keywords handled below, or A1111 objects and folders this server decides itself (sd_model, outpath_*)
_IGNORED = ("sd_model", "outpath_samples", "outpath_grids", "do_not_reload_embeddings", "extra_generation_params",
            "script_args", "sampler_index", "enable_hr", "hr_scale", "hr_upscaler", "hr_second_pass_steps",
            "hr_resize_x", "hr_resize_y", "hr_checkpoint_name", "hr_sampler_name", "hr_scheduler", "hr_prompt",
            "hr_negative_prompt", "mask_blur", "inpainting_fill", "inpaint_full_res", "inpaint_full_res_padding",
            "inpainting_mask_invert", "mask_round", "init_images", "mask", "override_settings",
            "override_settings_restore_afterwards", "styles", "do_not_save_samples", "do_not_save_grid",
            "refiner_checkpoint", "refiner_switch_at", "mask_blur_x", "mask_blur_y", "latent_mask", "comments",
            "force_task_id")


def _png(image) -> bytes:
    import io

    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _make(mode: str, kwargs: dict) -> tuple[GenerationRequest, dict]:
    unknown = [k for k in kwargs if k not in _FIELDS and k not in _IGNORED]
    if unknown:
        raise TypeError(f"{_MODULE}: unsupported keyword(s) {', '.join(sorted(unknown))} (see {binding.DOCS})")
    fields = {k: kwargs[k] for k in _FIELDS if k in kwargs and kwargs[k] is not None}
    if "seed" in fields:
        fields["seed"] = int(fields["seed"])
    fields["styles"] = tuple(kwargs.get("styles") or ())
    fields["override_settings"] = dict(kwargs.get("override_settings") or {})
    fields["save_images"] = not kwargs.get("do_not_save_samples", False)
    fields["do_not_save_grid"] = bool(kwargs.get("do_not_save_grid", False))
    if mode != "txt2img":
        fields["init_images"] = tuple(_png(im) for im in kwargs.get("init_images") or ())
        if kwargs.get("mask") is not None:
            blur = kwargs.get("mask_blur", 4)
            fields["inpaint"] = InpaintOptions(
                mask=_png(kwargs["mask"]), mask_blur_x=int(kwargs.get("mask_blur_x", blur)),
                mask_blur_y=int(kwargs.get("mask_blur_y", blur)), mask_round=bool(kwargs.get("mask_round", True)),
                inpainting_fill=int(kwargs.get("inpainting_fill", 0)),
                inpaint_full_res=bool(kwargs.get("inpaint_full_res", True)),
                inpaint_full_res_padding=int(kwargs.get("inpaint_full_res_padding", 0)),
                inpainting_mask_invert=int(kwargs.get("inpainting_mask_invert", 0)))
            mode = "inpaint"
    return GenerationRequest(mode=mode, **fields), kwargs


class _ProcessingKind(type):
    """``isinstance(p, StableDiffusionProcessingImg2Img)`` -- A1111 extensions tell the tabs apart this way -- holds
    for every ``p`` this server hands a script: the job context of the always-on methods and the Processing of
    ``run``, by their ``is_img2img``."""

    def __instancecheck__(cls, obj) -> bool:
        from webui.core.generation.context import GenerationContext

        if type.__instancecheck__(cls, obj):
            return True
        if not isinstance(obj, (Processing, GenerationContext)):
            return False
        wanted = getattr(cls, "_img2img", None)
        return wanted is None or bool(obj.is_img2img) == wanted


class StableDiffusionProcessing(Processing, metaclass=_ProcessingKind):
    """A1111's ``p``: made from A1111's keywords on the running app's engine and progress."""

    _mode = "txt2img"

    def __init__(self, **kwargs):
        request, kwargs = _make(self._mode, kwargs)
        state = binding.current()
        super().__init__(request, engine=state.engine, progress=state.queue.progress)
        if self._mode == "txt2img" and kwargs.get("enable_hr"):
            self.enable_hr = True
            for key in ("hr_scale", "hr_upscaler", "hr_second_pass_steps", "hr_resize_x", "hr_resize_y",
                        "hr_checkpoint_name", "hr_sampler_name", "hr_scheduler", "hr_prompt", "hr_negative_prompt"):
                if kwargs.get(key) is not None:
                    setattr(self, key, kwargs[key])
        for key in ("refiner_checkpoint", "refiner_switch_at"):
            if kwargs.get(key) is not None:
                setattr(self, key, kwargs[key])
        self.extra_generation_params.update(kwargs.get("extra_generation_params") or {})
        if kwargs.get("script_args") is not None:
            self.script_args = tuple(kwargs["script_args"])


class StableDiffusionProcessingTxt2Img(StableDiffusionProcessing):
    _mode = "txt2img"
    _img2img = False


class StableDiffusionProcessingImg2Img(StableDiffusionProcessing):
    _mode = "img2img"
    _img2img = True


def process_images(p) -> Processed:
    """A1111 ``process_images(p)``: one job through the engine, on the queue's worker."""
    state = binding.current()
    if threading.current_thread().name == "generation-worker":
        return _process_images(p)

    def job(progress):
        p.progress = progress
        return _process_images(p)

    return state.queue.run("extension", job)


def fix_seed(p) -> None:
    """A1111 ``fix_seed``: a random seed and subseed where they are -1 (or empty), fixed on ``p``."""
    p.seed = fixed_seed(p.seed)
    p.subseed = fixed_seed(p.subseed)


def get_fixed_seed(seed) -> int:
    return fixed_seed(seed)


def __getattr__(name: str):
    raise binding.missing(_MODULE, name)
