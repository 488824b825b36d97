"""The built-in plugins, written on the same hooks as any other (``webui/plugins/hooks.py``)."""

from __future__ import annotations


def register_builtin_plugins(plugins, config, settings, plan) -> tuple:
    """Register every built-in plugin on ``plugins`` (a PluginManager); called by ``build_state``. Returns the
    script runners of txt2img and img2img (A1111's scripts_txt2img / scripts_img2img), whose always-on scripts are
    called through the hooks by the "scripts" plugin."""
    from webui.plugins.builtin.controlnet import NAME, ControlNetPlugin
    from webui.plugins.builtin.scripts import builtin_script_classes
    from webui.plugins.scripts import AlwaysOnScripts, ScriptRunner

    txt2img = ScriptRunner([_make(cls, settings) for cls in builtin_script_classes()], is_img2img=False)
    img2img = ScriptRunner([_make(cls, settings) for cls in builtin_script_classes()], is_img2img=True)
    plugins.register(AlwaysOnScripts(txt2img, img2img), "scripts")
    for runner in (txt2img, img2img):  # selectable scripts that also implement hooks (img2img alternative test)
        for script in runner.selectable_scripts:
            if _implements_hooks(script):
                plugins.register(script, f"script:{'img2img' if runner.is_img2img else 'txt2img'}:{script.title()}")
    from webui.plugins.builtin.scripts.common import ScriptExtraParams

    plugins.register(ScriptExtraParams(), "script_extra_params")
    plugins.register(ControlNetPlugin.from_config(config, settings, plan), NAME)
    return txt2img, img2img


def _make(cls, settings):
    """One script instance; scripts whose controls depend on the options (Extra options) take the settings."""
    import inspect

    return cls(settings) if "settings" in inspect.signature(cls).parameters else cls()


def _implements_hooks(script) -> bool:
    """Whether a script object has ``@hookimpl`` methods (pluggy's marker attribute)."""
    from webui.plugins.hooks import PROJECT

    return any(hasattr(getattr(type(script), name, None), f"{PROJECT}_impl") for name in dir(type(script)))
