"""A1111's always-on processing scripts (modules/processing_scripts/*.py): Refiner, Seed and Sampler, whose
controls live in the txt2img/img2img tabs, and Comments.

A1111 marks Refiner, Seed and Sampler ``setup_for_ui_only`` (they are its ScriptBuiltinUI): a request made in the UI
takes their values from the tab's controls, and the API accepts them by name in ``alwayson_scripts`` with these
argument lists but leaves the request's own fields (``refiner_checkpoint``, ``seed``, ``steps``, ...) in charge. Our
UI tabs map those controls to the request directly, so ``setup`` here serves any other caller that runs the
runner's setup with ``is_ui=True``.
"""

from __future__ import annotations

from webui.plugins.scripts import AlwaysVisible, Script, ScriptArg


class ScriptRefiner(Script):
    setup_for_ui_only = True

    def title(self):
        return "Refiner"

    def show(self, is_img2img):
        return AlwaysVisible

    def ui(self, is_img2img):
        return [
            ScriptArg("Refiner", False, "checkbox"),
            ScriptArg("Checkpoint", "", "dropdown", choices=[""], choices_from="checkpoints"),
            ScriptArg("Switch at", 0.8, "slider", minimum=0.01, maximum=1.0, step=0.01),
        ]

    def setup(self, p, enable_refiner, refiner_checkpoint, refiner_switch_at):
        if not enable_refiner or refiner_checkpoint in (None, "", "None"):
            p.refiner_checkpoint = None
            p.refiner_switch_at = None
        else:
            p.refiner_checkpoint = refiner_checkpoint
            p.refiner_switch_at = refiner_switch_at


class ScriptSeed(Script):
    setup_for_ui_only = True

    def title(self):
        return "Seed"

    def show(self, is_img2img):
        return AlwaysVisible

    def ui(self, is_img2img):
        return [
            ScriptArg("Seed", -1, "number"),
            ScriptArg("Extra", False, "checkbox"),
            ScriptArg("Variation seed", -1, "number"),
            ScriptArg("Variation strength", 0.0, "slider", minimum=0, maximum=1, step=0.01),
            ScriptArg("Resize seed from width", 0, "slider", minimum=0, maximum=2048, step=8),
            ScriptArg("Resize seed from height", 0, "slider", minimum=0, maximum=2048, step=8),
        ]

    def setup(self, p, seed, seed_checkbox, subseed, subseed_strength, seed_resize_from_w, seed_resize_from_h):
        p.seed = seed
        if seed_checkbox and subseed_strength > 0:
            p.subseed = subseed
            p.subseed_strength = subseed_strength
        if seed_checkbox and seed_resize_from_w > 0 and seed_resize_from_h > 0:
            p.seed_resize_from_w = seed_resize_from_w
            p.seed_resize_from_h = seed_resize_from_h


class ScriptSampler(Script):
    setup_for_ui_only = True

    def title(self):
        return "Sampler"

    def show(self, is_img2img):
        return AlwaysVisible

    def ui(self, is_img2img):
        from pipelines.schedules import SCHEDULERS
        from webui.core.generation.samplers import SAMPLERS

        samplers = [s.name for s in SAMPLERS]
        schedules = [s.label for s in SCHEDULERS]
        return [
            ScriptArg("Sampling steps", 20, "slider", minimum=1, maximum=150, step=1),
            ScriptArg("Sampling method", samplers[0], "dropdown", choices=samplers),
            ScriptArg("Schedule type", schedules[0], "dropdown", choices=schedules),
        ]

    def setup(self, p, steps, sampler_name, scheduler):
        p.steps = steps
        p.sampler_name = sampler_name
        p.scheduler = scheduler


class ScriptComments(Script):
    """A1111's Comments script: ``#`` comments are taken out of the prompts (option enable_prompt_comments) and
    the negative prompts before anything else sees them; the engine's prompt setup does that stripping, for every
    request, so this script has no work of its own beyond being listed and accepted by name."""

    def title(self):
        return "Comments"

    def show(self, is_img2img):
        return AlwaysVisible
