"""A1111's ``StableDiffusionProcessing`` for scripts: a mutable ``p`` with A1111's attribute names, built from a
frozen GenerationRequest, and ``process_images(p)`` which turns it back into one and runs the one generation path.

Selectable scripts (X/Y/Z plot, prompt matrix, loopback, ...) change ``p`` between calls -- ``p.steps = 10``,
``p.prompt = ...``, ``p.override_settings["sd_model_checkpoint"] = ...`` -- exactly as they do in A1111, and each
``process_images(p)`` is an ordinary request: same request + same seed, same bytes as a request sent alone.
``Processed`` is A1111's result object (images, infotexts, seeds, ``js()``).
"""

from __future__ import annotations

import copy
import io
from typing import Any

from webui.core.types import GenerationRequest, GenerationResult, HiresOptions, InpaintOptions, RefinerOptions

# A1111 names whose value is the request field of the same name, copied both ways.
_SAME = (
    "prompt", "negative_prompt", "seed", "subseed", "subseed_strength", "seed_resize_from_w", "seed_resize_from_h",
    "sampler_name", "scheduler", "steps", "cfg_scale", "width", "height", "batch_size", "n_iter", "eta", "s_churn",
    "s_tmin", "s_tmax", "s_noise", "s_min_uncond", "denoising_strength", "resize_mode", "image_cfg_scale",
    "initial_noise_multiplier", "restore_faces", "tiling", "clip_skip", "disable_extra_networks", "firstphase_width",
    "firstphase_height", "include_init_images", "sampler_fallback", "checkpoint",
)


class Processing:
    """A1111's ``p`` before generation (StableDiffusionProcessingTxt2Img / Img2Img attribute names).

    ``engine`` and ``progress`` are what ``process_images`` runs on; ``script_args`` are the job's script args;
    ``outpath_samples`` / ``outpath_grids`` are the folders A1111 scripts save their own grids to.
    """

    def __init__(self, request: GenerationRequest, *, engine=None, progress=None):
        self.engine = engine
        self.progress = progress
        self._request = request
        self.is_img2img = request.mode != "txt2img"
        for name in _SAME:
            setattr(self, name, getattr(request, name))
        self.styles = list(request.styles)
        self.override_settings = dict(request.override_settings)
        self.override_settings_restore_afterwards = True
        self.extension_args = dict(request.extension_args)
        self.do_not_save_samples = not request.save_images
        self.do_not_save_grid = request.do_not_save_grid
        self.script_args: tuple = ()
        self.extra_generation_params: dict[str, Any] = {}
        self._engine_extra_keys: set[str] = set()  # the entries process_images got back from the engine itself
        self.comments: list[str] = []
        self.task_id = request.task_id
        # hires fix
        h = request.hires
        self.enable_hr = h is not None
        self.hr_scale = h.scale if h else 2.0
        self.hr_upscaler = h.upscaler if h else "Latent"
        self.hr_second_pass_steps = h.second_pass_steps if h else 0
        self.hr_resize_x = h.resize_x if h else 0
        self.hr_resize_y = h.resize_y if h else 0
        self.hr_checkpoint_name = h.checkpoint if h else None
        self.hr_sampler_name = h.sampler_name if h else None
        self.hr_scheduler = h.scheduler if h else None
        self.hr_prompt = h.prompt if h else ""
        self.hr_negative_prompt = h.negative_prompt if h else ""
        # refiner
        r = request.refiner
        self.refiner_checkpoint = r.checkpoint if r else None
        self.refiner_switch_at = r.switch_at if r else None
        # img2img and inpainting (images as PIL, as A1111 scripts see them)
        self.init_images = [_image(b) for b in request.init_images]
        self._encoded = list(zip(self.init_images, request.init_images))  # images left unchanged keep their bytes
        inp = request.inpaint
        self.image_mask = _image(inp.mask) if inp else None
        self.mask_blur_x = inp.mask_blur_x if inp else 4
        self.mask_blur_y = inp.mask_blur_y if inp else 4
        self.mask_round = inp.mask_round if inp else True
        self.inpainting_fill = inp.inpainting_fill if inp else 0
        self.inpaint_full_res = inp.inpaint_full_res if inp else True
        self.inpaint_full_res_padding = inp.inpaint_full_res_padding if inp else 0
        self.inpainting_mask_invert = inp.inpainting_mask_invert if inp else 0
        # filled by process_images (A1111 sets these during processing)
        self.all_prompts: list[str] = []
        self.all_negative_prompts: list[str] = []
        self.all_seeds: list[int] = []
        self.all_subseeds: list[int] = []

    @property
    def mask_blur(self) -> int:
        return self.mask_blur_x

    @mask_blur.setter
    def mask_blur(self, value: int) -> None:  # A1111's setter: an int sets both directions
        self.mask_blur_x = self.mask_blur_y = int(value)

    @property
    def sd_model(self):
        return self.engine.current_model() if self.engine is not None else None

    @property
    def opts(self):
        """The options this p would run with (stored options + override_settings)."""
        return self.engine.settings.with_overrides(self.override_settings)

    @property
    def outpath_samples(self) -> str:
        from webui.core.io.files import output_dir

        return output_dir(self.opts.get, "img2img" if self.is_img2img else "txt2img", self.engine.paths.data_dir)

    @property
    def outpath_grids(self) -> str:
        from webui.core.io.files import output_dir

        return output_dir(self.opts.get, "img2img" if self.is_img2img else "txt2img", self.engine.paths.data_dir,
                          grid=True)

    def copy(self) -> "Processing":
        """A copy that scripts may change without touching this one (lists and dicts copied, images shared)."""
        other = copy.copy(self)
        for name in ("styles", "override_settings", "extension_args", "extra_generation_params", "comments",
                     "init_images"):
            setattr(other, name, copy.copy(getattr(self, name)))
        return other

    def to_request(self) -> GenerationRequest:
        """This p as the frozen request the engine runs: the one Processing -> GenerationRequest mapping."""
        changes: dict[str, Any] = {name: getattr(self, name) for name in _SAME}
        hires = None
        if self.enable_hr and not self.is_img2img:
            hires = HiresOptions(
                scale=float(self.hr_scale), upscaler=self.hr_upscaler or "Latent",
                second_pass_steps=int(self.hr_second_pass_steps or 0), resize_x=int(self.hr_resize_x or 0),
                resize_y=int(self.hr_resize_y or 0), checkpoint=self.hr_checkpoint_name,
                sampler_name=self.hr_sampler_name or None, scheduler=self.hr_scheduler or None,
                prompt=self.hr_prompt or "", negative_prompt=self.hr_negative_prompt or "",
            )
        refiner = None
        if self.refiner_checkpoint not in (None, "", "None", "none"):
            refiner = RefinerOptions(checkpoint=self.refiner_checkpoint,
                                     switch_at=float(0.8 if self.refiner_switch_at is None else self.refiner_switch_at))
        inpaint = None
        if self.is_img2img and self.image_mask is not None:
            inpaint = InpaintOptions(
                mask=_png(self.image_mask), mask_blur_x=int(self.mask_blur_x), mask_blur_y=int(self.mask_blur_y),
                mask_round=bool(self.mask_round), inpainting_fill=int(self.inpainting_fill),
                inpaint_full_res=bool(self.inpaint_full_res),
                inpaint_full_res_padding=int(self.inpaint_full_res_padding),
                inpainting_mask_invert=int(self.inpainting_mask_invert),
            )
        extension_args = dict(self.extension_args)
        script_extras = {k: v for k, v in self.extra_generation_params.items() if k not in self._engine_extra_keys}
        if script_extras:
            # what the script put in p.extra_generation_params: the "scripts" plugin's process hook adds it to the
            # job's infotext entries (A1111 keeps p.extra_generation_params across process_images calls)
            extension_args["extra_generation_params"] = script_extras
        return self._request.replace(
            **changes,
            styles=tuple(self.styles),
            override_settings=dict(self.override_settings),
            extension_args=extension_args,
            save_images=not self.do_not_save_samples,
            do_not_save_grid=bool(self.do_not_save_grid),
            hires=hires,
            refiner=refiner,
            init_images=tuple(self._encoded_bytes(im) for im in self.init_images) if self.is_img2img else (),
            inpaint=inpaint,
        )


    def _encoded_bytes(self, image) -> bytes:
        for original, data in self._encoded:
            if original is image:
                return data
        return _png(image)


class Processed:
    """A1111's ``Processed``: the images and what describes them; ``js()`` is the API's ``info``.

    Built by ``process_images`` from a GenerationResult, or by a script (``Processed(p, images, seed, info)``) for
    the grid it assembles; ``js()`` then reports the script's lists over the first run's model and VAE fields.
    """

    def __init__(self, p: Processing, images_list: list, seed: int = -1, info: str = "", subseed: int | None = None,
                 all_prompts=None, all_negative_prompts=None, all_seeds=None, all_subseeds=None,
                 index_of_first_image: int = 0, infotexts=None, comments: str = "", base_info: dict | None = None):
        self.p = p
        self.images = list(images_list)
        self.seed = seed
        self.subseed = subseed
        self.info = info
        self.all_prompts = list(all_prompts or [p.prompt])
        self.all_negative_prompts = list(all_negative_prompts or [p.negative_prompt])
        self.all_seeds = list(all_seeds or [seed])
        self.all_subseeds = list(all_subseeds or [subseed if subseed is not None else -1])
        self.index_of_first_image = index_of_first_image
        self.infotexts = list(infotexts) if infotexts is not None else [info] * len(self.images)
        self.comments = comments
        self.base_info = dict(base_info or {})
        self.extra_generation_params = dict(p.extra_generation_params)

    @classmethod
    def from_result(cls, p: Processing, result: GenerationResult) -> "Processed":
        info = result.info
        return cls(
            p, result.images, seed=info.get("seed", p.seed), info=result.infotexts[info.get("index_of_first_image", 0)]
            if result.infotexts else "", subseed=info.get("subseed"), all_prompts=info.get("all_prompts"),
            all_negative_prompts=info.get("all_negative_prompts"), all_seeds=result.seeds,
            all_subseeds=result.subseeds, index_of_first_image=info.get("index_of_first_image", 0),
            infotexts=result.infotexts, comments="\n".join(info.get("comments", [])), base_info=info,
        )

    def js(self) -> dict:
        """A1111 ``Processed.js()``: the first run's info with this result's lists."""
        info = dict(self.base_info)
        info.update({
            "prompt": self.all_prompts[0] if self.all_prompts else self.p.prompt,
            "all_prompts": self.all_prompts,
            "negative_prompt": self.all_negative_prompts[0] if self.all_negative_prompts else self.p.negative_prompt,
            "all_negative_prompts": self.all_negative_prompts,
            "seed": self.seed,
            "all_seeds": self.all_seeds,
            "subseed": self.subseed,
            "all_subseeds": self.all_subseeds,
            "index_of_first_image": self.index_of_first_image,
            "infotexts": self.infotexts,
        })
        return info

    def to_result(self, request: GenerationRequest) -> GenerationResult:
        return GenerationResult(images=self.images, infotexts=self.infotexts, seeds=self.all_seeds,
                                subseeds=self.all_subseeds, info=self.js(), request=request)


def process_images(p: Processing) -> Processed:
    """A1111 ``process_images(p)``: run ``p`` through the one generation path and record what it made on ``p``."""
    request = p.to_request()
    sent = dict(request.extension_args.get("extra_generation_params") or {})
    result = p.engine.generate(request, p.progress)
    info = result.info
    p.all_prompts, p.all_negative_prompts = list(info["all_prompts"]), list(info["all_negative_prompts"])
    p.all_seeds, p.all_subseeds = list(result.seeds), list(result.subseeds)
    p.extra_generation_params = dict(info.get("extra_generation_params", {}))
    p._engine_extra_keys = set(p.extra_generation_params) - set(sent)
    return Processed.from_result(p, result)


def _image(data: bytes | None):
    if data is None:
        return None
    from PIL import Image

    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _png(image) -> bytes:
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    buf = io.BytesIO()
    image.save(buf, format="PNG", compress_level=1)
    return buf.getvalue()
