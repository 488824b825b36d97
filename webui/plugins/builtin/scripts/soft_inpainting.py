"""A1111 1.10's built-in "Soft Inpainting" extension (extensions-builtin/soft-inpainting) as an always-on img2img
script: with a mask, each step's latent blend follows the mask's opacity scaled by the noise level (instead of the
hard ``denoised * nmask + init_latent * mask``), the final hard blend is skipped, and after decoding the original
is composited back where the image changed little. Disabled (the default), it does nothing.

The math lives in :mod:`webui.core.generation.soft_inpainting`; this is the Script (A1111's argument list, labels,
limits and infotext keys) and its hooks: ``before_process`` (A1111's ``process`` step, which runs before img2img
init there and turns mask rounding off; our init runs before the process hook), ``on_mask_blend``, ``post_sample``
and ``postprocess_maskoverlay``.
"""

from __future__ import annotations

from webui.core.generation.soft_inpainting import (
    ENABLED_GEN_PARAM_LABEL,
    GEN_PARAM_LABELS,
    SoftInpaintingSettings,
    apply_adaptive_masks,
    original_overlays,
    soft_blend,
)
from webui.plugins.scripts import AlwaysVisible, Script, ScriptArg

TITLE = "Soft Inpainting"
_DEFAULT = SoftInpaintingSettings()


def _uses_inpainting(p) -> bool:
    """A1111 processing_uses_inpainting: the job has a mask (p.image_mask / p.mask / p.nmask)."""
    if p.init is not None:
        return p.init.nmask is not None
    return getattr(p.request, "inpaint", None) is not None


class ScriptSoftInpainting(Script):
    def title(self):
        return TITLE

    def show(self, is_img2img):
        return AlwaysVisible if is_img2img else False

    def ui(self, is_img2img):
        if not is_img2img:
            return []
        d = _DEFAULT
        args = [
            ScriptArg("Soft inpainting", False, "checkbox"),
            ScriptArg("Schedule bias", d.mask_blend_power, "slider", minimum=0, maximum=8, step=0.1,
                      info="Shifts when preservation of original content occurs during denoising."),
            ScriptArg("Preservation strength", d.mask_blend_scale, "slider", minimum=0, maximum=8, step=0.05,
                      info="How strongly partially masked content should be preserved."),
            ScriptArg("Transition contrast boost", d.inpaint_detail_preservation, "slider", minimum=1, maximum=32,
                      step=0.5, info="Amplifies the contrast that may be lost in partially masked regions."),
            ScriptArg("Mask influence", d.composite_mask_influence, "slider", minimum=0, maximum=1, step=0.05,
                      info="How strongly the original mask should bias the difference threshold."),
            ScriptArg("Difference threshold", d.composite_difference_threshold, "slider", minimum=0, maximum=8,
                      step=0.25,
                      info="How much an image region can change before the original pixels are not blended in anymore."),
            ScriptArg("Difference contrast", d.composite_difference_contrast, "slider", minimum=0, maximum=8,
                      step=0.25, info="How sharp the transition should be between blended and not blended."),
        ]
        keys = [ENABLED_GEN_PARAM_LABEL, *GEN_PARAM_LABELS.values()]
        self.infotext_fields = list(zip(args, keys))
        self.paste_field_names = list(keys)
        return args

    @staticmethod
    def _settings(args) -> SoftInpaintingSettings:
        return SoftInpaintingSettings(*args)

    def before_process(self, p, enabled, *settings):
        """A1111's process(), which runs before img2img init there: mask rounding off, the infotext keys (first
        among the extra parameters, as in A1111, before init's "Mask blur" ...)."""
        if enabled and _uses_inpainting(p):
            p.mask_round = False  # A1111: "Shut off the rounding it normally does."
            self._settings(settings).add_generation_params(p.extra_generation_params)

    def on_mask_blend(self, p, mba, enabled, *settings):
        if not enabled or not _uses_inpainting(p):
            return
        if mba.is_final_blend:
            mba.blended_latent = mba.current_latent
            return
        mba.blended_latent = soft_blend(self._settings(settings), mba.init_latent, mba.current_latent, mba.nmask,
                                        mba.sigma)

    def post_sample(self, p, ps, enabled, *settings):
        if not enabled or not _uses_inpainting(p):
            return
        init = p.init
        overlays = original_overlays(init.init_images, background_color=p.opts.get("img2img_background_color") or
                                     "#ffffff", paste_to=init.paste_to, resize_mode=p.request.resize_mode,
                                     width=p.width, height=p.height, batch_size=p.batch_size)
        masks = apply_adaptive_masks(self._settings(settings), init.nmask, init.latent, ps.samples, overlays,
                                     p.width, p.height, init.paste_to)
        p.plugin_data[TITLE] = (masks, overlays)

    def postprocess_maskoverlay(self, p, ppmo, enabled, *settings):
        if not enabled or not _uses_inpainting(p):
            return
        state = p.plugin_data.get(TITLE)
        if state is None:
            return
        masks, overlays = state
        ppmo.mask_for_overlay = masks[ppmo.index]
        ppmo.overlay_image = overlays[ppmo.index]
