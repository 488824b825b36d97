"""A1111 1.10's built-in extension "extra-options-section" (scripts/extra_options_section.py): the settings named
in options extra_options_txt2img / extra_options_img2img appear under the tab's generation parameters, and their
values apply to the job as override_settings, unless the request overrides the same setting itself."""

from __future__ import annotations

from webui.plugins.scripts import AlwaysVisible, Script, ScriptArg


class ExtraOptionsSection(Script):
    def __init__(self, settings=None):
        self.settings = settings
        self.setting_names: list[str] = []

    def title(self):
        return "Extra options"

    def show(self, is_img2img):
        return AlwaysVisible

    def ui(self, is_img2img):
        """One control per listed setting, its stored value as the default (A1111 reads them at page load)."""
        from webui.core.settings import OPTIONS_BY_KEY

        self.setting_names = []
        if self.settings is None:
            return []
        key = "extra_options_img2img" if is_img2img else "extra_options_txt2img"
        args = []
        for name in self.settings.get(key) or []:
            opt = OPTIONS_BY_KEY.get(name)
            if opt is None:  # A1111: "Can't add extra options for <name> in ui", and goes on
                continue
            self.setting_names.append(name)
            args.append(_setting_arg(opt, self.settings.get(name)))
        return args

    def has_setup(self) -> bool:
        return bool(self.setting_names)

    def setup(self, p, *args):
        # A1111 does this in before_process; here it must happen before the request's options are fixed
        for name, value in zip(self.setting_names, args):
            if name not in p.override_settings:
                p.override_settings[name] = value


def _setting_arg(opt, value) -> ScriptArg:
    if isinstance(opt.default, bool):
        return ScriptArg(opt.label, value, "checkbox")
    if opt.choices:
        return ScriptArg(opt.label, value, "dropdown", choices=list(opt.choices))
    if isinstance(opt.default, (int, float)) and opt.minimum is not None and opt.maximum is not None:
        return ScriptArg(opt.label, value, "slider", minimum=opt.minimum, maximum=opt.maximum, step=opt.step)
    if isinstance(opt.default, (int, float)):
        return ScriptArg(opt.label, value, "number")
    return ScriptArg(opt.label, value, "textbox")
