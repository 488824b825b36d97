"""A1111 ``scripts/loopback.py`` (v1.10.1): "Loopback", img2img only. Each loop's output is the next loop's init
image; the seed goes up by one per loop and the denoising strength moves from the request's to "Final denoising
strength" along the chosen curve (Aggressive: sin, Linear, Lazy: 1 - cos). With one batch every loop's image is
returned (after a one-row grid of them when option return_grid is on); with several, each batch's last image.

"Append interrogated prompt at each iteration" (CLIP or DeepBooru) sets each loop's prompt to the original prompt
plus ", " and what the interrogator says of that loop's init image (A1111's rule), through the server's one
``Interrogators`` (webui.core.interrogate).

Differences from A1111:
- A missing interrogator model file stops the script with its message (a 4xx through the API); A1111 would
  download the file, or put "<error>" into the prompt.
- Option img2img_color_correction corrects each loop towards its own init image (the engine's per-request
  correction); A1111 corrects every loop towards the first init image.
"""

from __future__ import annotations

import math

from webui.plugins.scripts import Script, ScriptArg, ScriptError

TITLE = "Loopback"
INTERROGATORS = ["None", "CLIP", "DeepBooru"]
#: The dropdown's choices -> the interrogate model names (/sdapi/v1/interrogate's ``model``)
INTERROGATE_MODEL = {"CLIP": "clip", "DeepBooru": "deepdanbooru"}


class ScriptLoopback(Script):
    def title(self):
        return TITLE

    def show(self, is_img2img):
        return is_img2img

    def ui(self, is_img2img):
        return [
            ScriptArg("Loops", 4, "slider", minimum=1, maximum=32, step=1),
            ScriptArg("Final denoising strength", 0.5, "slider", minimum=0, maximum=1, step=0.01),
            ScriptArg("Denoising strength curve", "Linear", "dropdown", choices=["Aggressive", "Linear", "Lazy"]),
            ScriptArg("Append interrogated prompt at each iteration", "None", "dropdown", choices=INTERROGATORS),
        ]

    def run(self, p, loops, final_denoising_strength, denoising_curve, append_interrogation):
        from webui.core.generation.processing import Processed, process_images
        from webui.core.io.images import image_grid
        from webui.plugins.builtin.scripts.common import fix_seed, save_script_image

        if append_interrogation not in INTERROGATORS:
            raise ScriptError(TITLE, f"Append interrogated prompt at each iteration: unknown choice "
                                     f"{append_interrogation!r}; choices: {', '.join(INTERROGATORS)}")
        interrogators = getattr(p.engine, "interrogators", None)
        if append_interrogation != "None" and interrogators is None:
            raise ScriptError(TITLE, f"Append interrogated prompt at each iteration: {append_interrogation!r} needs "
                                     "the server's interrogators, which this engine was built without; use 'None'")
        if not p.init_images:
            raise ScriptError(TITLE, "needs an init image")
        loops = int(loops)
        if loops < 1:
            raise ScriptError(TITLE, f"Loops must be at least 1, got {loops}")

        fix_seed(p)
        batch_count = p.n_iter
        p.extra_generation_params = {
            "Final denoising strength": final_denoising_strength,
            "Denoising curve": denoising_curve,
        }
        p.batch_size = 1
        p.n_iter = 1

        initial_seed = None
        initial_info = None
        base_info = None
        initial_denoising_strength = p.denoising_strength

        grids = []
        all_images = []
        original_init_image = p.init_images
        original_prompt = p.prompt
        original_inpainting_fill = p.inpainting_fill
        progress = p.progress

        def calculate_denoising_strength(loop):
            strength = initial_denoising_strength
            if loops == 1:
                return strength
            progress_ = loop / (loops - 1)
            if denoising_curve == "Aggressive":
                strength = math.sin(progress_ * math.pi * 0.5)
            elif denoising_curve == "Lazy":
                strength = 1 - math.cos(progress_ * math.pi * 0.5)
            else:
                strength = progress_
            change = (final_denoising_strength - initial_denoising_strength) * strength
            return initial_denoising_strength + change

        def interrupted():
            return progress is not None and progress.interrupted

        def skipped():
            return progress is not None and progress.skipped

        history = []
        for _n in range(batch_count):
            p.init_images = original_init_image  # each batch starts again from the original init image
            p.denoising_strength = initial_denoising_strength
            last_image = None
            for i in range(loops):
                p.n_iter = 1
                p.batch_size = 1
                p.do_not_save_grid = True

                if append_interrogation != "None":
                    p.prompt = f"{original_prompt}, " if original_prompt else ""
                    p.prompt += interrogators.interrogate(p.init_images[0].convert("RGB"),
                                                          INTERROGATE_MODEL[append_interrogation])

                processed = process_images(p)
                if interrupted():
                    break
                if initial_seed is None:
                    initial_seed = processed.seed
                    initial_info = processed.info
                    base_info = processed.base_info

                p.seed = processed.seed + 1
                p.denoising_strength = calculate_denoising_strength(i + 1)
                if skipped():
                    break

                last_image = processed.images[processed.index_of_first_image]
                p.init_images = [last_image]
                p.inpainting_fill = 1  # "masked content" becomes "original" for the next loop
                if batch_count == 1:
                    history.append(last_image)
                    all_images.append(last_image)

            if batch_count > 1 and not skipped() and not interrupted():
                history.append(last_image)
                all_images.append(last_image)
            p.inpainting_fill = original_inpainting_fill
            if interrupted():
                break

        if len(history) > 1:
            grid = image_grid(history, rows=1)
            save_script_image(p, grid, initial_seed, p.prompt, None, grid=True)
            if p.opts.get("return_grid"):
                grids.append(grid)

        all_images = grids + all_images
        return Processed(p, all_images, initial_seed, initial_info, base_info=base_info)
