"""The built-in plugins, written on the same hooks as any other (``webui/plugins/hooks.py``)."""

from __future__ import annotations


def register_builtin_plugins(plugins, config, settings, plan) -> None:
    """Register every built-in plugin on ``plugins`` (a PluginManager); called by ``build_state``."""
    from webui.plugins.builtin.controlnet import NAME, ControlNetPlugin

    plugins.register(ControlNetPlugin.from_config(config, settings, plan), NAME)
