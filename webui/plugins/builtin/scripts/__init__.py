"""A1111's built-in scripts, written on ``webui.plugins.scripts``: the always-on ones of its processing tabs and the
selectable ones of its ``scripts/`` folder, in A1111's load order (which fixes their positions in script_args)."""

from __future__ import annotations


def builtin_script_classes() -> list[type]:
    """The script classes, one instance per tab is made by the runner's owner (as A1111 does)."""
    from webui.plugins.builtin.scripts.processing import ScriptComments, ScriptRefiner, ScriptSampler, ScriptSeed

    classes: list[type] = [ScriptRefiner, ScriptSeed, ScriptSampler, ScriptComments]
    # A1111's scripts/ folder, alphabetically by file name: img2imgalt, loopback, outpainting_mk_2,
    # poor_mans_outpainting, prompt_matrix, prompts_from_file, sd_upscale, xyz_grid
    from webui.plugins.builtin.scripts.img2imgalt import ScriptImg2ImgAlt
    from webui.plugins.builtin.scripts.loopback import ScriptLoopback
    from webui.plugins.builtin.scripts.outpainting_mk_2 import ScriptOutpaintingMk2
    from webui.plugins.builtin.scripts.poor_mans_outpainting import ScriptPoorMansOutpainting
    from webui.plugins.builtin.scripts.prompts_from_file import ScriptPromptsFromFile
    from webui.plugins.builtin.scripts.sd_upscale import ScriptSDUpscale

    classes += [ScriptImg2ImgAlt, ScriptLoopback, ScriptOutpaintingMk2, ScriptPoorMansOutpainting]
    from webui.plugins.builtin.scripts.prompt_matrix import ScriptPromptMatrix

    classes += [ScriptPromptMatrix]
    classes += [ScriptPromptsFromFile]
    classes += [ScriptSDUpscale]
    from webui.plugins.builtin.scripts.xyz_grid import ScriptXYZGrid

    classes += [ScriptXYZGrid]
    from webui.plugins.builtin.scripts.soft_inpainting import ScriptSoftInpainting  # A1111 extensions-builtin

    classes += [ScriptSoftInpainting]
    # A1111's built-in extension hypertile (always on, no args)
    from webui.plugins.builtin.scripts.hypertile import ScriptHypertile

    classes += [ScriptHypertile]
    # A1111's built-in extension extra-options-section (always on: the settings listed in extra_options_*)
    from webui.plugins.builtin.scripts.extra_options import ExtraOptionsSection

    classes += [ExtraOptionsSection]
    return classes
