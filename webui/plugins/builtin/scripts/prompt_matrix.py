"""A1111's "Prompt matrix" (scripts/prompt_matrix.py, v1.10.1) on the Script interface, both tabs.

``a|b|c`` makes 2^(parts-1) prompts: the first part with every subset of the others (in the order of the bits of
the combination number), joined by ", " or " ", the variable parts before or after the fixed one; of the positive
or the negative prompt. The grid has 2^((n-1)//2) rows and the legends of A1111's ``draw_prompt_matrix``.

How the images are made: A1111 sets ``p.prompt`` (or ``p.negative_prompt``) to the list of prompts, ``p.seed`` to
the list ``seed + (i if different seeds else 0)`` and ``p.n_iter = ceil(n / batch_size)``, and one
``process_images`` runs them in batches; image ``i`` then has prompt ``i``, seed ``i`` and variation seed
``subseed + i``, each made from its own seed's noise. Our ``p.prompt`` is one string, so each combination is one
``process_images`` call (batch size 1, one iteration) with exactly that prompt, seed and variation seed: the same
images and seeds as A1111's, and each equal to that request sent alone. The difference: with a batch size above 1,
A1111's infotexts also say "Batch size" / "Batch pos"; ours describe single-image requests.
"""

from __future__ import annotations

import logging
import math

from webui.plugins.scripts import Script, ScriptArg, ScriptError

log = logging.getLogger(__name__)

TITLE = "Prompt matrix"


def matrix_prompts(prompt: str, put_at_start: bool, variations_delimiter: str) -> tuple[list[str], list[str]]:
    """(the prompt's ``|`` parts, the 2^(n-1) prompts in A1111's order)."""
    delimiter = ", " if variations_delimiter == "comma" else " "
    all_prompts = []
    prompt_matrix_parts = prompt.split("|")
    combination_count = 2 ** (len(prompt_matrix_parts) - 1)
    for combination_num in range(combination_count):
        selected_prompts = [text.strip().strip(",") for n, text in enumerate(prompt_matrix_parts[1:])
                            if combination_num & (1 << n)]
        if put_at_start:
            selected_prompts = selected_prompts + [prompt_matrix_parts[0]]
        else:
            selected_prompts = [prompt_matrix_parts[0]] + selected_prompts
        all_prompts.append(delimiter.join(selected_prompts))
    return prompt_matrix_parts, all_prompts


class ScriptPromptMatrix(Script):
    """A1111 scripts/prompt_matrix.py ``Script``."""

    def title(self):
        return TITLE

    def ui(self, is_img2img):
        return [
            ScriptArg("Put variable parts at start of prompt", False, "checkbox"),
            ScriptArg("Use different seed for each picture", False, "checkbox"),
            ScriptArg("Select prompt", "positive", "radio", choices=["positive", "negative"]),
            ScriptArg("Select joining char", "comma", "radio", choices=["comma", "space"]),
            ScriptArg("Grid margins (px)", 0, "slider", minimum=0, maximum=500, step=2),
        ]

    def run(self, p, put_at_start=False, different_seeds=False, prompt_type="positive", variations_delimiter="comma",
            margin_size=0):
        from webui.core.generation.processing import Processed, process_images
        from webui.core.io.grid_annotations import draw_prompt_matrix
        from webui.core.io.images import image_grid
        from webui.plugins.builtin.scripts.xyz_grid import fix_seed_value, save_script_grid

        # A1111 raises for these two before anything is made; so do we, naming the argument and the choices.
        if prompt_type not in ["positive", "negative"]:
            raise ScriptError(TITLE, f"Select prompt: unknown prompt type {prompt_type!r}; valid: positive, negative")
        if variations_delimiter not in ["comma", "space"]:
            raise ScriptError(TITLE, f"Select joining char: unknown variations delimiter {variations_delimiter!r}; "
                                     "valid: comma, space")
        try:
            margin_size = int(margin_size or 0)
        except (TypeError, ValueError):
            raise ScriptError(TITLE, f"Grid margins (px): {margin_size!r} is not a number of pixels") from None

        # A1111 processing.fix_seed(p)
        p.seed = fix_seed_value(p.seed)
        p.subseed = fix_seed_value(p.subseed)

        original_prompt = p.prompt if prompt_type == "positive" else p.negative_prompt
        prompt_matrix_parts, all_prompts = matrix_prompts(original_prompt, put_at_start, variations_delimiter)
        log.info("Prompt matrix will create %d images using a total of %d batches.", len(all_prompts),
                 math.ceil(len(all_prompts) / max(1, p.batch_size)))

        images, infotexts, prompts, negatives, seeds, subseeds = [], [], [], [], [], []
        first = None
        for i, prompt in enumerate(all_prompts):
            progress = p.progress
            if progress is not None and getattr(progress, "interrupted", False):
                break
            pc = p.copy()
            pc.batch_size, pc.n_iter = 1, 1
            pc.do_not_save_grid = True
            if prompt_type == "positive":
                pc.prompt = prompt
            else:
                pc.negative_prompt = prompt
            pc.seed = int(p.seed + (i if different_seeds else 0))
            pc.subseed = int(p.subseed) + i  # A1111: all_subseeds = [subseed + x for x in range(len(all_prompts))]
            res = process_images(pc)
            if first is None:
                first = res
            k = res.index_of_first_image
            images += res.images[k:k + 1]
            infotexts += res.infotexts[k:k + 1]
            prompts.append(res.all_prompts[0] if res.all_prompts else pc.prompt)
            negatives.append(res.all_negative_prompts[0] if res.all_negative_prompts else pc.negative_prompt)
            seeds.append(res.all_seeds[0] if res.all_seeds else pc.seed)
            subseeds.append(res.all_subseeds[0] if res.all_subseeds else pc.subseed)

        if first is None or not images:
            return Processed(p, [], p.seed, "")

        processed = Processed(p, images, seed=seeds[0], info=infotexts[0], subseed=subseeds[0], all_prompts=prompts,
                              all_negative_prompts=negatives, all_seeds=seeds, all_subseeds=subseeds,
                              infotexts=infotexts, comments=first.comments, base_info=first.base_info)
        processed.extra_generation_params = dict(first.extra_generation_params)

        if len(images) != len(all_prompts):  # interrupted: the images made so far, no matrix to draw
            return processed

        grid = image_grid(processed.images, p.batch_size, rows=1 << ((len(prompt_matrix_parts) - 1) // 2))
        grid = draw_prompt_matrix(grid, processed.images[0].width, processed.images[0].height, prompt_matrix_parts,
                                  margin_size, get_option=p.opts.get)
        processed.images.insert(0, grid)
        processed.index_of_first_image = 1
        processed.infotexts.insert(0, processed.infotexts[0])

        if p.opts.get("grid_save"):
            # A1111 saves this grid with no infotext (info is not passed).
            save_script_grid(p, processed.images[0], "prompt_matrix", None, original_prompt, processed.seed)

        return processed
