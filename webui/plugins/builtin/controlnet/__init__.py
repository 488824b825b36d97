"""sd-webui-controlnet, built in: the first plugin on ``webui/plugins/hooks.py``.

Everything ControlNet adds to a generation goes through hooks: its ``alwayson_scripts`` args are parsed and checked
before the job is queued (``prepare_script_args``), its units become UNet hooks for both passes plus the extension's
infotext (``process``), its detected maps follow the images (``postprocess``), its routes are added at app start
(``on_app_started``) and its accordion sits under the generation parameters (``ui_alwayson`` / ``ui_script_args``).
The ControlNet maths itself (models, preprocessors, hooks) is ``webui.core.controlnet``.
"""

from __future__ import annotations

import os

from webui.plugins.hooks import hookimpl

NAME = "controlnet"
TITLE = "ControlNet"


class ControlNetPlugin:
    """The extension's behaviour over one :class:`~webui.core.controlnet.ControlNetRegistry` (its model folders)."""

    def __init__(self, registry):
        self.registry = registry

    @classmethod
    def from_config(cls, config, settings, plan) -> "ControlNetPlugin":
        """Models from models/ControlNet and extensions/sd-webui-controlnet/models; annotator weights from the
        extension's annotator/downloads folder (where A1111 users already have them)."""
        from webui.core.controlnet.models import ControlNetRegistry

        ext = os.path.join(config.extensions_dir, "sd-webui-controlnet")
        registry = ControlNetRegistry(
            [os.path.join(config.models_dir, "ControlNet"), os.path.join(ext, "models")],
            annotator_dir=os.path.join(ext, "annotator", "downloads"),
            cache_size=int(settings.get("control_net_model_cache_size") or 2), device=plan.device,
        )
        registry.refresh()
        return cls(registry)

    # -- the request -------------------------------------------------------------------------------------------------

    @hookimpl
    def alwayson_scripts(self, is_img2img):
        return [TITLE]

    @hookimpl
    def prepare_script_args(self, title, args, decode_image):
        """The units of ``alwayson_scripts.controlnet`` (list, dict or positional args), their images decoded, each
        enabled unit's model checked: a bad value or an unknown model is a ControlNetError (422) naming it."""
        from webui.core.controlnet import parse_units

        if str(title).lower() != NAME:
            return None
        units = parse_units({title: {"args": args}}, decode_image=decode_image)
        for unit in units:
            if unit.enabled and unit.model not in (None, "", "None", "none"):
                self.registry.get_or_raise(unit.model)
        return {NAME: units}

    # -- the generation ----------------------------------------------------------------------------------------------

    @hookimpl
    def process(self, p):
        """The extension's process step: control hooks for every UNet call of both passes, their infotext, and the
        detected maps kept for ``postprocess``."""
        from webui.core.controlnet import build_control_hooks

        units = p.request.extension_args.get(NAME, ())
        if not any(u.enabled for u in units):
            return
        request, hr = p.request, p.hr
        hooks, params, maps = build_control_hooks(
            units, p.sd_model, width=p.width, height=p.height, batch_size=p.batch_size, registry=self.registry,
            hr_width=hr.target_width if hr is not None else None, hr_height=hr.target_height if hr is not None else None,
            init_image=request.init_images[0] if request.init_images else None, init_resize_mode=request.resize_mode,
        )
        p.unet_hooks.extend(hooks)
        p.extra_generation_params.update(params)
        p.plugin_data[NAME] = maps

    @hookimpl
    def postprocess(self, p, processed):
        """The extension appends its detected maps to the returned images (A1111's info does not list them)."""
        maps = p.plugin_data.get(NAME)
        if maps and not p.opts.get("control_net_no_detectmap"):
            processed.images.extend(maps)
            processed.infotexts.extend([""] * len(maps))

    # -- the app and the page ----------------------------------------------------------------------------------------

    @hookimpl
    def on_app_started(self, add_api_route):
        from webui.plugins.builtin.controlnet.api import ROUTES

        for path, method, handler, response_model in ROUTES:
            add_api_route(path, method, handler, response_model)

    @hookimpl
    def ui_alwayson(self, state, form, tab):
        from webui.plugins.builtin.controlnet.ui import controlnet_accordion

        controlnet_accordion(state, self.registry, form, tab)

    @hookimpl
    def ui_script_args(self, values, tab):
        from webui.plugins.builtin.controlnet.ui import controlnet_units

        units = controlnet_units(values)
        return {NAME: units} if units else None
