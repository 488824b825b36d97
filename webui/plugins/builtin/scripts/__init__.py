"""A1111's built-in scripts, written on ``webui.plugins.scripts``: the always-on ones of its processing tabs and the
selectable ones of its ``scripts/`` folder, in A1111's load order (which fixes their positions in script_args)."""

from __future__ import annotations


def builtin_script_classes() -> list[type]:
    """The script classes, one instance per tab is made by the runner's owner (as A1111 does)."""
    from webui.plugins.builtin.scripts.processing import ScriptComments, ScriptRefiner, ScriptSampler, ScriptSeed

    classes: list[type] = [ScriptRefiner, ScriptSeed, ScriptSampler, ScriptComments]
    return classes
